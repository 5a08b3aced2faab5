//! Whole-run rollback (delivery.md §5.6, api.md §2.14): the snapshot a
//! `rollbackOnFailure` StageSet keeps of its last good run, and restoring it
//! when a stage fails.
//!
//! After a stage applies, its rendered objects go to the rollback store (when
//! one is configured) under `<namespace>/<stageset>/<stage>/<digest>`, the
//! artifact digest with `:` written as `-`. After a fully successful run,
//! `status.lastAppliedSnapshot` records, per stage, where its artifact came
//! from. When a stage later fails, every stage of that snapshot is restored in
//! recorded order: from the store when it has the rendering, else by fetching
//! the old artifact again and rebuilding it (which needs the producer to still
//! serve it, and the post-build variables to be unchanged: "fix forward"
//! otherwise).
//!
//! A promotion gate with `onFailure: Rollback` reverts only its own stage
//! the same way ([`revert_stage`], delivery.md §5.5): the stage's snapshot
//! entry is restored, what the failing revision added is deleted, and the
//! caller parks the aborted revision.
//!
//! The store itself is an actor (`actors::rollback_store`); the pipeline only
//! sees the [`SnapshotStore`] trait.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use kube::ResourceExt;
use serde_json::Value;

use crate::api::reasons::EventReason;
use crate::api::{Stage, StageArtifactRef, StageSet};
use crate::config::InventoryMode;

use super::error::Error;
use super::stage::{build_stage, effective_sa, post_build_vars};
use super::{Pass, apply, images, inventory};

/// The most a stored rendering may weigh; larger reads are errors.
pub const MAX_SNAPSHOT_BYTES: u64 = 64 * 1024 * 1024;

/// Where a stage's rendering is kept: the logical key
/// `<namespace>/<stageset>/<stage>/<digest with ':' as '-'>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SnapshotKey {
    pub namespace: String,
    pub stageset: String,
    pub stage: String,
    /// The artifact digest, `<algorithm>:<hex>`.
    pub digest: String,
}

impl SnapshotKey {
    /// The digest as it appears in keys: `sha256-<hex>`.
    pub fn digest_part(&self) -> String {
        self.digest.replace(':', "-")
    }

    /// `<namespace>/<stageset>/<stage>/<digest-part>`.
    pub fn logical(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.namespace,
            self.stageset,
            self.stage,
            self.digest_part()
        )
    }

    /// Whether every part is safe in a key: DNS-label-like names and a
    /// lowercase `<algorithm>:<hex>` digest. Keys are built from the spec
    /// and the source's status, so this refuses anything a hostile value
    /// could use to reach outside the stage's prefix.
    pub fn is_valid(&self) -> bool {
        let name = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
                && !s.starts_with('.')
        };
        let digest_ok = self.digest.split_once(':').is_some_and(|(algo, hex)| {
            !algo.is_empty()
                && algo
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && !hex.is_empty()
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        });
        name(&self.namespace) && name(&self.stageset) && name(&self.stage) && digest_ok
    }
}

/// A rollback-store failure (the message names the backend and the key).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// What the pipeline needs from the rollback store.
pub trait SnapshotStore: Send + Sync {
    /// Stores a rendering (a JSON array of objects). `keep` lists digests of
    /// the same stage that retention must never delete (the one
    /// `status.lastAppliedSnapshot` points to).
    fn put(
        &self,
        key: SnapshotKey,
        body: Bytes,
        keep: Vec<String>,
    ) -> BoxFuture<'static, Result<(), StoreError>>;

    /// Reads a rendering; `Ok(None)` when the store does not have it.
    fn get(&self, key: SnapshotKey) -> BoxFuture<'static, Result<Option<Bytes>, StoreError>>;
}

/// The store as the pipeline holds it.
pub type Store = Arc<dyn SnapshotStore>;

/// The snapshot entry of one stage: the artifact it applied and the
/// fingerprint of the post-build variables it was built with.
pub fn snapshot_entry(
    stage: &str,
    url: &str,
    digest: &str,
    revision: &str,
    substitution_digest: &str,
) -> StageArtifactRef {
    StageArtifactRef {
        stage: stage.to_string(),
        url: url.to_string(),
        digest: digest.to_string(),
        revision: Some(revision.to_string()).filter(|r| !r.is_empty()),
        substitution_digest: Some(substitution_digest.to_string()).filter(|d| !d.is_empty()),
    }
}

/// Whether a pass keeps its renderings: the StageSet asks for rollbacks
/// and a store is configured.
pub(super) fn wants_rendering(pass: &Pass<'_>) -> bool {
    pass.env.rollback_store.is_some() && pass.ss.spec.rollback_on_failure == Some(true)
}

/// A rendering as stored: the JSON array of the objects.
pub(super) fn encode(objects: &[Value]) -> Result<Bytes, String> {
    serde_json::to_vec(objects)
        .map(Bytes::from)
        .map_err(|e| e.to_string())
}

/// After a stage applied: keeps its rendering (from [`encode`]) in the store.
/// A failure is a Warning event, never a failed rollout (operations.md §6.7).
pub(super) async fn keep_rendering(
    pass: &Pass<'_>,
    stage: &str,
    digest: &str,
    rendering: Result<Bytes, String>,
) {
    let Some(store) = pass.env.rollback_store.as_ref() else {
        return;
    };
    let key = SnapshotKey {
        namespace: pass.namespace(),
        stageset: pass.ss.name_any(),
        stage: stage.to_string(),
        digest: digest.to_string(),
    };
    if !key.is_valid() {
        pass.event(
            true,
            EventReason::RollbackStoreFailed.as_str(),
            &format!(
                "stage \"{stage}\": not storing the rendering: artifact digest {digest:?} is not <algorithm>:<lowercase hex>"
            ),
        )
        .await;
        return;
    }
    let body = match rendering {
        Ok(b) => b,
        Err(e) => {
            pass.event(
                true,
                EventReason::RollbackStoreFailed.as_str(),
                &format!("stage \"{stage}\": encoding the rendering: {e}"),
            )
            .await;
            return;
        }
    };
    // Retention never removes what the last good run points to.
    let keep: Vec<String> = pass
        .previous
        .last_applied_snapshot
        .iter()
        .filter(|e| e.stage == stage)
        .map(|e| e.digest.clone())
        .collect();
    if let Err(e) = store.put(key, body, keep).await {
        tracing::warn!(stageset = %pass.key(), stage, error = %e, "storing the rendering failed; the rollout continues");
        pass.event(
            true,
            EventReason::RollbackStoreFailed.as_str(),
            &format!("stage \"{stage}\": storing the rendering failed: {e}"),
        )
        .await;
    }
}

/// Why a rollback did not restore the last good run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RollbackError {
    /// The previous revision cannot be restored (`PreviousRevisionUnavailable`).
    Unavailable(String),
    /// The restored objects fail image verification (`ImageUnverified`).
    Unverified(String),
    /// Retry with back-off (a store outage, a transient API error).
    Transient(String),
}

/// Restores every stage of `snapshot` still in the spec, in recorded order
/// (delivery.md §5.6.2). Returns the stages restored.
pub(super) async fn restore(
    pass: &Pass<'_>,
    snapshot: &[StageArtifactRef],
) -> Result<Vec<String>, RollbackError> {
    let mut restored = Vec::new();
    for entry in snapshot {
        let Some((position, stage)) = pass
            .ss
            .spec
            .stages
            .iter()
            .enumerate()
            .find(|(_, s)| s.name == entry.stage)
        else {
            continue;
        };
        restore_stage(pass, position, stage, entry, &[]).await?;
        restored.push(stage.name.clone());
    }
    Ok(restored)
}

/// Restores one stage from its snapshot entry: applies the objects as the
/// stage's identity and records them, with `also_track`, as its inventory.
/// Returns the restored objects.
async fn restore_stage(
    pass: &Pass<'_>,
    position: usize,
    stage: &Stage,
    entry: &StageArtifactRef,
    also_track: &[apply::ObjectRef],
) -> Result<Vec<apply::ObjectRef>, RollbackError> {
    let env = pass.env;
    let namespace = pass.namespace();
    let ss_name = pass.ss.name_any();
    let unavailable = |what: String| {
        RollbackError::Unavailable(format!(
            "stage \"{}\" revision {}: {what}",
            stage.name,
            entry.revision.as_deref().unwrap_or(&entry.digest)
        ))
    };
    let applyset = (env.settings.inventory_mode != InventoryMode::Entries)
        .then(|| inventory::stage_applyset_id(&ss_name, &namespace, &stage.name));
    // 1. The stored rendering, if any (labels stamped again: the stage's
    // labels are this controller's, whatever the store holds).
    let objects = match stored(pass, stage, entry).await? {
        Some(mut objects) => {
            apply::label(
                &mut objects,
                &ss_name,
                &namespace,
                &stage.name,
                applyset.as_deref(),
            );
            objects
        }
        // 2. Else fetch the old artifact again and rebuild it with the
        // current path and patches, if the variables did not change.
        None => {
            let vars = post_build_vars(env, &pass.ss, &namespace, stage)
                .await
                .map_err(|f| unavailable(format!("resolving postBuild variables: {}", f.error)))?;
            let now = vars.as_ref().map(|v| v.digest()).unwrap_or_default();
            if let Some(then) = entry
                .substitution_digest
                .as_deref()
                .filter(|d| !d.is_empty())
                && then != now
            {
                return Err(unavailable(
                    "its postBuild variables changed since it was applied; fix forward instead"
                        .to_string(),
                ));
            }
            let artifact = env
                .fetcher
                .fetch(&entry.url, &entry.digest)
                .await
                .map_err(|e| unavailable(format!("the artifact is no longer fetchable: {e}")))?;
            // Decrypted again with today's keys: rotated away, it fails closed.
            build_stage(pass, stage, artifact.files, vars.as_ref())
                .map_err(|f| unavailable(format!("rebuilding: {} {}", f.op, f.error)))?
        }
    };
    // 3. Image verification (never bypassed by a rollback).
    images::gate(&env.clients.controller())
        .await
        .map_err(|e| match e {
            Error::Unverified(m) => RollbackError::Unverified(m),
            other => RollbackError::Transient(other.to_string()),
        })?;
    // 4. Apply as the stage's identity, without conflict handling.
    let mut refs: Vec<apply::ObjectRef> = objects.iter().map(apply::ObjectRef::of).collect();
    refs.sort_by_key(inventory::entry_id);
    refs.dedup_by_key(|r| inventory::entry_id(r));
    let restored = refs.clone();
    refs.extend(also_track.iter().cloned());
    refs.sort_by_key(inventory::entry_id);
    refs.dedup_by_key(|r| inventory::entry_id(r));
    let target = pass.target().map_err(unavailable)?;
    let client = target
        .for_service_account(&namespace, effective_sa(&pass.ss, Some(stage)))
        .await
        .map_err(|e| unavailable(format!("connecting as the stage's identity: {e}")))?;
    let options = apply::ApplyOptions {
        concurrency: env.settings.apply_concurrency,
        staging_timeout: env.settings.staging_timeout,
        force_token: None,
    };
    apply::apply(target, &client, objects, &options)
        .await
        .map_err(|e| unavailable(format!("re-applying: {e}")))?;
    // 5. The stage's inventory is what was restored.
    inventory::write(
        &env.clients.controller(),
        &env.inventory_writes,
        &pass.ss,
        &stage.name,
        position,
        &refs,
        env.settings.inventory_shard_cap,
        env.settings.inventory_mode,
    )
    .await
    .map_err(|e| RollbackError::Transient(format!("stage \"{}\": {e}", stage.name)))?;
    Ok(restored)
}

/// What a single-stage revert needs to know about the pass.
pub(super) struct Revert<'a> {
    pub(super) position: usize,
    pub(super) stage: &'a Stage,
    /// The revision whose promotion gate failed.
    pub(super) failing: &'a str,
    /// What the failing revision rendered (and applied).
    pub(super) rendered: &'a [apply::ObjectRef],
    /// Every stage's inventory before this pass.
    pub(super) records: &'a BTreeMap<String, inventory::StageRecord>,
    /// Objects earlier stages of this pass render.
    pub(super) claimed: &'a BTreeMap<String, String>,
}

/// Reverts one stage whose promotion gate failed with `onFailure:
/// Rollback` to its entry of `status.lastAppliedSnapshot` (delivery.md
/// §5.5): re-applies that revision like a whole-run rollback, then deletes
/// what only the failing revision added (unless the stage has `prune:
/// false`; never an object another stage owns). The inventory tracks the
/// union until the deletes are done, so nothing is lost on a crash. Returns
/// the revision restored and how many objects the stage's inventory holds.
pub(super) async fn revert_stage(
    pass: &Pass<'_>,
    r: Revert<'_>,
) -> Result<(String, usize), RollbackError> {
    let stage = r.stage;
    let Some(entry) = pass
        .previous
        .last_applied_snapshot
        .iter()
        .find(|e| e.stage == stage.name)
    else {
        return Err(RollbackError::Unavailable(
            "no last good revision is recorded for it (status.lastAppliedSnapshot is kept when rollbackOnFailure is true)"
                .to_string(),
        ));
    };
    let revision = entry
        .revision
        .clone()
        .unwrap_or_else(|| entry.digest.clone());
    if revision == r.failing {
        return Err(RollbackError::Unavailable(format!(
            "its last good revision is {revision}, the one that failed"
        )));
    }
    let own = r.records.get(&stage.name);
    let recorded: BTreeSet<String> = own
        .map(|rec| rec.objects().iter().map(inventory::entry_id).collect())
        .unwrap_or_default();
    let mut tracked: Vec<apply::ObjectRef> = own.map(|rec| rec.objects()).unwrap_or_default();
    tracked.extend(r.rendered.iter().cloned());
    let restored = restore_stage(pass, r.position, stage, entry, &tracked).await?;
    // What only the failing revision brought: not restored, not recorded
    // before, not another stage's.
    let keep: BTreeSet<String> = restored.iter().map(inventory::entry_id).collect();
    let elsewhere: BTreeSet<String> = r
        .records
        .iter()
        .filter(|(name, _)| **name != stage.name)
        .flat_map(|(_, rec)| {
            rec.objects()
                .iter()
                .map(inventory::entry_id)
                .collect::<Vec<_>>()
        })
        .collect();
    let added: Vec<apply::ObjectRef> = r
        .rendered
        .iter()
        .filter(|o| {
            let id = inventory::entry_id(o);
            !keep.contains(&id)
                && !recorded.contains(&id)
                && !elsewhere.contains(&id)
                && !r.claimed.contains_key(&id)
        })
        .cloned()
        .collect();
    if added.is_empty() || stage.prune == Some(false) {
        let mut all: BTreeSet<String> = keep;
        all.extend(tracked.iter().map(inventory::entry_id));
        return Ok((revision, all.len()));
    }
    let namespace = pass.namespace();
    let ss_name = pass.ss.name_any();
    let target = pass.target().map_err(RollbackError::Transient)?;
    let client = target
        .for_service_account(&namespace, effective_sa(&pass.ss, Some(stage)))
        .await
        .map_err(|e| RollbackError::Transient(e.to_string()))?;
    super::teardown::delete_objects(
        target,
        &client,
        &added,
        &ss_name,
        &namespace,
        pass.env.settings.apply_concurrency,
    )
    .await
    .map_err(|e| {
        RollbackError::Transient(format!("deleting what revision {} added: {e}", r.failing))
    })?;
    let gone: BTreeSet<String> = added.iter().map(inventory::entry_id).collect();
    let mut now: Vec<apply::ObjectRef> = restored;
    now.extend(
        tracked
            .into_iter()
            .filter(|o| !gone.contains(&inventory::entry_id(o))),
    );
    now.sort_by_key(inventory::entry_id);
    now.dedup_by_key(|o| inventory::entry_id(o));
    let env = pass.env;
    inventory::write(
        &env.clients.controller(),
        &env.inventory_writes,
        &pass.ss,
        &stage.name,
        r.position,
        &now,
        env.settings.inventory_shard_cap,
        env.settings.inventory_mode,
    )
    .await
    .map_err(|e| RollbackError::Transient(format!("stage \"{}\": {e}", stage.name)))?;
    Ok((revision, now.len()))
}

/// The stored rendering of a snapshot entry: `Ok(None)` when there is no
/// store, the store does not have it, or the stored copy does not decode (a
/// Warning event says so). A store that cannot be read is a transient error.
async fn stored(
    pass: &Pass<'_>,
    stage: &Stage,
    entry: &StageArtifactRef,
) -> Result<Option<Vec<Value>>, RollbackError> {
    let Some(store) = pass.env.rollback_store.as_ref() else {
        return Ok(None);
    };
    let key = SnapshotKey {
        namespace: pass.namespace(),
        stageset: pass.ss.name_any(),
        stage: stage.name.clone(),
        digest: entry.digest.clone(),
    };
    if !key.is_valid() {
        return Ok(None);
    }
    match store.get(key).await {
        Ok(None) => Ok(None),
        Ok(Some(body)) => match decode_rendering(&body) {
            Ok(objects) => Ok(Some(objects)),
            Err(e) => {
                pass.event(
                    true,
                    EventReason::RollbackStoreFailed.as_str(),
                    &format!(
                        "stage \"{}\": the stored rendering of {} does not decode ({e}); fetching the artifact again",
                        stage.name, entry.digest
                    ),
                )
                .await;
                Ok(None)
            }
        },
        Err(e) => {
            pass.event(
                true,
                EventReason::RollbackStoreFailed.as_str(),
                &format!(
                    "stage \"{}\": reading the rollback store failed: {e}",
                    stage.name
                ),
            )
            .await;
            Err(RollbackError::Transient(format!(
                "reading the rollback store: {e}"
            )))
        }
    }
}

/// A stored rendering: a JSON array of objects, each with a kind and a name.
pub fn decode_rendering(body: &[u8]) -> Result<Vec<Value>, String> {
    let objects: Vec<Value> = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    for (i, o) in objects.iter().enumerate() {
        let ok = o
            .get("kind")
            .and_then(Value::as_str)
            .is_some_and(|k| !k.is_empty())
            && o.pointer("/metadata/name")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty());
        if !ok {
            return Err(format!("entry {i} is not a Kubernetes object"));
        }
    }
    Ok(objects)
}

/// The snapshot a failed pass rolls back to: the previous status's, when the
/// StageSet asks for rollbacks.
pub(super) fn snapshot_of(
    ss: &StageSet,
    previous: &[StageArtifactRef],
) -> Option<Vec<StageArtifactRef>> {
    (ss.spec.rollback_on_failure == Some(true) && !previous.is_empty()).then(|| previous.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(namespace: &str, stage: &str, digest: &str) -> SnapshotKey {
        SnapshotKey {
            namespace: namespace.into(),
            stageset: "app".into(),
            stage: stage.into(),
            digest: digest.into(),
        }
    }

    #[test]
    fn keys_are_upstreams() {
        let k = key("payments", "api", "sha256:deadbeef");
        assert_eq!(k.logical(), "payments/app/api/sha256-deadbeef");
        assert!(k.is_valid());
    }

    #[test]
    fn hostile_parts_are_refused() {
        for (ns, stage, digest) in [
            ("payments", "api", "sha256:DEADBEEF"),
            ("payments", "api", "sha256:../../etc"),
            ("payments", "../api", "sha256:00"),
            ("pay/ments", "api", "sha256:00"),
            ("", "api", "sha256:00"),
            ("payments", "api", "deadbeef"),
            ("payments", "api", ":00"),
            ("payments", "a_pi", "sha256:00"),
        ] {
            assert!(!key(ns, stage, digest).is_valid(), "{ns} {stage} {digest}");
        }
    }

    #[test]
    fn renderings_decode_or_say_why() {
        let ok =
            serde_json::to_vec(&json!([{"kind": "ConfigMap", "metadata": {"name": "a"}}])).unwrap();
        assert_eq!(decode_rendering(&ok).unwrap().len(), 1);
        assert!(decode_rendering(b"not json").is_err());
        assert!(decode_rendering(b"{}").is_err());
        let bad = serde_json::to_vec(&json!([{"kind": "ConfigMap"}])).unwrap();
        assert_eq!(
            decode_rendering(&bad).unwrap_err(),
            "entry 0 is not a Kubernetes object"
        );
    }

    #[test]
    fn snapshot_entries_leave_empty_fields_out() {
        let e = snapshot_entry("api", "http://a/x.tgz", "sha256:00", "", "");
        assert_eq!(e.revision, None);
        assert_eq!(e.substitution_digest, None);
        let e = snapshot_entry("api", "http://a/x.tgz", "sha256:00", "main@sha1:1", "ab");
        assert_eq!(e.revision.as_deref(), Some("main@sha1:1"));
        assert_eq!(e.substitution_digest.as_deref(), Some("ab"));
    }
}
