//! SOPS decryption of a stage's files (api.md §2.4.3, delivery.md §2.4),
//! decrypt-only and in memory, before the build.
//!
//! Every file whose extension names a format SOPS knows here (YAML `.yaml`
//! and `.yml`, JSON `.json`, dotenv `.env`, INI `.ini`) and that carries SOPS
//! metadata is decrypted and re-emitted in the same format without the
//! metadata; every other file is left untouched, byte for byte.
//!
//! What a file's data key is encrypted to decides which keys can open it:
//! age X25519 identities (`.agekey` entries of the decryption Secret) and
//! OpenPGP secret keys (`.asc` entries). Cloud KMS, Vault and the other
//! remote key services are not supported: a file encrypted only for those is
//! refused with [`DecryptErrorKind::UnsupportedKeyType`].
//!
//! The file's MAC is checked before any decrypted value leaves this module,
//! exactly as `sops --decrypt` checks it (the same tree walk, the same
//! rules for which values are encrypted and which count towards the MAC).
//!
//! Errors never carry plaintext, ciphertext or key material: their
//! `Display` says only `decryption failed` (and the file), and
//! [`DecryptError::detail`] adds a diagnostic for debug logs made of
//! public facts only (recipients, fingerprints, paths of keys, kinds).

mod formats;
mod keys;
mod shamir;
mod sops;

use std::collections::BTreeMap;
use std::fmt;

pub use keys::Keys;

/// What went wrong, coarsely.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecryptErrorKind {
    /// None of our keys opens the file's data key (or too few key groups
    /// could be opened for its Shamir threshold).
    NoMatchingKey,
    /// The file's MAC does not match its content, or a value failed its
    /// AES-GCM authentication: the file was altered.
    MacMismatch,
    /// The file, its metadata or one of its values is not what SOPS writes.
    Malformed,
    /// The file's data key is encrypted only for key types this controller
    /// does not support (AWS KMS, GCP KMS, Azure Key Vault, HashiCorp Vault).
    UnsupportedKeyType,
    /// An entry of the decryption Secret is not a usable key.
    BadKey,
}

/// A decryption failure. `Display` is safe for status and events; see
/// [`DecryptError::detail`] for logs.
#[derive(Clone, PartialEq, Eq)]
pub struct DecryptError {
    /// The file that failed, when the failure belongs to one.
    pub file: Option<String>,
    pub kind: DecryptErrorKind,
    detail: String,
}

impl DecryptError {
    pub(crate) fn new(kind: DecryptErrorKind, detail: impl Into<String>) -> DecryptError {
        DecryptError {
            file: None,
            kind,
            detail: detail.into(),
        }
    }

    pub(crate) fn malformed(detail: impl Into<String>) -> DecryptError {
        DecryptError::new(DecryptErrorKind::Malformed, detail)
    }

    fn in_file(mut self, file: &str) -> DecryptError {
        self.file = Some(file.to_string());
        self
    }

    /// A longer diagnostic for debug logs: the kind and public facts
    /// (recipients, fingerprints, key paths, Secret entry names), never
    /// plaintext, ciphertext or key material.
    pub fn detail(&self) -> String {
        let kind = match self.kind {
            DecryptErrorKind::NoMatchingKey => "no matching key",
            DecryptErrorKind::MacMismatch => "integrity check failed",
            DecryptErrorKind::Malformed => "malformed SOPS file",
            DecryptErrorKind::UnsupportedKeyType => "unsupported key type",
            DecryptErrorKind::BadKey => "unusable decryption key",
        };
        match &self.file {
            Some(file) => format!("{kind} in {file:?}: {}", self.detail),
            None => format!("{kind}: {}", self.detail),
        }
    }
}

impl fmt::Display for DecryptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "decryption failed for {file:?}"),
            None => f.write_str("decryption failed"),
        }
    }
}

impl fmt::Debug for DecryptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptError")
            .field("file", &self.file)
            .field("kind", &self.kind)
            .field("detail", &self.detail)
            .finish()
    }
}

impl std::error::Error for DecryptError {}

/// Decrypts every SOPS file in place; returns the paths decrypted (in
/// path order). Files without SOPS metadata, and files of other formats,
/// are left untouched. The first failure stops the pass and leaves `files`
/// as it was (no file is replaced before all of them decrypted).
pub fn decrypt_files(
    files: &mut BTreeMap<String, Vec<u8>>,
    keys: &Keys,
) -> Result<Vec<String>, DecryptError> {
    let mut decrypted = Vec::new();
    for (path, content) in files.iter() {
        let Some(format) = formats::Format::of(path) else {
            continue;
        };
        if !formats::may_carry_metadata(content) {
            continue;
        }
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            formats::decrypt(format, content, keys)
        }))
        .unwrap_or_else(|_| Err(DecryptError::malformed("the file could not be parsed")))
        .map_err(|e| e.in_file(path))?;
        if let Some(out) = out {
            decrypted.push((path.clone(), out));
        }
    }
    let paths = decrypted.iter().map(|(p, _)| p.clone()).collect();
    for (path, out) in decrypted {
        files.insert(path, out);
    }
    Ok(paths)
}

/// Whether a file carries SOPS metadata (by its extension's format: a
/// top-level `sops` mapping in YAML or JSON, `sops_mac` or
/// `sops_lastmodified` in dotenv, a `[sops]` section in INI), or holds
/// SOPS-encrypted values (`ENC[AES256_GCM,...]`) whose metadata is damaged
/// or missing: exactly the files [`decrypt_files`] does not pass through.
/// Files of other formats are never encrypted.
pub fn is_encrypted(path: &str, content: &[u8]) -> bool {
    let Some(format) = formats::Format::of(path) else {
        return false;
    };
    if !formats::may_carry_metadata(content) {
        return false;
    }
    std::panic::catch_unwind(|| formats::has_metadata(format, content)).unwrap_or(false)
}

/// What decrypting a stage's artifact left behind: files that would not
/// decrypt outside the stage's directory (the build may never read them).
#[derive(Debug, Default)]
pub struct Leftovers {
    /// The first such failure, reported if ciphertext reaches the build's
    /// output after all.
    pub first: Option<DecryptError>,
}

/// Decrypts the SOPS files of a stage's artifact in place (delivery.md
/// §2.4). Every file that decrypts is replaced. A file inside the stage's
/// directory `dir` that does not decrypt fails the stage, as does one that
/// is encrypted while the StageSet has no decryption (`keys` None): nothing
/// is applied rather than ciphertext. Files outside `dir` belong to other
/// stages or teams as often as to this one's bases, so their failures are
/// only kept in the [`Leftovers`]; [`ciphertext_in`] on the build's output
/// catches any that was used after all.
pub fn decrypt_for_stage(
    files: &mut BTreeMap<String, Vec<u8>>,
    keys: Option<&Keys>,
    dir: &str,
) -> Result<Leftovers, DecryptError> {
    let dir = dir.trim_start_matches("./").trim_end_matches('/');
    let inside = |path: &str| {
        dir.is_empty() || dir == "." || path == dir || path.starts_with(&format!("{dir}/"))
    };
    let encrypted: Vec<String> = files
        .iter()
        .filter(|(path, content)| is_encrypted(path, content))
        .map(|(path, _)| path.clone())
        .collect();
    let mut leftovers = Leftovers::default();
    for path in encrypted {
        let result = match keys {
            None => Err(DecryptError::new(
                DecryptErrorKind::NoMatchingKey,
                "the file is SOPS-encrypted, but the StageSet sets no spec.decryption",
            )
            .in_file(&path)),
            Some(keys) => {
                let mut one = BTreeMap::new();
                one.insert(path.clone(), files[&path].clone());
                decrypt_files(&mut one, keys).map(|_| one.remove(&path))
            }
        };
        match result {
            Ok(Some(plain)) => {
                files.insert(path, plain);
            }
            Ok(None) => {}
            Err(e) if inside(&path) => return Err(e),
            Err(e) => {
                leftovers.first.get_or_insert(e);
            }
        }
    }
    Ok(leftovers)
}

/// The prefix of every value SOPS encrypts.
const CIPHERTEXT_PREFIX: &str = "ENC[AES256_GCM,";

/// The first rendered object that still carries SOPS metadata (a top-level
/// `sops` field) or an encrypted value, as `Kind/namespace/name`.
pub fn ciphertext_in(objects: &[serde_json::Value]) -> Option<String> {
    fn encrypted(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => s.starts_with(CIPHERTEXT_PREFIX),
            serde_json::Value::Array(a) => a.iter().any(encrypted),
            serde_json::Value::Object(m) => m.values().any(encrypted),
            _ => false,
        }
    }
    objects
        .iter()
        .find(|o| o.get("sops").is_some_and(|s| s.is_object()) || encrypted(o))
        .map(|o| {
            let s = |p: &str| o.pointer(p).and_then(|v| v.as_str()).unwrap_or("");
            let ns = s("/metadata/namespace");
            if ns.is_empty() {
                format!("{}/{}", s("/kind"), s("/metadata/name"))
            } else {
                format!("{}/{ns}/{}", s("/kind"), s("/metadata/name"))
            }
        })
}

#[cfg(test)]
mod tests;
