//! PEM text as Go's `encoding/pem` reads and writes it: one block per
//! certificate or key, 64-column base64 bodies, tolerant of CRLF line ends and
//! of text between blocks. Only what the webhook certificates need; the
//! rustls loaders do their own PEM reading.

use base64::Engine;

/// One PEM block: `-----BEGIN <label>-----`, 64-column base64, `-----END <label>-----`.
pub fn encode_pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Every PEM block of `pem` as (label, DER); blocks whose body is not base64
/// are skipped (as Go's `pem.Decode` does), text between blocks is ignored.
pub fn pem_blocks(pem: &[u8]) -> Vec<(String, Vec<u8>)> {
    let text = String::from_utf8_lossy(pem);
    let mut rest: &str = &text;
    let mut out = Vec::new();
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + "-----BEGIN ".len()..];
        let Some(label_end) = after.find("-----") else {
            break;
        };
        let label = &after[..label_end];
        let body = &after[label_end + 5..];
        let end_marker = format!("-----END {label}-----");
        let Some(end) = body.find(&end_marker) else {
            rest = body;
            continue;
        };
        rest = &body[end + end_marker.len()..];
        if label.contains('\n') {
            continue;
        }
        let b64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b64.as_bytes())
            && !der.is_empty()
        {
            out.push((label.to_string(), der));
        }
    }
    out
}

/// The DER of every `CERTIFICATE` block of `pem`.
pub fn certificate_blocks(pem: &[u8]) -> Vec<Vec<u8>> {
    pem_blocks(pem)
        .into_iter()
        .filter(|(label, _)| label == "CERTIFICATE")
        .map(|(_, der)| der)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_written_in_64_columns_and_read_back() {
        let der: Vec<u8> = (0..=255).collect();
        let pem = encode_pem("CERTIFICATE", &der);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines.first(), Some(&"-----BEGIN CERTIFICATE-----"));
        assert_eq!(lines.last(), Some(&"-----END CERTIFICATE-----"));
        let body = &lines[1..lines.len() - 1];
        assert!(
            body[..body.len() - 1].iter().all(|l| l.len() == 64),
            "{pem}"
        );
        assert!(body[body.len() - 1].len() <= 64);
        assert!(pem.ends_with("-----\n"));
        assert_eq!(
            pem_blocks(pem.as_bytes()),
            [("CERTIFICATE".to_string(), der)]
        );
    }

    #[test]
    fn reading_skips_text_broken_blocks_and_keeps_the_labels() {
        let a = encode_pem("CERTIFICATE", b"first");
        let key = encode_pem("EC PRIVATE KEY", b"key");
        let crlf = "-----BEGIN CERTIFICATE-----\r\nc2Vj\r\nb25k\r\n-----END CERTIFICATE-----\r\n";
        let broken = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let empty = "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n";
        let unterminated = "-----BEGIN CERTIFICATE-----\nZm9v\n";
        let text = format!("intro\n{a}between\n{key}{broken}{empty}{crlf}trailer\n{unterminated}");
        let blocks = pem_blocks(text.as_bytes());
        assert_eq!(
            blocks,
            [
                ("CERTIFICATE".to_string(), b"first".to_vec()),
                ("EC PRIVATE KEY".to_string(), b"key".to_vec()),
                ("CERTIFICATE".to_string(), b"second".to_vec()),
            ]
        );
        assert_eq!(
            certificate_blocks(text.as_bytes()),
            [b"first".to_vec(), b"second".to_vec()]
        );
        assert!(pem_blocks(b"").is_empty());
        assert!(pem_blocks(b"-----BEGIN CERTIFICATE").is_empty());
    }
}
