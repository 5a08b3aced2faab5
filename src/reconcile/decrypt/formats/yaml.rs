//! YAML, read as SOPS reads it (go-yaml v3: every document a mapping,
//! plain scalars resolved by go-yaml's rules, aliases expanded, comments
//! not kept) and written back with `serde_yaml_ng`, key order kept.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Tag};

use super::super::DecryptError;
use super::super::sops::{Entry, Loaded, Metadata, Node};
use super::{Unparsed, take_sops, to_json};

/// The deepest nesting accepted.
const MAX_DEPTH: usize = 256;
/// The most nodes a file may expand to (aliases included).
const MAX_NODES: usize = 1_000_000;

enum Frame {
    Seq(Vec<Node>, usize),
    /// The entries, the pending key (if the key was read), the anchor.
    Map(Vec<Entry>, Option<Node>, usize),
}

/// go-yaml v3's `resolve` for an untagged plain scalar (timestamps stay
/// strings when decoded into `interface{}`, so they need no case here).
fn resolve_plain(s: &str) -> Result<Node, DecryptError> {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Ok(Node::Null),
        "true" | "True" | "TRUE" => return Ok(Node::Bool(true)),
        "false" | "False" | "FALSE" => return Ok(Node::Bool(false)),
        ".nan" | ".NaN" | ".NAN" => return Ok(Node::Float(f64::NAN)),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Ok(Node::Float(f64::INFINITY));
        }
        "-.inf" | "-.Inf" | "-.INF" => return Ok(Node::Float(f64::NEG_INFINITY)),
        _ => {}
    }
    let first = s.as_bytes()[0];
    match first {
        b'.' => {
            if let Some(f) = go_float(s) {
                return Ok(Node::Float(f));
            }
        }
        b'+' | b'-' | b'0'..=b'9' => {
            let plain = s.replace('_', "");
            match go_int_base0(&plain) {
                Some(GoInt::Int(i)) => return Ok(Node::Int(i)),
                Some(GoInt::Uint) => {
                    return Err(DecryptError::malformed(
                        "a YAML integer is beyond the signed 64-bit range",
                    ));
                }
                None => {}
            }
            if yaml_style_float(&plain)
                && let Some(f) = go_float(&plain)
            {
                return Ok(Node::Float(f));
            }
        }
        _ => {}
    }
    Ok(Node::Str(s.to_string()))
}

enum GoInt {
    Int(i64),
    /// Fits only Go's `uint64`.
    Uint,
}

/// Go's `strconv.ParseInt(s, 0, 64)` (then `ParseUint(s, 0, 64)`).
fn go_int_base0(s: &str) -> Option<GoInt> {
    let (neg, body) = match s.as_bytes().first()? {
        b'+' => (false, &s[1..]),
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    let signed = s.starts_with(['+', '-']);
    let (radix, digits) =
        if let Some(d) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
            (16, d)
        } else if let Some(d) = body.strip_prefix("0b").or_else(|| body.strip_prefix("0B")) {
            (2, d)
        } else if let Some(d) = body.strip_prefix("0o").or_else(|| body.strip_prefix("0O")) {
            (8, d)
        } else if body.len() > 1 && body.starts_with('0') {
            (8, &body[1..])
        } else {
            (10, body)
        };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u128::from_str_radix(digits, radix).ok()?;
    if neg {
        if magnitude <= 1u128 << 63 {
            return Some(GoInt::Int((magnitude as i128).wrapping_neg() as i64));
        }
        return None;
    }
    if magnitude <= i64::MAX as u128 {
        return Some(GoInt::Int(magnitude as i64));
    }
    if !signed && magnitude <= u64::MAX as u128 {
        return Some(GoInt::Uint);
    }
    None
}

/// `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`
fn yaml_style_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            digits(&mut i);
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Go's `strconv.ParseFloat(s, 64)` for decimal texts: out-of-range values
/// are errors there.
fn go_float(s: &str) -> Option<f64> {
    if !s
        .bytes()
        .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    s.parse::<f64>().ok().filter(|f| f.is_finite())
}

fn scalar(value: &str, style: ScalarStyle, tag: Option<&Tag>) -> Result<Node, DecryptError> {
    let Some(tag) = tag else {
        return if style == ScalarStyle::Plain {
            resolve_plain(value)
        } else {
            Ok(Node::Str(value.to_string()))
        };
    };
    let mismatch = || {
        DecryptError::malformed(format!(
            "a YAML scalar does not fit its tag !!{}",
            tag.suffix
        ))
    };
    if tag.handle != "tag:yaml.org,2002:" {
        // Tags go-yaml cannot resolve leave the text as it is.
        return Ok(Node::Str(value.to_string()));
    }
    let resolved = || resolve_plain(value);
    match tag.suffix.as_str() {
        "str" => Ok(Node::Str(value.to_string())),
        "binary" => {
            use base64::Engine;
            let cleaned: String = value.chars().filter(|c| !c.is_whitespace()).collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(cleaned)
                .map_err(|_| mismatch())?;
            Ok(Node::Str(String::from_utf8_lossy(&bytes).into_owned()))
        }
        "null" => match resolved()? {
            Node::Null => Ok(Node::Null),
            _ => Err(mismatch()),
        },
        "bool" => match resolved()? {
            b @ Node::Bool(_) => Ok(b),
            _ => Err(mismatch()),
        },
        "int" => match resolved()? {
            i @ Node::Int(_) => Ok(i),
            _ => Err(mismatch()),
        },
        "float" => match resolved()? {
            f @ Node::Float(_) => Ok(f),
            Node::Int(i) => Ok(Node::Float(i as f64)),
            _ => Err(mismatch()),
        },
        "timestamp" => Ok(Node::Str(value.to_string())),
        _ => Ok(Node::Str(value.to_string())),
    }
}

/// The documents of a YAML stream, as go-yaml v3 would hand them to SOPS,
/// and the first thing in them SOPS would refuse (a key that is not a
/// string, a scalar that does not fit its tag). `Err(NotThisFormat)` when
/// the text is not YAML or exceeds the limits.
fn documents(text: &str) -> Result<(Vec<Node>, Option<DecryptError>), Unparsed> {
    let mut problem: Option<DecryptError> = None;
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut nodes = 0usize;
    let mut node_weight: HashMap<usize, usize> = HashMap::new();
    for event in Parser::new_from_str(text) {
        let Ok((event, _)) = event else {
            return Err(Unparsed::NotThisFormat);
        };
        let (done, anchor, weight) = match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing => continue,
            Event::DocumentStart(_) | Event::DocumentEnd => {
                anchors.clear();
                continue;
            }
            Event::SequenceStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(Unparsed::NotThisFormat);
                }
                stack.push(Frame::Seq(Vec::new(), anchor));
                continue;
            }
            Event::MappingStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(Unparsed::NotThisFormat);
                }
                stack.push(Frame::Map(Vec::new(), None, anchor));
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq(items, anchor)) => (Node::Seq(items), anchor, 1),
                _ => return Err(Unparsed::NotThisFormat),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map(entries, None, anchor)) => (Node::Map(entries), anchor, 1),
                _ => return Err(Unparsed::NotThisFormat),
            },
            Event::Scalar(value, style, anchor, tag) => {
                let node = scalar(&value, style, tag.as_deref()).unwrap_or_else(|e| {
                    problem.get_or_insert(e);
                    Node::Str(value.to_string())
                });
                (node, anchor, 1)
            }
            Event::Alias(id) => {
                let Some(node) = anchors.get(&id) else {
                    return Err(Unparsed::NotThisFormat);
                };
                let weight = node_weight.get(&id).copied().unwrap_or(1);
                (node.clone(), 0, weight)
            }
        };
        nodes = nodes.saturating_add(weight);
        if nodes > MAX_NODES {
            return Err(Unparsed::NotThisFormat);
        }
        if anchor != 0 {
            anchors.insert(anchor, done.clone());
            node_weight.insert(anchor, weight_of(&done));
        }
        match stack.last_mut() {
            None => docs.push(done),
            Some(Frame::Seq(items, _)) => items.push(done),
            Some(Frame::Map(entries, pending, _)) => match pending.take() {
                None => *pending = Some(done),
                Some(key) => {
                    let key = match key {
                        Node::Str(s) => s,
                        _ => {
                            problem.get_or_insert_with(|| {
                                DecryptError::malformed(
                                    "a YAML mapping has a key that is not a string",
                                )
                            });
                            String::new()
                        }
                    };
                    entries.push(Entry::Pair(key, done));
                }
            },
        }
    }
    if !stack.is_empty() {
        return Err(Unparsed::NotThisFormat);
    }
    Ok((docs, problem))
}

fn weight_of(node: &Node) -> usize {
    match node {
        Node::Seq(items) => 1 + items.iter().map(weight_of).sum::<usize>(),
        Node::Map(entries) => {
            1 + entries
                .iter()
                .map(|e| match e {
                    Entry::Pair(_, v) => 1 + weight_of(v),
                    Entry::Comment(_) => 1,
                })
                .sum::<usize>()
        }
        _ => 1,
    }
}

fn has_sops(doc: &Node) -> bool {
    matches!(doc, Node::Map(entries) if entries.iter().any(|e| matches!(e, Entry::Pair(k, Node::Map(_)) if k == "sops")))
}

pub(super) fn load(text: &str) -> Result<Option<Loaded>, Unparsed> {
    let (docs, problem) = documents(text)?;
    if !docs.iter().any(has_sops) {
        return Ok(None);
    }
    if let Some(problem) = problem {
        return Err(problem.into());
    }
    let mut branches = Vec::with_capacity(docs.len());
    let mut metadata = None;
    for (i, doc) in docs.into_iter().enumerate() {
        let mut branch = match doc {
            Node::Map(entries) => entries,
            Node::Null => Vec::new(),
            _ => {
                return Err(DecryptError::malformed("a YAML document is not a mapping").into());
            }
        };
        if i == 0 {
            let mut seen = std::collections::HashSet::new();
            for e in &branch {
                if let Entry::Pair(k, _) = e
                    && !seen.insert(k.clone())
                {
                    return Err(DecryptError::malformed(format!(
                        "the first YAML document defines {k:?} twice"
                    ))
                    .into());
                }
            }
        }
        let sops = take_sops(&mut branch);
        if i == 0 {
            metadata = sops;
        }
        branches.push(branch);
    }
    let Some(metadata) = metadata else {
        return Err(DecryptError::malformed("the first YAML document has no sops metadata").into());
    };
    Ok(Some(Loaded {
        branches,
        metadata: Metadata::from_json(&to_json(&metadata))?,
        comments_lost: true,
    }))
}

fn to_yaml(node: &Node) -> serde_yaml_ng::Value {
    use serde_yaml_ng::Value;
    match node {
        Node::Null => Value::Null,
        Node::Str(s) => Value::String(s.clone()),
        Node::Int(i) => Value::Number((*i).into()),
        Node::Float(f) => go_yaml_float(*f),
        Node::Bool(b) => Value::Bool(*b),
        Node::Bytes(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
        Node::Seq(items) => Value::Sequence(items.iter().map(to_yaml).collect()),
        Node::Map(entries) => Value::Mapping(mapping(entries)),
    }
}

/// A float as go-yaml v3 writes it (`strconv.FormatFloat(f, 'g', -1, 64)`,
/// `.inf`, `.nan`), read back: `1000.0` is written `1000` and so reads back
/// as an integer, as it does from `sops --decrypt`.
fn go_yaml_float(f: f64) -> serde_yaml_ng::Value {
    let text = if f.is_nan() {
        ".nan".to_string()
    } else if f.is_infinite() {
        if f > 0.0 { ".inf" } else { "-.inf" }.to_string()
    } else {
        let e = format!("{f:e}");
        let (mantissa, exp) = e.split_once('e').unwrap_or((&e, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        if !(-4..6).contains(&exp) {
            let sign = if exp < 0 { '-' } else { '+' };
            format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
        } else {
            format!("{f}")
        }
    };
    serde_yaml_ng::from_str(&text).unwrap_or(serde_yaml_ng::Value::Number(f.into()))
}

fn mapping(entries: &[Entry]) -> serde_yaml_ng::Mapping {
    let mut map = serde_yaml_ng::Mapping::new();
    for e in entries {
        if let Entry::Pair(k, v) = e {
            map.insert(serde_yaml_ng::Value::String(k.clone()), to_yaml(v));
        }
    }
    map
}

pub(super) fn emit(branches: &[Vec<Entry>]) -> Result<Vec<u8>, DecryptError> {
    let mut out = String::new();
    for (i, branch) in branches.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        let doc = serde_yaml_ng::to_string(&mapping(branch)).map_err(|_| {
            DecryptError::malformed("the decrypted document cannot be written as YAML")
        })?;
        out.push_str(&doc);
    }
    Ok(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decrypt_yaml_resolves_plain_scalars_as_go_yaml_v3() {
        let cases: &[(&str, Node)] = &[
            ("017", Node::Int(15)),
            ("1_000", Node::Int(1000)),
            ("0x1F", Node::Int(31)),
            ("0o17", Node::Int(15)),
            ("0b101", Node::Int(5)),
            ("-12", Node::Int(-12)),
            ("+7", Node::Int(7)),
            ("1.5", Node::Float(1.5)),
            ("1e3", Node::Float(1000.0)),
            (".5", Node::Float(0.5)),
            ("1e400", Node::Str("1e400".into())),
            ("yes", Node::Str("yes".into())),
            ("on", Node::Str("on".into())),
            ("True", Node::Bool(true)),
            ("~", Node::Null),
            ("2001-12-14", Node::Str("2001-12-14".into())),
            ("018", Node::Float(18.0)),
            ("+0x1F", Node::Int(31)),
            ("1:20", Node::Str("1:20".into())),
            ("-", Node::Str("-".into())),
            ("99999999999999999999", Node::Float(1e20)),
        ];
        for (text, want) in cases {
            assert_eq!(&resolve_plain(text).unwrap(), want, "{text}");
        }
        assert!(resolve_plain("18446744073709551615").is_err());
    }

    #[test]
    fn decrypt_yaml_floats_as_go_yaml_writes_them() {
        use serde_yaml_ng::Value;
        assert_eq!(go_yaml_float(1000.0), Value::Number(1000.into()));
        assert_eq!(go_yaml_float(0.25), Value::Number(0.25.into()));
        assert_eq!(go_yaml_float(1e6), Value::Number(1e6.into()));
        assert_eq!(go_yaml_float(-1.5e-7), Value::Number((-1.5e-7).into()));
        assert_eq!(go_yaml_float(100000.0), Value::Number(100000.into()));
    }

    #[test]
    fn decrypt_yaml_documents_keep_order_and_expand_aliases() {
        let (docs, _) = documents("b: &x [1, '2']\na: *x\n---\n").unwrap_or_else(|_| panic!());
        assert_eq!(docs.len(), 2);
        let Node::Map(entries) = &docs[0] else {
            panic!()
        };
        let seq = Node::Seq(vec![Node::Int(1), Node::Str("2".into())]);
        assert_eq!(entries[0], Entry::Pair("b".into(), seq.clone()));
        assert_eq!(entries[1], Entry::Pair("a".into(), seq));
        assert_eq!(docs[1], Node::Null);
    }

    #[test]
    fn decrypt_yaml_refuses_alias_bombs_and_deep_nesting() {
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        let names = ["b", "c", "d", "e", "f", "g", "h", "i"];
        let mut prev = "a";
        for n in names {
            bomb.push_str(&format!("{n}: &{n} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
            prev = n;
        }
        assert!(matches!(documents(&bomb), Err(Unparsed::NotThisFormat)));
        let deep = "[".repeat(10_000);
        assert!(documents(&deep).is_err());
    }
}
