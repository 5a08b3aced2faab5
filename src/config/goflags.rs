//! Go `flag`-package compatibility: the parts of the contract in the
//! [parent module's docs](super) that clap does not provide by itself.
//!
//! * [`go_style_args`] pre-processes argv: single-dash long flags (`-name=value`),
//!   `--name value` joined so that the next token is always the value, and a stray
//!   Go boolean after a bare boolean flag (`--leader-elect false`) refused;
//! * [`GoBool`] with [`GoBoolArg::go_bool`] gives boolean flags Go's shape: bare
//!   `--name` is true, a value only after `=`, spelled as [`parse_go_bool`] accepts;
//! * [`parse_go_int`] (`strconv.ParseInt(s, 0, 64)`) and the [`go_int`] /
//!   [`go_duration`] value parsers read integers and durations in Go syntax.

use std::ffi::{OsStr, OsString};

use clap::builder::{TypedValueParser, ValueParserFactory};
use clap::{Arg, ArgAction, Command};

use super::ConfigError;
use crate::duration::GoDuration;

// ---------------------------------------------------------------------------
// Go value syntax
// ---------------------------------------------------------------------------

/// Parses a boolean the way Go's `strconv.ParseBool` does.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn go_bool(s: &str) -> Result<GoBool, String> {
    parse_go_bool(s).map(GoBool).ok_or_else(|| {
        format!(
            "invalid boolean {s:?} (use 1, 0, t, f, T, F, true, false, TRUE, FALSE, True or False)"
        )
    })
}

/// Why a string is not a Go integer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntError {
    #[error("invalid integer {0:?}")]
    Syntax(String),
    #[error("integer {0:?} is out of range")]
    Range(String),
}

/// Parses an integer like Go's `strconv.ParseInt(s, 0, 64)`: optional sign, base
/// prefixes `0x`/`0X`, `0o`/`0O`, `0b`/`0B`, a leading `0` for octal, and `_`
/// separators between digits (or between the base prefix and a digit).
pub fn parse_go_int(input: &str) -> Result<i64, IntError> {
    let syntax = || IntError::Syntax(input.to_string());
    let (neg, body) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    if body.is_empty() {
        return Err(syntax());
    }
    let bytes = body.as_bytes();
    let (base, digits) = if bytes[0] == b'0' {
        match bytes.get(1).map(u8::to_ascii_lowercase) {
            Some(b'x') if bytes.len() >= 3 => (16, &body[2..]),
            Some(b'o') if bytes.len() >= 3 => (8, &body[2..]),
            Some(b'b') if bytes.len() >= 3 => (2, &body[2..]),
            _ => (8, &body[1..]),
        }
    } else {
        (10, body)
    };
    let mut magnitude: u64 = 0;
    let mut underscores = false;
    let mut overflow = false;
    for c in digits.bytes() {
        if c == b'_' {
            underscores = true;
            continue;
        }
        let d = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'a'..=b'z' => u32::from(c - b'a') + 10,
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return Err(syntax()),
        };
        if d >= base {
            return Err(syntax());
        }
        match magnitude
            .checked_mul(u64::from(base))
            .and_then(|m| m.checked_add(u64::from(d)))
        {
            Some(m) => magnitude = m,
            None => overflow = true,
        }
    }
    if underscores && !go_underscores_ok(input) {
        return Err(syntax());
    }
    let limit = if neg { 1u64 << 63 } else { (1u64 << 63) - 1 };
    if overflow || magnitude > limit {
        return Err(IntError::Range(input.to_string()));
    }
    Ok(if neg {
        0i64.wrapping_sub_unsigned(magnitude)
    } else {
        magnitude as i64
    })
}

/// Go's `underscoreOK`: underscores must separate digits (a base prefix counts as a digit).
fn go_underscores_ok(s: &str) -> bool {
    let mut s = s.as_bytes();
    if let Some(b'-' | b'+') = s.first() {
        s = &s[1..];
    }
    // 'd' = digit or base prefix, '_' = underscore, '!' = anything else, '^' = start.
    let mut saw = b'^';
    let mut i = 0;
    let mut hex = false;
    if s.len() >= 2 && s[0] == b'0' && matches!(s[1].to_ascii_lowercase(), b'b' | b'o' | b'x') {
        i = 2;
        saw = b'd';
        hex = s[1].eq_ignore_ascii_case(&b'x');
    }
    for &c in &s[i..] {
        if c.is_ascii_digit() || (hex && c.is_ascii_hexdigit()) {
            saw = b'd';
        } else if c == b'_' {
            if saw != b'd' {
                return false;
            }
            saw = b'_';
        } else {
            if saw == b'_' {
                return false;
            }
            saw = b'!';
        }
    }
    saw != b'_'
}

/// Value parser of integer flags ([`parse_go_int`]).
pub(super) fn go_int(s: &str) -> Result<i64, String> {
    parse_go_int(s).map_err(|e| e.to_string())
}

/// Value parser of duration flags ([`GoDuration::parse`]).
pub(super) fn go_duration(s: &str) -> Result<GoDuration, String> {
    GoDuration::parse(s).map_err(|e| format!("{e} (use Go syntax such as 90s, 1h30m, 500ms)"))
}

// ---------------------------------------------------------------------------
// Boolean flags
// ---------------------------------------------------------------------------

/// The value of a Go-style boolean flag; declare the field as
/// `#[arg(long, go_bool(), default_value = "false")] name: GoBool`.
///
/// As a field type it selects [`GoBoolParser`] (clap's [`ValueParserFactory`]), so
/// values are what [`parse_go_bool`] accepts. The command-line shape (bare `--name`
/// is true, values only after `=`) is not part of a value parser; it comes from
/// [`GoBoolArg::go_bool`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoBool(pub bool);

impl From<GoBool> for bool {
    fn from(value: GoBool) -> bool {
        value.0
    }
}

impl ValueParserFactory for GoBool {
    type Parser = GoBoolParser;

    fn value_parser() -> GoBoolParser {
        GoBoolParser
    }
}

/// Parses a [`GoBool`] like Go's `strconv.ParseBool` ([`parse_go_bool`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct GoBoolParser;

impl TypedValueParser for GoBoolParser {
    type Value = GoBool;

    fn parse_ref(
        &self,
        cmd: &Command,
        arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<GoBool, clap::Error> {
        // clap's parser for a `fn(&str) -> Result<_, String>` renders the error
        // ("invalid value '<v>' for '--name[=<BOOL>]': ...") and the invalid-UTF-8 case.
        go_bool.parse_ref(cmd, arg, value)
    }
}

/// Go's boolean flag syntax for a clap [`Arg`]. In a derive, the raw-method
/// attribute `go_bool()` calls it: `#[arg(long, go_bool(), default_value = "false")]`.
pub trait GoBoolArg {
    /// Makes this a Go boolean flag: `--name` alone means true; `--name=<v>` takes
    /// any [`parse_go_bool`] value; a separate token is never its value, so
    /// `--name false` leaves a stray `false` (a usage error, worded by
    /// [`go_style_args`]). The value is a [`GoBool`] shown as `BOOL`; the last
    /// occurrence wins when the command sets `args_override_self`. The default
    /// (`default_value = "false"` or `"true"`) is still the flag's own.
    fn go_bool(self) -> Self;
}

impl GoBoolArg for Arg {
    fn go_bool(self) -> Arg {
        self.value_name("BOOL")
            .action(ArgAction::Set)
            .num_args(0..=1)
            .require_equals(true)
            .default_missing_value("true")
            .value_parser(clap::value_parser!(GoBool))
    }
}

// ---------------------------------------------------------------------------
// argv pre-processing
// ---------------------------------------------------------------------------
/// Rewrites Go-style argv into what clap parses unambiguously:
///
/// * `-name[=v]` → `--name[=v]` when `name` is a long flag of the (sub)command
///   being parsed (`-h` and `-V` stay short flags);
/// * `--name v` → `--name=v` for value-taking flags, so the next token is the
///   value whatever it looks like (Go semantics, e.g. `--max-teardown-wait -1s`).
///
/// Rewriting stops at `--`. A positional token naming a subcommand switches to that
/// subcommand's flags. A Go boolean written after a bare boolean flag
/// (`--leader-elect false`) is refused with a message showing the `=` form.
pub(super) fn go_style_args(
    cmd: &clap::Command,
    args: Vec<OsString>,
) -> Result<Vec<OsString>, ConfigError> {
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.into_iter();
    if let Some(program) = iter.next() {
        out.push(program);
    }
    let mut current = cmd;
    // The boolean flag of the previous token, when it was given without `=`.
    let mut bare_bool: Option<String> = None;
    while let Some(arg) = iter.next() {
        let Some(text) = arg.to_str() else {
            out.push(arg);
            bare_bool = None;
            continue;
        };
        if let Some(flag) = bare_bool.take()
            && parse_go_bool(text).is_some()
        {
            return Err(ConfigError::Usage(format!(
                "unexpected argument '{text}' after --{flag}: boolean flags take their value after '=' \
                 (--{flag}={text}); this command takes no positional arguments"
            )));
        }
        if text == "--" {
            out.push(arg);
            out.extend(iter);
            break;
        }
        let long = if let Some(rest) = text.strip_prefix("--") {
            Some(rest)
        } else if let Some(rest) = text.strip_prefix('-')
            && rest.len() >= 2
            && !rest.starts_with('-')
        {
            let name = rest.split_once('=').map_or(rest, |(n, _)| n);
            current
                .get_arguments()
                .any(|a| a.get_long() == Some(name))
                .then_some(rest)
        } else {
            None
        };
        let Some(rest) = long else {
            if !text.starts_with('-')
                && let Some(sub) = current.find_subcommand(text)
            {
                current = sub;
            }
            out.push(arg);
            continue;
        };
        let (name, has_value) = match rest.split_once('=') {
            Some((n, _)) => (n, true),
            None => (rest, false),
        };
        let known = current.get_arguments().find(|a| a.get_long() == Some(name));
        let takes_separate_value =
            known.is_some_and(|a| a.get_action().takes_values() && !a.is_require_equals_set());
        if !has_value && known.is_some_and(|a| a.is_require_equals_set()) {
            bare_bool = Some(name.to_string());
        }
        if !has_value
            && takes_separate_value
            && let Some(value) = iter.next()
        {
            let mut joined = OsString::from(format!("--{name}="));
            joined.push(value);
            out.push(joined);
        } else {
            out.push(OsString::from(format!("--{rest}")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;

    use super::*;
    use crate::config::{PROGRAM, command};

    #[test]
    fn go_ints() {
        for (s, want) in [
            ("0", 0),
            ("7", 7),
            ("-7", -7),
            ("+7", 7),
            ("0x10", 16),
            ("0X1f", 31),
            ("010", 8),
            ("0o17", 15),
            ("0O17", 15),
            ("0b101", 5),
            ("0B1", 1),
            ("1_000", 1000),
            ("0x_ff", 255),
            ("0_7", 7),
            ("-0x8000000000000000", i64::MIN),
            ("9223372036854775807", i64::MAX),
        ] {
            assert_eq!(parse_go_int(s), Ok(want), "{s}");
        }
        for s in [
            "", "-", "+", "abc", "08", "0x", "0b2", "1__0", "_1", "1_", "1.0", " 1", "0x_", "1e3",
            "--1",
        ] {
            assert_eq!(parse_go_int(s), Err(IntError::Syntax(s.to_string())), "{s}");
        }
        for s in [
            "9223372036854775808",
            "-9223372036854775809",
            "0xffffffffffffffffff",
        ] {
            assert_eq!(parse_go_int(s), Err(IntError::Range(s.to_string())), "{s}");
        }
    }

    #[test]
    fn go_bools() {
        for s in ["1", "t", "T", "true", "TRUE", "True"] {
            assert_eq!(parse_go_bool(s), Some(true));
        }
        for s in ["0", "f", "F", "false", "FALSE", "False"] {
            assert_eq!(parse_go_bool(s), Some(false));
        }
        for s in ["", "yes", "tRUE", "2", "on"] {
            assert_eq!(parse_go_bool(s), None);
        }
    }

    /// A command with one Go boolean flag, as the controller's commands set it up.
    fn bool_command(default: &'static str) -> Command {
        Command::new("t").args_override_self(true).arg(
            Arg::new("flag")
                .long("flag")
                .go_bool()
                .default_value(default),
        )
    }

    fn bool_flag(default: &'static str, args: &[&str]) -> Result<bool, ErrorKind> {
        let argv = std::iter::once("t").chain(args.iter().copied());
        let matches = bool_command(default)
            .try_get_matches_from(argv)
            .map_err(|e| e.kind())?;
        Ok(matches.get_one::<GoBool>("flag").copied().unwrap().into())
    }

    #[test]
    fn go_bool_parser() {
        let cmd = Command::new("t");
        let parse = |s: &str| GoBoolParser.parse_ref(&cmd, None, OsStr::new(s));
        for s in ["1", "t", "T", "true", "TRUE", "True"] {
            assert_eq!(parse(s).unwrap(), GoBool(true), "{s}");
        }
        for s in ["0", "f", "F", "false", "FALSE", "False"] {
            assert_eq!(parse(s).unwrap(), GoBool(false), "{s}");
        }
        for s in ["", "yes", "tRUE", "2", "on"] {
            let err = parse(s).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ValueValidation, "{s}");
            assert!(
                err.to_string()
                    .contains(&format!("invalid boolean {s:?} (use 1, 0, t, f,")),
                "{err}"
            );
        }
        assert!(!bool::from(GoBool::default()));
    }

    #[test]
    fn go_bool_flag_syntax() {
        assert_eq!(bool_flag("false", &[]), Ok(false));
        assert_eq!(bool_flag("true", &[]), Ok(true));
        assert_eq!(bool_flag("false", &["--flag"]), Ok(true));
        assert_eq!(bool_flag("true", &["--flag=F"]), Ok(false));
        assert_eq!(bool_flag("false", &["--flag=True"]), Ok(true));
        // The last occurrence wins, bare or not.
        assert_eq!(bool_flag("false", &["--flag", "--flag=0"]), Ok(false));
        assert_eq!(bool_flag("false", &["--flag=0", "--flag"]), Ok(true));
        // Never a separate value: `false` is a stray argument.
        assert_eq!(
            bool_flag("true", &["--flag", "false"]),
            Err(ErrorKind::UnknownArgument)
        );
        assert_eq!(
            bool_flag("false", &["--flag=yes"]),
            Err(ErrorKind::ValueValidation)
        );
        assert_eq!(
            bool_flag("false", &["--flag="]),
            Err(ErrorKind::ValueValidation)
        );
    }

    #[test]
    fn go_bool_arg_shape() {
        // What help shows and what `go_style_args` relies on to recognise a boolean.
        let mut cmd = bool_command("false");
        cmd.build();
        let arg = cmd.get_arguments().find(|a| a.get_id() == "flag").unwrap();
        assert!(arg.is_require_equals_set());
        assert!(arg.get_action().takes_values());
        assert_eq!(arg.get_num_args(), Some((0..=1).into()));
        assert_eq!(arg.get_value_names().unwrap(), ["BOOL"]);
        assert_eq!(arg.to_string(), "--flag[=<BOOL>]");
        let argv = [PROGRAM, "--flag", "false"].map(OsString::from).to_vec();
        assert_eq!(
            go_style_args(&cmd, argv).unwrap_err(),
            ConfigError::Usage(
                "unexpected argument 'false' after --flag: boolean flags take their value \
                 after '=' (--flag=false); this command takes no positional arguments"
                    .to_string()
            )
        );
    }

    #[test]
    fn go_style_rewriting() {
        let cmd = command();
        let rewrite = |args: &[&str]| -> Vec<String> {
            let argv = std::iter::once(PROGRAM)
                .chain(args.iter().copied())
                .map(OsString::from)
                .collect();
            go_style_args(&cmd, argv)
                .unwrap()
                .into_iter()
                .skip(1)
                .map(|s| s.into_string().unwrap())
                .collect()
        };
        assert_eq!(rewrite(&["-log-level=debug"]), ["--log-level=debug"]);
        assert_eq!(rewrite(&["-log-level", "debug"]), ["--log-level=debug"]);
        assert_eq!(
            rewrite(&["--max-teardown-wait", "-1s"]),
            ["--max-teardown-wait=-1s"]
        );
        assert_eq!(rewrite(&["-leader-elect", "x"]), ["--leader-elect", "x"]);
        assert_eq!(
            rewrite(&["-h", "-help", "-nope"]),
            ["-h", "--help", "-nope"]
        );
        assert_eq!(rewrite(&["crds", "-stdout"]), ["crds", "--stdout"]);
        assert_eq!(rewrite(&["--", "-log-level"]), ["--", "-log-level"]);
    }
}
