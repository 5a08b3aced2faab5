//! `/openapi/v2`: the Swagger 2.0 document, as JSON or in the protobuf
//! encoding of gnostic's `openapi_v2.Document` that kubectl asks for
//! (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`).
//!
//! kubectl reads it for client-side validation (every item of a `kind:
//! List`, and objects of kinds whose OpenAPI v3 operations do not declare
//! `fieldValidation`) and as a fallback source of strategic merge metadata.
//! The document has the real paths and operations (with their
//! `x-kubernetes-action`, `x-kubernetes-group-version-kind` and the
//! `dryRun`/`fieldManager`/`fieldValidation`/`force` query parameters) and a
//! definition per served kind under its real name
//! (`io.k8s.api.core.v1.ConfigMap`, `com.example.v1.Widget` for custom
//! resources), but the definitions are open schemas without
//! `x-kubernetes-group-version-kind`: kubectl finds no model for a kind, so
//! it skips client-side validation (the server's own decoding and
//! `fieldValidation=Strict` refuse what a real server refuses) and computes
//! client-side apply patches from its compiled-in types, as it would from
//! the real definitions. (An open model found by kind would make kubectl
//! replace lists it should merge.)

use serde_json::{Value, json};

use crate::registry::{Registry, ResourceType};

/// The media type of the protobuf document in responses (kube-openapi
/// accepts `...spec.v2@v1.0+protobuf` too, but answers with the dotted form,
/// which Go's `mime.ParseMediaType` can parse).
pub const PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// Whether the Accept header asks for the protobuf encoding first.
pub fn wants_protobuf(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("com.github.proto-openapi.spec.v2"))
}

/// The definition name of a served kind.
pub fn definition_name(t: &ResourceType) -> String {
    if t.crd.is_none()
        && let Some(def) = crate::godecode::definition(&t.group, &t.version, &t.kind)
    {
        return def;
    }
    // Custom resources: the group's DNS labels reversed (`com.example`).
    let mut labels: Vec<&str> = t.group.split('.').filter(|l| !l.is_empty()).collect();
    labels.reverse();
    if labels.is_empty() {
        format!("io.k8s.api.core.{}.{}", t.version, t.kind)
    } else {
        format!("{}.{}.{}", labels.join("."), t.version, t.kind)
    }
}

fn query_param(name: &str, description: &str) -> Value {
    json!({"uniqueItems": true, "type": "string", "description": description, "name": name, "in": "query"})
}

fn body_param() -> Value {
    json!({"name": "body", "in": "body", "required": true, "schema": {"type": "object"}})
}

/// The Swagger 2.0 document of everything served.
pub fn document(reg: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    let mut definitions = serde_json::Map::new();
    let mut types: Vec<_> = reg.all().cloned().collect();
    types.sort_by(|a, b| (&a.group, &a.version, &a.plural).cmp(&(&b.group, &b.version, &b.plural)));
    types.dedup_by(|a, b| a.group == b.group && a.version == b.version && a.plural == b.plural);
    for t in &types {
        let def = definition_name(t);
        let gvk = json!({"group": t.group, "version": t.version, "kind": t.kind});
        let ok = json!({"200": {"description": "OK", "schema": {"$ref": format!("#/definitions/{def}")}}});
        let op = |action: &str, id: &str, params: Vec<Value>| {
            json!({
                "description": format!("{action} {}", t.kind),
                "consumes": ["*/*"],
                "produces": ["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"],
                "schemes": ["https"],
                "operationId": id,
                "parameters": params,
                "responses": ok,
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
            })
        };
        let write_params = || {
            vec![
                body_param(),
                query_param(
                    "dryRun",
                    "When present, indicates that modifications should not be persisted.",
                ),
                query_param(
                    "fieldManager",
                    "fieldManager is a name associated with the actor or entity that is making these changes.",
                ),
                query_param(
                    "fieldValidation",
                    "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields.",
                ),
            ]
        };
        let id_suffix = format!(
            "{}{}{}",
            capitalize(t.group.split('.').next().unwrap_or("")),
            capitalize(&t.version),
            t.kind
        );
        let prefix = if t.group.is_empty() {
            format!("/api/{}", t.version)
        } else {
            format!("/apis/{}/{}", t.group, t.version)
        };
        let base = if t.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", t.plural)
        } else {
            format!("{prefix}/{}", t.plural)
        };
        let mut collection = serde_json::Map::new();
        collection.insert(
            "post".into(),
            op("post", &format!("create{id_suffix}"), write_params()),
        );
        if !t.create_only {
            collection.insert(
                "get".into(),
                op("list", &format!("list{id_suffix}"), Vec::new()),
            );
            let mut patch_params = write_params();
            patch_params.push(query_param(
                "force",
                "Force is going to \"force\" Apply requests.",
            ));
            let mut patch = op("patch", &format!("patch{id_suffix}"), patch_params);
            patch["consumes"] = json!([
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
                "application/apply-patch+yaml"
            ]);
            let item = json!({
                "get": op("get", &format!("read{id_suffix}"), Vec::new()),
                "put": op("put", &format!("replace{id_suffix}"), write_params()),
                "patch": patch,
                "delete": op("delete", &format!("delete{id_suffix}"), vec![query_param("dryRun", "When present, indicates that modifications should not be persisted.")]),
            });
            paths.insert(format!("{base}/{{name}}"), item);
        }
        paths.insert(base, Value::Object(collection));
        definitions.entry(def).or_insert_with(|| {
            json!({
                "description": format!("{} ({}): served by kube-sim with an open schema.", t.kind, t.api_version()),
            })
        });
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.37.0"},
        "paths": paths,
        "definitions": definitions,
    })
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

// ---------------------------------------------------------------------------
// Protobuf (gnostic openapiv2/OpenAPIv2.proto)
// ---------------------------------------------------------------------------

fn varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn bytes_field(out: &mut Vec<u8>, field: u32, data: &[u8]) {
    varint(out, u64::from(field) << 3 | 2);
    varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

fn string_field(out: &mut Vec<u8>, field: u32, s: &str) {
    if !s.is_empty() {
        bytes_field(out, field, s.as_bytes());
    }
}

fn bool_field(out: &mut Vec<u8>, field: u32, b: bool) {
    if b {
        varint(out, u64::from(field) << 3);
        out.push(1);
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn strings(out: &mut Vec<u8>, field: u32, v: Option<&Value>) {
    for s in v.and_then(Value::as_array).into_iter().flatten() {
        bytes_field(out, field, s.as_str().unwrap_or("").as_bytes());
    }
}

/// `repeated NamedAny vendor_extension`: every `x-` key, its value as YAML.
fn vendor_extensions(out: &mut Vec<u8>, field: u32, v: &Value) {
    let Some(m) = v.as_object() else { return };
    for (k, val) in m.iter().filter(|(k, _)| k.starts_with("x-")) {
        let yaml = serde_yaml_ng::to_string(val).unwrap_or_default();
        let mut any = Vec::new();
        string_field(&mut any, 2, &yaml);
        let mut named = Vec::new();
        string_field(&mut named, 1, k);
        bytes_field(&mut named, 2, &any);
        bytes_field(out, field, &named);
    }
}

fn schema(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    string_field(&mut out, 1, str_of(v, "$ref"));
    string_field(&mut out, 4, str_of(v, "description"));
    if let Some(t) = v.get("type").and_then(Value::as_str) {
        let mut ti = Vec::new();
        string_field(&mut ti, 1, t);
        bytes_field(&mut out, 22, &ti);
    }
    vendor_extensions(&mut out, 31, v);
    out
}

fn parameter(p: &Value) -> Vec<u8> {
    let mut param = Vec::new();
    if str_of(p, "in") == "body" {
        let mut body = Vec::new();
        string_field(&mut body, 1, str_of(p, "description"));
        string_field(&mut body, 2, str_of(p, "name"));
        string_field(&mut body, 3, "body");
        bool_field(&mut body, 4, p["required"] == true);
        if let Some(s) = p.get("schema") {
            bytes_field(&mut body, 5, &schema(s));
        }
        bytes_field(&mut param, 1, &body);
    } else {
        let mut q = Vec::new();
        bool_field(&mut q, 1, p["required"] == true);
        string_field(&mut q, 2, str_of(p, "in"));
        string_field(&mut q, 3, str_of(p, "description"));
        string_field(&mut q, 4, str_of(p, "name"));
        string_field(&mut q, 6, str_of(p, "type"));
        bool_field(&mut q, 20, p["uniqueItems"] == true);
        let mut non_body = Vec::new();
        bytes_field(&mut non_body, 3, &q);
        bytes_field(&mut param, 2, &non_body);
    }
    let mut item = Vec::new();
    bytes_field(&mut item, 1, &param);
    item
}

fn operation(op: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    string_field(&mut out, 3, str_of(op, "description"));
    string_field(&mut out, 5, str_of(op, "operationId"));
    strings(&mut out, 6, op.get("produces"));
    strings(&mut out, 7, op.get("consumes"));
    for p in op
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        bytes_field(&mut out, 8, &parameter(p));
    }
    if let Some(rs) = op.get("responses").and_then(Value::as_object) {
        let mut responses = Vec::new();
        for (code, r) in rs {
            let mut response = Vec::new();
            string_field(&mut response, 1, str_of(r, "description"));
            if let Some(s) = r.get("schema") {
                let mut item = Vec::new();
                bytes_field(&mut item, 1, &schema(s));
                bytes_field(&mut response, 2, &item);
            }
            let mut value = Vec::new();
            bytes_field(&mut value, 1, &response);
            let mut named = Vec::new();
            string_field(&mut named, 1, code);
            bytes_field(&mut named, 2, &value);
            bytes_field(&mut responses, 1, &named);
        }
        bytes_field(&mut out, 9, &responses);
    }
    strings(&mut out, 10, op.get("schemes"));
    vendor_extensions(&mut out, 13, op);
    out
}

/// The document in gnostic's protobuf encoding.
pub fn to_protobuf(doc: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    string_field(&mut out, 1, str_of(doc, "swagger"));
    let mut info = Vec::new();
    string_field(&mut info, 1, str_of(&doc["info"], "title"));
    string_field(&mut info, 2, str_of(&doc["info"], "version"));
    bytes_field(&mut out, 2, &info);
    let mut paths = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        let mut pi = Vec::new();
        for (verb, field) in [
            ("get", 2),
            ("put", 3),
            ("post", 4),
            ("delete", 5),
            ("patch", 8),
        ] {
            if let Some(op) = item.get(verb) {
                bytes_field(&mut pi, field, &operation(op));
            }
        }
        let mut named = Vec::new();
        string_field(&mut named, 1, path);
        bytes_field(&mut named, 2, &pi);
        bytes_field(&mut paths, 2, &named);
    }
    bytes_field(&mut out, 8, &paths);
    let mut defs = Vec::new();
    for (name, s) in doc["definitions"].as_object().into_iter().flatten() {
        let mut named = Vec::new();
        string_field(&mut named, 1, name);
        bytes_field(&mut named, 2, &schema(s));
        bytes_field(&mut defs, 1, &named);
    }
    bytes_field(&mut out, 9, &defs);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_names_and_operations() {
        let reg = Registry::builtin();
        let doc = document(&reg);
        assert!(doc["definitions"]["io.k8s.api.core.v1.ConfigMap"].is_object());
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-action"], "patch");
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        let pb = to_protobuf(&doc);
        // Field 1 (swagger), a length-delimited "2.0".
        assert_eq!(&pb[..5], b"\x0a\x032.0");
    }

    #[test]
    fn varints() {
        let mut v = Vec::new();
        varint(&mut v, 300);
        assert_eq!(v, [0xac, 0x02]);
    }
}
