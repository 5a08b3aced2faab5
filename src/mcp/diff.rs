//! `diff_revisions`: a stage's rendered manifests at two artifact digests,
//! read from the rollback store, as per-object unified diffs with every
//! Secret value masked.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::McpContext;
use super::tools::{optional, required};
use crate::cli::render::Masker;
use crate::reconcile::rollback::{SnapshotKey, decode_rendering};

/// At most this many diffs run at once; more are refused as busy.
pub const MAX_CONCURRENT: usize = 3;
/// The largest snapshot a diff reads.
const MAX_SNAPSHOT: usize = 32 * 1024 * 1024;

pub async fn diff(
    ctx: &McpContext,
    slots: &Semaphore,
    args: &serde_json::Map<String, Value>,
) -> Result<Value, String> {
    let Some(store) = ctx.store.clone() else {
        return Err("diff_revisions needs a rollback store, and none is configured".into());
    };
    let namespace = required(args, "namespace")?;
    let name = required(args, "name")?;
    let stage = required(args, "stage")?;
    let from = required(args, "from")?;
    let ss = ctx
        .cache
        .get(namespace, name)
        .ok_or_else(|| format!("StageSet {namespace}/{name} not found"))?;
    if !ss.spec.stages.iter().any(|s| s.name == stage) {
        return Err(format!(
            "stage {stage:?} is not declared by StageSet {namespace}/{name}"
        ));
    }
    let to = match optional(args, "to")? {
        Some(t) => t.to_string(),
        None => ss
            .status
            .as_ref()
            .and_then(|s| s.last_applied_snapshot.iter().find(|a| a.stage == stage))
            .map(|a| a.digest.clone())
            .ok_or_else(|| {
                format!("stage {stage:?} has no applied snapshot; pass `to` explicitly")
            })?,
    };
    let key = |digest: &str| SnapshotKey {
        namespace: namespace.to_string(),
        stageset: name.to_string(),
        stage: stage.to_string(),
        digest: digest.to_string(),
    };
    let (from_key, to_key) = (key(from), key(&to));
    for (field, k) in [("from", &from_key), ("to", &to_key)] {
        if !k.is_valid() {
            return Err(format!(
                "{field} {:?} is not a digest of the form <algo>:<hex> (lowercase)",
                k.digest
            ));
        }
    }
    if from_key.digest == to_key.digest {
        return Err("from and to are the same digest".into());
    }
    let Ok(_slot) = slots.try_acquire() else {
        return Err(format!(
            "busy: {MAX_CONCURRENT} diffs are running; try again shortly"
        ));
    };
    let mut sides = Vec::with_capacity(2);
    for k in [&from_key, &to_key] {
        let body = store
            .get(k.clone())
            .await
            .map_err(|e| format!("reading the rollback store: {e}"))?
            .ok_or_else(|| format!("the rollback store holds no rendering of {}", k.logical()))?;
        if body.len() > MAX_SNAPSHOT {
            return Err(format!(
                "the rendering {} is larger than 32 MiB",
                k.logical()
            ));
        }
        let objects = decode_rendering(&body)
            .map_err(|e| format!("the rendering {} is unreadable: {e}", k.logical()))?;
        sides.push(objects);
    }
    let to_objects = sides.pop().unwrap_or_default();
    let from_objects = sides.pop().unwrap_or_default();
    Ok(compare(
        &from_key.digest,
        &to_key.digest,
        from_objects,
        to_objects,
    ))
}

/// `group/version Kind namespace/name`.
fn identity(o: &Value) -> String {
    let s = |p: &str| o.pointer(p).and_then(Value::as_str).unwrap_or("");
    let ns = s("/metadata/namespace");
    let name = s("/metadata/name");
    let object = if ns.is_empty() {
        name.to_string()
    } else {
        format!("{ns}/{name}")
    };
    format!("{} {} {object}", s("/apiVersion"), s("/kind"))
}

/// The masked per-object diff and the counts.
fn compare(from: &str, to: &str, old: Vec<Value>, new: Vec<Value>) -> Value {
    let mut masker = Masker::new();
    let mut objects: BTreeMap<String, (Option<Value>, Option<Value>)> = BTreeMap::new();
    for mut o in old {
        masker.mask(&mut o);
        let id = identity(&o);
        objects.entry(id).or_default().0 = Some(o);
    }
    for mut o in new {
        masker.mask(&mut o);
        let id = identity(&o);
        objects.entry(id).or_default().1 = Some(o);
    }
    let (mut create, mut configure, mut delete, mut unchanged) = (0, 0, 0, 0);
    let mut diff = String::new();
    let yaml = |v: &Option<Value>| {
        v.as_ref()
            .map(kustomize::yaml::document_to_string)
            .unwrap_or_default()
    };
    for (id, (a, b)) in &objects {
        match (a, b) {
            (None, Some(_)) => create += 1,
            (Some(_), None) => delete += 1,
            (Some(x), Some(y)) if x == y => {
                unchanged += 1;
                continue;
            }
            _ => configure += 1,
        }
        let (old, new) = (yaml(a), yaml(b));
        let text = similar::TextDiff::from_lines(&old, &new)
            .unified_diff()
            .context_radius(3)
            .header(&format!("{id} ({from})"), &format!("{id} ({to})"))
            .to_string();
        diff.push_str(&text);
    }
    json!({
        "from": from,
        "to": to,
        "diff": diff,
        "counts": {
            "create": create,
            "configure": configure,
            "delete": delete,
            "unchanged": unchanged,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_and_objects_counted() {
        let secret = |v: &str| {
            json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "s", "namespace": "a"}, "stringData": {"k": v}})
        };
        let cm = |v: &str| {
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "c", "namespace": "a"}, "data": {"k": v}})
        };
        let gone = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "g", "namespace": "a"}});
        let out = compare(
            "sha256:aa",
            "sha256:bb",
            vec![secret("hunter2"), cm("x"), gone],
            vec![secret("swordfish"), cm("x")],
        );
        let diff = out["diff"].as_str().unwrap();
        assert!(
            !diff.contains("hunter2") && !diff.contains("swordfish"),
            "{diff}"
        );
        assert!(diff.contains("value not shown"), "{diff}");
        assert_eq!(
            out["counts"],
            json!({"create": 0, "configure": 1, "delete": 1, "unchanged": 1})
        );
    }
}
