//! Whether a server-side apply would be a no-op, decided from the live object
//! alone (docs/design/one-request-per-object.md).
//!
//! A forced apply by manager M makes M own exactly the fields of its
//! configuration and sets them to the configuration's values; fields M owned
//! before and no longer names are removed. So re-applying configuration C
//! changes nothing when (1) M's `Apply` entry in `managedFields` covers
//! exactly C's fields and (2) every one of them holds C's value in the live
//! object. Drift by anyone else breaks (1) or (2): a writer that changes a
//! field M owns takes its ownership (so M's set shrinks), and a value that
//! differs fails (2). Anything this walk does not understand (index-keyed
//! lists, duplicate keys, a different apiVersion, values the server
//! normalised) answers "not sure", and the caller falls back to the dry
//! run. The walk never says "unchanged" where the dry run would not.

use serde_json::{Map, Value};

/// Whether applying `desired` as `manager` would leave `live` as it is.
pub fn unchanged(desired: &Value, live: &Value, manager: &str) -> bool {
    let Some(fields) = owned_fields(desired, live, manager) else {
        return false;
    };
    let (Some(d), Some(l)) = (desired.as_object(), live.as_object()) else {
        return false;
    };
    object(d, fields, l, Level::Root)
}

/// The `fieldsV1` of `manager`'s `Apply` entry for the main resource, when
/// it was made at the desired object's apiVersion.
fn owned_fields<'a>(desired: &Value, live: &'a Value, manager: &str) -> Option<&'a Value> {
    let entries = live.pointer("/metadata/managedFields")?.as_array()?;
    let mut found = None;
    for e in entries {
        let subresource = e.get("subresource").and_then(Value::as_str).unwrap_or("");
        if e.get("manager").and_then(Value::as_str) == Some(manager)
            && e.get("operation").and_then(Value::as_str) == Some("Apply")
            && subresource.is_empty()
        {
            if found.is_some() {
                return None;
            }
            found = Some(e);
        }
    }
    let entry = found?;
    if entry.get("apiVersion") != desired.get("apiVersion")
        || entry.get("fieldsType").and_then(Value::as_str) != Some("FieldsV1")
    {
        return None;
    }
    entry.get("fieldsV1")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Root,
    Metadata,
    Other,
}

/// The keys of an object that a field set does not track: the type and
/// identity of the object.
fn untracked(level: Level, key: &str) -> bool {
    match level {
        Level::Root => matches!(key, "apiVersion" | "kind"),
        Level::Metadata => matches!(key, "name" | "namespace"),
        Level::Other => false,
    }
}

/// The `f:` children of a field set node (`.` is the node itself).
fn members(fields: &Map<String, Value>) -> impl Iterator<Item = (&str, &Value)> {
    fields
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("f:").map(|name| (name, v)))
}

/// A node owned as a whole: no children besides `.`.
fn is_leaf(fields: &Map<String, Value>) -> bool {
    fields.keys().all(|k| k == ".")
}

fn object(
    desired: &Map<String, Value>,
    fields: &Value,
    live: &Map<String, Value>,
    level: Level,
) -> bool {
    let Some(fields) = fields.as_object() else {
        return false;
    };
    if is_leaf(fields) {
        // Owned as a whole (an atomic map): only identical content is safe.
        return desired
            .iter()
            .filter(|(k, _)| !untracked(level, k))
            .all(|(k, v)| live.get(k) == Some(v))
            && desired.len() == live.len();
    }
    let mut named = 0usize;
    for (key, value) in desired {
        if untracked(level, key) {
            continue;
        }
        if value.is_null() {
            // An explicit null is not part of the configuration.
            if fields.contains_key(&format!("f:{key}"))
                || live.get(key).is_some_and(|l| !l.is_null())
            {
                return false;
            }
            continue;
        }
        let next = if level == Level::Root && key == "metadata" {
            Level::Metadata
        } else {
            Level::Other
        };
        if next == Level::Metadata
            && value
                .as_object()
                .is_some_and(|m| m.iter().all(|(k, v)| untracked(next, k) || v.is_null()))
        {
            // Only the object's name: nothing of it is owned.
            if fields.contains_key("f:metadata") {
                return false;
            }
            continue;
        }
        named += 1;
        let (Some(child), Some(l)) = (fields.get(&format!("f:{key}")), live.get(key)) else {
            return false;
        };
        if !node(value, child, l, next) {
            return false;
        }
    }
    // Every owned field must still be configured; a leftover would be
    // removed by the apply.
    let owned = members(fields)
        .filter(|(k, _)| !untracked(level, k))
        .count();
    owned == named
}

fn node(desired: &Value, fields: &Value, live: &Value, level: Level) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => object(d, fields, l, level),
        (Value::Array(d), Value::Array(l)) => list(d, fields, l),
        (d, l) => fields.as_object().is_some_and(is_leaf) && d == l,
    }
}

fn list(desired: &[Value], fields: &Value, live: &[Value]) -> bool {
    let Some(fields) = fields.as_object() else {
        return false;
    };
    let elements: Vec<(&str, &Value)> = fields
        .iter()
        .filter(|(k, _)| *k != ".")
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    if elements.is_empty() {
        // An atomic list: the apply replaces it whole.
        return desired == live;
    }
    if elements.len() != desired.len() {
        return false;
    }
    let mut used = vec![false; elements.len()];
    for d in desired {
        let Some(i) = elements.iter().position(|(k, _)| element_key_matches(k, d)) else {
            return false;
        };
        if std::mem::replace(&mut used[i], true) {
            return false;
        }
        let (key, child) = elements[i];
        if let Some(set_value) = key.strip_prefix("v:") {
            // A set member: present in the live list.
            let Ok(v) = serde_json::from_str::<Value>(set_value) else {
                return false;
            };
            if !live.contains(&v) {
                return false;
            }
            continue;
        }
        // A keyed element: the live element with the same key.
        let mut same_key = live.iter().filter(|l| element_key_matches(key, l));
        let (Some(l), None) = (same_key.next(), same_key.next()) else {
            return false;
        };
        if !node(d, child, l, Level::Other) {
            return false;
        }
    }
    true
}

/// Whether a list element carries the `k:{…}` or `v:…` key of a field set
/// entry. Index keys (`i:N`) are never trusted.
fn element_key_matches(key: &str, element: &Value) -> bool {
    if let Some(k) = key.strip_prefix("k:") {
        let Ok(Value::Object(wanted)) = serde_json::from_str::<Value>(k) else {
            return false;
        };
        let Some(e) = element.as_object() else {
            return false;
        };
        !wanted.is_empty() && wanted.iter().all(|(name, v)| e.get(name) == Some(v))
    } else if let Some(v) = key.strip_prefix("v:") {
        serde_json::from_str::<Value>(v).is_ok_and(|v| &v == element)
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn live(fields: Value, body: Value) -> Value {
        let mut v = body;
        v["metadata"]["managedFields"] = json!([
            {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "apps/v1",
             "subresource": "status", "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {}}},
            {"manager": "stageset-controller", "operation": "Apply", "apiVersion": "apps/v1",
             "fieldsType": "FieldsV1", "fieldsV1": fields}
        ]);
        v
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"name": "app", "image": "nginx:1", "ports": [{"containerPort": 80, "protocol": "TCP"}],
                 "args": ["--a", "--b"]}
            ]}}}
        })
    }

    fn owned() -> Value {
        json!({
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"app\"}": {".": {}, "f:name": {}, "f:image": {}, "f:args": {},
                    "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}, "f:protocol": {}}}}
            }}}}
        })
    }

    fn live_deployment() -> Value {
        let mut l = deployment();
        // Server defaults and other managers' fields are not ours to judge.
        l["metadata"]["uid"] = json!("u");
        l["metadata"]["resourceVersion"] = json!("7");
        l["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = json!("IfNotPresent");
        l["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "sidecar", "image": "proxy"}));
        l["status"] = json!({"replicas": 2});
        live(owned(), l)
    }

    #[test]
    fn our_last_apply_untouched_is_unchanged() {
        assert!(unchanged(
            &deployment(),
            &live_deployment(),
            "stageset-controller"
        ));
    }

    #[test]
    fn every_difference_falls_back_to_the_dry_run() {
        let l = live_deployment();
        let m = "stageset-controller";
        // A value someone changed.
        let mut changed = l.clone();
        changed["spec"]["replicas"] = json!(3);
        assert!(!unchanged(&deployment(), &changed, m));
        // A new configuration value.
        let mut d = deployment();
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
        assert!(!unchanged(&d, &l, m));
        // A field we owned and no longer configure (the apply removes it).
        let mut d = deployment();
        d["metadata"]["labels"] = json!({});
        assert!(!unchanged(&d, &l, m));
        // A field we newly configure.
        let mut d = deployment();
        d["metadata"]["labels"]["tier"] = json!("web");
        assert!(!unchanged(&d, &l, m));
        // An atomic list edited by someone else (they own it now).
        let mut edited = l.clone();
        edited["metadata"]["managedFields"][1]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]
            ["f:containers"]["k:{\"name\":\"app\"}"]
            .as_object_mut()
            .unwrap()
            .remove("f:args");
        assert!(!unchanged(&deployment(), &edited, m));
        // An atomic list whose content differs.
        let mut args = l.clone();
        args["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["--a"]);
        assert!(!unchanged(&deployment(), &args, m));
        // Another manager's entry, another apiVersion, no entry at all.
        assert!(!unchanged(&deployment(), &l, "someone-else"));
        let mut version = l.clone();
        version["metadata"]["managedFields"][1]["apiVersion"] = json!("apps/v1beta1");
        assert!(!unchanged(&deployment(), &version, m));
        let mut bare = l.clone();
        bare["metadata"]["managedFields"] = json!([]);
        assert!(!unchanged(&deployment(), &bare, m));
        // A keyed element gone from the live list.
        let mut gone = l;
        gone["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .remove(0);
        assert!(!unchanged(&deployment(), &gone, m));
    }

    #[test]
    fn nulls_and_sets() {
        let m = "stageset-controller";
        let desired = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "creationTimestamp": null}, "data": {"k": "v"}});
        let mut l = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "managedFields": [{"manager": m, "operation": "Apply",
                "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:k": {}}}}]},
            "data": {"k": "v"}});
        assert!(unchanged(&desired, &l, m));
        l["data"]["k"] = json!("w");
        assert!(!unchanged(&desired, &l, m));

        let desired = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "x"},
            "spec": {"finalizers": ["a", "b"]}});
        let fields = json!({"f:spec": {"f:finalizers": {".": {}, "v:\"a\"": {}, "v:\"b\"": {}}}});
        let l = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "x",
            "managedFields": [{"manager": m, "operation": "Apply", "apiVersion": "v1",
                "fieldsType": "FieldsV1", "fieldsV1": fields}]},
            "spec": {"finalizers": ["b", "a", "c"]}});
        assert!(unchanged(&desired, &l, m));
    }
}
