//! CEL ready expressions (delivery.md §2.10, api.md §2.6): the
//! `readyChecks.exprs[]` rules, shaped like kustomize-controller's
//! `healthCheckExprs`.
//!
//! [`compile`] turns a [`CustomHealthCheck`] into a [`CompiledCheck`] (the
//! admission webhook reuses it, so its messages are user-facing);
//! [`evaluate`] runs one poll's semantics for one object; [`wait_exprs`] is the
//! polling loop of the verify phase.
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
//!   blocking thread in [`wait_exprs`].

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use cel::common::ast::operators as op;
use cel::common::ast::{CallExpr, ComprehensionExpr, EntryExpr, Expr, IdedExpr, LiteralValue};
use cel::{Context, Env, ParseErrors, Program, Value as CelValue};
use kube::api::{Api, DynamicObject};
use serde_json::Value;

use crate::api::CustomHealthCheck;
use crate::kube_client::ClientFactory;
use crate::reconcile::apply::ObjectRef;
use crate::reconcile::error::describe;
use crate::reconcile::verify::Verdict;

/// The runtime cost limit per evaluation (as Kubernetes and Flux use).
pub const COST_LIMIT: u64 = 10_000_000;

const MAX_POLL: Duration = Duration::from_secs(2);
const FIRST_POLL: Duration = Duration::from_millis(25);
const DELETION_POLL: Duration = Duration::from_secs(5);
const HEARTBEAT: Duration = Duration::from_secs(60);

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

fn compile_rule(which: Which, source: &str) -> Result<Rule, String> {
    if source.trim().is_empty() {
        return Err(format!("{which}: the expression is empty"));
    }
    let program = ENV
        .compile(source)
        .map_err(|e| format!("{which}: invalid CEL expression: {}", parse_errors(&e)))?;
    let analysis = Analyzer::unbound()
        .run(program.expression())
        .map_err(|e| format!("{which}: invalid CEL expression: {e}"))?;
    if let Ty::Not(t) = analysis.abs.ty {
        return Err(format!(
            "{which}: the expression must evaluate to bool, but it evaluates to {t}"
        ));
    }
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

// ---------------------------------------------------------------------------
// Static analysis: result type and worst-case cost.
// ---------------------------------------------------------------------------

/// The most nodes an abstract value tracks individually before it falls back
/// to bounds.
const SET_CAP: usize = 1024;
/// The charge for compiling any regular expression.
const REGEX_COMPILE: u64 = 1_000;
/// The charge for compiling a pattern that is not a literal: about what the
/// regex crate spends before its compiled-size limit stops it.
const REGEX_DYNAMIC: u64 = 5_000_000;
/// NFA states a character class may stand for, for matching.
const CLASS_STATES: u64 = 16;

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Upper bounds of a value: its total size (string/bytes length, plus 1 per
/// value), the size of any value inside it (element, key or field, at any
/// depth), the largest element count of any list/map in it (itself
/// included) and the longest string/bytes in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Bounds {
    size: u64,
    item: u64,
    len: u64,
    str_len: u64,
}

impl Bounds {
    const SCALAR: Bounds = Bounds {
        size: 1,
        item: 0,
        len: 0,
        str_len: 0,
    };
    const UNKNOWN: Bounds = Bounds {
        size: u64::MAX,
        item: u64::MAX,
        len: u64::MAX,
        str_len: u64::MAX,
    };

    fn string(len: u64) -> Bounds {
        Bounds {
            size: len.saturating_add(1),
            item: 0,
            len: 0,
            str_len: len,
        }
    }

    /// An empty list or map that will hold `len` values.
    fn container(len: u64) -> Bounds {
        Bounds {
            size: 1,
            item: 0,
            len,
            str_len: 0,
        }
    }

    fn join(self, o: Bounds) -> Bounds {
        Bounds {
            size: self.size.max(o.size),
            item: self.item.max(o.item),
            len: self.len.max(o.len),
            str_len: self.str_len.max(o.str_len),
        }
    }

    /// This container with `o` added to it.
    fn append(self, o: Bounds) -> Bounds {
        Bounds {
            size: self.size.saturating_add(o.size),
            item: self.item.max(o.size),
            len: self.len.max(o.len),
            str_len: self.str_len.max(o.str_len),
        }
    }

    /// Any value inside: an element, key or field, or one inside those.
    fn inner(self) -> Bounds {
        Bounds {
            size: self.item,
            ..self
        }
    }

    fn within(self, o: Bounds) -> bool {
        self.size <= o.size && self.item <= o.item && self.len <= o.len && self.str_len <= o.str_len
    }
}

/// Per-node bounds of the object being evaluated.
struct Facts {
    nodes: HashMap<*const Value, Bounds>,
}

impl Facts {
    fn new(object: &Value) -> Facts {
        let mut facts = Facts {
            nodes: HashMap::new(),
        };
        facts.summarize(object);
        facts
    }

    fn summarize(&mut self, v: &Value) -> Bounds {
        let b = match v {
            Value::Null | Value::Bool(_) | Value::Number(_) => Bounds::SCALAR,
            Value::String(s) => Bounds::string(count(s.len())),
            Value::Array(items) => {
                let own = Bounds::container(count(items.len()));
                items.iter().fold(own, |b, i| b.append(self.summarize(i)))
            }
            Value::Object(map) => {
                let own = Bounds::container(count(map.len()));
                map.iter().fold(own, |b, (k, v)| {
                    b.append(Bounds::string(count(k.len())))
                        .append(self.summarize(v))
                })
            }
        };
        self.nodes.insert(v as *const Value, b);
        b
    }
}

/// The static type, as far as the result check cares.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ty {
    Bool,
    Dyn,
    /// Known not to be a bool; the name says what it is.
    Not(&'static str),
}

const ARITHMETIC: &str = "the result of an arithmetic operator, never a bool";
const NON_BOOL: &str = "a non-bool value";

impl Ty {
    fn join(&self, o: &Ty) -> Ty {
        match (self, o) {
            _ if self == o => self.clone(),
            (Ty::Not(_), Ty::Not(_)) => Ty::Not(NON_BOOL),
            _ => Ty::Dyn,
        }
    }

    /// Values whose size never grows: `+` on them is arithmetic, not a
    /// concatenation.
    fn is_scalar(&self) -> bool {
        matches!(
            self,
            Ty::Bool
                | Ty::Not("int" | "uint" | "double" | "timestamp" | "duration" | "null" | "type")
        )
    }

    /// The type of a field or element of a value of this type: optionals
    /// propagate, anything else may hold anything.
    fn through_optional(&self) -> Ty {
        match self {
            Ty::Not("optional") => Ty::Not("optional"),
            _ => Ty::Dyn,
        }
    }

    /// The type of an arithmetic result on these operands.
    fn arithmetic(&self, o: Option<&Ty>) -> Ty {
        match (self, o) {
            (Ty::Not(a), Some(Ty::Not(b))) if a == b => Ty::Not(a),
            (Ty::Not(a), None) => Ty::Not(a),
            _ => Ty::Not(ARITHMETIC),
        }
    }
}

/// What the value of an expression may be.
#[derive(Clone, Debug)]
enum Shape<'o> {
    /// One of these nodes of the object (an empty set: the expression can
    /// only fail).
    Nodes(Rc<Vec<&'o Value>>),
    Bounds(Bounds),
}

#[derive(Clone, Debug)]
struct Abs<'o> {
    ty: Ty,
    shape: Shape<'o>,
}

impl<'o> Abs<'o> {
    fn new(ty: Ty, b: Bounds) -> Abs<'o> {
        Abs {
            ty,
            shape: Shape::Bounds(b),
        }
    }

    /// Whether the value may be an optional at runtime (nodes of the object
    /// never are).
    fn may_be_optional(&self) -> bool {
        matches!(self.shape, Shape::Bounds(_))
            && matches!(self.ty, Ty::Dyn | Ty::Not("optional" | NON_BOOL))
    }
}

/// An analysed expression: its abstract value and the worst-case cost of
/// evaluating it.
struct Out<'o> {
    abs: Abs<'o>,
    cost: u64,
}

/// Functions called by a qualified name, `base64.encode(b)`.
const QUALIFIED_FUNCTIONS: [&str; 6] = [
    "optional.none",
    "optional.of",
    "optional.ofNonZeroValue",
    "base64.encode",
    "base64.decode",
    "strings.quote",
];

struct Analyzer<'f, 'o> {
    facts: Option<&'f Facts>,
    scopes: Vec<(String, Abs<'o>)>,
}

impl Analyzer<'static, 'static> {
    /// For compiling: the variables are unknown.
    fn unbound() -> Analyzer<'static, 'static> {
        let string = Abs::new(Ty::Not("string"), Bounds::UNKNOWN);
        let mut scopes = vec![
            ("apiVersion".to_string(), string.clone()),
            ("kind".to_string(), string),
        ];
        for name in MAP_VARIABLES {
            scopes.push((name.to_string(), Abs::new(Ty::Dyn, Bounds::UNKNOWN)));
        }
        Analyzer {
            facts: None,
            scopes,
        }
    }
}

impl<'f, 'o> Analyzer<'f, 'o> {
    /// For evaluating against `object`, whose facts are `facts`.
    fn bound(facts: &'f Facts, object: &'o Value) -> Analyzer<'f, 'o> {
        let mut scopes = Vec::new();
        for name in ["apiVersion", "kind"] {
            let s = object.get(name).and_then(Value::as_str).unwrap_or_default();
            let abs = Abs::new(Ty::Not("string"), Bounds::string(count(s.len())));
            scopes.push((name.to_string(), abs));
        }
        for name in MAP_VARIABLES {
            let shape = match map_variable(object, name) {
                Some(v) => Shape::Nodes(Rc::new(vec![v])),
                None => Shape::Bounds(Bounds::container(0)),
            };
            scopes.push((name.to_string(), Abs { ty: Ty::Dyn, shape }));
        }
        Analyzer {
            facts: Some(facts),
            scopes,
        }
    }

    /// Analyses a whole expression; the cost includes converting the result.
    fn run(mut self, e: &IdedExpr) -> Result<Out<'o>, String> {
        let out = self.expr(e)?;
        let cost = out.cost.saturating_add(self.bounds(&out.abs.shape).size);
        Ok(Out { abs: out.abs, cost })
    }

    fn summary(&self, v: &Value) -> Bounds {
        self.facts
            .and_then(|f| f.nodes.get(&(v as *const Value)).copied())
            .unwrap_or(Bounds::UNKNOWN)
    }

    fn bounds(&self, shape: &Shape<'o>) -> Bounds {
        match shape {
            Shape::Bounds(b) => *b,
            Shape::Nodes(nodes) => nodes
                .iter()
                .fold(Bounds::default(), |b, n| b.join(self.summary(n))),
        }
    }

    /// A set of nodes, or its bounds when it is too large to track.
    fn nodes(&self, it: impl Iterator<Item = &'o Value>) -> Shape<'o> {
        let mut nodes = Vec::new();
        let mut overflow: Option<Bounds> = None;
        for n in it {
            if nodes.len() < SET_CAP {
                nodes.push(n);
            } else {
                overflow = Some(overflow.unwrap_or_default().join(self.summary(n)));
            }
        }
        match overflow {
            None => Shape::Nodes(Rc::new(nodes)),
            Some(b) => Shape::Bounds(nodes.into_iter().fold(b, |b, n| b.join(self.summary(n)))),
        }
    }

    fn join(&self, a: &Shape<'o>, b: &Shape<'o>) -> Shape<'o> {
        match (a, b) {
            (Shape::Nodes(x), Shape::Nodes(y)) => {
                let mut seen: HashSet<*const Value> = HashSet::new();
                self.nodes(
                    x.iter()
                        .chain(y.iter())
                        .copied()
                        .filter(|n| seen.insert(*n as *const Value)),
                )
            }
            _ => Shape::Bounds(self.bounds(a).join(self.bounds(b))),
        }
    }

    /// `shape.field`: the field of every node that has it (the others fail).
    fn select(&self, shape: &Shape<'o>, field: &str) -> Shape<'o> {
        match shape {
            Shape::Bounds(b) => Shape::Bounds(b.inner()),
            Shape::Nodes(nodes) => self.nodes(nodes.iter().filter_map(|v| v.get(field))),
        }
    }

    /// `shape[key]`: exact for a string literal key, else any child.
    fn index(&self, shape: &Shape<'o>, key: Option<&IdedExpr>) -> Shape<'o> {
        match (shape, key.map(|k| &k.expr)) {
            (Shape::Bounds(b), _) => Shape::Bounds(b.inner()),
            (Shape::Nodes(_), Some(Expr::Literal(LiteralValue::String(s)))) => {
                self.select(shape, s.inner())
            }
            (Shape::Nodes(nodes), _) => self.nodes(nodes.iter().flat_map(|v| children(v))),
        }
    }

    /// How often a comprehension over `range` iterates, and the bounds of its
    /// variables.
    fn iterate(&self, range: &Shape<'o>, two_vars: bool) -> (u64, Shape<'o>) {
        match range {
            Shape::Bounds(b) => (b.len, Shape::Bounds(b.inner())),
            Shape::Nodes(nodes) => {
                let n = nodes
                    .iter()
                    .map(|v| match v {
                        Value::Array(a) => a.len(),
                        Value::Object(o) => o.len(),
                        _ => 0,
                    })
                    .max()
                    .unwrap_or(0);
                let elements = self.nodes(nodes.iter().filter_map(|v| v.as_array()).flatten());
                if !two_vars && nodes.iter().all(|v| !v.is_object()) {
                    return (count(n), elements);
                }
                // Maps iterate over their keys; two variables see indexes,
                // keys and values: one bound for all.
                let maps = || nodes.iter().filter_map(|v| v.as_object());
                let keys = maps().flat_map(|o| o.keys()).fold(Bounds::SCALAR, |b, k| {
                    b.join(Bounds::string(count(k.len())))
                });
                let mut all = keys.join(self.bounds(&elements));
                if two_vars {
                    let values = self.nodes(maps().flat_map(|o| o.values()));
                    all = all.join(self.bounds(&values));
                }
                (count(n), Shape::Bounds(all))
            }
        }
    }

    fn lookup(&self, name: &str) -> Option<&Abs<'o>> {
        self.scopes
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a)
    }

    fn expr(&mut self, e: &IdedExpr) -> Result<Out<'o>, String> {
        match &e.expr {
            Expr::Unspecified => Err("incomplete expression".to_string()),
            Expr::Literal(l) => {
                let (ty, b) = literal(l);
                Ok(Out {
                    abs: Abs::new(ty, b),
                    cost: 1,
                })
            }
            Expr::Ident(name) => self.ident(name),
            Expr::Select(s) => {
                if let Some(name) = unscoped_qualified_name(e, self) {
                    return self.ident(&name);
                }
                let operand = self.expr(&s.operand)?;
                let mut cost = operand
                    .cost
                    .saturating_add(1)
                    .saturating_add(count(s.field.len()));
                let abs = if s.test {
                    Abs::new(Ty::Bool, Bounds::SCALAR)
                } else {
                    let shape = self.select(&operand.abs.shape, &s.field);
                    if operand.abs.may_be_optional() {
                        // selecting through an optional copies the field
                        cost = cost.saturating_add(self.bounds(&shape).size);
                    }
                    Abs {
                        ty: operand.abs.ty.through_optional(),
                        shape,
                    }
                };
                Ok(Out { abs, cost })
            }
            Expr::List(list) => {
                let mut b = Bounds::container(count(list.elements.len()));
                let mut cost: u64 = 1;
                for element in &list.elements {
                    let out = self.expr(element)?;
                    let eb = self.bounds(&out.abs.shape);
                    // each element is copied into the list
                    cost = cost.saturating_add(out.cost).saturating_add(eb.size);
                    b = b.append(eb);
                }
                Ok(Out {
                    abs: Abs::new(Ty::Not("list"), b),
                    cost,
                })
            }
            Expr::Map(map) => {
                let mut b = Bounds::container(count(map.entries.len()));
                let mut cost: u64 = 1;
                for entry in &map.entries {
                    let EntryExpr::MapEntry(entry) = &entry.expr else {
                        return Err("struct field in a map literal".to_string());
                    };
                    for part in [&entry.key, &entry.value] {
                        let out = self.expr(part)?;
                        let pb = self.bounds(&out.abs.shape);
                        // keys are hashed, values copied
                        cost = cost.saturating_add(out.cost).saturating_add(pb.size);
                        b = b.append(pb);
                    }
                }
                Ok(Out {
                    abs: Abs::new(Ty::Not("map"), b),
                    cost,
                })
            }
            Expr::Struct(s) => {
                let mut cost: u64 = 1;
                for entry in &s.entries {
                    let value = match &entry.expr {
                        EntryExpr::StructField(f) => &f.value,
                        EntryExpr::MapEntry(m) => &m.value,
                    };
                    let out = self.expr(value)?;
                    cost = cost
                        .saturating_add(out.cost)
                        .saturating_add(self.bounds(&out.abs.shape).size);
                }
                Ok(Out {
                    abs: Abs::new(Ty::Dyn, Bounds::UNKNOWN),
                    cost,
                })
            }
            Expr::Call(call) => self.call(call),
            Expr::Comprehension(c) => self.comprehension(c),
        }
    }

    fn ident(&self, name: &str) -> Result<Out<'o>, String> {
        if let Some(abs) = self.lookup(name) {
            return Ok(Out {
                abs: abs.clone(),
                cost: 1,
            });
        }
        if ENV.types().find_type(name).is_some() {
            return Ok(Out {
                abs: Abs::new(Ty::Not("type"), Bounds::SCALAR),
                cost: 1,
            });
        }
        let root = name.split('.').next().unwrap_or(name);
        Err(format!(
            "undeclared reference to '{root}' (the variables are apiVersion, kind, metadata, spec and status)"
        ))
    }

    fn call(&mut self, call: &CallExpr) -> Result<Out<'o>, String> {
        // `base64.encode(b)` is a call of `base64.encode`, not of `encode` on
        // `base64`: the interpreter resolves it that way first.
        let qualified = call
            .target
            .as_deref()
            .and_then(|t| qualified_name(&t.expr))
            .map(|q| format!("{q}.{}", call.func_name))
            .filter(|n| QUALIFIED_FUNCTIONS.contains(&n.as_str()));
        let (name, receiver) = match &qualified {
            Some(n) => (n.as_str(), None),
            None => (call.func_name.as_str(), call.target.as_deref()),
        };
        let mut vals: Vec<Abs<'o>> = Vec::with_capacity(call.args.len() + 1);
        let mut cost: u64 = 1;
        for e in receiver.into_iter().chain(&call.args) {
            let out = self.expr(e)?;
            cost = cost.saturating_add(out.cost);
            vals.push(out.abs);
        }
        let b: Vec<Bounds> = vals.iter().map(|a| self.bounds(&a.shape)).collect();
        let arg = |i: usize| b.get(i).copied().unwrap_or_default();
        let shape_of = |i: usize| {
            vals.get(i)
                .map_or(Shape::Bounds(Bounds::SCALAR), |a| a.shape.clone())
        };
        let ty_of = |i: usize| vals.get(i).map_or(Ty::Dyn, |a| a.ty.clone());
        let scalar = || Shape::Bounds(Bounds::SCALAR);
        let string = |len: u64| Shape::Bounds(Bounds::string(len));
        let (ty, shape, extra): (Ty, Shape<'o>, u64) = match name {
            op::LOGICAL_AND | op::LOGICAL_OR | op::LOGICAL_NOT | op::NOT_STRICTLY_FALSE => {
                (Ty::Bool, scalar(), 0)
            }
            op::CONDITIONAL => (
                ty_of(1).join(&ty_of(2)),
                self.join(&shape_of(1), &shape_of(2)),
                0,
            ),
            op::EQUALS
            | op::NOT_EQUALS
            | op::LESS
            | op::LESS_EQUALS
            | op::GREATER
            | op::GREATER_EQUALS => (Ty::Bool, scalar(), arg(0).size.min(arg(1).size)),
            op::IN => (Ty::Bool, scalar(), arg(0).size.saturating_add(arg(1).size)),
            op::ADD => {
                let ty = ty_of(0).arithmetic(vals.get(1).map(|a| &a.ty));
                if vals.len() != 2 || vals.iter().any(|a| a.ty.is_scalar()) {
                    (ty, scalar(), 0)
                } else {
                    let (l, r) = (arg(0), arg(1));
                    let sum = Bounds {
                        size: l.size.saturating_add(r.size),
                        item: l.item.max(r.item),
                        len: l.len.saturating_add(r.len),
                        str_len: l.str_len.saturating_add(r.str_len),
                    };
                    (ty, Shape::Bounds(sum), sum.size)
                }
            }
            op::SUBSTRACT | op::MULTIPLY | op::DIVIDE | op::MODULO | op::NEGATE => {
                (ty_of(0).arithmetic(vals.get(1).map(|a| &a.ty)), scalar(), 0)
            }
            op::INDEX => {
                let shape = self.index(&shape_of(0), call.args.get(1));
                let mut extra = arg(1).size;
                if vals.first().is_some_and(Abs::may_be_optional) {
                    // indexing through an optional copies the element
                    extra = extra.saturating_add(self.bounds(&shape).size);
                }
                (ty_of(0).through_optional(), shape, extra)
            }
            op::OPT_INDEX | op::OPT_SELECT => {
                let shape = self.index(&shape_of(0), call.args.get(1));
                let copy = self.bounds(&shape).size;
                (Ty::Not("optional"), shape, arg(1).size.saturating_add(copy))
            }
            "size" => (Ty::Not("int"), scalar(), arg(0).size),
            "contains" | "startsWith" | "endsWith" => {
                (Ty::Bool, scalar(), arg(0).size.saturating_add(arg(1).size))
            }
            "matches" => {
                // the pattern: `s.matches(p)` or `matches(s, p)`
                let pattern = if receiver.is_some() {
                    call.args.first()
                } else {
                    call.args.get(1)
                };
                let regex = match pattern.map(|p| &p.expr) {
                    Some(Expr::Literal(LiteralValue::String(p))) => regex_weight(p.inner()),
                    _ => RegexWeight {
                        compile: REGEX_DYNAMIC,
                        states: arg(1).size.saturating_mul(CLASS_STATES),
                    },
                };
                let extra = REGEX_COMPILE.saturating_add(regex.compile).saturating_add(
                    arg(0)
                        .size
                        .saturating_add(1)
                        .saturating_mul(regex.states.saturating_add(1)),
                );
                (Ty::Bool, scalar(), extra)
            }
            "bool" => (Ty::Bool, scalar(), arg(0).size),
            "int" | "uint" | "double" | "duration" | "timestamp" => {
                let t = match name {
                    "int" => "int",
                    "uint" => "uint",
                    "double" => "double",
                    "duration" => "duration",
                    _ => "timestamp",
                };
                (Ty::Not(t), scalar(), arg(0).size)
            }
            "string" | "bytes" => {
                // scalars print in at most ~330 bytes (a double in full)
                let len = arg(0).str_len.max(400);
                let t = if name == "string" { "string" } else { "bytes" };
                (Ty::Not(t), string(len), len.saturating_add(arg(0).size))
            }
            "dyn" => (Ty::Dyn, shape_of(0), 0),
            "type" => (Ty::Not("type"), scalar(), 0),
            "getDate" | "getDayOfMonth" | "getDayOfWeek" | "getDayOfYear" | "getFullYear"
            | "getHours" | "getMilliseconds" | "getMinutes" | "getMonth" | "getSeconds" => (
                Ty::Not("int"),
                scalar(),
                arg(0).size.saturating_add(arg(1).size),
            ),
            "optional.of" | "optional.ofNonZeroValue" => {
                (Ty::Not("optional"), shape_of(0), arg(0).size)
            }
            "optional.none" => (Ty::Not("optional"), scalar(), 0),
            "value" => (Ty::Dyn, shape_of(0), arg(0).size),
            "hasValue" => (Ty::Bool, scalar(), 0),
            "or" | "orValue" => {
                let shape = self.join(&shape_of(0), &shape_of(1));
                let copy = self.bounds(&shape).size;
                let ty = if name == "or" {
                    Ty::Not("optional")
                } else {
                    Ty::Dyn
                };
                (ty, shape, copy)
            }
            "charAt" => (Ty::Not("string"), string(4), arg(0).size),
            "indexOf" | "lastIndexOf" => {
                let extra = arg(0)
                    .size
                    .saturating_add(1)
                    .saturating_mul(arg(1).size.saturating_add(1));
                (Ty::Not("int"), scalar(), extra)
            }
            "join" => {
                let len = arg(0)
                    .size
                    .saturating_add(arg(0).len.saturating_mul(arg(1).str_len));
                (Ty::Not("string"), string(len), len)
            }
            "lowerAscii" | "upperAscii" | "trim" | "reverse" | "substring" => {
                (Ty::Not("string"), string(arg(0).str_len), arg(0).size)
            }
            "replace" => {
                let s = arg(0).str_len;
                let len = s
                    .saturating_add(1)
                    .saturating_mul(arg(2).str_len.saturating_add(1))
                    .saturating_add(s);
                let extra = len.saturating_add(arg(0).size).saturating_add(arg(1).size);
                (Ty::Not("string"), string(len), extra)
            }
            "split" => {
                let s = arg(0).str_len;
                let list = Bounds {
                    size: s.saturating_add(1).saturating_mul(2).saturating_add(1),
                    item: s.saturating_add(1),
                    len: s.saturating_add(1),
                    str_len: s,
                };
                let extra = list
                    .size
                    .saturating_add(arg(0).size)
                    .saturating_add(arg(1).size);
                (Ty::Not("list"), Shape::Bounds(list), extra)
            }
            "format" => {
                // each clause prints one argument, every value in it in at
                // most 512 bytes (a double in full, or with 100 digits of
                // precision)
                let f = arg(0).str_len;
                let per_clause = arg(1).size.saturating_add(1).saturating_mul(512);
                let len = f.saturating_add(f.saturating_mul(per_clause));
                (
                    Ty::Not("string"),
                    string(len),
                    len.saturating_add(arg(1).size),
                )
            }
            "strings.quote" => {
                let len = arg(0).str_len.saturating_mul(10).saturating_add(2);
                (Ty::Not("string"), string(len), len)
            }
            "base64.encode" => {
                let len = arg(0).str_len.saturating_mul(2).saturating_add(4);
                (Ty::Not("string"), string(len), len)
            }
            "base64.decode" => (Ty::Not("bytes"), string(arg(0).str_len), arg(0).size),
            other => return Err(format!("undeclared reference to function '{other}'")),
        };
        Ok(Out {
            abs: Abs { ty, shape },
            cost: cost.saturating_add(extra),
        })
    }

    fn comprehension(&mut self, c: &ComprehensionExpr) -> Result<Out<'o>, String> {
        let range = self.expr(&c.iter_range)?;
        let init = self.expr(&c.accu_init)?;
        let range_bounds = self.bounds(&range.abs.shape);
        let (n, var) = self.iterate(&range.abs.shape, c.iter_var2.is_some());
        // the loop variable is a copy of each element: all of them together
        // are at most the range
        let mut cost = range
            .cost
            .saturating_add(init.cost)
            .saturating_add(range_bounds.size)
            .saturating_add(1);
        let depth = self.scopes.len();
        let var = Abs {
            ty: Ty::Dyn,
            shape: var,
        };
        self.scopes.push((c.iter_var.clone(), var.clone()));
        if let Some(v2) = &c.iter_var2 {
            self.scopes.push((v2.clone(), var));
        }
        let result = match append_step(c) {
            Some((guard, items)) => self.append_loop(c, n, guard, items, &mut cost),
            None => self.fold_loop(c, n, &init.abs, &mut cost),
        };
        self.scopes.truncate(depth);
        let abs = result?;
        Ok(Out { abs, cost })
    }

    /// `map()`/`filter()`: the interpreter appends to the result in place.
    fn append_loop(
        &mut self,
        c: &ComprehensionExpr,
        n: u64,
        guard: Option<&IdedExpr>,
        items: &IdedExpr,
        cost: &mut u64,
    ) -> Result<Abs<'o>, String> {
        // the accumulator is never read by the step in this shape
        self.scopes.push((
            c.accu_var.clone(),
            Abs::new(Ty::Not("list"), Bounds::UNKNOWN),
        ));
        let cond = self.expr(&c.loop_cond)?;
        let guard = guard.map(|g| self.expr(g)).transpose()?;
        let items_out = self.expr(items)?;
        let ib = self.bounds(&items_out.abs.shape);
        let per_iteration = cond
            .cost
            .saturating_add(guard.map_or(0, |g| g.cost))
            .saturating_add(items_out.cost)
            .saturating_add(ib.size);
        let appended = match &items.expr {
            Expr::List(l) => count(l.elements.len()),
            _ => ib.len,
        };
        let result = Bounds {
            size: n.saturating_mul(ib.size).saturating_add(1),
            item: ib.item,
            len: n.saturating_mul(appended).max(ib.len),
            str_len: ib.str_len,
        };
        // the result is converted once more when the loop ends
        *cost = cost
            .saturating_add(n.saturating_mul(per_iteration))
            .saturating_add(result.size);
        Ok(Abs::new(Ty::Not("list"), result))
    }

    /// Any other comprehension: the accumulator is replaced by each step.
    fn fold_loop(
        &mut self,
        c: &ComprehensionExpr,
        n: u64,
        init: &Abs<'o>,
        cost: &mut u64,
    ) -> Result<Abs<'o>, String> {
        let accu = if n == 0 {
            init.clone()
        } else {
            // Sound when the step cannot grow the accumulator: then by
            // monotonicity no iteration can.
            self.scopes.push((c.accu_var.clone(), init.clone()));
            let step = self.expr(&c.loop_step);
            self.scopes.pop();
            let step = step?;
            let stable = step.abs.ty == init.ty
                && self
                    .bounds(&step.abs.shape)
                    .within(self.bounds(&init.shape));
            if stable {
                init.clone()
            } else {
                Abs::new(init.ty.join(&step.abs.ty), Bounds::UNKNOWN)
            }
        };
        let accu_size = self.bounds(&accu.shape).size;
        self.scopes.push((c.accu_var.clone(), accu));
        let cond = self.expr(&c.loop_cond)?;
        let step = self.expr(&c.loop_step)?;
        let result = self.expr(&c.result)?;
        let per_iteration = cond
            .cost
            .saturating_add(step.cost)
            .saturating_add(accu_size);
        *cost = cost
            .saturating_add(accu_size)
            .saturating_add(n.saturating_mul(per_iteration))
            .saturating_add(result.cost)
            .saturating_add(self.bounds(&result.abs.shape).size);
        Ok(result.abs)
    }
}

/// The children of a node: list elements or map values.
fn children(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array()
        .into_iter()
        .flatten()
        .chain(v.as_object().into_iter().flat_map(|o| o.values()))
}

fn literal(l: &LiteralValue) -> (Ty, Bounds) {
    match l {
        LiteralValue::Boolean(_) => (Ty::Bool, Bounds::SCALAR),
        LiteralValue::Int(_) => (Ty::Not("int"), Bounds::SCALAR),
        LiteralValue::UInt(_) => (Ty::Not("uint"), Bounds::SCALAR),
        LiteralValue::Double(_) => (Ty::Not("double"), Bounds::SCALAR),
        LiteralValue::Null => (Ty::Not("null"), Bounds::SCALAR),
        LiteralValue::String(s) => (Ty::Not("string"), Bounds::string(count(s.inner().len()))),
        LiteralValue::Bytes(b) => (Ty::Not("bytes"), Bounds::string(count(b.inner().len()))),
    }
}

/// `a.b.c` as a name, for an identifier or field selections on one.
fn qualified_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Ident(name) => Some(name.clone()),
        Expr::Select(s) if !s.test => {
            qualified_name(&s.operand.expr).map(|q| format!("{q}.{}", s.field))
        }
        _ => None,
    }
}

/// A selection chain whose root is no variable in scope (a qualified type
/// name such as `google.protobuf.Timestamp`, or an undeclared reference).
fn unscoped_qualified_name(e: &IdedExpr, analyzer: &Analyzer<'_, '_>) -> Option<String> {
    let name = qualified_name(&e.expr)?;
    let root = name.split('.').next()?;
    analyzer.lookup(root).is_none().then_some(name)
}

/// The loop step cel 0.15 runs in place (its `AppendStep`): an empty list
/// accumulator, a literal condition, the accumulator as result and a step
/// `@result + [e]` or `guard ? @result + [e] : @result`. Returns the guard
/// and the appended list.
fn append_step(c: &ComprehensionExpr) -> Option<(Option<&IdedExpr>, &IdedExpr)> {
    let accu = c.accu_var.as_str();
    let empty_init = matches!(&c.accu_init.expr, Expr::List(l) if l.elements.is_empty());
    if !empty_init || !is_ident(&c.result, accu) || !matches!(c.loop_cond.expr, Expr::Literal(_)) {
        return None;
    }
    match &c.loop_step.expr {
        Expr::Call(call) if call.func_name == op::CONDITIONAL && call.target.is_none() => {
            match call.args.as_slice() {
                [guard, step, otherwise] if is_ident(otherwise, accu) => {
                    Some((Some(guard), appended_list(step, accu)?))
                }
                _ => None,
            }
        }
        _ => Some((None, appended_list(&c.loop_step, accu)?)),
    }
}

/// The list literal `l` of `accu + l`.
fn appended_list<'e>(e: &'e IdedExpr, accu: &str) -> Option<&'e IdedExpr> {
    match &e.expr {
        Expr::Call(call) if call.func_name == op::ADD && call.target.is_none() => {
            match call.args.as_slice() {
                [l, r] if is_ident(l, accu) && matches!(r.expr, Expr::List(_)) => Some(r),
                _ => None,
            }
        }
        _ => None,
    }
}

fn is_ident(e: &IdedExpr, name: &str) -> bool {
    matches!(&e.expr, Expr::Ident(n) if n == name)
}

/// The estimated work of a regular expression: compiling it (cel compiles
/// the pattern on every call) and the NFA size matching scales with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct RegexWeight {
    compile: u64,
    states: u64,
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
fn regex_weight(pattern: &str) -> RegexWeight {
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

// ---------------------------------------------------------------------------
// Polling (delivery.md §2.10).
// ---------------------------------------------------------------------------

/// Polls the CEL checks against the applied objects they match until every
/// matched object is current, any is failed, or `deadline` passes. Each poll
/// re-reads the objects from the target cluster with `client` (the stage
/// identity); an unreadable object is not ready. At the deadline the wait is
/// *progressing* if the last poll saw an object whose `inProgress` held, else
/// failed. `deleting` is polled every 5 s and aborts the wait when true.
pub async fn wait_exprs<F, Fut>(
    clients: &ClientFactory,
    client: &kube::Client,
    applied: &[ObjectRef],
    checks: &[CompiledCheck],
    deadline: tokio::time::Instant,
    mut deleting: F,
) -> Verdict
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let targets: Vec<(&ObjectRef, Arc<Vec<CompiledCheck>>)> = applied
        .iter()
        .filter_map(|r| {
            let matched: Vec<CompiledCheck> = checks
                .iter()
                .filter(|c| c.matches(&r.api_version, &r.kind))
                .cloned()
                .collect();
            (!matched.is_empty()).then(|| (r, Arc::new(matched)))
        })
        .collect();
    if targets.is_empty() {
        return Verdict::Ready;
    }
    let start = tokio::time::Instant::now();
    let mut delay = FIRST_POLL;
    let mut next_deletion_check = start + DELETION_POLL;
    let mut next_heartbeat = start + HEARTBEAT;
    loop {
        let mut pending: Vec<String> = Vec::new();
        let mut in_flight = false;
        for (r, matched) in &targets {
            let subject = r.subject();
            let obj = match read(clients, client, r).await {
                Ok(Some(obj)) => obj,
                Ok(None) => {
                    pending.push(format!("{subject}: not found"));
                    continue;
                }
                Err(e) => {
                    pending.push(format!("{subject}: {e}"));
                    continue;
                }
            };
            for outcome in evaluate_all(Arc::clone(matched), obj).await {
                match outcome {
                    ExprOutcome::Current => {}
                    ExprOutcome::InFlight(why) => {
                        in_flight = true;
                        pending.push(format!("{subject}: {why}"));
                    }
                    ExprOutcome::NotReady(why) => pending.push(format!("{subject}: {why}")),
                    ExprOutcome::Failed(why) => {
                        return Verdict::Failed(format!("readyCheck failed for {subject}: {why}"));
                    }
                }
            }
        }
        if pending.is_empty() {
            return Verdict::Ready;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            let msg = format!(
                "timed out after {} waiting for readyChecks: {}",
                crate::duration::GoDuration::from_std(now.saturating_duration_since(start)),
                pending.join("; ")
            );
            return if in_flight {
                Verdict::Progressing(msg)
            } else {
                Verdict::Failed(msg)
            };
        }
        if now >= next_deletion_check {
            if deleting().await {
                return Verdict::Deleted;
            }
            next_deletion_check = now + DELETION_POLL;
        }
        if now >= next_heartbeat {
            tracing::info!(waiting = %pending.join("; "), "still waiting for readyChecks expressions");
            next_heartbeat = now + HEARTBEAT;
        }
        let sleep = delay.min(deadline.saturating_duration_since(now));
        tokio::time::sleep(sleep).await;
        delay = (delay * 2).min(MAX_POLL);
    }
}

/// Evaluates the checks for one object off the async workers (evaluation is
/// CPU-bound, up to the cost limit).
async fn evaluate_all(checks: Arc<Vec<CompiledCheck>>, obj: Value) -> Vec<ExprOutcome> {
    tokio::task::spawn_blocking(move || {
        let input = Input::new(&obj);
        checks.iter().map(|c| input.outcome(c)).collect()
    })
    .await
    .unwrap_or_else(|e| vec![ExprOutcome::NotReady(format!("evaluation aborted: {e}"))])
}

/// GETs the live object, `None` when it does not exist.
async fn read(
    clients: &ClientFactory,
    client: &kube::Client,
    r: &ObjectRef,
) -> Result<Option<Value>, String> {
    let resource = clients
        .resource(&r.api_version, &r.kind)
        .await
        .map_err(|e| e.to_string())?;
    let api: Api<DynamicObject> = if resource.namespaced {
        Api::namespaced_with(client.clone(), &r.namespace, &resource.api)
    } else {
        Api::all_with(client.clone(), &resource.api)
    };
    match api.get_opt(&r.name).await {
        Ok(o) => Ok(o.map(|o| serde_json::to_value(o).unwrap_or(Value::Null))),
        Err(e) => Err(describe(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(
        current: Option<&str>,
        in_progress: Option<&str>,
        failed: Option<&str>,
    ) -> CustomHealthCheck {
        CustomHealthCheck {
            api_version: "apps/v1".to_string(),
            kind: "Deployment".to_string(),
            current: current.map(str::to_string),
            in_progress: in_progress.map(str::to_string),
            failed: failed.map(str::to_string),
        }
    }

    fn check(
        current: Option<&str>,
        in_progress: Option<&str>,
        failed: Option<&str>,
    ) -> CompiledCheck {
        compile(&spec(current, in_progress, failed)).expect("compiles")
    }

    fn compile_error(current: &str) -> String {
        compile(&spec(Some(current), None, None)).expect_err(current)
    }

    /// Evaluates `expr` as `current` against `obj`.
    fn holds(expr: &str, obj: &Value) -> ExprOutcome {
        evaluate(&check(Some(expr), None, None), obj)
    }

    /// The cost estimate of `expr` against `obj`.
    fn estimate(expr: &str, obj: &Value) -> u64 {
        let program = ENV.compile(expr).expect("parses");
        let facts = Facts::new(obj);
        Analyzer::bound(&facts, obj)
            .run(program.expression())
            .expect("analyses")
            .cost
    }

    fn deployment(conditions: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "apps", "generation": 2},
            "spec": {"replicas": 3},
            "status": {"observedGeneration": 2, "replicas": 3, "conditions": conditions},
        })
    }

    #[test]
    fn syntax_errors_name_the_expression() {
        let err = compile_error("status.(");
        assert!(
            err.starts_with("current: invalid CEL expression: 1:"),
            "{err}"
        );
        let err = compile(&spec(Some("true"), Some("status.x =="), None)).unwrap_err();
        assert!(
            err.starts_with("inProgress: invalid CEL expression"),
            "{err}"
        );
        let err = compile(&spec(None, None, Some("has(status)"))).unwrap_err();
        assert!(err.starts_with("failed: invalid CEL expression"), "{err}");
        let err = compile(&spec(Some("  "), None, None)).unwrap_err();
        assert_eq!(err, "current: the expression is empty");
    }

    #[test]
    fn non_bool_results_are_rejected() {
        for (expr, got) in [
            ("'Ready'", "string"),
            ("42", "int"),
            ("1 + 2", "int"),
            ("'a' + 'b'", "string"),
            ("status.replicas + 1", ARITHMETIC),
            ("-status.replicas", ARITHMETIC),
            ("size(status.conditions)", "int"),
            ("status.conditions.map(c, c.type)", "list"),
            ("status.conditions.filter(c, c.status == 'True')", "list"),
            ("[true]", "list"),
            ("{'a': true}", "map"),
            ("kind", "string"),
            ("string(status.replicas)", "string"),
            ("status.message.lowerAscii()", "string"),
            ("true ? 1 : 2", "int"),
            ("status.?ready", "optional"),
            ("type(status)", "type"),
            ("null", "null"),
        ] {
            let err = compile_error(expr);
            assert_eq!(
                err,
                format!("current: the expression must evaluate to bool, but it evaluates to {got}"),
                "{expr}"
            );
        }
    }

    #[test]
    fn bool_and_dyn_results_are_accepted() {
        for expr in [
            "true",
            "status.ready",
            "status['ready']",
            "dyn(status.ready)",
            "status.?ready.orValue(false)",
            "has(status.ready) && status.readyReplicas == spec.replicas",
            "status.conditions.exists(c, c.type == 'Ready')",
            "status.conditions.exists_one(c, c.status == 'True')",
            "cond ? status.a : false"
                .replace("cond", "has(status.a)")
                .as_str(),
            "kind == 'Deployment' && apiVersion.startsWith('apps/')",
            "type(status) == map",
            "timestamp(metadata.creationTimestamp) < timestamp('2030-01-01T00:00:00Z')",
        ] {
            compile(&spec(Some(expr), Some(expr), Some(expr)))
                .unwrap_or_else(|e| panic!("{expr}: {e}"));
        }
    }

    #[test]
    fn unknown_references_are_rejected() {
        let err = compile_error("foo == 1");
        assert!(err.contains("undeclared reference to 'foo'"), "{err}");
        let err = compile_error("status.conditions.all(c, x.ready)");
        assert!(err.contains("undeclared reference to 'x'"), "{err}");
        let err = compile_error("status.name.frobnicate()");
        assert!(
            err.contains("undeclared reference to function 'frobnicate'"),
            "{err}"
        );
        // the macro variable is in scope only inside the macro
        let err = compile_error("status.conditions.all(c, true) && c.ready");
        assert!(err.contains("undeclared reference to 'c'"), "{err}");
    }

    #[test]
    fn api_version_and_kind_are_required() {
        let mut s = spec(Some("true"), None, None);
        s.kind = String::new();
        assert_eq!(compile(&s).unwrap_err(), "kind is required");
        s.kind = "Deployment".to_string();
        s.api_version = " ".to_string();
        assert_eq!(compile(&s).unwrap_err(), "apiVersion is required");
    }

    /// Every function the analysis knows is one the interpreter has, with the
    /// arity and argument order the rules assume.
    #[test]
    fn every_function_runs() {
        let obj = json!({
            "apiVersion": "v1",
            "kind": "Thing",
            "metadata": {"name": "x", "creationTimestamp": "2024-05-06T07:08:09Z"},
            "spec": {"replicas": 3, "ratio": 0.5, "big": 18446744073709551615u64},
            "status": {"replicas": 3},
        });
        for expr in [
            "size('abc') == 3 && 'abc'.size() == 3 && size([1]) == 1 && size({'a': 1}) == 1",
            "'abc'.contains('b') && 'abc'.startsWith('a') && 'abc'.endsWith('c')",
            "'abc'.matches('^a') && matches('abc', 'c$')",
            "int('1') == 1 && uint(1) == 1u && double(1) == 1.0 && bool('true')",
            "string(1) == '1' && bytes('a') == b'a' && dyn(1) == 1 && type(1) == int",
            "duration('1m') == duration('60s') && duration('90m').getHours() == 1",
            "timestamp(metadata.creationTimestamp) < timestamp('2025-01-01T00:00:00Z')",
            "timestamp(metadata.creationTimestamp).getFullYear() == 2024",
            "timestamp(metadata.creationTimestamp).getMonth() == 4",
            "timestamp(metadata.creationTimestamp).getDate() == 6",
            "timestamp(metadata.creationTimestamp).getDayOfMonth() == 5",
            "timestamp(metadata.creationTimestamp).getDayOfWeek() == 1",
            "timestamp(metadata.creationTimestamp).getDayOfYear() == 126",
            "timestamp(metadata.creationTimestamp).getHours('UTC') == 7",
            "timestamp(metadata.creationTimestamp).getMinutes() == 8",
            "timestamp(metadata.creationTimestamp).getSeconds() == 9",
            "timestamp(metadata.creationTimestamp).getMilliseconds() == 0",
            "optional.of(1).hasValue() && optional.none().orValue(2) == 2",
            "optional.ofNonZeroValue(0).or(optional.of(3)).value() == 3",
            "status.?missing.orValue(1) == 1 && status.?replicas.optMap(r, r + 1).value() == 4",
            "'abc'.charAt(1) == 'b' && 'abcb'.indexOf('b') == 1 && 'abcb'.lastIndexOf('b') == 3",
            "'abcb'.indexOf('b', 2) == 3 && 'abcb'.lastIndexOf('b', 2) == 1",
            "['a', 'b'].join('-') == 'a-b' && ['a'].join() == 'a'",
            "'AbC'.lowerAscii() == 'abc' && 'abc'.upperAscii() == 'ABC' && ' a '.trim() == 'a'",
            "'abc'.reverse() == 'cba' && 'aXa'.replace('X', 'b') == 'aba'",
            "'aXaX'.replace('X', 'b', 1) == 'abaX' && 'a,b'.split(',') == ['a', 'b']",
            "'a,b,c'.split(',', 2) == ['a', 'b,c']",
            "'abc'.substring(1) == 'bc' && 'abc'.substring(0, 1) == 'a'",
            "'%s-%d'.format(['a', 1]) == 'a-1' && strings.quote('a') == '\"a\"'",
            "base64.encode(b'a') == 'YQ==' && base64.decode('YQ==') == b'a'",
            "[1, 2].map(x, x * 2) == [2, 4] && [1, 2, 3].map(x, x > 1, x) == [2, 3]",
            "[1, 2].filter(x, x > 1) == [2] && [1, 2].exists_one(x, x == 1)",
            "[1].existsOne(x, x == 1) && [1, 2].all(x, x > 0) && [1, 2].exists(x, x > 1)",
            "{'a': 1}.all(k, k == 'a') && 'a' in {'a': 1} && 1 in [1] && [1] + [2] == [1, 2]",
            "-1 < 0 && 5 % 2 == 1 && 6 / 2 == 3 && 2 - 1 == 1 && !false && 1 <= 1 && 2 >= 1",
            "spec.replicas == 3 && spec.ratio == 0.5 && spec.big == 18446744073709551615u",
            "apiVersion == 'v1' && kind == 'Thing'",
        ] {
            assert_eq!(holds(expr, &obj), ExprOutcome::Current, "{expr}");
        }
    }

    #[test]
    fn outcome_branches() {
        let obj =
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "status": {"phase": "Rolling"}});
        let is = |p: &str| format!("status.phase == '{p}'");
        // failed wins over current
        let c = check(Some("true"), None, Some(&is("Rolling")));
        assert!(
            matches!(evaluate(&c, &obj), ExprOutcome::Failed(m) if m.contains("failed expression"))
        );
        assert_eq!(
            evaluate(
                &check(Some(&is("Rolling")), None, Some(&is("Broken"))),
                &obj
            ),
            ExprOutcome::Current
        );
        // not current: in progress or not
        let c = check(Some(&is("Done")), Some(&is("Rolling")), None);
        assert!(
            matches!(evaluate(&c, &obj), ExprOutcome::InFlight(m) if m.contains("is false") && m.contains("inProgress"))
        );
        let c = check(Some(&is("Done")), Some(&is("Waiting")), None);
        assert!(
            matches!(evaluate(&c, &obj), ExprOutcome::NotReady(m) if m.contains("current expression") && m.contains("is false"))
        );
        // an evaluation error is not current, and may still be in progress
        let c = check(Some("status.missing.deep == 1"), Some(&is("Rolling")), None);
        assert!(matches!(evaluate(&c, &obj), ExprOutcome::InFlight(_)));
        let c = check(Some("status.missing.deep == 1"), None, None);
        assert!(matches!(evaluate(&c, &obj), ExprOutcome::NotReady(m) if m.contains("missing")),);
        // a dyn result that is not a bool is an evaluation error
        assert!(
            matches!(holds("status.phase", &obj), ExprOutcome::NotReady(m) if m.contains("evaluated to string, not bool"))
        );
        // no current: nothing to wait for, unless failed
        assert_eq!(
            evaluate(&check(None, Some("true"), None), &obj),
            ExprOutcome::Current
        );
        assert!(matches!(
            evaluate(&check(None, None, Some("true")), &obj),
            ExprOutcome::Failed(_)
        ));
        // a failed expression that errors does not fail
        assert_eq!(
            evaluate(&check(None, None, Some("status.missing.deep")), &obj),
            ExprOutcome::Current
        );
    }

    #[test]
    fn missing_maps_are_empty() {
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "status": null});
        for expr in [
            "!has(status.ready)",
            "status == {}",
            "spec == {}",
            "size(status) == 0",
            "!status.exists(k, true)",
            "has(metadata.name)",
        ] {
            assert_eq!(holds(expr, &obj), ExprOutcome::Current, "{expr}");
        }
        let bare = json!({});
        assert_eq!(
            holds(
                "apiVersion == '' && kind == '' && metadata == {} && spec == {} && status == {}",
                &bare
            ),
            ExprOutcome::Current
        );
    }

    #[test]
    fn flux_style_deployment_check() {
        let c = check(
            Some("status.conditions.filter(c, c.type == 'Available').all(c, c.status == 'True')"),
            Some("status.conditions.exists(c, c.type == 'Progressing' && c.status == 'True')"),
            Some(
                "status.conditions.exists(c, c.type == 'Progressing' && c.reason == 'ProgressDeadlineExceeded')",
            ),
        );
        let available = deployment(json!([
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
        ]));
        assert_eq!(evaluate(&c, &available), ExprOutcome::Current);
        let rolling = deployment(json!([
            {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"},
            {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"},
        ]));
        assert!(matches!(evaluate(&c, &rolling), ExprOutcome::InFlight(_)));
        let stuck = deployment(json!([
            {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"},
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"},
        ]));
        assert!(matches!(evaluate(&c, &stuck), ExprOutcome::Failed(_)));
    }

    #[test]
    fn matching_is_by_group_and_kind() {
        let c = check(Some("true"), None, None);
        assert!(c.matches("apps/v1", "Deployment"));
        assert!(c.matches("apps/v1beta2", "Deployment"));
        assert!(!c.matches("extensions/v1beta1", "Deployment"));
        assert!(!c.matches("apps/v1", "StatefulSet"));
        assert!(!c.matches("v1", "Deployment"));
        let mut core = spec(Some("true"), None, None);
        core.api_version = "v1".to_string();
        core.kind = "ConfigMap".to_string();
        let core = compile(&core).unwrap();
        assert!(core.matches("v1", "ConfigMap"));
        assert!(!core.matches("apps/v1", "ConfigMap"));
    }

    #[test]
    fn cost_limit_refuses_nested_loops_over_a_big_list() {
        let items: Vec<u64> = (0..2000).collect();
        let obj = json!({"apiVersion": "v1", "kind": "Thing", "spec": {"items": items}});
        let nested = "spec.items.all(x, spec.items.all(y, spec.items.all(z, x + y != z - 5000)))";
        // checked first: were it under the limit, evaluating it would hang
        assert!(estimate(nested, &obj) > COST_LIMIT);
        match holds(nested, &obj) {
            ExprOutcome::NotReady(m) => assert!(m.contains("cost limit exceeded"), "{m}"),
            other => panic!("{other:?}"),
        }
        // cheap expressions on the same object run
        assert_eq!(
            holds("size(spec.items) == 2000", &obj),
            ExprOutcome::Current
        );
        assert_eq!(
            holds("spec.items.exists(x, x == 1999)", &obj),
            ExprOutcome::Current
        );
        assert!(estimate("spec.items.exists(x, x == 1999)", &obj) < 100_000);
        // the same nesting over a small list is fine
        let small = json!({"spec": {"items": [1, 2, 3]}});
        assert_eq!(holds(nested, &small), ExprOutcome::Current);
    }

    #[test]
    fn estimate_follows_the_concrete_object() {
        let obj = json!({
            "spec": {"small": [1, 2], "big": (0..1000).collect::<Vec<u32>>(), "s": "a".repeat(1000)},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        });
        // loops are charged by the collection they run over, not the object
        let small = estimate(
            "spec.small.all(x, spec.small.all(y, x != y || x == y))",
            &obj,
        );
        assert!(small < 200, "{small}");
        let big = estimate("spec.big.all(x, spec.big.all(y, x != y || x == y))", &obj);
        assert!(big > 1_000_000, "{big}");
        // computed collections keep a bound: a map over the big list is as long
        let mapped = estimate(
            "spec.big.map(x, x).all(x, spec.big.map(y, y).all(y, x != y))",
            &obj,
        );
        assert!(mapped > 1_000_000, "{mapped}");
        // growing strings are charged by their size
        let grown = estimate(
            "'x'.replace('', spec.s).replace('', spec.s).replace('', spec.s).size() > 0",
            &obj,
        );
        assert!(grown > COST_LIMIT, "{grown}");
    }

    #[test]
    fn regex_cost_follows_the_compiled_size() {
        let w = regex_weight("^v[0-9]+\\.[0-9]+$");
        assert!(w.compile < 2_000 && w.states < 100, "{w:?}");
        // counted repetitions multiply, nested ones multiply again
        assert_eq!(regex_weight("a{100}").compile, 20 * 100);
        assert_eq!(regex_weight("(ab){10}{3}").compile, 40 * 30);
        assert_eq!(regex_weight("a{2,5}b{3,}").compile, 20 * 5 + 20 * 4);
        assert!(regex_weight(r"(\w{50}){50}").compile >= 20_000 * 2_500);
        // Unicode classes are heavy, also inside brackets and with flags
        assert!(regex_weight(r"[\w-]").compile > 20_000);
        assert!(regex_weight(r"\p{Greek}").compile >= 20_000);
        assert!(regex_weight("(?i)abc").compile > regex_weight("abc").compile);
        // braces that are no repetition are literals
        assert_eq!(regex_weight("a{b}").compile, 20 * 4);

        let obj = json!({
            "spec": {"items": (0..10).collect::<Vec<u32>>(), "pattern": "^we"},
            "metadata": {"name": "web"},
        });
        let heavy = r"spec.items.all(i, 'x'.matches('(\\w{50}){50}|b'))";
        assert!(estimate(heavy, &obj) > COST_LIMIT);
        assert!(matches!(holds(heavy, &obj), ExprOutcome::NotReady(m) if m.contains("cost limit")));
        assert_eq!(
            holds("metadata.name.matches('^w[a-z]+$')", &obj),
            ExprOutcome::Current
        );
        // a pattern from the object is charged as the worst the crate compiles
        assert_eq!(
            holds("metadata.name.matches(spec.pattern)", &obj),
            ExprOutcome::Current
        );
        let dynamic = "spec.items.all(i, metadata.name.matches(spec.pattern))";
        assert!(estimate(dynamic, &obj) > COST_LIMIT);
    }

    async fn sim() -> (kube_sim::KubeSim, ClientFactory, kube::Client) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let sim = kube_sim::KubeSim::start(kube_sim::Options::default()).expect("kube-sim starts");
        let kubeconfig =
            kube::config::Kubeconfig::from_yaml(&sim.kubeconfig()).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("config");
        let clients = ClientFactory::new(config).expect("clients");
        let client = clients.controller();
        (sim, clients, client)
    }

    fn config_map(name: &str, labels: Value) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default", "labels": labels},
        })
    }

    fn cm_check(current: &str, in_progress: Option<&str>, failed: Option<&str>) -> CompiledCheck {
        compile(&CustomHealthCheck {
            api_version: "v1".to_string(),
            kind: "ConfigMap".to_string(),
            current: Some(current.to_string()),
            in_progress: in_progress.map(str::to_string),
            failed: failed.map(str::to_string),
        })
        .expect("compiles")
    }

    fn cm_ref(name: &str) -> ObjectRef {
        ObjectRef {
            api_version: "v1".to_string(),
            kind: "ConfigMap".to_string(),
            namespace: "default".to_string(),
            name: name.to_string(),
        }
    }

    #[tokio::test]
    async fn wait_exprs_verdicts() {
        let (sim, clients, client) = sim().await;
        sim.load(config_map("ready", json!({"state": "ready"})))
            .unwrap();
        sim.load(config_map("rolling", json!({"state": "rolling"})))
            .unwrap();
        sim.load(config_map("broken", json!({"state": "broken"})))
            .unwrap();
        let never = || async { false };
        let soon = || tokio::time::Instant::now() + Duration::from_millis(200);
        let later = || tokio::time::Instant::now() + Duration::from_secs(60);
        let c = cm_check(
            "metadata.labels.state == 'ready'",
            Some("metadata.labels.state == 'rolling'"),
            Some("metadata.labels.state == 'broken'"),
        );
        let checks = std::slice::from_ref(&c);

        let v = wait_exprs(
            &clients,
            &client,
            &[cm_ref("ready")],
            checks,
            later(),
            never,
        )
        .await;
        assert_eq!(v, Verdict::Ready);

        // fails fast, long before the deadline
        let v = wait_exprs(
            &clients,
            &client,
            &[cm_ref("ready"), cm_ref("broken")],
            checks,
            later(),
            never,
        )
        .await;
        assert!(
            matches!(&v, Verdict::Failed(m) if m.starts_with("readyCheck failed for ConfigMap/default/broken")),
            "{v:?}"
        );

        // timeout while in flight: progressing
        let v = wait_exprs(
            &clients,
            &client,
            &[cm_ref("ready"), cm_ref("rolling")],
            checks,
            soon(),
            never,
        )
        .await;
        assert!(
            matches!(&v, Verdict::Progressing(m) if m.contains("ConfigMap/default/rolling")),
            "{v:?}"
        );

        // timeout with nothing in flight (or unreadable): failed
        let plain = cm_check("metadata.labels.state == 'ready'", None, None);
        let v = wait_exprs(
            &clients,
            &client,
            &[cm_ref("rolling"), cm_ref("gone")],
            std::slice::from_ref(&plain),
            soon(),
            never,
        )
        .await;
        assert!(
            matches!(&v, Verdict::Failed(m) if m.contains("ConfigMap/default/rolling") && m.contains("ConfigMap/default/gone: not found")),
            "{v:?}"
        );

        // checks matching no applied object are no-ops
        let other = compile(&spec(Some("false"), None, None)).unwrap();
        let v = wait_exprs(
            &clients,
            &client,
            &[cm_ref("rolling")],
            &[other],
            soon(),
            never,
        )
        .await;
        assert_eq!(v, Verdict::Ready);
        let v = wait_exprs(&clients, &client, &[], &[plain], soon(), never).await;
        assert_eq!(v, Verdict::Ready);
    }
}
