//! dotenv, read and written as SOPS does (`stores/dotenv`): one `KEY=value`
//! a line (the key is everything before the first `=`, the value
//! everything after, `\n` escapes decoded), `#` comment lines, blank lines
//! dropped; the metadata is the `sops_`-prefixed keys, flattened.

use super::super::DecryptError;
use super::super::sops::{Entry, Loaded, Metadata, Node, go_float_text};
use super::{Unparsed, unflatten};

const PREFIX: &str = "sops_";

/// The items of a dotenv text; `None` when a line is neither a comment nor
/// `KEY=value`.
fn parse(text: &str) -> Option<Vec<Entry>> {
    let mut entries = Vec::new();
    for line in text.split('\n') {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            entries.push(Entry::Comment(comment.to_string()));
        } else {
            let (key, value) = line.split_once('=')?;
            entries.push(Entry::Pair(
                key.to_string(),
                Node::Str(value.replace("\\n", "\n")),
            ));
        }
    }
    Some(entries)
}

fn is_metadata_key(key: &str) -> bool {
    key == "sops_mac" || key == "sops_lastmodified"
}

fn has_sops(entries: &[Entry]) -> bool {
    entries
        .iter()
        .any(|e| matches!(e, Entry::Pair(k, _) if is_metadata_key(k)))
}

pub(super) fn load(text: &str) -> Result<Option<Loaded>, Unparsed> {
    let entries = parse(text).ok_or(Unparsed::NotThisFormat)?;
    if !has_sops(&entries) {
        return Ok(None);
    }
    let mut branch = Vec::new();
    let mut flat = Vec::new();
    for e in entries {
        match e {
            Entry::Pair(k, Node::Str(v)) if k.starts_with(PREFIX) => {
                flat.push((k[PREFIX.len()..].to_string(), v));
            }
            other => branch.push(other),
        }
    }
    Ok(Some(Loaded {
        branches: vec![branch],
        metadata: Metadata::from_json(&unflatten(&flat))?,
        comments_lost: false,
    }))
}

/// `stores.ValueToString` for the values a dotenv file can hold.
fn value_text(node: &Node) -> Result<String, DecryptError> {
    Ok(match node {
        Node::Str(s) => s.clone(),
        Node::Int(i) => i.to_string(),
        Node::Float(f) => go_float_text(*f),
        Node::Bool(b) => b.to_string(),
        Node::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        Node::Null => String::new(),
        Node::Map(_) | Node::Seq(_) => {
            return Err(DecryptError::malformed(
                "a dotenv value decrypts to a structured value",
            ));
        }
    })
}

pub(super) fn emit(branches: &[Vec<Entry>]) -> Result<Vec<u8>, DecryptError> {
    let mut out = String::new();
    for entry in branches.iter().flatten() {
        match entry {
            Entry::Comment(c) => {
                out.push('#');
                out.push_str(c);
            }
            Entry::Pair(k, v) => {
                out.push_str(k);
                out.push('=');
                out.push_str(&value_text(v)?.replace('\n', "\\n"));
            }
        }
        out.push('\n');
    }
    Ok(out.into_bytes())
}
