//! INI, read and written as SOPS does through go-ini (`stores/ini`): the
//! keys before the first section belong to `DEFAULT`; `;` and `#` comment
//! lines attach to the next section or key; `=` or `:` separate a key
//! from its value; values lose surrounding quotes and inline comments. The
//! output is go-ini's pretty layout (aligned `=`, a blank line between
//! sections). The metadata is the `[sops]` section, flattened.

use super::super::DecryptError;
use super::super::sops::{Entry, Loaded, Metadata, Node};
use super::{Unparsed, unflatten};

const DEFAULT: &str = "DEFAULT";

struct Key {
    name: String,
    value: String,
    comment: String,
}

struct Section {
    name: String,
    comment: String,
    keys: Vec<Key>,
}

fn trim_comment_chars(c: &str) -> String {
    if c.starts_with(';') {
        c.trim_start_matches([';', ' ']).to_string()
    } else if c.starts_with('#') {
        c.trim_start_matches(['#', ' ']).to_string()
    } else {
        c.to_string()
    }
}

/// go-ini's `readKeyName`: the key and where its value starts.
fn key_name(line: &str) -> Option<(String, usize)> {
    let quote = if line.starts_with("\"\"\"") && line.len() > 6 {
        "\"\"\""
    } else if line.starts_with('"') {
        "\""
    } else if line.starts_with('`') {
        "`"
    } else {
        ""
    };
    if !quote.is_empty() {
        let start = quote.len();
        let pos = line[start..].find(quote)? + start;
        let i = line[pos + start..].find(['=', ':'])?;
        let end = pos + i;
        return Some((line[start..pos].trim().to_string(), end + start + 1));
    }
    let end = line.find(['=', ':'])?;
    if end == 0 {
        return None;
    }
    Some((line[..end].trim().to_string(), end + 1))
}

/// go-ini's `readValue` (single-line forms): the value, and an inline
/// comment to add to the key's comment.
fn value(raw: &str) -> Option<(String, Option<String>)> {
    let line = raw.trim_start();
    if line.is_empty() {
        return Some((String::new(), None));
    }
    let quote = if line.len() > 3 && line.starts_with("\"\"\"") {
        "\"\"\""
    } else if line.starts_with('`') {
        "`"
    } else {
        ""
    };
    if !quote.is_empty() {
        let start = quote.len();
        // Multi-line quoted values are not supported here.
        let pos = line[start..].rfind(quote)?;
        return Some((line[start..start + pos].to_string(), None));
    }
    let mut line = line.trim().to_string();
    let mut comment = None;
    if let Some(i) = line.find(['#', ';']) {
        comment = Some(line[i..].to_string());
        line = line[..i].trim().to_string();
    }
    let surrounded = |q: char| {
        line.len() >= 2
            && line.starts_with(q)
            && line.ends_with(q)
            && line[1..].find(q) == Some(line.len() - 2)
    };
    if surrounded('\'') || surrounded('"') {
        line = line[1..line.len() - 1].to_string();
    }
    Some((line, comment))
}

fn parse(text: &str) -> Option<Vec<Section>> {
    let mut sections = vec![Section {
        name: DEFAULT.to_string(),
        comment: String::new(),
        keys: Vec::new(),
    }];
    let mut current = 0;
    let mut comment = String::new();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for raw in text.split_inclusive('\n') {
        let line = raw.trim_start();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('#') || line.starts_with(';') {
            comment.push_str(line);
            continue;
        }
        if line.starts_with('[') {
            let close = line.rfind(']')?;
            let name = line[1..close].trim().to_string();
            if name.is_empty() {
                return None;
            }
            let rest = line[close + 1..].trim_start();
            if rest.starts_with('#') || rest.starts_with(';') {
                comment.push_str(rest);
            }
            current = match sections.iter().position(|s| s.name == name) {
                Some(i) => i,
                None => {
                    sections.push(Section {
                        name,
                        comment: String::new(),
                        keys: Vec::new(),
                    });
                    sections.len() - 1
                }
            };
            sections[current].comment = comment.trim().to_string();
            comment.clear();
            continue;
        }
        let (name, offset) = key_name(line)?;
        let (value, inline) = value(&line[offset..])?;
        if let Some(inline) = inline {
            comment.push_str(&inline);
        }
        let section = &mut sections[current];
        let key_comment = comment.trim().to_string();
        comment.clear();
        match section.keys.iter_mut().find(|k| k.name == name) {
            Some(k) => {
                k.value = value;
                k.comment = key_comment;
            }
            None => section.keys.push(Key {
                name,
                value,
                comment: key_comment,
            }),
        }
    }
    Some(sections)
}

fn has_sops(sections: &[Section]) -> bool {
    sections.iter().any(|s| s.name == "sops")
}

pub(super) fn load(text: &str) -> Result<Option<Loaded>, Unparsed> {
    let sections = parse(text).ok_or(Unparsed::NotThisFormat)?;
    if !has_sops(&sections) {
        return Ok(None);
    }
    let mut branch = Vec::new();
    let mut flat = Vec::new();
    for section in sections {
        if section.name == "sops" {
            flat.extend(section.keys.into_iter().map(|k| (k.name, k.value)));
            continue;
        }
        let mut items = Vec::new();
        if !section.comment.is_empty() {
            items.push(Entry::Comment(trim_comment_chars(&section.comment)));
        }
        for key in section.keys {
            items.push(Entry::Pair(key.name, Node::Str(key.value)));
            if !key.comment.is_empty() {
                items.push(Entry::Comment(trim_comment_chars(&key.comment)));
            }
        }
        branch.push(Entry::Pair(section.name, Node::Map(items)));
    }
    Ok(Some(Loaded {
        branches: vec![branch],
        metadata: Metadata::from_json(&unflatten(&flat))?,
        comments_lost: false,
    }))
}

/// `valToString` of the INI store.
fn value_text(node: &Node) -> Result<String, DecryptError> {
    Ok(match node {
        Node::Str(s) => s.clone(),
        Node::Int(i) => i.to_string(),
        Node::Float(f) => format!("{f:.6}"),
        Node::Bool(b) => b.to_string(),
        Node::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        Node::Null => "%!s(<nil>)".to_string(),
        Node::Map(_) | Node::Seq(_) => {
            return Err(DecryptError::malformed(
                "an INI value decrypts to a structured value",
            ));
        }
    })
}

/// go-ini's comment layout: `; ` before each line unless it starts with a
/// comment character.
fn comment_lines(comment: &str, out: &mut String, multiline_prefix_each: bool) {
    if multiline_prefix_each {
        for line in comment.split('\n') {
            if line.starts_with('#') || line.starts_with(';') {
                out.push_str(&line[..1]);
                out.push(' ');
                out.push_str(line[1..].trim());
            } else {
                out.push_str("; ");
                out.push_str(line);
            }
            out.push('\n');
        }
    } else {
        let c = if comment.starts_with('#') || comment.starts_with(';') {
            format!("{} {}", &comment[..1], comment[1..].trim())
        } else {
            format!("; {comment}")
        };
        out.push_str(&c.replace('\n', "\n; "));
        out.push('\n');
    }
}

pub(super) fn emit(branches: &[Vec<Entry>]) -> Result<Vec<u8>, DecryptError> {
    let mut out = String::new();
    let mut written = 0usize;
    for (index, entry) in branches.iter().flatten().enumerate() {
        let Entry::Pair(name, section) = entry else {
            continue;
        };
        let Node::Map(items) = section else {
            return Err(DecryptError::malformed("an INI section is not a mapping"));
        };
        // Section comment: a comment first in the section.
        let (section_comment, rest) = match items.first() {
            Some(Entry::Comment(c)) => (Some(c.as_str()), &items[1..]),
            _ => (None, &items[..]),
        };
        let mut keys: Vec<(String, String, String)> = Vec::new();
        for item in rest {
            match item {
                Entry::Comment(c) => {
                    if let Some(last) = keys.last_mut() {
                        last.2 = c.clone();
                    }
                }
                Entry::Pair(k, v) => {
                    let value = value_text(v)?;
                    match keys.iter_mut().find(|(n, _, _)| n == k) {
                        Some(existing) => existing.1 = value,
                        None => keys.push((k.clone(), value, String::new())),
                    }
                }
            }
        }
        let is_default = index == 0 && name.to_uppercase() == DEFAULT;
        if is_default && keys.is_empty() && section_comment.is_none() {
            continue;
        }
        if written > 0 {
            out.push('\n');
        }
        written += 1;
        if let Some(c) = section_comment.filter(|c| !c.is_empty()) {
            comment_lines(c, &mut out, true);
        }
        if !is_default {
            out.push('[');
            out.push_str(name);
            out.push_str("]\n");
        }
        let quoted_key = |k: &str| {
            if k.contains('"') || k.contains(['=', ':']) {
                format!("`{k}`")
            } else if k.contains('`') {
                format!("\"\"\"{k}\"\"\"")
            } else {
                k.to_string()
            }
        };
        let align = keys
            .iter()
            .map(|(k, _, _)| quoted_key(k).len())
            .max()
            .unwrap_or(0);
        for (k, v, c) in &keys {
            if !c.is_empty() {
                comment_lines(c, &mut out, false);
            }
            let k = quoted_key(k);
            out.push_str(&k);
            out.extend(std::iter::repeat_n(' ', align - k.len()));
            out.push_str(" = ");
            if v.contains(['\n', '`']) {
                out.push_str(&format!("\"\"\"{v}\"\"\""));
            } else if v.contains(['#', ';']) {
                out.push_str(&format!("`{v}`"));
            } else if v.trim() != v {
                out.push_str(&format!("\"{v}\""));
            } else {
                out.push_str(v);
            }
            out.push('\n');
        }
    }
    Ok(out.into_bytes())
}
