//! Small pieces of Go's standard library the admission messages depend on, so
//! that a message reads exactly as upstream's `fmt.Errorf` printed it.

/// Go's `%q` of a string (`strconv.Quote`): double quotes, the usual
/// backslash escapes, printable characters as they are and everything else
/// as `\x`, `\u` or `\U` escapes.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if is_print(c) => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// An approximation of Go's `strconv.IsPrint`: letters, marks, numbers,
/// punctuation, symbols and the ASCII space.
fn is_print(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    // Format characters, surrogates' stand-ins and private use are not printable.
    !matches!(c as u32,
        0x00ad | 0x0600..=0x0605 | 0x061c | 0x06dd | 0x070f | 0x180e
        | 0x200b..=0x200f | 0x202a..=0x202e | 0x2060..=0x2064 | 0x2066..=0x206f
        | 0xfeff | 0xfff9..=0xfffb | 0xe000..=0xf8ff | 0xf0000.. )
}

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
