#!/usr/bin/env python3
"""Generates crates/kube-sim/src/go_types.json: the Go field types of every
Kubernetes API definition, read from the k8s-openapi sources (which are
generated from the Kubernetes OpenAPI document of the release).

kube-sim decodes built-in kinds with the semantics of Go's encoding/json
(`godecode.rs`); for that it needs, per definition, each JSON field name and
its Go type. Usage:

    python3 crates/kube-sim/tools/gen_go_types.py \
        ~/.cargo/registry/src/*/k8s-openapi-0.29.0/src/v1_37 \
        > crates/kube-sim/src/go_types.json

Type grammar of the output: `string`, `int32`, `int64`, `float64`, `bool`,
`bytes` ([]byte, base64), `quantity`, `intorstring`, `time`, `microtime`,
`any` (no check), `[]T`, `map[]T` (map[string]T), or a definition name.
"""

import json
import os
import re
import sys

root = sys.argv[1]

SPECIAL = {
    "crate::ByteString": "bytes",
    "crate::apimachinery::pkg::api::resource::Quantity": "quantity",
    "crate::apimachinery::pkg::util::intstr::IntOrString": "intorstring",
    "crate::apimachinery::pkg::apis::meta::v1::Time": "time",
    "crate::apimachinery::pkg::apis::meta::v1::MicroTime": "microtime",
    "crate::apimachinery::pkg::apis::meta::v1::FieldsV1": "any",
    "crate::apimachinery::pkg::runtime::RawExtension": "any",
    "crate::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSON": "any",
    "crate::serde_json::Value": "any",
    "serde_json::Value": "any",
    "std::string::String": "string",
    "i32": "int32",
    "i64": "int64",
    "f64": "float64",
    "bool": "bool",
}

files = {}
for dirpath, _, names in os.walk(root):
    for n in names:
        if n.endswith(".rs") and n != "mod.rs":
            files[os.path.join(dirpath, n)] = open(os.path.join(dirpath, n)).read()

# Rust path of every generated type -> definition name.
rust_to_def = {}
kinds = {}
for path, text in files.items():
    m = re.search(r"^// Generated from definition (\S+)", text, re.M)
    if not m:
        continue
    rel = os.path.relpath(path, root)[:-3].split(os.sep)
    module = "crate::" + "::".join(rel[:-1])
    s = re.search(r"^pub (struct|enum) (\w+)", text, re.M)
    if not s:
        continue
    rust_to_def[module + "::" + s.group(2)] = (m.group(1), s.group(1))


def split_generic(t):
    depth = 0
    for i, c in enumerate(t):
        if c == "<":
            depth += 1
        elif c == ">":
            depth -= 1
        elif c == "," and depth == 0:
            return t[:i].strip(), t[i + 1 :].strip()
    raise ValueError(t)


def go_type(t):
    t = t.strip()
    if t.startswith("Option<") and t.endswith(">"):
        return go_type(t[len("Option<") : -1])
    if t.startswith("std::vec::Vec<") and t.endswith(">"):
        return "[]" + go_type(t[len("std::vec::Vec<") : -1])
    if t.startswith("std::collections::BTreeMap<") and t.endswith(">"):
        _, v = split_generic(t[len("std::collections::BTreeMap<") : -1])
        return "map[]" + go_type(v)
    if t.startswith("std::boxed::Box<") and t.endswith(">"):
        return go_type(t[len("std::boxed::Box<") : -1])
    if t in SPECIAL:
        return SPECIAL[t]
    if t in rust_to_def:
        name, what = rust_to_def[t]
        return "any" if what == "enum" else name
    raise ValueError("unknown Rust type " + t)


out = {}
for path, text in sorted(files.items()):
    m = re.search(r"^// Generated from definition (\S+)", text, re.M)
    s = re.search(r"^pub struct (\w+) \{\n(.*?)^\}", text, re.M | re.S)
    if not m or not s:
        continue
    rust_fields = {}
    for f in re.finditer(r"^    pub (\w+): (.+),$", s.group(2), re.M):
        rust_fields[f.group(1)] = f.group(2)
    fields = {}
    for j in re.finditer(r'^\s+"([^"]+)" => Field::Key_(\w+),$', text, re.M):
        json_name, key = j.group(1), j.group(2)
        if key in ("api_version", "kind") and key not in rust_fields:
            fields[json_name] = "string"
            continue
        fields[json_name] = go_type(rust_fields[key])
    out[m.group(1)] = fields

json.dump(out, sys.stdout, sort_keys=True, separators=(",", ":"))
sys.stdout.write("\n")
