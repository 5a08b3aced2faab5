//! The name suffix kustomize gives generated ConfigMaps and Secrets:
//! the sha256 of a Go `json.Marshal` encoding of a few fields, cut to 10
//! characters with some letters swapped so it never looks like a number.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

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
    let text = gofmt::marshal(&Value::Object(m));
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
}
