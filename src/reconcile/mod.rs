//! The delivery pipeline (delivery.md §2), as plain async functions: no actor
//! types here, so every step can be exercised on its own.
//!
//! [`reconcile`] runs one pass for one StageSet in the normative order: deletion
//! → finalizer → suspend → manual-request bookkeeping → resolve and pin every
//! stage's source → for each stage in order: identity, fetch, build, label,
//! apply, drift report, write-ahead inventory, verify → success bookkeeping. The
//! first failing or holding stage ends the pass; later stages are not touched.

pub mod actions;
pub mod apply;
pub mod artifact;
pub mod budget;
pub mod build;
pub mod cel;
pub mod conflict;
pub mod decrypt;
pub mod depends;
pub mod error;
pub mod fleet;
pub mod health;
pub mod images;
pub mod inventory;
pub mod metricsource;
pub mod notify;
pub mod outbound;
pub mod owned;
pub mod podgates;
pub mod prerequisites;
pub mod promotion;
pub mod prune;
pub mod rollback;
pub mod source;
mod stage;
pub mod status;
pub mod substitute;
pub mod target;
pub mod teardown;
pub mod verify;
pub mod version;
pub mod windows;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::Instrument;

use crate::api::reasons::{EventReason, StageSetReason};
use crate::api::{StageSet, StageSetStatus, StageStatus, keys};
use crate::config::InventoryMode;
use crate::kube_client::ClientFactory;
use crate::metrics::Metrics;
use error::{Requeue, describe};
use stage::{StageContext, StageDone, StageResult, run_stage};
use status::Ready;

/// `--apply-concurrency`'s default.
pub const DEFAULT_APPLY_CONCURRENCY: usize = 16;

/// Settings the pipeline reads from the controller's flags.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `--default-interval`.
    pub default_interval: Duration,
    /// `--inventory-shard-cap`.
    pub inventory_shard_cap: usize,
    /// `--no-cross-namespace-refs`.
    pub no_cross_namespace_refs: bool,
    /// `--runbook-base-url` (None drops the links).
    pub runbook_base: Option<String>,
    /// How long staged batches (CRDs, Namespaces, `*Class`) may take.
    pub staging_timeout: Duration,
    /// `--inventory-mode`.
    pub inventory_mode: InventoryMode,
    /// `--max-teardown-wait`.
    pub max_teardown_wait: Duration,
    /// `--allowed-action-hosts` (Go `path.Match` globs, validated at
    /// start-up); `outbound::ActionPolicy::new` takes them.
    pub allowed_action_hosts: Vec<String>,
    /// `--require-verified-migration-sources`.
    pub require_verified_migration_sources: bool,
    /// `--require-pinned-migration-sources`.
    pub require_pinned_migration_sources: bool,
    /// `--apply-concurrency`: objects of one kind written (and pruned, and
    /// read for readiness) at once (DECISIONS 21).
    pub apply_concurrency: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            default_interval: Duration::from_secs(600),
            inventory_shard_cap: 5000,
            no_cross_namespace_refs: false,
            runbook_base: None,
            staging_timeout: Duration::from_secs(60),
            inventory_mode: InventoryMode::Hybrid,
            max_teardown_wait: Duration::from_secs(3600),
            allowed_action_hosts: Vec::new(),
            require_verified_migration_sources: false,
            require_pinned_migration_sources: false,
            apply_concurrency: DEFAULT_APPLY_CONCURRENCY,
        }
    }
}

/// The pipeline's time source: the system clock, or one a test moves.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> jiff::Timestamp + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock(Arc::new(jiff::Timestamp::now))
    }

    /// A clock that reads `now` (tests).
    pub fn from_fn(now: impl Fn() -> jiff::Timestamp + Send + Sync + 'static) -> Clock {
        Clock(Arc::new(now))
    }

    pub fn now(&self) -> jiff::Timestamp {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

/// What the pipeline needs from the outside world.
pub struct Env {
    pub clients: ClientFactory,
    pub fetcher: artifact::Fetcher,
    pub settings: Settings,
    /// Identifies this controller replica in events.
    pub instance: String,
    /// The controller's metrics.
    pub metrics: Arc<Metrics>,
    /// Forwards events to Flux's notification-controller (`--events-addr`).
    pub notifier: Option<notify::Notifier>,
    /// The StageInventory writes this controller made (see the InventoryWatcher).
    pub inventory_writes: Arc<inventory::InventoryWrites>,
    /// The rollback store (`--rollback-store-*`), if one is configured.
    pub rollback_store: Option<rollback::Store>,
    /// The outbound guard and client of http actions
    /// (`--allowed-action-hosts`).
    pub actions: outbound::ActionPolicy,
    /// Connections to the remote clusters StageSets deliver to.
    pub targets: target::Targets,
    /// What time it is (update windows).
    pub clock: Clock,
    /// The StageSet writes this controller made (see [`OwnWrites`]).
    pub own_writes: Arc<OwnWrites>,
}

/// The newest resourceVersion each StageSet had after a write of this
/// controller (its status, its finalizer). A reconcile takes its StageSet
/// from the watch cache only when the cached copy is at least that new, so
/// it never decides on a status older than what it wrote itself; otherwise
/// it reads the StageSet from the API server.
#[derive(Debug, Default)]
pub struct OwnWrites(std::sync::Mutex<std::collections::HashMap<String, u64>>);

impl OwnWrites {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, u64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes a write of `key` that left it at `resource_version`. A version
    /// that is not a number (opaque to clients) makes the cache unusable
    /// for that StageSet until the next numeric one.
    pub fn record(&self, key: &str, resource_version: Option<&str>) {
        let version = resource_version.and_then(|v| v.parse::<u64>().ok());
        let mut writes = self.lock();
        match version {
            Some(v) => {
                let newest = writes.entry(key.to_string()).or_insert(v);
                *newest = (*newest).max(v);
            }
            None => {
                writes.insert(key.to_string(), u64::MAX);
            }
        }
    }

    /// Whether a cached copy of `key` at `resource_version` includes every
    /// write this controller made to it.
    pub fn covers(&self, key: &str, resource_version: Option<&str>) -> bool {
        let Some(version) = resource_version.and_then(|v| v.parse::<u64>().ok()) else {
            return false;
        };
        self.lock().get(key).is_none_or(|newest| version >= *newest)
    }

    /// Forgets a StageSet that is gone.
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }
}

/// The result of one pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub requeue: Requeue,
    /// The Ready condition written this pass, if any.
    pub ready: Option<Ready>,
}

impl Outcome {
    fn quiet(requeue: Requeue) -> Outcome {
        Outcome {
            requeue,
            ready: None,
        }
    }
}

/// The per-stage gate holds that are not counted in
/// `stageset_reconcile_total` (operations.md §7.1.2).
fn is_gate_hold(reason: StageSetReason) -> bool {
    matches!(
        reason,
        StageSetReason::Soaking
            | StageSetReason::AwaitingPromotion
            | StageSetReason::PromotionBlocked
            | StageSetReason::BudgetExhausted
            | StageSetReason::BudgetSourceUnavailable
    )
}

/// ±5 % jitter on an interval.
pub fn jitter(d: Duration) -> Duration {
    let factor = 0.95 + fastrand::f64() * 0.10;
    Duration::from_secs_f64(d.as_secs_f64() * factor)
}

fn parse_duration(d: Option<&crate::api::Duration>) -> Option<Duration> {
    d.and_then(|d| d.parse().ok())
        .filter(|d| d.is_positive())
        .and_then(|d| d.to_std())
}

/// The effective interval, retry interval and steady (success) interval.
pub fn intervals(ss: &StageSet, settings: &Settings) -> (Duration, Duration, Duration) {
    let interval = parse_duration(ss.spec.interval.as_ref()).unwrap_or(settings.default_interval);
    let retry = parse_duration(ss.spec.retry_interval.as_ref()).unwrap_or(interval);
    let steady = parse_duration(ss.spec.drift_detection_interval.as_ref())
        .filter(|d| *d < interval)
        .unwrap_or(interval);
    (interval, retry, steady)
}

/// The state of one pass, accumulated as it runs.
struct Pass<'a> {
    env: &'a Env,
    ss: StageSet,
    status: StageSetStatus,
    previous: StageSetStatus,
    /// The StageLedger (R16), when the StageSet has Lifetime actions or
    /// adopts one.
    lifetime: Option<actions::ledger::Lifetime>,
    /// The clients of the cluster the StageSet delivers to (R11): the
    /// controller's own until a remote one is resolved, or why it could not
    /// be.
    target: Result<ClientFactory, target::TargetError>,
    /// The SOPS keys (R14) when the StageSet sets `spec.decryption`, or why
    /// they could not be loaded.
    keys: Option<Result<Arc<decrypt::Keys>, error::Error>>,
    /// A fresh budget-override token was consumed this pass (R9).
    budget_overridden: bool,
    /// The version plan (R12) when the StageSet tracks a version.
    version: Option<version::Plan>,
    /// A fresh `reset-scope` token clears every stage's version ledger (R15).
    reset_version_ledgers: bool,
}

impl Pass<'_> {
    fn namespace(&self) -> String {
        self.ss.namespace().unwrap_or_default()
    }

    /// The target cluster's clients (see [`Pass::target`]); the error
    /// message when it could not be reached.
    fn target(&self) -> Result<&ClientFactory, String> {
        self.target
            .as_ref()
            .map_err(|e| format!("connect to target cluster: {e}"))
    }

    fn generation(&self) -> i64 {
        self.ss.meta().generation.unwrap_or(0)
    }

    /// Sets Ready, writes the status, records an event on a transition.
    async fn finish(&mut self, ready: Ready, requeue: Requeue) -> Outcome {
        self.finish_with(ready, requeue, false).await
    }

    /// [`Pass::finish`] for the outcomes `stageset_reconcile_total` counts
    /// (operations.md §7.1.2: success, progressing, stage-level failures),
    /// once the status is written.
    async fn finish_counted(&mut self, ready: Ready, requeue: Requeue) -> Outcome {
        self.finish_with(ready, requeue, true).await
    }

    async fn finish_with(&mut self, ready: Ready, requeue: Requeue, counted: bool) -> Outcome {
        let generation = self.generation();
        self.status.observed_generation = Some(generation);
        let changed = status::set_ready(
            &mut self.status,
            &ready,
            generation,
            self.env.settings.runbook_base.as_deref(),
        );
        let client = self.env.clients.controller();
        match status::write(&client, &self.ss, &self.status).await {
            Ok(version) => self.env.own_writes.record(&self.key(), version.as_deref()),
            Err(e) => {
                tracing::warn!(stageset = %self.key(), error = %e, "status write failed");
                return Outcome {
                    requeue: Requeue::Backoff,
                    ready: Some(ready),
                };
            }
        }
        self.record_stages();
        if counted {
            self.env.metrics.reconcile_counted(
                &self.namespace(),
                &self.ss.name_any(),
                ready.reason,
            );
        }
        if changed {
            let message = status::decorate(
                ready.reason,
                &ready.message,
                self.env.settings.runbook_base.as_deref(),
            );
            self.event(!ready.reason.is_ready(), ready.reason.as_str(), &message)
                .await;
        }
        Outcome {
            requeue,
            ready: Some(ready),
        }
    }

    /// Ends a pass whose promotion gate could not be evaluated (R19.4):
    /// writes the stage entries as they stand, leaves Ready and
    /// observedGeneration alone (no event, not counted) and asks for
    /// back-off. The pass was not a failure of the StageSet; only a read
    /// that will be repeated.
    async fn unevaluable(&mut self, stage: &str, message: &str) -> Outcome {
        tracing::warn!(stageset = %self.key(), stage = %stage, "{message}; retrying with back-off");
        let client = self.env.clients.controller();
        match status::write(&client, &self.ss, &self.status).await {
            Ok(version) => {
                self.env.own_writes.record(&self.key(), version.as_deref());
                self.record_stages();
            }
            Err(e) => {
                tracing::warn!(stageset = %self.key(), error = %e, "status write failed");
            }
        }
        Outcome::quiet(Requeue::Backoff)
    }

    /// Records a stage's progress mid-pass (phase `Verifying` once applied,
    /// `Ready` once verified), leaving the Ready condition as it is, so that the
    /// status tells the truth while a long rollout runs.
    async fn progress(&mut self, entry: StageStatus) {
        if self.status.stages.iter().any(|s| s == &entry) {
            return;
        }
        let spec_names: Vec<String> = self.ss.spec.stages.iter().map(|s| s.name.clone()).collect();
        let current = std::mem::take(&mut self.status.stages);
        self.status.stages =
            status::merge_stages(&spec_names, &current, std::slice::from_ref(&entry));
        let client = self.env.clients.controller();
        match status::write(&client, &self.ss, &self.status).await {
            Ok(version) => {
                self.env.own_writes.record(&self.key(), version.as_deref());
                self.record_stages()
            }
            Err(e) => {
                tracing::debug!(stageset = %self.key(), error = %e, "progress status write failed")
            }
        }
    }

    /// `stageset_stage_ready` from the stage entries just written.
    fn record_stages(&self) {
        let spec: Vec<String> = self.ss.spec.stages.iter().map(|s| s.name.clone()).collect();
        self.env.metrics.stage_statuses(
            &self.namespace(),
            &self.ss.name_any(),
            &spec,
            &self.status.stages,
        );
    }

    async fn event(&self, warning: bool, reason: &str, note: &str) {
        let client = self.env.clients.controller();
        let notifier = self.env.notifier.as_ref();
        // The forwarded event's revision comes from this pass's status, not
        // from the one read when the pass started.
        let fresh;
        let ss = if notifier.is_some() {
            fresh = StageSet {
                status: Some(self.status.clone()),
                ..self.ss.clone()
            };
            &fresh
        } else {
            &self.ss
        };
        let event = notify::StageSetEvent {
            stageset: ss,
            instance: &self.env.instance,
            warning,
            reason,
            note,
            time: k8s_openapi::jiff::Timestamp::now(),
        };
        if let Err(e) = status::event(&client, notifier, &event).await {
            tracing::warn!(stageset = %self.key(), error = %e, "event not recorded");
        }
    }

    fn key(&self) -> String {
        format!("{}/{}", self.namespace(), self.ss.name_any())
    }
}

/// Runs one reconcile of the StageSet `namespace/name`.
///
/// `cached` is the watch cache's copy; it is used when it includes every
/// write this controller made ([`OwnWrites`]), else the StageSet is read.
///
/// The pass runs in the span `StageSet.Reconcile` (operations.md §7.8) with
/// `stageset.namespace`, `stageset.name` and `stageset.generation`; a pass
/// that ends with a failed stage or rollback marks it Error.
pub async fn reconcile(
    env: &Env,
    namespace: &str,
    name: &str,
    cached: Option<StageSet>,
) -> Outcome {
    let span = crate::traced_span!(
        "StageSet.Reconcile",
        stageset.namespace = %namespace,
        stageset.name = %name,
        stageset.generation = tracing::field::Empty,
    );
    reconcile_in_span(env, namespace, name, cached)
        .instrument(span)
        .await
}

async fn reconcile_in_span(
    env: &Env,
    namespace: &str,
    name: &str,
    cached: Option<StageSet>,
) -> Outcome {
    let key = format!("{namespace}/{name}");
    let api: Api<StageSet> = Api::namespaced(env.clients.controller(), namespace);
    let fresh = cached.filter(|c| {
        env.own_writes
            .covers(&key, c.meta().resource_version.as_deref())
    });
    let ss = match fresh {
        Some(ss) => ss,
        None => match api.get_opt(name).await {
            Ok(Some(ss)) => ss,
            Ok(None) => {
                env.own_writes.forget(&key);
                return Outcome::quiet(Requeue::Never);
            }
            Err(e) => {
                tracing::warn!(stageset = %key, error = %describe(&e), "reading the StageSet failed");
                return Outcome::quiet(Requeue::Backoff);
            }
        },
    };
    tracing::Span::current().record(
        "stageset.generation",
        ss.meta().generation.unwrap_or_default(),
    );
    // R1: deletion.
    if ss.meta().deletion_timestamp.is_some() {
        return teardown::run(env, &ss).await;
    }
    // R2: finalizer.
    if !ss.finalizers().iter().any(|f| f == keys::FINALIZER) {
        // Guarded by the resourceVersion, so finalizers added concurrently by
        // others are never overwritten.
        let add = if ss.meta().finalizers.is_some() {
            json!({"op": "add", "path": "/metadata/finalizers/-", "value": keys::FINALIZER})
        } else {
            json!({"op": "add", "path": "/metadata/finalizers", "value": [keys::FINALIZER]})
        };
        let patch = json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": ss.resource_version()},
            add
        ]);
        let patch: json_patch::Patch = serde_json::from_value(patch).expect("a valid JSON patch");
        return match api
            .patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
        {
            Ok(written) => {
                env.own_writes
                    .record(&key, written.meta().resource_version.as_deref());
                Outcome::quiet(Requeue::Now)
            }
            Err(e) => {
                tracing::debug!(stageset = %format!("{namespace}/{name}"), error = %describe(&e), "adding the finalizer failed; retrying");
                Outcome::quiet(Requeue::Backoff)
            }
        };
    }
    let previous = ss.status.clone().unwrap_or_default();
    let mut pass = Pass {
        env,
        status: previous.clone(),
        previous,
        ss,
        lifetime: None,
        target: Ok(env.clients.clone()),
        keys: None,
        budget_overridden: false,
        version: None,
        reset_version_ledgers: false,
    };
    // R3: suspend (the requestedAt token is not marked handled).
    if pass.ss.spec.suspend == Some(true) {
        return pass
            .finish(
                Ready::new(StageSetReason::Suspended, "Reconciliation is suspended"),
                Requeue::Never,
            )
            .await;
    }
    // R4: manual reconcile request.
    if let Some(token) = pass
        .ss
        .annotations()
        .get(keys::ANNOTATION_REQUESTED_AT)
        .filter(|t| !t.is_empty())
        .cloned()
    {
        if pass.previous.last_handled_reconcile_at.as_deref() != Some(token.as_str()) {
            pass.status.migration_failure_count = Some(0);
            pass.status.action_failure_count = Some(0);
        }
        pass.status.last_handled_reconcile_at = Some(token);
    }
    // R5: the admission rules, for StageSets that bypassed the webhook (it
    // was disabled, or the rules were tightened after the object was admitted).
    if let Err(message) = crate::validate::validate_stageset(&pass.ss) {
        return pass
            .finish(
                Ready::new(StageSetReason::InvalidSpec, message),
                Requeue::After(error::PERMANENT_RETRY),
            )
            .await;
    }
    // R6: dependsOn.
    if let Err(blocked) = depends::check(
        &env.clients.controller(),
        &pass.ss,
        env.settings.no_cross_namespace_refs,
    )
    .await
    {
        if blocked.transient {
            tracing::warn!(stageset = %pass.key(), error = %blocked.message, "reading dependsOn StageSets failed; backing off");
            return Outcome::quiet(Requeue::Backoff);
        }
        let (_, retry, _) = intervals(&pass.ss, &env.settings);
        let requeue = blocked.requeue(retry);
        return pass
            .finish(Ready::new(blocked.reason, blocked.message), requeue)
            .await;
    }
    run_stages(&mut pass).await
}

/// R7 onwards: resolve and pin every source, then the stage loop, prune and
/// success bookkeeping.
async fn run_stages(pass: &mut Pass<'_>) -> Outcome {
    let env = pass.env;
    let namespace = pass.namespace();
    let ss_name = pass.ss.name_any();
    let (interval, retry, steady) = intervals(&pass.ss, &env.settings);
    // R7: resolve and pin every stage's source before touching the cluster.
    let mut pinned = Vec::with_capacity(pass.ss.spec.stages.len());
    let mut attempted = BTreeMap::new();
    for stage in &pass.ss.spec.stages {
        match source::resolve(
            &env.clients,
            &stage.name,
            &namespace,
            &stage.source_ref,
            env.settings.no_cross_namespace_refs,
        )
        .await
        {
            Ok(resolved) => {
                attempted.insert(resolved.key.clone(), resolved.revision.clone());
                pinned.push(resolved);
            }
            Err(e) => {
                let requeue = e.requeue.to_requeue(retry);
                return pass.finish(Ready::new(e.reason, e.message), requeue).await;
            }
        }
    }
    pass.status.last_attempted_revisions = attempted.clone();

    // R8: update windows.
    let span = crate::traced_span!("stageset.gateWindows");
    if let Some(outcome) = window_gate(pass, &attempted, retry).instrument(span).await {
        return outcome;
    }
    // R9: the one-shot budget override; R10: the rollout-wide error budget.
    let overridden = budget_override(pass);
    pass.budget_overridden = overridden;
    let span = crate::traced_span!("stageset.gateErrorBudget");
    if let Some(outcome) = budget_gate(pass, &attempted, overridden, retry)
        .instrument(span)
        .await
    {
        return outcome;
    }

    // R17: what every stage recorded before this pass.
    let previous = match inventory::read(&env.clients.controller(), &namespace, &ss_name).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(stageset = %pass.key(), error = %e, "reading the inventory failed; retrying");
            return Outcome::quiet(Requeue::Backoff);
        }
    };
    for record in previous.values() {
        let malformed = record.malformed();
        if malformed > 0 {
            tracing::debug!(stageset = %pass.key(), stage = %record.stage, malformed, "skipping malformed inventory entries");
            env.metrics
                .inventory_skipped(&namespace, &ss_name, &record.stage, malformed as u64);
        }
    }

    // R16: the Lifetime ledger.
    if let Err(e) = load_lifetime(pass).await {
        tracing::warn!(stageset = %pass.key(), error = %e, "reading the StageLedger failed; retrying");
        return Outcome::quiet(Requeue::Backoff);
    }

    // R11: the target cluster. A failure to reach it fails the first stage
    // (S4, "connect to target cluster") and nothing is applied.
    pass.target = env.targets.resolve(&env.clients, &pass.ss).await;
    // R12, R13: the version plan and its approval.
    let span = crate::traced_span!("stageset.planMigrations");
    if let Some(outcome) = version_gate(pass, &pinned).instrument(span).await {
        return outcome;
    }
    // R14: the decryption keys (a failure fails the first stage, "configure
    // decryption").
    let span = crate::traced_span!("stageset.buildDecryptor");
    pass.keys = load_keys(pass).instrument(span.clone()).await;
    if let Some(Err(e)) = &pass.keys {
        crate::telemetry::fail(&span, e);
    }

    // R18: the stage loop.
    let spec_names: Vec<String> = pass.ss.spec.stages.iter().map(|s| s.name.clone()).collect();
    let mut produced: Vec<StageStatus> = Vec::new();
    let mut done: Vec<StageDone> = Vec::new();
    let mut claimed: BTreeMap<String, String> = BTreeMap::new();
    let stages = pass.ss.spec.stages.clone();
    for (position, (stage, source)) in stages.iter().zip(pinned.iter()).enumerate() {
        let prior = pass
            .previous
            .stages
            .iter()
            .find(|s| s.name == stage.name)
            .cloned();
        let record = previous.get(&stage.name);
        // A stage that was applied before but has no inventory lost it.
        let reconstruct = record.is_none()
            && prior
                .as_ref()
                .and_then(|p| p.applied_revision.as_deref())
                .is_some_and(|r| !r.is_empty());
        let ctx = StageContext {
            position,
            stage,
            source,
            prior: prior.as_ref(),
            record,
            reconstruct,
            claimed: &claimed,
            records: &previous,
        };
        match run_stage(pass, ctx).await {
            StageResult::Ready(stage_done) => {
                env.metrics.stage_applied(&namespace, &ss_name, &stage.name);
                for r in &stage_done.rendered {
                    claimed.insert(inventory::entry_id(r), stage.name.clone());
                }
                produced.push(stage_done.entry.clone());
                done.push(*stage_done);
            }
            StageResult::Failed(failure, entry) => {
                let message = failure.ready_message();
                tracing::error!(
                    stageset = %pass.key(),
                    stage = %failure.stage,
                    op = %failure.op,
                    terminal = failure.is_terminal(),
                    reason = failure.reason().as_str(),
                    error = %message,
                    "stage failed"
                );
                produced.push(entry);
                pass.status.stages =
                    status::merge_stages(&spec_names, &pass.previous.stages, &produced);
                let requeue = failure.requeue(interval);
                let ready = Ready::new(failure.reason(), failure.ready_message());
                crate::telemetry::fail(&tracing::Span::current(), &ready.message);
                let Some(snapshot) =
                    rollback::snapshot_of(&pass.ss, &pass.previous.last_applied_snapshot)
                else {
                    return pass.finish_counted(ready, requeue).await;
                };
                // The failure is reported first; the pass is counted once,
                // with the reason it ends with.
                let outcome = pass.finish(ready, requeue).await;
                return roll_back(pass, &snapshot, outcome, interval).await;
            }
            StageResult::Unevaluable(message, entry) => {
                // R19.4: the stage's entry (and its ledgers) persisted,
                // Ready and observedGeneration untouched, back-off.
                produced.push(entry);
                pass.status.stages =
                    status::merge_stages(&spec_names, &pass.previous.stages, &produced);
                return pass.unevaluable(&stage.name, &message).await;
            }
            StageResult::Progressing(message, entry) => {
                produced.push(entry);
                pass.status.stages =
                    status::merge_stages(&spec_names, &pass.previous.stages, &produced);
                return pass
                    .finish_counted(
                        Ready::new(
                            StageSetReason::StageProgressing,
                            format!("stage \"{}\" verify: {message}", stage.name),
                        ),
                        Requeue::After(jitter(retry)),
                    )
                    .await;
            }
            StageResult::Held {
                applied,
                entry,
                reason,
                message,
                requeue,
            } => {
                if applied {
                    env.metrics.stage_applied(&namespace, &ss_name, &stage.name);
                }
                produced.push(entry);
                pass.status.stages =
                    status::merge_stages(&spec_names, &pass.previous.stages, &produced);
                // Gate holds surface through their gauges and alerts, not
                // as counted outcomes (operations.md §7.1.2: the error alert
                // excludes only Succeeded and Suspended); failures a stage
                // reports this way (RBACDenied, InvalidSpec) are counted.
                let ready = Ready::new(reason, message);
                let requeue = Requeue::After(requeue);
                return if is_gate_hold(reason) {
                    pass.finish(ready, requeue).await
                } else {
                    pass.finish_counted(ready, requeue).await
                };
            }
            StageResult::Deleted => return Outcome::quiet(Requeue::Now),
        }
    }
    pass.status.stages = status::merge_stages(&spec_names, &pass.previous.stages, &produced);

    // R21: prune, unless an inventory was rebuilt this pass.
    let reconstructed: Vec<&StageDone> =
        done.iter().filter(|d| d.reconstructed.is_some()).collect();
    let prune_deferred = !reconstructed.is_empty();
    if prune_deferred {
        let partial = reconstructed.iter().any(|d| d.reconstructed == Some(true));
        let names: Vec<String> = reconstructed
            .iter()
            .map(|d| format!("\"{}\"", d.entry.name))
            .collect();
        let note = format!(
            "rebuilt the lost inventory of stage(s) {} from labelled live objects{}; pruning is skipped this pass and resumes on the next",
            names.join(", "),
            if partial {
                " (partial: some kinds could not be listed)"
            } else {
                ""
            }
        );
        tracing::warn!(stageset = %pass.key(), "{note}");
        pass.event(true, EventReason::InventoryReconstructed.as_str(), &note)
            .await;
    } else if let Err(failure) = prune::prune_pass(pass, &previous, &done).await {
        let requeue = failure.requeue(interval);
        return pass
            .finish_counted(
                Ready::new(failure.reason(), failure.ready_message()),
                requeue,
            )
            .await;
    }

    // R22: success.
    pass.status.last_applied_revisions = attempted;
    if let Some(plan) = pass.version.clone() {
        if plan.transition == version::Transition::Baseline {
            let note = format!(
                "baselined at version {}: no migrations ran and version-scoped actions count as done",
                plan.desired
            );
            pass.event(false, EventReason::MigrationsBaselined.as_str(), &note)
                .await;
        }
        pass.status.version = Some(plan.desired);
        pass.status.executed_migrations.clear();
        pass.status.executed_migration_actions.clear();
        pass.status.pending_migrations.clear();
        pass.status.migration_failure_count = Some(0);
    }
    if pass.ss.spec.rollback_on_failure == Some(true) {
        pass.status.last_applied_snapshot = done.iter().map(|d| d.snapshot.clone()).collect();
    }
    pass.status.action_failure_count = Some(0);
    let n = stages.len();
    // A prune deferred by a rebuilt inventory runs on the very next pass,
    // not an interval later: until then objects that left stay in place.
    let requeue = if prune_deferred {
        Requeue::Now
    } else {
        Requeue::After(jitter(steady))
    };
    let requeue_after = match requeue {
        Requeue::After(d) => crate::duration::GoDuration::from_std(d).to_string(),
        _ => "0s".to_string(),
    };
    tracing::info!(stageset = %pass.key(), stages = n, ready = true, requeueAfter = %requeue_after, "StageSet synced");
    pass.finish_counted(
        Ready::new(
            StageSetReason::Succeeded,
            format!("Applied and verified {n} stage(s)"),
        ),
        requeue,
    )
    .await
}

/// R12, R13 and R15's version-ledger reset (delivery.md §5.4): plans the
/// version transition and holds the pass while it is refused or waits for
/// approval, returning its outcome; None lets it proceed.
async fn version_gate(pass: &mut Pass<'_>, pinned: &[source::ResolvedSource]) -> Option<Outcome> {
    let plan = match version::plan(pass, pinned).await? {
        Ok(plan) => plan,
        Err(version::PlanError::Transient(message)) => {
            crate::telemetry::fail(&tracing::Span::current(), &message);
            tracing::warn!(stageset = %pass.key(), error = %message, "resolving the desired version failed; backing off");
            return Some(Outcome::quiet(Requeue::Backoff));
        }
        Err(version::PlanError::Waiting { reason, message }) => {
            let (_, retry, _) = intervals(&pass.ss, &pass.env.settings);
            return Some(
                pass.finish(Ready::new(reason, message), Requeue::After(jitter(retry)))
                    .await,
            );
        }
        Err(version::PlanError::Refused { reason, message }) => {
            crate::telemetry::fail(&tracing::Span::current(), &message);
            return Some(
                pass.finish(
                    Ready::new(reason, message),
                    Requeue::After(error::PERMANENT_RETRY),
                )
                .await,
            );
        }
    };
    pass.status.pending_migrations = version::pending(&pass.ss, &plan);
    if let Some(message) = version::awaiting_approval(&pass.ss, &plan) {
        pass.status.pending_version = Some(plan.desired.clone());
        // Counted (operations.md §7.1.2), unlike the gate holds.
        return Some(
            pass.finish_counted(
                Ready::new(StageSetReason::AwaitingApproval, message),
                Requeue::After(error::PERMANENT_RETRY),
            )
            .await,
        );
    }
    pass.status.pending_version = None;
    if let Some(token) = pass
        .ss
        .annotations()
        .get(keys::ANNOTATION_RESET_SCOPE)
        .filter(|t| !t.is_empty())
        .cloned()
        && pass.previous.last_handled_reset_scope.as_deref() != Some(token.as_str())
    {
        pass.reset_version_ledgers = true;
        pass.status.last_handled_reset_scope = Some(token);
    }
    pass.version = Some(plan);
    None
}

/// R8 (delivery.md §5.1): holds the pass while the update windows say no,
/// returning its outcome; None lets it proceed. The one-shot `update-now`
/// token lets one pass through whatever the windows say.
async fn window_gate(
    pass: &mut Pass<'_>,
    pinned: &BTreeMap<String, String>,
    retry: Duration,
) -> Option<Outcome> {
    if let Some(token) = pass
        .ss
        .annotations()
        .get(keys::ANNOTATION_UPDATE_NOW)
        .filter(|t| !t.is_empty())
        && pass.previous.last_handled_update_override.as_deref() != Some(token.as_str())
    {
        pass.status.last_handled_update_override = Some(token.clone());
        pass.status.pending_update = None;
        return None;
    }
    let declared = pass.ss.spec.update_windows.clone().unwrap_or_default();
    if declared.is_empty() {
        pass.status.pending_update = None;
        return None;
    }
    let compiled = match windows::compile(&declared) {
        Ok(w) => w,
        Err(message) => {
            return Some(
                pass.finish(
                    Ready::new(StageSetReason::InvalidSpec, message),
                    Requeue::After(error::PERMANENT_RETRY),
                )
                .await,
            );
        }
    };
    let now = pass.env.clock.now();
    let new_revision = pinned
        .iter()
        .any(|(k, r)| pass.previous.last_applied_revisions.get(k) != Some(r));
    let hard_freeze = pass.ss.spec.window_scope == Some(crate::api::WindowScope::All);
    if windows::allowed(&compiled, now) || (!new_revision && !hard_freeze) {
        pass.status.pending_update = None;
        return None;
    }
    let next = windows::next_change(&compiled, now);
    let entering = pass.previous.pending_update.is_none();
    pass.status.pending_update = Some(crate::api::PendingUpdate {
        revisions: if new_revision {
            pinned.clone()
        } else {
            BTreeMap::new()
        },
        next_window_opens: next.map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time),
    });
    let opens = next.map_or_else(|| "not scheduled".to_string(), |t| t.to_string());
    if entering {
        pass.env
            .metrics
            .update_deferred(&pass.namespace(), &pass.ss.name_any());
        let note = format!("delivery held by update window (next window opens {opens})");
        pass.event(false, EventReason::UpdateDeferred.as_str(), &note)
            .await;
    }
    let requeue = match next {
        Some(at) => {
            let wait = Duration::try_from(at.duration_since(now)).unwrap_or_default();
            wait.clamp(Duration::from_secs(5), Duration::from_secs(3600))
        }
        None => retry,
    };
    let ready = if pass.previous.last_applied_revisions.is_empty() {
        Ready::new(
            StageSetReason::UpdateDeferred,
            format!("delivery held by update window (next window opens {opens})"),
        )
    } else {
        Ready::new(
            StageSetReason::Succeeded,
            format!("Deployed; delivery held by update window (next window opens {opens})"),
        )
    };
    Some(pass.finish(ready, Requeue::After(requeue)).await)
}

/// R9: a fresh `stages.metio.wtf/budget-override` token is recorded and
/// lets this pass past every error budget.
fn budget_override(pass: &mut Pass<'_>) -> bool {
    let Some(token) = pass
        .ss
        .annotations()
        .get(keys::ANNOTATION_BUDGET_OVERRIDE)
        .filter(|t| !t.is_empty())
        .cloned()
    else {
        return false;
    };
    if pass.previous.last_handled_budget_override.as_deref() == Some(token.as_str()) {
        return false;
    }
    pass.status.last_handled_budget_override = Some(token);
    true
}

/// R10 (delivery.md §5.2.3): holds a new revision while the rollout-wide
/// error budget is exhausted, or while its source cannot be read and
/// `onSourceError: Hold`. None lets the pass proceed.
async fn budget_gate(
    pass: &mut Pass<'_>,
    pinned: &BTreeMap<String, String>,
    overridden: bool,
    retry: Duration,
) -> Option<Outcome> {
    let namespace = pass.namespace();
    let name = pass.ss.name_any();
    let Some(budget) = pass.ss.spec.error_budget.clone() else {
        pass.status.budget_freeze = None;
        return None;
    };
    let new_revision = pinned
        .iter()
        .any(|(k, r)| pass.previous.last_applied_revisions.get(k) != Some(r));
    if overridden || !new_revision {
        pass.status.budget_freeze = None;
        pass.env.metrics.budget(&namespace, &name, None, false);
        return None;
    }
    let prior = pass.previous.budget_freeze.clone();
    let verdict = budget::evaluate(
        pass.env,
        &pass.ss,
        &budget,
        "spec.errorBudget",
        prior.as_ref(),
        retry,
        true,
    )
    .await;
    match verdict {
        budget::Verdict::Invalid(message) => Some(
            pass.finish(
                Ready::new(StageSetReason::InvalidSpec, message),
                Requeue::After(error::PERMANENT_RETRY),
            )
            .await,
        ),
        budget::Verdict::Proceed {
            freeze,
            dry_run_started,
            source_error,
        } => {
            pass.status.budget_freeze = freeze;
            if dry_run_started {
                let note = "dry run: the error budget is exhausted; delivering anyway";
                pass.event(false, EventReason::BudgetExhausted.as_str(), note)
                    .await;
            }
            if let Some(e) = source_error {
                let note = format!(
                    "the error budget source is unavailable, delivering anyway (onSourceError: Allow): {e}"
                );
                pass.event(true, EventReason::BudgetSourceUnavailable.as_str(), &note)
                    .await;
            }
            None
        }
        budget::Verdict::Hold {
            reason,
            what,
            freeze,
            requeue,
        } => {
            pass.status.budget_freeze = freeze;
            tracing::info!(stageset = %pass.key(), reason = reason.as_str(), detail = %what, "rollout frozen by error budget");
            let what = format!("delivery held: {what}");
            let ready = if pass.previous.last_applied_revisions.is_empty() {
                Ready::new(reason, what)
            } else {
                Ready::new(StageSetReason::Succeeded, format!("Deployed; {what}"))
            };
            Some(pass.finish(ready, Requeue::After(jitter(requeue))).await)
        }
    }
}

/// R14: the SOPS keys of `spec.decryption`, read from its Secret as the
/// StageSet-level tenant on the controller's cluster. None without
/// `spec.decryption`. Messages name the Secret and its entry at most, never
/// key material; the detail of a key that does not parse goes to the log.
async fn load_keys(pass: &Pass<'_>) -> Option<Result<Arc<decrypt::Keys>, error::Error>> {
    let decryption = pass.ss.spec.decryption.as_ref()?;
    let Some(reference) = decryption.secret_ref.as_ref() else {
        // No Secret: only files we cannot open anyway (cloud KMS) would
        // need keys; they fail with "decryption failed" per file.
        return Some(
            decrypt::Keys::from_secret_data(&BTreeMap::new())
                .map(Arc::new)
                .map_err(|e| error::Error::Transient(e.to_string())),
        );
    };
    let namespace = pass.namespace();
    let reader = match pass
        .env
        .clients
        .for_service_account(&namespace, pass.ss.spec.service_account_name.as_deref())
        .await
    {
        Ok(c) => c,
        Err(e) => return Some(Err(error::Error::Transient(e.to_string()))),
    };
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(reader, &namespace);
    let secret = match secrets.get_opt(&reference.name).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Some(Err(error::Error::Transient(format!(
                "decryption failed: the Secret \"{}\" does not exist",
                reference.name
            ))));
        }
        Err(kube::Error::Api(s)) if s.code == 403 => {
            return Some(Err(error::Error::Denied(error::rbac_denied_message(
                &format!("reading the decryption Secret \"{}\"", reference.name),
                &s.message,
            ))));
        }
        Err(e) => {
            return Some(Err(error::Error::Transient(format!(
                "reading the decryption Secret \"{}\": {}",
                reference.name,
                describe(&e)
            ))));
        }
    };
    let data: BTreeMap<String, Vec<u8>> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    Some(match decrypt::Keys::from_secret_data(&data) {
        Ok(keys) => Ok(Arc::new(keys)),
        Err(e) => {
            tracing::warn!(stageset = %pass.key(), secret = %reference.name, error = %e.detail(), "the decryption keys do not load");
            Err(error::Error::Transient(format!(
                "{e}: the Secret \"{}\" holds a key that cannot be used",
                reference.name
            )))
        }
    })
}

/// R16: loads (or creates) the StageLedger when the StageSet has Lifetime
/// actions, or when a first reconcile may adopt one; reports an adoption;
/// promotes `spec.baseline`.
async fn load_lifetime(pass: &mut Pass<'_>) -> Result<(), error::Error> {
    let first = pass.previous.stages.is_empty();
    if !first && !actions::ledger::uses_lifetime(&pass.ss) {
        return Ok(());
    }
    let client = pass.env.clients.controller();
    let Some(mut lifetime) = actions::ledger::Lifetime::load(&client, &pass.ss).await? else {
        return Ok(());
    };
    if first && lifetime.has_completions() {
        let note = "adopted the StageLedger of an earlier StageSet of this name: its Lifetime actions are not run again";
        pass.env
            .metrics
            .ledger_adopted(&pass.namespace(), &pass.ss.name_any());
        pass.event(false, EventReason::LedgerAdopted.as_str(), note)
            .await;
    }
    if let Some(unresolved) = lifetime.promote_baseline(&client, &pass.ss).await? {
        let note = format!(
            "baseline entries that name no Lifetime pre/post action of StageSet {}: {}",
            pass.ss.name_any(),
            unresolved.join(", ")
        );
        lifetime
            .event(
                &client,
                &pass.env.instance,
                EventReason::BaselineInvalid,
                &note,
            )
            .await;
    }
    pass.lifetime = Some(lifetime);
    Ok(())
}

/// After a stage failure has been reported: restores the last good run when
/// the StageSet asks for it (delivery.md §5.6). The failure stays the Ready
/// condition when the restore works; a restore that cannot work replaces it
/// with `PreviousRevisionUnavailable` (or `ImageUnverified`), and one that
/// hit a transient error is retried with back-off.
async fn roll_back(
    pass: &mut Pass<'_>,
    snapshot: &[crate::api::StageArtifactRef],
    failed: Outcome,
    interval: Duration,
) -> Outcome {
    let count_failure = |pass: &Pass<'_>| {
        if let Some(ready) = &failed.ready {
            pass.env.metrics.reconcile_counted(
                &pass.namespace(),
                &pass.ss.name_any(),
                ready.reason,
            );
        }
    };
    let span = crate::traced_span!("stageset.rollback");
    let restored = rollback::restore(pass, snapshot)
        .instrument(span.clone())
        .await;
    if let Err(
        rollback::RollbackError::Transient(message)
        | rollback::RollbackError::Unavailable(message)
        | rollback::RollbackError::Unverified(message),
    ) = &restored
    {
        crate::telemetry::fail(&span, message);
    }
    match restored {
        Ok(stages) => {
            let revisions: Vec<String> = snapshot
                .iter()
                .filter(|e| stages.contains(&e.stage))
                .map(|e| {
                    format!(
                        "{}@{}",
                        e.stage,
                        e.revision.as_deref().unwrap_or(e.digest.as_str())
                    )
                })
                .collect();
            let note = format!("rolled back to the last good run: {}", revisions.join(", "));
            tracing::warn!(stageset = %pass.key(), "{note}");
            pass.event(true, EventReason::RolledBack.as_str(), &note)
                .await;
            actions::hooks::on_rollback(pass).await;
            count_failure(pass);
            failed
        }
        Err(rollback::RollbackError::Transient(message)) => {
            tracing::warn!(stageset = %pass.key(), error = %message, "rollback failed; retrying");
            count_failure(pass);
            Outcome {
                requeue: Requeue::Backoff,
                ..failed
            }
        }
        Err(rollback::RollbackError::Unavailable(message)) => {
            pass.finish_counted(
                Ready::new(StageSetReason::PreviousRevisionUnavailable, message),
                Requeue::After(jitter(interval)),
            )
            .await
        }
        Err(rollback::RollbackError::Unverified(message)) => {
            pass.finish_counted(
                Ready::new(StageSetReason::ImageUnverified, message),
                Requeue::After(jitter(interval)),
            )
            .await
        }
    }
}
