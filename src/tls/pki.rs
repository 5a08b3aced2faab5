//! The self-signed webhook material: one CA and one serving certificate per
//! call, both ECDSA P-256 with random 128-bit serials and the same validity
//! window, which starts a little in the past ([`clock_skew`]) so that a
//! client whose clock runs behind (the API server calling the webhook)
//! already accepts it. The clock is an argument, so the window math is
//! testable without waiting. The serving key is handed out as SEC1
//! (`EC PRIVATE KEY`), the format the Go controller wrote.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::asn1_rs::{
    self, BitString, FromDer, OctetString, Oid, Sequence, TaggedExplicit, ToDer,
};
use x509_parser::oid_registry::OID_EC_P256;

use super::pem::encode_pem;

/// Subject CN of every self-signed CA.
pub const CA_COMMON_NAME: &str = "stageset-controller-webhook-ca";
/// `NotBefore = now − CLOCK_SKEW` (clock-skew allowance), see [`clock_skew`].
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// A freshly generated CA and serving certificate, PEM encoded.
#[derive(Clone, Debug)]
pub struct Material {
    /// The CA certificate (one `CERTIFICATE` block).
    pub ca_pem: String,
    /// The serving certificate (one `CERTIFICATE` block): `tls.crt`.
    pub cert_pem: String,
    /// The serving key as SEC1 `EC PRIVATE KEY`: `tls.key`.
    pub key_pem: String,
}

/// The clock-skew allowance for a validity: [`CLOCK_SKEW`] (1 min, as
/// operations.md §5.2 says), but at most a quarter of the validity. With
/// the spec's `NotAfter = now − 1 min + validity` a validity of a minute or
/// less would produce certificates that are expired when issued (tests use
/// 30 s); from a 4 min validity on this is exactly the spec.
pub fn clock_skew(validity: Duration) -> Duration {
    CLOCK_SKEW.min(validity / 4)
}

/// Generates a CA and a serving certificate for `dns_names` (operations.md
/// §5.2): `NotBefore = now − `[`clock_skew`]`, NotAfter = NotBefore + validity`
/// for both.
pub fn generate(
    dns_names: &[String],
    validity: Duration,
    now: SystemTime,
) -> Result<Material, String> {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
    };
    let first = dns_names
        .first()
        .ok_or("the serving certificate needs a DNS name")?;
    let now_secs = now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "the clock is before 1970".to_string())?
        .as_secs();
    let not_before = rcgen::date_time_ymd(1970, 1, 1)
        + Duration::from_secs(now_secs.saturating_sub(clock_skew(validity).as_secs()));
    let not_after = not_before
        .checked_add(
            validity
                .try_into()
                .map_err(|_| "the certificate validity is out of range".to_string())?,
        )
        .ok_or("the certificate validity is out of range")?;
    let err = |what: &'static str| move |e: rcgen::Error| format!("generating the {what}: {e}");
    let p256 = &rcgen::PKCS_ECDSA_P256_SHA256;

    let mut ca = CertificateParams::default();
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    ca.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
    ca.not_before = not_before;
    ca.not_after = not_after;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate_for(p256).map_err(err("CA key"))?;
    let ca_cert = ca.self_signed(&ca_key).map_err(err("CA certificate"))?;
    let issuer = Issuer::new(ca, ca_key);

    let mut leaf = CertificateParams::default();
    leaf.distinguished_name = DistinguishedName::new();
    leaf.distinguished_name
        .push(DnType::CommonName, first.as_str());
    leaf.subject_alt_names = dns_names
        .iter()
        .map(|n| {
            n.clone()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|e| format!("invalid DNS name {n:?}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    leaf.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
    leaf.not_before = not_before;
    leaf.not_after = not_after;
    leaf.is_ca = IsCa::NoCa;
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    let leaf_key = KeyPair::generate_for(p256).map_err(err("serving key"))?;
    let leaf_cert = leaf
        .signed_by(&leaf_key, &issuer)
        .map_err(err("serving certificate"))?;

    let sec1 = sec1_from_pkcs8_p256(leaf_key.serialized_der(), leaf_key.public_key_raw())?;
    Ok(Material {
        ca_pem: encode_pem("CERTIFICATE", ca_cert.der()),
        cert_pem: encode_pem("CERTIFICATE", leaf_cert.der()),
        key_pem: encode_pem("EC PRIVATE KEY", &sec1),
    })
}

/// A random positive 128-bit serial number.
fn random_serial() -> Result<[u8; 16], String> {
    let mut serial = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut serial)
        .map_err(|_| "the system random generator failed".to_string())?;
    Ok(serial)
}

/// Re-encodes ring's PKCS#8 P-256 key as a standalone SEC1 `ECPrivateKey`
/// (RFC 5915, with the curve parameters, as Go's `MarshalECPrivateKey` does).
///
/// Nothing in the dependency tree writes SEC1: rcgen and ring only produce
/// PKCS#8 and rustls-pki-types only labels the bytes, so this reads the
/// PKCS#8 structure and writes the SEC1 one with asn1-rs (which x509-parser
/// brings). `tls.key` stays `EC PRIVATE KEY`, what the Go controller wrote.
fn sec1_from_pkcs8_p256(pkcs8: &[u8], public_key: &[u8]) -> Result<Vec<u8>, String> {
    let bad = |e: asn1_rs::Err<asn1_rs::Error>| format!("unexpected PKCS#8 key encoding: {e}");
    // PrivateKeyInfo ::= SEQUENCE { version, AlgorithmIdentifier { id-ecPublicKey,
    //   namedCurve }, privateKey OCTET STRING (an ECPrivateKey), ... }
    let (_, (curve, key)) = Sequence::from_der_and_then(pkcs8, |i| {
        let (i, _version) = u32::from_der(i)?;
        let (i, curve) = Sequence::from_der_and_then(i, |a| {
            let (a, _algorithm) = Oid::from_der(a)?;
            Oid::from_der(a)
        })?;
        let (i, key) = OctetString::from_der(i)?;
        Ok((i, (curve, key)))
    })
    .map_err(bad)?;
    if curve != OID_EC_P256 {
        return Err(format!(
            "unexpected PKCS#8 key: curve {} instead of P-256",
            curve.to_id_string()
        ));
    }
    // ECPrivateKey ::= SEQUENCE { version 1, privateKey OCTET STRING, ... }
    let (_, private) = Sequence::from_der_and_then(key.as_ref(), |i| {
        let (i, _version) = u32::from_der(i)?;
        OctetString::from_der(i)
    })
    .map_err(bad)?;
    let encode = |e: asn1_rs::SerializeError| format!("encoding the SEC1 key: {e}");
    let mut body = 1u32.to_der_vec().map_err(encode)?;
    body.extend(private.to_der_vec().map_err(encode)?);
    body.extend(
        TaggedExplicit::<Oid, asn1_rs::Error, 0>::explicit(OID_EC_P256)
            .to_der_vec()
            .map_err(encode)?,
    );
    body.extend(
        TaggedExplicit::<BitString, asn1_rs::Error, 1>::explicit(BitString::new(0, public_key))
            .to_der_vec()
            .map_err(encode)?,
    );
    Sequence::new(body.into()).to_der_vec().map_err(encode)
}

#[cfg(test)]
mod tests {
    use rcgen::{KeyPair, PublicKeyData};
    use rustls::pki_types::{PrivateKeyDer, PrivateSec1KeyDer};

    use super::*;
    use crate::tls::{certificate_blocks, certified_key, parse_certificate, pem_blocks};

    #[test]
    fn the_clock_skew_is_a_minute_but_at_most_a_quarter_of_the_validity() {
        let s = Duration::from_secs;
        assert_eq!(clock_skew(s(8760 * 3600)), s(60));
        assert_eq!(clock_skew(s(240)), s(60));
        assert_eq!(clock_skew(s(120)), s(30));
        assert_eq!(clock_skew(s(30)), Duration::from_millis(7500));
        assert_eq!(clock_skew(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn the_validity_window_starts_one_skew_before_now() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        for (validity, skew) in [(3600, 60), (30, 7)] {
            let m = generate(&["a.svc".into()], Duration::from_secs(validity), now).unwrap();
            for pem in [&m.ca_pem, &m.cert_pem] {
                let info = parse_certificate(&certificate_blocks(pem.as_bytes())[0]).unwrap();
                assert_eq!(info.not_before, 1_800_000_000 - skew);
                assert_eq!(info.not_after, info.not_before + validity as i64);
            }
        }
    }

    #[test]
    fn generation_needs_a_valid_dns_name() {
        let hour = Duration::from_secs(3600);
        let err = generate(&[], hour, SystemTime::now()).unwrap_err();
        assert!(err.contains("needs a DNS name"), "{err}");
        let err = generate(&["bäd.svc".into()], hour, SystemTime::now()).unwrap_err();
        assert!(err.contains("invalid DNS name"), "{err}");
        let err = generate(&["a.svc".into()], hour, UNIX_EPOCH - hour).unwrap_err();
        assert!(err.contains("before 1970"), "{err}");
    }

    #[test]
    fn the_key_is_sec1_and_signs_for_the_certificate() {
        let m = generate(
            &["a.svc".into()],
            Duration::from_secs(3600),
            SystemTime::now(),
        )
        .unwrap();
        let blocks = pem_blocks(m.key_pem.as_bytes());
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].0, "EC PRIVATE KEY");
        certified_key(m.cert_pem.as_bytes(), m.key_pem.as_bytes()).expect("key matches");
    }

    /// The SEC1 key holds the same key pair as the PKCS#8 one, laid out as
    /// RFC 5915 says.
    #[test]
    fn sec1_from_pkcs8_keeps_the_key_pair() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let sec1 = sec1_from_pkcs8_p256(key.serialized_der(), key.public_key_raw()).unwrap();

        // ring (through rustls) loads it and derives the same public key.
        let signer = rustls::crypto::ring::sign::any_ecdsa_type(&PrivateKeyDer::Sec1(
            PrivateSec1KeyDer::from(sec1.clone()),
        ))
        .expect("a usable P-256 key");
        assert_eq!(
            signer.public_key().expect("an SPKI").as_ref(),
            key.subject_public_key_info()
        );

        // SEQUENCE { 1, OCTET STRING (32), [0] { prime256v1 }, [1] { BIT STRING point } }
        let (rest, (version, private, curve, point)) = Sequence::from_der_and_then(&sec1, |i| {
            let (i, version) = u32::from_der(i)?;
            let (i, private) = OctetString::from_der(i)?;
            let (i, curve) = TaggedExplicit::<Oid, asn1_rs::Error, 0>::from_der(i)?;
            let (i, point) = TaggedExplicit::<BitString, asn1_rs::Error, 1>::from_der(i)?;
            assert!(i.is_empty());
            Ok((
                i,
                (version, private, curve.into_inner(), point.into_inner()),
            ))
        })
        .unwrap();
        assert!(rest.is_empty());
        assert_eq!(version, 1);
        assert_eq!(private.as_ref().len(), 32);
        assert_eq!(curve, OID_EC_P256);
        assert_eq!(point.as_ref(), key.public_key_raw());
    }

    #[test]
    fn sec1_from_pkcs8_refuses_other_keys() {
        let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let err = sec1_from_pkcs8_p256(p384.serialized_der(), p384.public_key_raw()).unwrap_err();
        assert!(err.contains("instead of P-256"), "{err}");
        let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let err = sec1_from_pkcs8_p256(ed.serialized_der(), ed.public_key_raw()).unwrap_err();
        assert!(err.contains("unexpected PKCS#8 key"), "{err}");
        let err = sec1_from_pkcs8_p256(b"junk", &[]).unwrap_err();
        assert!(err.contains("unexpected PKCS#8 key encoding"), "{err}");
    }
}
