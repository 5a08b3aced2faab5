//! Label selectors in their string form, as `kubectl get -l` and the
//! `labelSelector` query parameter take them (apimachinery's `labels.Parse`):
//! `key=value`, `key==value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`,
//! `key`, `!key`, and the numeric `key>N` / `key<N`, joined by commas.
//!
//! `--watch-label-selector` (DECISIONS 22) is one: it decides which StageSets
//! an instance reconciles.

use std::collections::BTreeMap;
use std::fmt;

/// One requirement of a selector.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
    GreaterThan(String, i64),
    LessThan(String, i64),
}

impl Requirement {
    fn key(&self) -> &str {
        match self {
            Requirement::Equals(k, _)
            | Requirement::NotEquals(k, _)
            | Requirement::In(k, _)
            | Requirement::NotIn(k, _)
            | Requirement::Exists(k)
            | Requirement::DoesNotExist(k)
            | Requirement::GreaterThan(k, _)
            | Requirement::LessThan(k, _) => k,
        }
    }

    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(self.key());
        match self {
            Requirement::Equals(_, v) => value == Some(v),
            Requirement::NotEquals(_, v) => value != Some(v),
            Requirement::In(_, vs) => value.is_some_and(|l| vs.contains(l)),
            Requirement::NotIn(_, vs) => !value.is_some_and(|l| vs.contains(l)),
            Requirement::Exists(_) => value.is_some(),
            Requirement::DoesNotExist(_) => value.is_none(),
            Requirement::GreaterThan(_, n) => value
                .and_then(|l| l.parse::<i64>().ok())
                .is_some_and(|l| l > *n),
            Requirement::LessThan(_, n) => value
                .and_then(|l| l.parse::<i64>().ok())
                .is_some_and(|l| l < *n),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requirement::Equals(k, v) => write!(f, "{k}={v}"),
            Requirement::NotEquals(k, v) => write!(f, "{k}!={v}"),
            Requirement::In(k, vs) => write!(f, "{k} in ({})", vs.join(",")),
            Requirement::NotIn(k, vs) => write!(f, "{k} notin ({})", vs.join(",")),
            Requirement::Exists(k) => write!(f, "{k}"),
            Requirement::DoesNotExist(k) => write!(f, "!{k}"),
            Requirement::GreaterThan(k, n) => write!(f, "{k}>{n}"),
            Requirement::LessThan(k, n) => write!(f, "{k}<{n}"),
        }
    }
}

/// A parsed label selector. The empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelFilter {
    requirements: Vec<Requirement>,
}

impl LabelFilter {
    /// Parses the string form; errors name the offending part.
    pub fn parse(text: &str) -> Result<LabelFilter, String> {
        let mut requirements = Vec::new();
        for part in split_top_level(text)? {
            let part = part.trim();
            if part.is_empty() {
                if text.trim().is_empty() {
                    continue;
                }
                return Err(format!("{text:?}: empty requirement"));
            }
            requirements.push(requirement(part)?);
        }
        requirements.sort();
        requirements.dedup();
        Ok(LabelFilter { requirements })
    }

    /// Whether the selector has no requirement (matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object with `labels` is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

/// The canonical form: requirements sorted, values sorted, no spaces except
/// around `in`/`notin`. Two spellings of one selector print the same.
impl fmt::Display for LabelFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.requirements.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

impl serde::Serialize for LabelFilter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Splits on commas outside parentheses.
fn split_top_level(text: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => {
                if depth > 0 {
                    return Err(format!("{text:?}: nested parentheses"));
                }
                depth += 1;
            }
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("{text:?}: unbalanced parentheses"))?;
            }
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("{text:?}: unbalanced parentheses"));
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn requirement(part: &str) -> Result<Requirement, String> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(key_of(key.trim(), part)?));
    }
    for (op, words) in [("notin", true), ("in", false)] {
        if let Some((key, rest)) = split_word(part, op) {
            let key = key_of(key, part)?;
            let values = rest
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| format!("{part:?}: expected a parenthesised list after {op:?}"))?;
            let mut values: Vec<String> = values
                .split(',')
                .map(|v| value_of(v.trim(), part))
                .collect::<Result<_, _>>()?;
            if values.iter().all(String::is_empty) {
                return Err(format!("{part:?}: the value set of {op:?} is empty"));
            }
            values.sort();
            values.dedup();
            return Ok(if words {
                Requirement::NotIn(key, values)
            } else {
                Requirement::In(key, values)
            });
        }
    }
    for op in ["!=", "==", "=", ">", "<"] {
        if let Some((key, value)) = part.split_once(op) {
            let key = key_of(key.trim(), part)?;
            let value = value.trim();
            return match op {
                "!=" => Ok(Requirement::NotEquals(key, value_of(value, part)?)),
                "=" | "==" => Ok(Requirement::Equals(key, value_of(value, part)?)),
                _ => {
                    let n = value
                        .parse::<i64>()
                        .map_err(|_| format!("{part:?}: {op} needs an integer, not {value:?}"))?;
                    Ok(if op == ">" {
                        Requirement::GreaterThan(key, n)
                    } else {
                        Requirement::LessThan(key, n)
                    })
                }
            };
        }
    }
    Ok(Requirement::Exists(key_of(part, part)?))
}

/// `key <word> rest` with whitespace around the word.
fn split_word<'a>(part: &'a str, word: &str) -> Option<(&'a str, &'a str)> {
    let mut fields = part.splitn(2, char::is_whitespace);
    let key = fields.next()?;
    let rest = fields.next()?.trim_start();
    let after = rest.strip_prefix(word)?;
    (after.starts_with(char::is_whitespace) || after.starts_with('(')).then_some((key, after))
}

fn name_part_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn prefix_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at
/// most 63 characters.
fn key_of(key: &str, part: &str) -> Result<String, String> {
    let ok = match key.split_once('/') {
        Some((prefix, name)) => prefix_ok(prefix) && name_part_ok(name),
        None => name_part_ok(key),
    };
    if ok {
        Ok(key.to_string())
    } else {
        Err(format!("{part:?}: {key:?} is not a valid label key"))
    }
}

/// A label value: empty, or at most 63 characters of the name alphabet.
fn value_of(value: &str, part: &str) -> Result<String, String> {
    if value.is_empty() || name_part_ok(value) {
        Ok(value.to_string())
    } else {
        Err(format!("{part:?}: {value:?} is not a valid label value"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_operator_selects_as_apimachinery_does() {
        let shard1 = labels(&[("sharding.fluxcd.io/key", "shard1"), ("tier", "3")]);
        let unlabelled = labels(&[]);
        let cases: &[(&str, bool, bool)] = &[
            ("", true, true),
            ("sharding.fluxcd.io/key=shard1", true, false),
            ("sharding.fluxcd.io/key==shard1", true, false),
            ("sharding.fluxcd.io/key!=shard1", false, true),
            ("sharding.fluxcd.io/key in (shard1, shard2)", true, false),
            ("sharding.fluxcd.io/key notin (shard1,shard2)", false, true),
            ("sharding.fluxcd.io/key", true, false),
            ("!sharding.fluxcd.io/key", false, true),
            ("tier>2", true, false),
            ("tier<3", false, false),
            ("sharding.fluxcd.io/key=shard1,tier", true, false),
        ];
        for (text, on_shard1, on_unlabelled) in cases {
            let f = LabelFilter::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(f.matches(&shard1), *on_shard1, "{text} on shard1");
            assert_eq!(f.matches(&unlabelled), *on_unlabelled, "{text} unlabelled");
        }
    }

    #[test]
    fn canonical_form_ignores_spelling() {
        let a = LabelFilter::parse("b in (y, x), a=1").unwrap();
        let b = LabelFilter::parse("a==1,b in (x,y)").unwrap();
        assert_eq!(a.to_string(), b.to_string());
        assert_eq!(a.to_string(), "a=1,b in (x,y)");
    }

    #[test]
    fn bad_selectors_are_refused_with_the_part() {
        for (text, needle) in [
            ("a=1,", "empty requirement"),
            ("a in ()", "value set"),
            ("a in (x", "unbalanced"),
            ("-a=1", "not a valid label key"),
            ("a=b c", "not a valid label value"),
            ("a>x", "needs an integer"),
            ("Example.com/a=1", "not a valid label key"),
        ] {
            let err = LabelFilter::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
