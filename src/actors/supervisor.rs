//! The Supervisor owns the StageSet watch (a kube-runtime reflector whose store
//! the HTTP servers read), starts one supervised [`StageSetActor`] per
//! StageSet, stops it when the StageSet is gone, and routes triggers: creation,
//! spec changes, the annotations that request work, and source changes reported
//! by the SourceWatcher, and StageInventories changed or deleted by someone
//! else (InventoryWatcher), and StageLedgers a user edited (LedgerWatcher). A StageSet's own status writes never wake it; a change
//! of what `dependsOn` gates on (Ready status/reason, observedGeneration,
//! version, a window-held revision), its creation or its deletion wakes the
//! StageSets in the same namespace that depend on it (delivery.md §1.2).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use actix::prelude::*;
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tokio::sync::Semaphore;

use crate::actors::fleet::MemberChanged;
use crate::actors::stageset::{Reconcile, RetryBucket, StageSetActor, Stop};
use crate::api::reasons::CONDITION_READY;
use crate::api::selector::LabelFilter;
use crate::api::{StageSet, keys};
use crate::cache::StageSetCache;
use crate::leader::Leadership;
use crate::reconcile::Env;
use crate::reconcile::source::{self, SourceId};

/// Annotations whose change requests a reconcile by itself (api.md §9.1).
const TRIGGER_ANNOTATIONS: &[&str] = &[
    keys::ANNOTATION_REQUESTED_AT,
    keys::ANNOTATION_RECONCILE_STAGE,
    keys::ANNOTATION_APPROVED_VERSION,
    keys::ANNOTATION_ROLLBACK_TO,
    keys::ANNOTATION_PROMOTE,
];

/// What the Supervisor remembers of a StageSet to decide whether a watch event
/// asks for work.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    uid: String,
    generation: i64,
    annotations: BTreeMap<String, String>,
    deleting: bool,
    /// What dependents gate on; a change wakes them, not this StageSet.
    gate: Gate,
    /// Keys (`namespace/name`) of the same-namespace StageSets this one lists
    /// in `spec.dependsOn`, sorted.
    depends: Vec<String>,
}

/// The part of a StageSet's status that the `dependsOn` gate of its dependents
/// reads (delivery.md R6). Ready messages and other status fields are left out
/// so that ordinary status writes wake nobody.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Gate {
    /// Ready condition (status, reason).
    ready: Option<(String, String)>,
    observed_generation: Option<i64>,
    version: Option<String>,
    /// `status.pendingUpdate.revisions` is non-empty.
    held: bool,
}

impl Gate {
    fn of(ss: &StageSet) -> Gate {
        let Some(status) = ss.status.as_ref() else {
            return Gate::default();
        };
        Gate {
            ready: status
                .conditions
                .iter()
                .find(|c| c.type_ == CONDITION_READY)
                .map(|c| (c.status.as_str().to_string(), c.reason.clone())),
            observed_generation: status.observed_generation,
            version: status.version.clone(),
            held: status
                .pending_update
                .as_ref()
                .is_some_and(|p| !p.revisions.is_empty()),
        }
    }
}

impl Seen {
    fn of(ss: &StageSet) -> Seen {
        let annotations = ss
            .annotations()
            .iter()
            .filter(|(k, _)| TRIGGER_ANNOTATIONS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Seen {
            uid: ss.uid().unwrap_or_default(),
            generation: ss.meta().generation.unwrap_or(0),
            annotations,
            deleting: ss.meta().deletion_timestamp.is_some(),
            gate: Gate::of(ss),
            depends: same_namespace_dependencies(ss),
        }
    }
}

/// The keys of the StageSets `ss` lists in `spec.dependsOn` within its own
/// namespace (namespace defaulting to its own), itself excluded. Cross-namespace
/// dependents are not woken; they rely on their own requeue (delivery.md §1.2).
fn same_namespace_dependencies(ss: &StageSet) -> Vec<String> {
    let own = ss.namespace().unwrap_or_default();
    let name = ss.name_any();
    let mut keys: Vec<String> = ss
        .spec
        .depends_on
        .iter()
        .flatten()
        .filter(|d| {
            d.namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .is_none_or(|n| n == own)
                && d.name != name
        })
        .map(|d| format!("{own}/{}", d.name))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

type WatchItem = Result<watcher::Event<StageSet>, watcher::Error>;
/// A watch event tagged with the index of the watch scope it came from.
type ScopedItem = (usize, WatchItem);

pub struct Supervisor {
    env: Arc<Env>,
    /// Whether this replica may reconcile (leader election).
    leadership: Arc<Leadership>,
    limiter: Arc<Semaphore>,
    /// The overall back-off bucket every StageSetActor reserves from.
    retries: Arc<RetryBucket>,
    namespaces: Vec<String>,
    /// `--watch-label-selector`: which StageSets get an actor (DECISIONS 22).
    selector: LabelFilter,
    /// Every StageSet in the watch scope, with its actor when this instance
    /// reconciles it (its labels match the selector). StageSets of other
    /// shards are tracked too: their Ready changes wake dependents here.
    actors: HashMap<String, (Option<Addr<StageSetActor>>, Seen)>,
    /// Reverse `dependsOn` index: a StageSet key to the keys of the
    /// same-namespace StageSets that depend on it.
    dependents: HashMap<String, BTreeSet<String>>,
    /// One reflector store per watch scope (the whole cluster, or each
    /// `--watch-namespaces` entry): a (re-)list of one namespace must never
    /// replace what another namespace's watch put in the cache.
    cache: StageSetCache,
    writers: Vec<reflector::store::Writer<StageSet>>,
    /// Keys seen by the (re-)list in progress, per scope.
    init_seen: HashMap<usize, Vec<String>>,
    /// StageSets whose actor was started by a (re-)list still in progress:
    /// their first reconcile reads the live state after the listed snapshot,
    /// so waking them as dependents meanwhile would only run them twice.
    fresh: HashSet<String>,
    /// The FleetActor, told about every StageSet change.
    fleets: Option<Recipient<MemberChanged>>,
}

impl Supervisor {
    /// A supervisor watching `namespaces` (empty: the whole cluster) and running
    /// at most `concurrent` reconciles at once.
    pub fn new(
        env: Arc<Env>,
        leadership: Arc<Leadership>,
        concurrent: usize,
        namespaces: Vec<String>,
        selector: LabelFilter,
    ) -> Supervisor {
        let (cache, writers) = StageSetCache::new(namespaces.len());
        Supervisor {
            env,
            leadership,
            limiter: Arc::new(Semaphore::new(concurrent.max(1))),
            retries: Arc::new(RetryBucket::standard()),
            namespaces,
            selector,
            actors: HashMap::new(),
            dependents: HashMap::new(),
            cache,
            writers,
            init_seen: HashMap::new(),
            fresh: HashSet::new(),
            fleets: None,
        }
    }

    /// Tells `fleets` about every StageSet added, changed or deleted.
    pub fn with_fleets(mut self, fleets: Recipient<MemberChanged>) -> Supervisor {
        self.fleets = Some(fleets);
        self
    }

    /// The StageSet cache (shared with the HTTP servers).
    pub fn cache(&self) -> StageSetCache {
        self.cache.clone()
    }

    /// Whether a StageSet key belongs to watch scope `scope`.
    fn in_scope(&self, scope: usize, key: &str) -> bool {
        match self.namespaces.get(scope) {
            None => true,
            Some(ns) => key.split_once('/').is_some_and(|(k, _)| k == ns),
        }
    }

    fn key_of(ss: &StageSet) -> String {
        format!("{}/{}", ss.namespace().unwrap_or_default(), ss.name_any())
    }

    /// Wakes the FleetRollouts that may count `ss` as a member.
    fn tell_fleets(&self, ss: &StageSet) {
        if let Some(fleets) = &self.fleets {
            fleets.do_send(MemberChanged {
                labels: ss.labels().clone(),
            });
        }
    }

    /// Handles an added or changed StageSet; `listed` when it comes from a
    /// (re-)list rather than a watch event.
    fn observe(&mut self, ss: &StageSet, listed: bool) {
        let key = Self::key_of(ss);
        self.tell_fleets(ss);
        let seen = Seen::of(ss);
        let mine = self.selector.matches(ss.labels());
        let (wake, old_depends) = match self.actors.get_mut(&key) {
            Some((slot, previous)) => {
                match (slot.as_ref(), mine) {
                    (Some(addr), true) => {
                        if previous.uid != seen.uid {
                            // Deleted and re-created under the same name.
                            addr.do_send(Reconcile("recreated"));
                        } else if previous.generation != seen.generation {
                            addr.do_send(Reconcile("spec changed"));
                        } else if previous.deleting != seen.deleting {
                            addr.do_send(Reconcile("deletion"));
                        } else if previous.annotations != seen.annotations {
                            addr.do_send(Reconcile("annotation"));
                        }
                    }
                    (Some(addr), false) => {
                        tracing::info!(stageset = %key, selector = %self.selector, "the StageSet's labels no longer match --watch-label-selector; another shard reconciles it now");
                        addr.do_send(Stop);
                        self.env.metrics.forget_stageset_key(&key);
                        *slot = None;
                    }
                    (None, true) => {
                        tracing::info!(stageset = %key, selector = %self.selector, "the StageSet's labels now match --watch-label-selector; reconciling it");
                        *slot = Some(Self::spawn(
                            &self.env,
                            &self.leadership,
                            (&self.limiter, &self.retries),
                            &self.cache,
                            ss,
                        ));
                    }
                    (None, false) => {}
                }
                // Its own status writes never wake the StageSet itself; a change
                // of what its dependents gate on wakes them.
                let wake = previous.uid != seen.uid
                    || previous.deleting != seen.deleting
                    || previous.gate != seen.gate;
                let old = std::mem::replace(previous, seen.clone());
                (wake, old.depends)
            }
            None => {
                let addr = mine.then(|| {
                    Self::spawn(
                        &self.env,
                        &self.leadership,
                        (&self.limiter, &self.retries),
                        &self.cache,
                        ss,
                    )
                });
                self.actors.insert(key.clone(), (addr, seen.clone()));
                if listed && mine {
                    self.fresh.insert(key.clone());
                }
                (true, Vec::new())
            }
        };
        if old_depends != seen.depends {
            self.unindex(&key, &old_depends);
            self.index(&key, &seen.depends);
        }
        if wake {
            self.wake_dependents(&key);
        }
    }

    /// Starts the supervised actor of a StageSet this instance reconciles.
    fn spawn(
        env: &Arc<Env>,
        leadership: &Arc<Leadership>,
        (limiter, retries): (&Arc<Semaphore>, &Arc<RetryBucket>),
        cache: &StageSetCache,
        ss: &StageSet,
    ) -> Addr<StageSetActor> {
        let env = env.clone();
        let leadership = leadership.clone();
        let (limiter, retries) = (limiter.clone(), retries.clone());
        let cache = cache.clone();
        let namespace = ss.namespace().unwrap_or_default();
        let name = ss.name_any();
        actix::Supervisor::start(move |_| {
            StageSetActor::new(
                &namespace,
                &name,
                env,
                leadership,
                limiter,
                retries.clone(),
                cache.clone(),
            )
        })
    }

    /// The actor of a StageSet this instance reconciles.
    fn actor(&self, key: &str) -> Option<&Addr<StageSetActor>> {
        self.actors.get(key).and_then(|(addr, _)| addr.as_ref())
    }

    fn index(&mut self, key: &str, depends: &[String]) {
        for dependency in depends {
            self.dependents
                .entry(dependency.clone())
                .or_default()
                .insert(key.to_string());
        }
    }

    fn unindex(&mut self, key: &str, depends: &[String]) {
        for dependency in depends {
            if let Some(set) = self.dependents.get_mut(dependency) {
                set.remove(key);
                if set.is_empty() {
                    self.dependents.remove(dependency);
                }
            }
        }
    }

    /// Wakes the StageSets in the same namespace whose `dependsOn` lists `key`.
    fn wake_dependents(&self, key: &str) {
        for dependent in self.dependents.get(key).into_iter().flatten() {
            if self.fresh.contains(dependent) {
                continue;
            }
            if let Some(addr) = self.actor(dependent) {
                addr.do_send(Reconcile("dependency changed"));
            }
        }
    }

    fn forget(&mut self, key: &str) {
        if let Some((addr, seen)) = self.actors.remove(key) {
            self.env.own_writes.forget(key);
            if let Some(addr) = addr {
                addr.do_send(Stop);
                self.env.metrics.forget_stageset_key(key);
            }
            self.unindex(key, &seen.depends);
            self.wake_dependents(key);
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let client = self.env.clients.controller();
        let apis: Vec<Api<StageSet>> = if self.namespaces.is_empty() {
            vec![Api::all(client)]
        } else {
            self.namespaces
                .iter()
                .map(|ns| Api::namespaced(client.clone(), ns))
                .collect()
        };
        let streams: Vec<_> = apis
            .into_iter()
            .zip(std::mem::take(&mut self.writers))
            .enumerate()
            .map(|(scope, (api, writer))| {
                let events = watcher(api, watcher::Config::default()).default_backoff();
                reflector::reflector(writer, events)
                    .map(move |item| (scope, item))
                    .boxed()
            })
            .collect();
        ctx.add_stream(futures::stream::select_all(streams));
        let changes = futures::stream::unfold(self.leadership.subscribe(), |mut rx| async move {
            rx.changed().await.ok()?;
            let leader = *rx.borrow_and_update();
            Some((LeadershipChanged(leader), rx))
        });
        ctx.add_stream(changes);
    }
}

/// This replica acquired (or lost) the lease.
#[derive(Message)]
#[rtype(result = "()")]
struct LeadershipChanged(bool);

impl StreamHandler<LeadershipChanged> for Supervisor {
    fn handle(&mut self, msg: LeadershipChanged, _ctx: &mut Context<Self>) {
        if msg.0 {
            let mine: Vec<_> = self
                .actors
                .values()
                .filter_map(|(a, _)| a.as_ref())
                .collect();
            tracing::info!(
                stagesets = mine.len(),
                "leadership acquired; reconciling every StageSet"
            );
            for addr in mine {
                addr.do_send(Reconcile("leadership acquired"));
            }
        }
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

impl StreamHandler<ScopedItem> for Supervisor {
    fn handle(&mut self, (scope, item): ScopedItem, _ctx: &mut Context<Self>) {
        match item {
            Ok(watcher::Event::Apply(ss)) => self.observe(&ss, false),
            Ok(watcher::Event::InitApply(ss)) => {
                self.init_seen
                    .entry(scope)
                    .or_default()
                    .push(Self::key_of(&ss));
                self.observe(&ss, true);
            }
            Ok(watcher::Event::Delete(ss)) => {
                let key = Self::key_of(&ss);
                // A fleet that counted it recounts now, not at its requeue.
                self.tell_fleets(&ss);
                self.forget(&key);
            }
            Ok(watcher::Event::Init) => {
                self.init_seen.insert(scope, Vec::new());
            }
            Ok(watcher::Event::InitDone) => {
                self.cache.mark_synced(scope);
                // After a re-list, this scope's StageSets not seen any more are
                // gone; other scopes are untouched.
                let seen: HashSet<String> = self
                    .init_seen
                    .remove(&scope)
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                let fresh: Vec<String> = self
                    .fresh
                    .iter()
                    .filter(|k| self.in_scope(scope, k))
                    .cloned()
                    .collect();
                for key in fresh {
                    self.fresh.remove(&key);
                }
                let gone: Vec<String> = self
                    .actors
                    .keys()
                    .filter(|k| self.in_scope(scope, k) && !seen.contains(*k))
                    .cloned()
                    .collect();
                for key in gone {
                    self.forget(&key);
                }
            }
            Err(e) => tracing::warn!(error = %e, "StageSet watch failed; retrying"),
        }
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        tracing::error!("the StageSet watch ended");
    }
}

/// A source's artifact or readiness changed (from the SourceWatcher).
#[derive(Message, Clone, Debug, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct SourceChanged(pub SourceId);

impl Handler<SourceChanged> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: SourceChanged, _ctx: &mut Context<Self>) {
        for ss in self.cache.state() {
            if source::references(&ss, &msg.0)
                && let Some(addr) = self.actor(&Self::key_of(&ss))
            {
                addr.do_send(Reconcile("source changed"));
            }
        }
    }
}

/// An owned StageInventory changed under the controller (from the
/// InventoryWatcher).
#[derive(Message, Clone, Debug, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct InventoryChanged {
    pub namespace: String,
    /// The owning StageSet.
    pub stageset: String,
    /// `changed` or `deleted`, for the log line.
    pub what: &'static str,
}

impl Handler<InventoryChanged> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: InventoryChanged, _ctx: &mut Context<Self>) {
        let key = format!("{}/{}", msg.namespace, msg.stageset);
        if let Some(addr) = self.actor(&key) {
            tracing::info!(
                stageset = %key,
                "an owned StageInventory was {} outside the controller; reconciling",
                msg.what
            );
            addr.do_send(Reconcile("inventory changed"));
        }
    }
}

/// A user edited the StageLedger of a StageSet (from the LedgerWatcher).
#[derive(Message, Clone, Debug, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct LedgerChanged {
    pub namespace: String,
    /// The StageSet of the same name.
    pub stageset: String,
}

impl Handler<LedgerChanged> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: LedgerChanged, _ctx: &mut Context<Self>) {
        let key = format!("{}/{}", msg.namespace, msg.stageset);
        if let Some(addr) = self.actor(&key) {
            tracing::info!(stageset = %key, "its StageLedger was edited; reconciling");
            addr.do_send(Reconcile("ledger changed"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stageset(status: serde_json::Value, depends_on: serde_json::Value) -> StageSet {
        serde_json::from_value(json!({
            "apiVersion": "stages.metio.wtf/v1",
            "kind": "StageSet",
            "metadata": {"name": "b", "namespace": "team", "generation": 3},
            "spec": {"dependsOn": depends_on, "stages": [{"name": "s", "sourceRef": {"name": "x"}}]},
            "status": status
        }))
        .unwrap()
    }

    fn ready(status: &str, reason: &str, message: &str) -> serde_json::Value {
        json!([{"type": "Ready", "status": status, "reason": reason, "message": message,
                "lastTransitionTime": "2024-01-01T00:00:00Z"}])
    }

    #[test]
    fn only_same_namespace_dependencies_are_indexed() {
        let ss = stageset(
            json!({}),
            json!([{"name": "a"}, {"name": "c", "namespace": "other"}, {"name": "a", "namespace": "team"},
                   {"name": "d", "namespace": ""}, {"name": "b"}]),
        );
        assert_eq!(same_namespace_dependencies(&ss), ["team/a", "team/d"]);
    }

    #[test]
    fn the_gate_ignores_messages_and_other_status_fields() {
        let base = json!({"conditions": ready("False", "StageProgressing", "one"), "observedGeneration": 3});
        let gate = Gate::of(&stageset(base.clone(), json!([])));
        let mut other = base.clone();
        other["conditions"] = ready("False", "StageProgressing", "two");
        other["lastAttemptedRevisions"] = json!({"team/x": "r2"});
        assert_eq!(Gate::of(&stageset(other, json!([]))), gate);
        let mut changed = base.clone();
        changed["conditions"] = ready("True", "Succeeded", "one");
        assert_ne!(Gate::of(&stageset(changed, json!([]))), gate);
        let mut changed = base.clone();
        changed["observedGeneration"] = json!(4);
        assert_ne!(Gate::of(&stageset(changed, json!([]))), gate);
        let mut changed = base.clone();
        changed["version"] = json!("1.0.0");
        assert_ne!(Gate::of(&stageset(changed, json!([]))), gate);
        let mut changed = base;
        changed["pendingUpdate"] = json!({"revisions": {"team/x": "r2"}});
        assert_ne!(Gate::of(&stageset(changed, json!([]))), gate);
    }
}
