//! The SOPS tree, its metadata, the AES-256-GCM values and the MAC walk,
//! as `sops --decrypt` does them (`sops.go`: `Tree.Decrypt`,
//! `shouldBeEncrypted`, `ToBytes`; `aes/cipher.go`; `stores/stores.go`:
//! `Metadata.ToInternal`).

use aes_gcm::aead::consts::{U12, U16, U32};
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use regex::Regex;
use serde_json::Value as Json;
use sha2::{Digest, Sha512};

use super::{DecryptError, DecryptErrorKind};

/// A value of the SOPS tree.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    Null,
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Bytes(Vec<u8>),
    Map(Vec<Entry>),
    Seq(Vec<Node>),
}

/// An item of a mapping: a key and its value, or a comment (dotenv, INI).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Entry {
    Pair(String, Node),
    Comment(String),
}

/// The documents of a file (one branch per YAML document; one for the
/// other formats) and the file's SOPS metadata.
pub(crate) struct Loaded {
    pub branches: Vec<Vec<Entry>>,
    pub metadata: Metadata,
    /// Whether the format lost the file's comments while loading (YAML):
    /// then comment-based encryption rules cannot be evaluated and a value
    /// counts as encrypted when it has the `ENC[...]` form.
    pub comments_lost: bool,
}

/// The key types SOPS knows that this controller cannot use.
pub(crate) const REMOTE_KEY_TYPES: [&str; 4] = ["kms", "gcp_kms", "azure_kv", "hc_vault"];

/// One master key entry: what its data key copy is encrypted to.
#[derive(Clone, Debug)]
pub(crate) enum MasterKey {
    Age {
        recipient: String,
        enc: String,
    },
    Pgp {
        fingerprint: String,
        enc: String,
    },
    /// AWS KMS, GCP KMS, Azure Key Vault or HashiCorp Vault.
    Remote {
        kind: &'static str,
    },
}

/// Which values are encrypted (exactly one rule applies, as in SOPS).
#[derive(Debug)]
enum Rule {
    UnencryptedSuffix(String),
    EncryptedSuffix(String),
    /// `None`: the pattern does not compile; SOPS then matches nothing.
    UnencryptedRegex(Option<Regex>),
    EncryptedRegex(Option<Regex>),
}

/// The parsed `sops` metadata of a file.
#[derive(Debug)]
pub(crate) struct Metadata {
    pub last_modified: String,
    pub mac: String,
    pub groups: Vec<Vec<MasterKey>>,
    pub shamir_threshold: usize,
    rule: Rule,
    unencrypted_comment_regex: Option<Option<Regex>>,
    encrypted_comment_regex: Option<Option<Regex>>,
    mac_only_encrypted: bool,
}

fn get<'a>(obj: &'a serde_json::Map<String, Json>, key: &str) -> Option<&'a Json> {
    obj.get(key).filter(|v| !v.is_null())
}

fn string_field(obj: &serde_json::Map<String, Json>, key: &str) -> Result<String, DecryptError> {
    match get(obj, key) {
        None => Ok(String::new()),
        Some(Json::String(s)) => Ok(s.clone()),
        Some(_) => Err(DecryptError::malformed(format!(
            "sops metadata field {key:?} is not a string"
        ))),
    }
}

fn list_field<'a>(
    obj: &'a serde_json::Map<String, Json>,
    key: &str,
) -> Result<&'a [Json], DecryptError> {
    match get(obj, key) {
        None => Ok(&[]),
        Some(Json::Array(a)) => Ok(a),
        Some(_) => Err(DecryptError::malformed(format!(
            "sops metadata field {key:?} is not a list"
        ))),
    }
}

/// The master keys of one group (`sops` itself or a `key_groups` entry), in
/// the order SOPS tries them: age, then PGP, then the others.
fn group_of(obj: &serde_json::Map<String, Json>) -> Result<Vec<MasterKey>, DecryptError> {
    let mut group = Vec::new();
    for entry in list_field(obj, "age")? {
        let Json::Object(e) = entry else {
            return Err(DecryptError::malformed("an age entry is not a mapping"));
        };
        group.push(MasterKey::Age {
            recipient: string_field(e, "recipient")?,
            enc: string_field(e, "enc")?,
        });
    }
    for entry in list_field(obj, "pgp")? {
        let Json::Object(e) = entry else {
            return Err(DecryptError::malformed("a pgp entry is not a mapping"));
        };
        group.push(MasterKey::Pgp {
            fingerprint: string_field(e, "fp")?,
            enc: string_field(e, "enc")?,
        });
    }
    for kind in REMOTE_KEY_TYPES {
        for _ in list_field(obj, kind)? {
            group.push(MasterKey::Remote { kind });
        }
    }
    Ok(group)
}

fn compile(pattern: &str) -> Option<Regex> {
    Regex::new(pattern).ok()
}

impl Metadata {
    /// Reads the `sops` mapping (for dotenv and INI: already unflattened).
    pub fn from_json(value: &Json) -> Result<Metadata, DecryptError> {
        let Json::Object(obj) = value else {
            return Err(DecryptError::malformed(
                "the sops metadata is not a mapping",
            ));
        };
        let last_modified = string_field(obj, "lastmodified")?;
        let mac = string_field(obj, "mac")?;
        // One group from the top-level key lists, else the key groups.
        let top = group_of(obj)?;
        let groups = if !top.is_empty() {
            vec![top]
        } else {
            let mut groups = Vec::new();
            for g in list_field(obj, "key_groups")? {
                let Json::Object(g) = g else {
                    return Err(DecryptError::malformed("a key group is not a mapping"));
                };
                groups.push(group_of(g)?);
            }
            groups
        };
        if groups.is_empty() {
            return Err(DecryptError::new(
                DecryptErrorKind::NoMatchingKey,
                "the file names no master key",
            ));
        }
        let shamir_threshold = match get(obj, "shamir_threshold") {
            None => 0,
            Some(Json::Number(n)) => n
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    DecryptError::malformed("sops metadata field \"shamir_threshold\" is invalid")
                })?,
            Some(Json::String(s)) => s.trim().parse().map_err(|_| {
                DecryptError::malformed("sops metadata field \"shamir_threshold\" is invalid")
            })?,
            Some(_) => {
                return Err(DecryptError::malformed(
                    "sops metadata field \"shamir_threshold\" is invalid",
                ));
            }
        };
        let mac_only_encrypted = match get(obj, "mac_only_encrypted") {
            None => false,
            Some(Json::Bool(b)) => *b,
            // The flat formats store it as a string; SOPS takes only "true".
            Some(Json::String(s)) => s == "true",
            Some(_) => {
                return Err(DecryptError::malformed(
                    "sops metadata field \"mac_only_encrypted\" is invalid",
                ));
            }
        };
        let unencrypted_suffix = string_field(obj, "unencrypted_suffix")?;
        let encrypted_suffix = string_field(obj, "encrypted_suffix")?;
        let unencrypted_regex = string_field(obj, "unencrypted_regex")?;
        let encrypted_regex = string_field(obj, "encrypted_regex")?;
        let set = [
            &unencrypted_suffix,
            &encrypted_suffix,
            &unencrypted_regex,
            &encrypted_regex,
        ]
        .iter()
        .filter(|s| !s.is_empty())
        .count();
        if set > 1 {
            return Err(DecryptError::malformed(
                "more than one of encrypted_suffix, unencrypted_suffix, encrypted_regex and unencrypted_regex",
            ));
        }
        let rule = if !encrypted_suffix.is_empty() {
            Rule::EncryptedSuffix(encrypted_suffix)
        } else if !unencrypted_regex.is_empty() {
            Rule::UnencryptedRegex(compile(&unencrypted_regex))
        } else if !encrypted_regex.is_empty() {
            Rule::EncryptedRegex(compile(&encrypted_regex))
        } else if !unencrypted_suffix.is_empty() {
            Rule::UnencryptedSuffix(unencrypted_suffix)
        } else {
            Rule::UnencryptedSuffix("_unencrypted".to_string())
        };
        let comment_regex = |key: &str| -> Result<Option<Option<Regex>>, DecryptError> {
            let s = string_field(obj, key)?;
            Ok((!s.is_empty()).then(|| compile(&s)))
        };
        Ok(Metadata {
            last_modified,
            mac,
            groups,
            shamir_threshold,
            rule,
            unencrypted_comment_regex: comment_regex("unencrypted_comment_regex")?,
            encrypted_comment_regex: comment_regex("encrypted_comment_regex")?,
            mac_only_encrypted,
        })
    }

    fn uses_comment_rules(&self) -> bool {
        self.unencrypted_comment_regex.is_some() || self.encrypted_comment_regex.is_some()
    }

    /// `Tree.shouldBeEncrypted`.
    fn should_be_encrypted(
        &self,
        path: &[String],
        comments: &[Vec<String>],
        is_comment: bool,
    ) -> bool {
        let mut encrypted = match &self.rule {
            Rule::UnencryptedSuffix(s) => !path.iter().any(|p| p.ends_with(s.as_str())),
            Rule::EncryptedSuffix(s) => path.iter().any(|p| p.ends_with(s.as_str())),
            Rule::UnencryptedRegex(r) => !path
                .iter()
                .any(|p| r.as_ref().is_some_and(|r| r.is_match(p))),
            Rule::EncryptedRegex(r) => path
                .iter()
                .any(|p| r.as_ref().is_some_and(|r| r.is_match(p))),
        };
        if let Some(r) = &self.unencrypted_comment_regex
            && comments
                .iter()
                .flatten()
                .any(|c| r.as_ref().is_some_and(|r| r.is_match(c)))
        {
            encrypted = false;
        }
        if let Some(r) = &self.encrypted_comment_regex {
            encrypted = false;
            let last = comments.len().saturating_sub(1);
            let last_len = comments.last().map_or(0, Vec::len);
            'outer: for (i, cs) in comments.iter().enumerate() {
                for (j, c) in cs.iter().enumerate() {
                    // The comment line that matches is not itself encrypted.
                    if is_comment && i == last && j + 1 == last_len {
                        continue;
                    }
                    if r.as_ref().is_some_and(|r| r.is_match(c)) {
                        encrypted = true;
                        break 'outer;
                    }
                }
            }
        }
        encrypted
    }
}

/// The RFC 3339 time SOPS authenticates the MAC with: Go's
/// `time.Parse(RFC3339)` then `Format(RFC3339)` drops fractional seconds
/// and writes a zero offset as `Z`.
fn normalize_last_modified(s: &str) -> Result<String, DecryptError> {
    let bad =
        || DecryptError::malformed("sops metadata field \"lastmodified\" is not an RFC 3339 time");
    let b = s.as_bytes();
    if b.len() < 20 || !s.is_ascii() {
        return Err(bad());
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if !(digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19))
    {
        return Err(bad());
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return Err(bad());
        }
        rest = &frac[n..];
    }
    let zone = match rest {
        "Z" => "Z".to_string(),
        "+00:00" | "-00:00" => "Z".to_string(),
        z if z.len() == 6
            && (z.starts_with('+') || z.starts_with('-'))
            && z.as_bytes()[3] == b':'
            && z[1..3].bytes().all(|c| c.is_ascii_digit())
            && z[4..6].bytes().all(|c| c.is_ascii_digit()) =>
        {
            z.to_string()
        }
        _ => return Err(bad()),
    };
    Ok(format!("{}{zone}", &s[..19]))
}

/// A decrypted `ENC[...]` value.
pub(crate) enum Plain {
    Value(Node),
    Comment(String),
}

type Gcm32 = AesGcm<Aes256, U32, U16>;
type Gcm12 = AesGcm<Aes256, U12, U16>;

/// Why an `ENC[...]` value could not be decrypted.
pub(crate) enum ValueError {
    /// Not of the `ENC[AES256_GCM,...]` form, or an undecodable field.
    Format,
    /// AES-GCM authentication failed.
    Auth,
    /// The plaintext does not parse as its declared type.
    Type,
}

/// `aes.Cipher.Decrypt`: the empty string decrypts to itself.
pub(crate) fn decrypt_value(text: &str, key: &[u8; 32], aad: &str) -> Result<Plain, ValueError> {
    if text.is_empty() {
        return Ok(Plain::Value(Node::Str(String::new())));
    }
    let inner = text
        .strip_prefix("ENC[AES256_GCM,data:")
        .ok_or(ValueError::Format)?;
    // SOPS's pattern is `^ENC\[AES256_GCM,data:(.+),iv:(.+),tag:(.+),type:(.+)\]`
    // (greedy, unanchored at the end); base64 never holds a comma, so the
    // fields split on their markers.
    let (data, rest) = inner.split_once(",iv:").ok_or(ValueError::Format)?;
    let (iv, rest) = rest.split_once(",tag:").ok_or(ValueError::Format)?;
    let (tag, rest) = rest.split_once(",type:").ok_or(ValueError::Format)?;
    let end = rest.rfind(']').ok_or(ValueError::Format)?;
    let datatype = &rest[..end];
    if data.is_empty() || iv.is_empty() || tag.is_empty() || datatype.is_empty() {
        return Err(ValueError::Format);
    }
    let mut sealed = STANDARD.decode(data).map_err(|_| ValueError::Format)?;
    let iv = STANDARD.decode(iv).map_err(|_| ValueError::Format)?;
    let tag = STANDARD.decode(tag).map_err(|_| ValueError::Format)?;
    if tag.len() != 16 {
        return Err(ValueError::Auth);
    }
    sealed.extend_from_slice(&tag);
    let payload = Payload {
        msg: &sealed,
        aad: aad.as_bytes(),
    };
    let key = GenericArray::from_slice(key);
    let plain = match iv.len() {
        32 => Gcm32::new(key).decrypt(GenericArray::from_slice(&iv), payload),
        12 => Gcm12::new(key).decrypt(Nonce::from_slice(&iv), payload),
        _ => return Err(ValueError::Format),
    }
    .map_err(|_| ValueError::Auth)?;
    let as_str = || String::from_utf8(plain.clone()).map_err(|_| ValueError::Type);
    Ok(match datatype {
        "str" => Plain::Value(Node::Str(
            String::from_utf8(plain.clone())
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        )),
        "int" | "int64" => {
            Plain::Value(Node::Int(as_str()?.parse().map_err(|_| ValueError::Type)?))
        }
        "float" => Plain::Value(Node::Float(
            parse_go_float(&as_str()?).ok_or(ValueError::Type)?,
        )),
        "bool" => Plain::Value(Node::Bool(
            parse_go_bool(&as_str()?).ok_or(ValueError::Type)?,
        )),
        "bytes" => Plain::Value(Node::Bytes(plain)),
        "comment" => Plain::Comment(as_str()?),
        _ => return Err(ValueError::Format),
    })
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.ParseFloat(s, 64)` for the texts SOPS writes (and the
/// special values it accepts).
fn parse_go_float(s: &str) -> Option<f64> {
    let lower = s.to_ascii_lowercase();
    let unsigned = lower.trim_start_matches(['+', '-']);
    if matches!(unsigned, "inf" | "infinity" | "nan") {
        return lower.parse().ok();
    }
    if s.is_empty() || s.contains('_') || lower.starts_with("0x") {
        return None;
    }
    s.parse().ok()
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`: the shortest decimal that
/// reads back, never with an exponent.
pub(crate) fn go_float_text(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_string()
    } else if f.is_infinite() {
        if f > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{f}")
    }
}

/// `sops.ToBytes`.
fn mac_bytes(node: &Node) -> Option<Vec<u8>> {
    Some(match node {
        Node::Str(s) => s.as_bytes().to_vec(),
        Node::Int(i) => i.to_string().into_bytes(),
        Node::Float(f) => go_float_text(*f).into_bytes(),
        Node::Bool(true) => b"True".to_vec(),
        Node::Bool(false) => b"False".to_vec(),
        Node::Bytes(b) => b.clone(),
        Node::Null | Node::Map(_) | Node::Seq(_) => return None,
    })
}

/// `sops.MACOnlyEncryptedInitialization`: SHA-256 of `sops`.
const MAC_ONLY_ENCRYPTED_INIT: [u8; 32] = [
    0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b,
    0x0b, 0x97, 0x5b, 0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
];

/// The deepest nesting walked (the parsers bound it too).
const MAX_DEPTH: usize = 512;

struct Walk<'a> {
    md: &'a Metadata,
    key: &'a [u8; 32],
    hash: Sha512,
    /// Whether comment rules are read from the `ENC[...]` form instead.
    by_form: bool,
}

fn path_text(path: &[String]) -> String {
    let mut s = path.join(":");
    s.push(':');
    s
}

/// A path for diagnostics: the clear keys, each cut to 64 characters.
fn shown_path(path: &[String]) -> String {
    let parts: Vec<String> = path
        .iter()
        .map(|p| {
            if p.chars().count() > 64 {
                format!("{}…", p.chars().take(64).collect::<String>())
            } else {
                p.clone()
            }
        })
        .collect();
    path_text(&parts)
}

fn value_error(e: ValueError, path: &[String]) -> DecryptError {
    let at = shown_path(path);
    match e {
        ValueError::Format => {
            DecryptError::malformed(format!("the value at {at:?} is not a SOPS encrypted value"))
        }
        ValueError::Auth => DecryptError::new(
            DecryptErrorKind::MacMismatch,
            format!("the value at {at:?} failed AES-GCM authentication"),
        ),
        ValueError::Type => DecryptError::malformed(format!(
            "the value at {at:?} does not match its declared type"
        )),
    }
}

impl Walk<'_> {
    fn encrypted(
        &self,
        node_is_enc: bool,
        path: &[String],
        comments: &[Vec<String>],
        is_comment: bool,
    ) -> bool {
        if self.by_form {
            node_is_enc
        } else {
            self.md.should_be_encrypted(path, comments, is_comment)
        }
    }

    fn add(&mut self, encrypted: bool, node: &Node) {
        if (!self.md.mac_only_encrypted || encrypted)
            && let Some(bytes) = mac_bytes(node)
        {
            self.hash.update(&bytes);
        }
    }

    /// A leaf (onLeaves of `Tree.Decrypt`).
    fn leaf(
        &mut self,
        node: Node,
        path: &[String],
        comments: &[Vec<String>],
    ) -> Result<Node, DecryptError> {
        let is_enc = matches!(&node, Node::Str(s) if s.starts_with("ENC["));
        let encrypted = self.encrypted(is_enc, path, comments, false);
        let value = if encrypted {
            let Node::Str(text) = &node else {
                return Err(DecryptError::malformed(format!(
                    "the value at {:?} should be encrypted but is not a string",
                    shown_path(path)
                )));
            };
            match decrypt_value(text, self.key, &path_text(path))
                .map_err(|e| value_error(e, path))?
            {
                Plain::Value(v) => v,
                Plain::Comment(_) => {
                    return Err(DecryptError::malformed(format!(
                        "the value at {:?} decrypts to a comment",
                        shown_path(path)
                    )));
                }
            }
        } else {
            node
        };
        self.add(encrypted, &value);
        Ok(value)
    }

    /// A comment in a mapping. SOPS keeps a comment that does not decrypt
    /// as it is (files from older versions left comments in clear).
    fn comment(
        &mut self,
        text: String,
        path: &[String],
        comments: &[Vec<String>],
    ) -> Result<String, DecryptError> {
        let encrypted = self.encrypted(text.starts_with("ENC["), path, comments, true);
        if !encrypted {
            return Ok(text);
        }
        match decrypt_value(&text, self.key, &path_text(path)) {
            Ok(Plain::Comment(c)) => Ok(c),
            Ok(Plain::Value(Node::Str(s))) => {
                // SOPS adds a comment that decrypts to a string to the MAC.
                self.add(true, &Node::Str(s.clone()));
                Ok(s)
            }
            Ok(Plain::Value(_)) => Err(DecryptError::malformed(format!(
                "a comment at {:?} decrypts to a non-string value",
                shown_path(path)
            ))),
            Err(_) => Ok(text),
        }
    }

    fn value(
        &mut self,
        node: Node,
        path: &mut Vec<String>,
        comments: &mut Vec<Vec<String>>,
    ) -> Result<Node, DecryptError> {
        if comments.len() > MAX_DEPTH {
            return Err(DecryptError::malformed("the document nests too deeply"));
        }
        match node {
            Node::Null => Ok(Node::Null),
            Node::Map(entries) => Ok(Node::Map(self.branch(entries, path, comments)?)),
            Node::Seq(items) => {
                comments.push(Vec::new());
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    out.push(self.value(item, path, comments)?);
                    if let Some(last) = comments.last_mut() {
                        last.clear();
                    }
                }
                comments.pop();
                Ok(Node::Seq(out))
            }
            leaf => self.leaf(leaf, path, comments),
        }
    }

    fn branch(
        &mut self,
        entries: Vec<Entry>,
        path: &mut Vec<String>,
        comments: &mut Vec<Vec<String>>,
    ) -> Result<Vec<Entry>, DecryptError> {
        comments.push(Vec::new());
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            match entry {
                Entry::Comment(c) => {
                    if let Some(last) = comments.last_mut() {
                        last.push(c.clone());
                    }
                    out.push(Entry::Comment(self.comment(c, path, comments)?));
                }
                Entry::Pair(k, v) => {
                    path.push(k.clone());
                    let v = self.value(v, path, comments);
                    path.pop();
                    out.push(Entry::Pair(k, v?));
                    if let Some(last) = comments.last_mut() {
                        last.clear();
                    }
                }
            }
        }
        comments.pop();
        Ok(out)
    }
}

/// `Tree.Decrypt` plus the MAC check of `sops decrypt`: decrypts every
/// branch with the data key, recomputes the MAC over the tree and compares
/// it with the stored one. Nothing is returned unless they match.
pub(crate) fn decrypt_tree(
    loaded: Loaded,
    key: &[u8; 32],
) -> Result<Vec<Vec<Entry>>, DecryptError> {
    let md = &loaded.metadata;
    let mut walk = Walk {
        md,
        key,
        hash: Sha512::new(),
        by_form: loaded.comments_lost && md.uses_comment_rules(),
    };
    if md.mac_only_encrypted {
        walk.hash.update(MAC_ONLY_ENCRYPTED_INIT);
    }
    let mut out = Vec::with_capacity(loaded.branches.len());
    for branch in loaded.branches {
        out.push(walk.branch(branch, &mut Vec::new(), &mut Vec::new())?);
    }
    let computed: String = walk
        .hash
        .finalize()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    let aad = normalize_last_modified(&md.last_modified)?;
    let stored = match decrypt_value(&md.mac, key, &aad) {
        Ok(Plain::Value(Node::Str(s))) => s,
        Ok(_) => return Err(DecryptError::malformed("the stored MAC is not a string")),
        Err(ValueError::Auth) => {
            return Err(DecryptError::new(
                DecryptErrorKind::MacMismatch,
                "the stored MAC failed AES-GCM authentication",
            ));
        }
        Err(_) => {
            return Err(DecryptError::malformed(
                "the stored MAC is not a SOPS encrypted value",
            ));
        }
    };
    if stored != computed {
        return Err(DecryptError::new(
            DecryptErrorKind::MacMismatch,
            "MAC mismatch",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decrypt_go_floats_and_times() {
        assert_eq!(go_float_text(1.0), "1");
        assert_eq!(go_float_text(3.5), "3.5");
        assert_eq!(go_float_text(1e21), "1000000000000000000000");
        assert_eq!(go_float_text(1e-7), "0.0000001");
        assert_eq!(go_float_text(f64::INFINITY), "+Inf");
        assert_eq!(
            normalize_last_modified("2024-01-02T03:04:05.123Z").unwrap(),
            "2024-01-02T03:04:05Z"
        );
        assert_eq!(
            normalize_last_modified("2024-01-02T03:04:05+00:00").unwrap(),
            "2024-01-02T03:04:05Z"
        );
        assert_eq!(
            normalize_last_modified("2024-01-02T03:04:05+02:00").unwrap(),
            "2024-01-02T03:04:05+02:00"
        );
        assert!(normalize_last_modified("yesterday").is_err());
        assert!(normalize_last_modified("2024-01-02T03:04:05ZZ").is_err());
    }

    #[test]
    fn decrypt_value_rejects_garbage_without_panicking() {
        let key = [7u8; 32];
        for text in [
            "ENC[",
            "ENC[AES256_GCM,data:",
            "ENC[AES256_GCM,data:AA==,iv:AA==,tag:AA==,type:str]",
            "ENC[AES256_GCM,data:!!,iv:AA==,tag:AA==,type:str]",
            "ENC[AES256_GCM,data:AA==,iv:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,tag:AAAAAAAAAAAAAAAAAAAAAA==,type:str]",
            "ENC[AES256_GCM,data:,iv:,tag:,type:]",
            "plain",
        ] {
            assert!(decrypt_value(text, &key, "a:").is_err(), "{text}");
        }
    }
}
