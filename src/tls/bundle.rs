//! The caBundle of a ValidatingWebhookConfiguration as a set of CA
//! certificates ([`merge`]). Pure: the write to the cluster stays with the
//! certificate actor.

use std::time::{SystemTime, UNIX_EPOCH};

use super::pem::{certificate_blocks, encode_pem};
use super::x509::parse_certificate;

/// The caBundle set operation (operations.md §5.3): the `CERTIFICATE` blocks
/// of `current`, re-encoded canonically, without duplicates, without blocks
/// equal to one in `remove` and without expired ones (`NotAfter ≤ now`; a
/// block whose certificate cannot be parsed is kept), followed by the blocks
/// of `add` not already present. Other PEM blocks and blocks that are not
/// base64 are dropped.
pub fn merge(current: &[u8], add: &[u8], remove: &[u8], now: SystemTime) -> Vec<u8> {
    let now = unix_seconds(now);
    let removed = certificate_blocks(remove);
    let mut kept: Vec<Vec<u8>> = Vec::new();
    for block in certificate_blocks(current) {
        if kept.contains(&block) || removed.contains(&block) {
            continue;
        }
        if parse_certificate(&block).is_some_and(|c| c.not_after <= now) {
            continue;
        }
        kept.push(block);
    }
    for block in certificate_blocks(add) {
        if !kept.contains(&block) {
            kept.push(block);
        }
    }
    kept.iter()
        .map(|b| encode_pem("CERTIFICATE", b))
        .collect::<String>()
        .into_bytes()
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}
