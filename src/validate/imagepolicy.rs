//! The ImageVerificationPolicy rule set (api.md §11.3): a policy must govern
//! at least one image glob and carry at least one authority this version
//! can verify. Messages are upstream's.

use base64::Engine;

use crate::api::{ImageVerificationPolicy, KeyAuthority, VerificationAuthority};

use super::Invalid;

/// Validates an ImageVerificationPolicy; the error is the user-facing
/// message.
pub fn validate_image_verification_policy(p: &ImageVerificationPolicy) -> Result<(), String> {
    check(p).map_err(Invalid::message)
}

pub(crate) fn check(p: &ImageVerificationPolicy) -> Result<(), Invalid> {
    let spec = &p.spec;
    // Decoding comes first upstream: a malformed duration never reaches a rule.
    for (i, r) in spec.require_attestations.iter().flatten().enumerate() {
        if let Some(d) = &r.max_age
            && let Err(e) = d.parse()
        {
            return Err(Invalid::Decode(format!(
                "spec.requireAttestations[{i}].maxAge: time: {e}"
            )));
        }
    }
    let rule = |m: String| Err(Invalid::Rule(m));
    if spec.images.is_empty() {
        return rule("spec.images must list at least one glob".to_string());
    }
    for (i, g) in spec.images.iter().enumerate() {
        if g.trim().is_empty() {
            return rule(format!("spec.images[{i}] must not be empty"));
        }
    }
    for (i, g) in spec.skip.iter().flatten().enumerate() {
        if g.trim().is_empty() {
            return rule(format!("spec.skip[{i}] must not be empty"));
        }
    }
    if spec
        .require_attestations
        .as_ref()
        .is_some_and(|r| !r.is_empty())
    {
        return rule(
            "spec.requireAttestations is not enforced in this version; remove it".to_string(),
        );
    }
    let authorities = spec.authorities.as_deref().unwrap_or_default();
    if authorities.is_empty() {
        return rule("spec.authorities must list at least one keyless authority".to_string());
    }
    for (i, a) in authorities.iter().enumerate() {
        authority(i, a).map_err(Invalid::Rule)?;
    }
    Ok(())
}

fn authority(i: usize, a: &VerificationAuthority) -> Result<(), String> {
    let k = match (&a.keyless, &a.key) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "spec.authorities[{i}] sets both keyless and key; set exactly one"
            ));
        }
        (None, None) => {
            return Err(format!(
                "spec.authorities[{i}] sets neither keyless nor key; set exactly one"
            ));
        }
        (None, Some(key)) => return key_authority(i, key),
        (Some(k), None) => k,
    };
    matcher(i, "issuer", &k.issuer, &k.issuer_reg_exp)?;
    matcher(i, "subject", &k.subject, &k.subject_reg_exp)
}

fn matcher(
    i: usize,
    field: &str,
    exact: &Option<String>,
    pattern: &Option<String>,
) -> Result<(), String> {
    let exact = exact.as_deref().unwrap_or_default();
    let pattern = pattern.as_deref().unwrap_or_default();
    match (exact.is_empty(), pattern.is_empty()) {
        (true, true) => {
            return Err(format!(
                "spec.authorities[{i}].keyless must set {field} or {field}RegExp"
            ));
        }
        (false, false) => {
            return Err(format!(
                "spec.authorities[{i}].keyless sets both {field} and {field}RegExp; set exactly one"
            ));
        }
        _ => {}
    }
    if !pattern.is_empty()
        && let Err(e) = compile_regexp(pattern)
    {
        return Err(format!(
            "spec.authorities[{i}].keyless.{field}RegExp is not a valid regexp: {e}"
        ));
    }
    Ok(())
}

/// Compiles `pattern` with the `regex` crate (RE2 syntax, as Go's `regexp`);
/// the error is the crate's, condensed to one line.
fn compile_regexp(pattern: &str) -> Result<(), String> {
    match regex::Regex::new(pattern) {
        Ok(_) => Ok(()),
        Err(e) => {
            let text = e.to_string();
            // "regex parse error:\n    (\n    ^\nerror: unclosed group"
            let reason = text
                .lines()
                .rev()
                .find_map(|l| l.trim().strip_prefix("error: "))
                .map(str::to_string)
                .unwrap_or_else(|| {
                    text.lines()
                        .last()
                        .unwrap_or("invalid pattern")
                        .trim()
                        .to_string()
                });
            Err(format!("error parsing regexp: {reason}: `{pattern}`"))
        }
    }
}

fn key_authority(i: usize, k: &KeyAuthority) -> Result<(), String> {
    let Some(der) = pem_decode(&k.public_key) else {
        return Err(format!(
            "spec.authorities[{i}].key.publicKey is not PEM-encoded"
        ));
    };
    parse_pkix_public_key(&der)
        .map_err(|e| format!("spec.authorities[{i}].key.publicKey is not a valid public key: {e}"))
}

// --- PEM (Go's encoding/pem.Decode) -----------------------------------------

/// The bytes of the first PEM block in `text` (any type), or `None`.
fn pem_decode(text: &str) -> Option<Vec<u8>> {
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + "-----BEGIN ".len()..];
        let line_end = after.find('\n').unwrap_or(after.len());
        let type_line = after[..line_end].trim_end_matches([' ', '\t', '\r']);
        rest = &after[line_end..];
        let Some(block_type) = type_line.strip_suffix("-----") else {
            continue;
        };
        let end_marker = format!("-----END {block_type}-----");
        let Some(end) = rest.find(&end_marker) else {
            continue;
        };
        let body = &rest[..end];
        // Headers (`Key: value` lines up to a blank line) are skipped.
        let body: String = if body.lines().take(2).any(|l| l.contains(':')) {
            body.split_once("\n\n")
                .or_else(|| body.split_once("\r\n\r\n"))
                .map_or(body, |(_, b)| b)
                .to_string()
        } else {
            body.to_string()
        };
        let cleaned: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(cleaned.as_bytes()) {
            return Some(bytes);
        }
        rest = &rest[end + end_marker.len()..];
    }
    None
}

// --- DER SubjectPublicKeyInfo (Go's x509.ParsePKIXPublicKey) ------------------

struct Der<'a> {
    tag: u8,
    body: &'a [u8],
}

/// One DER TLV from the front of `input`; the rest after it.
fn der(input: &[u8]) -> Result<(Der<'_>, &[u8]), String> {
    let truncated = || "asn1: syntax error: data truncated".to_string();
    let (&tag, rest) = input.split_first().ok_or_else(truncated)?;
    if tag & 0x1f == 0x1f {
        return Err("asn1: syntax error: unsupported high-tag-number form".to_string());
    }
    let (&first, mut rest) = rest.split_first().ok_or_else(truncated)?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return Err("asn1: syntax error: invalid length".to_string());
        }
        if rest.len() < n {
            return Err(truncated());
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | usize::from(b);
        }
        if len < 0x80 || rest[0] == 0 {
            return Err("asn1: structure error: non-minimal length".to_string());
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return Err(truncated());
    }
    Ok((
        Der {
            tag,
            body: &rest[..len],
        },
        &rest[len..],
    ))
}

fn expect(tag: u8, input: &[u8]) -> Result<(Der<'_>, &[u8]), String> {
    let (d, rest) = der(input)?;
    if d.tag != tag {
        return Err(format!(
            "asn1: structure error: tags don't match (expected tag {}, got tag {})",
            tag & 0x1f,
            d.tag & 0x1f
        ));
    }
    Ok((d, rest))
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OID: u8 = 0x06;
const NULL: u8 = 0x05;

const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
const OID_X25519: &[u8] = &[0x2b, 0x65, 0x6e];
const OID_DSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x01];
/// Named curves and their coordinate sizes: P-224, P-256, P-384, P-521.
const CURVES: &[(&[u8], usize)] = &[
    (&[0x2b, 0x81, 0x04, 0x00, 0x21], 28),
    (&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07], 32),
    (&[0x2b, 0x81, 0x04, 0x00, 0x22], 48),
    (&[0x2b, 0x81, 0x04, 0x00, 0x23], 66),
];

/// A positive INTEGER body (leading zero allowed for the sign bit).
fn positive_integer(body: &[u8]) -> bool {
    match body {
        [] => false,
        [b, ..] if b & 0x80 != 0 => false,
        _ => body.iter().any(|&b| b != 0),
    }
}

fn parse_pkix_public_key(input: &[u8]) -> Result<(), String> {
    let spki = match expect(SEQUENCE, input) {
        Ok((spki, rest)) => {
            if !rest.is_empty() {
                return Err("x509: trailing data after ASN.1 of public-key".to_string());
            }
            spki
        }
        Err(e) => return Err(e),
    };
    let parsed = (|| {
        let (alg, rest) = expect(SEQUENCE, spki.body)?;
        let (bits, rest) = expect(BIT_STRING, rest)?;
        if !rest.is_empty() {
            return Err("asn1: syntax error: trailing data".to_string());
        }
        let (oid, params) = expect(OID, alg.body)?;
        Ok((oid.body.to_vec(), params.to_vec(), bits.body.to_vec()))
    })();
    let (oid, params, bits) = match parsed {
        Ok(p) => p,
        Err(e) => {
            // A PKCS #1 RSA key (SEQUENCE of two INTEGERs) gets Go's hint.
            let pkcs1 = expect(INTEGER, spki.body)
                .and_then(|(_, r)| expect(INTEGER, r))
                .is_ok_and(|(_, r)| r.is_empty());
            if pkcs1 {
                return Err("x509: failed to parse public key (use ParsePKCS1PublicKey instead for this key format)".to_string());
            }
            return Err(e);
        }
    };
    let Some((&unused, key)) = bits.split_first() else {
        return Err("asn1: syntax error: invalid bit string".to_string());
    };
    if unused != 0 {
        return Err("x509: invalid public key bit string".to_string());
    }
    match oid.as_slice() {
        OID_RSA => {
            let null_params = params.is_empty()
                || der(&params)
                    .is_ok_and(|(d, r)| d.tag == NULL && d.body.is_empty() && r.is_empty());
            if !null_params {
                return Err("x509: RSA key missing NULL parameters".to_string());
            }
            let invalid = || "x509: invalid RSA public key".to_string();
            let (seq, rest) = expect(SEQUENCE, key).map_err(|_| invalid())?;
            if !rest.is_empty() {
                return Err(invalid());
            }
            let (n, rest) = expect(INTEGER, seq.body).map_err(|_| invalid())?;
            let (e, rest) = expect(INTEGER, rest).map_err(|_| invalid())?;
            if !rest.is_empty() {
                return Err(invalid());
            }
            if !positive_integer(n.body) {
                return Err("x509: RSA modulus is not a positive number".to_string());
            }
            if !positive_integer(e.body) {
                return Err("x509: RSA public exponent is not a positive number".to_string());
            }
            Ok(())
        }
        OID_EC => {
            let (curve, rest) = expect(OID, &params)
                .map_err(|_| "x509: failed to parse ECDSA parameters as named curve".to_string())?;
            if !rest.is_empty() {
                return Err("x509: failed to parse ECDSA parameters as named curve".to_string());
            }
            let Some((_, size)) = CURVES.iter().find(|(oid, _)| *oid == curve.body) else {
                return Err("x509: unsupported elliptic curve".to_string());
            };
            if key.len() != 1 + 2 * size || key[0] != 4 {
                return Err("x509: failed to unmarshal elliptic curve point".to_string());
            }
            Ok(())
        }
        OID_ED25519 | OID_X25519 => {
            let name = if oid.as_slice() == OID_ED25519 {
                "Ed25519"
            } else {
                "X25519"
            };
            if !params.is_empty() {
                return Err(format!("x509: {name} key encoded with illegal parameters"));
            }
            if key.len() != 32 {
                return Err(format!("x509: wrong {name} public key size"));
            }
            Ok(())
        }
        OID_DSA => {
            expect(INTEGER, key).map_err(|_| "x509: invalid DSA public key".to_string())?;
            Ok(())
        }
        _ => Err("x509: unknown public key algorithm".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P256: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEMS7YnPAAadRDomo4zBiwCU+0dz2R
6JFVl/QNKU5cB8v+t/h4gfPuYH2e+3NaZPuTfbYRGzgyLEHUqpZtWgfYUw==
-----END PUBLIC KEY-----
";

    fn key_error(pem: &str) -> Option<String> {
        key_authority(
            0,
            &KeyAuthority {
                public_key: pem.to_string(),
            },
        )
        .err()
    }

    #[test]
    fn ecdsa_key_parses() {
        assert_eq!(key_error(P256), None);
        assert_eq!(key_error(&format!("some text before\n{P256}")), None);
    }

    #[test]
    fn not_pem() {
        assert_eq!(
            key_error("not a pem").unwrap(),
            "spec.authorities[0].key.publicKey is not PEM-encoded"
        );
        assert_eq!(
            key_error("-----BEGIN PUBLIC KEY-----\n!!!\n-----END PUBLIC KEY-----\n").unwrap(),
            "spec.authorities[0].key.publicKey is not PEM-encoded"
        );
    }

    #[test]
    fn not_a_public_key() {
        let garbage = "-----BEGIN PUBLIC KEY-----\naGVsbG8=\n-----END PUBLIC KEY-----\n";
        assert!(
            key_error(garbage)
                .unwrap()
                .starts_with("spec.authorities[0].key.publicKey is not a valid public key: asn1:")
        );
        // The P-256 key with its curve OID changed to an unknown one.
        let der = base64::engine::general_purpose::STANDARD
            .decode(
                P256.lines()
                    .filter(|l| !l.starts_with("-----"))
                    .collect::<String>(),
            )
            .unwrap();
        let mut bad = der.clone();
        let pos = bad.windows(8).position(|w| w == CURVES[1].0).unwrap();
        bad[pos + 7] = 0x09;
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(&bad)
        );
        assert_eq!(
            key_error(&pem).unwrap(),
            "spec.authorities[0].key.publicKey is not a valid public key: x509: unsupported elliptic curve"
        );
        let mut trailing = der;
        trailing.push(0);
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(&trailing)
        );
        assert_eq!(
            key_error(&pem).unwrap(),
            "spec.authorities[0].key.publicKey is not a valid public key: x509: trailing data after ASN.1 of public-key"
        );
    }

    #[test]
    fn regexps() {
        assert!(compile_regexp("^https://github\\.com/acme/.+$").is_ok());
        assert_eq!(
            compile_regexp("(").unwrap_err(),
            "error parsing regexp: unclosed group: `(`"
        );
    }
}
