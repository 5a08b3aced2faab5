//! The decryption keys of a StageSet (the entries of its decryption
//! Secret) and the recovery of a file's data key with them.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::str::FromStr;

use pgp::composed::{Deserializable, Message, SignedSecretKey};
use pgp::types::{KeyDetails, Password};
use zeroize::Zeroizing;

use super::sops::{MasterKey, Metadata};
use super::{DecryptError, DecryptErrorKind, shamir};

/// Keys from the data of the decryption Secret (key name → bytes): every
/// entry ending `.agekey` holds age X25519 identities (one a line, `#`
/// comments and blank lines allowed, as `age-keygen` writes them), every
/// entry ending `.asc` holds ASCII-armored OpenPGP secret keys (without a
/// passphrase). Other entries are ignored.
///
/// `Debug` shows only how many keys there are.
pub struct Keys {
    age: Vec<age::x25519::Identity>,
    pgp: Vec<SignedSecretKey>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Keys {{ age identities: {}, pgp keys: {} }}",
            self.age.len(),
            self.pgp.len()
        )
    }
}

fn bad_key(entry: &str, what: &str) -> DecryptError {
    DecryptError::new(
        DecryptErrorKind::BadKey,
        format!("decryption Secret entry {entry:?}: {what}"),
    )
}

/// The most bytes read from one encrypted data key (it is 32 bytes; a
/// Shamir part one more).
const MAX_DATA_KEY: u64 = 1024;

impl Keys {
    /// Parses the Secret's entries. An entry of a known suffix that holds
    /// no usable key fails the whole set with [`DecryptErrorKind::BadKey`].
    pub fn from_secret_data(data: &BTreeMap<String, Vec<u8>>) -> Result<Keys, DecryptError> {
        let mut keys = Keys {
            age: Vec::new(),
            pgp: Vec::new(),
        };
        for (name, bytes) in data {
            if name.ends_with(".agekey") {
                let text =
                    std::str::from_utf8(bytes).map_err(|_| bad_key(name, "not UTF-8 text"))?;
                let before = keys.age.len();
                for (n, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let identity = age::x25519::Identity::from_str(line).map_err(|_| {
                        bad_key(
                            name,
                            &format!("line {} is not an age X25519 identity", n + 1),
                        )
                    })?;
                    keys.age.push(identity);
                }
                if keys.age.len() == before {
                    return Err(bad_key(name, "holds no age identity"));
                }
            } else if name.ends_with(".asc") {
                let parsed = std::panic::catch_unwind(|| {
                    let (iter, _) = SignedSecretKey::from_armor_many(&bytes[..])?;
                    iter.collect::<Result<Vec<_>, _>>()
                });
                let parsed = match parsed {
                    Ok(Ok(parsed)) => parsed,
                    _ => return Err(bad_key(name, "not an ASCII-armored OpenPGP secret key")),
                };
                if parsed.is_empty() {
                    return Err(bad_key(name, "holds no OpenPGP secret key"));
                }
                for key in &parsed {
                    let unlocked = !key.primary_key.secret_params().is_encrypted()
                        || key
                            .secret_subkeys
                            .iter()
                            .any(|k| !k.key.secret_params().is_encrypted());
                    if !unlocked {
                        return Err(bad_key(
                            name,
                            &format!(
                                "OpenPGP key {:X} is protected by a passphrase",
                                key.fingerprint()
                            ),
                        ));
                    }
                    if key.verify_bindings().is_err() {
                        return Err(bad_key(
                            name,
                            &format!(
                                "OpenPGP key {:X} has invalid self-signatures",
                                key.fingerprint()
                            ),
                        ));
                    }
                }
                keys.pgp.extend(parsed);
            }
        }
        Ok(keys)
    }

    /// Whether the Secret held no key at all.
    pub fn is_empty(&self) -> bool {
        self.age.is_empty() && self.pgp.is_empty()
    }

    /// The public side of the keys, for diagnostics.
    fn describe(&self) -> String {
        let mut parts: Vec<String> = self.age.iter().map(|i| i.to_public().to_string()).collect();
        parts.extend(
            self.pgp
                .iter()
                .map(|k| format!("pgp {:X}", k.fingerprint())),
        );
        if parts.is_empty() {
            "none".to_string()
        } else {
            parts.join(", ")
        }
    }

    fn open_age(&self, enc: &str) -> Option<Zeroizing<Vec<u8>>> {
        if self.age.is_empty() {
            return None;
        }
        let reader = age::armor::ArmoredReader::new(enc.as_bytes());
        let decryptor = age::Decryptor::new(reader).ok()?;
        if decryptor.is_scrypt() {
            return None;
        }
        let mut stream = decryptor
            .decrypt(self.age.iter().map(|i| i as &dyn age::Identity))
            .ok()?;
        let mut out = Zeroizing::new(Vec::new());
        (&mut stream)
            .take(MAX_DATA_KEY)
            .read_to_end(&mut out)
            .ok()?;
        Some(out)
    }

    fn open_pgp(&self, enc: &str) -> Option<Zeroizing<Vec<u8>>> {
        if self.pgp.is_empty() {
            return None;
        }
        for key in &self.pgp {
            let Ok((message, _)) = Message::from_string(enc) else {
                return None;
            };
            let Ok(mut message) = message.decrypt(&Password::empty(), key) else {
                continue;
            };
            for _ in 0..4 {
                if !message.is_compressed() {
                    break;
                }
                message = match message.decompress() {
                    Ok(m) => m,
                    Err(_) => return None,
                };
            }
            // The message is no larger than the file that carried it.
            if let Ok(out) = message.as_data_vec() {
                return Some(Zeroizing::new(out));
            }
        }
        None
    }

    fn open(&self, key: &MasterKey) -> Option<Zeroizing<Vec<u8>>> {
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match key {
            MasterKey::Age { enc, .. } => self.open_age(enc),
            MasterKey::Pgp { enc, .. } => self.open_pgp(enc),
            MasterKey::Remote { .. } => None,
        }));
        opened.ok().flatten()
    }

    /// Recovers the file's 32-byte data key: from the first master key of
    /// the group that opens (one group), or by combining the parts of the
    /// groups that open (Shamir secret sharing over several groups).
    pub(crate) fn data_key(&self, md: &Metadata) -> Result<Zeroizing<[u8; 32]>, DecryptError> {
        let mut parts: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        for group in &md.groups {
            if let Some(part) = group.iter().find_map(|k| self.open(k)) {
                parts.push(part);
            }
        }
        let key = if md.groups.len() > 1 {
            let threshold = if md.shamir_threshold == 0 {
                md.groups.len()
            } else {
                md.shamir_threshold
            };
            if parts.len() < threshold.max(1) {
                return Err(self.no_key(md, Some((parts.len(), threshold))));
            }
            shamir::combine(&parts).ok_or_else(|| {
                DecryptError::malformed("the key group parts do not combine into a data key")
            })?
        } else {
            match parts.pop() {
                Some(part) => part,
                None => return Err(self.no_key(md, None)),
            }
        };
        let key: [u8; 32] = key.as_slice().try_into().map_err(|_| {
            DecryptError::malformed(format!("the data key has {} bytes, not 32", key.len()))
        })?;
        Ok(Zeroizing::new(key))
    }

    fn no_key(&self, md: &Metadata, shamir: Option<(usize, usize)>) -> DecryptError {
        let mut recipients = Vec::new();
        let mut remote = Vec::new();
        for key in md.groups.iter().flatten() {
            match key {
                MasterKey::Age { recipient, .. } => recipients.push(recipient.clone()),
                MasterKey::Pgp { fingerprint, .. } => {
                    recipients.push(format!("pgp fingerprint {fingerprint}"))
                }
                MasterKey::Remote { kind } => {
                    if !remote.contains(kind) {
                        remote.push(*kind);
                    }
                }
            }
        }
        if recipients.is_empty() {
            return DecryptError::new(
                DecryptErrorKind::UnsupportedKeyType,
                format!(
                    "unsupported key type {}: the data key is encrypted only for key services this controller does not support (age and PGP only)",
                    remote.join(", ")
                ),
            );
        }
        let mut detail = match shamir {
            Some((got, need)) => format!(
                "only {got} of the {need} key groups needed could be decrypted (recipients: {})",
                recipients.join(", ")
            ),
            None => format!(
                "no key could decrypt the data key (recipients: {})",
                recipients.join(", ")
            ),
        };
        if !remote.is_empty() {
            detail.push_str(&format!("; not supported here: {}", remote.join(", ")));
        }
        detail.push_str(&format!("; our keys: {}", self.describe()));
        DecryptError::new(DecryptErrorKind::NoMatchingKey, detail)
    }
}
