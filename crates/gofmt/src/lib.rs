//! Go's text renderings of strings, numbers and JSON values, byte for byte.
//!
//! Kubernetes and kustomize are written in Go, and some of what they print is
//! visible to users or fed into hashes: error messages quote values with
//! `%q` and `%v`, managed-field keys and kustomize's name suffixes are built
//! from `encoding/json` output. Code that has to reproduce those bytes uses
//! this crate instead of its own copy:
//!
//! | Go                                    | here                                   |
//! |---------------------------------------|----------------------------------------|
//! | `strconv.Quote(s)`, `fmt` `%q`        | [`quote`], [`quote_bytes`]             |
//! | `strconv.IsPrint(r)`                  | [`is_print`]                           |
//! | `strconv.FormatFloat(f, 'g', -1, 64)`, `fmt` `%v` of a `float64` | [`format_float`] |
//! | `%v` of a decoded JSON number         | [`format_number`]                      |
//! | `json.Marshal` of a `float64`         | [`format_json_float`]                  |
//! | `json.Marshal(v)`                     | [`marshal`], [`marshal_into`]          |
//! | `json.Marshal` of a `string`          | [`marshal_str`], [`marshal_str_into`], [`marshal_string_bytes`] |
//!
//! # How a [`Value`] maps to Go
//!
//! A [`Value`] stands for what Kubernetes' JSON decoder (apimachinery's
//! `utiljson.Unmarshal` into `interface{}`) produces: objects are
//! `map[string]interface{}`, arrays `[]interface{}`, and a number is an
//! `int64` when it is written as an integer that fits one, a `float64`
//! otherwise (a fraction, an exponent, or an integer out of `int64` range);
//! see [`number_as_float64`]. Map keys are written sorted byte-wise, as Go
//! sorts the keys of a `map[string]…`.
//!
//! # The Go version matched
//!
//! Current Go (1.22 and later), as Kubernetes and kustomize releases are
//! built with: `encoding/json` writes U+0008 and U+000C as `\b` and `\f`
//! (older releases wrote `\u0008` and `\u000c`), and `strconv.IsPrint`
//! follows Unicode 15.0.0 (see `scripts/print_table.py`).
//!
//! # Invalid input
//!
//! A Rust `&str` is always valid UTF-8, but a Go string need not be. The
//! `*_bytes` functions take arbitrary bytes and treat invalid UTF-8 the way
//! Go does: [`quote_bytes`] writes each bad byte as `\xNN`, and
//! [`marshal_string_bytes`] replaces each with `\ufffd`. Go's
//! `json.Marshal` refuses NaN and infinities; a [`Value`] cannot hold them,
//! and [`format_json_float`] returns `None` for them.

mod print_table;

use std::cmp::Ordering;
use std::fmt::Write as _;

use serde_json::{Number, Value};

/// Go's `strconv.IsPrint`: letters, marks, numbers, punctuation and symbols
/// (Unicode categories L, M, N, P, S) and the ASCII space. Other spaces
/// (U+00A0, U+3000, …), controls, format characters (U+200B, U+FEFF, …),
/// private-use and unassigned code points are not printable.
pub fn is_print(c: char) -> bool {
    let cp = u32::from(c);
    if cp < 0x80 {
        return (0x20..0x7f).contains(&cp);
    }
    print_table::PRINT_RANGES
        .binary_search_by(|&(lo, hi)| {
            if hi < cp {
                Ordering::Less
            } else if lo > cp {
                Ordering::Greater
            } else {
                Ordering::Equal
            }
        })
        .is_ok()
}

/// Go's `strconv.Quote` (what `%q` prints for a string): double quotes,
/// `\"` and `\\`, printable characters ([`is_print`]) as they are, `\a`,
/// `\b`, `\f`, `\n`, `\r`, `\t` and `\v`, other ASCII controls as `\xNN`,
/// and every other non-printable character as `\uNNNN` or `\UNNNNNNNN`.
///
/// ```
/// assert_eq!(gofmt::quote("a\"b\n\u{1}\u{a0}é"), r#""a\"b\n\x01\u00a0é""#);
/// ```
pub fn quote(s: &str) -> String {
    quote_bytes(s.as_bytes())
}

/// [`quote`] for a Go string that may hold invalid UTF-8: each byte that is
/// not part of a valid UTF-8 sequence is written as `\xNN`, as Go does.
pub fn quote_bytes(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for chunk in s.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_quoted_char(&mut out, c);
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push('"');
    out
}

fn push_quoted_char(out: &mut String, c: char) {
    match c {
        '"' | '\\' => {
            out.push('\\');
            out.push(c);
        }
        c if is_print(c) => out.push(c),
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        c if u32::from(c) < 0x20 || c == '\u{7f}' => {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        }
        c if u32::from(c) < 0x10000 => {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        }
        c => {
            let _ = write!(out, "\\U{:08x}", u32::from(c));
        }
    }
}

/// `Some(f)` when Kubernetes' JSON decoder turns this number into a Go
/// `float64` (it has a fraction or an exponent, or is an integer outside
/// `int64`), `None` when it becomes an `int64`.
pub fn number_as_float64(n: &Number) -> Option<f64> {
    if n.is_i64() { None } else { n.as_f64() }
}

/// `%v` of a decoded JSON number: an `int64` in decimal, a `float64` as
/// [`format_float`] writes it.
pub fn format_number(n: &Number) -> String {
    match number_as_float64(n) {
        Some(f) => format_float(f),
        None => n.to_string(),
    }
}

/// Go's shortest formatting of a `float64`, `strconv.FormatFloat(f, 'g', -1,
/// 64)`, which is also what `%v` prints: plain decimal for decimal exponents
/// from -4 to 5, exponent form with at least two exponent digits otherwise
/// (`100000`, `1e+06`, `0.0001`, `1e-05`), and `NaN`, `+Inf`, `-Inf`.
pub fn format_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let d = Decimal::of(f);
    let exp = d.point - 1;
    if f != 0.0 && !(-4..6).contains(&exp) {
        d.exponent_form()
    } else {
        d.plain_form()
    }
}

/// How Go's `encoding/json` writes a `float64`: plain decimal for magnitudes
/// from 1e-6 up to (not including) 1e21 and for zero, exponent form otherwise
/// with a one-digit negative exponent where it fits (`1e-7`, `1e+21`).
/// `None` for NaN and infinities, which `json.Marshal` refuses.
pub fn format_json_float(f: f64) -> Option<String> {
    if !f.is_finite() {
        return None;
    }
    let d = Decimal::of(f);
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let mut s = d.exponent_form();
        // Go trims "e-07" to "e-7" (but keeps "e+21").
        let n = s.len();
        if s.as_bytes()[n - 4..n - 1] == *b"e-0" {
            s.remove(n - 2);
        }
        Some(s)
    } else {
        Some(d.plain_form())
    }
}

/// The shortest decimal digits that read back as a float, and where the
/// decimal point goes: the value is `0.DIGITS × 10^point`, negated when
/// `negative`. Zero has no digits.
struct Decimal {
    negative: bool,
    digits: String,
    point: i32,
}

impl Decimal {
    fn of(f: f64) -> Decimal {
        let negative = f.is_sign_negative();
        if f == 0.0 {
            return Decimal {
                negative,
                digits: String::new(),
                point: 0,
            };
        }
        // Rust's `{:e}` prints the shortest round-tripping digits, as Go's
        // shortest formatting picks them: "1.2345e-7".
        let sci = format!("{:e}", f.abs());
        let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
        Decimal {
            negative,
            digits: digits.trim_end_matches('0').to_owned(),
            point: exp + 1,
        }
    }

    /// `d.ddde±XX` (Go's `%e` with the shortest precision).
    fn exponent_form(&self) -> String {
        let mut s = String::new();
        if self.negative {
            s.push('-');
        }
        let digits = if self.digits.is_empty() {
            "0"
        } else {
            &self.digits
        };
        s.push_str(&digits[..1]);
        if digits.len() > 1 {
            s.push('.');
            s.push_str(&digits[1..]);
        }
        let exp = if self.digits.is_empty() {
            0
        } else {
            self.point - 1
        };
        let _ = write!(s, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
        s
    }

    /// `ddd.ddd` (Go's `%f` with the shortest precision).
    fn plain_form(&self) -> String {
        let mut s = String::new();
        if self.negative {
            s.push('-');
        }
        let digits = self.digits.as_str();
        if digits.is_empty() {
            s.push('0');
        } else if self.point <= 0 {
            s.push_str("0.");
            s.extend(std::iter::repeat_n('0', self.point.unsigned_abs() as usize));
            s.push_str(digits);
        } else {
            let point = self.point as usize;
            if point >= digits.len() {
                s.push_str(digits);
                s.extend(std::iter::repeat_n('0', point - digits.len()));
            } else {
                s.push_str(&digits[..point]);
                s.push('.');
                s.push_str(&digits[point..]);
            }
        }
        s
    }
}

/// Go's `json.Marshal` of a decoded JSON value (see the crate docs for the
/// mapping): no spaces, object keys sorted, strings as [`marshal_str`].
///
/// ```
/// let v = serde_json::json!({"b": [1, 2.5e-7], "a": "<&>"});
/// assert_eq!(gofmt::marshal(&v), r#"{"a":"\u003c\u0026\u003e","b":[1,2.5e-7]}"#);
/// ```
pub fn marshal(v: &Value) -> String {
    let mut out = String::new();
    marshal_into(&mut out, v);
    out
}

/// [`marshal`], appending to `out`.
pub fn marshal_into(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match number_as_float64(n) {
            // A Value never holds NaN or an infinity.
            Some(f) => out.push_str(&format_json_float(f).unwrap_or_else(|| "null".into())),
            None => out.push_str(&n.to_string()),
        },
        Value::String(s) => marshal_str_into(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                marshal_into(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                marshal_str_into(out, k);
                out.push(':');
                marshal_into(out, &map[k.as_str()]);
            }
            out.push('}');
        }
    }
}

/// Go's `json.Marshal` of a string: `\"`, `\\`, `\b`, `\f`, `\n`, `\r` and
/// `\t`; other control characters below U+0020 as `\u00NN`; `<`, `>` and `&`
/// as `\u003c`, `\u003e` and `\u0026` (Go's HTML escaping, on by default);
/// U+2028 and U+2029 as `\u2028` and `\u2029`; everything else as it is.
pub fn marshal_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    marshal_str_into(&mut out, s);
    out
}

/// [`marshal_str`], appending to `out`.
pub fn marshal_str_into(out: &mut String, s: &str) {
    out.push('"');
    push_json_chars(out, s);
    out.push('"');
}

/// [`marshal_str`] for a Go string that may hold invalid UTF-8: each byte
/// that is not part of a valid UTF-8 sequence becomes `\ufffd`, as Go does.
pub fn marshal_string_bytes(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for chunk in s.utf8_chunks() {
        push_json_chars(&mut out, chunk.valid());
        for _ in chunk.invalid() {
            out.push_str("\\ufffd");
        }
    }
    out.push('"');
    out
}

fn push_json_chars(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quote_escapes_like_strconv() {
        assert_eq!(quote("app"), "\"app\"");
        assert_eq!(quote(""), "\"\"");
        assert_eq!(quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(quote("tab\there\n"), r#""tab\there\n""#);
        assert_eq!(
            quote("\u{7}\u{8}\u{c}\r\u{b}"),
            r#""\a\b\f\r\v""#,
            "the named escapes"
        );
        assert_eq!(quote("\u{1}\u{1b}\u{7f}"), r#""\x01\x1b\x7f""#);
        // C1 controls, non-ASCII spaces and format characters are escaped.
        assert_eq!(quote("\u{85}\u{a0}\u{3000}"), r#""\u0085\u00a0\u3000""#);
        assert_eq!(quote("\u{ad}\u{200b}\u{feff}"), r#""\u00ad\u200b\ufeff""#);
        assert_eq!(quote("\u{2028}\u{2029}"), r#""\u2028\u2029""#);
        // Private use and unassigned code points too; astral ones with \U.
        assert_eq!(quote("\u{e000}\u{2065}"), r#""\ue000\u2065""#);
        assert_eq!(quote("\u{e0001}\u{10ffff}"), r#""\U000e0001\U0010ffff""#);
        // Letters, marks, symbols and emoji are printable.
        assert_eq!(quote("grüße ✓ 日本 😀"), "\"grüße ✓ 日本 😀\"");
        assert_eq!(quote("e\u{301}"), "\"e\u{301}\"");
        assert_eq!(quote("\u{fffd}"), "\"\u{fffd}\"");
    }

    #[test]
    fn quote_bytes_escapes_invalid_utf8_per_byte() {
        assert_eq!(quote_bytes(b"a\xffb"), r#""a\xffb""#);
        // A truncated sequence: every byte on its own, as Go decodes it.
        assert_eq!(quote_bytes(b"\xe2\x82x"), r#""\xe2\x82x""#);
        // An encoded surrogate is invalid UTF-8 in Go as well.
        assert_eq!(quote_bytes(b"\xed\xa0\x80"), r#""\xed\xa0\x80""#);
        assert_eq!(quote_bytes("é".as_bytes()), "\"é\"");
    }

    #[test]
    fn is_print_follows_unicode_categories() {
        assert!(is_print(' '));
        assert!(!is_print('\t'));
        assert!(is_print('~'));
        assert!(!is_print('\u{7f}'));
        assert!(!is_print('\u{a0}'));
        assert!(is_print('\u{a1}'));
        assert!(!is_print('\u{1680}'));
        assert!(is_print('\u{20c0}'), "SOM SIGN, new in Unicode 14");
        assert!(
            is_print('\u{1faf8}'),
            "RIGHTWARDS PUSHING HAND, new in Unicode 15"
        );
        assert!(!is_print('\u{1fafa}'), "unassigned in Unicode 15");
        assert!(!is_print('\u{f0000}'));
        assert!(!is_print('\u{fffe}'));
    }

    #[test]
    fn format_float_like_percent_v() {
        for (f, want) in [
            (1.5, "1.5"),
            (1.0, "1"),
            (-2.0, "-2"),
            (100000.0, "100000"),
            (123456.0, "123456"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-10, "1.5e-10"),
            (1e100, "1e+100"),
            (0.1 + 0.2, "0.30000000000000004"),
            (0.0, "0"),
            (-0.0, "-0"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ] {
            assert_eq!(format_float(f), want, "{f:?}");
        }
    }

    #[test]
    fn format_json_float_like_encoding_json() {
        for (f, want) in [
            (1.5, "1.5"),
            (1.0, "1"),
            (100000000.0, "100000000"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (-1.25e22, "-1.25e+22"),
            (0.000001, "0.000001"),
            (1e-7, "1e-7"),
            (-2.5e-9, "-2.5e-9"),
            (1e-10, "1e-10"),
            (1e-100, "1e-100"),
            (0.0, "0"),
            (-0.0, "-0"),
        ] {
            assert_eq!(format_json_float(f).as_deref(), Some(want), "{f:?}");
        }
        assert_eq!(format_json_float(f64::NAN), None);
        assert_eq!(format_json_float(f64::INFINITY), None);
    }

    #[test]
    fn numbers_decode_as_int64_or_float64() {
        let n = |s: &str| serde_json::from_str::<Number>(s).unwrap();
        assert_eq!(number_as_float64(&n("42")), None);
        assert_eq!(number_as_float64(&n("-42")), None);
        assert_eq!(number_as_float64(&n("1.0")), Some(1.0));
        assert_eq!(number_as_float64(&n("1e3")), Some(1000.0));
        // Past int64, Kubernetes falls back to float64.
        assert_eq!(
            number_as_float64(&n("9223372036854775808")),
            Some(9223372036854775808.0)
        );
        assert_eq!(format_number(&n("42")), "42");
        assert_eq!(format_number(&n("2.5")), "2.5");
        assert_eq!(format_number(&n("1e6")), "1e+06");
        assert_eq!(
            format_number(&n("9223372036854775807")),
            "9223372036854775807"
        );
        assert_eq!(
            format_number(&n("18446744073709551615")),
            "1.8446744073709552e+19"
        );
    }

    #[test]
    fn marshal_like_encoding_json() {
        assert_eq!(
            marshal(&json!({"b": 1, "a": "<&>"})),
            r#"{"a":"\u003c\u0026\u003e","b":1}"#
        );
        // Keys sort byte-wise: upper case before lower case, "a" before "a.b".
        assert_eq!(
            marshal(&json!({"b": null, "a.b": true, "B": false, "a": []})),
            r#"{"B":false,"a":[],"a.b":true,"b":null}"#
        );
        assert_eq!(
            marshal(&json!([1, -1, 1.0, 2.5e-7, 1e21, "x", {}])),
            r#"[1,-1,1,2.5e-7,1e+21,"x",{}]"#
        );
        assert_eq!(
            marshal(&json!({"nested": {"z": [{"y": 1, "x": 2}]}})),
            r#"{"nested":{"z":[{"x":2,"y":1}]}}"#
        );
    }

    #[test]
    fn marshal_str_escapes_like_encoding_json() {
        assert_eq!(
            marshal_str("a<b>&\"\n\u{1}"),
            r#""a\u003cb\u003e\u0026\"\n\u0001""#
        );
        assert_eq!(
            marshal_str("\u{8}\u{c}\r\t\\"),
            r#""\b\f\r\t\\""#,
            "Go 1.22 and later write \\b and \\f"
        );
        assert_eq!(marshal_str("\u{1f}\u{7f}"), "\"\\u001f\u{7f}\"");
        assert_eq!(marshal_str("\u{2028}\u{2029}"), r#""\u2028\u2029""#);
        // Unlike strconv.Quote, non-printable characters stay as they are.
        assert_eq!(marshal_str("é\u{a0}\u{200b}"), "\"é\u{a0}\u{200b}\"");
        let mut out = String::from("x=");
        marshal_str_into(&mut out, "y");
        assert_eq!(out, "x=\"y\"");
    }

    #[test]
    fn marshal_string_bytes_replaces_invalid_utf8() {
        assert_eq!(marshal_string_bytes(b"a\xffb"), r#""a\ufffdb""#);
        assert_eq!(
            marshal_string_bytes(b"\xe2\x82<"),
            r#""\ufffd\ufffd\u003c""#
        );
        assert_eq!(marshal_string_bytes("ü".as_bytes()), "\"ü\"");
    }
}
