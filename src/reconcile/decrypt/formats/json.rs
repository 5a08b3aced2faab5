//! JSON, read as SOPS reads it (a top-level object; keys in file order,
//! duplicates kept; every number a float64) and written as `sops
//! --decrypt` writes it (Go's encoder, tab-indented).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::super::DecryptError;
use super::super::sops::{Entry, Loaded, Metadata, Node, go_float_text};
use super::{Unparsed, take_sops, to_json};

struct Parsed(Node);

impl<'de> Deserialize<'de> for Parsed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Parsed, D::Error> {
        d.deserialize_any(NodeVisitor).map(Parsed)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Float(v as f64))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Float(v as f64))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(Parsed(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, Parsed(v))) = map.next_entry::<String, Parsed>()? {
            entries.push(Entry::Pair(k, v));
        }
        Ok(Node::Map(entries))
    }
}

fn parse(text: &str) -> Option<Vec<Entry>> {
    match serde_json::from_str::<Parsed>(text) {
        Ok(Parsed(Node::Map(entries))) => Some(entries),
        _ => None,
    }
}

fn has_sops(entries: &[Entry]) -> bool {
    entries
        .iter()
        .any(|e| matches!(e, Entry::Pair(k, Node::Map(_)) if k == "sops"))
}

pub(super) fn load(text: &str) -> Result<Option<Loaded>, Unparsed> {
    let mut branch = parse(text).ok_or(Unparsed::NotThisFormat)?;
    if !has_sops(&branch) {
        return Ok(None);
    }
    let Some(metadata) = take_sops(&mut branch) else {
        return Ok(None);
    };
    Ok(Some(Loaded {
        branches: vec![branch],
        metadata: Metadata::from_json(&to_json(&metadata))?,
        comments_lost: false,
    }))
}

/// Go's `encoding/json` string encoding (HTML-safe).
fn write_string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
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
            c if (c as u32) < 0x20 || matches!(c, '<' | '>' | '&') => {
                let b = c as u32 as u8;
                out.push_str("\\u00");
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 0xf) as usize] as char);
            }
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Go's `encoding/json` float64 text.
fn float_text(f: f64) -> Option<String> {
    if !f.is_finite() {
        return None;
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let s = format!("{f:e}");
        let (mantissa, exp) = s.split_once('e')?;
        let exp = if exp.starts_with('-') {
            exp.to_string()
        } else {
            format!("+{exp}")
        };
        return Some(format!("{mantissa}e{exp}"));
    }
    Some(go_float_text(f))
}

fn indent(out: &mut String, depth: usize) {
    out.push('\n');
    out.extend(std::iter::repeat_n('\t', depth));
}

fn write(out: &mut String, node: &Node, depth: usize) -> Result<(), DecryptError> {
    match node {
        Node::Null => out.push_str("null"),
        Node::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Node::Int(i) => out.push_str(&i.to_string()),
        Node::Float(f) => out.push_str(&float_text(*f).ok_or_else(|| {
            DecryptError::malformed("a decrypted number cannot be written as JSON")
        })?),
        Node::Str(s) => write_string(out, s),
        Node::Bytes(b) => write_string(out, &String::from_utf8_lossy(b)),
        Node::Seq(items) => {
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                indent(out, depth + 1);
                write(out, item, depth + 1)?;
            }
            indent(out, depth);
            out.push(']');
        }
        Node::Map(entries) => {
            let pairs: Vec<(&String, &Node)> = entries
                .iter()
                .filter_map(|e| match e {
                    Entry::Pair(k, v) => Some((k, v)),
                    Entry::Comment(_) => None,
                })
                .collect();
            if pairs.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, (k, v)) in pairs.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                indent(out, depth + 1);
                write_string(out, k);
                out.push_str(": ");
                write(out, v, depth + 1)?;
            }
            indent(out, depth);
            out.push('}');
        }
    }
    Ok(())
}

pub(super) fn emit(branches: &[Vec<Entry>]) -> Result<Vec<u8>, DecryptError> {
    let empty = Vec::new();
    let branch = branches.first().unwrap_or(&empty);
    let mut out = String::new();
    write(&mut out, &Node::Map(branch.clone()), 0)?;
    out.push('\n');
    Ok(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decrypt_json_numbers_and_strings_as_go_writes_them() {
        assert_eq!(float_text(1.0).unwrap(), "1");
        assert_eq!(float_text(1e21).unwrap(), "1e+21");
        assert_eq!(float_text(1.5e-7).unwrap(), "1.5e-7");
        assert_eq!(
            float_text(12345678901234567890.0).unwrap(),
            "12345678901234567000"
        );
        assert_eq!(float_text(-0.0).unwrap(), "-0");
        let mut s = String::new();
        write_string(&mut s, "a<b>&\"\\\n\u{1}\u{2028}é");
        assert_eq!(s, r#""a\u003cb\u003e\u0026\"\\\n\u0001\u2028é""#);
    }

    #[test]
    fn decrypt_json_keeps_order_and_duplicates() {
        let entries = parse(r#"{"b": 1, "a": 2, "b": 3}"#).unwrap();
        let keys: Vec<&str> = entries
            .iter()
            .map(|e| match e {
                Entry::Pair(k, _) => k.as_str(),
                Entry::Comment(_) => "",
            })
            .collect();
        assert_eq!(keys, ["b", "a", "b"]);
        let out = emit(&[entries]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\n\t\"b\": 1,\n\t\"a\": 2,\n\t\"b\": 3\n}\n"
        );
    }
}
