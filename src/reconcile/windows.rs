//! Update windows (delivery.md §5.1, api.md §2.11): whether updates are
//! allowed at an instant, and when that decision next changes. Pure: the
//! caller passes the instant (the pass's clock), so tests choose the time.
//!
//! A recurring window starts at every instant its cron schedule fires (in
//! its time zone, robfig's `ParseStandard` syntax) and stays open for its
//! duration; it is active at `t` iff the first start after `t − duration`
//! is at or before `t`. An absolute window is `[from, to)`. Updates are
//! allowed iff no Deny window is active and either no Allow window is
//! declared or one is active.
//!
//! Schedules are walked on the civil (wall-clock) time of their zone and
//! each match is turned into an instant with jiff's "compatible" rule: a
//! wall time that a DST change skips runs at the same offset after the gap
//! (02:30 on a spring-forward night is 03:30), one that repeats runs at the
//! first occurrence. Fixed wall times therefore keep their local hour across
//! DST changes (18:00 in Berlin is 17:00 UTC in winter, 16:00 in summer).

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use crate::api::{UpdateWindow, WindowType};
use crate::validate::cron::{self, Schedule, SpecSchedule};

/// How many starts the forward walk of an active window visits at most.
const WALK_CAP: usize = 10_000;
/// robfig gives up looking for a match five years ahead.
const YEARS_AHEAD: i16 = 5;

/// One window, ready to evaluate.
#[derive(Clone, Debug)]
pub enum Window {
    Recurring {
        allow: bool,
        schedule: Schedule,
        zone: TimeZone,
        duration: jiff::SignedDuration,
    },
    Absolute {
        allow: bool,
        from: Timestamp,
        to: Timestamp,
    },
}

impl Window {
    fn allow(&self) -> bool {
        match self {
            Window::Recurring { allow, .. } | Window::Absolute { allow, .. } => *allow,
        }
    }

    /// Whether the window is open at `t`, and if so when it closes.
    fn active(&self, t: Timestamp) -> Option<Timestamp> {
        match self {
            Window::Absolute { from, to, .. } => (*from <= t && t < *to).then_some(*to),
            Window::Recurring {
                schedule,
                zone,
                duration,
                ..
            } => {
                let first = next_start(schedule, zone, t.checked_sub(*duration).ok()?)?;
                if first > t {
                    return None;
                }
                // The latest start at or before t decides the end.
                let mut latest = first;
                for _ in 0..WALK_CAP {
                    match next_start(schedule, zone, latest) {
                        Some(s) if s <= t => latest = s,
                        _ => break,
                    }
                }
                latest.checked_add(*duration).ok()
            }
        }
    }

    /// The first instant after `t` at which this window opens or closes.
    fn next_boundary(&self, t: Timestamp) -> Option<Timestamp> {
        if let Some(end) = self.active(t) {
            return Some(end);
        }
        match self {
            Window::Absolute { from, .. } => (*from > t).then_some(*from),
            Window::Recurring { schedule, zone, .. } => next_start(schedule, zone, t),
        }
    }
}

/// The windows of a spec, or the first one that cannot be evaluated (the
/// message names it; admission refuses these, the reconciler reports
/// `InvalidSpec`).
pub fn compile(windows: &[UpdateWindow]) -> Result<Vec<Window>, String> {
    windows
        .iter()
        .enumerate()
        .map(|(i, w)| compile_one(w).map_err(|e| format!("spec.updateWindows[{i}]: {e}")))
        .collect()
}

fn compile_one(w: &UpdateWindow) -> Result<Window, String> {
    let allow = w.type_ == WindowType::Allow;
    match (&w.schedule, &w.from, &w.to) {
        (Some(schedule), None, None) => {
            let schedule = cron::parse_standard(schedule, |name| {
                zone(name).map(|_| ()).map_err(|e| e.to_string())
            })?;
            let zone_name = match &schedule {
                Schedule::Spec(SpecSchedule {
                    location: Some(l), ..
                }) => l.clone(),
                _ => w.time_zone.clone().unwrap_or_default(),
            };
            let duration = w
                .duration
                .as_ref()
                .and_then(|d| d.parse().ok())
                .filter(|d: &crate::duration::GoDuration| d.is_positive())
                .ok_or("a recurring window needs a positive duration")?;
            let duration = duration
                .to_std()
                .and_then(|d| jiff::SignedDuration::try_from(d).ok())
                .ok_or("the duration is too long")?;
            Ok(Window::Recurring {
                allow,
                schedule,
                zone: zone(&zone_name)?,
                duration,
            })
        }
        (None, Some(from), Some(to)) if to.0 > from.0 => Ok(Window::Absolute {
            allow,
            from: from.0,
            to: to.0,
        }),
        (None, Some(_), Some(_)) => Err("to must be after from".into()),
        _ => Err("set either schedule and duration, or from and to".into()),
    }
}

/// A zone by IANA name; empty and `UTC` are UTC. `Local` is UTC too: the
/// controller's own zone must not decide a tenant's window.
fn zone(name: &str) -> Result<TimeZone, String> {
    if name.is_empty() || name == "UTC" || name == "Local" {
        return Ok(TimeZone::UTC);
    }
    TimeZone::get(name).map_err(|_| format!("unknown time zone {name:?}"))
}

/// The aggregate decision at `t`.
pub fn allowed(windows: &[Window], t: Timestamp) -> bool {
    let deny = windows.iter().any(|w| !w.allow() && w.active(t).is_some());
    let allows: Vec<&Window> = windows.iter().filter(|w| w.allow()).collect();
    !deny && (allows.is_empty() || allows.iter().any(|w| w.active(t).is_some()))
}

/// When the aggregate decision next differs from the one at `t`: walks the
/// windows' boundaries forward (at most 2·n+2 of them); if none flips it,
/// the earliest boundary; None without any boundary ahead.
pub fn next_change(windows: &[Window], t: Timestamp) -> Option<Timestamp> {
    let now = allowed(windows, t);
    let earliest = |at: Timestamp| windows.iter().filter_map(|w| w.next_boundary(at)).min();
    let first = earliest(t)?;
    let mut at = first;
    for _ in 0..(2 * windows.len() + 2) {
        if allowed(windows, at) != now {
            return Some(at);
        }
        match earliest(at) {
            Some(next) if next > at => at = next,
            _ => break,
        }
    }
    Some(first)
}

/// The first start of `schedule` strictly after `after`, in `zone` (a
/// `CRON_TZ=` prefix wins), or None if it never fires within five years.
pub fn next_start(schedule: &Schedule, zone: &TimeZone, after: Timestamp) -> Option<Timestamp> {
    match schedule {
        Schedule::Every(period) => {
            // robfig's ConstantDelaySchedule: whole seconds, at least one.
            let secs = period.to_std()?.as_secs().max(1);
            let base = Timestamp::from_second(after.as_second()).ok()?;
            base.checked_add(jiff::SignedDuration::from_secs(i64::try_from(secs).ok()?))
                .ok()
        }
        Schedule::Spec(spec) => next_spec(spec, zone, after),
    }
}

fn bit(set: u64, n: i64) -> bool {
    (0..64).contains(&n) && set & (1 << n) != 0
}

fn day_matches(spec: &SpecSchedule, date: Date) -> bool {
    let dom = bit(spec.dom, i64::from(date.day()));
    let dow = bit(spec.dow, i64::from(date.weekday().to_sunday_zero_offset()));
    if spec.dom_star || spec.dow_star {
        dom && dow
    } else {
        dom || dow
    }
}

fn next_spec(spec: &SpecSchedule, zone: &TimeZone, after: Timestamp) -> Option<Timestamp> {
    // Seconds are always 0 in a standard schedule: start at the next whole
    // minute of wall time after `after`.
    let local = after.to_zoned(zone.clone()).datetime();
    let mut t = local
        .with()
        .second(0)
        .subsec_nanosecond(0)
        .build()
        .ok()?
        .checked_add(1.minute())
        .ok()?;
    let limit = local.year() + YEARS_AHEAD;
    loop {
        if t.year() > limit {
            return None;
        }
        if !bit(spec.month, i64::from(t.month())) {
            let first = t.date().first_of_month().checked_add(1.month()).ok()?;
            t = first.to_datetime(Time::midnight());
            continue;
        }
        if !day_matches(spec, t.date()) {
            t = t
                .date()
                .checked_add(1.day())
                .ok()?
                .to_datetime(Time::midnight());
            continue;
        }
        if !bit(spec.hour, i64::from(t.hour())) {
            t = DateTime::from_parts(t.date(), Time::new(t.hour(), 0, 0, 0).ok()?)
                .checked_add(1.hour())
                .ok()?;
            continue;
        }
        if !bit(spec.minute, i64::from(t.minute())) {
            t = t.checked_add(1.minute()).ok()?;
            continue;
        }
        let instant = zone.to_ambiguous_zoned(t).compatible().ok()?.timestamp();
        if instant > after {
            return Some(instant);
        }
        t = t.checked_add(1.minute()).ok()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn windows(spec: serde_json::Value) -> Vec<Window> {
        let w: Vec<UpdateWindow> = serde_json::from_value(spec).unwrap();
        compile(&w).unwrap()
    }

    fn starts(schedule: &str, zone: &str, from: &str, n: usize) -> Vec<String> {
        let s = cron::parse_standard(schedule, |_| Ok(())).unwrap();
        let z = super::zone(zone).unwrap();
        let mut at = ts(from);
        (0..n)
            .map(|_| {
                at = next_start(&s, &z, at).unwrap();
                at.to_string()
            })
            .collect()
    }

    #[test]
    fn schedules_walk_fields_and_days() {
        assert_eq!(
            starts("*/15 9-10 * * MON-FRI", "UTC", "2026-12-04T10:40:00Z", 3),
            [
                "2026-12-04T10:45:00Z",
                "2026-12-07T09:00:00Z",
                "2026-12-07T09:15:00Z"
            ]
        );
        // Day of month and day of week both restricted: either matches.
        assert_eq!(
            starts("0 0 13 * FRI", "UTC", "2026-02-01T00:00:00Z", 3),
            [
                "2026-02-06T00:00:00Z",
                "2026-02-13T00:00:00Z",
                "2026-02-20T00:00:00Z"
            ]
        );
        assert_eq!(
            starts("@monthly", "UTC", "2026-12-06T12:00:00Z", 2),
            ["2027-01-01T00:00:00Z", "2027-02-01T00:00:00Z"]
        );
        // A schedule that never fires.
        let s = cron::parse_standard("0 0 31 4 *", |_| Ok(())).unwrap();
        assert_eq!(
            next_start(&s, &TimeZone::UTC, ts("2026-01-01T00:00:00Z")),
            None
        );
    }

    #[test]
    fn wall_times_keep_their_local_hour_across_dst() {
        // Friday 18:00 in Berlin: 17:00 UTC before the change of
        // 2027-03-28, 16:00 UTC after it.
        assert_eq!(
            starts("0 18 * * 5", "Europe/Berlin", "2027-03-20T00:00:00Z", 2),
            ["2027-03-26T17:00:00Z", "2027-04-02T16:00:00Z"]
        );
        // CRON_TZ= wins over the window's zone.
        let w = windows(
            json!([{"type": "Deny", "schedule": "CRON_TZ=America/New_York 0 9 * * *",
            "duration": "1h", "timeZone": "Europe/Berlin"}]),
        );
        assert!(!allowed(&w, ts("2027-01-05T14:30:00Z")));
        assert!(allowed(&w, ts("2027-01-05T08:30:00Z")));
        // 02:30 on the spring-forward night does not exist: 03:30 CEST.
        assert_eq!(
            starts("30 2 * * *", "Europe/Berlin", "2027-03-27T12:00:00Z", 1),
            ["2027-03-28T01:30:00Z"]
        );
    }

    #[test]
    fn deny_allow_aggregation_and_next_change() {
        // Friday 18:00 for 62 h: the weekend freeze.
        let freeze =
            windows(json!([{"type": "Deny", "schedule": "0 18 * * 5", "duration": "62h"}]));
        let friday_noon = ts("2026-12-04T12:00:00Z");
        assert!(allowed(&freeze, friday_noon));
        assert_eq!(
            next_change(&freeze, friday_noon),
            Some(ts("2026-12-04T18:00:00Z"))
        );
        let saturday = ts("2026-12-05T10:00:00Z");
        assert!(!allowed(&freeze, saturday));
        assert_eq!(
            next_change(&freeze, saturday),
            Some(ts("2026-12-07T08:00:00Z"))
        );
        // An Allow window: closed outside it.
        let office =
            windows(json!([{"type": "Allow", "schedule": "0 9 * * MON-FRI", "duration": "8h"}]));
        assert!(!allowed(&office, ts("2026-12-07T08:59:00Z")));
        assert!(allowed(&office, ts("2026-12-07T09:00:00Z")));
        assert!(!allowed(&office, ts("2026-12-07T17:00:00Z")));
        assert_eq!(
            next_change(&office, ts("2026-12-04T17:30:00Z")),
            Some(ts("2026-12-07T09:00:00Z"))
        );
        // Deny wins over Allow; an absolute Deny inside the Allow window.
        let both = windows(json!([
            {"type": "Allow", "schedule": "0 9 * * MON-FRI", "duration": "8h"},
            {"type": "Deny", "from": "2026-12-07T10:00:00Z", "to": "2026-12-07T12:00:00Z"}]));
        assert!(allowed(&both, ts("2026-12-07T09:30:00Z")));
        assert!(!allowed(&both, ts("2026-12-07T10:00:00Z")));
        assert_eq!(
            next_change(&both, ts("2026-12-07T10:30:00Z")),
            Some(ts("2026-12-07T12:00:00Z"))
        );
        // Past absolute windows are inert.
        let past = windows(
            json!([{"type": "Deny", "from": "2020-01-01T00:00:00Z", "to": "2020-01-02T00:00:00Z"}]),
        );
        assert!(allowed(&past, friday_noon));
        assert_eq!(next_change(&past, friday_noon), None);
    }

    #[test]
    fn overlapping_starts_extend_the_window() {
        // Every hour, open for 90 minutes: always open once started.
        let w = windows(json!([{"type": "Allow", "schedule": "0 * * * *", "duration": "90m"}]));
        let t = ts("2026-12-07T10:45:00Z");
        assert_eq!(w[0].active(t), Some(ts("2026-12-07T11:30:00Z")));
    }

    #[test]
    fn bad_windows_are_named() {
        let w: Vec<UpdateWindow> = serde_json::from_value(json!([
            {"type": "Deny", "schedule": "0 18 * * 5", "duration": "1h", "timeZone": "Mars/Olympus"}]))
        .unwrap();
        let e = compile(&w).unwrap_err();
        assert!(e.starts_with("spec.updateWindows[0]: "), "{e}");
        assert!(e.contains("Mars/Olympus"), "{e}");
    }
}
