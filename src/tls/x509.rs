//! Reading X.509 certificates back: [`parse_certificate`] flattens what the
//! certificate code and its tests look at (names, validity, key curve,
//! usages, CA flag, key identifiers) into a plain [`CertInfo`], so callers
//! never hold `x509-parser`'s borrowed types.

use x509_parser::asn1_rs::{FromDer as _, Oid};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::x509::X509Name;

/// Key usage bits as [`CertInfo::key_usage`] reports them (RFC 5280 numbering).
pub const KU_DIGITAL_SIGNATURE: u16 = 1 << 0;
pub const KU_KEY_ENCIPHERMENT: u16 = 1 << 2;
pub const KU_KEY_CERT_SIGN: u16 = 1 << 5;
/// `id-kp-serverAuth`.
pub const EKU_SERVER_AUTH: &str = "1.3.6.1.5.5.7.3.1";
/// `prime256v1` (P-256).
pub const CURVE_P256: &str = "1.2.840.10045.3.1.7";

/// What [`parse_certificate`] reads from an X.509 certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertInfo {
    pub serial: Vec<u8>,
    pub issuer_cn: Option<String>,
    pub subject_cn: Option<String>,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// The named curve of an EC public key (dotted OID).
    pub public_key_curve: Option<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<Vec<u8>>,
    /// SAN entries other than DNS names and IP addresses.
    pub other_names: usize,
    /// Key usage bits ([`KU_DIGITAL_SIGNATURE`] …), `None` without the extension.
    pub key_usage: Option<u16>,
    /// Extended key usages (dotted OIDs).
    pub ext_key_usage: Vec<String>,
    /// Basic constraints present.
    pub basic_constraints: bool,
    pub is_ca: bool,
    pub subject_key_id: Option<Vec<u8>>,
    pub authority_key_id: Option<Vec<u8>>,
}

/// Reads a DER certificate's serial, names, validity, key curve and the
/// SAN, key usage, extended key usage, basic constraints and key identifier
/// extensions. `None` when it is not a well-formed certificate, or when one of
/// those extensions is malformed. Data after the certificate is ignored.
pub fn parse_certificate(cert: &[u8]) -> Option<CertInfo> {
    let (_, cert) = X509Certificate::from_der(cert).ok()?;
    let tbs = &cert.tbs_certificate;
    let mut info = CertInfo {
        serial: tbs.raw_serial().to_vec(),
        issuer_cn: common_name(tbs.issuer()),
        subject_cn: common_name(tbs.subject()),
        not_before: tbs.validity().not_before.timestamp(),
        not_after: tbs.validity().not_after.timestamp(),
        public_key_curve: tbs
            .public_key()
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|oid| oid.to_id_string()),
        ..CertInfo::default()
    };
    for ext in tbs.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    match name {
                        GeneralName::DNSName(n) => info.dns_names.push((*n).to_string()),
                        // A dNSName that is not UTF-8 (x509-parser keeps its bytes).
                        GeneralName::Invalid(tag, raw) if tag.0 == 2 => info
                            .dns_names
                            .push(String::from_utf8_lossy(raw).into_owned()),
                        GeneralName::IPAddress(ip) => info.ip_addresses.push(ip.to_vec()),
                        _ => info.other_names += 1,
                    }
                }
            }
            ParsedExtension::KeyUsage(usage) => info.key_usage = Some(usage.flags),
            ParsedExtension::ExtendedKeyUsage(_) => {
                // The purposes in the certificate's order, from the value x509-parser
                // has already checked to be a SEQUENCE OF OBJECT IDENTIFIER.
                let (_, oids) = Vec::<Oid>::from_der(ext.value).ok()?;
                info.ext_key_usage = oids.iter().map(Oid::to_id_string).collect();
            }
            ParsedExtension::BasicConstraints(bc) => {
                info.basic_constraints = true;
                info.is_ca = bc.ca;
            }
            ParsedExtension::SubjectKeyIdentifier(id) => {
                info.subject_key_id = Some(id.0.to_vec());
            }
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                info.authority_key_id = aki.key_identifier.as_ref().map(|id| id.0.to_vec());
            }
            ParsedExtension::ParseError { .. } => return None,
            _ => {}
        }
    }
    Some(info)
}

/// The first common name of `name`, as text even when it is not one of the
/// string types x509-parser decodes.
fn common_name(name: &X509Name) -> Option<String> {
    name.iter_common_name().next().map(|cn| match cn.as_str() {
        Ok(s) => s.to_string(),
        Err(_) => String::from_utf8_lossy(cn.as_slice()).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use rcgen::{
        CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
        SanType, date_time_ymd,
    };

    use super::*;
    use crate::tls::{CA_COMMON_NAME, certificate_blocks, generate};

    fn der(pem: &str) -> Vec<u8> {
        certificate_blocks(pem.as_bytes()).remove(0)
    }

    #[test]
    fn every_field_of_the_generated_material() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let names = [
            "hook.ns.svc".to_string(),
            "hook.ns.svc.cluster.local".into(),
        ];
        let m = generate(&names, Duration::from_secs(3600), now).unwrap();
        let ca = parse_certificate(&der(&m.ca_pem)).unwrap();
        let leaf = parse_certificate(&der(&m.cert_pem)).unwrap();

        let ca_key_id = ca
            .subject_key_id
            .clone()
            .expect("the CA has a key identifier");
        assert!(!ca_key_id.is_empty());
        assert_eq!(
            ca,
            CertInfo {
                serial: ca.serial.clone(),
                issuer_cn: Some(CA_COMMON_NAME.into()),
                subject_cn: Some(CA_COMMON_NAME.into()),
                not_before: 1_700_000_000 - 60,
                not_after: 1_700_000_000 - 60 + 3600,
                public_key_curve: Some(CURVE_P256.into()),
                dns_names: vec![],
                ip_addresses: vec![],
                other_names: 0,
                key_usage: Some(KU_KEY_CERT_SIGN | KU_DIGITAL_SIGNATURE),
                ext_key_usage: vec![],
                basic_constraints: true,
                is_ca: true,
                subject_key_id: Some(ca_key_id.clone()),
                authority_key_id: None,
            }
        );
        assert_eq!(
            leaf,
            CertInfo {
                serial: leaf.serial.clone(),
                issuer_cn: Some(CA_COMMON_NAME.into()),
                subject_cn: Some(names[0].clone()),
                not_before: 1_700_000_000 - 60,
                not_after: 1_700_000_000 - 60 + 3600,
                public_key_curve: Some(CURVE_P256.into()),
                dns_names: names.to_vec(),
                ip_addresses: vec![],
                other_names: 0,
                key_usage: Some(KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT),
                ext_key_usage: vec![EKU_SERVER_AUTH.into()],
                basic_constraints: false,
                is_ca: false,
                subject_key_id: leaf.subject_key_id.clone(),
                authority_key_id: Some(ca_key_id),
            }
        );
        assert_ne!(leaf.subject_key_id, ca.subject_key_id);
        // Serials: 16 random bytes, positive (a leading zero byte when the
        // top bit is set), different for the CA and the leaf.
        for serial in [&ca.serial, &leaf.serial] {
            assert!(matches!(serial.len(), 1..=17), "{serial:?}");
            assert_eq!(serial[0] & 0x80, 0, "{serial:?}");
        }
        assert_ne!(ca.serial, leaf.serial);
    }

    #[test]
    fn other_san_types_usages_and_generalized_times() {
        let mut params = CertificateParams::new(vec!["a.example".to_string()]).unwrap();
        params.subject_alt_names.extend([
            SanType::IpAddress("10.0.0.1".parse().unwrap()),
            SanType::IpAddress("::1".parse().unwrap()),
            SanType::URI("https://a.example/".try_into().unwrap()),
            SanType::Rfc822Name("ops@a.example".try_into().unwrap()),
            SanType::DnsName("b.example".try_into().unwrap()),
        ]);
        params
            .distinguished_name
            .push(DnType::CommonName, "a.example");
        // UTCTime before 1970 and GeneralizedTime from 2050 on.
        params.not_before = date_time_ymd(1969, 12, 31);
        params.not_after = date_time_ymd(2051, 3, 1);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::Other(vec![1, 3, 6, 1, 4, 1, 99999, 1]),
        ];
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let cert = params.self_signed(&key).unwrap();

        let info = parse_certificate(cert.der()).unwrap();
        assert_eq!(info.subject_cn.as_deref(), Some("a.example"));
        assert_eq!(info.issuer_cn.as_deref(), Some("a.example"));
        assert_eq!(info.dns_names, ["a.example", "b.example"]);
        assert_eq!(
            info.ip_addresses,
            [vec![10, 0, 0, 1], {
                let mut v = vec![0; 16];
                v[15] = 1;
                v
            }]
        );
        assert_eq!(info.other_names, 2);
        assert_eq!(info.not_before, -86_400);
        // 2051-03-01: 81 years after 1970 (20 leap days), plus Jan and Feb.
        assert_eq!(info.not_after, (81 * 365 + 20 + 31 + 28) * 86_400);
        assert_eq!(info.key_usage, Some(KU_DIGITAL_SIGNATURE | 1 << 6));
        assert_eq!(
            info.ext_key_usage,
            ["1.3.6.1.5.5.7.3.2", EKU_SERVER_AUTH, "1.3.6.1.4.1.99999.1"]
        );
        assert!(info.basic_constraints && !info.is_ca);
        // Ed25519 keys name no curve parameter.
        assert_eq!(info.public_key_curve, None);
    }

    #[test]
    fn absent_extensions_read_as_absent() {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.use_authority_key_identifier_extension = false;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let info = parse_certificate(cert.der()).unwrap();
        assert_eq!(info.subject_cn, None);
        assert_eq!(info.key_usage, None);
        assert!(info.ext_key_usage.is_empty() && info.dns_names.is_empty());
        assert!(!info.basic_constraints && !info.is_ca);
        assert_eq!(info.authority_key_id, None);
        // secp384r1
        assert_eq!(info.public_key_curve.as_deref(), Some("1.3.132.0.34"));
    }

    #[test]
    fn what_is_not_a_certificate_does_not_parse() {
        let now = SystemTime::now();
        let m = generate(&["a.svc".to_string()], Duration::from_secs(60), now).unwrap();
        let good = der(&m.cert_pem);
        assert!(parse_certificate(&good).is_some());
        // Trailing bytes after the certificate are ignored.
        let mut trailing = good.clone();
        trailing.extend_from_slice(b"trailer");
        assert_eq!(parse_certificate(&trailing), parse_certificate(&good));
        assert!(parse_certificate(&good[..good.len() - 1]).is_none());
        assert!(parse_certificate(b"").is_none());
        assert!(parse_certificate(b"not a certificate").is_none());
        // The key is DER too, but not a certificate.
        let key = crate::tls::pem_blocks(m.key_pem.as_bytes()).remove(0).1;
        assert!(parse_certificate(&key).is_none());
    }
}
