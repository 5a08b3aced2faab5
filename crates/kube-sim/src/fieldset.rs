//! Field sets as structured-merge-diff models them: the set of fields a
//! manager owns, addressed by paths of field names (`f:`), list-map keys
//! (`k:`), set values (`v:`) and list indices (`i:`), and their `FieldsV1`
//! JSON encoding as stored in `metadata.managedFields[].fieldsV1`.
//!
//! A set is a tree: at each level, `members` are the path elements that are
//! themselves in the set and `children` the path elements below which some
//! deeper paths are in the set. An element that is both a member and a child
//! (a list item or a newly created map that is owned as a whole *and* through
//! its fields) is encoded with the special `".": {}` entry.
//!
//! The walk that computes the fields set by an object (`field_set_of`) follows
//! structured-merge-diff's `ToFieldSet`: scalars, atomic lists and atomic maps
//! are leaves; items of associative lists are addressed by their keys (or by
//! their value for sets) and owned as a whole in addition to their fields; a
//! map entry is owned as a whole when it is not a declared field of its object
//! (e.g. a label), when its value is `null`, or when it is an empty map.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

use crate::typeinfo::{ListType, TypeNode};

/// The type of anything nothing is known about.
pub(crate) static ANY_TYPE: TypeNode = TypeNode::Any;

/// One step of a path.
#[derive(Clone, Debug)]
pub enum PathElement {
    /// A field of an object or a key of a map.
    Field(String),
    /// The item of an associative list with these key field values (sorted by
    /// field name).
    Key(Vec<(String, Value)>),
    /// The member of a set with this value.
    Value(Value),
    /// The item at this index of a list (never produced by the typed walks,
    /// only decoded).
    Index(usize),
}

impl PathElement {
    fn rank(&self) -> u8 {
        match self {
            PathElement::Field(_) => 0,
            PathElement::Key(_) => 1,
            PathElement::Value(_) => 2,
            PathElement::Index(_) => 3,
        }
    }

    /// The `FieldsV1` key of this element (`f:name`, `k:{...}`, `v:...`, `i:0`).
    pub fn to_fields_v1_key(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::Key(fields) => {
                let mut out = String::from("k:{");
                for (i, (name, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    gofmt::marshal_str_into(&mut out, name);
                    out.push(':');
                    gofmt::marshal_into(&mut out, value);
                }
                out.push('}');
                out
            }
            PathElement::Value(value) => {
                let mut out = String::from("v:");
                gofmt::marshal_into(&mut out, value);
                out
            }
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    /// Parses a `FieldsV1` key. `Ok(None)` for an element of an unknown kind,
    /// which (like the real decoder) is skipped.
    pub fn from_fields_v1_key(key: &str) -> Result<Option<PathElement>, FieldsV1Error> {
        let bytes = key.as_bytes();
        if bytes.len() < 2 {
            return Err(FieldsV1Error(format!(
                "key must be 2 characters long: {key}"
            )));
        }
        if bytes[1] != b':' {
            return Err(FieldsV1Error(format!("missing colon: {key}")));
        }
        let rest = &key[2..];
        match bytes[0] {
            b'f' => Ok(Some(PathElement::Field(rest.to_string()))),
            b'v' => serde_json::from_str::<Value>(rest)
                .map(|v| Some(PathElement::Value(v)))
                .map_err(|e| FieldsV1Error(format!("parsing key as path element: {e}"))),
            b'k' => {
                let obj: Map<String, Value> = serde_json::from_str(rest)
                    .map_err(|e| FieldsV1Error(format!("parsing key as path element: {e}")))?;
                let mut fields: Vec<(String, Value)> = obj.into_iter().collect();
                fields.sort_by(|a, b| a.0.cmp(&b.0));
                Ok(Some(PathElement::Key(fields)))
            }
            b'i' => rest
                .parse::<usize>()
                .map(|i| Some(PathElement::Index(i)))
                .map_err(|e| FieldsV1Error(format!("parsing key as path element: {e}"))),
            _ => Ok(None),
        }
    }
}

impl Ord for PathElement {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (PathElement::Field(a), PathElement::Field(b)) => a.as_bytes().cmp(b.as_bytes()),
            (PathElement::Key(a), PathElement::Key(b)) => {
                for ((an, av), (bn, bv)) in a.iter().zip(b.iter()) {
                    let c = an.as_bytes().cmp(bn.as_bytes());
                    if c != Ordering::Equal {
                        return c;
                    }
                    let c = value_cmp(av, bv);
                    if c != Ordering::Equal {
                        return c;
                    }
                }
                a.len().cmp(&b.len())
            }
            (PathElement::Value(a), PathElement::Value(b)) => value_cmp(a, b),
            (PathElement::Index(a), PathElement::Index(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for PathElement {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for PathElement {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for PathElement {}

impl fmt::Display for PathElement {
    /// Renders like structured-merge-diff's `PathElement.String()`:
    /// `.name`, `[name="app"]`, `[port=80,protocol="TCP"]`, `[="value"]`, `[0]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::Key(fields) => {
                f.write_str("[")?;
                for (i, (name, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{name}={}", value_to_string(value))?;
                }
                f.write_str("]")
            }
            PathElement::Value(value) => write!(f, "[={}]", value_to_string(value)),
            PathElement::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// A path from the root of an object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Path(pub Vec<PathElement>);

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for pe in &self.0 {
            write!(f, "{pe}")?;
        }
        Ok(())
    }
}

impl Path {
    /// A path of field names, e.g. `Path::fields(&["spec", "replicas"])`.
    pub fn fields(names: &[&str]) -> Path {
        Path(
            names
                .iter()
                .map(|n| PathElement::Field(n.to_string()))
                .collect(),
        )
    }
}

/// A malformed `fieldsV1` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FieldsV1Error(pub String);

/// A set of paths (see the module documentation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet {
    members: BTreeSet<PathElement>,
    /// Never holds an empty set.
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    /// The empty set.
    pub fn new() -> FieldSet {
        FieldSet::default()
    }

    /// A set of these paths.
    pub fn from_paths<I: IntoIterator<Item = Path>>(paths: I) -> FieldSet {
        let mut set = FieldSet::new();
        for p in paths {
            set.insert(&p.0);
        }
        set
    }

    /// Adds a path (its parents are not added). The empty path (the whole
    /// object) is never tracked.
    pub fn insert(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => {
                self.children.entry(first.clone()).or_default().insert(rest);
            }
        }
    }

    /// Whether this exact path is a member.
    pub fn contains(&self, path: &[PathElement]) -> bool {
        match path {
            [] => false,
            [last] => self.members.contains(last),
            [first, rest @ ..] => self
                .children
                .get(first)
                .is_some_and(|child| child.contains(rest)),
        }
    }

    /// Whether the set has no member at any depth.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.values().all(FieldSet::is_empty)
    }

    /// The number of member paths.
    pub fn len(&self) -> usize {
        self.members.len() + self.children.values().map(FieldSet::len).sum::<usize>()
    }

    /// Paths in either set.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.members.extend(other.members.iter().cloned());
        for (pe, child) in &other.children {
            let merged = match out.children.get(pe) {
                Some(mine) => mine.union(child),
                None => child.clone(),
            };
            if !merged.is_empty() {
                out.children.insert(pe.clone(), merged);
            }
        }
        out
    }

    /// Paths in both sets.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.intersection(&other.members).cloned().collect();
        let mut children = BTreeMap::new();
        for (pe, child) in &self.children {
            if let Some(theirs) = other.children.get(pe) {
                let i = child.intersection(theirs);
                if !i.is_empty() {
                    children.insert(pe.clone(), i);
                }
            }
        }
        FieldSet { members, children }
    }

    /// Paths of `self` that are not paths of `other` (a parent in `other`
    /// does not remove its children from `self`).
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.difference(&other.members).cloned().collect();
        let mut children = BTreeMap::new();
        for (pe, child) in &self.children {
            let d = match other.children.get(pe) {
                Some(theirs) => child.difference(theirs),
                None => child.clone(),
            };
            if !d.is_empty() {
                children.insert(pe.clone(), d);
            }
        }
        FieldSet { members, children }
    }

    /// Like `difference`, but a member of `other` also removes everything
    /// below it.
    pub fn recursive_difference(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.difference(&other.members).cloned().collect();
        let mut children = BTreeMap::new();
        for (pe, child) in &self.children {
            if other.members.contains(pe) {
                continue;
            }
            let d = match other.children.get(pe) {
                Some(theirs) => child.recursive_difference(theirs),
                None => child.clone(),
            };
            if !d.is_empty() {
                children.insert(pe.clone(), d);
            }
        }
        FieldSet { members, children }
    }

    /// The paths below `pe`, relative to it.
    pub fn with_prefix(&self, pe: &PathElement) -> FieldSet {
        self.children.get(pe).cloned().unwrap_or_default()
    }

    /// Whether some path below `pe` is in the set.
    pub(crate) fn has_children_under(&self, pe: &PathElement) -> bool {
        self.children.get(pe).is_some_and(|c| !c.is_empty())
    }

    /// Every member path, parents before children, members of a level before
    /// the paths below it (the order of structured-merge-diff's `Iterate`).
    pub fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        let mut prefix = Vec::new();
        self.collect_paths(&mut prefix, &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Path>) {
        for m in &self.members {
            let mut p = prefix.clone();
            p.push(m.clone());
            out.push(Path(p));
        }
        for (pe, child) in &self.children {
            prefix.push(pe.clone());
            child.collect_paths(prefix, out);
            prefix.pop();
        }
    }

    /// Adds, as members, the declared fields of objects (per `ty`) below which
    /// something is in the set (structured-merge-diff's
    /// `EnsureNamedFieldsAreMembers`; map keys and list items are not added).
    pub fn ensure_named_fields_are_members(&self, ty: &TypeNode) -> FieldSet {
        let mut members = self.members.clone();
        let mut children = BTreeMap::new();
        for (pe, child) in &self.children {
            let child_ty = match (pe, ty) {
                (PathElement::Field(name), TypeNode::Object { fields, .. }) => {
                    if fields.contains_key(name) {
                        members.insert(pe.clone());
                    }
                    ty.field(name)
                }
                (PathElement::Field(name), _) => ty.field(name),
                (PathElement::Key(_), TypeNode::List { items, .. }) => items.as_ref(),
                _ => &ANY_TYPE,
            };
            children.insert(pe.clone(), child.ensure_named_fields_are_members(child_ty));
        }
        FieldSet { members, children }
    }
}

/// Decodes a `fieldsV1` value.
pub fn from_fields_v1(value: &Value) -> Result<FieldSet, FieldsV1Error> {
    match value {
        Value::Object(map) => {
            let (set, _) = decode_level(map)?;
            Ok(set.unwrap_or_default())
        }
        Value::Null => Ok(FieldSet::new()),
        other => Err(FieldsV1Error(format!(
            "ReadMapCB: expect {{ or n, but found {}",
            other.to_string().chars().next().unwrap_or(' ')
        ))),
    }
}

/// Decodes one level; returns the subtree (if it has members or children) and
/// whether the node itself is a member.
fn decode_level(map: &Map<String, Value>) -> Result<(Option<FieldSet>, bool), FieldsV1Error> {
    let mut children: Option<FieldSet> = None;
    let mut is_member = false;
    for (key, value) in map {
        if key == "." {
            is_member = true;
            continue;
        }
        let Some(pe) = PathElement::from_fields_v1_key(key)? else {
            continue;
        };
        let inner = match value {
            Value::Object(m) => m,
            other => {
                return Err(FieldsV1Error(format!(
                    "ReadMapCB: expect {{ or n, but found {}",
                    other.to_string().chars().next().unwrap_or(' ')
                )));
            }
        };
        let (grand, child_is_member) = decode_level(inner)?;
        if child_is_member {
            children
                .get_or_insert_with(FieldSet::new)
                .members
                .insert(pe.clone());
        }
        if let Some(grand) = grand {
            children
                .get_or_insert_with(FieldSet::new)
                .children
                .insert(pe, grand);
        }
    }
    if children.is_none() {
        is_member = true;
    }
    Ok((children, is_member))
}

/// Encodes a set as `fieldsV1`.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    Value::Object(encode_level(set, false))
}

fn encode_level(set: &FieldSet, include_self: bool) -> Map<String, Value> {
    let mut out = Map::new();
    if include_self && !(set.members.is_empty() && set.children.is_empty()) {
        out.insert(".".to_string(), Value::Object(Map::new()));
    }
    // Elements in order; an element that is both a member and a child is
    // written once, with ".".
    let mut all: BTreeSet<&PathElement> = set.members.iter().collect();
    all.extend(set.children.keys());
    for pe in all {
        let key = pe.to_fields_v1_key();
        match set.children.get(pe) {
            Some(child) => {
                let inner = encode_level(child, set.members.contains(pe));
                out.insert(key, Value::Object(inner));
            }
            None => {
                out.insert(key, Value::Object(Map::new()));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Typed walks shared with the apply machinery.

/// How a value is handled at a node of the type tree.
pub(crate) enum Atom<'a> {
    /// A leaf (also used where the value does not fit the type).
    Scalar,
    /// A list and how its items are identified.
    List {
        items: &'a TypeNode,
        kind: ListKind<'a>,
    },
    /// A map or object: `ty` is the object node (`None` when deduced), `atomic`
    /// whether it is owned and replaced as a whole.
    Map {
        ty: Option<&'a TypeNode>,
        atomic: bool,
    },
}

pub(crate) enum ListKind<'a> {
    Atomic,
    Set,
    Map(&'a [String]),
}

impl Atom<'_> {
    /// Atoms of the same kind are handled together by the walks.
    pub(crate) fn same_kind(&self, other: &Atom<'_>) -> bool {
        matches!(
            (self, other),
            (Atom::Scalar, Atom::Scalar)
                | (Atom::List { .. }, Atom::List { .. })
                | (Atom::Map { .. }, Atom::Map { .. })
        )
    }
}

/// Resolves the atom for `value` at type `ty`. `null` takes the form of the
/// type (a map when nothing is known), as in structured-merge-diff.
pub(crate) fn resolve<'a>(ty: &'a TypeNode, value: &Value) -> Atom<'a> {
    match ty {
        TypeNode::Any => match value {
            Value::Array(_) => Atom::List {
                items: &ANY_TYPE,
                kind: ListKind::Atomic,
            },
            Value::Object(_) | Value::Null => Atom::Map {
                ty: None,
                atomic: false,
            },
            _ => Atom::Scalar,
        },
        TypeNode::Scalar => Atom::Scalar,
        TypeNode::Object { atomic, .. } => match value {
            Value::Object(_) | Value::Null => Atom::Map {
                ty: Some(ty),
                atomic: *atomic,
            },
            _ => Atom::Scalar,
        },
        TypeNode::List {
            items, list_type, ..
        } => match value {
            Value::Array(_) | Value::Null => Atom::List {
                items,
                kind: match list_type {
                    ListType::Atomic => ListKind::Atomic,
                    ListType::Set => ListKind::Set,
                    ListType::Map { keys } if keys.is_empty() => ListKind::Set,
                    ListType::Map { keys } => ListKind::Map(keys),
                },
            },
            _ => Atom::Scalar,
        },
    }
}

/// The type of field `key` of a map atom, and whether it is a declared field.
pub(crate) fn map_field<'a>(ty: Option<&'a TypeNode>, key: &str) -> (&'a TypeNode, bool) {
    match ty {
        Some(t @ TypeNode::Object { fields, .. }) => (t.field(key), fields.contains_key(key)),
        _ => (&ANY_TYPE, false),
    }
}

/// Whether an object node accepts fields it does not declare.
pub(crate) fn accepts_undeclared(ty: Option<&TypeNode>) -> bool {
    match ty {
        Some(TypeNode::Object { additional, .. }) => additional.is_some(),
        _ => true,
    }
}

/// The path element of an item of an associative list.
pub(crate) fn list_item_pe(kind: &ListKind<'_>, item: &Value) -> Result<PathElement, String> {
    match kind {
        ListKind::Atomic => Err("invalid indexing of non-associative list".to_string()),
        ListKind::Map(keys) => {
            let obj = match item {
                Value::Null => {
                    return Err(
                        "associative list with keys may not have a null element".to_string()
                    );
                }
                Value::Object(o) => o,
                _ => {
                    return Err(
                        "associative list with keys may not have non-map elements".to_string()
                    );
                }
            };
            let mut fields = Vec::with_capacity(keys.len());
            for key in keys.iter() {
                match obj.get(key) {
                    Some(v) => fields.push((key.clone(), v.clone())),
                    None => match key_default(keys, key) {
                        Some(d) => fields.push((key.clone(), d)),
                        None => {
                            return Err(format!(
                                "associative list with keys has an element that omits key field {:?} (and doesn't have default value)",
                                key
                            ));
                        }
                    },
                }
            }
            fields.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(PathElement::Key(fields))
        }
        ListKind::Set => match item {
            Value::Object(_) => {
                Err("associative list without keys has an element that's a map type".to_string())
            }
            Value::Array(_) => {
                Err("not supported: associative list with lists as elements".to_string())
            }
            Value::Null => Err(
                "associative list without keys has an element that's an explicit null".to_string(),
            ),
            v => Ok(PathElement::Value(v.clone())),
        },
    }
}

/// The schema default of a list-map key field. The built-in port lists (keyed
/// by `containerPort`/`port` and `protocol`) default `protocol` to `TCP` in the
/// Kubernetes OpenAPI; `TypeNode` carries no defaults otherwise.
fn key_default(keys: &[String], key: &str) -> Option<Value> {
    let is_port_list = keys.iter().any(|k| k == "containerPort" || k == "port");
    (key == "protocol" && is_port_list).then(|| Value::String("TCP".to_string()))
}

/// The fields a configuration sets, per its type (structured-merge-diff's
/// `ToFieldSet`).
pub fn field_set_of(obj: &Value, ty: &TypeNode) -> FieldSet {
    let mut set = FieldSet::new();
    let mut path = Vec::new();
    to_field_set(obj, ty, &mut path, &mut set);
    set
}

fn to_field_set(value: &Value, ty: &TypeNode, path: &mut Vec<PathElement>, set: &mut FieldSet) {
    match resolve(ty, value) {
        Atom::Scalar => set.insert(path),
        Atom::List { items, kind } => {
            if matches!(kind, ListKind::Atomic) {
                set.insert(path);
                return;
            }
            let Value::Array(list) = value else { return };
            // An item whose key appears more than once is owned as a whole,
            // once, without its fields.
            let pes: Vec<Option<PathElement>> = list
                .iter()
                .map(|item| list_item_pe(&kind, item).ok())
                .collect();
            let mut seen = BTreeSet::new();
            let mut duplicates = BTreeSet::new();
            for pe in pes.iter().flatten() {
                if !seen.insert(pe.clone()) && duplicates.insert(pe.clone()) {
                    path.push(pe.clone());
                    set.insert(path);
                    path.pop();
                }
            }
            for (item, pe) in list.iter().zip(pes) {
                let Some(pe) = pe else { continue };
                if duplicates.contains(&pe) {
                    continue;
                }
                path.push(pe);
                to_field_set(item, items, path, set);
                set.insert(path);
                path.pop();
            }
        }
        Atom::Map { ty: obj_ty, atomic } => {
            if atomic {
                set.insert(path);
                return;
            }
            let Value::Object(map) = value else { return };
            for (key, val) in map {
                let (child_ty, declared) = map_field(obj_ty, key);
                path.push(PathElement::Field(key.clone()));
                to_field_set(val, child_ty, path, set);
                let empty_map = matches!(val, Value::Object(m) if m.is_empty());
                if val.is_null() || empty_map || !declared {
                    set.insert(path);
                }
                path.pop();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Value helpers: ordering, equality and Go-compatible rendering.

fn type_rank(v: &Value) -> u8 {
    match v {
        Value::Number(_) => 0,
        Value::String(_) => 1,
        Value::Bool(_) => 2,
        Value::Array(_) => 3,
        Value::Object(_) => 4,
        Value::Null => 5,
    }
}

fn number_cmp(a: &serde_json::Number, b: &serde_json::Number) -> Ordering {
    if a.is_f64() || b.is_f64() {
        let (x, y) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
        return x.partial_cmp(&y).unwrap_or(Ordering::Equal);
    }
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => match (a.as_u64(), b.as_u64()) {
            (Some(x), Some(y)) => x.cmp(&y),
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        },
    }
}

/// A total order on values (numbers, then strings, booleans, lists, maps and
/// null), as structured-merge-diff's `value.Compare`.
pub(crate) fn value_cmp(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_cmp(x, y),
        (Value::String(x), Value::String(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (l, r) in x.iter().zip(y.iter()) {
                let c = value_cmp(l, r);
                if c != Ordering::Equal {
                    return c;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(x), Value::Object(y)) => {
            let mut xk: Vec<&String> = x.keys().collect();
            let mut yk: Vec<&String> = y.keys().collect();
            xk.sort();
            yk.sort();
            for (l, r) in xk.iter().zip(yk.iter()) {
                let c = l.as_bytes().cmp(r.as_bytes());
                if c != Ordering::Equal {
                    return c;
                }
                let c = value_cmp(&x[l.as_str()], &y[r.as_str()]);
                if c != Ordering::Equal {
                    return c;
                }
            }
            xk.len().cmp(&yk.len())
        }
        (Value::Null, Value::Null) => Ordering::Equal,
        _ => type_rank(a).cmp(&type_rank(b)),
    }
}

/// Deep equality where integers and floats of the same value are equal.
pub(crate) fn value_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_cmp(x, y) == Ordering::Equal,
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(l, r)| value_eq(l, r))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| value_eq(v, w)))
        }
        _ => a == b,
    }
}

/// structured-merge-diff's `value.ToString`, used in path strings.
pub(crate) fn value_to_string(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => gofmt::format_number(n),
        Value::String(s) => gofmt::quote(s),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(value_to_string).collect();
            format!("[{}]", parts.join(","))
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            keys.iter()
                .map(|k| format!("{k}={}", value_to_string(&map[k.as_str()])))
                .collect::<Vec<_>>()
                .join("")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(n: &str) -> PathElement {
        PathElement::Field(n.to_string())
    }

    fn key(name: &str, v: Value) -> PathElement {
        PathElement::Key(vec![(name.to_string(), v)])
    }

    fn containers_type() -> TypeNode {
        let container = TypeNode::object([
            (
                "ports",
                TypeNode::list_map(
                    TypeNode::object([("containerPort", TypeNode::Scalar)]),
                    &["containerPort", "protocol"],
                    Some("containerPort"),
                ),
            ),
            ("args", TypeNode::atomic_list(TypeNode::Scalar)),
            (
                "resources",
                TypeNode::object([("limits", TypeNode::object(Vec::<(&str, TypeNode)>::new()))]),
            ),
        ]);
        TypeNode::object([(
            "spec",
            TypeNode::object([
                (
                    "containers",
                    TypeNode::list_map(container, &["name"], Some("name")),
                ),
                ("finalizers", TypeNode::scalar_set()),
                (
                    "selector",
                    TypeNode::Object {
                        fields: Default::default(),
                        additional: Some(Box::new(TypeNode::Scalar)),
                        atomic: true,
                        retain_keys: false,
                    },
                ),
                ("replicas", TypeNode::Scalar),
                (
                    "labels",
                    TypeNode::Object {
                        fields: Default::default(),
                        additional: Some(Box::new(TypeNode::Scalar)),
                        atomic: false,
                        retain_keys: false,
                    },
                ),
            ]),
        )])
    }

    #[test]
    fn field_set_of_typed_object() {
        let obj = json!({
            "spec": {
                "replicas": 3,
                "selector": {"app": "x"},
                "labels": {"app.kubernetes.io/name": "x"},
                "finalizers": ["a", "b"],
                "containers": [{
                    "name": "app",
                    "image": "nginx",
                    "args": ["-v"],
                    "ports": [{"containerPort": 80}],
                    "resources": {}
                }]
            }
        });
        let set = field_set_of(&obj, &containers_type());
        let v1 = to_fields_v1(&set);
        assert_eq!(
            v1,
            json!({
                "f:spec": {
                    "f:containers": {
                        "k:{\"name\":\"app\"}": {
                            ".": {},
                            "f:args": {},
                            "f:image": {},
                            "f:name": {},
                            "f:ports": {
                                "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {
                                    ".": {},
                                    "f:containerPort": {}
                                }
                            },
                            "f:resources": {}
                        }
                    },
                    "f:finalizers": {"v:\"a\"": {}, "v:\"b\"": {}},
                    "f:labels": {"f:app.kubernetes.io/name": {}},
                    "f:replicas": {},
                    "f:selector": {}
                }
            })
        );
        // Decoding gives the same set back.
        assert_eq!(from_fields_v1(&v1).unwrap(), set);
    }

    #[test]
    fn undeclared_maps_are_owned_as_a_whole() {
        // Nothing is known: every nested map is also a member (".").
        let set = field_set_of(&json!({"spec": {"a": {"b": 1}, "c": []}}), &TypeNode::Any);
        assert_eq!(
            to_fields_v1(&set),
            json!({"f:spec": {".": {}, "f:a": {".": {}, "f:b": {}}, "f:c": {}}})
        );
    }

    #[test]
    fn null_and_empty_values_are_leaves() {
        let ty = containers_type();
        let set = field_set_of(&json!({"spec": {"labels": {}, "containers": null}}), &ty);
        assert_eq!(
            to_fields_v1(&set),
            json!({"f:spec": {"f:containers": {}, "f:labels": {}}})
        );
    }

    #[test]
    fn path_strings() {
        let p = Path(vec![
            f("spec"),
            f("template"),
            f("spec"),
            f("containers"),
            key("name", json!("app")),
            f("image"),
        ]);
        assert_eq!(
            p.to_string(),
            ".spec.template.spec.containers[name=\"app\"].image"
        );
        let p = Path(vec![
            f("spec"),
            f("ports"),
            PathElement::Key(vec![
                ("port".into(), json!(80)),
                ("protocol".into(), json!("TCP")),
            ]),
            f("targetPort"),
        ]);
        assert_eq!(
            p.to_string(),
            ".spec.ports[port=80,protocol=\"TCP\"].targetPort"
        );
        let p = Path(vec![
            f("metadata"),
            f("finalizers"),
            PathElement::Value(json!("x/y")),
        ]);
        assert_eq!(p.to_string(), ".metadata.finalizers[=\"x/y\"]");
        let p = Path(vec![
            f("metadata"),
            f("labels"),
            f("app.kubernetes.io/name"),
        ]);
        assert_eq!(p.to_string(), ".metadata.labels.app.kubernetes.io/name");
        assert_eq!(
            Path(vec![f("a"), PathElement::Index(2)]).to_string(),
            ".a[2]"
        );
    }

    #[test]
    fn set_algebra() {
        let a = FieldSet::from_paths([
            Path(vec![f("spec"), f("a")]),
            Path(vec![f("spec"), f("b")]),
            Path(vec![f("spec")]),
        ]);
        let b = FieldSet::from_paths([Path(vec![f("spec"), f("b")]), Path(vec![f("x")])]);
        assert_eq!(a.len(), 3);
        assert!(a.contains(&[f("spec"), f("a")]));
        assert!(!a.contains(&[f("x")]));
        assert_eq!(
            a.intersection(&b),
            FieldSet::from_paths([Path(vec![f("spec"), f("b")])])
        );
        assert_eq!(
            a.difference(&b),
            FieldSet::from_paths([Path(vec![f("spec"), f("a")]), Path(vec![f("spec")])])
        );
        assert_eq!(a.union(&b).len(), 4);
        // Removing a parent does not remove its children with difference...
        let parent = FieldSet::from_paths([Path(vec![f("spec")])]);
        assert_eq!(a.difference(&parent).len(), 2);
        // ...but does with recursive_difference.
        assert!(a.recursive_difference(&parent).is_empty());
        assert!(a.difference(&a).is_empty());
        assert_eq!(a.difference(&a), FieldSet::new());
        assert_eq!(
            a.paths().iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            vec![".spec", ".spec.a", ".spec.b"]
        );
    }

    #[test]
    fn fields_v1_decoding() {
        let v = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:list": {"i:0": {}, "v:3": {}}, "x:unknown": {}}
        });
        let set = from_fields_v1(&v).unwrap();
        assert!(set.contains(&[f("metadata"), f("labels")]));
        assert!(set.contains(&[f("metadata"), f("labels"), f("app")]));
        assert!(set.contains(&[f("spec"), f("list"), PathElement::Index(0)]));
        assert!(set.contains(&[f("spec"), f("list"), PathElement::Value(json!(3))]));
        assert_eq!(set.len(), 4);
        assert!(from_fields_v1(&json!({"z": {}})).is_err());
        assert!(from_fields_v1(&json!({"fx": {}})).is_err());
        assert!(from_fields_v1(&json!({"f:a": 1})).is_err());
        assert!(from_fields_v1(&json!({"k:{bad": {}})).is_err());
        assert_eq!(
            to_fields_v1(&set),
            json!({
                "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                "f:spec": {"f:list": {"i:0": {}, "v:3": {}}}
            })
        );
    }

    #[test]
    fn ordering_of_elements() {
        let mut v = [
            PathElement::Index(0),
            PathElement::Value(json!("b")),
            PathElement::Value(json!(10)),
            key("port", json!(443)),
            key("port", json!(80)),
            f("b"),
            f("a"),
        ];
        v.sort();
        let s: Vec<String> = v.iter().map(|p| p.to_fields_v1_key()).collect();
        assert_eq!(
            s,
            vec![
                "f:a",
                "f:b",
                "k:{\"port\":80}",
                "k:{\"port\":443}",
                "v:10",
                "v:\"b\"",
                "i:0"
            ]
        );
        assert_eq!(
            PathElement::Key(vec![("a".into(), json!("<&>"))]).to_fields_v1_key(),
            "k:{\"a\":\"\\u003c\\u0026\\u003e\"}"
        );
    }

    #[test]
    fn ensure_named_fields() {
        let ty = containers_type();
        let set = FieldSet::from_paths([Path(vec![
            f("spec"),
            f("containers"),
            key("name", json!("a")),
            f("image"),
        ])]);
        let ensured = set.ensure_named_fields_are_members(&ty);
        assert!(ensured.contains(&[f("spec")]));
        assert!(ensured.contains(&[f("spec"), f("containers")]));
        // List items and undeclared fields are not added.
        assert!(!ensured.contains(&[f("spec"), f("containers"), key("name", json!("a"))]));
        assert_eq!(ensured.len(), 3);
    }
}
