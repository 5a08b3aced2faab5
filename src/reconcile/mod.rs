//! The delivery pipeline (delivery.md §2), as plain async functions: no actor
//! types here, so every step can be exercised on its own.
//!
//! [`reconcile`] runs one pass for one StageSet in the normative order: deletion
//! → finalizer → suspend → manual-request bookkeeping → resolve and pin every
//! stage's source → for each stage in order: identity, fetch, build, label,
//! apply, drift report, write-ahead inventory, verify → success bookkeeping. The
//! first failing or holding stage ends the pass; later stages are not touched.

pub mod apply;
pub mod artifact;
pub mod build;
pub mod error;
pub mod health;
pub mod inventory;
pub mod outbound;
pub mod source;
pub mod status;
pub mod teardown;
pub mod verify;

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::api::reasons::{EventReason, StageOp, StageSetReason};
use crate::api::{StagePhase, StageSet, StageSetStatus, StageStatus, keys};
use crate::kube_client::ClientFactory;
use error::{Requeue, StageFailure, describe};
use status::Ready;

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
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            default_interval: Duration::from_secs(600),
            inventory_shard_cap: 5000,
            no_cross_namespace_refs: false,
            runbook_base: Some("https://stageset.projects.metio.wtf/runbooks".into()),
            staging_timeout: Duration::from_secs(60),
        }
    }
}

/// What the pipeline needs from the outside world.
pub struct Env {
    pub clients: ClientFactory,
    pub fetcher: artifact::Fetcher,
    pub settings: Settings,
    /// Identifies this controller replica in events.
    pub instance: String,
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
}

impl Pass<'_> {
    fn namespace(&self) -> String {
        self.ss.namespace().unwrap_or_default()
    }

    fn generation(&self) -> i64 {
        self.ss.meta().generation.unwrap_or(0)
    }

    /// Sets Ready, writes the status, records an event on a transition.
    async fn finish(&mut self, ready: Ready, requeue: Requeue) -> Outcome {
        let generation = self.generation();
        self.status.observed_generation = Some(generation);
        let changed = status::set_ready(
            &mut self.status,
            &ready,
            generation,
            self.env.settings.runbook_base.as_deref(),
        );
        let client = self.env.clients.controller();
        if let Err(e) = status::write(&client, &self.ss, &self.status).await {
            tracing::warn!(stageset = %self.key(), error = %e, "status write failed");
            return Outcome {
                requeue: Requeue::Backoff,
                ready: Some(ready),
            };
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
        if let Err(e) = status::write(&client, &self.ss, &self.status).await {
            tracing::debug!(stageset = %self.key(), error = %e, "progress status write failed");
        }
    }

    async fn event(&self, warning: bool, reason: &str, note: &str) {
        let client = self.env.clients.controller();
        if let Err(e) =
            status::event(&client, &self.ss, &self.env.instance, warning, reason, note).await
        {
            tracing::warn!(stageset = %self.key(), error = %e, "event not recorded");
        }
    }

    fn key(&self) -> String {
        format!("{}/{}", self.namespace(), self.ss.name_any())
    }
}

/// Runs one reconcile of the StageSet `namespace/name`.
pub async fn reconcile(env: &Env, namespace: &str, name: &str) -> Outcome {
    let api: Api<StageSet> = Api::namespaced(env.clients.controller(), namespace);
    let ss = match api.get_opt(name).await {
        Ok(Some(ss)) => ss,
        Ok(None) => return Outcome::quiet(Requeue::Never),
        Err(e) => {
            tracing::warn!(stageset = %format!("{namespace}/{name}"), error = %describe(&e), "reading the StageSet failed");
            return Outcome::quiet(Requeue::Backoff);
        }
    };
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
            Ok(_) => Outcome::quiet(Requeue::Now),
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
    run_stages(&mut pass).await
}

/// R7 onwards: resolve and pin every source, then the stage loop.
async fn run_stages(pass: &mut Pass<'_>) -> Outcome {
    let env = pass.env;
    let namespace = pass.namespace();
    let (_, retry, steady) = intervals(&pass.ss, &env.settings);
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

    // R18: the stage loop.
    let spec_names: Vec<String> = pass.ss.spec.stages.iter().map(|s| s.name.clone()).collect();
    let mut produced: Vec<StageStatus> = Vec::new();
    let stages = pass.ss.spec.stages.clone();
    for (position, (stage, source)) in stages.iter().zip(pinned.iter()).enumerate() {
        let prior = pass
            .previous
            .stages
            .iter()
            .find(|s| s.name == stage.name)
            .cloned();
        match run_stage(pass, position, stage, source, prior.as_ref()).await {
            StageResult::Ready(entry) => produced.push(entry),
            StageResult::Failed(failure, entry) => {
                produced.push(entry);
                pass.status.stages =
                    status::merge_stages(&spec_names, &pass.previous.stages, &produced);
                let requeue = failure.requeue();
                return pass
                    .finish(Ready::new(failure.reason, failure.ready_message()), requeue)
                    .await;
            }
            StageResult::Progressing(message, entry) => {
                produced.push(entry);
                pass.status.stages =
                    status::merge_stages(&spec_names, &pass.previous.stages, &produced);
                return pass
                    .finish(
                        Ready::new(
                            StageSetReason::StageProgressing,
                            format!("stage \"{}\" verify: {message}", stage.name),
                        ),
                        Requeue::After(jitter(retry)),
                    )
                    .await;
            }
            StageResult::Deleted => return Outcome::quiet(Requeue::Now),
        }
    }
    // R22: success.
    pass.status.stages = status::merge_stages(&spec_names, &pass.previous.stages, &produced);
    pass.status.last_applied_revisions = attempted;
    pass.status.action_failure_count = Some(0);
    let n = stages.len();
    pass.finish(
        Ready::new(
            StageSetReason::Succeeded,
            format!("Applied and verified {n} stage(s)"),
        ),
        Requeue::After(jitter(steady)),
    )
    .await
}

enum StageResult {
    Ready(StageStatus),
    Failed(StageFailure, StageStatus),
    Progressing(String, StageStatus),
    Deleted,
}

fn failed_entry(
    stage: &str,
    revision: &str,
    failure: &StageFailure,
    prior: Option<&StageStatus>,
) -> StageStatus {
    StageStatus {
        name: stage.to_string(),
        phase: Some(StagePhase::Failed),
        applied_revision: Some(revision.to_string()),
        message: Some(failure.stage_message()),
        ..prior.cloned().map(carry_ledgers).unwrap_or_default()
    }
}

/// The fields of a previous stage entry that survive a new pass (ledgers and
/// handled tokens; actions and promotion arrive in later issues).
fn carry_ledgers(prior: StageStatus) -> StageStatus {
    StageStatus {
        executed_actions: prior.executed_actions,
        ledger_revision: prior.ledger_revision,
        executed_version_actions: prior.executed_version_actions,
        ledger_version: prior.ledger_version,
        last_handled_reconcile_at: prior.last_handled_reconcile_at,
        last_handled_promotion: prior.last_handled_promotion,
        promotion_state: prior.promotion_state,
        ..StageStatus::default()
    }
}

async fn run_stage(
    pass: &mut Pass<'_>,
    position: usize,
    stage: &crate::api::Stage,
    source: &source::ResolvedSource,
    prior: Option<&StageStatus>,
) -> StageResult {
    let env = pass.env;
    let namespace = pass.namespace();
    let ss_name = pass.ss.name_any();
    let fail = |f: StageFailure| {
        let entry = failed_entry(&stage.name, &source.revision, &f, prior);
        StageResult::Failed(f, entry)
    };
    // S4: the stage identity.
    let sa = stage
        .service_account_name
        .as_deref()
        .filter(|s| !s.is_empty())
        .or(pass.ss.spec.service_account_name.as_deref());
    let client = match env.clients.for_service_account(&namespace, sa).await {
        Ok(c) => c,
        Err(e) => {
            return fail(StageFailure::new(
                &stage.name,
                StageOp::ConnectTargetCluster,
                e.to_string(),
            ));
        }
    };
    // S8: fetch the pinned artifact.
    let artifact = match env.fetcher.fetch(&source.url, &source.digest).await {
        Ok(a) => a,
        Err(e) => {
            let failure = if e.is_terminal() {
                StageFailure::terminal(&stage.name, StageOp::FetchArtifact, e.to_string())
            } else {
                StageFailure::new(&stage.name, StageOp::FetchArtifact, e.to_string())
            };
            return fail(failure);
        }
    };
    // S11: build.
    let path = stage.path.as_deref().unwrap_or("./");
    let mut objects = match build::build(&artifact.files, path) {
        Ok(o) => o,
        Err(e) => {
            return fail(StageFailure::new(
                &stage.name,
                StageOp::Build,
                e.to_string(),
            ));
        }
    };
    drop(artifact);
    // Helm hook resources: dropped when the stage says so (api.md D2).
    if stage.apply_helm_hook_resources == Some(false) {
        objects.retain(|o| o.pointer("/metadata/annotations/helm.sh~1hook").is_none());
    }
    // S12: stage and owner labels.
    apply::label(&mut objects, &ss_name, &namespace, &stage.name);
    let entries_count = objects.len() as i64;
    // S15: apply.
    let options = apply::ApplyOptions {
        staging_timeout: env.settings.staging_timeout,
    };
    let changes = match apply::apply(&env.clients, &client, objects, &options).await {
        Ok(c) => c,
        Err(e) if e.is_rbac() => {
            return fail(StageFailure::rbac(
                &stage.name,
                StageOp::Apply,
                e.to_string(),
            ));
        }
        Err(e) => {
            return fail(StageFailure::new(
                &stage.name,
                StageOp::Apply,
                e.to_string(),
            ));
        }
    };
    // S16: drift report (same revision as last applied, yet something changed).
    let same_revision = prior.and_then(|p| p.applied_revision.as_deref())
        == Some(source.revision.as_str())
        && prior.and_then(|p| p.phase) == Some(StagePhase::Ready);
    if same_revision {
        let drifted: Vec<String> = changes
            .iter()
            .filter(|c| c.action != apply::ChangeAction::Unchanged)
            .map(|c| format!("{} {}", c.object.subject(), c.action.as_str()))
            .collect();
        if !drifted.is_empty() {
            pass.event(
                true,
                EventReason::DriftCorrected.as_str(),
                &format!("stage \"{}\": {}", stage.name, drifted.join(", ")),
            )
            .await;
        }
    }
    // S18: write-ahead inventory.
    let refs: Vec<apply::ObjectRef> = changes.iter().map(|c| c.object.clone()).collect();
    let shards = match inventory::write(
        &env.clients.controller(),
        &pass.ss,
        &stage.name,
        position,
        &refs,
        env.settings.inventory_shard_cap,
    )
    .await
    {
        Ok(n) => n,
        Err(e) => return fail(StageFailure::new(&stage.name, StageOp::RecordInventory, e)),
    };
    // S19: verify.
    let ready_checks = stage.ready_checks.as_ref();
    let timeout = verify::timeout_ladder(
        ready_checks.and_then(|r| r.timeout.as_ref()),
        stage.timeout.as_ref(),
        pass.ss.spec.timeout.as_ref(),
    );
    let mut wait_set: Vec<apply::ObjectRef> =
        if ready_checks.and_then(|r| r.disable_wait) == Some(true) {
            Vec::new()
        } else {
            refs.clone()
        };
    for check in ready_checks
        .and_then(|r| r.checks.as_ref())
        .into_iter()
        .flatten()
    {
        let api_version = check.api_version.clone().unwrap_or_else(|| "v1".into());
        // Cluster-scoped kinds ignore the namespace; unknown kinds count as namespaced.
        let namespaced = env
            .clients
            .resource(&api_version, &check.kind)
            .await
            .map(|r| r.namespaced)
            .unwrap_or(true);
        wait_set.push(apply::ObjectRef {
            api_version,
            kind: check.kind.clone(),
            namespace: if namespaced {
                check
                    .namespace
                    .clone()
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| namespace.clone())
            } else {
                String::new()
            },
            name: check.name.clone(),
        });
    }
    let controller = env.clients.controller();
    let ss_api: Api<StageSet> = Api::namespaced(controller, &namespace);
    let deleting = || {
        let ss_api = ss_api.clone();
        let name = ss_name.clone();
        async move {
            match ss_api.get_opt(&name).await {
                Ok(Some(s)) => s.meta().deletion_timestamp.is_some(),
                Ok(None) => true,
                Err(_) => false,
            }
        }
    };
    let ready_entry = StageStatus {
        name: stage.name.clone(),
        phase: Some(StagePhase::Ready),
        applied_revision: Some(source.revision.clone()),
        entries_count: Some(entries_count),
        shards: Some(shards as i32),
        ..prior.cloned().map(carry_ledgers).unwrap_or_default()
    };
    // A stage already verified at this revision stays Ready while re-verified.
    let reverify = prior.is_some_and(|p| {
        p.phase == Some(StagePhase::Ready)
            && p.applied_revision.as_deref() == Some(source.revision.as_str())
    });
    if !reverify {
        pass.progress(StageStatus {
            phase: Some(StagePhase::Verifying),
            ..ready_entry.clone()
        })
        .await;
    }
    let verdict = verify::wait_ready(&env.clients, &client, &wait_set, timeout, deleting).await;
    match verdict {
        verify::Verdict::Ready => {
            pass.progress(ready_entry.clone()).await;
            StageResult::Ready(ready_entry)
        }
        verify::Verdict::Deleted => StageResult::Deleted,
        verify::Verdict::Progressing(message) => {
            let on_timeout = stage.on_timeout.or(pass.ss.spec.on_timeout);
            if on_timeout == Some(crate::api::OnTimeout::Rollback) {
                fail(StageFailure::new(&stage.name, StageOp::Verify, message))
            } else {
                let entry = StageStatus {
                    phase: Some(StagePhase::Verifying),
                    message: Some(format!("verify: {message}")),
                    ..ready_entry
                };
                StageResult::Progressing(message, entry)
            }
        }
        verify::Verdict::Failed(message) => {
            fail(StageFailure::new(&stage.name, StageOp::Verify, message))
        }
    }
}
