//! Reading X.509 certificates: the fields the certificate code and its tests
//! look at (names, validity, key, usages, CA flag, key identifiers), as
//! [`CertInfo`].

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
/// extensions. `None` when it is not a well-formed certificate.
pub fn parse_certificate(cert: &[u8]) -> Option<CertInfo> {
    use der::*;
    let mut input = cert;
    let mut certificate = expect(&mut input, SEQUENCE)?;
    let mut tbs = expect(&mut certificate, SEQUENCE)?;
    let mut info = CertInfo::default();
    if peek(tbs) == Some(0xa0) {
        read(&mut tbs)?;
    }
    info.serial = expect(&mut tbs, INTEGER)?.to_vec();
    expect(&mut tbs, SEQUENCE)?;
    info.issuer_cn = common_name(expect(&mut tbs, SEQUENCE)?);
    let mut validity = expect(&mut tbs, SEQUENCE)?;
    let (tag, nb) = read(&mut validity)?;
    info.not_before = parse_time(tag, nb)?;
    let (tag, na) = read(&mut validity)?;
    info.not_after = parse_time(tag, na)?;
    info.subject_cn = common_name(expect(&mut tbs, SEQUENCE)?);
    let mut spki = expect(&mut tbs, SEQUENCE)?;
    let mut alg = expect(&mut spki, SEQUENCE)?;
    expect(&mut alg, OID)?;
    if peek(alg) == Some(OID) {
        info.public_key_curve = Some(oid_string(expect(&mut alg, OID)?));
    }
    while !tbs.is_empty() {
        let (tag, content) = read(&mut tbs)?;
        if tag != 0xa3 {
            continue;
        }
        let mut content = content;
        let mut extensions = expect(&mut content, SEQUENCE)?;
        while !extensions.is_empty() {
            let mut ext = expect(&mut extensions, SEQUENCE)?;
            let oid = expect(&mut ext, OID)?;
            if peek(ext) == Some(BOOLEAN) {
                read(&mut ext)?;
            }
            let mut value = expect(&mut ext, OCTET_STRING)?;
            match oid {
                [0x55, 0x1d, 0x11] => {
                    let mut names = expect(&mut value, SEQUENCE)?;
                    while !names.is_empty() {
                        match read(&mut names)? {
                            (0x82, n) => info.dns_names.push(String::from_utf8_lossy(n).into()),
                            (0x87, ip) => info.ip_addresses.push(ip.to_vec()),
                            _ => info.other_names += 1,
                        }
                    }
                }
                [0x55, 0x1d, 0x0f] => {
                    let bits = expect(&mut value, BIT_STRING)?;
                    let mut usage = 0u16;
                    for i in 0..16usize {
                        if bits
                            .get(1 + i / 8)
                            .is_some_and(|b| b & (0x80 >> (i % 8)) != 0)
                        {
                            usage |= 1 << i;
                        }
                    }
                    info.key_usage = Some(usage);
                }
                [0x55, 0x1d, 0x25] => {
                    let mut oids = expect(&mut value, SEQUENCE)?;
                    while !oids.is_empty() {
                        info.ext_key_usage.push(oid_string(expect(&mut oids, OID)?));
                    }
                }
                [0x55, 0x1d, 0x13] => {
                    info.basic_constraints = true;
                    let mut bc = expect(&mut value, SEQUENCE)?;
                    if peek(bc) == Some(BOOLEAN) {
                        info.is_ca = expect(&mut bc, BOOLEAN)?.first().is_some_and(|b| *b != 0);
                    }
                }
                [0x55, 0x1d, 0x0e] => {
                    info.subject_key_id = Some(expect(&mut value, OCTET_STRING)?.to_vec());
                }
                [0x55, 0x1d, 0x23] => {
                    let mut aki = expect(&mut value, SEQUENCE)?;
                    if peek(aki) == Some(0x80) {
                        info.authority_key_id = Some(read(&mut aki)?.1.to_vec());
                    }
                }
                _ => {}
            }
        }
    }
    Some(info)
}

fn common_name(mut name: &[u8]) -> Option<String> {
    use der::*;
    while !name.is_empty() {
        let mut set = expect(&mut name, SET)?;
        while !set.is_empty() {
            let mut atv = expect(&mut set, SEQUENCE)?;
            let oid = expect(&mut atv, OID)?;
            let (_, value) = read(&mut atv)?;
            if oid == [0x55, 0x04, 0x03] {
                return Some(String::from_utf8_lossy(value).into_owned());
            }
        }
    }
    None
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as Unix seconds.
fn parse_time(tag: u8, value: &[u8]) -> Option<i64> {
    let digits = value.strip_suffix(b"Z")?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let num = |s: &[u8]| -> i64 { s.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')) };
    let (year, rest) = match (tag, digits.len()) {
        (der::UTC_TIME, 12) => {
            let yy = num(&digits[..2]);
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        (der::GENERALIZED_TIME, 14) => (num(&digits[..4]), &digits[4..]),
        _ => return None,
    };
    let [month, day, hour, minute, second] = [0, 2, 4, 6, 8].map(|i| num(&rest[i..i + 2]));
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn oid_string(oid: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut value = 0u64;
    for &b in oid {
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// Just enough DER: single-byte tags, definite lengths.
pub(super) mod der {
    pub const BOOLEAN: u8 = 0x01;
    pub const INTEGER: u8 = 0x02;
    pub const BIT_STRING: u8 = 0x03;
    pub const OCTET_STRING: u8 = 0x04;
    pub const OID: u8 = 0x06;
    pub const UTC_TIME: u8 = 0x17;
    pub const GENERALIZED_TIME: u8 = 0x18;
    pub const SEQUENCE: u8 = 0x30;
    pub const SET: u8 = 0x31;

    /// Reads one element: (tag, content).
    pub fn read<'a>(input: &mut &'a [u8]) -> Option<(u8, &'a [u8])> {
        let (&tag, rest) = input.split_first()?;
        if tag & 0x1f == 0x1f {
            return None;
        }
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |l, b| (l << 8) | usize::from(*b));
            rest = &rest[n..];
            len
        };
        if rest.len() < len {
            return None;
        }
        let (content, after) = rest.split_at(len);
        *input = after;
        Some((tag, content))
    }

    /// Reads one element with this tag.
    pub fn expect<'a>(input: &mut &'a [u8], tag: u8) -> Option<&'a [u8]> {
        let (t, content) = read(input)?;
        (t == tag).then_some(content)
    }

    pub fn peek(input: &[u8]) -> Option<u8> {
        input.first().copied()
    }

    /// Encodes one element.
    pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len
                .to_be_bytes()
                .into_iter()
                .skip_while(|b| *b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
        out.extend_from_slice(content);
        out
    }
}
