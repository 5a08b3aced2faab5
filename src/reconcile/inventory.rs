//! StageInventory shards (api.md §3, delivery.md §2.11): the record of what each
//! stage applied, written before verification so that a crash never loses track
//! of an applied object.
//!
//! Names, labels and hashing are exactly the Go controller's, so existing
//! clusters and backups keep working.
//!
//! In the `hybrid` and `applyset` inventory modes (docs/decisions.md 4) shard 0 of
//! each stage is also a KEP-3659 ApplySet parent: it carries the
//! `applyset.kubernetes.io/id` label and the tooling, contains-group-kinds and
//! additional-namespaces annotations, and every member carries
//! `applyset.kubernetes.io/part-of: <id>` (set by the apply, see
//! [`crate::reconcile::apply::label`]).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use base64::Engine;

use crate::api::keys;
use crate::api::{InventoryEntry, StageInventory, StageInventorySpec, StageSet};
use crate::config::InventoryMode;
use crate::kube_client::ClientFactory;
use crate::reconcile::apply::{self, ObjectRef};
use crate::reconcile::error::{self, Error, describe};

/// The maximum length of an object name.
const MAX_NAME: usize = 253;

/// `<namespace>_<name>_<group>_<kind>`.
pub fn entry_id(r: &ObjectRef) -> String {
    format!("{}_{}_{}_{}", r.namespace, r.name, r.group(), r.kind)
}

/// Parses an entry id; `None` for malformed ids (not exactly four parts, empty
/// name or kind).
pub fn parse_id(id: &str, version: &str) -> Option<ObjectRef> {
    let parts: Vec<&str> = id.split('_').collect();
    if parts.len() != 4 || parts[1].is_empty() || parts[3].is_empty() {
        return None;
    }
    // Older records (and the upstream docs) store the whole apiVersion in `v`.
    let version = version.rsplit('/').next().unwrap_or(version);
    let api_version = if parts[2].is_empty() {
        version.to_string()
    } else {
        format!("{}/{}", parts[2], version)
    };
    Some(ObjectRef {
        api_version,
        kind: parts[3].to_string(),
        namespace: parts[0].to_string(),
        name: parts[1].to_string(),
    })
}

/// The canonical shard name: `<stageset>-<stage>-<NN>-<hash10>`.
pub fn shard_name(stageset: &str, stage: &str, index: usize) -> String {
    let input = format!(
        "{}/{}/{}/{}/{}",
        stageset.len(),
        stageset,
        stage.len(),
        stage,
        index
    );
    let hash = hex_prefix(&Sha256::digest(input.as_bytes()), 10);
    let readable = format!("{stageset}-{stage}-{index:02}");
    let max_prefix = MAX_NAME - 1 - hash.len();
    let prefix = if readable.len() > max_prefix {
        readable[..max_prefix].trim_end_matches('-').to_string()
    } else {
        readable
    };
    format!("{prefix}-{hash}")
}

fn hex_prefix(bytes: &[u8], n: usize) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s.truncate(n);
    s
}

/// The KEP-3659 ApplySet id of a parent object:
/// `applyset-<base64url(sha256(<name>.<namespace>.<kind>.<group>))>-v1`.
pub fn applyset_id(name: &str, namespace: &str, kind: &str, group: &str) -> String {
    let digest = Sha256::digest(format!("{name}.{namespace}.{kind}.{group}").as_bytes());
    format!(
        "applyset-{}-v1",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
    )
}

/// The ApplySet id of a stage: its shard 0 is the parent.
pub fn stage_applyset_id(stageset: &str, namespace: &str, stage: &str) -> String {
    applyset_id(
        &shard_name(stageset, stage, 0),
        namespace,
        "StageInventory",
        crate::api::GROUP,
    )
}

/// `contains-group-kinds`: the sorted, de-duplicated `<Kind>.<group>` list
/// (`<Kind>` alone for the core group).
pub fn group_kinds(objects: &[ObjectRef]) -> String {
    let set: BTreeSet<String> = objects
        .iter()
        .map(|r| {
            if r.group().is_empty() {
                r.kind.clone()
            } else {
                format!("{}.{}", r.kind, r.group())
            }
        })
        .collect();
    set.into_iter().collect::<Vec<_>>().join(",")
}

/// `additional-namespaces`: member namespaces other than the parent's, sorted.
pub fn additional_namespaces(objects: &[ObjectRef], parent_namespace: &str) -> String {
    let set: BTreeSet<&str> = objects
        .iter()
        .map(|r| r.namespace.as_str())
        .filter(|ns| !ns.is_empty() && *ns != parent_namespace)
        .collect();
    set.into_iter().collect::<Vec<_>>().join(",")
}

/// The recorded inventory of one stage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StageRecord {
    pub stage: String,
    pub position: i32,
    pub entries: BTreeMap<String, String>,
}

impl StageRecord {
    /// The recorded objects (malformed entries skipped).
    pub fn objects(&self) -> Vec<ObjectRef> {
        self.entries
            .iter()
            .filter_map(|(id, v)| parse_id(id, v))
            .collect()
    }

    /// How many entries do not parse (they escape pruning).
    pub fn malformed(&self) -> usize {
        self.entries
            .iter()
            .filter(|(id, v)| parse_id(id, v).is_none())
            .count()
    }
}

fn shard_api(client: &kube::Client, namespace: &str) -> Api<StageInventory> {
    Api::namespaced(client.clone(), namespace)
}

/// Reads every shard of a StageSet, grouped by stage.
pub async fn read(
    client: &kube::Client,
    namespace: &str,
    stageset: &str,
) -> Result<BTreeMap<String, StageRecord>, Error> {
    let api = shard_api(client, namespace);
    let params = ListParams::default().labels(&format!("{}={stageset}", keys::LABEL_STAGE_SET));
    let list = crate::reconcile::error::retrying(|| api.list(&params))
        .await
        .map_err(|e| Error::api("listing StageInventories", &e))?;
    let mut out: BTreeMap<String, StageRecord> = BTreeMap::new();
    for shard in list.items {
        let Some(stage) = shard.labels().get(keys::LABEL_STAGE).cloned() else {
            continue;
        };
        let rec = out.entry(stage.clone()).or_insert_with(|| StageRecord {
            stage,
            ..Default::default()
        });
        rec.position = shard.spec.stage_position.unwrap_or(rec.position);
        for e in shard.spec.entries.unwrap_or_default() {
            rec.entries.insert(e.id, e.v);
        }
    }
    Ok(out)
}

/// Replaces a stage's recorded inventory with `objects`: writes the shards
/// (create-or-update with server-side apply) and deletes obsolete ones. Returns
/// the number of shards.
/// The shard states this controller wrote or deleted, so the InventoryWatcher
/// can tell them from changes made by others (api.md §3: those re-queue the
/// owner). Keyed by `(namespace, name)`: fingerprints of the content we wrote
/// ([`InventoryWrites::fingerprint`]), recorded *before* each write so a watch
/// event can never overtake it, or [`InventoryWrites::DELETED`] for a shard we
/// deleted. The last few states are kept, because one pass may write a shard
/// twice (write-ahead, then trimmed after prune) and the first write's event
/// arrives after the second record.
#[derive(Debug, Default)]
pub struct InventoryWrites(
    std::sync::Mutex<
        std::collections::HashMap<(String, String), std::collections::VecDeque<String>>,
    >,
);

impl InventoryWrites {
    /// Marker for a shard the controller deleted itself.
    pub const DELETED: &'static str = "";

    /// What the controller owns of a shard: its spec and our labels and
    /// annotations (another tool's extra labels are not a change).
    pub fn fingerprint(shard: &StageInventory) -> String {
        let ours = |m: Option<&BTreeMap<String, String>>| -> BTreeMap<String, String> {
            m.into_iter()
                .flatten()
                .filter(|(k, _)| {
                    k.starts_with("stages.metio.wtf/") || k.starts_with("applyset.kubernetes.io/")
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        serde_json::json!({
            "spec": shard.spec,
            "labels": ours(shard.metadata.labels.as_ref()),
            "annotations": ours(shard.metadata.annotations.as_ref()),
        })
        .to_string()
    }

    /// How many recent states of one shard are remembered.
    const KEPT: usize = 8;

    pub fn record(&self, namespace: &str, name: &str, state: &str) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let states = map
            .entry((namespace.to_owned(), name.to_owned()))
            .or_default();
        states.retain(|s| s != state);
        states.push_back(state.to_owned());
        while states.len() > Self::KEPT {
            states.pop_front();
        }
    }

    /// Whether this state of a shard (its fingerprint, or [`Self::DELETED`])
    /// is one the controller produced.
    pub fn is_ours(&self, namespace: &str, name: &str, state: &str) -> bool {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(namespace.to_owned(), name.to_owned()))
            .is_some_and(|states| states.iter().any(|s| s == state))
    }

    /// Forgets a shard once its deletion was seen.
    pub fn forget(&self, namespace: &str, name: &str) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&(namespace.to_owned(), name.to_owned()));
    }
}

// Every argument is a distinct input of the one write; bundling them would
// only move the list into a struct built at the two call sites.
#[allow(clippy::too_many_arguments)]
pub async fn write(
    client: &kube::Client,
    writes: &InventoryWrites,
    owner: &StageSet,
    stage: &str,
    position: usize,
    objects: &[ObjectRef],
    shard_cap: usize,
    mode: InventoryMode,
) -> Result<usize, Error> {
    let namespace = owner.namespace().unwrap_or_default();
    let stageset = owner.name_any();
    let mut entries: Vec<InventoryEntry> = objects
        .iter()
        .map(|r| InventoryEntry {
            id: entry_id(r),
            v: r.version().to_string(),
        })
        .collect();
    entries.sort_by(|a, b| a.id.cmp(&b.id));
    entries.dedup_by(|a, b| a.id == b.id);
    let chunks: Vec<Vec<InventoryEntry>> = if entries.is_empty() {
        vec![Vec::new()]
    } else {
        entries
            .chunks(shard_cap.max(1))
            .map(<[InventoryEntry]>::to_vec)
            .collect()
    };
    let owner_ref = OwnerReference {
        api_version: crate::api::API_VERSION.into(),
        kind: "StageSet".into(),
        name: stageset.clone(),
        uid: owner.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let api = shard_api(client, &namespace);
    let mut names = BTreeSet::new();
    for (index, chunk) in chunks.iter().enumerate() {
        let name = shard_name(&stageset, stage, index);
        let mut shard = StageInventory::new(
            &name,
            StageInventorySpec {
                stage_position: Some(position as i32),
                entries: Some(chunk.clone()),
            },
        );
        shard.metadata.namespace = Some(namespace.clone());
        shard.metadata.labels = Some(BTreeMap::from([
            (keys::LABEL_STAGE_SET.to_string(), stageset.clone()),
            (keys::LABEL_STAGE.to_string(), stage.to_string()),
            (keys::LABEL_SHARD.to_string(), index.to_string()),
        ]));
        shard.metadata.owner_references = Some(vec![owner_ref.clone()]);
        if index == 0 && mode != InventoryMode::Entries {
            // The ApplySet parent. Server-side apply drops these again when the
            // mode changes to `entries`.
            let labels = shard.metadata.labels.get_or_insert_default();
            labels.insert(
                keys::APPLYSET_ID_LABEL.to_string(),
                stage_applyset_id(&stageset, &namespace, stage),
            );
            let mut annotations = BTreeMap::from([
                (
                    keys::APPLYSET_TOOLING_ANNOTATION.to_string(),
                    keys::APPLYSET_TOOLING.to_string(),
                ),
                (
                    keys::APPLYSET_GROUP_KINDS_ANNOTATION.to_string(),
                    group_kinds(objects),
                ),
            ]);
            let extra = additional_namespaces(objects, &namespace);
            if !extra.is_empty() {
                annotations.insert(
                    keys::APPLYSET_ADDITIONAL_NAMESPACES_ANNOTATION.to_string(),
                    extra,
                );
            }
            shard.metadata.annotations = Some(annotations);
        }
        writes.record(&namespace, &name, &InventoryWrites::fingerprint(&shard));
        let params = PatchParams::apply(keys::FIELD_MANAGER).force();
        let patch = Patch::Apply(&shard);
        crate::reconcile::error::retrying(|| api.patch(&name, &params, &patch))
            .await
            .map_err(|e| Error::api(&format!("writing StageInventory {name}"), &e))?;
        names.insert(name);
    }
    // Delete shards of this stage that are no longer canonical.
    let existing = api
        .list(&ListParams::default().labels(&format!(
            "{}={stageset},{}={stage}",
            keys::LABEL_STAGE_SET,
            keys::LABEL_STAGE
        )))
        .await
        .map_err(|e| Error::api("listing StageInventories", &e))?;
    for shard in existing.items {
        let name = shard.name_any();
        if names.contains(&name) {
            continue;
        }
        writes.record(&namespace, &name, InventoryWrites::DELETED);
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(Error::api(
                    &format!("deleting obsolete StageInventory {name}"),
                    &e,
                ));
            }
        }
    }
    Ok(chunks.len())
}

/// Deletes every shard of a stage.
pub async fn delete_stage(
    client: &kube::Client,
    writes: &InventoryWrites,
    namespace: &str,
    stageset: &str,
    stage: &str,
) -> Result<(), Error> {
    let api = shard_api(client, namespace);
    if let Ok(list) = api
        .list(&ListParams::default().labels(&format!(
            "{}={stageset},{}={stage}",
            keys::LABEL_STAGE_SET,
            keys::LABEL_STAGE
        )))
        .await
    {
        for shard in list.items {
            writes.record(namespace, &shard.name_any(), InventoryWrites::DELETED);
        }
    }
    api.delete_collection(
        &DeleteParams::background(),
        &ListParams::default().labels(&format!(
            "{}={stageset},{}={stage}",
            keys::LABEL_STAGE_SET,
            keys::LABEL_STAGE
        )),
    )
    .await
    .map(|_| ())
    .map_err(|e| Error::api(&format!("deleting StageInventories of stage {stage}"), &e))
}

/// The owner reference kind check used by tests and teardown.
pub fn is_owned_by(shard: &StageInventory, owner: &StageSet) -> bool {
    shard
        .owner_references()
        .iter()
        .any(|o| Some(&o.uid) == owner.meta().uid.as_ref())
}

/// Lists, for every kind among `objects`, the live objects matching
/// `selector`: cluster-wide when allowed, else in each namespace the objects of
/// that kind live in. Returns what was found and the errors met.
pub async fn list_labelled(
    clients: &ClientFactory,
    client: &kube::Client,
    objects: &[apply::ObjectRef],
    selector: &str,
) -> (Vec<apply::ObjectRef>, Vec<String>) {
    use kube::api::{DynamicObject, ListParams};
    let mut kinds: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for r in objects {
        kinds
            .entry((r.api_version.clone(), r.kind.clone()))
            .or_default()
            .insert(r.namespace.clone());
    }
    let mut found = Vec::new();
    let mut errors = Vec::new();
    let params = ListParams::default().labels(selector);
    for ((api_version, kind), namespaces) in kinds {
        let resource = match clients.resource(&api_version, &kind).await {
            Ok(r) => r,
            Err(e) => {
                errors.push(e.to_string());
                continue;
            }
        };
        let mut push = |list: kube::api::ObjectList<DynamicObject>| {
            for o in list.items {
                found.push(apply::ObjectRef {
                    api_version: api_version.clone(),
                    kind: kind.clone(),
                    namespace: o.namespace().unwrap_or_default(),
                    name: o.name_any(),
                });
            }
        };
        let all: Api<DynamicObject> = Api::all_with(client.clone(), &resource.api);
        match all.list(&params).await {
            Ok(list) => push(list),
            Err(e) if resource.namespaced && error::is_forbidden(&e) => {
                for ns in namespaces.iter().filter(|n| !n.is_empty()) {
                    let api: Api<DynamicObject> =
                        Api::namespaced_with(client.clone(), ns, &resource.api);
                    match api.list(&params).await {
                        Ok(list) => push(list),
                        Err(e) => errors.push(format!("list {kind} in {ns}: {}", describe(&e))),
                    }
                }
            }
            Err(e) => errors.push(format!("list {kind}: {}", describe(&e))),
        }
    }
    (found, errors)
}

#[cfg(test)]
mod tests {

    #[test]
    fn inventory_writes_tell_our_states_from_others() {
        let w = InventoryWrites::default();
        let mut shard = StageInventory::new(
            "inv",
            StageInventorySpec {
                stage_position: Some(0),
                entries: Some(Vec::new()),
            },
        );
        shard.metadata.labels = Some(BTreeMap::from([(
            keys::LABEL_STAGE.to_string(),
            "app".to_string(),
        )]));
        let ours = InventoryWrites::fingerprint(&shard);
        assert!(!w.is_ours("ns", "inv", &ours));
        w.record("ns", "inv", &ours);
        assert!(w.is_ours("ns", "inv", &ours));
        assert!(!w.is_ours("other", "inv", &ours));
        // Someone else's label is not a change; an edited spec or label of ours is.
        let mut other = shard.clone();
        other
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("team".into(), "x".into());
        assert!(w.is_ours("ns", "inv", &InventoryWrites::fingerprint(&other)));
        let mut edited = shard.clone();
        edited.spec.stage_position = Some(1);
        assert!(!w.is_ours("ns", "inv", &InventoryWrites::fingerprint(&edited)));
        let mut relabelled = shard.clone();
        relabelled
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(keys::LABEL_STAGE.into(), "x".into());
        assert!(!w.is_ours("ns", "inv", &InventoryWrites::fingerprint(&relabelled)));
        // An earlier write of the same pass still counts as ours.
        w.record("ns", "inv", &InventoryWrites::fingerprint(&edited));
        assert!(w.is_ours("ns", "inv", &ours));
        assert!(!w.is_ours("ns", "inv", InventoryWrites::DELETED));
        w.record("ns", "inv", InventoryWrites::DELETED);
        assert!(w.is_ours("ns", "inv", InventoryWrites::DELETED));
        w.forget("ns", "inv");
        assert!(!w.is_ours("ns", "inv", InventoryWrites::DELETED));
        assert!(!w.is_ours("ns", "inv", &ours));
    }

    use super::*;

    #[test]
    fn ids_round_trip() {
        let r = ObjectRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: "team".into(),
            name: "web".into(),
        };
        assert_eq!(entry_id(&r), "team_web_apps_Deployment");
        assert_eq!(parse_id("team_web_apps_Deployment", "v1").unwrap(), r);
        let ns = ObjectRef {
            api_version: "v1".into(),
            kind: "Namespace".into(),
            namespace: String::new(),
            name: "team".into(),
        };
        assert_eq!(entry_id(&ns), "_team__Namespace");
        assert_eq!(parse_id("_team__Namespace", "v1").unwrap(), ns);
        assert!(parse_id("a_b_c", "v1").is_none());
        assert!(parse_id("a__c_d", "v1").is_none());
        assert!(parse_id("a_b_c_", "v1").is_none());
        assert_eq!(parse_id("team_web_apps_Deployment", "apps/v1").unwrap(), r);
    }

    /// The id scheme is kubectl's: the same inputs give kubectl's value.
    #[test]
    fn applyset_ids() {
        let digest = Sha256::digest(b"parent.ns.StageInventory.stages.metio.wtf");
        let expected = format!(
            "applyset-{}-v1",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
        );
        assert_eq!(
            applyset_id("parent", "ns", "StageInventory", "stages.metio.wtf"),
            expected
        );
        let id = stage_applyset_id("app", "team", "web");
        assert!(id.len() <= 63, "a valid label value: {id}");
        assert!(id.starts_with("applyset-") && id.ends_with("-v1"));
        let objs = [
            parse_id("team_a__ConfigMap", "v1").unwrap(),
            parse_id("other_b_apps_Deployment", "v1").unwrap(),
            parse_id("_c_rbac.authorization.k8s.io_ClusterRole", "v1").unwrap(),
            parse_id("team_d__ConfigMap", "v1").unwrap(),
        ];
        assert_eq!(
            group_kinds(&objs),
            "ClusterRole.rbac.authorization.k8s.io,ConfigMap,Deployment.apps"
        );
        assert_eq!(additional_namespaces(&objs, "team"), "other");
    }

    #[test]
    fn shard_names() {
        let name = shard_name("payments", "application", 0);
        assert!(name.starts_with("payments-application-00-"));
        assert_eq!(name.len(), "payments-application-00-".len() + 10);
        let long = shard_name(&"s".repeat(200), &"t".repeat(63), 3);
        assert!(long.len() <= 253, "{}", long.len());
        assert!(!long.contains("--"));
        assert_ne!(
            shard_name("a-b", "c", 0),
            shard_name("a", "b-c", 0),
            "lengths disambiguate"
        );
    }

    /// The hash is the upstream one: sha256("<len>/<ss>/<len>/<stage>/<index>")[..10].
    #[test]
    fn shard_hash_matches_the_upstream_scheme() {
        let expected = hex_prefix(&Sha256::digest(b"8/payments/11/application/0"), 10);
        assert_eq!(
            shard_name("payments", "application", 0),
            format!("payments-application-00-{expected}")
        );
    }
}
