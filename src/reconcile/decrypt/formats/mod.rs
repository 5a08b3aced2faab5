//! The file formats: loading a SOPS file into the tree and its metadata,
//! and emitting the decrypted tree in the same format.

mod dotenv;
mod ini;
mod json;
mod yaml;

use serde_json::Value as Json;

use super::sops::{self, Entry, Loaded, Node};
use super::{DecryptError, Keys};

/// The formats inspected, by file extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Yaml,
    Json,
    Dotenv,
    Ini,
}

impl Format {
    pub fn of(path: &str) -> Option<Format> {
        let name = path.rsplit('/').next().unwrap_or(path);
        let (_, ext) = name.rsplit_once('.')?;
        match ext {
            "yaml" | "yml" => Some(Format::Yaml),
            "json" => Some(Format::Json),
            "env" => Some(Format::Dotenv),
            "ini" => Some(Format::Ini),
            _ => None,
        }
    }
}

/// The marker of an encrypted SOPS value.
const ENC_MARKER: &[u8] = b"ENC[AES256_GCM,";

fn contains(content: &[u8], needle: &[u8]) -> bool {
    content.windows(needle.len()).any(|w| w == needle)
}

/// A cheap pre-check: every SOPS file names `sops` (its metadata key or
/// prefix) or holds encrypted values.
pub(crate) fn may_carry_metadata(content: &[u8]) -> bool {
    contains(content, b"sops") || contains(content, ENC_MARKER)
}

/// Whether the file carries SOPS metadata, or encrypted values (whose
/// metadata may be damaged or missing: such a file is not passed through).
pub(crate) fn has_metadata(format: Format, content: &[u8]) -> bool {
    if contains(content, ENC_MARKER) {
        return true;
    }
    let Ok(text) = std::str::from_utf8(content) else {
        return false;
    };
    matches!(load(format, text), Ok(Some(_)) | Err(_))
}

/// Loads the file: `None` when it parses and carries no SOPS metadata (or
/// does not parse at all and holds no encrypted value).
fn load(format: Format, text: &str) -> Result<Option<Loaded>, DecryptError> {
    let loaded = match format {
        Format::Yaml => yaml::load(text),
        Format::Json => json::load(text),
        Format::Dotenv => dotenv::load(text),
        Format::Ini => ini::load(text),
    };
    match loaded {
        Ok(l) => Ok(l),
        Err(Unparsed::NotThisFormat) => Ok(None),
        Err(Unparsed::Error(e)) => Err(e),
    }
}

/// Why a loader gave up.
pub(crate) enum Unparsed {
    /// The text is not of the format at all (nothing SOPS-like in it).
    NotThisFormat,
    /// A SOPS file that cannot be used.
    Error(DecryptError),
}

impl From<DecryptError> for Unparsed {
    fn from(e: DecryptError) -> Unparsed {
        Unparsed::Error(e)
    }
}

/// Decrypts one file: `None` when it carries no SOPS metadata.
pub(crate) fn decrypt(
    format: Format,
    content: &[u8],
    keys: &Keys,
) -> Result<Option<Vec<u8>>, DecryptError> {
    let enc_values = contains(content, ENC_MARKER);
    let Ok(text) = std::str::from_utf8(content) else {
        if enc_values {
            return Err(DecryptError::malformed("the file is not UTF-8 text"));
        }
        return Ok(None);
    };
    let loaded = match load(format, text)? {
        Some(loaded) => loaded,
        None if enc_values => {
            return Err(DecryptError::malformed(
                "the file holds encrypted values but no usable SOPS metadata",
            ));
        }
        None => return Ok(None),
    };
    let data_key = keys.data_key(&loaded.metadata)?;
    let branches = sops::decrypt_tree(loaded, &data_key)?;
    let out = match format {
        Format::Yaml => yaml::emit(&branches)?,
        Format::Json => json::emit(&branches)?,
        Format::Dotenv => dotenv::emit(&branches)?,
        Format::Ini => ini::emit(&branches)?,
    };
    Ok(Some(out))
}

/// A tree value as JSON, for reading the metadata.
pub(crate) fn to_json(node: &Node) -> Json {
    match node {
        Node::Null => Json::Null,
        Node::Str(s) => Json::String(s.clone()),
        Node::Int(i) => Json::from(*i),
        Node::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Node::Bool(b) => Json::Bool(*b),
        Node::Bytes(b) => Json::String(String::from_utf8_lossy(b).into_owned()),
        Node::Seq(items) => Json::Array(items.iter().map(to_json).collect()),
        Node::Map(entries) => {
            let mut map = serde_json::Map::new();
            for e in entries {
                if let Entry::Pair(k, v) = e {
                    map.entry(k.clone()).or_insert_with(|| to_json(v));
                }
            }
            Json::Object(map)
        }
    }
}

/// Splits the top-level `sops` entries off a branch: the first one's value.
pub(crate) fn take_sops(branch: &mut Vec<Entry>) -> Option<Node> {
    let mut found = None;
    branch.retain_mut(|e| match e {
        Entry::Pair(k, v) if k == "sops" => {
            if found.is_none() {
                found = Some(std::mem::replace(v, Node::Null));
            }
            false
        }
        _ => true,
    });
    found
}

/// SOPS's flattened metadata (`stores/flatten.go`): `age__list_0__map_enc`
/// and the like, back to a nested JSON value. Values are strings, with
/// `\n` escapes decoded.
pub(crate) fn unflatten(flat: &[(String, String)]) -> Json {
    const MAP: &str = "__map_";
    const LIST: &str = "__list_";
    enum Token {
        Key(String),
        Index(usize),
    }
    fn tokenize(path: &str) -> Option<Vec<Token>> {
        let mut tokens = Vec::new();
        let mut rest = path;
        let mut kind_is_list = false;
        let mut first = true;
        loop {
            let next_map = rest.find(MAP);
            let next_list = rest.find(LIST);
            let (end, sep, is_list) = match (next_map, next_list) {
                (Some(m), Some(l)) if l < m => (l, LIST.len(), true),
                (Some(m), _) => (m, MAP.len(), false),
                (None, Some(l)) => (l, LIST.len(), true),
                (None, None) => (rest.len(), 0, false),
            };
            let piece = &rest[..end];
            if first || !kind_is_list {
                tokens.push(Token::Key(piece.to_string()));
            } else {
                // Go's Atoi failure gives 0.
                let n: usize = piece.parse().unwrap_or(0);
                if n > 10_000 {
                    return None;
                }
                tokens.push(Token::Index(n));
            }
            first = false;
            if sep == 0 {
                return Some(tokens);
            }
            kind_is_list = is_list;
            rest = &rest[end + sep..];
        }
    }
    fn place(node: &mut Json, tokens: &[Token], value: &str) {
        let Some((head, tail)) = tokens.split_first() else {
            return;
        };
        let slot: &mut Json = match head {
            Token::Key(k) => {
                if !node.is_object() {
                    *node = Json::Object(serde_json::Map::new());
                }
                let Json::Object(map) = node else { return };
                map.entry(k.clone()).or_insert(Json::Null)
            }
            Token::Index(i) => {
                if !node.is_array() {
                    *node = Json::Array(Vec::new());
                }
                let Json::Array(list) = node else { return };
                if list.len() <= *i {
                    list.resize(*i + 1, Json::Null);
                }
                &mut list[*i]
            }
        };
        if tail.is_empty() {
            *slot = Json::String(value.to_string());
        } else {
            place(slot, tail, value);
        }
    }
    let mut root = Json::Object(serde_json::Map::new());
    for (k, v) in flat {
        if let Some(tokens) = tokenize(k) {
            place(&mut root, &tokens, &v.replace("\\n", "\n"));
        }
    }
    root
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decrypt_unflatten_metadata() {
        let flat = vec![
            ("age__list_0__map_enc".to_string(), "a\\nb".to_string()),
            (
                "age__list_0__map_recipient".to_string(),
                "age1x".to_string(),
            ),
            (
                "age__list_1__map_recipient".to_string(),
                "age1y".to_string(),
            ),
            (
                "key_groups__list_0__map_age__list_0__map_enc".to_string(),
                "e".to_string(),
            ),
            ("mac".to_string(), "m".to_string()),
        ];
        let v = unflatten(&flat);
        assert_eq!(
            v,
            serde_json::json!({
                "age": [{"enc": "a\nb", "recipient": "age1x"}, {"recipient": "age1y"}],
                "key_groups": [{"age": [{"enc": "e"}]}],
                "mac": "m"
            })
        );
    }

    #[test]
    fn decrypt_formats_by_extension() {
        assert_eq!(Format::of("a/b.yaml"), Some(Format::Yaml));
        assert_eq!(Format::of("b.yml"), Some(Format::Yaml));
        assert_eq!(Format::of("x.json"), Some(Format::Json));
        assert_eq!(Format::of(".env"), Some(Format::Dotenv));
        assert_eq!(Format::of("app.env"), Some(Format::Dotenv));
        assert_eq!(Format::of("c.ini"), Some(Format::Ini));
        assert_eq!(Format::of("c.txt"), None);
        assert_eq!(Format::of("dir.yaml/c"), None);
    }
}
