//! CEL ready expressions (delivery.md §2.10, api.md §2.6): the
//! `readyChecks.exprs[]` rules, shaped like kustomize-controller's
//! `healthCheckExprs`.
//!
//! [`compile`] turns a [`CustomHealthCheck`] into a [`CompiledCheck`] (the
//! admission webhook and the reconciler share it, so its messages are
//! user-facing); [`evaluate`] runs one poll's semantics for one object. The
//! polling loop of the verify phase, which reads the objects from the
//! cluster, is `reconcile::cel::wait_exprs`. This module and its children
//! (`cost`: the static type and cost analysis, `regex`: the weight of a
//! regular expression) are pure.
//!
//! # Environment
//!
//! The CEL standard library with the strings and base64 (encoders) extensions,
//! as Flux's `runtime/cel` (minus its sets extension). Variables: `apiVersion`
//! and `kind` (strings), `metadata`, `spec` and `status` (dyn). A missing (or
//! null) `metadata`/`spec`/`status` is an empty map, so on an object without
//! status `has(status.x)` is false and `status == {}` is true. JSON integers
//! are CEL `int` (`uint` beyond `i64`), other numbers `double`.
//!
//! # Compile-time checks
//!
//! * Syntax: parser errors, with line and column.
//! * References: an identifier must be one of the five variables, a macro
//!   variable (`all(c, …)`) or a type name (`int`, `string`, …); a function
//!   must be one the environment provides.
//! * Result type: the expression must be able to produce a bool. A static type
//!   is inferred bottom-up. Known **not bool** (rejected at the root):
//!   literals other than `true`/`false`, list and map literals, arithmetic
//!   (`+ - * / %`, unary `-`) whatever its operands (CEL has no bool
//!   arithmetic, so `'a' + 'b'`, `1 + 2` and `status.x + 1` are all caught),
//!   `size()`, conversions other than `bool()` (`int()`, `string()`,
//!   `timestamp()`, …), string functions (`lowerAscii()`, `replace()`,
//!   `split()`, `indexOf()`, …), `map()`/`filter()` (lists), optionals
//!   (`a.?b`, `optional.of()`, `or()`), `type()`, and the variables `apiVersion`
//!   and `kind`. Known **bool**: comparisons, `!`, `&&`, `||`, `in`, `has()`,
//!   `all()`/`exists()`/`exists_one()`, `contains()`/`startsWith()`/
//!   `endsWith()`/`matches()`, `hasValue()` and `bool()`. **Dyn** (accepted;
//!   a non-bool value at runtime is an evaluation error, i.e. not satisfied):
//!   field selection, indexing, `dyn()`, `value()`/`orValue()`. A ternary is
//!   bool when both branches are, not bool when neither is, dyn otherwise.
//!
//! # Cost limit
//!
//! cel 0.15 has no cost tracking, step limit or evaluation hook: its
//! interpreter walks the AST recursively until done. The limit of 10,000,000
//! per evaluation ([`COST_LIMIT`]) is therefore enforced by a **static
//! worst-case estimate computed against the concrete object before every
//! evaluation**; an expression whose estimate exceeds the limit is not run at
//! all and counts as an evaluation error ("cost limit exceeded"), i.e. never
//! satisfied.
//!
//! The estimate is an abstract interpretation of the (macro-expanded) AST. An
//! abstract value is either
//! * a set of concrete nodes of the object: navigation from a variable by
//!   field names, literal keys and comprehension variables stays exact, so
//!   `status.conditions` is exactly that list and `c` in
//!   `status.conditions.all(c, …)` is one of its elements; or
//! * bounds: total size (string/bytes length + 1 per value), the size of any
//!   value inside it, the largest element count of any list/map in it, the
//!   longest string in it. Values built by operators and functions get
//!   bounds derived from their inputs' (e.g. `a + b` sums them,
//!   `s.replace(x, y)` is at most `(|s| + 1)·(|y| + 1) + |s|` long).
//!
//! Costs: 1 per AST node evaluated, plus the size of the data an operation
//! touches: equality and ordering (smaller operand), `+` (the allocation),
//! `in`, `size()`, `contains()` & co., conversions, string-extension
//! functions (products for `indexOf()` and `replace()`), map keys hashed, and
//! the copies the interpreter makes (loop variables, list elements,
//! optionals, comprehension results, the final result). `matches()` compiles
//! its pattern on every call: a literal pattern is charged from its structure
//! (counted repetitions multiply, `\w`/`\p{…}` weigh ~20,000, `\d` 1,000,
//! classes and `.` 300, literals 20, calibrated on the regex crate's compile
//! times at roughly 20 ns per unit) plus text × estimated NFA size for
//! matching; a pattern that is not a literal is charged 5,000,000, about
//! what the crate spends before its compiled-size limit stops it. A
//! comprehension costs
//! `range + init + n · (condition + step + accumulator copy) + result`, where
//! `n` is the element count of the concrete collection (the largest one when
//! the range is a set of nodes, else the bound), so nested comprehensions
//! multiply. `map()`/`filter()` accumulators grow by the appended element per
//! iteration (the interpreter appends in place, which the estimate mirrors);
//! every other accumulator (`all`, `exists`, `exists_one`, `optMap`) must be
//! provably stable under its step, else its size is unbounded and the
//! expression refused. Every function of the environment has a rule and any
//! other function is rejected at compile time, so nothing escapes the
//! estimate; all arithmetic saturates.
//!
//! Known weaknesses:
//! * It is an over-approximation: both sides of `&&`/`||`/`?:` are charged,
//!   loops are charged to their full length even when `exists` would stop
//!   early, and dynamic indexing or computed values fall back to bounds. An
//!   expression over a very large object can be refused although the actual
//!   run would be cheap. The units are not Kubernetes' exactly (which charge
//!   e.g. 0.1 per string byte): this estimate is the more conservative one.
//! * `matches()` relies on a structural estimate of the regex crate's work,
//!   not on the crate itself (it is no direct dependency); a construct the
//!   estimate does not know counts as a literal. The crate's compiled-size
//!   limit still caps any one compile (~0.1 s). A pattern taken from the
//!   object is charged as that worst case, so an expression can make at most
//!   one such call per evaluation.
//! * The rules mirror cel 0.15's interpreter (in-place `map`/`filter`, deep
//!   copies of loop variables); a crate upgrade must re-check them.
//! * Converting the object to CEL values and the estimate itself cost
//!   O(object size) per evaluation and are not counted; evaluation runs on a
//!   blocking thread in the verify phase.

mod cost;
mod regex;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, LazyLock};

use cel::{Context, Env, ParseErrors, Program, Value as CelValue};
use serde_json::Value;

use crate::api::CustomHealthCheck;
use cost::{Analyzer, Facts, Ty};

pub const COST_LIMIT: u64 = 10_000_000;

/// The shared CEL environment: standard library, strings and encoders.
static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| {
    let mut env = Env::stdlib();
    env.add_extension(cel::extensions::strings)
        .expect("the strings extension registers once");
    env.add_extension(cel::extensions::encoders)
        .expect("the encoders extension registers once");
    Arc::new(env)
});

/// Which expression of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    Current,
    InProgress,
    Failed,
}

impl std::fmt::Display for Which {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Which::Current => "current",
            Which::InProgress => "inProgress",
            Which::Failed => "failed",
        })
    }
}

/// One compiled expression.
#[derive(Clone, Debug)]
struct Rule {
    which: Which,
    source: String,
    program: Arc<Program>,
}

impl Rule {
    /// `current expression `…``, for messages.
    fn describe(&self) -> String {
        let mut src: String = self.source.split_whitespace().collect::<Vec<_>>().join(" ");
        if src.chars().count() > 120 {
            src = src.chars().take(119).collect::<String>() + "…";
        }
        format!("{} expression `{src}`", self.which)
    }
}

/// A compiled `readyChecks.exprs[]` entry.
#[derive(Clone, Debug)]
pub struct CompiledCheck {
    api_version: String,
    kind: String,
    current: Option<Rule>,
    in_progress: Option<Rule>,
    failed: Option<Rule>,
}

impl CompiledCheck {
    /// Whether the check applies to objects of `api_version`/`kind`: same API
    /// group and kind, the version ignored.
    pub fn matches(&self, api_version: &str, kind: &str) -> bool {
        self.kind == kind && group(&self.api_version) == group(api_version)
    }

    /// The `apiVersion` the check was written for.
    pub fn api_version(&self) -> &str {
        &self.api_version
    }

    /// The kind the check applies to.
    pub fn kind(&self) -> &str {
        &self.kind
    }
}

/// The API group of an apiVersion (`apps/v1` → `apps`, `v1` → ``).
fn group(api_version: &str) -> &str {
    api_version.split_once('/').map_or("", |(g, _)| g)
}

/// Compiles every present expression of `check`. Errors name the expression
/// (`current`, `inProgress` or `failed`) and are meant for users.
pub fn compile(check: &CustomHealthCheck) -> Result<CompiledCheck, String> {
    if check.api_version.trim().is_empty() {
        return Err("apiVersion is required".to_string());
    }
    if check.kind.trim().is_empty() {
        return Err("kind is required".to_string());
    }
    let rule = |which: Which, source: &Option<String>| {
        source
            .as_deref()
            .map(|s| compile_rule(which, s))
            .transpose()
    };
    Ok(CompiledCheck {
        api_version: check.api_version.clone(),
        kind: check.kind.clone(),
        current: rule(Which::Current, &check.current)?,
        in_progress: rule(Which::InProgress, &check.in_progress)?,
        failed: rule(Which::Failed, &check.failed)?,
    })
}

/// The longest expression accepted, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 8 * 1024;
/// The deepest nesting of `(`, `[` and `{` accepted.
pub const MAX_NESTING: usize = 32;
/// The most operators (`&&`, `+`, `.`, `?`, ...) one expression may hold.
pub const MAX_OPERATORS: usize = 512;
/// The stack the parser and checker run on: the CEL parser recurses through
/// its whole grammar for every level of nesting.
const COMPILE_STACK: usize = 64 * 1024 * 1024;

/// Refuses expressions whose shape would make the recursive parser,
/// checker or evaluator run out of stack or time: too long, nested too
/// deep, or chaining too many operators. String literals are skipped.
fn check_shape(source: &str) -> Result<(), String> {
    if source.len() > MAX_EXPRESSION_BYTES {
        return Err(format!(
            "the expression is {} bytes long, more than the {MAX_EXPRESSION_BYTES} allowed",
            source.len()
        ));
    }
    let bytes = source.as_bytes();
    let (mut depth, mut deepest, mut operators) = (0usize, 0usize, 0usize);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'"' | b'\'') => {
                // Skip the literal (escapes included); an unterminated one
                // is left to the parser to report.
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b'&' | b'|' | b'=' | b'!' | b'<' | b'>' | b'+' | b'-' | b'*' | b'/' | b'%' | b'?'
            | b'.' => operators += 1,
            _ => {}
        }
        i += 1;
    }
    if deepest > MAX_NESTING {
        return Err(format!(
            "the expression nests {deepest} levels deep, more than the {MAX_NESTING} allowed"
        ));
    }
    if operators > MAX_OPERATORS {
        return Err(format!(
            "the expression has {operators} operators, more than the {MAX_OPERATORS} allowed"
        ));
    }
    Ok(())
}

fn compile_rule(which: Which, source: &str) -> Result<Rule, String> {
    if source.trim().is_empty() {
        return Err(format!("{which}: the expression is empty"));
    }
    check_shape(source).map_err(|e| format!("{which}: invalid CEL expression: {e}"))?;
    let text = source.to_string();
    let program = std::thread::Builder::new()
        .name("cel-compile".into())
        .stack_size(COMPILE_STACK)
        .spawn(move || {
            let program = ENV
                .compile(&text)
                .map_err(|e| format!("{which}: invalid CEL expression: {}", parse_errors(&e)))?;
            let analysis = Analyzer::unbound()
                .run(program.expression())
                .map_err(|e| format!("{which}: invalid CEL expression: {e}"))?;
            if let Ty::Not(t) = analysis.abs.ty {
                return Err(format!(
                    "{which}: the expression must evaluate to bool, but it evaluates to {t}"
                ));
            }
            Ok(program)
        })
        .map_err(|e| format!("{which}: compiling the CEL expression: {e}"))?
        .join()
        .map_err(|_| format!("{which}: compiling the CEL expression failed"))??;
    Ok(Rule {
        which,
        source: source.to_string(),
        program: Arc::new(program),
    })
}

/// `line:column: message` per parser error, joined.
fn parse_errors(errors: &ParseErrors) -> String {
    let all: Vec<String> = errors
        .errors
        .iter()
        .map(|e| format!("{}:{}: {}", e.pos.0, e.pos.1, e.msg))
        .collect();
    if all.is_empty() {
        errors.to_string()
    } else {
        all.join("; ")
    }
}

/// One poll's verdict for one object and one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExprOutcome {
    /// `current` holds (or the check has no `current`).
    Current,
    /// Not current, but `inProgress` holds: the object is still moving.
    InFlight(String),
    /// Not current (false or an evaluation error) and not in progress.
    NotReady(String),
    /// `failed` holds.
    Failed(String),
}

/// Evaluates `check` against the live object `obj`: `failed` true → Failed;
/// else `current` true (or absent) → Current; else `inProgress` true →
/// InFlight, otherwise NotReady. Evaluation errors (including the cost limit)
/// make an expression not hold; they never panic.
pub fn evaluate(check: &CompiledCheck, obj: &Value) -> ExprOutcome {
    Input::new(obj).outcome(check)
}

/// An object prepared for evaluation: its CEL variables and the facts the
/// cost estimate needs.
struct Input<'o> {
    object: &'o Value,
    facts: Facts,
    context: Context<'static, 'static>,
}

impl<'o> Input<'o> {
    fn new(object: &'o Value) -> Input<'o> {
        let mut context = Context::with_env(Arc::clone(&ENV));
        for name in ["apiVersion", "kind"] {
            let s = object.get(name).and_then(Value::as_str).unwrap_or_default();
            context.add_variable_from_value(name, s);
        }
        for name in MAP_VARIABLES {
            let value = map_variable(object, name).map_or_else(empty_map, to_cel);
            context.add_variable_from_value(name, value);
        }
        Input {
            object,
            facts: Facts::new(object),
            context,
        }
    }

    fn outcome(&self, check: &CompiledCheck) -> ExprOutcome {
        if let Some(rule) = &check.failed
            && let Ok(true) = self.eval(rule)
        {
            return ExprOutcome::Failed(format!("{} is true", rule.describe()));
        }
        let Some(current) = &check.current else {
            return ExprOutcome::Current;
        };
        let why = match self.eval(current) {
            Ok(true) => return ExprOutcome::Current,
            Ok(false) => format!("{} is false", current.describe()),
            Err(e) => format!("{}: {e}", current.describe()),
        };
        match &check.in_progress {
            Some(rule) if self.eval(rule) == Ok(true) => {
                ExprOutcome::InFlight(format!("{why}; {} is true", rule.describe()))
            }
            _ => ExprOutcome::NotReady(why),
        }
    }

    fn eval(&self, rule: &Rule) -> Result<bool, String> {
        let cost = Analyzer::bound(&self.facts, self.object)
            .run(rule.program.expression())?
            .cost;
        if cost > COST_LIMIT {
            return Err(format!(
                "cost limit exceeded: estimated cost {cost} is over the limit of {COST_LIMIT}"
            ));
        }
        // The interpreter is third-party code running user input: a panic in
        // it must not take the reconcile worker down.
        let result =
            std::panic::catch_unwind(AssertUnwindSafe(|| rule.program.execute(&self.context)));
        match result {
            Ok(Ok(CelValue::Bool(b))) => Ok(b),
            Ok(Ok(other)) => Err(format!("evaluated to {}, not bool", other.type_of())),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the CEL interpreter failed".to_string()),
        }
    }
}

const MAP_VARIABLES: [&str; 3] = ["metadata", "spec", "status"];

/// The object's `metadata`/`spec`/`status`, `None` when missing or null.
fn map_variable<'o>(object: &'o Value, name: &str) -> Option<&'o Value> {
    object.get(name).filter(|v| !v.is_null())
}

fn empty_map() -> CelValue {
    CelValue::from(HashMap::<String, CelValue>::new())
}

/// JSON → CEL: integers are `int` (`uint` beyond `i64`), other numbers `double`.
fn to_cel(v: &Value) -> CelValue {
    match v {
        Value::Null => CelValue::Null,
        Value::Bool(b) => CelValue::Bool(*b),
        Value::Number(n) => n
            .as_i64()
            .map(CelValue::Int)
            .or_else(|| n.as_u64().map(CelValue::UInt))
            .unwrap_or_else(|| CelValue::Float(n.as_f64().unwrap_or(f64::NAN))),
        Value::String(s) => CelValue::String(Arc::new(s.clone())),
        Value::Array(items) => CelValue::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(map) => CelValue::from(
            map.iter()
                .map(|(k, v)| (k.clone(), to_cel(v)))
                .collect::<HashMap<String, CelValue>>(),
        ),
    }
}

/// Evaluates every check against one object (its CEL variables are built
/// once). CPU-bound up to the cost limit per expression.
pub fn evaluate_all(checks: &[CompiledCheck], obj: &Value) -> Vec<ExprOutcome> {
    let input = Input::new(obj);
    checks.iter().map(|c| input.outcome(c)).collect()
}

#[cfg(test)]
mod tests;
