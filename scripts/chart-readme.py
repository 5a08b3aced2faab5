#!/usr/bin/env python3
"""Generate the values table of the Helm chart README from values.schema.json.

Usage:
    python3 scripts/chart-readme.py           # rewrite the table in README.md
    python3 scripts/chart-readme.py --check   # exit 1 if README.md is stale or
                                              # values.yaml and the schema disagree

The table lives between the markers ``<!-- values:start -->`` and
``<!-- values:end -->`` in charts/stageset-controller/README.md. It has one row
per leaf of the schema, walked depth-first in schema order. An object is
descended into when it declares ``properties``; free-form maps and arrays are
leaves.

Only the standard library and PyYAML are used.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "stageset-controller"
SCHEMA = CHART / "values.schema.json"
VALUES = CHART / "values.yaml"
README = CHART / "README.md"

START = "<!-- values:start -->"
END = "<!-- values:end -->"

_MISSING = object()


def is_branch(node: dict) -> bool:
    """An object with declared properties is walked into; everything else is a leaf."""
    return isinstance(node.get("properties"), dict) and bool(node["properties"])


def schema_leaves(node: dict, prefix: str = ""):
    """Yield (dotted key, schema node) for every leaf, depth-first in schema order."""
    for name, child in node.get("properties", {}).items():
        key = f"{prefix}.{name}" if prefix else name
        if is_branch(child):
            yield from schema_leaves(child, key)
        else:
            yield key, child


def schema_nodes(node: dict, prefix: str = ""):
    """Yield (dotted key, schema node) for every property, branches included."""
    for name, child in node.get("properties", {}).items():
        key = f"{prefix}.{name}" if prefix else name
        yield key, child
        if is_branch(child):
            yield from schema_nodes(child, key)


def lookup(values, key: str):
    cur = values
    for part in key.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def same(a, b) -> bool:
    """Equality that keeps booleans, numbers, strings and null apart (1 != true)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def differing_paths(a: dict, b: dict, prefix: str) -> list[str]:
    """Dotted keys below prefix where two nested mappings differ."""
    out = []
    for name in list(a) + [k for k in b if k not in a]:
        key = f"{prefix}.{name}"
        if name not in a or name not in b:
            out.append(key)
        elif isinstance(a[name], dict) and isinstance(b[name], dict):
            out += differing_paths(a[name], b[name], key)
        elif not same(a[name], b[name]):
            out.append(key)
    return out


def compact(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def cell(text: str) -> str:
    """Make text safe inside a Markdown table cell."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def type_of(node: dict) -> str:
    t = node.get("type")
    if t is None:
        return "any"
    if isinstance(t, list):
        return " or ".join(t)
    return t


def render_table(schema: dict) -> str:
    rows = [
        "| Key | Type | Default | Description |",
        "|---|---|---|---|",
    ]
    for key, node in schema_leaves(schema):
        default = compact(node["default"]) if "default" in node else ""
        default_cell = f"`{cell(default)}`" if default else ""
        rows.append(
            f"| `{cell(key)}` | {cell(type_of(node))} | {default_cell} | "
            f"{cell(node.get('description', '').strip())} |"
        )
    return "\n".join(rows) + "\n"


def render_readme(current: str, table: str) -> str:
    start = current.find(START)
    end = current.find(END)
    if start < 0 or end < 0 or end < start:
        raise ValueError(f"{README.relative_to(REPO)}: markers {START} and {END} not found in order")
    head = current[: start + len(START)]
    tail = current[end:]
    return f"{head}\n{table}{tail}"


def consistency_problems(schema: dict, values: dict) -> list[str]:
    problems = []

    # Every leaf of values.yaml must be described by the schema.
    def walk_values(val, node, prefix):
        for name, child in val.items():
            key = f"{prefix}.{name}" if prefix else name
            props = node.get("properties", {}) if isinstance(node, dict) else {}
            if name not in props:
                problems.append(f"values.yaml key `{key}` is missing from the schema")
                continue
            sub = props[name]
            if isinstance(child, dict) and is_branch(sub):
                walk_values(child, sub, key)

    walk_values(values, schema, "")

    # Every schema property must exist in values.yaml with the same default.
    absent: list[str] = []
    for key, node in schema_nodes(schema):
        if any(key.startswith(a + ".") for a in absent):
            continue  # already reported the missing parent
        actual = lookup(values, key)
        if actual is _MISSING:
            absent.append(key)
            problems.append(f"schema property `{key}` is missing from values.yaml")
            continue
        if "default" not in node:
            problems.append(f"schema property `{key}` has no default (values.yaml: {compact(actual)})")
        elif not same(node["default"], actual):
            if isinstance(node["default"], dict) and isinstance(actual, dict):
                where = ", ".join(f"`{p}`" for p in differing_paths(node["default"], actual, key))
                problems.append(f"schema default of object `{key}` differs from values.yaml at {where}")
            else:
                problems.append(
                    f"schema default of `{key}` is {compact(node['default'])} "
                    f"but values.yaml has {compact(actual)}"
                )
        if "description" not in node or not str(node["description"]).strip():
            problems.append(f"schema property `{key}` has no description")

    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 when README.md is out of date or values.yaml and the schema disagree",
    )
    args = parser.parse_args(argv)

    try:
        schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
        values = yaml.safe_load(VALUES.read_text(encoding="utf-8")) or {}
        current = README.read_text(encoding="utf-8")
        wanted = render_readme(current, render_table(schema))
    except (OSError, ValueError, KeyError, yaml.YAMLError) as err:
        print(f"chart-readme: {err}", file=sys.stderr)
        return 2

    if not args.check:
        if wanted != current:
            README.write_text(wanted, encoding="utf-8")
            print(f"chart-readme: updated {README.relative_to(REPO)}")
        else:
            print(f"chart-readme: {README.relative_to(REPO)} is up to date")
        problems = consistency_problems(schema, values)
        for p in problems:
            print(f"chart-readme: warning: {p}", file=sys.stderr)
        return 0

    failed = False
    problems = consistency_problems(schema, values)
    if problems:
        failed = True
        print("chart-readme: values.yaml and values.schema.json disagree:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)

    if wanted != current:
        failed = True
        rel = str(README.relative_to(REPO))
        print(
            f"chart-readme: {rel} is out of date; run `python3 scripts/chart-readme.py` and commit the result.",
            file=sys.stderr,
        )
        sys.stderr.writelines(
            difflib.unified_diff(
                current.splitlines(keepends=True),
                wanted.splitlines(keepends=True),
                fromfile=f"a/{rel}",
                tofile=f"b/{rel}",
            )
        )

    if not failed:
        print("chart-readme: README.md, values.yaml and values.schema.json agree")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
