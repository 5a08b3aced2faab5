//! The name suffix kustomize gives generated ConfigMaps and Secrets:
//! the sha256 of a Go `json.Marshal` encoding of a few fields, cut to 10
//! characters with some letters swapped so it never looks like a number.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Encodes like Go's encoding/json: map keys sorted, HTML characters and
/// U+2028/U+2029 escaped.
fn go_json(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => go_string(s, out),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_json(x, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_string(k, out);
                out.push(':');
                go_json(&m[k], out);
            }
            out.push('}');
        }
    }
}

fn go_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn field(obj: &Value, name: &str) -> Value {
    let Some(cur) = obj.get(name) else {
        return Value::String(String::new());
    };
    match cur {
        Value::Object(_) | Value::Array(_) => cur.clone(),
        Value::String(s) => Value::String(s.clone()),
        Value::Null => Value::String(String::new()),
        other => Value::String(other.to_string()),
    }
}

/// The hash suffix for a generated ConfigMap or Secret (kustomize's
/// `hasher.Hash`).
pub fn hash_suffix(obj: &Value) -> String {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
    let mut m = Map::new();
    m.insert("kind".into(), Value::String(kind.into()));
    // kustomize looks the name up as the single field "metadata/name", which
    // never exists, so the name always hashes as "".
    m.insert("name".into(), Value::String(String::new()));
    m.insert("data".into(), field(obj, "data"));
    let extra = if kind == "Secret" {
        m.insert("type".into(), field(obj, "type"));
        "stringData"
    } else {
        "binaryData"
    };
    if let Some(v @ Value::Object(_)) = obj.get(extra) {
        m.insert(extra.into(), v.clone());
    }
    let mut text = String::new();
    go_json(&Value::Object(m), &mut text);
    let hex: String = Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    hex[..10]
        .chars()
        .map(|c| match c {
            '0' => 'g',
            '1' => 'h',
            '3' => 'k',
            'a' => 'm',
            'e' => 't',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_kustomize_for_a_literal_configmap() {
        // `configMapGenerator: [{name: x, literals: [a=1]}]` builds x-h29d89cmmt.
        let cm = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "x"}, "data": {"a": "1"}
        });
        assert_eq!(hash_suffix(&cm), "h29d89cmmt");
    }

    #[test]
    fn escapes_like_go() {
        let mut s = String::new();
        go_string("a<b>&\"\n\u{1}", &mut s);
        assert_eq!(s, r#""a\u003cb\u003e\u0026\"\n\u0001""#);
    }
}
