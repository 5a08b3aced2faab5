//! Decoding a StageSet as admission receives it: JSON that bypassed no
//! schema check of ours and may carry enum values the typed API cannot hold.
//! Such a value is replaced by a valid one and remembered by JSON pointer, so
//! the rule that checks it reports it at its place in the evaluation order.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::api::StageSet;

/// Enum values the typed API could not hold, by JSON pointer, as written.
pub(crate) type BadEnums = BTreeMap<String, String>;

/// Decodes an admission request's StageSet, replacing enum values the typed
/// API cannot hold (see the module documentation).
pub(crate) fn decode(object: &Value) -> Result<(StageSet, BadEnums), String> {
    let mut object = object.clone();
    if let Some(o) = object.as_object_mut() {
        // Never validated, and a status the types cannot read must not block
        // a spec change.
        o.remove("status");
    }
    let mut bad = BadEnums::new();
    sanitize_enums(&mut object, &mut bad);
    let ss = serde_json::from_value::<StageSet>(object)
        .map_err(|e| format!("decoding the StageSet: {e}"))?;
    Ok((ss, bad))
}

const HOLD_ROLLBACK: &[&str] = &["Hold", "Rollback"];
const ALLOW_HOLD: &[&str] = &["Allow", "Hold"];
const SCOPES: &[&str] = &["Revision", "Version", "Lifetime"];

/// Replaces the value at `ptr` when it is a string outside `allowed`: an
/// empty string is removed (Go reads it as unset), any other is recorded and
/// replaced by `allowed[0]`.
fn sanitize(object: &mut Value, ptr: &str, allowed: &[&str], bad: &mut BadEnums) {
    let Some((parent, field)) = ptr.rsplit_once('/') else {
        return;
    };
    let Some(map) = object.pointer_mut(parent).and_then(Value::as_object_mut) else {
        return;
    };
    let Some(Value::String(s)) = map.get(field) else {
        return;
    };
    if allowed.contains(&s.as_str()) {
        return;
    }
    if s.is_empty() {
        map.remove(field);
    } else {
        bad.insert(ptr.to_string(), s.clone());
        map.insert(field.to_string(), Value::String(allowed[0].to_string()));
    }
}

fn array_len(object: &Value, ptr: &str) -> usize {
    object
        .pointer(ptr)
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

fn sanitize_actions(object: &mut Value, list: &str, bad: &mut BadEnums) {
    for j in 0..array_len(object, list) {
        sanitize(object, &format!("{list}/{j}/scope"), SCOPES, bad);
    }
}

fn sanitize_enums(object: &mut Value, bad: &mut BadEnums) {
    sanitize(object, "/spec/onTimeout", HOLD_ROLLBACK, bad);
    sanitize(object, "/spec/decryption/provider", &["sops"], bad);
    sanitize(object, "/spec/errorBudget/onSourceError", ALLOW_HOLD, bad);
    sanitize_actions(object, "/spec/onRollback", bad);
    for k in 0..array_len(object, "/spec/migrations") {
        sanitize_actions(object, &format!("/spec/migrations/{k}/actions"), bad);
        sanitize_actions(object, &format!("/spec/migrations/{k}/down"), bad);
    }
    for i in 0..array_len(object, "/spec/stages") {
        let st = format!("/spec/stages/{i}");
        sanitize(object, &format!("{st}/onTimeout"), HOLD_ROLLBACK, bad);
        sanitize(
            object,
            &format!("{st}/errorBudget/onSourceError"),
            ALLOW_HOLD,
            bad,
        );
        for phase in ["pre", "post", "onFailure"] {
            sanitize_actions(object, &format!("{st}/actions/{phase}"), bad);
        }
        for gate in ["restartGate", "eventGate"] {
            let g = format!("{st}/promotion/{gate}");
            sanitize(object, &format!("{g}/onFailure"), HOLD_ROLLBACK, bad);
            for k in 0..array_len(object, &format!("{g}/checks")) {
                sanitize(
                    object,
                    &format!("{g}/checks/{k}/onFailure"),
                    HOLD_ROLLBACK,
                    bad,
                );
            }
        }
        let a = format!("{st}/promotion/analysis");
        sanitize(object, &format!("{a}/onFailure"), HOLD_ROLLBACK, bad);
        sanitize(
            object,
            &format!("{a}/onSourceError"),
            &["Hold", "Allow"],
            bad,
        );
    }
}
