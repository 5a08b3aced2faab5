//! Generating the self-signed webhook material.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::pem::encode_pem;
use super::x509::der;

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
fn sec1_from_pkcs8_p256(pkcs8: &[u8], public_key: &[u8]) -> Result<Vec<u8>, String> {
    let bad = || "unexpected PKCS#8 key encoding".to_string();
    let mut input = pkcs8;
    let mut info = der::expect(&mut input, der::SEQUENCE).ok_or_else(bad)?;
    der::expect(&mut info, der::INTEGER).ok_or_else(bad)?;
    der::expect(&mut info, der::SEQUENCE).ok_or_else(bad)?;
    let mut wrapped = der::expect(&mut info, der::OCTET_STRING).ok_or_else(bad)?;
    let mut ec = der::expect(&mut wrapped, der::SEQUENCE).ok_or_else(bad)?;
    der::expect(&mut ec, der::INTEGER).ok_or_else(bad)?;
    let private = der::expect(&mut ec, der::OCTET_STRING).ok_or_else(bad)?;
    let mut body = der::tlv(der::INTEGER, &[1]);
    body.extend(der::tlv(der::OCTET_STRING, private));
    body.extend(der::tlv(0xa0, &der::tlv(der::OID, OID_P256)));
    let mut bits = vec![0u8];
    bits.extend_from_slice(public_key);
    body.extend(der::tlv(0xa1, &der::tlv(der::BIT_STRING, &bits)));
    Ok(der::tlv(der::SEQUENCE, &body))
}

const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
