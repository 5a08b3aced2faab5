//! Strategic merge patch (`application/strategic-merge-patch+json`) as the
//! real API server applies it (apimachinery `pkg/util/strategicpatch`, with
//! the server's options: parallel deletion lists are merged and `null`s that
//! match nothing are dropped).
//!
//! - Maps merge key by key; `null` deletes a key.
//! - A list whose field has the `merge` strategy merges: lists of objects by
//!   their merge key, lists of scalars as a set. Other lists are replaced.
//! - Directives: `$patch: replace|delete` on a map, `{"$patch": "replace"}`
//!   and `{"<key>": ..., "$patch": "delete"}` items in a merging list,
//!   `$deleteFromPrimitiveList/<field>`, `$setElementOrder/<field>` and
//!   `$retainKeys`.
//! - The order of a merged list follows the real implementation: items named
//!   by the patch keep the patch's relative order, the others the original's,
//!   and the two are interleaved by their original positions; an item that is
//!   new goes before the original items it is compared with (so an item added
//!   by a bare patch ends up first); `$setElementOrder` sets the order.
//!
//! Errors carry the real messages; `PatchError::status_code` gives the HTTP
//! status the real server answers with (400, 422, or 500 for the generic
//! errors the server does not classify).

use serde_json::{Map, Value};

use crate::typeinfo::{SmpStrategy, TypeNode};

const DIRECTIVE: &str = "$patch";
const REPLACE: &str = "replace";
const DELETE: &str = "delete";
const MERGE: &str = "merge";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";

/// A strategic merge patch that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The server answers 400 Bad Request.
    #[error("{0}")]
    BadRequest(String),
    /// The server answers 422 Unprocessable Entity.
    #[error("{0}")]
    Unprocessable(String),
    /// An error the server does not classify: it answers 500 with this message.
    #[error("{0}")]
    Internal(String),
}

impl PatchError {
    /// The HTTP status code of the real server's answer.
    pub fn status_code(&self) -> u16 {
        match self {
            PatchError::BadRequest(_) => 400,
            PatchError::Unprocessable(_) => 422,
            PatchError::Internal(_) => 500,
        }
    }

    fn bad_retain_keys() -> PatchError {
        PatchError::BadRequest("invalid patch format of retainKeys".into())
    }

    fn bad_primitive_list() -> PatchError {
        PatchError::BadRequest("invalid patch format of primitive list".into())
    }

    fn bad_set_element_order() -> PatchError {
        PatchError::BadRequest("invalid patch format of setElementOrder list".into())
    }

    fn no_list_of_lists() -> PatchError {
        PatchError::Unprocessable("lists of lists are not supported".into())
    }

    fn no_merge_key(m: &Map<String, Value>, key: &str) -> PatchError {
        PatchError::Internal(format!(
            "map: {} does not contain declared merge key: {key}",
            go_fmt_map(m)
        ))
    }

    fn bad_patch_type(t: &Value, m: &Map<String, Value>) -> PatchError {
        PatchError::Internal(format!(
            "unknown patch type: {} in map: {}",
            go_fmt_s(t),
            go_fmt_map(m)
        ))
    }

    fn bad_arg_type(expected: &str, actual: &Value) -> PatchError {
        PatchError::Internal(format!(
            "expected a {expected}, but received a {}",
            go_type_name(actual)
        ))
    }
}

/// Applies a strategic merge patch to `original` (an object) with the patch
/// metadata of `ty`.
pub fn strategic_merge_patch(
    original: &Value,
    patch: &Value,
    ty: &TypeNode,
) -> Result<Value, PatchError> {
    let original = match original {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        _ => return Err(PatchError::BadRequest("invalid JSON document".into())),
    };
    let patch = match patch {
        Value::Object(m) => m.clone(),
        other => {
            return Err(PatchError::BadRequest(format!(
                "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
                json_kind(other)
            )));
        }
    };
    let mut merged = merge_map(original, patch, ty)?;
    strip_directive_keys_in_map(&mut merged);
    Ok(Value::Object(merged))
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The Go type of a decoded JSON value (`reflect.TypeOf`), for comparisons.
#[derive(PartialEq, Eq, Clone, Copy, Debug)]
enum Kind {
    Nil,
    Bool,
    Int,
    Float,
    String,
    Slice,
    Map,
}

fn kind_of(v: &Value) -> Kind {
    match v {
        Value::Null => Kind::Nil,
        Value::Bool(_) => Kind::Bool,
        Value::Number(n) if n.is_f64() => Kind::Float,
        Value::Number(_) => Kind::Int,
        Value::String(_) => Kind::String,
        Value::Array(_) => Kind::Slice,
        Value::Object(_) => Kind::Map,
    }
}

fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    ty: &TypeNode,
) -> Result<Map<String, Value>, PatchError> {
    if let Some(directive) = patch.get(DIRECTIVE).cloned() {
        return handle_directive_in_merge_map(&directive, patch);
    }
    apply_retain_keys_directive(&mut original, &mut patch)?;
    merge_patch_into_original(&mut original, &mut patch, ty)?;

    let keys: Vec<String> = patch.keys().cloned().collect();
    for key in keys {
        let Some(patch_v) = patch.remove(&key) else {
            continue;
        };
        let (key, is_delete_list) = if key.starts_with(DELETE_FROM_PRIMITIVE_LIST) {
            (
                extract_key(
                    &key,
                    DELETE_FROM_PRIMITIVE_LIST,
                    PatchError::bad_primitive_list,
                )?,
                true,
            )
        } else {
            (key, false)
        };

        // A null deletes the key; nulls that match nothing are dropped.
        if patch_v.is_null() {
            original.remove(&key);
            continue;
        }

        let Some(orig_v) = original.get(&key) else {
            if !is_delete_list {
                let mut v = patch_v;
                discard_null_values(&mut v);
                match remove_directives(v) {
                    Some(v) => {
                        original.insert(key, v);
                    }
                    None => {
                        original.remove(&key);
                    }
                }
            }
            continue;
        };

        if kind_of(orig_v) != kind_of(&patch_v) {
            if !is_delete_list {
                let mut v = patch_v;
                discard_null_values(&mut v);
                match remove_directives(v) {
                    Some(v) => {
                        original.insert(key, v);
                    }
                    None => {
                        original.remove(&key);
                    }
                }
            }
            continue;
        }

        let field_ty = ty.field(&key);
        match patch_v {
            Value::Object(pm) => {
                let Some(Value::Object(om)) = original.remove(&key) else {
                    unreachable!("kinds were compared");
                };
                let merged = merge_map(om, pm, field_ty)?;
                original.insert(key, Value::Object(merged));
            }
            Value::Array(pl) => {
                let Some(Value::Array(ol)) = original.remove(&key) else {
                    unreachable!("kinds were compared");
                };
                let merged = merge_slice_handler(ol, pl, field_ty, &key, is_delete_list)?;
                original.insert(key, Value::Array(merged));
            }
            other => match remove_directives(other) {
                Some(v) => {
                    original.insert(key, v);
                }
                None => {
                    original.remove(&key);
                }
            },
        }
    }
    Ok(original)
}

fn handle_directive_in_merge_map(
    directive: &Value,
    mut patch: Map<String, Value>,
) -> Result<Map<String, Value>, PatchError> {
    match directive.as_str() {
        Some(REPLACE) => {
            patch.remove(DIRECTIVE);
            Ok(patch)
        }
        Some(DELETE) => Ok(Map::new()),
        _ => Err(PatchError::bad_patch_type(directive, &patch)),
    }
}

/// Splits `<prefix>/<key>`.
fn extract_key(s: &str, prefix: &str, err: fn() -> PatchError) -> Result<String, PatchError> {
    match s.split_once('/') {
        Some((p, rest)) if p == prefix => Ok(rest.to_string()),
        _ => Err(err()),
    }
}

fn apply_retain_keys_directive(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<(), PatchError> {
    let Some(retain) = patch.remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(retain) = retain else {
        return Err(PatchError::bad_retain_keys());
    };
    let retained = |k: &str| retain.iter().any(|v| v.as_str() == Some(k));
    for (k, v) in patch.iter() {
        if v.is_null()
            || k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            || k.starts_with(SET_ELEMENT_ORDER)
        {
            continue;
        }
        if !retained(k) {
            return Err(PatchError::bad_retain_keys());
        }
    }
    original.retain(|k, _| retained(k));
    Ok(())
}

/// Handles the `$setElementOrder/<field>` directives of a map, merging the
/// corresponding list and ordering it.
fn merge_patch_into_original(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    ty: &TypeNode,
) -> Result<(), PatchError> {
    let keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for key in keys {
        let Some(order_v) = patch.remove(&key) else {
            continue;
        };
        let Value::Array(order) = order_v else {
            return Err(PatchError::bad_arg_type("[]interface {}", &order_v));
        };
        let field = extract_key(&key, SET_ELEMENT_ORDER, PatchError::bad_set_element_order)?;
        let original_list = match original.get(&field) {
            None => None,
            Some(Value::Array(l)) => Some(l.clone()),
            Some(other) => return Err(PatchError::bad_arg_type("[]interface {}", other)),
        };
        let patch_list = match patch.get(&field) {
            None => None,
            Some(Value::Array(l)) => Some(l.clone()),
            Some(other) => return Err(PatchError::bad_arg_type("[]interface {}", other)),
        };
        let list_ty = ty.field(&field);
        let merge_key = merge_key_of(list_ty);
        validate_patch_with_set_order_list(
            patch_list.as_deref().unwrap_or(&[]),
            &order,
            merge_key.as_deref(),
        )?;

        let merged = match (&original_list, &patch_list) {
            (Some(o), None) => o.clone(),
            (None, Some(p)) => match remove_directives(Value::Array(p.clone())) {
                Some(Value::Array(l)) => l,
                _ => continue,
            },
            (Some(o), Some(p)) => {
                merge_slice_handler(o.clone(), p.clone(), list_ty, &field, false)?
            }
            (None, None) => continue,
        };

        let (patch_items, server_only) = match &merge_key {
            None => partition_primitives(merged, &order),
            Some(k) => partition_maps(merged, &order, k)?,
        };
        let kind = slice_element_kind(&[
            original_list.as_deref().unwrap_or(&[]),
            patch_list.as_deref().unwrap_or(&[]),
        ])?;
        let both = normalize_element_order(
            patch_items,
            server_only,
            &order,
            original_list.as_deref().unwrap_or(&[]),
            merge_key.as_deref(),
            kind,
        )?;
        original.insert(field.clone(), Value::Array(both));
        patch.remove(&field);
    }
    Ok(())
}

fn merge_key_of(list_ty: &TypeNode) -> Option<String> {
    match list_ty.smp_strategy() {
        SmpStrategy::Merge { key } => key,
        SmpStrategy::Replace => None,
    }
}

fn validate_patch_with_set_order_list(
    patch_list: &[Value],
    order: &[Value],
    merge_key: Option<&str>,
) -> Result<(), PatchError> {
    if order.is_empty() || patch_list.is_empty() {
        return Ok(());
    }
    let non_delete: Vec<&Value> = match merge_key {
        Some(_) => {
            let mut keep = Vec::new();
            for v in patch_list {
                let Value::Object(m) = v else {
                    return Err(PatchError::bad_arg_type("map[string]interface {}", v));
                };
                if m.get(DIRECTIVE).and_then(Value::as_str) != Some(DELETE) {
                    keep.push(v);
                }
            }
            keep
        }
        None => patch_list.iter().collect(),
    };
    let (mut pi, mut oi) = (0, 0);
    while pi < non_delete.len() && oi < order.len() {
        if matches!(non_delete[pi], Value::Object(m) if m.contains_key(DIRECTIVE)) {
            pi += 1;
            continue;
        }
        if merge_key_value_equal(non_delete[pi], &order[oi], merge_key)? {
            pi += 1;
        }
        oi += 1;
    }
    if pi < non_delete.len() && oi >= order.len() {
        return Err(PatchError::Internal(format!(
            "the order in patch list:\n{}\n doesn't match {SET_ELEMENT_ORDER} list:\n{}",
            go_fmt_list(patch_list),
            go_fmt_list(order)
        )));
    }
    Ok(())
}

fn merge_key_value_equal(
    left: &Value,
    right: &Value,
    merge_key: Option<&str>,
) -> Result<bool, PatchError> {
    let Some(key) = merge_key else {
        return Ok(left == right);
    };
    let Value::Object(l) = left else {
        return Err(PatchError::bad_arg_type("map[string]interface {}", left));
    };
    let Value::Object(r) = right else {
        return Err(PatchError::bad_arg_type("map[string]interface {}", right));
    };
    let lv = l.get(key).ok_or_else(|| PatchError::no_merge_key(l, key))?;
    let rv = r.get(key).ok_or_else(|| PatchError::no_merge_key(r, key))?;
    Ok(lv == rv)
}

fn merge_slice_handler(
    original: Vec<Value>,
    patch: Vec<Value>,
    list_ty: &TypeNode,
    field: &str,
    is_delete_list: bool,
) -> Result<Vec<Value>, PatchError> {
    match list_ty.smp_strategy() {
        SmpStrategy::Merge { key } => merge_slice(
            original,
            patch,
            list_ty.items(),
            key.as_deref(),
            field,
            is_delete_list,
        ),
        SmpStrategy::Replace if is_delete_list => {
            merge_slice(original, patch, list_ty.items(), None, field, true)
        }
        SmpStrategy::Replace => Ok(patch),
    }
}

/// Whether the items are maps (`Some(true)`), scalars (`Some(false)`).
fn slice_element_kind(slices: &[&[Value]]) -> Result<Kind, PatchError> {
    let mut prev: Option<Kind> = None;
    for s in slices {
        for v in s.iter() {
            let k = kind_of(v);
            match prev {
                None => {
                    if k == Kind::Slice {
                        return Err(PatchError::no_list_of_lists());
                    }
                    prev = Some(k);
                }
                Some(p) if p != k => {
                    let all: Vec<String> = slices.iter().map(|s| go_fmt_list(s)).collect();
                    return Err(PatchError::Internal(format!(
                        "list element types are not identical: [{}]",
                        all.join(" ")
                    )));
                }
                Some(_) => {}
            }
        }
    }
    prev.ok_or_else(|| PatchError::Internal("no elements in any of the given slices".into()))
}

fn merge_slice(
    original: Vec<Value>,
    patch: Vec<Value>,
    item_ty: &TypeNode,
    merge_key: Option<&str>,
    field: &str,
    is_delete_list: bool,
) -> Result<Vec<Value>, PatchError> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    let kind = slice_element_kind(&[&original, &patch])?;

    let (original, patch, merged) = if kind != Kind::Map {
        if is_delete_list {
            return Ok(original
                .into_iter()
                .filter(|v| !patch.contains(v))
                .collect());
        }
        let mut both = original.clone();
        both.extend(patch.iter().cloned());
        let merged = deduplicate_scalars(both);
        (original, patch, merged)
    } else {
        let Some(key) = merge_key else {
            return Err(PatchError::Internal(format!(
                "cannot merge lists without merge key for {field}"
            )));
        };
        let (original, patch) = merge_slice_with_special_elements(original, patch, key)?;
        let merged = merge_slice_without_special_elements(original.clone(), &patch, key, item_ty)?;
        (original, patch, merged)
    };

    let (patch_items, server_only) = match merge_key.filter(|_| kind == Kind::Map) {
        None => partition_primitives(merged, &patch),
        Some(k) => partition_maps(merged, &patch, k)?,
    };
    normalize_element_order(
        patch_items,
        server_only,
        &patch,
        &original,
        merge_key.filter(|_| kind == Kind::Map),
        kind,
    )
}

/// Applies the `$patch` items of a merging list: deletions are applied to the
/// original, a `replace` makes the remaining patch items the new original.
fn merge_slice_with_special_elements(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut without_special = Vec::new();
    let mut replace = false;
    for v in patch {
        let Value::Object(m) = &v else {
            without_special.push(v);
            continue;
        };
        let Some(directive) = m.get(DIRECTIVE) else {
            without_special.push(v);
            continue;
        };
        match directive.as_str() {
            Some(DELETE) => {
                let Some(merge_value) = m.get(key) else {
                    return Err(PatchError::no_merge_key(m, key));
                };
                original = delete_matching_entries(original, key, merge_value)?;
            }
            Some(REPLACE) => replace = true,
            Some(MERGE) => {
                return Err(PatchError::Internal(
                    "merging lists cannot yet be specified in the patch".into(),
                ));
            }
            _ => return Err(PatchError::bad_patch_type(directive, m)),
        }
    }
    if replace {
        return Ok((without_special, Vec::new()));
    }
    Ok((original, without_special))
}

fn delete_matching_entries(
    mut original: Vec<Value>,
    key: &str,
    value: &Value,
) -> Result<Vec<Value>, PatchError> {
    while let Some(i) = find_map_in_slice(&original, key, value)? {
        original.remove(i);
    }
    Ok(original)
}

fn find_map_in_slice(
    list: &[Value],
    key: &str,
    value: &Value,
) -> Result<Option<usize>, PatchError> {
    for (i, v) in list.iter().enumerate() {
        let Value::Object(m) = v else {
            return Err(PatchError::Internal(format!(
                "value for key {i} is not a map"
            )));
        };
        if m.get(key) == Some(value) {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

fn merge_slice_without_special_elements(
    mut original: Vec<Value>,
    patch: &[Value],
    key: &str,
    item_ty: &TypeNode,
) -> Result<Vec<Value>, PatchError> {
    for v in patch {
        let Value::Object(pm) = v else {
            return Err(PatchError::bad_arg_type("map[string]interface {}", v));
        };
        let Some(merge_value) = pm.get(key) else {
            return Err(PatchError::no_merge_key(pm, key));
        };
        match find_map_in_slice(&original, key, merge_value)? {
            Some(i) => {
                let Value::Object(om) = std::mem::take(&mut original[i]) else {
                    unreachable!("checked by find_map_in_slice");
                };
                original[i] = Value::Object(merge_map(om, pm.clone(), item_ty)?);
            }
            None => original.push(v.clone()),
        }
    }
    Ok(original)
}

/// Go's in-place deduplication (it moves the last item into a duplicate's
/// place, so the order is fixed up afterwards by the normalisation).
fn deduplicate_scalars(mut s: Vec<Value>) -> Vec<Value> {
    if s.is_empty() {
        return s;
    }
    let mut length = s.len() - 1;
    let mut i = 0;
    while i < length {
        let mut j = i + 1;
        while j <= length {
            if s[i] == s[j] {
                s[j] = s[length].clone();
                s.truncate(length);
                length -= 1;
                continue;
            }
            j += 1;
        }
        i += 1;
    }
    s
}

fn partition_primitives(merged: Vec<Value>, by: &[Value]) -> (Vec<Value>, Vec<Value>) {
    merged.into_iter().partition(|v| by.contains(v))
}

fn partition_maps(
    merged: Vec<Value>,
    by: &[Value],
    key: &str,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut in_patch = Vec::new();
    let mut server_only = Vec::new();
    for v in merged {
        let Value::Object(m) = &v else {
            return Err(PatchError::bad_arg_type("map[string]interface {}", &v));
        };
        let Some(kv) = m.get(key) else {
            return Err(PatchError::no_merge_key(m, key));
        };
        if find_map_in_slice(by, key, kv)?.is_some() {
            in_patch.push(v);
        } else {
            server_only.push(v);
        }
    }
    Ok((in_patch, server_only))
}

/// The position of `v` in `list`, comparing merge key values for maps.
fn index_of(list: &[Value], v: &Value, merge_key: Option<&str>, kind: Kind) -> Option<usize> {
    let get = |item: &Value| -> Option<Value> {
        if kind == Kind::Map {
            item.as_object().map(|m| {
                m.get(merge_key.unwrap_or(""))
                    .cloned()
                    .unwrap_or(Value::Null)
            })
        } else {
            Some(item.clone())
        }
    };
    let needle = get(v);
    list.iter().position(|item| get(item) == needle)
}

fn normalize_element_order(
    patch: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    merge_key: Option<&str>,
    kind: Kind,
) -> Result<Vec<Value>, PatchError> {
    let patch = normalize_slice_order(patch, patch_order, merge_key, kind)?;
    let server_only = normalize_slice_order(server_only, server_order, merge_key, kind)?;
    Ok(merge_sorted_slice(
        server_only,
        patch,
        server_order,
        merge_key,
        kind,
    ))
}

fn normalize_slice_order(
    to_sort: Vec<Value>,
    order: &[Value],
    merge_key: Option<&str>,
    kind: Kind,
) -> Result<Vec<Value>, PatchError> {
    let (mut to_sort, to_delete) = if kind == Kind::Map {
        let key = merge_key.unwrap_or("");
        for item in to_sort.iter().chain(order.iter()) {
            let Value::Object(m) = item else {
                return Err(PatchError::bad_arg_type("map[string]interface {}", item));
            };
            if !m.contains_key(key) {
                return Err(PatchError::no_merge_key(m, key));
            }
        }
        to_sort.into_iter().partition::<Vec<Value>, _>(|v| {
            v.get(DIRECTIVE).and_then(Value::as_str) != Some(DELETE)
        })
    } else {
        (to_sort, Vec::new())
    };
    // Go's sort.SliceStable (insertion sort for short slices) with its
    // comparator: ordered by position in `order` when both are found there.
    let less = |a: &Value, b: &Value| -> bool {
        match index_of(order, a, merge_key, kind) {
            Some(ia) => match index_of(order, b, merge_key, kind) {
                Some(ib) => ia < ib,
                None => true,
            },
            None => true,
        }
    };
    for i in 1..to_sort.len() {
        let mut j = i;
        while j > 0 && less(&to_sort[j], &to_sort[j - 1]) {
            to_sort.swap(j, j - 1);
            j -= 1;
        }
    }
    to_sort.extend(to_delete);
    Ok(to_sort)
}

/// Interleaves the server-only items (`left`) into the patch items (`right`)
/// by their positions in the original list.
fn merge_sorted_slice(
    left: Vec<Value>,
    right: Vec<Value>,
    server_order: &[Value],
    merge_key: Option<&str>,
    kind: Kind,
) -> Vec<Value> {
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => out.push(left.next().unwrap_or_default()),
            (None, Some(_)) => out.push(right.next().unwrap_or_default()),
            (Some(l), Some(r)) => {
                let li = index_of(server_order, l, merge_key, kind);
                let ri = index_of(server_order, r, merge_key, kind);
                match (li, ri) {
                    (Some(a), Some(b)) if a < b => out.push(left.next().unwrap_or_default()),
                    _ => out.push(right.next().unwrap_or_default()),
                }
            }
        }
    }
    out
}

/// Drops `null` values from maps, at any depth.
fn discard_null_values(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            for v in m.values_mut() {
                discard_null_values(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(discard_null_values),
        _ => {}
    }
}

/// Removes the maps carrying a `$patch` directive from a value that is added
/// as is; `None` when the value itself is such a map.
fn remove_directives(v: Value) -> Option<Value> {
    match v {
        Value::Object(m) => {
            if m.contains_key(DIRECTIVE) {
                return None;
            }
            let out: Map<String, Value> = m
                .into_iter()
                .filter_map(|(k, v)| remove_directives(v).map(|v| (k, v)))
                .collect();
            Some(Value::Object(out))
        }
        Value::Array(items) => Some(Value::Array(
            items.into_iter().filter_map(remove_directives).collect(),
        )),
        other => Some(other),
    }
}

fn is_directive_key(k: &str) -> bool {
    k == DIRECTIVE
        || k == RETAIN_KEYS
        || k.starts_with(&format!("{SET_ELEMENT_ORDER}/"))
        || k.starts_with(&format!("{DELETE_FROM_PRIMITIVE_LIST}/"))
}

/// Directive keys that the merge leaves in values taken as they are are not
/// fields of any built-in type: decoding the result into the typed object
/// drops them on the real server. Do the same.
fn strip_directive_keys_in_map(m: &mut Map<String, Value>) {
    m.retain(|k, _| !is_directive_key(k));
    for v in m.values_mut() {
        strip_directive_keys(v);
    }
}

fn strip_directive_keys(v: &mut Value) {
    match v {
        Value::Object(m) => strip_directive_keys_in_map(m),
        Value::Array(items) => items.iter_mut().for_each(strip_directive_keys),
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// Go `%v` rendering of decoded JSON, for error messages.

fn go_type_name(v: &Value) -> &'static str {
    match kind_of(v) {
        Kind::Nil => "%!s(<nil>)",
        Kind::Bool => "bool",
        Kind::Int => "int64",
        Kind::Float => "float64",
        Kind::String => "string",
        Kind::Slice => "[]interface {}",
        Kind::Map => "map[string]interface {}",
    }
}

fn go_fmt(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => gofmt::format_number(n),
        Value::String(s) => s.clone(),
        Value::Array(items) => go_fmt_list(items),
        Value::Object(m) => go_fmt_map(m),
    }
}

/// `%s` of a value: strings as they are, other types as Go's bad-verb form.
fn go_fmt_s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "%!s(<nil>)".into(),
        other => format!("%!s({}={})", go_type_name(other), go_fmt(other)),
    }
}

fn go_fmt_list(items: &[Value]) -> String {
    let parts: Vec<String> = items.iter().map(go_fmt).collect();
    format!("[{}]", parts.join(" "))
}

fn go_fmt_map(m: &Map<String, Value>) -> String {
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    let parts: Vec<String> = keys
        .iter()
        .map(|k| format!("{k}:{}", go_fmt(&m[k.as_str()])))
        .collect();
    format!("map[{}]", parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin_types::builtin_type;
    use serde_json::json;

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web", "tier": "fe"}, "finalizers": ["a"]},
            "spec": {
                "replicas": 2,
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "app",
                                "image": "app:1",
                                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                                "args": ["--x"]
                            },
                            {"name": "sidecar", "image": "side:1"}
                        ]
                    }
                }
            }
        })
    }

    fn smp(orig: &Value, patch: Value) -> Result<Value, PatchError> {
        strategic_merge_patch(orig, &patch, &builtin_type("apps", "Deployment"))
    }

    fn containers(v: &Value) -> &Vec<Value> {
        v["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
    }

    #[test]
    fn maps_merge_and_null_deletes() {
        let out = smp(
            &deployment(),
            json!({"metadata": {"labels": {"tier": null, "new": "x", "absent": null}}, "spec": {"replicas": 3}}),
        )
        .unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"app": "web", "new": "x"}));
        assert_eq!(out["spec"]["replicas"], json!(3));
        // Untouched parts are kept.
        assert_eq!(containers(&out).len(), 2);
    }

    #[test]
    fn containers_merge_by_name() {
        let out = smp(
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "app", "image": "app:2", "env": [{"name": "C", "value": "3"}]}
            ]}}}}),
        )
        .unwrap();
        let c = containers(&out);
        assert_eq!(c[0]["image"], json!("app:2"));
        assert_eq!(
            c[0]["ports"],
            json!([{"containerPort": 80, "protocol": "TCP"}])
        );
        // env merges by name; the new item goes first, as the real server does.
        assert_eq!(
            c[0]["env"],
            json!([{"name": "C", "value": "3"}, {"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
        );
        assert_eq!(c[1]["name"], json!("sidecar"));
        // Atomic lists (args) are replaced.
        let out = smp(
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "args": ["--y"]}]}}}}),
        )
        .unwrap();
        assert_eq!(containers(&out)[0]["args"], json!(["--y"]));
    }

    #[test]
    fn new_container_is_prepended_and_ports_merge_by_container_port() {
        let out = smp(
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "new", "image": "n:1"},
                {"name": "app", "ports": [{"containerPort": 443}]}
            ]}}}}),
        )
        .unwrap();
        let names: Vec<&str> = containers(&out)
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["new", "app", "sidecar"]);
        assert_eq!(
            containers(&out)[1]["ports"],
            json!([{"containerPort": 443}, {"containerPort": 80, "protocol": "TCP"}])
        );
    }

    #[test]
    fn patch_delete_and_replace_in_lists() {
        let out = smp(
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "sidecar", "$patch": "delete"},
                {"name": "app", "env": [{"name": "A", "$patch": "delete"}]}
            ]}}}}),
        )
        .unwrap();
        assert_eq!(containers(&out).len(), 1);
        assert_eq!(
            containers(&out)[0]["env"],
            json!([{"name": "B", "value": "2"}])
        );

        let out = smp(
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "only", "image": "o:1"},
                {"$patch": "replace"}
            ]}}}}),
        )
        .unwrap();
        assert_eq!(
            containers(&out),
            &vec![json!({"name": "only", "image": "o:1"})]
        );

        let err = smp(
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [{"$patch": "merge"}]}}}}),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "merging lists cannot yet be specified in the patch"
        );
    }

    #[test]
    fn patch_directives_on_maps() {
        let out = smp(
            &deployment(),
            json!({"metadata": {"labels": {"$patch": "replace", "only": "x"}}}),
        )
        .unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"only": "x"}));
        let out = smp(
            &deployment(),
            json!({"metadata": {"labels": {"$patch": "delete"}}}),
        )
        .unwrap();
        assert_eq!(out["metadata"]["labels"], json!({}));
        let err = smp(
            &deployment(),
            json!({"metadata": {"labels": {"$patch": "merge"}}}),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown patch type: merge in map: map[$patch:merge]"
        );
        assert_eq!(err.status_code(), 500);
        // Whole-object replace.
        let out = smp(
            &deployment(),
            json!({"$patch": "replace", "kind": "Deployment"}),
        )
        .unwrap();
        assert_eq!(out, json!({"kind": "Deployment"}));
    }

    #[test]
    fn set_element_order() {
        let out = smp(
            &deployment(),
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}],
                "containers": [{"name": "app", "image": "app:3"}]
            }}}}),
        )
        .unwrap();
        let names: Vec<&str> = containers(&out)
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["sidecar", "app"]);
        assert_eq!(containers(&out)[1]["image"], json!("app:3"));
        // The order list may name only part of the items: the others keep
        // their original relative positions.
        let out = smp(
            &deployment(),
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "new"}, {"name": "app"}],
                "containers": [{"name": "new", "image": "n"}]
            }}}}),
        )
        .unwrap();
        let names: Vec<&str> = containers(&out)
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["new", "app", "sidecar"]);
        // A patch list out of the directive's order is rejected.
        let err = smp(
            &deployment(),
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "app"}],
                "containers": [{"name": "sidecar", "image": "s"}]
            }}}}),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the order in patch list:\n[map[image:s name:sidecar]]")
        );
    }

    #[test]
    fn primitive_lists_merge_as_sets_and_delete_from_primitive_list() {
        let out = smp(
            &deployment(),
            json!({"metadata": {"finalizers": ["b", "a"]}}),
        )
        .unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "a"]));
        let out = smp(&deployment(), json!({"metadata": {"finalizers": ["c"]}})).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["c", "a"]));
        let out = smp(
            &deployment(),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        )
        .unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!([]));
        // Missing list: nothing to delete from, nothing added.
        let out = smp(
            &deployment(),
            json!({"spec": {"$deleteFromPrimitiveList/absent": ["a"]}}),
        )
        .unwrap();
        assert!(out["spec"].get("absent").is_none());
        let err = smp(
            &deployment(),
            json!({"metadata": {"$deleteFromPrimitiveList": ["a"]}}),
        )
        .unwrap_err();
        assert_eq!(
            err,
            PatchError::BadRequest("invalid patch format of primitive list".into())
        );
        // Set order for a primitive list.
        let out = smp(
            &json!({"metadata": {"finalizers": ["a", "b", "c"]}}),
            json!({"metadata": {"$setElementOrder/finalizers": ["c", "b", "a"], "finalizers": ["c"]}}),
        )
        .unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["c", "b", "a"]));
    }

    #[test]
    fn retain_keys() {
        let orig = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let out = smp(
            &orig,
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
        )
        .unwrap();
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        let err = smp(
            &orig,
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}}),
        )
        .unwrap_err();
        assert_eq!(err.status_code(), 400);
        assert_eq!(err.to_string(), "invalid patch format of retainKeys");
    }

    #[test]
    fn errors() {
        let err = smp(
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "map: map[image:x] does not contain declared merge key: name"
        );
        assert_eq!(err.status_code(), 500);
        let err = smp(&deployment(), json!([1])).unwrap_err();
        assert_eq!(err.status_code(), 400);
        let err = smp(
            &json!({"spec": {"template": {"spec": {"containers": [[1]]}}}}),
            json!({"spec": {"template": {"spec": {"containers": [[2]]}}}}),
        )
        .unwrap_err();
        assert_eq!(
            err,
            PatchError::Unprocessable("lists of lists are not supported".into())
        );
    }

    #[test]
    fn added_values_drop_nulls_and_directives() {
        let out = smp(
            &json!({"spec": {}}),
            json!({"spec": {"template": {"metadata": {"labels": {"a": null, "b": "x"}}, "spec": {"$setElementOrder/containers": [{"name": "a"}], "containers": [{"name": "a", "$patch": "delete"}]}}}}),
        )
        .unwrap();
        assert_eq!(
            out["spec"]["template"],
            json!({"metadata": {"labels": {"b": "x"}}, "spec": {"containers": []}})
        );
    }

    #[test]
    fn non_merging_lists_are_replaced_and_type_changes_replace() {
        let ty = builtin_type("", "Pod");
        let orig = json!({"spec": {"tolerations": [{"key": "a"}], "nodeSelector": {"a": "b"}}});
        let out = strategic_merge_patch(
            &orig,
            &json!({"spec": {"tolerations": [{"key": "b"}], "nodeSelector": "oops"}}),
            &ty,
        )
        .unwrap();
        assert_eq!(out["spec"]["tolerations"], json!([{"key": "b"}]));
        assert_eq!(out["spec"]["nodeSelector"], json!("oops"));
    }

    #[test]
    fn service_ports_merge_by_port() {
        let ty = builtin_type("", "Service");
        let orig = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}});
        let out = strategic_merge_patch(
            &orig,
            &json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}),
            &ty,
        )
        .unwrap();
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "targetPort": 9090}, {"port": 443}])
        );
    }

    #[test]
    fn dedup_keeps_go_semantics() {
        assert_eq!(
            deduplicate_scalars(vec![json!("a"), json!("b"), json!("a"), json!("c")]),
            vec![json!("a"), json!("b"), json!("c")]
        );
    }
}
