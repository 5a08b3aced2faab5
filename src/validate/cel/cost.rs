//! The static analysis of a CEL expression: the type of its result (so that
//! a non-bool result is refused at compile time) and a worst-case estimate
//! of its evaluation cost against a concrete object (see the parent module's
//! documentation for the model).

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use cel::common::ast::operators as op;
use cel::common::ast::{CallExpr, ComprehensionExpr, EntryExpr, Expr, IdedExpr, LiteralValue};
use serde_json::Value;

use super::regex::{RegexWeight, regex_weight};
use super::{ENV, MAP_VARIABLES, map_variable};

/// The most nodes an abstract value tracks individually before it falls back
/// to bounds.
const SET_CAP: usize = 1024;
/// The charge for compiling any regular expression.
const REGEX_COMPILE: u64 = 1_000;
/// The charge for compiling a pattern that is not a literal: about what the
/// regex crate spends before its compiled-size limit stops it.
const REGEX_DYNAMIC: u64 = 5_000_000;
/// NFA states a character class may stand for, for matching.
pub(super) const CLASS_STATES: u64 = 16;

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
pub(super) struct Facts {
    nodes: HashMap<*const Value, Bounds>,
}

impl Facts {
    pub(super) fn new(object: &Value) -> Facts {
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
pub(super) enum Ty {
    Bool,
    Dyn,
    /// Known not to be a bool; the name says what it is.
    Not(&'static str),
}

pub(super) const ARITHMETIC: &str = "the result of an arithmetic operator, never a bool";
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
pub(super) struct Abs<'o> {
    pub(super) ty: Ty,
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
pub(super) struct Out<'o> {
    pub(super) abs: Abs<'o>,
    pub(super) cost: u64,
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

pub(super) struct Analyzer<'f, 'o> {
    facts: Option<&'f Facts>,
    scopes: Vec<(String, Abs<'o>)>,
}

impl Analyzer<'static, 'static> {
    /// For compiling: the variables are unknown.
    pub(super) fn unbound() -> Analyzer<'static, 'static> {
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
    pub(super) fn bound(facts: &'f Facts, object: &'o Value) -> Analyzer<'f, 'o> {
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
    pub(super) fn run(mut self, e: &IdedExpr) -> Result<Out<'o>, String> {
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
