//! Semantic-version constraints in the syntax upstream's migration `from`
//! field uses (Masterminds/semver v3): comparisons (`=`, `!=`, `>`, `<`,
//! `>=`, `<=`, also written `=>`/`=<`), tilde (`~`, `~>`), caret (`^`),
//! wildcards (`1.x`, `1.*`, `*`), hyphen ranges (`1.2 - 1.4`), AND by comma
//! or space, OR by `||`. A leading `v` is accepted on every version.
//!
//! [`parse_constraints`] is what admission checks; [`Constraints::matches`]
//! is the matching the migration planner needs ("does `from` admit the
//! deployed version"), kept next to the parser so the two cannot drift.

use std::cmp::Ordering;

use semver::{Prerelease, Version};

/// `Invalid Semantic Version`: Masterminds' error for a version that does
/// not parse.
pub const INVALID_SEMVER: &str = "Invalid Semantic Version";

/// Parses a concrete version leniently (a leading `v`, a missing minor or
/// patch), exactly as the reconciler does (`dependsOn.minVersion`,
/// migration `to`, resolved versions), with Masterminds' error text.
pub fn parse_version(s: &str) -> Result<Version, String> {
    parse_lenient(s).ok_or_else(|| INVALID_SEMVER.to_string())
}

/// Parses a version leniently (§5.4.1): surrounding space and a leading `v`
/// are ignored, and a missing minor or patch counts as 0 (`1.2` = `1.2.0`).
pub fn parse_lenient(raw: &str) -> Option<Version> {
    let s = raw.trim();
    let s = s
        .strip_prefix('v')
        .or_else(|| s.strip_prefix('V'))
        .unwrap_or(s);
    if s.is_empty() {
        return None;
    }
    if let Ok(v) = Version::parse(s) {
        return Some(v);
    }
    let split = s.find(['-', '+']).unwrap_or(s.len());
    let (core, rest) = s.split_at(split);
    let parts: Vec<&str> = core.split('.').collect();
    if parts.is_empty()
        || parts.len() > 2
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let mut padded = parts.join(".");
    for _ in parts.len()..3 {
        padded.push_str(".0");
    }
    padded.push_str(rest);
    Version::parse(&padded).ok()
}

/// Whether `from` is a plain `X.Y.Z` version (optionally `v`-prefixed) with
/// no operator, wildcard or range, i.e. a constraint matching only that one
/// version.
pub fn is_bare_version(from: &str) -> bool {
    let s = from.trim();
    let s = s
        .strip_prefix('v')
        .or_else(|| s.strip_prefix('V'))
        .unwrap_or(s);
    Version::parse(s).is_ok()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// `=` or no operator: equal, or a tilde match when a part is a wildcard.
    Equal,
    NotEqual,
    Greater,
    Less,
    GreaterEqual,
    LessEqual,
    Tilde,
    Caret,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Constraint {
    op: Op,
    con: Version,
    /// Some part was a wildcard (or the major was).
    dirty: bool,
    minor_dirty: bool,
    patch_dirty: bool,
}

/// A parsed constraint: OR of AND groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Constraints {
    groups: Vec<Vec<Constraint>>,
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{c}')
}

fn is_wild_or_digit(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, 'x' | 'X' | '*')
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-'
}

/// The parts of one version pattern (`v1.2.x-pre+build`).
struct Pattern<'a> {
    major: &'a str,
    minor: Option<&'a str>,
    patch: Option<&'a str>,
    pre: Option<&'a str>,
}

/// A cursor over one OR segment.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    fn skip_space(&mut self) -> usize {
        let start = self.pos;
        while let Some(c) = self.rest().chars().next()
            && is_space(c)
        {
            self.pos += c.len_utf8();
        }
        self.pos - start
    }

    fn take_while(&mut self, f: impl Fn(char) -> bool) -> &'a str {
        let start = self.pos;
        while let Some(c) = self.rest().chars().next()
            && f(c)
        {
            self.pos += c.len_utf8();
        }
        &self.s[start..self.pos]
    }

    fn op(&mut self) -> Op {
        const OPS: [(&str, Op); 11] = [
            ("!=", Op::NotEqual),
            (">=", Op::GreaterEqual),
            ("=>", Op::GreaterEqual),
            ("<=", Op::LessEqual),
            ("=<", Op::LessEqual),
            ("~>", Op::Tilde),
            ("=", Op::Equal),
            (">", Op::Greater),
            ("<", Op::Less),
            ("~", Op::Tilde),
            ("^", Op::Caret),
        ];
        for (text, op) in OPS {
            if self.rest().starts_with(text) {
                self.pos += text.len();
                return op;
            }
        }
        Op::Equal
    }

    /// A dot-separated list of identifiers (pre-release or build).
    fn idents(&mut self) -> Option<&'a str> {
        let start = self.pos;
        loop {
            if self.take_while(is_ident).is_empty() {
                self.pos = start;
                return None;
            }
            if self.rest().starts_with('.') && self.rest()[1..].chars().next().is_some_and(is_ident)
            {
                self.pos += 1;
                continue;
            }
            return Some(&self.s[start..self.pos]);
        }
    }

    fn pattern(&mut self) -> Option<Pattern<'a>> {
        let start = self.pos;
        if self.rest().starts_with('v')
            && self.rest()[1..]
                .chars()
                .next()
                .is_some_and(is_wild_or_digit)
        {
            self.pos += 1;
        }
        let major = self.take_while(is_wild_or_digit);
        if major.is_empty() {
            self.pos = start;
            return None;
        }
        let mut part = || {
            if self.rest().starts_with('.')
                && self.rest()[1..]
                    .chars()
                    .next()
                    .is_some_and(is_wild_or_digit)
            {
                self.pos += 1;
                Some(self.take_while(is_wild_or_digit))
            } else {
                None
            }
        };
        let minor = part();
        let patch = if minor.is_some() { part() } else { None };
        let mut pre = None;
        if self.rest().starts_with('-') {
            self.pos += 1;
            match self.idents() {
                Some(p) => pre = Some(p),
                None => self.pos -= 1,
            }
        }
        if self.rest().starts_with('+') {
            self.pos += 1;
            if self.idents().is_none() {
                self.pos -= 1;
            }
        }
        Some(Pattern {
            major,
            minor,
            patch,
            pre,
        })
    }
}

fn is_x(s: &str) -> bool {
    matches!(s, "x" | "X" | "*")
}

fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn constraint(op: Op, p: &Pattern<'_>) -> Result<Constraint, String> {
    let parser_error = || "constraint Parser Error".to_string();
    let pre = match p.pre {
        Some(pre) => Prerelease::new(pre).map_err(|_| parser_error())?,
        None => Prerelease::EMPTY,
    };
    let (mut dirty, mut minor_dirty, mut patch_dirty) = (false, false, false);
    let (major, minor, patch);
    if is_x(p.major) {
        dirty = true;
        (major, minor, patch) = (0, 0, 0);
    } else if p.minor.is_some_and(is_x) {
        dirty = true;
        minor_dirty = true;
        (major, minor, patch) = (number(p.major).ok_or_else(parser_error)?, 0, 0);
    } else if p.patch.is_some_and(is_x) {
        dirty = true;
        patch_dirty = true;
        major = number(p.major).ok_or_else(parser_error)?;
        minor = number(p.minor.unwrap_or("0")).ok_or_else(parser_error)?;
        patch = 0;
    } else {
        major = number(p.major).ok_or_else(parser_error)?;
        minor = p.minor.map_or(Some(0), number).ok_or_else(parser_error)?;
        patch = p.patch.map_or(Some(0), number).ok_or_else(parser_error)?;
    }
    let mut con = Version::new(major, minor, patch);
    con.pre = pre;
    Ok(Constraint {
        op,
        con,
        dirty,
        minor_dirty,
        patch_dirty,
    })
}

/// Parses a constraint; the error is Masterminds' (`improper constraint:
/// <segment>`).
pub fn parse_constraints(text: &str) -> Result<Constraints, String> {
    let mut groups = Vec::new();
    for segment in text.split("||") {
        let improper = || format!("improper constraint: {segment}");
        let mut cur = Cursor { s: segment, pos: 0 };
        let mut group = Vec::new();
        loop {
            cur.skip_space();
            let before_op = cur.pos;
            let op = cur.op();
            let has_op = cur.pos != before_op;
            cur.skip_space();
            let pattern = cur.pattern().ok_or_else(improper)?;
            // A hyphen range `a - b` (spaces required around the hyphen).
            let save = cur.pos;
            let mut ranged = false;
            if !has_op && cur.skip_space() > 0 && cur.rest().starts_with('-') {
                cur.pos += 1;
                if cur.skip_space() > 0
                    && let Some(upper) = cur.pattern()
                {
                    group.push(constraint(Op::GreaterEqual, &pattern)?);
                    group.push(constraint(Op::LessEqual, &upper)?);
                    ranged = true;
                }
            }
            if !ranged {
                cur.pos = save;
                group.push(constraint(op, &pattern)?);
            }
            let spaces = cur.skip_space();
            if cur.rest().is_empty() {
                break;
            }
            if cur.rest().starts_with(',') {
                cur.pos += 1;
            } else if spaces == 0 {
                return Err(improper());
            }
        }
        groups.push(group);
    }
    Ok(Constraints { groups })
}

/// Masterminds' ordering: numbers, then pre-release (a version without one
/// is greater); build metadata is ignored.
fn compare(a: &Version, b: &Version) -> Ordering {
    (a.major, a.minor, a.patch)
        .cmp(&(b.major, b.minor, b.patch))
        .then_with(|| a.pre.cmp(&b.pre))
}

impl Constraint {
    fn tilde(&self, v: &Version) -> bool {
        let c = &self.con;
        if compare(v, c) == Ordering::Less {
            return false;
        }
        if c.major == 0 && c.minor == 0 && c.patch == 0 && !self.minor_dirty && !self.patch_dirty {
            return true;
        }
        if v.major != c.major {
            return false;
        }
        v.minor == c.minor || self.minor_dirty
    }

    fn check(&self, v: &Version) -> bool {
        let c = &self.con;
        match self.op {
            Op::Equal => {
                if self.dirty {
                    self.tilde(v)
                } else {
                    compare(v, c) == Ordering::Equal
                }
            }
            Op::NotEqual => {
                if !self.dirty {
                    return compare(v, c) != Ordering::Equal;
                }
                if v.major != c.major {
                    return true;
                }
                if self.minor_dirty {
                    return false;
                }
                if v.minor != c.minor {
                    return true;
                }
                if self.patch_dirty {
                    return false;
                }
                v.patch != c.patch
            }
            Op::Greater => {
                if !self.dirty {
                    return compare(v, c) == Ordering::Greater;
                }
                if v.major != c.major {
                    return v.major > c.major;
                }
                if self.minor_dirty {
                    return false;
                }
                if self.patch_dirty {
                    return v.minor > c.minor;
                }
                compare(v, c) == Ordering::Greater
            }
            Op::Less => compare(v, c) == Ordering::Less,
            Op::GreaterEqual => compare(v, c) != Ordering::Less,
            Op::LessEqual => {
                if !self.dirty {
                    return compare(v, c) != Ordering::Greater;
                }
                if v.major > c.major {
                    return false;
                }
                !(v.major == c.major && v.minor > c.minor && !self.minor_dirty)
            }
            Op::Tilde => self.tilde(v),
            Op::Caret => {
                if compare(v, c) == Ordering::Less {
                    return false;
                }
                if c.major > 0 || self.minor_dirty {
                    return v.major == c.major;
                }
                if v.major > 0 {
                    return false;
                }
                if c.minor > 0 || self.patch_dirty {
                    return v.minor == c.minor;
                }
                if v.minor > 0 {
                    return false;
                }
                c.patch == v.patch
            }
        }
    }
}

impl Constraints {
    /// Whether `v` satisfies the constraint. A pre-release version only
    /// matches an AND group in which some constraint names a pre-release.
    pub fn matches(&self, v: &Version) -> bool {
        self.groups.iter().any(|group| {
            let include_pre = group.iter().any(|c| !c.con.pre.is_empty());
            if !v.pre.is_empty() && !include_pre {
                return false;
            }
            group.iter().all(|c| c.check(v))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        parse_version(s).unwrap()
    }

    fn admits(c: &str, version: &str) -> bool {
        parse_constraints(c).unwrap().matches(&v(version))
    }

    #[test]
    fn accepts_masterminds_syntax() {
        for ok in [
            ">=1.0.0, <2.0.0",
            ">=1.0.0 <2.0.0",
            ">= 1.0.0 , < 2.0.0",
            "1.x",
            "1.*",
            "*",
            "^1.2",
            "~1.2.3",
            "~>1.2",
            "=1.0.0",
            "v1.0.0",
            "1.0.0",
            "!=1.2.3",
            "=>1.0, =<2",
            "1.2 - 1.4.5",
            ">=1.0.0-rc.1",
            "1.0.0+build.5",
            "<1 || >=3",
        ] {
            assert!(parse_constraints(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_with_masterminds_message() {
        assert_eq!(
            parse_constraints(">>bad").unwrap_err(),
            "improper constraint: >>bad"
        );
        for bad in [
            "",
            " ",
            "abc",
            ">=1.0,",
            "1.0,,2.0",
            ">=1.0<2.0",
            "1.2.3.4",
            "1 -2",
            "||",
        ] {
            assert!(parse_constraints(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_constraints(">=1.0 || foo").unwrap_err(),
            "improper constraint:  foo"
        );
    }

    #[test]
    fn matching_semantics() {
        assert!(admits(">=1.0.0, <2.0.0", "1.5.0"));
        assert!(!admits(">=1.0.0, <2.0.0", "2.0.0"));
        assert!(admits("1.x", "1.9.3"));
        assert!(!admits("1.x", "2.0.0"));
        assert!(!admits("1.x", "0.9.0"));
        assert!(admits("1.*", "1.0.0"));
        assert!(admits("*", "7.1.2"));
        assert!(admits("^1.2", "1.9.0"));
        assert!(!admits("^1.2", "2.0.0"));
        assert!(!admits("^1.2", "1.1.0"));
        assert!(admits("^0.2.3", "0.2.9"));
        assert!(!admits("^0.2.3", "0.3.0"));
        assert!(admits("~1.2.3", "1.2.9"));
        assert!(!admits("~1.2.3", "1.3.0"));
        assert!(admits("=1.0.0", "v1.0.0"));
        assert!(admits("1.2 - 1.4.5", "1.4.5"));
        assert!(!admits("1.2 - 1.4.5", "1.4.6"));
        assert!(admits("<1 || >=3", "3.1.0"));
        assert!(!admits("<1 || >=3", "2.0.0"));
        assert!(!admits(">=1.0.0", "1.5.0-rc.1"));
        assert!(admits(">=1.0.0-0", "1.5.0-rc.1"));
        assert!(admits("!=1.2.3", "1.2.4"));
        assert!(!admits("!=1.2.3", "1.2.3"));
        assert!(!admits(">1.x", "1.9.0"));
        assert!(admits(">1.x", "2.0.0"));
        assert!(admits("<=1.x", "1.9.0"));
        assert!(!admits("<=1.x", "2.0.0"));
    }

    #[test]
    fn bare_versions() {
        assert!(is_bare_version("1.0.0"));
        assert!(is_bare_version("v1.0.0"));
        assert!(is_bare_version(" 1.0.0-rc.1 "));
        assert!(!is_bare_version(">=1.0.0"));
        assert!(!is_bare_version("=1.0.0"));
        assert!(!is_bare_version("1.x"));
        assert!(!is_bare_version("1.0"));
    }

    #[test]
    fn versions_parse_like_the_reconciler() {
        assert_eq!(v("v1.2"), Version::new(1, 2, 0));
        assert_eq!(parse_version("two").unwrap_err(), INVALID_SEMVER);
        assert!(parse_version("").is_err());
    }
}
