//! YAML text for built objects, laid out as `kubectl kustomize` prints them
//! and safe for every YAML reader Kubernetes users meet.
//!
//! Layout: documents separated by `---`, map keys sorted, two-space indents,
//! sequences at the indentation of their key (`containers:` then `- name:`),
//! multi-line strings as literal blocks (`|`), empty maps and lists as `{}`
//! and `[]`.
//!
//! Quoting: Kubernetes tools read YAML 1.1 (`kubectl apply` goes through
//! `sigs.k8s.io/yaml`, i.e. go-yaml v2), where many strings that YAML 1.2
//! keeps as strings are something else: `yes`, `on` and `n` are booleans,
//! `0o17`, `0x1F`, `1_000` and `1:20` are integers, `.5` and `1e3` floats,
//! `2001-12-14` a timestamp, `~` a null. A string is written plain only when
//! it is certainly a string to YAML 1.1 and 1.2 readers alike and reads back
//! unchanged ([`needs_quotes`] is deliberately conservative: everything that
//! starts like a number is quoted); otherwise it is double-quoted, with
//! escapes for characters a reader would not take literally.

use serde_json::{Map, Value};

/// Renders `docs` as a multi-document YAML stream: each document ends with
/// a newline, and `---` separates them (none before the first). No
/// documents give an empty string.
pub fn to_string(docs: &[Value]) -> String {
    let mut out = String::new();
    for (i, doc) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        write_document(&mut out, doc);
    }
    out
}

/// Renders one document (without a separator).
pub fn document_to_string(doc: &Value) -> String {
    let mut out = String::new();
    write_document(&mut out, doc);
    out
}

/// Words YAML 1.1 or 1.2 readers resolve to a boolean, a null, an infinity
/// or NaN, in any letter case (quoting a harmless case is cheaper than
/// knowing which cases each reader takes).
const RESERVED_WORDS: [&str; 14] = [
    "~", "null", "y", "yes", "n", "no", "true", "false", "on", "off", ".inf", "+.inf", "-.inf",
    ".nan",
];

/// Characters that may not start a plain scalar: YAML's indicators.
const INDICATORS: &str = "?:,[]{}#&*!|>'\"%@`";

/// Whether `s` must be quoted to read back as the same string. True for:
///
/// * the empty string, and words a YAML 1.1 or 1.2 reader resolves to
///   something else: booleans (`y`, `yes`, `on`, `off`, `true`, …), nulls
///   (`~`, `null`), `.inf`, `.nan`, and the YAML 1.1 merge key `<<` and
///   value key `=`;
/// * anything that starts like a number: a digit, or `-`, `+` or `.`
///   followed by a digit, a dot or an underscore. That covers every YAML
///   1.1 integer (`0b1`, `017`, `0o17`, `0x1F`, `1_000`, `1:20`), float
///   (`1.5`, `.5`, `1e3`, `1:20.5`) and timestamp (`2001-12-14`), with room
///   to spare;
/// * a leading indicator (`-` alone or before a space, `?`, `:`, `#`, `&`,
///   `*`, `!`, `|`, `>`, quotes, `%`, `@`, a backquote, brackets and braces,
///   a comma), and `---` at the start;
/// * `: ` or ` #` inside, or `:` at the end;
/// * a leading or trailing space;
/// * control characters (tab and line breaks included), DEL, C1 controls,
///   the Unicode line and paragraph separators, the byte order mark and the
///   non-characters U+FFFE and U+FFFF.
pub fn needs_quotes(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return true;
    };
    let lower = s.to_lowercase();
    if RESERVED_WORDS.contains(&lower.as_str()) || s == "<<" || s == "=" {
        return true;
    }
    let second = s.chars().nth(1);
    if first.is_ascii_digit()
        || (matches!(first, '-' | '+' | '.')
            && second.is_some_and(|c| c.is_ascii_digit() || c == '.' || c == '_'))
    {
        return true;
    }
    if INDICATORS.contains(first)
        || (first == '-' && matches!(second, None | Some(' ')))
        || s.starts_with("---")
    {
        return true;
    }
    if s.contains(": ") || s.contains(" #") || s.ends_with(':') {
        return true;
    }
    if s.starts_with(' ') || s.ends_with(' ') {
        return true;
    }
    s.chars().any(|c| c < ' ' || must_escape(c))
}

/// Characters a YAML reader does not take literally inside a scalar (besides
/// the ASCII controls): DEL, C1 controls (U+0085 is a line break in YAML
/// 1.1), U+2028, U+2029, the byte order mark and two non-characters.
fn must_escape(c: char) -> bool {
    c < ' '
        || ('\u{7f}'..='\u{9f}').contains(&c)
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
        )
}

fn write_document(out: &mut String, doc: &Value) {
    match doc {
        Value::Object(map) if !map.is_empty() => write_mapping(out, map, 0, false),
        Value::Array(items) if !items.is_empty() => write_sequence(out, items, 0, false),
        scalar => {
            write_scalar(out, scalar, 0);
            out.push('\n');
        }
    }
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// Writes `map` at `indent`; with `inline_first`, the first key goes where
/// the cursor is (after a sequence's `- `).
fn write_mapping(out: &mut String, map: &Map<String, Value>, indent: usize, inline_first: bool) {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    for (i, key) in keys.into_iter().enumerate() {
        if i > 0 || !inline_first {
            pad(out, indent);
        }
        let value = &map[key.as_str()];
        let mut rendered = String::new();
        write_flow_string(&mut rendered, key);
        // Readers take implicit keys of at most 1024 characters; longer ones
        // need the explicit `? key` form, under which a sequence is indented.
        let sequence_indent = if rendered.chars().count() > 1000 {
            out.push_str("? ");
            out.push_str(&rendered);
            out.push('\n');
            pad(out, indent);
            indent + 2
        } else {
            out.push_str(&rendered);
            // kubectl's layout: the sequence at the key's indentation.
            indent
        };
        out.push(':');
        match value {
            Value::Object(m) if !m.is_empty() => {
                out.push('\n');
                write_mapping(out, m, indent + 2, false);
            }
            Value::Array(a) if !a.is_empty() => {
                out.push('\n');
                write_sequence(out, a, sequence_indent, false);
            }
            scalar => {
                out.push(' ');
                write_scalar(out, scalar, indent + 2);
                out.push('\n');
            }
        }
    }
}

fn write_sequence(out: &mut String, items: &[Value], indent: usize, inline_first: bool) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !inline_first {
            pad(out, indent);
        }
        out.push_str("- ");
        match item {
            Value::Object(m) if !m.is_empty() => write_mapping(out, m, indent + 2, true),
            Value::Array(a) if !a.is_empty() => write_sequence(out, a, indent + 2, true),
            scalar => {
                write_scalar(out, scalar, indent + 2);
                out.push('\n');
            }
        }
    }
}

/// A scalar (or an empty map or list) on the current line. A multi-line
/// string may become a literal block whose lines are indented by
/// `block_indent` (never at the top level, where it is 0).
fn write_scalar(out: &mut String, v: &Value, block_indent: usize) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match n.as_f64().filter(|_| n.is_f64()) {
            Some(f) => out.push_str(&float_text(f)),
            None => out.push_str(&n.to_string()),
        },
        Value::String(s) => {
            if block_indent > 0 && literal_block_fits(s) {
                write_literal_block(out, s, block_indent);
            } else {
                write_flow_string(out, s);
            }
        }
        Value::Object(_) => out.push_str("{}"),
        Value::Array(_) => out.push_str("[]"),
    }
}

/// A float that YAML 1.1 readers also take as a float: a decimal point in
/// the mantissa and a signed exponent (`1.0e+21`, not `1e21`).
fn float_text(f: f64) -> String {
    let s = format!("{f:?}");
    match s.split_once('e') {
        Some((mantissa, exp)) => {
            let mantissa = if mantissa.contains('.') {
                mantissa.to_owned()
            } else {
                format!("{mantissa}.0")
            };
            let exp = if exp.starts_with('-') {
                exp.to_owned()
            } else {
                format!("+{exp}")
            };
            format!("{mantissa}e{exp}")
        }
        None if s.contains('.') => s,
        None => format!("{s}.0"),
    }
}

/// A string plain when that is safe, else double-quoted on one line.
fn write_flow_string(out: &mut String, s: &str) {
    if needs_quotes(s) {
        write_double_quoted(out, s);
    } else {
        out.push_str(s);
    }
}

fn write_double_quoted(out: &mut String, s: &str) {
    use std::fmt::Write as _;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{b}' => out.push_str("\\v"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            '\u{1b}' => out.push_str("\\e"),
            c if must_escape(c) && u32::from(c) <= 0xff => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if must_escape(c) => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A literal block keeps a multi-line string readable. It is used only when
/// it reads back exactly: more than one line, no character that needs an
/// escape or a tab, and a first line that starts with neither a space nor a
/// line break (a reader takes the block's indentation from it).
fn literal_block_fits(s: &str) -> bool {
    s.contains('\n')
        && !s.starts_with([' ', '\n'])
        && s.chars().all(|c| c == '\n' || !must_escape(c))
}

/// `|` (one final line break), `|-` (none) or `|+` (more), then the lines.
fn write_literal_block(out: &mut String, s: &str, indent: usize) {
    let body = s.trim_end_matches('\n');
    let breaks = s.len() - body.len();
    out.push_str(match breaks {
        0 => "|-",
        1 => "|",
        _ => "|+",
    });
    out.push('\n');
    for line in body.split('\n') {
        if !line.is_empty() {
            pad(out, indent);
            out.push_str(line);
        }
        out.push('\n');
    }
    for _ in 1..breaks {
        out.push('\n');
    }
    // The caller ends the line it started; the block already did.
    out.pop();
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quoting_table() {
        #[rustfmt::skip]
        let quoted = [
            // Booleans, YAML 1.1 and 1.2, in any case.
            "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE",
            "false", "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF", "yEs",
            // Nulls.
            "~", "null", "Null", "NULL", "",
            // Integers.
            "0", "7", "-7", "+1", "0b101", "-0b1", "017", "0o17", "0x1F", "0x_1f", "1_000",
            "1:20", "-1:20:30", "190:20:30",
            // Floats.
            "1.5", ".5", "-.5", "+.5", "1.", "1e3", "1E3", "1.0e+3", "6.8523015e+5",
            "685.230_15e+03", "1:20.5", ".inf", "-.inf", "+.inf", ".Inf", ".INF", ".nan", ".NaN",
            ".NAN", "._", "-_1",
            // Timestamps.
            "2001-12-14", "2001-12-14t21:59:43.10-05:00", "2001-12-14 21:59:43.10 -5",
            "2001-12-15T02:59:43.1Z",
            // Version-like strings a reader might take for numbers.
            "1.2.3", "1.26",
            // Merge and value keys.
            "<<", "=",
            // Indicators at the start.
            "-", "- a", "---", "--- a", "...", "?", "? a", "?a", ":", ":a", ",a", "[a", "[a]b",
            "]", "{a", "}", "#a", "&a", "*a", "!a", "!!str", "|", "|a", ">", ">a", "'a", "\"a",
            "%", "%a", "@a", "`a",
            // Inside or around.
            "a: b", "a:", "a #b", " a", "a ", " ", "a\tb", "a\nb", "a\rb", "\u{85}",
            "a\u{2028}b", "a\u{2029}b", "\u{feff}a", "a\u{7f}", "a\u{9f}", "a\u{0}b", "\u{1b}",
        ];
        for s in quoted {
            assert!(needs_quotes(s), "{s:?} must be quoted");
        }
        #[rustfmt::skip]
        let plain = [
            "a", "web", "nginx:1.25", "a:b", "http://example.com/x#y", "a#b", "a b", "a,b",
            "a[b]", "a{b}", "--flag", "-v", "-a b", "a-b", "_a", "yess", "nope", "onion",
            "offset", "truex", "nulls", "Infinity", "NaN", "inf", "nan", "v1.2.3", "x1", "a'b",
            "a\"b", "a=b", "<a>", "a<<", "é", "grüße", "日本", "😀", "a\u{a0}b",
            "kubernetes.io/name", "$(VAR)", "${VAR}", "+", ".", ".a",
        ];
        for s in plain {
            assert!(!needs_quotes(s), "{s:?} can be plain");
        }
    }

    #[test]
    fn layout_like_kubectl_kustomize() {
        let docs = [
            json!({
                "kind": "ConfigMap",
                "apiVersion": "v1",
                "metadata": {"name": "cm", "labels": {"on": "yes", "app": "web"}},
                "data": {
                    "file": "line 1\nline 2\n",
                    "no-final-break": "a\nb",
                    "more-breaks": "a\n\n",
                    "indented": " a\nb\n",
                    "empty": "",
                    "port": "80",
                },
            }),
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "spec": {
                    "replicas": 2,
                    "ratio": 0.5,
                    "big": 1e21,
                    "one": 1.0,
                    "paused": false,
                    "nothing": null,
                    "template": {"spec": {
                        "containers": [{"name": "web", "args": ["--port", "8080"], "env": []}],
                        "nodeSelector": {},
                    }},
                    "matrix": [["a", "b"], []],
                },
            }),
        ];
        assert_eq!(
            to_string(&docs),
            r#"apiVersion: v1
data:
  empty: ""
  file: |
    line 1
    line 2
  indented: " a\nb\n"
  more-breaks: |+
    a

  no-final-break: |-
    a
    b
  port: "80"
kind: ConfigMap
metadata:
  labels:
    app: web
    "on": "yes"
  name: cm
---
apiVersion: apps/v1
kind: Deployment
spec:
  big: 1.0e+21
  matrix:
  - - a
    - b
  - []
  nothing: null
  one: 1.0
  paused: false
  ratio: 0.5
  replicas: 2
  template:
    spec:
      containers:
      - args:
        - --port
        - "8080"
        env: []
        name: web
      nodeSelector: {}
"#
        );
        assert_eq!(to_string(&[]), "");
        assert_eq!(document_to_string(&json!({})), "{}\n");
        assert_eq!(document_to_string(&json!("yes")), "\"yes\"\n");
        assert_eq!(document_to_string(&json!("a\nb")), "\"a\\nb\"\n");
    }

    #[test]
    fn escapes_in_double_quotes() {
        let mut out = String::new();
        write_double_quoted(
            &mut out,
            "q\"b\\ \0\u{7}\u{8}\t\n\u{b}\u{c}\r\u{1b}\u{1}\u{7f}\u{85}\u{2028}\u{feff}é",
        );
        assert_eq!(
            out,
            r#""q\"b\\ \0\a\b\t\n\v\f\r\e\x01\x7f\x85\u2028\ufeffé""#
        );
    }

    #[test]
    fn floats_read_as_floats_in_yaml_1_1() {
        for (f, want) in [
            (0.5, "0.5"),
            (1.0, "1.0"),
            (-0.0, "-0.0"),
            (1e21, "1.0e+21"),
            (1.5e-7, "1.5e-7"),
            (1e100, "1.0e+100"),
            (123456789.125, "123456789.125"),
        ] {
            assert_eq!(float_text(f), want, "{f:?}");
        }
    }

    #[test]
    fn keys_longer_than_readers_take_are_explicit() {
        let key = "k".repeat(1200);
        let text = document_to_string(&json!({ key.clone(): {"a": 1}, "b": [1] }));
        assert_eq!(text, format!("b:\n- 1\n? {key}\n:\n  a: 1\n"));
    }
}
