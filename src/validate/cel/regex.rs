//! The estimated work of a regular expression for the cost model: what the
//! regex crate spends compiling a pattern (cel compiles it on every
//! `matches()` call) and the NFA size that matching scales with, read from
//! the pattern's structure.

use super::cost::CLASS_STATES;

/// The estimated work of a regular expression: compiling it (cel compiles
/// the pattern on every call) and the NFA size matching scales with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct RegexWeight {
    pub(super) compile: u64,
    pub(super) states: u64,
}

impl RegexWeight {
    const LITERAL: RegexWeight = RegexWeight {
        compile: 20,
        states: 1,
    };
    /// `.`, `\s`, a bracket class: a few hundred bytes of UTF-8 automaton.
    const CLASS: RegexWeight = RegexWeight {
        compile: 300,
        states: CLASS_STATES,
    };
    /// `\d`: the Unicode digits.
    const DIGIT: RegexWeight = RegexWeight {
        compile: 1_000,
        states: CLASS_STATES,
    };
    /// `\w`, `\pL`, …: large Unicode tables (about 0.3 ms each to compile).
    const UNICODE: RegexWeight = RegexWeight {
        compile: 20_000,
        states: CLASS_STATES,
    };

    fn add(self, o: RegexWeight) -> RegexWeight {
        RegexWeight {
            compile: self.compile.saturating_add(o.compile),
            states: self.states.saturating_add(o.states),
        }
    }

    fn times(self, n: u64) -> RegexWeight {
        RegexWeight {
            compile: self.compile.saturating_mul(n),
            states: self.states.saturating_mul(n),
        }
    }
}

/// Estimates a literal pattern's [`RegexWeight`] from its structure:
/// concatenation and alternation add, a group weighs its contents, counted
/// repetitions (`{n}`, `{n,}`, `{n,m}`) multiply what they repeat by their
/// largest count, `*`/`+`/`?` double it, classes and Unicode escapes weigh
/// what the regex crate compiles them to, and case-insensitivity makes every
/// literal a class. Anything unrecognised counts as a literal character
/// (patterns the crate rejects fail fast anyway).
pub(super) fn regex_weight(pattern: &str) -> RegexWeight {
    #[derive(Default)]
    struct Frame {
        alternatives: RegexWeight,
        current: RegexWeight,
        last: RegexWeight,
    }
    let literal = if case_insensitive(pattern) {
        RegexWeight::CLASS
    } else {
        RegexWeight::LITERAL
    };
    let mut stack = vec![Frame::default()];
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        let atom = match c {
            '\\' => regex_escape(&mut chars),
            '[' => regex_class(&mut chars),
            '.' => RegexWeight::CLASS,
            '(' => {
                if chars.peek() == Some(&'?') {
                    // flags `(?i)`, `(?i:…)`, names `(?P<n>…)`, `(?<n>…)`
                    let mut rest = chars.clone();
                    let flags_only = loop {
                        match rest.next() {
                            Some(')') => break true,
                            Some(':' | '>') | None => break false,
                            Some(_) => {}
                        }
                    };
                    if flags_only {
                        chars = rest;
                        continue;
                    }
                }
                stack.push(Frame::default());
                continue;
            }
            ')' if stack.len() > 1 => {
                let group = stack.pop().unwrap_or_default();
                group.alternatives.add(group.current)
            }
            '|' => {
                if let Some(top) = stack.last_mut() {
                    top.alternatives = top.alternatives.add(top.current);
                    top.current = RegexWeight::default();
                    top.last = RegexWeight::default();
                }
                continue;
            }
            '*' | '+' | '?' => {
                if let Some(top) = stack.last_mut() {
                    top.current = top.current.add(top.last);
                    top.last = top.last.times(2);
                }
                continue;
            }
            '{' => match regex_repetition(&chars) {
                Some((count, rest)) => {
                    chars = rest;
                    if let Some(top) = stack.last_mut() {
                        top.current = top.current.add(top.last.times(count.saturating_sub(1)));
                        top.last = top.last.times(count);
                    }
                    continue;
                }
                None => literal,
            },
            _ => literal,
        };
        if let Some(top) = stack.last_mut() {
            top.current = top.current.add(atom);
            top.last = atom;
        }
    }
    stack.into_iter().fold(RegexWeight::default(), |w, f| {
        w.add(f.alternatives).add(f.current)
    })
}

/// Whether any flag group of the pattern turns on `i`.
fn case_insensitive(pattern: &str) -> bool {
    pattern.match_indices("(?").any(|(at, _)| {
        pattern[at + 2..]
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .any(|c| c == 'i')
    })
}

type PatternChars<'p> = std::iter::Peekable<std::str::Chars<'p>>;

/// The weight of the escape after a `\`, consuming it.
fn regex_escape(chars: &mut PatternChars<'_>) -> RegexWeight {
    match chars.next() {
        Some('w' | 'W') => RegexWeight::UNICODE,
        Some('p' | 'P') => {
            // `\pL` or `\p{Greek}`
            if chars.next() == Some('{') {
                for c in chars.by_ref() {
                    if c == '}' {
                        break;
                    }
                }
            }
            RegexWeight::UNICODE
        }
        Some('d' | 'D') => RegexWeight::DIGIT,
        Some('s' | 'S') => RegexWeight::CLASS,
        _ => RegexWeight::LITERAL,
    }
}

/// The weight of a bracket class after its `[`, consuming it: a class, plus
/// the Unicode classes it contains.
fn regex_class(chars: &mut PatternChars<'_>) -> RegexWeight {
    let mut weight = RegexWeight::CLASS;
    chars.next_if_eq(&'^');
    chars.next_if_eq(&']');
    let mut depth = 1u32;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let inner = regex_escape(chars);
                if inner != RegexWeight::LITERAL {
                    weight = weight.add(inner);
                }
            }
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            _ => {}
        }
    }
    weight
}

/// `{n}`, `{n,}` or `{n,m}` after a `{`: the largest count and the
/// characters after it; `None` when it is a literal brace.
fn regex_repetition<'p>(chars: &PatternChars<'p>) -> Option<(u64, PatternChars<'p>)> {
    let mut rest = chars.clone();
    let mut body = String::new();
    loop {
        match rest.next()? {
            '}' => break,
            c if c.is_ascii_digit() || c == ',' || c == ' ' => body.push(c),
            _ => return None,
        }
    }
    let (min, max) = match body.split_once(',') {
        Some((min, max)) => (min.trim(), Some(max.trim())),
        None => (body.trim(), None),
    };
    let min: u64 = min.parse().ok()?;
    let count = match max {
        None => min,
        Some("") => min.saturating_add(1),
        Some(max) => max.parse::<u64>().ok()?.max(min),
    };
    Some((count.max(1), rest))
}
