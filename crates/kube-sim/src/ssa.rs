//! Server-side apply and `managedFields` bookkeeping, following
//! structured-merge-diff (`merge.Updater`: `Apply`, `Update`, `prune`) and the
//! kube-apiserver field manager layers around it (`internal/fieldmanager`:
//! manager identifiers, stripped metadata fields, timestamps, the
//! `before-first-apply` manager, the cap of ten update managers, the encoding
//! and order of `managedFields`, conflict errors).
//!
//! Managers are identified like the real server does: an `Apply` entry by
//! (manager, subresource), an `Update` entry by (manager, apiVersion,
//! subresource). Conflicts are checked against every other manager; what keeps
//! a `/status` applier from conflicting with `spec` owners is that each
//! endpoint ignores the fields it resets (see `SsaOptions::ignored` and
//! `builtin_types::reset_fields`), as on the real server.
//!
//! The comparisons that decide ownership (`Update` operations, conflicts) are
//! made on objects overlaid with their kind's Go zero-value skeleton
//! (`builtin_types::zero_value`), since the real server compares typed objects
//! whose struct fields are always present: that is what decides where the real
//! server writes `"."` entries.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::builtin_types::{split_api_version, zero_value};
use crate::fieldset::{
    Atom, FieldSet, ListKind, Path, PathElement, accepts_undeclared, field_set_of, from_fields_v1,
    list_item_pe, map_field, resolve, to_fields_v1, value_eq,
};
use crate::typeinfo::TypeNode;

/// One entry of `metadata.managedFields`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ManagedFieldsEntry {
    pub manager: String,
    /// `"Apply"` or `"Update"`.
    pub operation: String,
    pub api_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// Always `"FieldsV1"`.
    pub fields_type: String,
    pub fields_v1: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subresource: Option<String>,
}

/// A field another manager owns with a different value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub manager: String,
    /// The API version of the other manager's entry.
    pub api_version: String,
    /// The path, as the real server prints it (e.g. `.spec.replicas`).
    pub field: String,
    /// The other manager's operation (`"Apply"` or `"Update"`).
    pub operation: String,
    /// The other manager's subresource.
    pub subresource: Option<String>,
}

impl Conflict {
    /// How the real server names the manager in messages:
    /// `"mgr"`, `"mgr" using apps/v1` (update managers), with
    /// ` with subresource "status"` after the name when there is one.
    pub fn manager_description(&self) -> String {
        let mut s = gofmt::quote(&self.manager);
        if let Some(sub) = &self.subresource {
            s.push_str(&format!(" with subresource {}", gofmt::quote(sub)));
        }
        if self.operation == "Update" {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }

    /// The message of the conflict's status cause (`conflict with "mgr"`).
    pub fn cause_message(&self) -> String {
        format!("conflict with {}", self.manager_description())
    }
}

/// Why an apply was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyError {
    /// 409 Conflict: fields owned by other managers would change.
    Conflicts(Vec<Conflict>),
    /// The configuration cannot be applied: it does not fit the type
    /// (duplicate or missing list-map keys, undeclared fields: the real server
    /// fails with `failed to create typed patch object (...): ...`), or it sets
    /// `metadata.managedFields` (the real server answers 400 Bad Request with
    /// `metadata.managedFields must be nil`).
    Invalid(String),
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::Conflicts(c) => f.write_str(&conflict_message(c)),
            ApplyError::Invalid(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ApplyError {}

/// The message of the real server's conflict error.
fn conflict_message(conflicts: &[Conflict]) -> String {
    if conflicts.len() == 1 {
        let c = &conflicts[0];
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            c.manager_description(),
            c.field
        );
    }
    // Grouped by manager identifier, in the order of the identifiers.
    let mut groups: BTreeMap<String, (String, Vec<&str>)> = BTreeMap::new();
    for c in conflicts {
        let id = ManagerId::new(
            &c.manager,
            c.operation == "Apply",
            &c.api_version,
            c.subresource.as_deref(),
        );
        groups
            .entry(id.json)
            .or_insert_with(|| (c.manager_description(), Vec::new()))
            .1
            .push(&c.field);
    }
    let mut lines = Vec::new();
    for (_, (desc, fields)) in groups {
        lines.push(format!("conflicts with {desc}:"));
        for f in fields {
            lines.push(format!("- {f}"));
        }
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// Options of the apply and update bookkeeping.
#[derive(Clone, Debug, Default)]
pub struct SsaOptions {
    /// Fields the endpoint resets (e.g. `status` for the main resource of a
    /// kind with a status subresource): never owned, never in conflict.
    pub ignored: FieldSet,
}

// ---------------------------------------------------------------------------
// Managers

const CURRENT_OPERATION: &str = "current-operation";
const BEFORE_FIRST_APPLY: &str = "before-first-apply";
const ANCIENT_CHANGES: &str = "ancient-changes";
const MAX_UPDATE_MANAGERS: usize = 10;

/// A manager identifier: the JSON the real server builds from an entry
/// without its time, fields and (for appliers) API version; identifiers are
/// ordered by that JSON.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ManagerId {
    json: String,
    manager: String,
    applied: bool,
    subresource: Option<String>,
}

impl ManagerId {
    fn new(
        manager: &str,
        applied: bool,
        api_version: &str,
        subresource: Option<&str>,
    ) -> ManagerId {
        let mut obj = Map::new();
        obj.insert("manager".into(), json!(manager));
        obj.insert(
            "operation".into(),
            json!(if applied { "Apply" } else { "Update" }),
        );
        if !applied && !api_version.is_empty() {
            obj.insert("apiVersion".into(), json!(api_version));
        }
        if let Some(sub) = subresource.filter(|s| !s.is_empty()) {
            obj.insert("subresource".into(), json!(sub));
        }
        // Go marshals struct fields in declaration order.
        let mut json = String::from("{");
        let order = ["manager", "operation", "apiVersion", "subresource"];
        let mut first = true;
        for k in order {
            if let Some(v) = obj.get(k) {
                if !first {
                    json.push(',');
                }
                first = false;
                gofmt::marshal_str_into(&mut json, k);
                json.push(':');
                gofmt::marshal_into(&mut json, v);
            }
        }
        json.push('}');
        ManagerId {
            json,
            manager: manager.to_string(),
            applied,
            subresource: subresource.filter(|s| !s.is_empty()).map(str::to_string),
        }
    }

    /// An internal name that is not an encoded entry.
    fn raw(name: &str) -> ManagerId {
        ManagerId {
            json: name.to_string(),
            manager: name.to_string(),
            applied: false,
            subresource: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
struct VersionedSet {
    set: FieldSet,
    api_version: String,
    applied: bool,
}

#[derive(Clone, Debug, Default)]
struct Managed {
    fields: BTreeMap<ManagerId, VersionedSet>,
    times: BTreeMap<ManagerId, Option<String>>,
}

fn decode_managed(obj: &Value) -> Result<Managed, String> {
    let mut managed = Managed::default();
    let entries = match obj.pointer("/metadata/managedFields") {
        None | Some(Value::Null) => return Ok(managed),
        Some(Value::Array(a)) => a,
        Some(_) => return Err("managedFields must be a list".into()),
    };
    for (i, raw) in entries.iter().enumerate() {
        let entry: ManagedFieldsEntry = serde_json::from_value(raw.clone())
            .map_err(|e| format!("error decoding managed fields entry {i}: {e}"))?;
        let applied = match entry.operation.as_str() {
            "Apply" => true,
            "Update" => false,
            _ => return Err("operation must be `Apply` or `Update`".into()),
        };
        if entry.api_version.is_empty() {
            return Err("apiVersion must not be empty".into());
        }
        match entry.fields_type.as_str() {
            "FieldsV1" => {}
            "" => return Err(format!("missing fieldsType in managed fields entry {i}")),
            other => {
                return Err(format!(
                    "invalid fieldsType {other:?} in managed fields entry {i}"
                ));
            }
        }
        let set = from_fields_v1(&entry.fields_v1)
            .map_err(|e| format!("error decoding versioned set: {e}"))?;
        let id = ManagerId::new(
            &entry.manager,
            applied,
            &entry.api_version,
            entry.subresource.as_deref(),
        );
        managed.fields.insert(
            id.clone(),
            VersionedSet {
                set,
                api_version: entry.api_version.clone(),
                applied,
            },
        );
        managed.times.insert(id, entry.time.clone());
    }
    Ok(managed)
}

/// Whether the request asks to clear managedFields (`[]` or `[{}]`).
fn is_reset_managed_fields(obj: &Value) -> bool {
    match obj.pointer("/metadata/managedFields") {
        Some(Value::Array(a)) if a.is_empty() => true,
        Some(Value::Array(a)) if a.len() == 1 => {
            matches!(&a[0], Value::Object(m) if m.values().all(|v| match v {
                Value::Null => true,
                Value::String(s) => s.is_empty(),
                _ => false,
            }))
        }
        _ => false,
    }
}

fn unix_seconds(t: Option<&str>) -> i64 {
    t.and_then(parse_rfc3339).unwrap_or(0)
}

/// Seconds since the epoch of an RFC 3339 time.
fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        let digits = r.bytes().take_while(u8::is_ascii_digit).count();
        rest = &r[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 => {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    // Days from the civil date (proleptic Gregorian).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = if y2 >= 0 { y2 } else { y2 - 399 } / 400;
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + h * 3600 + mi * 60 + sec - offset)
}

fn encode_managed(obj: &mut Value, managed: &Managed) {
    let mut entries: Vec<ManagedFieldsEntry> = managed
        .fields
        .iter()
        .map(|(id, vs)| ManagedFieldsEntry {
            manager: id.manager.clone(),
            operation: if vs.applied { "Apply" } else { "Update" }.to_string(),
            api_version: vs.api_version.clone(),
            time: managed.times.get(id).cloned().flatten(),
            fields_type: "FieldsV1".to_string(),
            fields_v1: to_fields_v1(&vs.set),
            subresource: id.subresource.clone(),
        })
        .collect();
    entries.sort_by(|p, q| {
        p.operation
            .cmp(&q.operation)
            .then_with(|| unix_seconds(p.time.as_deref()).cmp(&unix_seconds(q.time.as_deref())))
            .then_with(|| p.manager.cmp(&q.manager))
            .then_with(|| p.api_version.cmp(&q.api_version))
            .then_with(|| {
                p.subresource
                    .as_deref()
                    .unwrap_or("")
                    .cmp(q.subresource.as_deref().unwrap_or(""))
            })
    });
    let Some(meta) = ensure_metadata(obj) else {
        return;
    };
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert(
            "managedFields".into(),
            serde_json::to_value(entries).unwrap_or(Value::Null),
        );
    }
}

fn ensure_metadata(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let root = obj.as_object_mut()?;
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut()
}

fn remove_managed_fields(obj: &mut Value) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
}

/// The fields the real field manager never tracks.
fn strip_set() -> FieldSet {
    let mut set = FieldSet::from_paths([
        Path::fields(&["apiVersion"]),
        Path::fields(&["kind"]),
        Path::fields(&["metadata"]),
    ]);
    for f in [
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "clusterName",
        "generation",
        "managedFields",
        "resourceVersion",
    ] {
        set.insert(&Path::fields(&["metadata", f]).0);
    }
    set
}

fn strip_fields(managed: &mut Managed, id: &ManagerId) {
    if let Some(vs) = managed.fields.get_mut(id) {
        vs.set = vs.set.difference(&strip_set());
        if vs.set.is_empty() {
            managed.fields.remove(id);
        }
    }
}

/// Merges the oldest update entries into `ancient-changes` buckets (one per
/// API version) so that at most ten update entries remain.
fn cap_update_managers(managed: &mut Managed) {
    let mut updaters: Vec<ManagerId> = managed
        .fields
        .iter()
        .filter(|(_, vs)| !vs.applied)
        .map(|(id, _)| id.clone())
        .collect();
    if updaters.len() <= MAX_UPDATE_MANAGERS {
        return;
    }
    let seconds =
        |id: &ManagerId| unix_seconds(managed.times.get(id).cloned().flatten().as_deref());
    updaters.sort_by(|a, b| {
        seconds(a)
            .cmp(&seconds(b))
            .then_with(|| a.json.cmp(&b.json))
    });
    let mut first_of_version: BTreeMap<String, ManagerId> = BTreeMap::new();
    let mut length = updaters.len();
    for id in updaters {
        if length <= MAX_UPDATE_MANAGERS {
            break;
        }
        let Some(vs) = managed.fields.get(&id).cloned() else {
            continue;
        };
        let time = managed.times.get(&id).cloned().flatten();
        let bucket = ManagerId::new(ANCIENT_CHANGES, false, &vs.api_version, None);
        match first_of_version.get(&vs.api_version) {
            Some(first) => {
                if !managed.fields.contains_key(&bucket)
                    && let Some(s) = managed.fields.remove(first)
                {
                    managed.fields.insert(bucket.clone(), s);
                }
                let merged = vs.set.union(
                    &managed
                        .fields
                        .get(&bucket)
                        .map(|b| b.set.clone())
                        .unwrap_or_default(),
                );
                managed.fields.insert(
                    bucket.clone(),
                    VersionedSet {
                        set: merged,
                        api_version: vs.api_version.clone(),
                        applied: vs.applied,
                    },
                );
                managed.fields.remove(&id);
                length -= 1;
                managed.times.insert(bucket, time);
            }
            None => {
                first_of_version.insert(vs.api_version.clone(), id.clone());
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Typed operations on values

/// Overlays a kind's zero-value skeleton: missing (or null) struct fields of
/// the skeleton are added.
fn overlay(value: &Value, skeleton: &Value) -> Value {
    match (value, skeleton) {
        (Value::Object(v), Value::Object(s)) => {
            let mut out = v.clone();
            for (k, sv) in s {
                match out.get(k) {
                    None => {
                        out.insert(k.clone(), sv.clone());
                    }
                    Some(Value::Null) if sv.is_object() => {
                        out.insert(k.clone(), sv.clone());
                    }
                    Some(existing) => {
                        let merged = overlay(existing, sv);
                        out.insert(k.clone(), merged);
                    }
                }
            }
            Value::Object(out)
        }
        _ => value.clone(),
    }
}

#[derive(Default, Debug)]
struct Comparison {
    added: FieldSet,
    modified: FieldSet,
    removed: FieldSet,
}

impl Comparison {
    fn exclude(mut self, ignored: &FieldSet) -> Comparison {
        if !ignored.is_empty() {
            self.added = self.added.recursive_difference(ignored);
            self.modified = self.modified.recursive_difference(ignored);
            self.removed = self.removed.recursive_difference(ignored);
        }
        self
    }
}

/// The fields added, modified and removed from `lhs` to `rhs`
/// (structured-merge-diff's `Compare`).
fn compare(lhs: &Value, rhs: &Value, ty: &TypeNode) -> Comparison {
    let mut c = Comparison::default();
    let mut path = Vec::new();
    compare_node(Some(lhs), Some(rhs), ty, &mut path, &mut c);
    c
}

fn compare_node(
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    ty: &TypeNode,
    path: &mut Vec<PathElement>,
    c: &mut Comparison,
) {
    let la = lhs.map(|v| resolve(ty, v));
    let ra = rhs.map(|v| resolve(ty, v));
    let in_leaf = match (&la, &ra) {
        (Some(a), None) => compare_atom(a, lhs, rhs, path, c),
        (None, Some(a)) => compare_atom(a, lhs, rhs, path, c),
        (Some(a), Some(b)) if a.same_kind(b) => compare_atom(b, lhs, rhs, path, c),
        (Some(a), Some(b)) => {
            compare_atom(a, lhs, rhs, path, c);
            compare_atom(b, lhs, rhs, path, c)
        }
        (None, None) => return,
    };
    if !in_leaf {
        if lhs.is_none() {
            c.added.insert(path);
        } else if rhs.is_none() {
            c.removed.insert(path);
        }
    }
}

fn compare_leaf(
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    path: &[PathElement],
    c: &mut Comparison,
) {
    match (lhs, rhs) {
        (None, _) => c.added.insert(path),
        (_, None) => c.removed.insert(path),
        (Some(l), Some(r)) => {
            if !value_eq(l, r) {
                c.modified.insert(path);
            }
        }
    }
}

/// Returns whether the node was handled as a leaf.
fn compare_atom(
    atom: &Atom<'_>,
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    path: &mut Vec<PathElement>,
    c: &mut Comparison,
) -> bool {
    match atom {
        Atom::Scalar => {
            compare_leaf(lhs, rhs, path, c);
            true
        }
        Atom::List { items, kind } => {
            let l = lhs.and_then(Value::as_array);
            let r = rhs.and_then(Value::as_array);
            let empty = l.is_none_or(Vec::is_empty) && r.is_none_or(Vec::is_empty);
            if matches!(kind, ListKind::Atomic) || empty {
                compare_leaf(lhs, rhs, path, c);
                return true;
            }
            compare_list_items(
                items,
                kind,
                l.map(Vec::as_slice),
                r.map(Vec::as_slice),
                path,
                c,
            );
            false
        }
        Atom::Map { ty, atomic } => {
            let l = lhs.and_then(Value::as_object);
            let r = rhs.and_then(Value::as_object);
            let empty = l.is_none_or(Map::is_empty) && r.is_none_or(Map::is_empty);
            if *atomic || empty {
                compare_leaf(lhs, rhs, path, c);
                return true;
            }
            let mut keys: Vec<&String> = l.map(|m| m.keys().collect()).unwrap_or_default();
            if let Some(r) = r {
                for k in r.keys() {
                    if !l.is_some_and(|l| l.contains_key(k)) {
                        keys.push(k);
                    }
                }
            }
            for k in keys {
                let (child_ty, _) = map_field(*ty, k);
                path.push(PathElement::Field(k.clone()));
                compare_node(
                    l.and_then(|m| m.get(k)),
                    r.and_then(|m| m.get(k)),
                    child_ty,
                    path,
                    c,
                );
                path.pop();
            }
            false
        }
    }
}

fn index_items<'v>(
    kind: &ListKind<'_>,
    list: Option<&'v [Value]>,
    order: &mut Vec<PathElement>,
) -> BTreeMap<PathElement, Vec<&'v Value>> {
    let mut by_pe: BTreeMap<PathElement, Vec<&Value>> = BTreeMap::new();
    for item in list.unwrap_or(&[]) {
        let Ok(pe) = list_item_pe(kind, item) else {
            continue;
        };
        let entry = by_pe.entry(pe.clone()).or_default();
        if entry.is_empty() && !order.contains(&pe) {
            order.push(pe);
        }
        entry.push(item);
    }
    by_pe
}

fn compare_list_items(
    items_ty: &TypeNode,
    kind: &ListKind<'_>,
    lhs: Option<&[Value]>,
    rhs: Option<&[Value]>,
    path: &mut Vec<PathElement>,
    c: &mut Comparison,
) {
    let mut all = Vec::new();
    let l = index_items(kind, lhs, &mut all);
    let r = index_items(kind, rhs, &mut all);
    for pe in all {
        let ll = l.get(&pe).map(Vec::as_slice).unwrap_or(&[]);
        let rl = r.get(&pe).map(Vec::as_slice).unwrap_or(&[]);
        path.push(pe);
        match (ll.len(), rl.len()) {
            (0, 0) => {}
            (a, b) if a <= 1 && b <= 1 => {
                compare_node(ll.first().copied(), rl.first().copied(), items_ty, path, c);
            }
            (a, b) if a >= 2 && b >= 2 => {
                let same = a == b && ll.iter().zip(rl).all(|(x, y)| value_eq(x, y));
                if !same {
                    c.modified.insert(path);
                }
            }
            (a, _) if a >= 2 => {
                if let Some(first) = rl.first() {
                    compare_node(None, Some(first), items_ty, path, c);
                }
                c.removed.insert(path);
            }
            _ => {
                if let Some(first) = ll.first() {
                    compare_node(Some(first), None, items_ty, path, c);
                }
                c.added.insert(path);
            }
        }
        path.pop();
    }
}

/// A validation or merge error at a path.
#[derive(Debug)]
struct TypedError {
    path: String,
    message: String,
}

fn errors_message(errs: &[TypedError]) -> String {
    let one = |e: &TypedError| {
        if e.path.is_empty() {
            e.message.clone()
        } else {
            format!("{}: {}", e.path, e.message)
        }
    };
    if errs.len() == 1 {
        return one(&errs[0]);
    }
    let mut lines = vec!["errors:".to_string()];
    lines.extend(errs.iter().map(|e| format!("  {}", one(e))));
    lines.join("\n")
}

fn path_string(path: &[PathElement]) -> String {
    Path(path.to_vec()).to_string()
}

/// Checks a configuration against its type as the typed conversion of the
/// real server does.
fn validate(value: &Value, ty: &TypeNode, path: &mut Vec<PathElement>, errs: &mut Vec<TypedError>) {
    match resolve(ty, value) {
        Atom::Scalar => {}
        Atom::List { items, kind } => {
            let Value::Array(list) = value else { return };
            if matches!(kind, ListKind::Atomic) {
                return;
            }
            let mut seen = BTreeSet::new();
            for (i, item) in list.iter().enumerate() {
                match list_item_pe(&kind, item) {
                    Err(e) => errs.push(TypedError {
                        path: path_string(path),
                        message: format!("element {i}: {e}"),
                    }),
                    Ok(pe) => {
                        if !seen.insert(pe.clone()) {
                            errs.push(TypedError {
                                path: path_string(path),
                                message: format!("duplicate entries for key {pe}"),
                            });
                            continue;
                        }
                        path.push(pe);
                        validate(item, items, path, errs);
                        path.pop();
                    }
                }
            }
        }
        Atom::Map { ty: obj_ty, atomic } => {
            let Value::Object(map) = value else { return };
            if atomic {
                return;
            }
            for (k, v) in map {
                let (child_ty, declared) = map_field(obj_ty, k);
                path.push(PathElement::Field(k.clone()));
                if !declared && !accepts_undeclared(obj_ty) {
                    errs.push(TypedError {
                        path: path_string(path),
                        message: "field not declared in schema".to_string(),
                    });
                } else {
                    validate(v, child_ty, path, errs);
                }
                path.pop();
            }
        }
    }
}

/// Merges `rhs` into `lhs` (structured-merge-diff's `Merge`, keeping the
/// right-hand side's leaves).
fn merge(lhs: &Value, rhs: &Value, ty: &TypeNode) -> Result<Value, Vec<TypedError>> {
    let mut path = Vec::new();
    let mut errs = Vec::new();
    let out = merge_node(Some(lhs), Some(rhs), ty, &mut path, &mut errs);
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(out.unwrap_or(Value::Null))
}

fn merge_node(
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    ty: &TypeNode,
    path: &mut Vec<PathElement>,
    errs: &mut Vec<TypedError>,
) -> Option<Value> {
    let atom = match (lhs, rhs) {
        (_, Some(r)) => resolve(ty, r),
        (Some(l), None) => resolve(ty, l),
        (None, None) => return None,
    };
    match atom {
        Atom::Scalar => rhs.or(lhs).cloned(),
        Atom::List { items, kind } => {
            let l = lhs.and_then(Value::as_array);
            let r = rhs.and_then(Value::as_array);
            let empty = l.is_none_or(Vec::is_empty) && r.is_none_or(Vec::is_empty);
            if matches!(kind, ListKind::Atomic) || empty {
                return rhs.or(lhs).cloned();
            }
            merge_list_items(
                items,
                &kind,
                l.map(Vec::as_slice),
                r.map(Vec::as_slice),
                path,
                errs,
            )
        }
        Atom::Map { ty: obj_ty, atomic } => {
            let l = lhs.and_then(Value::as_object);
            let r = rhs.and_then(Value::as_object);
            let empty = l.is_none_or(Map::is_empty) && r.is_none_or(Map::is_empty);
            if atomic || empty {
                return rhs.or(lhs).cloned();
            }
            let mut out = Map::new();
            let mut keys: Vec<&String> = l.map(|m| m.keys().collect()).unwrap_or_default();
            if let Some(r) = r {
                for k in r.keys() {
                    if !l.is_some_and(|l| l.contains_key(k)) {
                        keys.push(k);
                    }
                }
            }
            for k in keys {
                let (child_ty, _) = map_field(obj_ty, k);
                path.push(PathElement::Field(k.clone()));
                if let Some(v) = merge_node(
                    l.and_then(|m| m.get(k)),
                    r.and_then(|m| m.get(k)),
                    child_ty,
                    path,
                    errs,
                ) {
                    out.insert(k.clone(), v);
                }
                path.pop();
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
    }
}

/// Merges associative lists like structured-merge-diff does: live items keep
/// their order; an item new to the list goes before the next item it shares
/// with the live list in the configuration, or at the end.
fn merge_list_items(
    items_ty: &TypeNode,
    kind: &ListKind<'_>,
    lhs: Option<&[Value]>,
    rhs: Option<&[Value]>,
    path: &mut Vec<PathElement>,
    errs: &mut Vec<TypedError>,
) -> Option<Value> {
    let lhs = lhs.unwrap_or(&[]);
    let rhs = rhs.unwrap_or(&[]);
    let mut local_errs = Vec::new();
    let mut rhs_pes = Vec::new();
    let mut observed_rhs: BTreeMap<PathElement, &Value> = BTreeMap::new();
    for (i, item) in rhs.iter().enumerate() {
        match list_item_pe(kind, item) {
            Err(e) => local_errs.push(TypedError {
                path: path_string(path),
                message: format!("element {i}: {e}"),
            }),
            Ok(pe) => {
                if observed_rhs.contains_key(&pe) {
                    local_errs.push(TypedError {
                        path: path_string(path),
                        message: format!("duplicate entries for key {pe}"),
                    });
                    continue;
                }
                observed_rhs.insert(pe.clone(), item);
                rhs_pes.push(pe);
            }
        }
    }
    let null = Value::Null;
    let mut lhs_pes = Vec::new();
    let mut observed_lhs: BTreeMap<PathElement, &Value> = BTreeMap::new();
    for (i, item) in lhs.iter().enumerate() {
        match list_item_pe(kind, item) {
            Err(e) => local_errs.push(TypedError {
                path: path_string(path),
                message: format!("element {i}: {e}"),
            }),
            Ok(pe) => {
                if observed_lhs.contains_key(&pe) {
                    // Duplicated live items are not merged with the config.
                    observed_lhs.insert(pe.clone(), &null);
                } else {
                    observed_lhs.insert(pe.clone(), item);
                }
                lhs_pes.push(pe);
            }
        }
    }
    if !local_errs.is_empty() {
        errs.extend(local_errs);
        return None;
    }

    let mut shared = rhs_pes
        .iter()
        .filter(|pe| observed_lhs.contains_key(pe))
        .cloned()
        .collect::<Vec<_>>()
        .into_iter();
    let mut next_shared = shared.next();
    let mut merged_rhs: BTreeSet<PathElement> = BTreeSet::new();
    let mut out = Vec::new();
    let (l_len, r_len) = (lhs_pes.len(), rhs_pes.len());
    let (mut li, mut ri) = (0, 0);
    let merge_item = |pe: &PathElement,
                      l: Option<&Value>,
                      r: Option<&Value>,
                      out: &mut Vec<Value>,
                      path: &mut Vec<PathElement>,
                      errs: &mut Vec<TypedError>| {
        path.push(pe.clone());
        if let Some(v) = merge_node(l, r, items_ty, path, errs) {
            out.push(v);
        }
        path.pop();
    };
    while li < l_len || ri < r_len {
        if li < l_len && ri < r_len {
            let pe = &lhs_pes[li];
            if *pe == rhs_pes[ri] {
                merged_rhs.insert(pe.clone());
                let l = observed_lhs.get(pe).copied();
                let r = observed_rhs.get(pe).copied();
                merge_item(pe, l, r, &mut out, path, errs);
                li += 1;
                ri += 1;
                next_shared = shared.next();
                continue;
            }
            if observed_rhs.contains_key(pe) && next_shared.as_ref().is_some_and(|n| n != pe) {
                li += 1;
                continue;
            }
        }
        if li < l_len {
            let pe = &lhs_pes[li];
            if !observed_rhs.contains_key(pe) {
                merge_item(pe, Some(&lhs[li]), None, &mut out, path, errs);
                li += 1;
                continue;
            } else if merged_rhs.contains(pe) {
                li += 1;
            }
        }
        if ri < r_len {
            let pe = &rhs_pes[ri];
            merged_rhs.insert(pe.clone());
            let l = observed_lhs.get(pe).copied();
            let r = observed_rhs.get(pe).copied();
            merge_item(pe, l, r, &mut out, path, errs);
            ri += 1;
            if next_shared.as_ref() == Some(pe) {
                next_shared = shared.next();
            }
        }
    }
    (!out.is_empty()).then_some(Value::Array(out))
}

/// Removes the fields of `set` from `value` (structured-merge-diff's
/// `RemoveItems`). A map or list left empty by the removal is dropped, as the
/// typed round trip of the real server leaves no empty optional field.
fn remove_items(value: &Value, set: &FieldSet, ty: &TypeNode) -> Value {
    remove_node(value, set, ty).unwrap_or_else(|| Value::Object(Map::new()))
}

fn remove_node(value: &Value, set: &FieldSet, ty: &TypeNode) -> Option<Value> {
    match resolve(ty, value) {
        Atom::Scalar => Some(value.clone()),
        Atom::List { items, kind } => {
            let Value::Array(list) = value else {
                return None;
            };
            if list.is_empty() || matches!(kind, ListKind::Atomic) {
                return None;
            }
            let mut out = Vec::new();
            for item in list {
                let Ok(pe) = list_item_pe(&kind, item) else {
                    out.push(item.clone());
                    continue;
                };
                if set.contains(std::slice::from_ref(&pe)) {
                    continue;
                }
                if set.has_children_under(&pe) {
                    if let Some(v) = remove_node(item, &set.with_prefix(&pe), items) {
                        out.push(v);
                    }
                } else {
                    out.push(item.clone());
                }
            }
            (!out.is_empty()).then_some(Value::Array(out))
        }
        Atom::Map { ty: obj_ty, atomic } => {
            let Value::Object(map) = value else {
                return None;
            };
            if map.is_empty() || atomic {
                return None;
            }
            let mut out = Map::new();
            for (k, v) in map {
                let pe = PathElement::Field(k.clone());
                if set.contains(std::slice::from_ref(&pe)) {
                    continue;
                }
                if set.has_children_under(&pe) {
                    let (child_ty, _) = map_field(obj_ty, k);
                    if let Some(v) = remove_node(v, &set.with_prefix(&pe), child_ty) {
                        out.insert(k.clone(), v);
                    }
                } else {
                    out.insert(k.clone(), v.clone());
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
    }
}

// ---------------------------------------------------------------------------
// The updater

struct Updater<'a> {
    ty: &'a TypeNode,
    skeleton: Value,
    ignored: &'a FieldSet,
}

type ConflictSets = BTreeMap<ManagerId, FieldSet>;

impl Updater<'_> {
    fn compare(&self, old: &Value, new: &Value) -> Comparison {
        let old = overlay(old, &self.skeleton);
        let new = overlay(new, &self.skeleton);
        compare(&old, &new, self.ty).exclude(self.ignored)
    }

    /// Takes the changed fields away from the other managers (or reports them
    /// as conflicts) and drops the removed fields from every other manager.
    fn update(
        &self,
        old: &Value,
        new: &Value,
        managed: &mut Managed,
        workflow: &ManagerId,
        force: bool,
    ) -> Result<Comparison, ConflictSets> {
        let cmp = self.compare(old, new);
        let changed = cmp.modified.union(&cmp.added);
        let mut conflicts = ConflictSets::new();
        for (id, vs) in &managed.fields {
            if id == workflow {
                continue;
            }
            let c = vs.set.intersection(&changed);
            if !c.is_empty() {
                conflicts.insert(id.clone(), c);
            }
        }
        if !force && !conflicts.is_empty() {
            return Err(conflicts);
        }
        for (id, c) in &conflicts {
            if let Some(vs) = managed.fields.get_mut(id) {
                vs.set = vs.set.difference(c);
            }
        }
        if !cmp.removed.is_empty() {
            for (id, vs) in managed.fields.iter_mut() {
                if id != workflow {
                    vs.set = vs.set.difference(&cmp.removed);
                }
            }
        }
        managed.fields.retain(|_, vs| !vs.set.is_empty());
        Ok(cmp)
    }

    /// An update operation by `manager` (an object written by create, update
    /// or a non-apply patch).
    fn update_operation(
        &self,
        old: &Value,
        new: &Value,
        managed: &mut Managed,
        manager: &ManagerId,
        api_version: &str,
        now: &str,
    ) {
        let current = ManagerId::raw(CURRENT_OPERATION);
        let Ok(cmp) = self.update(old, new, managed, &current, true) else {
            return;
        };
        let previous = managed
            .fields
            .get(&current)
            .map(|vs| vs.set.clone())
            .unwrap_or_default();
        let set = previous
            .difference(&cmp.removed)
            .union(&cmp.modified)
            .union(&cmp.added)
            .recursive_difference(self.ignored);
        managed.fields.insert(
            current.clone(),
            VersionedSet {
                set,
                api_version: api_version.to_string(),
                applied: false,
            },
        );
        strip_fields(managed, &current);
        if let Some(mut vs) = managed.fields.remove(&current) {
            if let Some(prev) = managed.fields.get(manager) {
                vs.set = vs.set.union(&prev.set);
            }
            managed.fields.insert(manager.clone(), vs);
            managed.times.insert(manager.clone(), Some(now.to_string()));
        }
        cap_update_managers(managed);
    }

    /// Removes what the applier applied last time and no longer applies,
    /// unless someone else owns it.
    fn prune(&self, merged: Value, managed: &Managed, last: Option<&VersionedSet>) -> Value {
        let Some(last) = last.filter(|l| !l.set.is_empty()) else {
            return merged;
        };
        let ty = self.ty;
        let ensure = |s: &FieldSet| s.ensure_named_fields_are_members(ty);
        let last_set = ensure(&last.set);
        let pruned = remove_items(&merged, &last_set, ty);

        // Add back what any manager (including the applier's new
        // configuration) owns.
        let all_managed = managed
            .fields
            .values()
            .fold(FieldSet::new(), |acc, vs| acc.union(&vs.set));
        let merged_set = ensure(&field_set_of(&merged, ty));
        let pruned_set = ensure(&field_set_of(&pruned, ty));
        let pruned = remove_items(
            &merged,
            &merged_set.difference(&pruned_set.union(&ensure(&all_managed))),
            ty,
        );

        // Only remove what the applier owned.
        let pruned_set = ensure(&field_set_of(&pruned, ty));
        remove_items(
            &merged,
            &merged_set.difference(&pruned_set).intersection(&last_set),
            ty,
        )
    }
}

fn conflicts_from(sets: &ConflictSets, managed: &Managed) -> Vec<Conflict> {
    let mut out = Vec::new();
    for (id, set) in sets {
        let api_version = managed
            .fields
            .get(id)
            .map(|vs| vs.api_version.clone())
            .unwrap_or_default();
        for p in set.paths() {
            out.push(Conflict {
                manager: id.manager.clone(),
                api_version: api_version.clone(),
                field: p.to_string(),
                operation: if id.applied { "Apply" } else { "Update" }.to_string(),
                subresource: id.subresource.clone(),
            });
        }
    }
    out
}

fn gvk_nn(obj: &Value) -> String {
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let (group, version) = split_api_version(api_version);
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    format!("{ns}/{name}; {group}/{version}, Kind={kind}")
}

fn skeleton_for(obj: &Value) -> Value {
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let (group, _) = split_api_version(api_version);
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    zero_value(group, kind)
}

/// Server-side apply of `config` by `manager` (see `apply_with`).
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    subresource: Option<&str>,
    force: bool,
    ty: &TypeNode,
    now: &str,
) -> Result<Value, ApplyError> {
    apply_with(
        live,
        config,
        manager,
        subresource,
        force,
        ty,
        now,
        &SsaOptions::default(),
    )
}

/// Server-side apply: merges `config` into `live` (or creates the object when
/// `live` is `None`), removes what `manager` applied before and no longer
/// applies (unless another manager owns it), checks conflicts with the other
/// managers (unless `force`, which takes the fields over instead) and updates
/// `metadata.managedFields`. Returns the new object; when nothing but
/// managedFields changed it is the live object with the new managedFields.
#[allow(clippy::too_many_arguments)]
pub fn apply_with(
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    subresource: Option<&str>,
    force: bool,
    ty: &TypeNode,
    now: &str,
    options: &SsaOptions,
) -> Result<Value, ApplyError> {
    if !config.is_object() {
        return Err(ApplyError::Invalid(
            "error decoding YAML: the apply configuration must be an object".into(),
        ));
    }
    if matches!(
        config.pointer("/metadata/managedFields"),
        Some(Value::Array(_))
    ) {
        return Err(ApplyError::Invalid(
            "metadata.managedFields must be nil".into(),
        ));
    }
    let mut errs = Vec::new();
    validate(config, ty, &mut Vec::new(), &mut errs);
    if !errs.is_empty() {
        return Err(ApplyError::Invalid(format!(
            "failed to create typed patch object ({}): {}",
            gvk_nn(config),
            errors_message(&errs)
        )));
    }
    let api_version = config
        .get("apiVersion")
        .and_then(Value::as_str)
        .or_else(|| {
            live.and_then(|l| l.get("apiVersion"))
                .and_then(Value::as_str)
        })
        .unwrap_or("")
        .to_string();

    let mut managed = match live {
        Some(l) => decode_managed(l)
            .map_err(|e| ApplyError::Invalid(format!("failed to decode managed fields: {e}")))?,
        None => Managed::default(),
    };
    let mut live_obj = live.cloned().unwrap_or_else(|| Value::Object(Map::new()));
    remove_managed_fields(&mut live_obj);

    let updater = Updater {
        ty,
        skeleton: skeleton_for(config),
        ignored: &options.ignored,
    };

    // An object nobody tracked yet: its existing fields go to
    // "before-first-apply".
    if managed.fields.is_empty() && live.is_some() {
        let bfa = ManagerId::new(BEFORE_FIRST_APPLY, false, &api_version, subresource);
        updater.update_operation(
            &Value::Object(Map::new()),
            &live_obj,
            &mut managed,
            &bfa,
            &api_version,
            now,
        );
    }

    let id = ManagerId::new(manager, true, &api_version, subresource);
    let merged = merge(&live_obj, config, ty).map_err(|e| {
        ApplyError::Invalid(format!("failed to merge config: {}", errors_message(&e)))
    })?;
    let last = managed.fields.get(&id).cloned();
    let set = field_set_of(config, ty).recursive_difference(&options.ignored);
    managed.fields.insert(
        id.clone(),
        VersionedSet {
            set,
            api_version: api_version.clone(),
            applied: true,
        },
    );
    let new_obj = updater.prune(merged, &managed, last.as_ref());
    if let Err(conflicts) = updater.update(&live_obj, &new_obj, &mut managed, &id, force) {
        return Err(ApplyError::Conflicts(conflicts_from(&conflicts, &managed)));
    }
    strip_fields(&mut managed, &id);
    let mut out = if value_eq(&live_obj, &new_obj) {
        live_obj
    } else {
        managed.times.insert(id.clone(), Some(now.to_string()));
        new_obj
    };
    encode_managed(&mut out, &managed);
    Ok(out)
}

/// The managedFields bookkeeping of a create (`old` is `None`), update or
/// non-apply patch by `manager` (see `record_update_with`).
pub fn record_update(
    old: Option<&Value>,
    new: &Value,
    manager: &str,
    subresource: Option<&str>,
    ty: &TypeNode,
    now: &str,
) -> Value {
    record_update_with(
        old,
        new,
        manager,
        subresource,
        ty,
        now,
        &SsaOptions::default(),
    )
}

/// Returns `new` with its managedFields updated: the fields that changed from
/// `old` (all of them for a create) become owned by `manager` (an `Update`
/// entry for the object's apiVersion) and are taken from the other managers;
/// removed fields are dropped from every manager. As on the real server, the
/// request's own `metadata.managedFields` are used when it sets some (on the
/// main resource; `[]` clears them), and an existing object without
/// managedFields stays untracked until it is applied to.
#[allow(clippy::too_many_arguments)]
pub fn record_update_with(
    old: Option<&Value>,
    new: &Value,
    manager: &str,
    subresource: Option<&str>,
    ty: &TypeNode,
    now: &str,
    options: &SsaOptions,
) -> Value {
    let decode_or_empty = |v: Option<&Value>| {
        v.map(|v| decode_managed(v).unwrap_or_default())
            .unwrap_or_default()
    };
    let mut managed = if subresource.is_some() {
        decode_or_empty(old)
    } else if is_reset_managed_fields(new) {
        Managed::default()
    } else {
        match decode_managed(new) {
            Ok(m) if !m.fields.is_empty() => m,
            _ => decode_or_empty(old),
        }
    };
    let mut new_obj = new.clone();
    remove_managed_fields(&mut new_obj);

    let is_create = match old {
        None => true,
        Some(o) => o
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty),
    };
    if managed.fields.is_empty() && !is_create {
        return new_obj;
    }
    let mut old_obj = old.cloned().unwrap_or_else(|| Value::Object(Map::new()));
    remove_managed_fields(&mut old_obj);

    let api_version = new
        .get("apiVersion")
        .and_then(Value::as_str)
        .or_else(|| {
            old.and_then(|o| o.get("apiVersion"))
                .and_then(Value::as_str)
        })
        .unwrap_or("")
        .to_string();
    let updater = Updater {
        ty,
        skeleton: skeleton_for(new),
        ignored: &options.ignored,
    };
    let id = ManagerId::new(manager, false, &api_version, subresource);
    updater.update_operation(&old_obj, &new_obj, &mut managed, &id, &api_version, now);
    encode_managed(&mut new_obj, &managed);
    new_obj
}

/// The managedFields entries of an object (empty when it has none).
pub fn managed_fields_of(obj: &Value) -> Vec<ManagedFieldsEntry> {
    obj.pointer("/metadata/managedFields")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin_types::{builtin_type, reset_fields};

    const T0: &str = "2024-01-01T00:00:00Z";
    const T1: &str = "2024-01-01T00:01:00Z";
    const T2: &str = "2024-01-01T00:02:00Z";

    fn cm_type() -> TypeNode {
        builtin_type("", "ConfigMap")
    }

    fn cm(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "ns"}, "data": data})
    }

    fn entries(obj: &Value) -> Vec<ManagedFieldsEntry> {
        managed_fields_of(obj)
    }

    fn entry(obj: &Value, manager: &str) -> Option<ManagedFieldsEntry> {
        entries(obj).into_iter().find(|e| e.manager == manager)
    }

    fn with_uid(mut v: Value) -> Value {
        v["metadata"]["uid"] = json!("u-1");
        v
    }

    #[test]
    fn create_by_apply() {
        let out = apply(
            None,
            &cm(json!({"a": "1"})),
            "alice",
            None,
            false,
            &cm_type(),
            T0,
        )
        .unwrap();
        assert_eq!(out["data"], json!({"a": "1"}));
        assert_eq!(out["metadata"]["name"], json!("c"));
        assert_eq!(
            entries(&out),
            vec![ManagedFieldsEntry {
                manager: "alice".into(),
                operation: "Apply".into(),
                api_version: "v1".into(),
                time: Some(T0.into()),
                fields_type: "FieldsV1".into(),
                fields_v1: json!({"f:data": {"f:a": {}}}),
                subresource: None,
            }]
        );
        // The JSON form matches the real server's.
        assert_eq!(
            out["metadata"]["managedFields"],
            json!([{"manager": "alice", "operation": "Apply", "apiVersion": "v1", "time": T0,
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:a": {}}}}])
        );
    }

    #[test]
    fn metadata_identity_fields_are_not_tracked() {
        let mut cfg = cm(json!({"a": "1"}));
        cfg["metadata"]["labels"] = json!({"x": "y"});
        cfg["metadata"]["creationTimestamp"] = Value::Null;
        cfg["metadata"]["generation"] = json!(3);
        let out = apply(None, &cfg, "alice", None, false, &cm_type(), T0).unwrap();
        assert_eq!(
            entry(&out, "alice").unwrap().fields_v1,
            json!({"f:data": {"f:a": {}}, "f:metadata": {"f:labels": {"f:x": {}}}})
        );
    }

    #[test]
    fn shared_ownership_with_equal_values() {
        let live = with_uid(
            apply(
                None,
                &cm(json!({"a": "1"})),
                "alice",
                None,
                false,
                &cm_type(),
                T0,
            )
            .unwrap(),
        );
        let out = apply(
            Some(&live),
            &cm(json!({"a": "1", "b": "2"})),
            "bob",
            None,
            false,
            &cm_type(),
            T1,
        )
        .unwrap();
        assert_eq!(out["data"], json!({"a": "1", "b": "2"}));
        assert_eq!(
            entry(&out, "alice").unwrap().fields_v1,
            json!({"f:data": {"f:a": {}}})
        );
        assert_eq!(
            entry(&out, "bob").unwrap().fields_v1,
            json!({"f:data": {"f:a": {}, "f:b": {}}})
        );
        // Apply entries are ordered by time.
        let names: Vec<String> = entries(&out).into_iter().map(|e| e.manager).collect();
        assert_eq!(names, vec!["alice", "bob"]);
    }

    #[test]
    fn conflict_and_force() {
        let live = with_uid(
            apply(
                None,
                &cm(json!({"a": "1"})),
                "alice",
                None,
                false,
                &cm_type(),
                T0,
            )
            .unwrap(),
        );
        let err = apply(
            Some(&live),
            &cm(json!({"a": "2"})),
            "bob",
            None,
            false,
            &cm_type(),
            T1,
        )
        .unwrap_err();
        let ApplyError::Conflicts(c) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(
            c,
            &vec![Conflict {
                manager: "alice".into(),
                api_version: "v1".into(),
                field: ".data.a".into(),
                operation: "Apply".into(),
                subresource: None,
            }]
        );
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"alice\": .data.a"
        );
        assert_eq!(c[0].cause_message(), "conflict with \"alice\"");

        let out = apply(
            Some(&live),
            &cm(json!({"a": "2"})),
            "bob",
            None,
            true,
            &cm_type(),
            T1,
        )
        .unwrap();
        assert_eq!(out["data"]["a"], json!("2"));
        // alice lost her only field: her entry is gone.
        assert!(entry(&out, "alice").is_none());
        assert_eq!(
            entry(&out, "bob").unwrap().fields_v1,
            json!({"f:data": {"f:a": {}}})
        );
    }

    #[test]
    fn conflict_messages_with_update_managers_and_several_conflicts() {
        let created = record_update(
            None,
            &cm(json!({"a": "1", "b": "1"})),
            "kubectl-create",
            None,
            &cm_type(),
            T0,
        );
        let live = with_uid(created);
        let err = apply(
            Some(&live),
            &cm(json!({"a": "2"})),
            "bob",
            None,
            false,
            &cm_type(),
            T1,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"kubectl-create\" using v1: .data.a"
        );
        let err = apply(
            Some(&live),
            &cm(json!({"a": "2", "b": "2"})),
            "bob",
            None,
            false,
            &cm_type(),
            T1,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 2 conflicts: conflicts with \"kubectl-create\" using v1:\n- .data.a\n- .data.b"
        );
        // Two managers: grouped, in the order of their identifiers.
        let live2 = apply(
            Some(&live),
            &cm(json!({"c": "1"})),
            "alice",
            None,
            false,
            &cm_type(),
            T1,
        )
        .unwrap();
        let err = apply(
            Some(&live2),
            &cm(json!({"a": "3", "c": "3"})),
            "bob",
            Some("status"),
            false,
            &cm_type(),
            T2,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 2 conflicts: conflicts with \"alice\":\n- .data.c\nconflicts with \"kubectl-create\" using v1:\n- .data.a"
        );
        let status_mgr = Conflict {
            manager: "m".into(),
            api_version: "v1".into(),
            field: ".status".into(),
            operation: "Update".into(),
            subresource: Some("status".into()),
        };
        assert_eq!(
            status_mgr.cause_message(),
            "conflict with \"m\" with subresource \"status\" using v1"
        );
    }

    #[test]
    fn removed_field_is_deleted_unless_co_owned() {
        let live = with_uid(
            apply(
                None,
                &cm(json!({"a": "1", "b": "2"})),
                "alice",
                None,
                false,
                &cm_type(),
                T0,
            )
            .unwrap(),
        );
        // Dropping b deletes it.
        let out = apply(
            Some(&live),
            &cm(json!({"a": "1"})),
            "alice",
            None,
            false,
            &cm_type(),
            T1,
        )
        .unwrap();
        assert_eq!(out["data"], json!({"a": "1"}));
        assert_eq!(
            entry(&out, "alice").unwrap().fields_v1,
            json!({"f:data": {"f:a": {}}})
        );
        // Dropping everything removes the map.
        let out2 = apply(
            Some(&out),
            &cm(json!(null)),
            "alice",
            None,
            false,
            &cm_type(),
            T1,
        );
        let out2 = out2.unwrap();
        assert!(
            out2.get("data").is_none() || out2["data"].is_null(),
            "{out2}"
        );

        // Co-owned: bob also applied b with the same value.
        let shared = apply(
            Some(&live),
            &cm(json!({"b": "2"})),
            "bob",
            None,
            false,
            &cm_type(),
            T1,
        )
        .unwrap();
        let out = apply(
            Some(&shared),
            &cm(json!({"a": "1"})),
            "alice",
            None,
            false,
            &cm_type(),
            T2,
        )
        .unwrap();
        assert_eq!(out["data"], json!({"a": "1", "b": "2"}));
        assert_eq!(
            entry(&out, "bob").unwrap().fields_v1,
            json!({"f:data": {"f:b": {}}})
        );
        assert_eq!(
            entry(&out, "alice").unwrap().fields_v1,
            json!({"f:data": {"f:a": {}}})
        );

        // Co-owned by an updater: kept too.
        let updated = record_update(
            Some(&live),
            &cm(json!({"a": "1", "b": "3"})),
            "kubectl-edit",
            None,
            &cm_type(),
            T1,
        );
        let out = apply(
            Some(&updated),
            &cm(json!({"a": "1"})),
            "alice",
            None,
            false,
            &cm_type(),
            T2,
        )
        .unwrap();
        assert_eq!(out["data"], json!({"a": "1", "b": "3"}));
    }

    fn deployment(image: &str, replicas: Option<i64>) -> Value {
        let mut d = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "app", "image": image, "ports": [{"containerPort": 80}]}]}
                }
            }
        });
        if let Some(r) = replicas {
            d["spec"]["replicas"] = json!(r);
        }
        d
    }

    #[test]
    fn containers_merge_by_name() {
        let ty = builtin_type("apps", "Deployment");
        let live = with_uid(
            apply(
                None,
                &deployment("app:1", Some(2)),
                "ci",
                None,
                false,
                &ty,
                T0,
            )
            .unwrap(),
        );
        assert_eq!(
            entry(&live, "ci").unwrap().fields_v1,
            json!({"f:spec": {
                "f:replicas": {},
                "f:selector": {},
                "f:template": {
                    "f:metadata": {"f:labels": {"f:app": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {
                        ".": {},
                        "f:image": {},
                        "f:name": {},
                        "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                    }}}
                }
            }})
        );
        // Another manager adds a sidecar and an env var to "app".
        let sidecar = json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"template": {"spec": {"containers": [
                {"name": "app", "env": [{"name": "X", "value": "1"}]},
                {"name": "side", "image": "side:1"}
            ]}}}
        });
        let live = apply(Some(&live), &sidecar, "injector", None, false, &ty, T1).unwrap();
        let containers = live["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(containers.len(), 2);
        assert_eq!(containers[0]["env"], json!([{"name": "X", "value": "1"}]));
        assert_eq!(containers[0]["image"], json!("app:1"));
        // The first applier changes its image: no conflict, the sidecar and
        // the env var stay.
        let out = apply(
            Some(&live),
            &deployment("app:2", Some(2)),
            "ci",
            None,
            false,
            &ty,
            T2,
        )
        .unwrap();
        let containers = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(containers[0]["image"], json!("app:2"));
        assert_eq!(containers[0]["env"], json!([{"name": "X", "value": "1"}]));
        assert_eq!(containers[1]["name"], json!("side"));
        // The injector changing the image conflicts, with the real path.
        let err = apply(
            Some(&out),
            &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                    "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "evil"}]}}}}),
            "injector",
            None,
            false,
            &ty,
            T2,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"ci\": .spec.template.spec.containers[name=\"app\"].image"
        );
        // Dropping replicas from the config removes it (nobody else owns it).
        let out2 = apply(
            Some(&out),
            &deployment("app:2", None),
            "ci",
            None,
            false,
            &ty,
            T2,
        )
        .unwrap();
        assert!(out2["spec"].get("replicas").is_none());
    }

    #[test]
    fn scale_then_reapply_conflicts() {
        let ty = builtin_type("apps", "Deployment");
        let live = with_uid(
            apply(
                None,
                &deployment("app:1", Some(1)),
                "ci",
                None,
                false,
                &ty,
                T0,
            )
            .unwrap(),
        );
        let mut scaled = live.clone();
        scaled["spec"]["replicas"] = json!(5);
        let scaled = record_update(Some(&live), &scaled, "kubectl-scale", None, &ty, T1);
        assert_eq!(
            entry(&scaled, "kubectl-scale").unwrap(),
            ManagedFieldsEntry {
                manager: "kubectl-scale".into(),
                operation: "Update".into(),
                api_version: "apps/v1".into(),
                time: Some(T1.into()),
                fields_type: "FieldsV1".into(),
                fields_v1: json!({"f:spec": {"f:replicas": {}}}),
                subresource: None,
            }
        );
        // ci lost replicas.
        let ci = entry(&scaled, "ci").unwrap().fields_v1;
        assert!(ci["f:spec"].get("f:replicas").is_none());
        let err = apply(
            Some(&scaled),
            &deployment("app:1", Some(1)),
            "ci",
            None,
            false,
            &ty,
            T2,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"kubectl-scale\" using apps/v1: .spec.replicas"
        );
        // Applying without replicas leaves the scaled value alone.
        let out = apply(
            Some(&scaled),
            &deployment("app:1", None),
            "ci",
            None,
            false,
            &ty,
            T2,
        )
        .unwrap();
        assert_eq!(out["spec"]["replicas"], json!(5));
        // Entries: Apply first, then Update.
        let ops: Vec<String> = entries(&out).into_iter().map(|e| e.operation).collect();
        assert_eq!(ops, vec!["Apply", "Update"]);
    }

    #[test]
    fn finalizers_merge_as_a_set() {
        let ty = cm_type();
        let with_fin = |f: Value| {
            let mut c = cm(json!(null));
            c.as_object_mut().unwrap().remove("data");
            c["metadata"]["finalizers"] = f;
            c
        };
        let live = with_uid(
            apply(
                None,
                &with_fin(json!(["a.io/x"])),
                "alice",
                None,
                false,
                &ty,
                T0,
            )
            .unwrap(),
        );
        let live = apply(
            Some(&live),
            &with_fin(json!(["b.io/y"])),
            "bob",
            None,
            false,
            &ty,
            T1,
        )
        .unwrap();
        assert_eq!(live["metadata"]["finalizers"], json!(["a.io/x", "b.io/y"]));
        assert_eq!(
            entry(&live, "bob").unwrap().fields_v1,
            json!({"f:metadata": {"f:finalizers": {"v:\"b.io/y\"": {}}}})
        );
        let out = apply(
            Some(&live),
            &with_fin(json!([])),
            "alice",
            None,
            false,
            &ty,
            T2,
        )
        .unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["b.io/y"]));
    }

    #[test]
    fn create_by_update_marks_new_maps_with_dot() {
        let ty = builtin_type("apps", "Deployment");
        let mut d = deployment("app:1", Some(1));
        d["metadata"]["labels"] = json!({"app": "web"});
        let out = record_update(None, &d, "kubectl-create", None, &ty, T0);
        assert_eq!(
            entry(&out, "kubectl-create").unwrap().fields_v1,
            json!({
                "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {
                            ".": {},
                            "f:image": {},
                            "f:name": {},
                            "f:ports": {
                                ".": {},
                                "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}
                            }
                        }}}
                    }
                }
            })
        );
        // A custom resource has no typed skeleton: spec itself is new.
        let cr = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1}});
        let out = record_update(
            None,
            &cr,
            "kubectl-create",
            None,
            &builtin_type("example.com", "Widget"),
            T0,
        );
        assert_eq!(
            entry(&out, "kubectl-create").unwrap().fields_v1,
            json!({"f:spec": {".": {}, "f:size": {}}})
        );
    }

    #[test]
    fn updates_take_changed_fields_and_drop_removed_ones() {
        let ty = cm_type();
        let live = with_uid(record_update(
            None,
            &cm(json!({"a": "1", "b": "1"})),
            "creator",
            None,
            &ty,
            T0,
        ));
        let mut new = live.clone();
        new["data"] = json!({"a": "2", "c": "1"});
        let out = record_update(Some(&live), &new, "editor", None, &ty, T1);
        assert_eq!(
            entry(&out, "editor").unwrap().fields_v1,
            json!({"f:data": {"f:a": {}, "f:c": {}}})
        );
        // b was removed, a taken: the creator keeps only the data map itself.
        assert_eq!(
            entry(&out, "creator").unwrap().fields_v1,
            json!({"f:data": {}})
        );
        // An update that changes nothing leaves the entries (and times) alone.
        let again = record_update(Some(&out), &out, "other", None, &ty, T2);
        assert_eq!(entries(&again), entries(&out));
        // Same manager again: its sets are merged, time bumped.
        let mut new2 = out.clone();
        new2["data"]["d"] = json!("1");
        let out2 = record_update(Some(&out), &new2, "editor", None, &ty, T2);
        let e = entry(&out2, "editor").unwrap();
        assert_eq!(
            e.fields_v1,
            json!({"f:data": {"f:a": {}, "f:c": {}, "f:d": {}}})
        );
        assert_eq!(e.time.as_deref(), Some(T2));
    }

    #[test]
    fn objects_without_managed_fields() {
        let ty = cm_type();
        // An existing object without managedFields stays untracked by updates.
        let live = with_uid(cm(json!({"a": "1"})));
        let mut new = live.clone();
        new["data"]["a"] = json!("2");
        let out = record_update(Some(&live), &new, "editor", None, &ty, T1);
        assert!(out["metadata"].get("managedFields").is_none());
        // The first apply gives its existing fields to "before-first-apply".
        let err = apply(
            Some(&live),
            &cm(json!({"a": "2"})),
            "alice",
            None,
            false,
            &ty,
            T1,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"before-first-apply\" using v1: .data.a"
        );
        let out = apply(
            Some(&live),
            &cm(json!({"b": "2"})),
            "alice",
            None,
            false,
            &ty,
            T1,
        )
        .unwrap();
        assert_eq!(
            entry(&out, "before-first-apply").unwrap().fields_v1,
            json!({"f:data": {".": {}, "f:a": {}}})
        );
        assert_eq!(out["data"], json!({"a": "1", "b": "2"}));
    }

    #[test]
    fn request_managed_fields_are_used_or_reset() {
        let ty = cm_type();
        let live =
            with_uid(apply(None, &cm(json!({"a": "1"})), "alice", None, false, &ty, T0).unwrap());
        // [] clears them: the object is untracked afterwards.
        let mut new = live.clone();
        new["metadata"]["managedFields"] = json!([]);
        let out = record_update(Some(&live), &new, "editor", None, &ty, T1);
        assert!(out["metadata"].get("managedFields").is_none());
        // Omitted: the live ones are kept.
        let mut new = live.clone();
        new["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("managedFields");
        new["data"]["b"] = json!("1");
        let out = record_update(Some(&live), &new, "editor", None, &ty, T1);
        assert!(entry(&out, "alice").is_some());
        assert!(entry(&out, "editor").is_some());
        // Set explicitly: used as given.
        let mut new = live.clone();
        new["metadata"]["managedFields"] = json!([{"manager": "someone", "operation": "Update",
            "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:a": {}}}}]);
        let out = record_update(Some(&live), &new, "editor", None, &ty, T1);
        let names: Vec<String> = entries(&out).into_iter().map(|e| e.manager).collect();
        assert_eq!(names, vec!["someone"]);
        // Apply configurations may not carry managedFields.
        let mut cfg = cm(json!({"a": "1"}));
        cfg["metadata"]["managedFields"] = json!([]);
        assert_eq!(
            apply(Some(&live), &cfg, "alice", None, false, &ty, T1).unwrap_err(),
            ApplyError::Invalid("metadata.managedFields must be nil".into())
        );
    }

    #[test]
    fn no_op_apply_keeps_time() {
        let ty = cm_type();
        let live =
            with_uid(apply(None, &cm(json!({"a": "1"})), "alice", None, false, &ty, T0).unwrap());
        let out = apply(
            Some(&live),
            &cm(json!({"a": "1"})),
            "alice",
            None,
            false,
            &ty,
            T1,
        )
        .unwrap();
        assert_eq!(out, live);
        // A new applier of an equal value gets an entry without time.
        let out = apply(
            Some(&live),
            &cm(json!({"a": "1"})),
            "bob",
            None,
            false,
            &ty,
            T1,
        )
        .unwrap();
        assert_eq!(entry(&out, "bob").unwrap().time, None);
        assert_eq!(out["data"], live["data"]);
    }

    #[test]
    fn invalid_configurations() {
        let ty = builtin_type("apps", "Deployment");
        let bad = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
        assert_eq!(
            apply(None, &bad, "m", None, false, &ty, T0).unwrap_err(),
            ApplyError::Invalid("failed to create typed patch object (ns/web; apps/v1, Kind=Deployment): .spec.template.spec.containers: element 0: associative list with keys has an element that omits key field \"name\" (and doesn't have default value)".into())
        );
        let dup = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"template": {"spec": {"containers": [{"name": "a"}, {"name": "a"}]}}}});
        assert_eq!(
            apply(None, &dup, "m", None, false, &ty, T0)
                .unwrap_err()
                .to_string(),
            "failed to create typed patch object (ns/web; apps/v1, Kind=Deployment): .spec.template.spec.containers: duplicate entries for key [name=\"a\"]"
        );
        // Undeclared fields of a closed schema (a CRD without
        // x-kubernetes-preserve-unknown-fields).
        let crd_ty = crate::builtin_types::with_object_meta(TypeNode::from_openapi(&json!({
            "type": "object",
            "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}
        })));
        let cr = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1, "bogus": 2}});
        assert_eq!(
            apply(None, &cr, "m", None, false, &crd_ty, T0)
                .unwrap_err()
                .to_string(),
            "failed to create typed patch object (/w; example.com/v1, Kind=Widget): .spec.bogus: field not declared in schema"
        );
    }

    #[test]
    fn list_item_dropped_by_its_applier_is_removed() {
        let ty = builtin_type("apps", "Deployment");
        let two = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "a"}, {"name": "b", "image": "b"}]}}}});
        let live = with_uid(apply(None, &two, "ci", None, false, &ty, T0).unwrap());
        // Someone edits b's image.
        let mut edited = live.clone();
        edited["spec"]["template"]["spec"]["containers"][1]["image"] = json!("b2");
        let edited = record_update(Some(&live), &edited, "kubectl-edit", None, &ty, T1);
        assert_eq!(
            entry(&edited, "kubectl-edit").unwrap().fields_v1,
            json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"b\"}": {"f:image": {}}}}}}})
        );
        // ci stops applying b: nobody else owns the item itself, so it goes,
        // with the editor's image.
        let one = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "a"}]}}}});
        let out = apply(Some(&edited), &one, "ci", None, false, &ty, T2).unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "a", "image": "a"}])
        );
        assert!(entry(&out, "kubectl-edit").is_none());
        // An item another applier also applies stays.
        let live2 = apply(
            Some(&live),
            &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [{"name": "b"}]}}}}),
            "other",
            None,
            false,
            &ty,
            T1,
        )
        .unwrap();
        let out = apply(Some(&live2), &one, "ci", None, false, &ty, T2).unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "a", "image": "a"}, {"name": "b"}])
        );
    }

    #[test]
    fn ignored_reset_fields() {
        let ty = builtin_type("apps", "Deployment");
        let opts = SsaOptions {
            ignored: reset_fields("apps", "Deployment", None),
        };
        let mut cfg = deployment("app:1", Some(1));
        cfg["status"] = json!({"replicas": 3});
        let out = apply_with(None, &cfg, "ci", None, false, &ty, T0, &opts).unwrap();
        assert!(
            entry(&out, "ci")
                .unwrap()
                .fields_v1
                .get("f:status")
                .is_none()
        );
        // A status writer through /status does not conflict with spec owners.
        let live = with_uid(out);
        let status_opts = SsaOptions {
            ignored: reset_fields("apps", "Deployment", Some("status")),
        };
        let st = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "ns"},
            "status": {"replicas": 1, "conditions": [{"type": "Available", "status": "True"}]}});
        let out = apply_with(
            Some(&live),
            &st,
            "ctrl",
            Some("status"),
            false,
            &ty,
            T1,
            &status_opts,
        )
        .unwrap();
        let e = entry(&out, "ctrl").unwrap();
        assert_eq!(e.subresource.as_deref(), Some("status"));
        assert_eq!(
            e.fields_v1,
            json!({"f:status": {"f:conditions": {"k:{\"type\":\"Available\"}": {".": {}, "f:status": {}, "f:type": {}}}, "f:replicas": {}}})
        );
    }

    #[test]
    fn update_managers_are_capped() {
        let ty = cm_type();
        let mut obj = with_uid(record_update(
            None,
            &cm(json!({"k0": "0"})),
            "m0",
            None,
            &ty,
            "2024-01-01T00:00:00Z",
        ));
        for i in 1..=11 {
            let mut new = obj.clone();
            new["data"][format!("k{i}")] = json!("x");
            let t = format!("2024-01-01T00:00:{i:02}Z");
            obj = record_update(Some(&obj), &new, &format!("m{i}"), None, &ty, &t);
        }
        let es = entries(&obj);
        assert_eq!(es.len(), 10);
        let ancient = es.iter().find(|e| e.manager == "ancient-changes").unwrap();
        assert_eq!(
            ancient.fields_v1,
            json!({"f:data": {".": {}, "f:k0": {}, "f:k1": {}, "f:k2": {}}})
        );
        assert_eq!(ancient.time.as_deref(), Some("2024-01-01T00:00:02Z"));
    }

    #[test]
    fn service_port_keys_default_protocol() {
        let ty = builtin_type("", "Service");
        let svc = |tp: i64| {
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"ports": [{"port": 80, "targetPort": tp}]}})
        };
        let live = with_uid(apply(None, &svc(8080), "a", None, false, &ty, T0).unwrap());
        let err = apply(Some(&live), &svc(9090), "b", None, false, &ty, T1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"a\": .spec.ports[port=80,protocol=\"TCP\"].targetPort"
        );
    }

    #[test]
    fn merge_keeps_live_order_and_places_new_items() {
        let ty = builtin_type("apps", "Deployment");
        let c = |names: &[&str]| json!({"spec": {"template": {"spec": {"containers": names.iter().map(|n| json!({"name": n})).collect::<Vec<_>>()}}}});
        let out = merge(&c(&["a", "b", "c"]), &c(&["b", "x"]), &ty).unwrap();
        let names: Vec<&str> = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["a", "b", "c", "x"]);
        let out = merge(&c(&["a", "b"]), &c(&["x", "a"]), &ty).unwrap();
        let names: Vec<&str> = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["x", "a", "b"]);
    }

    #[test]
    fn time_parsing() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2024-01-01T00:00:00Z"), Some(1704067200));
        assert_eq!(parse_rfc3339("2024-01-01T01:00:00+01:00"), Some(1704067200));
        assert_eq!(parse_rfc3339("2024-01-01T00:00:00.5Z"), Some(1704067200));
        assert_eq!(parse_rfc3339("bad"), None);
    }
}
