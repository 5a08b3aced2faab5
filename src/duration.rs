//! Go `time.Duration` syntax, as used by every duration in our flags and manifests.
//!
//! Users write durations the way the Go controller accepted them (`30s`, `1h30m`,
//! `8760h`, `1.5h`, `500ms`, `-1h`), so we parse exactly that grammar:
//! `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+`, or the bare `0`. The value is a signed 64-bit
//! count of nanoseconds, like Go's, and overflows are errors rather than wraps.

use std::fmt;

/// A parsed Go duration: signed nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GoDuration(i64);

/// Why a string is not a Go duration. The message names the offending input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("invalid duration {0:?}")]
    Invalid(String),
    #[error("missing unit in duration {0:?}")]
    MissingUnit(String),
    #[error("unknown unit {unit:?} in duration {input:?}")]
    UnknownUnit { unit: String, input: String },
    #[error("duration {0:?} is out of range")]
    Overflow(String),
}

const NANOSECOND: u64 = 1;
const MICROSECOND: u64 = 1_000;
const MILLISECOND: u64 = 1_000_000;
const SECOND: u64 = 1_000_000_000;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;

fn unit_nanos(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" => NANOSECOND,
        // "us", U+00B5 micro sign and U+03BC Greek small letter mu, as Go accepts.
        "us" | "\u{00b5}s" | "\u{03bc}s" => MICROSECOND,
        "ms" => MILLISECOND,
        "s" => SECOND,
        "m" => MINUTE,
        "h" => HOUR,
        _ => return None,
    })
}

impl GoDuration {
    pub const ZERO: GoDuration = GoDuration(0);

    /// Builds a duration from nanoseconds.
    pub const fn from_nanos(nanos: i64) -> Self {
        GoDuration(nanos)
    }

    /// Builds a duration from whole seconds (saturating).
    pub const fn from_secs(secs: i64) -> Self {
        GoDuration(secs.saturating_mul(SECOND as i64))
    }

    /// Parses Go duration syntax.
    pub fn parse(input: &str) -> Result<Self, DurationError> {
        let invalid = || DurationError::Invalid(input.to_string());
        let overflow = || DurationError::Overflow(input.to_string());
        let mut s = input.as_bytes();
        let mut neg = false;
        if let Some(&c) = s.first()
            && (c == b'-' || c == b'+')
        {
            neg = c == b'-';
            s = &s[1..];
        }
        if s == b"0" {
            return Ok(GoDuration(0));
        }
        if s.is_empty() {
            return Err(invalid());
        }
        let mut total: u64 = 0;
        while !s.is_empty() {
            if !(s[0] == b'.' || s[0].is_ascii_digit()) {
                return Err(invalid());
            }
            // Integer part.
            let digits = s.iter().take_while(|c| c.is_ascii_digit()).count();
            let mut v: u64 = 0;
            for &c in &s[..digits] {
                v = v
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(u64::from(c - b'0')))
                    .filter(|v| *v <= 1 << 63)
                    .ok_or_else(overflow)?;
            }
            let pre = digits > 0;
            s = &s[digits..];
            // Fractional part: digits past what fits are consumed but ignored.
            let mut frac: u64 = 0;
            let mut scale: f64 = 1.0;
            let mut post = false;
            if s.first() == Some(&b'.') {
                s = &s[1..];
                let fdigits = s.iter().take_while(|c| c.is_ascii_digit()).count();
                let mut overflowed = false;
                for &c in &s[..fdigits] {
                    if overflowed {
                        continue;
                    }
                    match frac
                        .checked_mul(10)
                        .and_then(|f| f.checked_add(u64::from(c - b'0')))
                        .filter(|f| *f <= 1 << 63)
                    {
                        Some(f) => {
                            frac = f;
                            scale *= 10.0;
                        }
                        None => overflowed = true,
                    }
                }
                post = fdigits > 0;
                s = &s[fdigits..];
            }
            if !pre && !post {
                return Err(invalid());
            }
            // Unit: everything up to the next digit or dot.
            let ulen = s
                .iter()
                .take_while(|c| !(**c == b'.' || c.is_ascii_digit()))
                .count();
            if ulen == 0 {
                return Err(DurationError::MissingUnit(input.to_string()));
            }
            // The unit ends at an ASCII byte or the end, so it is valid UTF-8.
            let unit_str = std::str::from_utf8(&s[..ulen]).map_err(|_| invalid())?;
            let unit = unit_nanos(unit_str).ok_or_else(|| DurationError::UnknownUnit {
                unit: unit_str.to_string(),
                input: input.to_string(),
            })?;
            s = &s[ulen..];
            if v > (1u64 << 63) / unit {
                return Err(overflow());
            }
            v *= unit;
            if frac > 0 {
                v += (frac as f64 * (unit as f64 / scale)) as u64;
                if v > 1 << 63 {
                    return Err(overflow());
                }
            }
            total = total.checked_add(v).ok_or_else(overflow)?;
            if total > 1 << 63 {
                return Err(overflow());
            }
        }
        if neg {
            // -(1<<63) is representable; anything else fits after the check above.
            Ok(GoDuration(0i64.wrapping_sub(total as i64)))
        } else if total > i64::MAX as u64 {
            Err(overflow())
        } else {
            Ok(GoDuration(total as i64))
        }
    }

    pub const fn as_nanos(self) -> i64 {
        self.0
    }

    pub const fn is_positive(self) -> bool {
        self.0 > 0
    }

    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// The duration as a std `Duration`, or `None` when it is negative.
    pub fn to_std(self) -> Option<std::time::Duration> {
        u64::try_from(self.0)
            .ok()
            .map(std::time::Duration::from_nanos)
    }

    /// Converts a std `Duration`, saturating at Go's maximum (about 292 years).
    pub fn from_std(d: std::time::Duration) -> Self {
        GoDuration(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }
}

impl std::str::FromStr for GoDuration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GoDuration::parse(s)
    }
}

/// Writes `v / 10^prec` with trailing fractional zeros removed.
fn fmt_frac(out: &mut String, v: u64, prec: u32) -> u64 {
    let divisor = 10u64.pow(prec);
    let frac = v % divisor;
    if frac != 0 {
        let digits = format!("{frac:0width$}", width = prec as usize);
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    v / divisor
}

/// Formats like Go's `Duration.String()`: `1h30m0s`, `10m0s`, `1.5s`, `500ms`, `0s`.
impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let neg = self.0 < 0;
        let u = self.0.unsigned_abs();
        let mut out = String::new();
        if u < SECOND {
            if u == 0 {
                return f.write_str("0s");
            }
            let (prec, unit) = if u < MICROSECOND {
                (0, "ns")
            } else if u < MILLISECOND {
                (3, "\u{00b5}s")
            } else {
                (6, "ms")
            };
            let mut frac = String::new();
            let whole = fmt_frac(&mut frac, u, prec);
            out.push_str(&whole.to_string());
            out.push_str(&frac);
            out.push_str(unit);
        } else {
            let mut frac = String::new();
            let secs_total = fmt_frac(&mut frac, u, 9);
            let secs = secs_total % 60;
            let mins_total = secs_total / 60;
            let hours = mins_total / 60;
            let mins = mins_total % 60;
            if hours > 0 {
                out.push_str(&format!("{hours}h"));
            }
            if mins_total > 0 {
                out.push_str(&format!("{mins}m"));
            }
            out.push_str(&format!("{secs}{frac}s"));
        }
        if neg {
            f.write_str("-")?;
        }
        f.write_str(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(s: &str) -> i64 {
        GoDuration::parse(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .as_nanos()
    }

    #[test]
    fn parses_go_examples() {
        assert_eq!(ns("0"), 0);
        assert_eq!(ns("5s"), 5 * SECOND as i64);
        assert_eq!(ns("30s"), 30 * SECOND as i64);
        assert_eq!(ns("1478s"), 1478 * SECOND as i64);
        assert_eq!(ns("-5s"), -5 * SECOND as i64);
        assert_eq!(ns("+5s"), 5 * SECOND as i64);
        assert_eq!(ns("-0"), 0);
        assert_eq!(ns("+0"), 0);
        assert_eq!(ns("5.0s"), 5 * SECOND as i64);
        assert_eq!(ns("5.6s"), 5 * SECOND as i64 + 600 * MILLISECOND as i64);
        assert_eq!(ns("5.s"), 5 * SECOND as i64);
        assert_eq!(ns(".5s"), 500 * MILLISECOND as i64);
        assert_eq!(ns("1.0s"), SECOND as i64);
        assert_eq!(ns("1.00s"), SECOND as i64);
        assert_eq!(ns("1.004s"), SECOND as i64 + 4 * MILLISECOND as i64);
        assert_eq!(ns("100.00100s"), 100 * SECOND as i64 + MILLISECOND as i64);
        assert_eq!(ns("10ns"), 10);
        assert_eq!(ns("11us"), 11 * MICROSECOND as i64);
        assert_eq!(ns("12\u{00b5}s"), 12 * MICROSECOND as i64);
        assert_eq!(ns("12\u{03bc}s"), 12 * MICROSECOND as i64);
        assert_eq!(ns("13ms"), 13 * MILLISECOND as i64);
        assert_eq!(ns("14s"), 14 * SECOND as i64);
        assert_eq!(ns("15m"), 15 * MINUTE as i64);
        assert_eq!(ns("16h"), 16 * HOUR as i64);
        assert_eq!(ns("3h30m"), (3 * HOUR + 30 * MINUTE) as i64);
        assert_eq!(
            ns("10.5s4m"),
            (4 * MINUTE + 10 * SECOND + 500 * MILLISECOND) as i64
        );
        assert_eq!(
            ns("-2m3.4s"),
            -((2 * MINUTE + 3 * SECOND + 400 * MILLISECOND) as i64)
        );
        assert_eq!(
            ns("1h2m3s4ms5us6ns"),
            (HOUR + 2 * MINUTE + 3 * SECOND + 4 * MILLISECOND + 5 * MICROSECOND + 6) as i64
        );
        assert_eq!(
            ns("39h9m14.425s"),
            (39 * HOUR + 9 * MINUTE + 14 * SECOND + 425 * MILLISECOND) as i64
        );
        assert_eq!(ns("52763797000ns"), 52763797000);
        assert_eq!(ns("0.3333333333333333333h"), 20 * MINUTE as i64);
        assert_eq!(ns("9007199254740993ns"), 9007199254740993);
        assert_eq!(ns("9223372036854775807ns"), i64::MAX);
        assert_eq!(ns("9223372036854775.807us"), i64::MAX);
        assert_eq!(ns("-9223372036854775808ns"), i64::MIN);
        assert_eq!(ns("8760h"), 8760 * HOUR as i64);
        assert_eq!(ns("1.5h"), 90 * MINUTE as i64);
        assert_eq!(ns("0.100000000000000000000h"), 6 * MINUTE as i64);
    }

    #[test]
    fn rejects_what_go_rejects() {
        for bad in [
            "",
            "3",
            "-",
            "s",
            ".",
            "-.",
            ".s",
            "+.s",
            "1d",
            "1.5d",
            "8 hours",
            "1h 30m",
            "\u{0}",
            "3000000h",
            "9223372036854775808ns",
            "9223372036854775.808us",
            "9223372036854ms775us808ns",
            "-9223372036854775809ns",
            "10",
            "1hh",
            "h1",
        ] {
            assert!(
                GoDuration::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
        assert!(matches!(
            GoDuration::parse("10"),
            Err(DurationError::MissingUnit(_))
        ));
        assert!(matches!(
            GoDuration::parse("1d"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            GoDuration::parse("3000000h"),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn formats_like_go() {
        for (input, want) in [
            ("0", "0s"),
            ("1ns", "1ns"),
            ("1.1us", "1.1\u{00b5}s"),
            ("2.2ms", "2.2ms"),
            ("3.3s", "3.3s"),
            ("4m5s", "4m5s"),
            ("4m5.001s", "4m5.001s"),
            ("5h6m7.001s", "5h6m7.001s"),
            ("8m0.000000001s", "8m0.000000001s"),
            ("10m", "10m0s"),
            ("1h", "1h0m0s"),
            ("8760h", "8760h0m0s"),
            ("-1h30m", "-1h30m0s"),
            ("2562047h47m16.854775807s", "2562047h47m16.854775807s"),
        ] {
            assert_eq!(
                GoDuration::parse(input).unwrap().to_string(),
                want,
                "{input}"
            );
        }
        assert_eq!(
            GoDuration::from_nanos(i64::MIN).to_string(),
            "-2562047h47m16.854775808s"
        );
    }

    #[test]
    fn std_conversion() {
        assert_eq!(GoDuration::parse("-1s").unwrap().to_std(), None);
        assert_eq!(
            GoDuration::parse("1m").unwrap().to_std(),
            Some(std::time::Duration::from_secs(60))
        );
        assert_eq!(
            GoDuration::from_std(std::time::Duration::MAX).as_nanos(),
            i64::MAX
        );
    }
}
