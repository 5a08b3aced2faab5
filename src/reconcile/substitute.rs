//! Post-build variable substitution (delivery.md §2.3 step 7 and §2.3.4,
//! api.md §2.5.3): Flux kustomize-controller's `postBuild` semantics, the
//! `envsubst` dialect of `github.com/fluxcd/pkg/envsubst` (a fork of
//! `drone/envsubst`), re-implemented here.
//!
//! # Variables
//!
//! [`resolve_vars`] merges the fetched `substituteFrom` objects and the inline
//! `substitute` map into one [`Vars`]: every `substituteFrom[]` entry in list
//! order (a later entry overrides an earlier one), then the inline map, which
//! overrides everything. As in Flux every `\n` is removed from every value, and
//! every variable name must match `^[_[:alpha:]][_[:alpha:][:digit:]]*$`.
//!
//! # Syntax
//!
//! Only `${…}` is an expression; `$name` without braces is plain text. `$$` is
//! a literal `$` (so `$${X}` renders `${X}`). The operators:
//!
//! | Expression | Result |
//! |---|---|
//! | `${v}` | the value of `v` |
//! | `${v:-w}` `${v:=w}` | `v` when set and non-empty, else `w` |
//! | `${v-w}` `${v=w}` | `v` when set (even empty), else `w` |
//! | `${#v}` | length of `v` in characters |
//! | `${v^}` `${v^^}` | upper-case the first / every character |
//! | `${v,}` `${v,,}` | lower-case the first / every character |
//! | `${v:o}` `${v:o:l}` | substring from character `o` (negative: from the end; `${v: -2}`), at most `l` characters (negative: up to `l` from the end) |
//! | `${v#p}` `${v##p}` | remove the shortest / longest prefix matching glob `p` |
//! | `${v%p}` `${v%%p}` | remove the shortest / longest suffix matching glob `p` |
//! | `${v/p/r}` `${v//p/r}` | replace the first / every occurrence of the text `p` by `r` |
//! | `${v/#p/r}` `${v/%p/r}` | replace `p` by `r` when `v` starts / ends with it |
//!
//! The word `w`, `o`, `l`, `p` and `r` may contain further `${…}` expressions
//! (`${A:-${B}}`). A default word is evaluated only when it is used. In a
//! replace pattern or replacement `\/` is a `/`, `\\` a `\` and `$$` a `$`.
//! Globs: `*` is any run of characters (including `/`), `?` one character,
//! `[…]` a class (`[^…]`/`[!…]` negated, `a-z` ranges), `\c` the character `c`;
//! a malformed glob matches nothing. `:=`/`=` do not assign (Flux does not).
//! `${v:+w}`, `${v+w}`, `${v:?w}` and `${v?w}` are refused as unsupported.
//!
//! **Strict mode**: an expression whose variable is not in the map is an error
//! (`variable not set (strict mode): "V"`) unless its operator supplies a
//! default (`:-`, `-`, `:=`, `=`); otherwise it reads as the empty string.
//!
//! Where this deliberately differs from `fluxcd/pkg/envsubst`: `${v-w}` is
//! accepted (Flux reports a missing `}`), and `${v=w}` keeps a set-but-empty
//! `v` (Flux substitutes `w`, like `:=`), both as in bash, whose operators the
//! spec names; Flux parses `:+`/`:?` but evaluates them like `:-`, so they are
//! refused rather than silently mis-evaluated; lengths and offsets count
//! characters, not bytes; `${v: -2}` counts from the end (Flux returns `v`); a
//! default is evaluated only when used (Flux evaluates it first, so an unused
//! default could fail strict mode); `${v/p}` (no replacement) and `${v#}` (empty
//! pattern) are accepted where Flux reports a syntax error. Expressions nest at
//! most 32 deep and one substitution produces at most [`MAX_OUTPUT`] bytes.
//!
//! # Objects
//!
//! [`substitute_objects`] serialises each rendered object to YAML, substitutes
//! the text and parses it back, so `replicas: ${REPLICAS}` becomes an integer
//! and `enabled: ${ON}` a boolean, as in Flux. Per delivery.md §2.3 there is no
//! per-object opt-out: `kustomize.toolkit.fluxcd.io/substitute: disabled` is
//! not honoured. Substitution only runs when the variable map is non-empty.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::api::SubstituteKind;

/// The pattern every variable name must match (Flux's `varsubRegex`).
const VAR_NAME_PATTERN: &str = "^[_[:alpha:]][_[:alpha:][:digit:]]*$";

/// The most bytes one substitution may produce. Far above what the API server
/// accepts for one object (about 3 MiB per request), it only stops a template
/// such as `${BIG//a/${BIG}}` from exhausting the controller's memory.
pub const MAX_OUTPUT: usize = 16 << 20;

/// How deeply `${…}` expressions may nest inside each other's words.
const MAX_NESTING: usize = 32;

/// Why variables could not be resolved or substituted. Messages are meant to
/// be shown as-is in stage status. They quote template text and variable
/// names, never a variable's value, except that the YAML parser's message in
/// [`SubstError::InvalidYaml`] may quote the substituted text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubstError {
    /// Strict mode: `${name}` (or a transforming operator on it) with `name`
    /// not in the variable map.
    #[error("variable not set (strict mode): {name:?}")]
    Unset { name: String },

    /// A `${` whose closing `}` never comes. `offset` is the byte offset of
    /// the `$` in the substituted text.
    #[error("unterminated ${{ at byte {offset}: {excerpt:?}")]
    Unterminated { offset: usize, excerpt: String },

    /// A malformed `${…}` expression.
    #[error("bad substitution at byte {offset}: {reason}: {excerpt:?}")]
    Syntax {
        offset: usize,
        reason: String,
        excerpt: String,
    },

    /// The result would exceed [`MAX_OUTPUT`] bytes.
    #[error("substitution result exceeds {limit} bytes")]
    TooLarge { limit: usize },

    /// A variable name that Flux would refuse. `origin` says where it came
    /// from (`ConfigMap/<name>`, `Secret/<name>` or `postBuild.substitute`).
    #[error("{origin}: {name:?} var name is invalid, must match '{pattern}'", pattern = VAR_NAME_PATTERN)]
    InvalidVarName { name: String, origin: String },

    /// A Secret data value that is not base64 or not UTF-8 once decoded.
    #[error("Secret/{secret}: data key {key:?}: {reason}")]
    SecretData {
        secret: String,
        key: String,
        reason: String,
    },

    /// Substitution failed inside one object (`Kind/namespace/name`).
    #[error("object {object}: {source}")]
    InObject {
        object: String,
        source: Box<SubstError>,
    },

    /// The substituted text of an object no longer parses as one YAML
    /// mapping.
    #[error("object {object} is not valid YAML after substitution: {message}")]
    InvalidYaml { object: String, message: String },
}

/// The final variable map of a stage. Every name is valid; values have no
/// `\n`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vars(BTreeMap<String, String>);

impl Vars {
    /// Validates the names (Flux's pattern) and strips `\n` from the values.
    /// `origin` names where the map came from, for the error message.
    pub fn new(map: BTreeMap<String, String>, origin: &str) -> Result<Self, SubstError> {
        let mut vars = Vars::default();
        vars.extend(map, origin)?;
        Ok(vars)
    }

    fn extend(
        &mut self,
        entries: impl IntoIterator<Item = (String, String)>,
        origin: &str,
    ) -> Result<(), SubstError> {
        for (name, value) in entries {
            if !valid_var_name(&name) {
                return Err(SubstError::InvalidVarName {
                    name,
                    origin: origin.to_owned(),
                });
            }
            self.0.insert(name, value.replace('\n', ""));
        }
        Ok(())
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// No variables: the pipeline skips substitution entirely.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The variables, sorted by name.
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// The substitution fingerprint kept as `substitutionDigest` in the
    /// rollback snapshot (delivery.md §5.6.2): SHA-256 hex over the sorted
    /// lines `"<len(k)>:<k>=<len(v)>:<v>\n"` (lengths in bytes); the empty
    /// map gives the empty string.
    pub fn digest(&self) -> String {
        if self.0.is_empty() {
            return String::new();
        }
        let mut hasher = Sha256::new();
        for (k, v) in &self.0 {
            hasher.update(format!("{}:{k}={}:{v}\n", k.len(), v.len()).as_bytes());
        }
        hasher.finalize().iter().fold(String::new(), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        })
    }
}

/// One fetched `substituteFrom[]` object. Fetching it (as the tenant) and
/// skipping an `optional: true` entry that is NotFound is the caller's job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarSource {
    /// `ConfigMap` or `Secret`.
    pub kind: SubstituteKind,
    /// The object's name, for error messages.
    pub name: String,
    /// The object's `.data` exactly as the API returns it: plain strings for
    /// a ConfigMap (its `binaryData` is not used), base64 for a Secret.
    pub data: BTreeMap<String, String>,
}

/// Merges the variables of a stage (delivery.md §2.3.4). Precedence: each
/// `substituteFrom[]` entry in list order, a later entry overriding an earlier
/// one; then the inline `postBuild.substitute` map overrides everything.
/// Secret values are base64-decoded and must be UTF-8. Every `\n` is removed
/// from every value, and every name must match
/// `^[_[:alpha:]][_[:alpha:][:digit:]]*$` (both as in Flux).
pub fn resolve_vars(
    sources: &[VarSource],
    inline: Option<&BTreeMap<String, String>>,
) -> Result<Vars, SubstError> {
    let mut vars = Vars::default();
    for source in sources {
        match source.kind {
            SubstituteKind::ConfigMap => {
                vars.extend(source.data.clone(), &format!("ConfigMap/{}", source.name))?
            }
            SubstituteKind::Secret => {
                let mut decoded = Vec::with_capacity(source.data.len());
                for (key, encoded) in &source.data {
                    let secret_err = |reason: String| SubstError::SecretData {
                        secret: source.name.clone(),
                        key: key.clone(),
                        reason,
                    };
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(encoded.trim())
                        .map_err(|err| secret_err(format!("value is not valid base64: {err}")))?;
                    let value = String::from_utf8(bytes)
                        .map_err(|_| secret_err("value is not valid UTF-8".to_owned()))?;
                    decoded.push((key.clone(), value));
                }
                vars.extend(decoded, &format!("Secret/{}", source.name))?;
            }
        }
    }
    if let Some(inline) = inline {
        vars.extend(inline.clone(), "postBuild.substitute")?;
    }
    Ok(vars)
}

/// Substitutes every `${…}` expression of `input` (see the module docs). The
/// whole input is parsed first, so a syntax error is reported even where no
/// variable would be read. `strict` makes a missing variable without a default
/// an error instead of the empty string.
pub fn substitute_str(input: &str, vars: &Vars, strict: bool) -> Result<String, SubstError> {
    let word = Parser {
        src: input,
        pos: 0,
        depth: 0,
    }
    .parse_top()?;
    let mut out = String::with_capacity(input.len());
    Eval { vars, strict }.word(&word, &mut out)?;
    Ok(out)
}

/// Substitutes the variables in every rendered object, each on its own YAML
/// serialisation, and parses the result back (so a substituted number or
/// boolean gets its YAML type). Objects whose text has no `$` are returned
/// untouched. With an empty `vars` nothing is substituted at all (not even
/// `$$`), per delivery.md §2.3 step 7. Errors name the object.
pub fn substitute_objects(
    objects: Vec<Value>,
    vars: &Vars,
    strict: bool,
) -> Result<Vec<Value>, SubstError> {
    if vars.is_empty() {
        return Ok(objects);
    }
    objects
        .into_iter()
        .map(|object| substitute_object(object, vars, strict))
        .collect()
}

fn substitute_object(object: Value, vars: &Vars, strict: bool) -> Result<Value, SubstError> {
    let text = serde_yaml_ng::to_string(&object).map_err(|err| SubstError::InvalidYaml {
        object: object_id(&object),
        message: format!("cannot serialise the object: {err}"),
    })?;
    if !text.contains('$') {
        return Ok(object);
    }
    let output = substitute_str(&text, vars, strict).map_err(|err| SubstError::InObject {
        object: object_id(&object),
        source: Box::new(err),
    })?;
    if output == text {
        return Ok(object);
    }
    let invalid = |message: String| SubstError::InvalidYaml {
        object: object_id(&object),
        message,
    };
    // Substituted values may carry anchors and aliases: refuse a bomb
    // before the parser expands it.
    kustomize::check_aliases(output.as_bytes()).map_err(invalid)?;
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&output).map_err(|err| {
        let message = err.to_string();
        invalid(match err.location() {
            Some(loc) if !message.contains(" line ") => {
                format!("{message} at line {} column {}", loc.line(), loc.column())
            }
            _ => message,
        })
    })?;
    match crate::reconcile::build::yaml_to_json(yaml).map_err(invalid)? {
        value @ Value::Object(_) => Ok(value),
        other => Err(invalid(format!(
            "the document is no longer a mapping but {}",
            match other {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                Value::String(_) => "a string",
                Value::Array(_) => "a sequence",
                Value::Object(_) => "a mapping",
            }
        ))),
    }
}

/// `Kind/namespace/name`, or `Kind/name` without a namespace.
fn object_id(object: &Value) -> String {
    let field = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_owned();
    let kind = field(object.get("kind"));
    let meta = object.get("metadata");
    let name = field(meta.and_then(|m| m.get("name")));
    match meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
    {
        Some(ns) if !ns.is_empty() => format!("{kind}/{ns}/{name}"),
        _ => format!("{kind}/{name}"),
    }
}

fn valid_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

// ---------------------------------------------------------------------------
// Parsing

/// A sequence of literal text and expressions.
type Word = Vec<Part>;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Expr(Expr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Expr {
    name: String,
    op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    /// `${v}`
    Plain,
    /// `${#v}`
    Length,
    /// `${v:-w}` / `${v:=w}` (`colon`), `${v-w}` / `${v=w}`.
    Default { colon: bool, word: Word },
    /// `${v:o}` / `${v:o:l}`
    Substr { offset: Word, length: Option<Word> },
    /// `${v^}` `${v^^}` `${v,}` `${v,,}`; any other mix of `^`/`,` leaves the
    /// value unchanged, as in Flux.
    Case { upper: bool, all: bool, mixed: bool },
    /// `${v#p}` `${v##p}` `${v%p}` `${v%%p}`
    Remove {
        suffix: bool,
        longest: bool,
        pattern: Word,
    },
    /// `${v/p/r}` `${v//p/r}` `${v/#p/r}` `${v/%p/r}`
    Replace {
        mode: ReplaceMode,
        pattern: Word,
        replacement: Word,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplaceMode {
    First,
    All,
    Prefix,
    Suffix,
}

/// Where a word ends and which escapes apply inside it.
#[derive(Clone, Copy)]
struct WordEnd {
    /// Characters that end the word (not consumed).
    stops: &'static [char],
    /// `$$` → `$`, `\/` → `/`, `\\` → `\` (replace arguments).
    escapes: bool,
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    /// How many `${` the cursor is inside.
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn peek_second(&self) -> Option<char> {
        self.src[self.pos..].chars().nth(1)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    /// Up to 40 characters of the source from `start`, for error messages.
    fn excerpt(&self, start: usize) -> String {
        let rest = &self.src[start..];
        let end = rest.char_indices().nth(40).map_or(rest.len(), |(i, _)| i);
        let line_end = rest[..end].find('\n').unwrap_or(end);
        rest[..line_end].to_owned()
    }

    fn unterminated(&self, start: usize) -> SubstError {
        SubstError::Unterminated {
            offset: start,
            excerpt: self.excerpt(start),
        }
    }

    fn syntax(&self, start: usize, reason: impl Into<String>) -> SubstError {
        SubstError::Syntax {
            offset: start,
            reason: reason.into(),
            excerpt: self.excerpt(start),
        }
    }

    /// The whole input: text, `$$` escapes and expressions.
    fn parse_top(mut self) -> Result<Word, SubstError> {
        let mut word = Word::new();
        let mut text = String::new();
        while let Some(c) = self.peek() {
            if c == '$' {
                match self.peek_second() {
                    Some('$') => {
                        self.pos += 2;
                        text.push('$');
                        continue;
                    }
                    Some('{') => {
                        if !text.is_empty() {
                            word.push(Part::Text(std::mem::take(&mut text)));
                        }
                        word.push(Part::Expr(self.parse_expr()?));
                        continue;
                    }
                    _ => {}
                }
            }
            text.push(c);
            self.pos += c.len_utf8();
        }
        if !text.is_empty() {
            word.push(Part::Text(text));
        }
        Ok(word)
    }

    /// A word inside an expression that started at `start`, up to (not
    /// including) one of `end.stops` or the closing `}`.
    fn parse_word(&mut self, start: usize, end: WordEnd) -> Result<Word, SubstError> {
        let mut word = Word::new();
        let mut text = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.unterminated(start));
            };
            if c == '}' || end.stops.contains(&c) {
                break;
            }
            let next = self.peek_second();
            if c == '$' && next == Some('{') {
                if !text.is_empty() {
                    word.push(Part::Text(std::mem::take(&mut text)));
                }
                word.push(Part::Expr(self.parse_expr()?));
                continue;
            }
            if end.escapes
                && ((c == '$' && next == Some('$'))
                    || (c == '\\' && matches!(next, Some('/') | Some('\\'))))
            {
                self.pos += 1;
                text.push(self.bump().unwrap_or_default());
                continue;
            }
            text.push(c);
            self.pos += c.len_utf8();
        }
        if !text.is_empty() {
            word.push(Part::Text(text));
        }
        Ok(word)
    }

    fn close(&mut self, start: usize) -> Result<(), SubstError> {
        match self.peek() {
            None => Err(self.unterminated(start)),
            Some('}') => {
                self.pos += 1;
                Ok(())
            }
            Some(c) => Err(self.syntax(start, format!("expected '}}' but found {c:?}"))),
        }
    }

    /// `${…}`, with the cursor on the `$`.
    fn parse_expr(&mut self) -> Result<Expr, SubstError> {
        let start = self.pos;
        if self.depth >= MAX_NESTING {
            return Err(self.syntax(
                start,
                format!("expressions nested more than {MAX_NESTING} deep"),
            ));
        }
        self.depth += 1;
        let expr = self.parse_expr_inner(start);
        self.depth -= 1;
        expr
    }

    fn parse_expr_inner(&mut self, start: usize) -> Result<Expr, SubstError> {
        self.pos += 2; // "${"
        let length = self.eat('#');
        let name_start = self.pos;
        while matches!(self.peek(), Some(c) if c == '_' || c.is_alphanumeric()) {
            self.bump();
        }
        let name = self.src[name_start..self.pos].to_owned();
        if name.is_empty() {
            return Err(match self.peek() {
                None => self.unterminated(start),
                Some(_) => self.syntax(start, "unable to parse variable name"),
            });
        }
        if length {
            self.close(start)?;
            return Ok(Expr {
                name,
                op: Op::Length,
            });
        }
        const DEFAULT: WordEnd = WordEnd {
            stops: &[],
            escapes: false,
        };
        let op = match self.peek() {
            None => return Err(self.unterminated(start)),
            Some('}') => Op::Plain,
            Some(':') => {
                self.bump();
                match self.peek() {
                    Some('-' | '=') => {
                        self.bump();
                        Op::Default {
                            colon: true,
                            word: self.parse_word(start, DEFAULT)?,
                        }
                    }
                    Some(c @ ('+' | '?')) => {
                        return Err(self.syntax(start, format!("unsupported operator \":{c}\"")));
                    }
                    _ => {
                        let offset_end = WordEnd {
                            stops: &[':'],
                            escapes: false,
                        };
                        let offset = self.parse_word(start, offset_end)?;
                        if offset.is_empty() {
                            return Err(self.syntax(start, "missing substring offset"));
                        }
                        let length = if self.eat(':') {
                            Some(self.parse_word(start, DEFAULT)?)
                        } else {
                            None
                        };
                        Op::Substr { offset, length }
                    }
                }
            }
            Some('-' | '=') => {
                self.bump();
                Op::Default {
                    colon: false,
                    word: self.parse_word(start, DEFAULT)?,
                }
            }
            Some(c @ ('+' | '?')) => {
                return Err(self.syntax(start, format!("unsupported operator \"{c}\"")));
            }
            Some(c @ ('^' | ',')) => {
                self.bump();
                let second = match self.peek() {
                    Some(d @ ('^' | ',')) => {
                        self.bump();
                        Some(d)
                    }
                    _ => None,
                };
                Op::Case {
                    upper: c == '^',
                    all: second.is_some(),
                    mixed: second.is_some_and(|d| d != c),
                }
            }
            Some(c @ ('#' | '%')) => {
                self.bump();
                let longest = self.eat(c);
                Op::Remove {
                    suffix: c == '%',
                    longest,
                    pattern: self.parse_word(start, DEFAULT)?,
                }
            }
            Some('/') => {
                self.bump();
                let mode = match self.peek() {
                    Some('/') => ReplaceMode::All,
                    Some('#') => ReplaceMode::Prefix,
                    Some('%') => ReplaceMode::Suffix,
                    _ => ReplaceMode::First,
                };
                if mode != ReplaceMode::First {
                    self.bump();
                }
                const PATTERN: WordEnd = WordEnd {
                    stops: &['/'],
                    escapes: true,
                };
                const REPLACEMENT: WordEnd = WordEnd {
                    stops: &[],
                    escapes: true,
                };
                let pattern = self.parse_word(start, PATTERN)?;
                let replacement = if self.eat('/') {
                    self.parse_word(start, REPLACEMENT)?
                } else {
                    Word::new()
                };
                Op::Replace {
                    mode,
                    pattern,
                    replacement,
                }
            }
            Some(c) => {
                return Err(self.syntax(
                    start,
                    format!("unexpected {c:?} after variable name {name:?}"),
                ));
            }
        };
        self.close(start)?;
        Ok(Expr { name, op })
    }
}

// ---------------------------------------------------------------------------
// Evaluation

struct Eval<'a> {
    vars: &'a Vars,
    strict: bool,
}

impl Eval<'_> {
    fn word(&self, word: &Word, out: &mut String) -> Result<(), SubstError> {
        for part in word {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Expr(expr) => self.expr(expr, out)?,
            }
        }
        Ok(())
    }

    fn word_string(&self, word: &Word) -> Result<String, SubstError> {
        let mut out = String::new();
        self.word(word, &mut out)?;
        Ok(out)
    }

    fn expr(&self, expr: &Expr, out: &mut String) -> Result<(), SubstError> {
        let value = self.vars.get(&expr.name);
        if let Op::Default { colon, word } = &expr.op {
            match value {
                Some(v) if !(*colon && v.is_empty()) => out.push_str(v),
                _ => self.word(word, out)?,
            }
            if out.len() > MAX_OUTPUT {
                return Err(SubstError::TooLarge { limit: MAX_OUTPUT });
            }
            return Ok(());
        }
        let value = match value {
            Some(v) => v,
            None if self.strict => {
                return Err(SubstError::Unset {
                    name: expr.name.clone(),
                });
            }
            None => "",
        };
        match &expr.op {
            Op::Plain => out.push_str(value),
            Op::Default { .. } => unreachable!("handled above"),
            Op::Length => {
                let _ = write!(out, "{}", value.chars().count());
            }
            Op::Case { upper, all, mixed } => {
                if *mixed {
                    out.push_str(value);
                } else {
                    out.push_str(&change_case(value, *upper, *all));
                }
            }
            Op::Substr { offset, length } => {
                let offset = self.word_string(offset)?;
                let length = length.as_ref().map(|l| self.word_string(l)).transpose()?;
                out.push_str(&substring(value, &offset, length.as_deref()));
            }
            Op::Remove {
                suffix,
                longest,
                pattern,
            } => {
                let pattern = self.word_string(pattern)?;
                out.push_str(&remove_match(value, &pattern, *suffix, *longest));
            }
            Op::Replace {
                mode,
                pattern,
                replacement,
            } => {
                let pattern = self.word_string(pattern)?;
                let replacement = self.word_string(replacement)?;
                out.push_str(&replace(value, *mode, &pattern, &replacement)?);
            }
        }
        if out.len() > MAX_OUTPUT {
            return Err(SubstError::TooLarge { limit: MAX_OUTPUT });
        }
        Ok(())
    }
}

fn change_case(value: &str, upper: bool, all: bool) -> String {
    let convert = |s: &str| {
        if upper {
            s.to_uppercase()
        } else {
            s.to_lowercase()
        }
    };
    if all {
        return convert(value);
    }
    match value.chars().next() {
        Some(first) => {
            let n = first.len_utf8();
            convert(&value[..n]) + &value[n..]
        }
        None => String::new(),
    }
}

/// `${v:offset:length}` over characters. An offset or length that is not an
/// integer leaves the value unchanged (as in Flux).
fn substring(value: &str, offset: &str, length: Option<&str>) -> String {
    let chars: Vec<char> = value.chars().collect();
    let n = chars.len() as i64;
    let Ok(mut pos) = offset.trim().parse::<i64>() else {
        return value.to_owned();
    };
    if pos < 0 {
        pos = (n + pos).max(0);
    }
    let end = match length {
        None => n,
        Some(length) => {
            let Ok(length) = length.trim().parse::<i64>() else {
                return value.to_owned();
            };
            if length < 0 {
                n + length
            } else {
                pos.saturating_add(length).min(n)
            }
        }
    };
    if pos >= n || end <= pos {
        return String::new();
    }
    chars[pos as usize..end as usize].iter().collect()
}

/// `#`, `##`, `%`, `%%`: remove the shortest or longest prefix or suffix that
/// matches the glob `pattern`. A malformed glob matches nothing.
fn remove_match(value: &str, pattern: &str, suffix: bool, longest: bool) -> String {
    let Some(mut glob) = compile_glob(pattern) else {
        return value.to_owned();
    };
    let mut chars: Vec<char> = value.chars().collect();
    if suffix {
        // A suffix of the value matches the glob exactly when the reversed
        // suffix (a prefix of the reversed value) matches the reversed glob.
        glob.reverse();
        chars.reverse();
    }
    let matches = prefix_matches(&glob, &chars);
    let n = chars.len();
    let found = if longest {
        (1..=n).rev().find(|&k| matches[k])
    } else {
        (1..=n).find(|&k| matches[k])
    };
    let Some(k) = found else {
        return value.to_owned();
    };
    let mut rest: Vec<char> = chars[k..].to_vec();
    if suffix {
        rest.reverse();
    }
    rest.into_iter().collect()
}

/// `/`, `//`, `/#`, `/%` with a literal pattern (Flux does not glob here). An
/// empty pattern inserts nothing for `/` and `//`, and prepends or appends the
/// replacement for `/#` and `/%`.
fn replace(
    value: &str,
    mode: ReplaceMode,
    pattern: &str,
    replacement: &str,
) -> Result<String, SubstError> {
    Ok(match mode {
        ReplaceMode::First | ReplaceMode::All if pattern.is_empty() => value.to_owned(),
        ReplaceMode::First => value.replacen(pattern, replacement, 1),
        ReplaceMode::All => {
            let grows = replacement.len().saturating_sub(pattern.len());
            let projected = value
                .len()
                .saturating_add(value.matches(pattern).count().saturating_mul(grows));
            if projected > MAX_OUTPUT {
                return Err(SubstError::TooLarge { limit: MAX_OUTPUT });
            }
            value.replace(pattern, replacement)
        }
        ReplaceMode::Prefix => match value.strip_prefix(pattern) {
            Some(rest) => format!("{replacement}{rest}"),
            None => value.to_owned(),
        },
        ReplaceMode::Suffix => match value.strip_suffix(pattern) {
            Some(rest) => format!("{rest}{replacement}"),
            None => value.to_owned(),
        },
    })
}

/// One element of a compiled glob.
#[derive(Debug, Clone, PartialEq, Eq)]
enum GlobToken {
    /// `*`: any run of characters, `/` included.
    Star,
    /// `?`: any one character.
    Any,
    /// A literal character (`\c` included).
    Char(char),
    /// `[…]`, `[^…]` or `[!…]`: inclusive ranges (`a` is `a-a`).
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl GlobToken {
    fn matches(&self, c: char) -> bool {
        match self {
            GlobToken::Star | GlobToken::Any => true,
            GlobToken::Char(l) => *l == c,
            GlobToken::Class { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }
        }
    }
}

/// Compiles a glob; `None` when it is malformed (an unclosed `[` or a
/// trailing `\`).
fn compile_glob(pattern: &str) -> Option<Vec<GlobToken>> {
    let mut tokens = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            '*' => GlobToken::Star,
            '?' => GlobToken::Any,
            '\\' => GlobToken::Char(chars.next()?),
            '[' => {
                let negated = chars.next_if(|&c| c == '^' || c == '!').is_some();
                let mut ranges = Vec::new();
                loop {
                    let lo = match chars.next()? {
                        ']' if !ranges.is_empty() => break,
                        '\\' => chars.next()?,
                        lo => lo,
                    };
                    let mut hi = lo;
                    if chars.peek() == Some(&'-') {
                        let mut ahead = chars.clone();
                        ahead.next();
                        if ahead.peek().is_some_and(|&h| h != ']') {
                            chars.next();
                            hi = match chars.next()? {
                                '\\' => chars.next()?,
                                hi => hi,
                            };
                        }
                    }
                    ranges.push((lo, hi));
                }
                GlobToken::Class { negated, ranges }
            }
            c => GlobToken::Char(c),
        });
    }
    Some(tokens)
}

/// Which prefixes of `text` the whole glob matches: element `k` is true when
/// `text[..k]` matches. One pass over `text` simulating the glob as an NFA,
/// so the cost is `O(len(text) × len(glob))` whatever the pattern.
fn prefix_matches(glob: &[GlobToken], text: &[char]) -> Vec<bool> {
    let m = glob.len();
    // state i: the first i tokens have been matched.
    let close = |states: &mut Vec<bool>| {
        for i in 0..m {
            if states[i] && glob[i] == GlobToken::Star {
                states[i + 1] = true;
            }
        }
    };
    let mut states = vec![false; m + 1];
    states[0] = true;
    close(&mut states);
    let mut result = Vec::with_capacity(text.len() + 1);
    result.push(states[m]);
    for &c in text {
        let mut next = vec![false; m + 1];
        for i in 0..m {
            if states[i] && glob[i].matches(c) {
                if glob[i] == GlobToken::Star {
                    next[i] = true;
                } else {
                    next[i + 1] = true;
                }
            }
        }
        close(&mut next);
        states = next;
        result.push(states[m]);
        if !states.contains(&true) {
            result.resize(text.len() + 1, false);
            break;
        }
    }
    result
}

#[cfg(test)]
mod tests;
