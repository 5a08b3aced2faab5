//! Go's `path.Match` (Go 1.16 and later): the glob syntax of
//! `--allowed-action-hosts` (operations.md §8.6). Go compares bytes, this
//! compares characters; the answers differ only when a `*` would have to
//! resume inside a multi-byte character of a non-ASCII name, which host
//! names (ASCII after IDNA) never are.
//!
//! Pattern syntax:
//!
//! ```text
//! pattern:
//!     { term }
//! term:
//!     '*'         matches any sequence of non-'/' characters
//!     '?'         matches any single non-'/' character
//!     '[' [ '^' ] { character-range } ']'
//!                 character class (must be non-empty)
//!     c           matches character c (c != '*', '?', '\\', '[')
//!     '\\' c      matches character c
//! character-range:
//!     c           matches character c (c != '\\', '-', ']')
//!     '\\' c      matches character c
//!     lo '-' hi   matches character c for lo <= c <= hi
//! ```
//!
//! Matching is case-sensitive and must cover the whole name. As in Go, a
//! malformed pattern is an error ([`BadPattern`]) however far matching got;
//! [`check_pattern`] reports it without a name, which is how the flag is
//! validated at start-up.

/// Go's `path.ErrBadPattern`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("syntax error in pattern")]
pub struct BadPattern;

/// Whether `name` matches the shell pattern `pattern` (Go's `path.Match`).
pub fn path_match(pattern: &str, name: &str) -> Result<bool, BadPattern> {
    let mut pattern = pattern;
    let mut name = name;
    'pattern: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            // A trailing `*` matches the rest of the name unless it has a `/`.
            return Ok(!name.contains('/'));
        }
        // Look for a match at the current position.
        let (t, ok) = match_chunk(chunk, name)?;
        // The last chunk must exhaust the name; otherwise the star may still
        // find a later match.
        if ok && (t.is_empty() || !pattern.is_empty()) {
            name = t;
            continue;
        }
        if star {
            // Look for a match skipping i+1 bytes; a star never skips a `/`.
            let bytes = name.as_bytes();
            let mut i = 0;
            while i < bytes.len() && bytes[i] != b'/' {
                if !name.is_char_boundary(i + 1) {
                    // Go also tries offsets inside a multi-byte character
                    // (where `?` then matches a lone continuation byte); we
                    // stay on char boundaries. Host names are ASCII (IDNA),
                    // so this never changes a host match.
                    i += 1;
                    continue;
                }
                let (t, ok) = match_chunk(chunk, &name[i + 1..])?;
                if ok {
                    // The last chunk must exhaust the name.
                    if pattern.is_empty() && !t.is_empty() {
                        i += 1;
                        continue;
                    }
                    name = t;
                    continue 'pattern;
                }
                i += 1;
            }
        }
        // Before returning false, check that the rest of the pattern is
        // well-formed.
        check_pattern(pattern)?;
        return Ok(false);
    }
    Ok(name.is_empty())
}

/// Checks the syntax of a pattern: `Err` exactly when Go's `path.Match`
/// would return `ErrBadPattern` for it.
pub fn check_pattern(pattern: &str) -> Result<(), BadPattern> {
    let mut pattern = pattern;
    while !pattern.is_empty() {
        let (_, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        match_chunk(chunk, "")?;
    }
    Ok(())
}

/// Splits off the leading star (if any) and the chunk up to the next star
/// outside a class. Returns `(star, chunk, rest)`.
fn scan_chunk(pattern: &str) -> (bool, &str, &str) {
    let b = pattern.as_bytes();
    let mut start = 0;
    let mut star = false;
    while start < b.len() && b[start] == b'*' {
        start += 1;
        star = true;
    }
    let p = &b[start..];
    let mut in_range = false;
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            // A trailing backslash is reported by match_chunk.
            b'\\' if i + 1 < p.len() => i += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    // `i` is at a `*` (ASCII) or the end, so both splits are char boundaries.
    let pattern = &pattern[start..];
    (star, &pattern[..i], &pattern[i..])
}

/// The first character of `s` and its length in bytes (Go's
/// `utf8.DecodeRuneInString`; `s` is valid UTF-8, so no `RuneError` case).
fn first_char(s: &str) -> (char, usize) {
    let c = s.chars().next().expect("non-empty");
    (c, c.len_utf8())
}

/// Matches `chunk` (no stars outside classes) against the start of `s`.
/// Returns the rest of `s` and whether it matched; once the match failed the
/// rest of the chunk is still checked for syntax errors.
fn match_chunk<'a>(chunk: &str, s: &'a str) -> Result<(&'a str, bool), BadPattern> {
    let mut chunk = chunk;
    let mut s = s;
    let mut failed = false;
    while !chunk.is_empty() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match chunk.as_bytes()[0] {
            b'[' => {
                // Character class.
                let mut r = '\0';
                if !failed {
                    let (c, n) = first_char(s);
                    r = c;
                    s = &s[n..];
                }
                chunk = &chunk[1..];
                // Possibly negated.
                let mut negated = false;
                if chunk.as_bytes().first() == Some(&b'^') {
                    negated = true;
                    chunk = &chunk[1..];
                }
                // Parse all ranges.
                let mut matched = false;
                let mut nrange = 0;
                loop {
                    if chunk.as_bytes().first() == Some(&b']') && nrange > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let (lo, rest) = get_esc(chunk)?;
                    chunk = rest;
                    let mut hi = lo;
                    if chunk.as_bytes()[0] == b'-' {
                        let (h, rest) = get_esc(&chunk[1..])?;
                        hi = h;
                        chunk = rest;
                    }
                    if lo <= r && r <= hi {
                        matched = true;
                    }
                    nrange += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            b'?' => {
                if !failed {
                    if s.as_bytes()[0] == b'/' {
                        failed = true;
                    }
                    let (_, n) = first_char(s);
                    s = &s[n..];
                }
                chunk = &chunk[1..];
            }
            c => {
                if c == b'\\' {
                    chunk = &chunk[1..];
                    if chunk.is_empty() {
                        return Err(BadPattern);
                    }
                }
                // Go compares byte by byte; comparing whole characters gives
                // the same answer and keeps both sides on char boundaries.
                let (lit, n) = first_char(chunk);
                if !failed {
                    let (have, m) = first_char(s);
                    if lit != have {
                        failed = true;
                    }
                    s = &s[m..];
                }
                chunk = &chunk[n..];
            }
        }
    }
    if failed {
        Ok(("", false))
    } else {
        Ok((s, true))
    }
}

/// One possibly escaped character of a class, and the rest of the chunk.
fn get_esc(chunk: &str) -> Result<(char, &str), BadPattern> {
    let mut chunk = chunk;
    match chunk.as_bytes().first() {
        None | Some(b'-') | Some(b']') => return Err(BadPattern),
        Some(b'\\') => {
            chunk = &chunk[1..];
            if chunk.is_empty() {
                return Err(BadPattern);
            }
        }
        Some(_) => {}
    }
    let (r, n) = first_char(chunk);
    let rest = &chunk[n..];
    if rest.is_empty() {
        return Err(BadPattern);
    }
    Ok((r, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, n: &str) -> Result<bool, BadPattern> {
        path_match(p, n)
    }

    /// Go's own table (src/path/match_test.go).
    #[test]
    fn go_match_tests() {
        let bad = Err(BadPattern);
        let cases: &[(&str, &str, Result<bool, BadPattern>)] = &[
            ("abc", "abc", Ok(true)),
            ("*", "abc", Ok(true)),
            ("*c", "abc", Ok(true)),
            ("a*", "a", Ok(true)),
            ("a*", "abc", Ok(true)),
            ("a*", "ab/c", Ok(false)),
            ("a*/b", "abc/b", Ok(true)),
            ("a*/b", "a/c/b", Ok(false)),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", Ok(true)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", Ok(true)),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", Ok(false)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", Ok(false)),
            ("a*b?c*x", "abxbbxdbxebxczzx", Ok(true)),
            ("a*b?c*x", "abxbbxdbxebxczzy", Ok(false)),
            ("ab[c]", "abc", Ok(true)),
            ("ab[b-d]", "abc", Ok(true)),
            ("ab[e-g]", "abc", Ok(false)),
            ("ab[^c]", "abc", Ok(false)),
            ("ab[^b-d]", "abc", Ok(false)),
            ("ab[^e-g]", "abc", Ok(true)),
            ("a\\*b", "a*b", Ok(true)),
            ("a\\*b", "ab", Ok(false)),
            ("a?b", "a☺b", Ok(true)),
            ("a[^a]b", "a☺b", Ok(true)),
            ("a???b", "a☺b", Ok(false)),
            ("a[^a][^a][^a]b", "a☺b", Ok(false)),
            ("[a-ζ]*", "α", Ok(true)),
            ("*[a-ζ]", "A", Ok(false)),
            ("a?b", "a/b", Ok(false)),
            ("a*b", "a/b", Ok(false)),
            ("[\\]a]", "]", Ok(true)),
            ("[\\-]", "-", Ok(true)),
            ("[x\\-]", "x", Ok(true)),
            ("[x\\-]", "-", Ok(true)),
            ("[x\\-]", "z", Ok(false)),
            ("[\\-x]", "x", Ok(true)),
            ("[\\-x]", "-", Ok(true)),
            ("[\\-x]", "a", Ok(false)),
            ("[]a]", "]", bad),
            ("[-]", "-", bad),
            ("[x-]", "x", bad),
            ("[x-]", "-", bad),
            ("[x-]", "z", bad),
            ("[-x]", "x", bad),
            ("[-x]", "-", bad),
            ("[-x]", "a", bad),
            ("\\", "a", bad),
            ("[a-b-c]", "a", bad),
            ("[", "a", bad),
            ("[^", "a", bad),
            ("[^bc", "a", bad),
            ("a[", "a", bad),
            ("a[", "ab", bad),
            ("a[", "x", bad),
            ("a/b[", "x", bad),
            ("*x", "xxx", Ok(true)),
        ];
        for (p, n, want) in cases {
            assert_eq!(m(p, n), *want, "Match({p:?}, {n:?})");
            assert_eq!(check_pattern(p).is_err(), want.is_err(), "{p:?}");
        }
    }

    #[test]
    fn host_globs() {
        let yes = [
            ("*.svc.cluster.local", "hooks.team-a.svc.cluster.local"),
            ("*.example.com", "a.b.example.com"),
            ("*", "anything.example.com"),
            ("hook?.example.com", "hook1.example.com"),
            ("[a-c].example.com", "b.example.com"),
            ("[^a-c].example.com", "d.example.com"),
            ("\\*.example.com", "*.example.com"),
            ("192.0.2.*", "192.0.2.10"),
            ("", ""),
        ];
        for (p, n) in yes {
            assert_eq!(m(p, n), Ok(true), "{p:?} {n:?}");
        }
        let no = [
            ("*.svc.cluster.local", "svc.cluster.local"),
            ("*.svc.cluster.local", "evil.svc.cluster.local.example.com"),
            ("*.example.com", "example.com"),
            ("*.example.com", "a.example.com.evil"),
            ("*.example.com", "A.EXAMPLE.COM"),
            ("hook?.example.com", "hook12.example.com"),
            ("[a-c].example.com", "d.example.com"),
            ("\\*.example.com", "a.example.com"),
            ("example.com", "example.com.evil"),
            ("", "example.com"),
        ];
        for (p, n) in no {
            assert_eq!(m(p, n), Ok(false), "{p:?} {n:?}");
        }
    }

    #[test]
    fn malformed_patterns_are_errors_even_after_a_mismatch() {
        for p in ["*.example.[com", "x\\", "[]", "[^]", "a[z-", "[a-]x"] {
            assert_eq!(check_pattern(p), Err(BadPattern), "{p:?}");
            assert_eq!(m(p, "nothing-like-it"), Err(BadPattern), "{p:?}");
        }
        for p in [
            "*",
            "*.example.com",
            "[a-z]*.svc",
            "\\[x\\]",
            "a,b",
            "host:9090",
        ] {
            assert_eq!(check_pattern(p), Ok(()), "{p:?}");
        }
    }
}
