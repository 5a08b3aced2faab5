//! Small pieces of Go's standard library the admission messages depend on, so
//! that a message reads exactly as upstream's `fmt.Errorf` printed it.

/// Go's `%q` of a string (`strconv.Quote`), from the workspace's one
/// implementation of Go's formatting.
pub use gofmt::quote;

/// Go's `strconv.ParseFloat(s, 64)` for the decimal forms users write: an
/// optional sign, digits with an optional fraction and exponent, and the
/// special values `Inf`, `Infinity` and `NaN` (any case). Hexadecimal floats
/// and underscores are not accepted.
pub fn parse_float(s: &str) -> Option<f64> {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let lower = body.to_ascii_lowercase();
    if matches!(lower.as_str(), "inf" | "infinity" | "nan") {
        return s.parse::<f64>().ok();
    }
    // Rust also accepts these words in other spellings; everything else must
    // be plain decimal syntax.
    if !body
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    s.parse::<f64>().ok()
}

/// Go's `fmt` rendering of a `[]string` with `%s`: `[a b c]`.
pub fn string_slice(items: &[&str]) -> String {
    format!("[{}]", items.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_matches_go() {
        assert_eq!(quote("app"), "\"app\"");
        assert_eq!(quote(""), "\"\"");
        assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(quote("tab\there\n"), "\"tab\\there\\n\"");
        assert_eq!(quote("\u{1b}x"), "\"\\x1bx\"");
        assert_eq!(quote("grüße"), "\"grüße\"");
        assert_eq!(quote("\u{200b}"), "\"\\u200b\"");
    }

    #[test]
    fn parse_float_like_go() {
        assert_eq!(parse_float("0.1"), Some(0.1));
        assert_eq!(parse_float("-1e3"), Some(-1000.0));
        assert_eq!(parse_float(".5"), Some(0.5));
        assert_eq!(parse_float("+Inf"), Some(f64::INFINITY));
        assert!(parse_float("NaN").unwrap().is_nan());
        assert_eq!(parse_float("x"), None);
        assert_eq!(parse_float(""), None);
        assert_eq!(parse_float("1_000"), None);
        assert_eq!(parse_float(" 1"), None);
        assert_eq!(parse_float("0x10"), None);
    }
}
