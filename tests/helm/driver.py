#!/usr/bin/env python3
"""Drives the real Helm engine (PyPI helm-sdkpy, Helm v4 as a library) for tests/helm.rs.

    driver.py lint CHART [-f VALUES]... [--set-json KEY=JSON]...
    driver.py template CHART --namespace NS --kubeconfig PATH [-f VALUES]... [--set-json KEY=JSON]...
    driver.py install CHART --kubeconfig PATH --namespace NS --release R [-f VALUES]... [--set-json KEY=JSON]...

`template` and `install` print the rendered objects as one JSON array on stdout.
Errors go to stderr, with Helm's own message (for example a template's `fail`),
and the exit code is 1.

What helm-sdkpy (0.1.32) offers shapes two subcommands:

* Its Lint runs with the chart's own values.yaml only (no values argument), so
  `lint -f` copies the chart to a temporary directory and writes the values
  Helm would compute (the chart's defaults coalesced with the -f layers) into
  that copy's values.yaml.
* It exposes no client-only (dry-run) render: every Install talks to an API
  server. `template` therefore renders through a real Install into the API
  server named by --kubeconfig (a scratch kube-sim in the tests), with the
  release record kept in memory (HELM_DRIVER=memory), and prints every
  rendered object, hooks included, like `helm template`. The objects are
  created there, so they are also checked by an API server, not only parsed.
"""

import argparse
import asyncio
import copy
import json
import os
import shutil
import sys
import tempfile

import yaml


def fail(message):
    print(message.rstrip(), file=sys.stderr)
    sys.exit(1)


# Read by the Go shim when it creates a Configuration: `template` keeps the
# release record in memory rather than in a Secret.
if len(sys.argv) > 1 and sys.argv[1] == "template":
    os.environ["HELM_DRIVER"] = "memory"

try:
    import helm_sdkpy  # noqa: E402
except ImportError as e:  # pragma: no cover - a setup problem
    fail(f"helm-sdkpy is not installed ({e}); run scripts/test.sh")


# --- values, merged the way Helm merges them ---------------------------------


def read_values_file(path):
    """One -f layer. Comment headers are plain YAML comments; an empty file is {}."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        fail(f"Error: failed to parse {path}: {e}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        fail(f"Error: {path}: values must be a map, got {type(data).__name__}")
    return data


def merge_maps(base, over):
    """Helm's mergeMaps for -f layers: maps merge key by key, anything else replaces."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_maps(out[k], v)
        else:
            out[k] = v
    return out


def split_key(key):
    """`a.b\\.c` → [a, b.c] (Helm's --set escaping of dots)."""
    parts, cur, i = [], "", 0
    while i < len(key):
        c = key[i]
        if c == "\\" and i + 1 < len(key):
            cur += key[i + 1]
            i += 2
            continue
        if c == ".":
            parts.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    parts.append(cur)
    if any(p == "" for p in parts):
        fail(f"Error: key {key!r} has an empty path segment")
    return parts


def set_json(values, assignment):
    """--set-json KEY=JSON: sets one (nested) key to a JSON value."""
    key, sep, raw = assignment.partition("=")
    if not sep:
        fail(f"Error: --set-json {assignment!r} must be KEY=JSON")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        fail(f"Error: --set-json {key}: invalid JSON: {e}")
    node = values
    path = split_key(key)
    for p in path[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[path[-1]] = value


def user_values(args):
    values = {}
    for path in args.values or []:
        values = merge_maps(values, read_values_file(path))
    for assignment in args.set_json or []:
        set_json(values, assignment)
    return values


def coalesce(defaults, user):
    """Helm's CoalesceValues: user values over chart defaults; a user null deletes the key."""
    out = copy.deepcopy(defaults) if isinstance(defaults, dict) else {}
    for k, v in user.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = coalesce(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# --- output --------------------------------------------------------------------


def manifest_objects(text):
    out = []
    for doc in yaml.safe_load_all(text or ""):
        if doc is None:
            continue
        if isinstance(doc, dict) and str(doc.get("kind") or "").endswith("List") and "items" in doc:
            out.extend(i for i in doc["items"] if i is not None)
        else:
            out.append(doc)
    return out


def helm_error(e):
    return f"Error: {e}"


# --- subcommands ---------------------------------------------------------------


def cmd_lint(args):
    chart = os.path.abspath(args.chart)
    if not os.path.isfile(os.path.join(chart, "Chart.yaml")):
        fail(f"Error: {args.chart}: no Chart.yaml (not a chart directory)")
    overrides = user_values(args)
    with tempfile.TemporaryDirectory(prefix="helm-lint-") as tmp:
        target = chart
        if overrides:
            # Same directory name, so rules that look at it see the real chart.
            target = os.path.join(tmp, os.path.basename(chart.rstrip("/")))
            shutil.copytree(chart, target, symlinks=True)
            defaults_path = os.path.join(target, "values.yaml")
            defaults = {}
            if os.path.exists(defaults_path):
                defaults = read_values_file(defaults_path)
            with open(defaults_path, "w", encoding="utf-8") as f:
                yaml.safe_dump(coalesce(defaults, overrides), f, sort_keys=False)
        cfg = helm_sdkpy.Configuration(namespace=args.namespace or "default")
        try:
            result = asyncio.run(helm_sdkpy.Lint(cfg).run(target))
        except helm_sdkpy.HelmError as e:
            fail(helm_error(e))
    # helm-sdkpy returns Helm's LintResult as JSON; Go errors marshal to {}, so
    # each message keeps its severity and file but loses its text.
    # Severity: 1 info, 2 warning, 3 error (helm.sh/helm/v4/pkg/chart/v2/lint/support).
    names = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}
    messages = [
        {"severity": names.get(int(m.get("Severity", 0)), "?"), "path": m.get("Path", "")}
        for m in (result.get("Messages") or [])
    ]
    failed = [m["path"] for m in messages if m["severity"] == "ERROR"]
    if failed or result.get("Errors"):
        fail(
            "Error: 1 chart(s) linted, 1 chart(s) failed: errors in "
            + (", ".join(failed) or "the chart")
            + " (helm-sdkpy passes no lint message text on; `template` shows render errors)"
        )
    print(json.dumps({"linted": 1, "messages": messages}))


def run_install(args, release, hooks):
    values = user_values(args)
    cfg = helm_sdkpy.Configuration(namespace=args.namespace, kubeconfig=args.kubeconfig)
    try:
        rel = asyncio.run(
            helm_sdkpy.Install(cfg).run(
                release,
                os.path.abspath(args.chart),
                values=values or None,
                create_namespace=True,
                wait=False,
                timeout=args.timeout,
            )
        )
    except helm_sdkpy.HelmError as e:
        fail(helm_error(e))
    objects = manifest_objects(rel.get("manifest", ""))
    if hooks:
        for h in rel.get("hooks") or []:
            objects.extend(manifest_objects(h.get("manifest", "")))
    print(json.dumps(objects))


def cmd_template(args):
    # The release record stays in this process; only the rendered objects reach
    # the (scratch) API server.
    run_install(args, args.release or "release-name", hooks=True)


def cmd_install(args):
    run_install(args, args.release, hooks=False)


class Parser(argparse.ArgumentParser):
    """Usage errors exit 1 like every other error."""

    def error(self, message):
        self.print_usage(sys.stderr)
        fail(f"Error: {message}")


def main():
    p = Parser(prog="driver.py", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    def common(sp, server):
        sp.add_argument("chart")
        sp.add_argument("-f", "--values", action="append", metavar="FILE")
        sp.add_argument("--set-json", action="append", metavar="KEY=JSON")
        sp.add_argument("--namespace", "-n", required=server)
        if server:
            sp.add_argument("--kubeconfig", required=True)
            sp.add_argument("--timeout", type=int, default=120)

    common(sub.add_parser("lint", help="helm lint"), server=False)
    t = sub.add_parser("template", help="render (through a scratch API server)")
    common(t, server=True)
    t.add_argument("--release", default="release-name")
    i = sub.add_parser("install", help="helm install (no wait)")
    common(i, server=True)
    i.add_argument("--release", required=True)
    args = p.parse_args()
    {"lint": cmd_lint, "template": cmd_template, "install": cmd_install}[args.command](args)


if __name__ == "__main__":
    main()
