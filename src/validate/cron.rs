//! Standard cron schedules, read the way robfig/cron v3's `ParseStandard`
//! reads them (the parser upstream's update windows use): five fields
//! (minute, hour, day of month, month, day of week), month and weekday
//! names in any case, `*`/`?`, ranges, steps and lists; the descriptors
//! `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`,
//! `@hourly` and `@every <duration>`; and an optional `TZ=<zone>` or
//! `CRON_TZ=<zone>` prefix. Error messages are robfig's.
//!
//! The result keeps robfig's representation (one bit per allowed value, plus
//! whether day-of-month / day-of-week were `*`), so the update-window
//! evaluator can walk it without parsing again.

use crate::duration::GoDuration;

/// A parsed standard cron schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// A field-based schedule.
    Spec(SpecSchedule),
    /// `@every <duration>`: a fixed period (robfig rounds it up to at least
    /// one second).
    Every(GoDuration),
}

/// The allowed values of each field, as bit sets (bit `n` = value `n`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecSchedule {
    pub minute: u64,
    pub hour: u64,
    pub dom: u64,
    pub month: u64,
    pub dow: u64,
    /// Day of month was written as `*` or `?` (robfig's star bit): when either
    /// day field is a star, both must match; otherwise either may.
    pub dom_star: bool,
    /// Day of week was written as `*` or `?`.
    pub dow_star: bool,
    /// The zone of a `TZ=`/`CRON_TZ=` prefix, if any.
    pub location: Option<String>,
}

struct Bounds {
    min: u32,
    max: u32,
    names: &'static [(&'static str, u32)],
}

const MINUTES: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
};
const HOURS: Bounds = Bounds {
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Bounds = Bounds {
    min: 1,
    max: 31,
    names: &[],
};
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        ("jan", 1),
        ("feb", 2),
        ("mar", 3),
        ("apr", 4),
        ("may", 5),
        ("jun", 6),
        ("jul", 7),
        ("aug", 8),
        ("sep", 9),
        ("oct", 10),
        ("nov", 11),
        ("dec", 12),
    ],
};
const DOW: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &[
        ("sun", 0),
        ("mon", 1),
        ("tue", 2),
        ("wed", 3),
        ("thu", 4),
        ("fri", 5),
        ("sat", 6),
    ],
};

/// Parses a standard cron expression. `load_location` checks a `TZ=` prefix
/// (Go's `time.LoadLocation`), returning its error text.
pub fn parse_standard(
    spec: &str,
    load_location: impl Fn(&str) -> Result<(), String>,
) -> Result<Schedule, String> {
    if spec.is_empty() {
        return Err("empty spec string".to_string());
    }
    let mut spec = spec;
    let mut location = None;
    if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
        let eq = spec.find('=').unwrap_or(0);
        // robfig slices up to the first space and would panic without one.
        let Some(space) = spec.find(' ') else {
            let name = &spec[eq + 1..];
            return Err(format!(
                "provided bad location {name}: the schedule after it is missing"
            ));
        };
        let name = if space > eq { &spec[eq + 1..space] } else { "" };
        load_location(name).map_err(|e| format!("provided bad location {name}: {e}"))?;
        location = Some(name.to_string());
        spec = spec[space..].trim();
    }
    if spec.starts_with('@') {
        return parse_descriptor(spec, location);
    }
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: {}",
            fields.len(),
            super::gofmt::string_slice(&fields)
        ));
    }
    let (minute, _) = field(fields[0], &MINUTES)?;
    let (hour, _) = field(fields[1], &HOURS)?;
    let (dom, dom_star) = field(fields[2], &DOM)?;
    let (month, _) = field(fields[3], &MONTHS)?;
    let (dow, dow_star) = field(fields[4], &DOW)?;
    Ok(Schedule::Spec(SpecSchedule {
        minute,
        hour,
        dom,
        month,
        dow,
        dom_star,
        dow_star,
        location,
    }))
}

fn all(b: &Bounds) -> u64 {
    bits(b.min, b.max, 1)
}

fn parse_descriptor(descriptor: &str, location: Option<String>) -> Result<Schedule, String> {
    let spec = |minute: u64, hour: u64, dom: u64, month: u64, dow: u64, dom_star, dow_star| {
        Schedule::Spec(SpecSchedule {
            minute,
            hour,
            dom,
            month,
            dow,
            dom_star,
            dow_star,
            location: location.clone(),
        })
    };
    let (h, d, mo, w) = (all(&HOURS), all(&DOM), all(&MONTHS), all(&DOW));
    Ok(match descriptor {
        "@yearly" | "@annually" => spec(1, 1, 1 << 1, 1 << 1, w, false, true),
        "@monthly" => spec(1, 1, 1 << 1, mo, w, false, true),
        "@weekly" => spec(1, 1, d, mo, 1, true, false),
        "@daily" | "@midnight" => spec(1, 1, d, mo, w, true, true),
        "@hourly" => spec(1, h, d, mo, w, true, true),
        _ => {
            if let Some(text) = descriptor.strip_prefix("@every ") {
                let d = GoDuration::parse(text)
                    .map_err(|e| format!("failed to parse duration {descriptor}: time: {e}"))?;
                return Ok(Schedule::Every(d));
            }
            return Err(format!("unrecognized descriptor: {descriptor}"));
        }
    })
}

/// One field: a comma-separated list of ranges (empty items are skipped, as
/// Go's `strings.FieldsFunc` does). Returns the bits and whether the field
/// was a star.
fn field(text: &str, b: &Bounds) -> Result<(u64, bool), String> {
    let mut out = 0;
    let mut star = false;
    for expr in text.split(',').filter(|s| !s.is_empty()) {
        let (bits, s) = range(expr, b)?;
        out |= bits;
        star |= s;
    }
    Ok((out, star))
}

fn range(expr: &str, b: &Bounds) -> Result<(u64, bool), String> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_and_high: Vec<&str> = range_and_step[0].split('-').collect();
    let single = low_and_high.len() == 1;
    let (start, mut end, mut star);
    if low_and_high[0] == "*" || low_and_high[0] == "?" {
        start = b.min;
        end = b.max;
        star = true;
    } else {
        star = false;
        start = int_or_name(low_and_high[0], b)?;
        end = match low_and_high.len() {
            1 => start,
            2 => int_or_name(low_and_high[1], b)?,
            _ => return Err(format!("too many hyphens: {expr}")),
        };
    }
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let step = must_parse_int(range_and_step[1])?;
            // "N/step" means "N-max/step".
            if single {
                end = b.max;
            }
            if step > 1 {
                star = false;
            }
            step
        }
        _ => return Err(format!("too many slashes: {expr}")),
    };
    if start < b.min {
        return Err(format!(
            "beginning of range ({start}) below minimum ({}): {expr}",
            b.min
        ));
    }
    if end > b.max {
        return Err(format!(
            "end of range ({end}) above maximum ({}): {expr}",
            b.max
        ));
    }
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        ));
    }
    if step == 0 {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    Ok((bits(start, end, step), star))
}

fn bits(start: u32, end: u32, step: u32) -> u64 {
    let mut out = 0u64;
    let mut i = start;
    while i <= end {
        out |= 1 << i;
        // A step past every field's maximum (`1/4294967295`) must end the
        // walk, not wrap around to low values (or panic in debug builds).
        let Some(next) = i.checked_add(step) else {
            break;
        };
        i = next;
    }
    out
}

fn int_or_name(expr: &str, b: &Bounds) -> Result<u32, String> {
    let lower = expr.to_ascii_lowercase();
    if let Some((_, v)) = b.names.iter().find(|(n, _)| *n == lower) {
        return Ok(*v);
    }
    must_parse_int(expr)
}

/// robfig's `mustParseInt`: Go's `strconv.Atoi`, then no negatives.
fn must_parse_int(expr: &str) -> Result<u32, String> {
    let digits = expr.strip_prefix(['+', '-']).unwrap_or(expr);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "failed to parse int from {expr}: strconv.Atoi: parsing {}: invalid syntax",
            super::gofmt::quote(expr)
        ));
    }
    let Ok(n) = expr.parse::<i64>() else {
        return Err(format!(
            "failed to parse int from {expr}: strconv.Atoi: parsing {}: value out of range",
            super::gofmt::quote(expr)
        ));
    };
    if n < 0 {
        return Err(format!("negative number ({n}) not allowed: {expr}"));
    }
    // Anything this large is above every field's maximum.
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Schedule, String> {
        parse_standard(s, |name| {
            if name == "Europe/Berlin" {
                Ok(())
            } else {
                Err(format!("unknown time zone {name}"))
            }
        })
    }

    fn spec(s: &str) -> SpecSchedule {
        match parse(s).unwrap() {
            Schedule::Spec(s) => s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fields_ranges_steps_and_names() {
        let s = spec("0 9 * * MON-FRI");
        assert_eq!(s.minute, 1);
        assert_eq!(s.hour, 1 << 9);
        assert!(s.dom_star && !s.dow_star);
        assert_eq!(s.dow, 0b0111110);
        let s = spec("*/15 0-6/2 1,15 jan,Jul sun");
        assert_eq!(s.minute, 1 | 1 << 15 | 1 << 30 | 1 << 45);
        assert_eq!(s.hour, 1 | 1 << 2 | 1 << 4 | 1 << 6);
        assert_eq!(s.dom, 1 << 1 | 1 << 15);
        assert_eq!(s.month, 1 << 1 | 1 << 7);
        assert_eq!(s.dow, 1);
        let s = spec("5/20 * * * TUE,THU");
        assert_eq!(s.minute, 1 << 5 | 1 << 25 | 1 << 45);
        assert_eq!(s.dow, 1 << 2 | 1 << 4);
        assert!(spec("TZ=Europe/Berlin 0 3 * * *").location.is_some());
    }

    #[test]
    fn descriptors() {
        assert_eq!(spec("@daily"), spec("0 0 * * *"));
        assert_eq!(spec("@midnight"), spec("@daily"));
        assert_eq!(spec("@hourly"), spec("0 * * * *"));
        assert!(matches!(parse("@every 1h30m"), Ok(Schedule::Every(_))));
        assert_eq!(
            parse("@fortnightly").unwrap_err(),
            "unrecognized descriptor: @fortnightly"
        );
        assert_eq!(
            parse("@every 8 hours").unwrap_err(),
            "failed to parse duration @every 8 hours: time: unknown unit \" hours\" in duration \"8 hours\""
        );
    }

    #[test]
    fn robfig_error_messages() {
        let cases = [
            ("", "empty spec string"),
            (
                "not a cron",
                "expected exactly 5 fields, found 3: [not a cron]",
            ),
            (
                "* * * * * *",
                "expected exactly 5 fields, found 6: [* * * * * *]",
            ),
            ("60 * * * *", "end of range (60) above maximum (59): 60"),
            ("* * 0 * *", "beginning of range (0) below minimum (1): 0"),
            (
                "* 5-2 * * *",
                "beginning of range (5) beyond end of range (2): 5-2",
            ),
            (
                "*/0 * * * *",
                "step of range should be a positive number: */0",
            ),
            ("1-2-3 * * * *", "too many hyphens: 1-2-3"),
            ("1/2/3 * * * *", "too many slashes: 1/2/3"),
            (
                "x * * * *",
                "failed to parse int from x: strconv.Atoi: parsing \"x\": invalid syntax",
            ),
            ("* * * * 7", "end of range (7) above maximum (6): 7"),
            (
                "* * * foo *",
                "failed to parse int from foo: strconv.Atoi: parsing \"foo\": invalid syntax",
            ),
            (
                "TZ=Mars/Olympus 0 3 * * *",
                "provided bad location Mars/Olympus: unknown time zone Mars/Olympus",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input).unwrap_err(), want, "{input:?}");
        }
    }
}
