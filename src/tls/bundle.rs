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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::tls::generate;

    const HOUR: Duration = Duration::from_secs(3600);

    fn ca(validity: Duration, now: SystemTime) -> String {
        generate(&["svc.ns.svc".to_string()], validity, now)
            .expect("material")
            .ca_pem
    }

    fn merged(current: &str, add: &str, remove: &str, now: SystemTime) -> String {
        String::from_utf8(merge(
            current.as_bytes(),
            add.as_bytes(),
            remove.as_bytes(),
            now,
        ))
        .unwrap()
    }

    #[test]
    fn a_renewal_adds_the_new_ca_and_then_removes_the_old_one() {
        let now = SystemTime::now();
        let (peer, old, new) = (ca(HOUR, now), ca(HOUR, now), ca(HOUR, now));
        let bundle = format!("{peer}{old}");
        // Trust old and new, keeping the peer's CA.
        let both = merged(&bundle, &new, "", now);
        assert_eq!(both, format!("{peer}{old}{new}"));
        // Drop ours, keep the current one even when also listed for removal.
        assert_eq!(
            merged(&both, &new, &format!("{old}{new}"), now),
            format!("{peer}{new}")
        );
        // Removing a CA that is not there changes nothing.
        assert_eq!(merged(&both, "", &ca(HOUR, now), now), both);
    }

    #[test]
    fn expired_cas_are_dropped_whoever_added_them() {
        let now = SystemTime::now();
        let valid = ca(HOUR, now);
        // Issued two hours ago for one hour: expired an hour ago.
        let expired = ca(HOUR, now - 2 * HOUR);
        let not_after = parse_certificate(&certificate_blocks(expired.as_bytes())[0])
            .unwrap()
            .not_after;
        assert!(not_after < unix_seconds(now));
        assert_eq!(merged(&format!("{expired}{valid}"), "", "", now), valid);
        // An expired CA being added is added (it is the caller's to judge),
        // and dropped by the next merge.
        let once = merged(&valid, &expired, "", now);
        assert_eq!(once, format!("{valid}{expired}"));
        assert_eq!(merged(&once, "", "", now), valid);
        // Everything expired and nothing added: an empty bundle, which the
        // caBundle update refuses to write.
        assert_eq!(merged(&expired, "", "", now), "");
    }

    #[test]
    fn times_before_1970_compare_as_negative_seconds() {
        let epoch = UNIX_EPOCH;
        assert_eq!(unix_seconds(epoch), 0);
        assert_eq!(unix_seconds(epoch + Duration::from_secs(5)), 5);
        assert_eq!(unix_seconds(epoch - Duration::from_secs(5)), -5);
        // Nothing has expired yet at the epoch.
        let now = SystemTime::now();
        let valid = ca(HOUR, now);
        assert_eq!(merged(&valid, "", "", epoch - HOUR), valid);
    }
}
