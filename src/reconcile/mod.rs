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
pub mod cel;
pub mod conflict;
pub mod depends;
pub mod error;
pub mod health;
pub mod inventory;
pub mod notify;
pub mod outbound;
pub mod prune;
pub mod source;
pub mod status;
pub mod substitute;
pub mod teardown;
pub mod verify;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::api::reasons::{EventReason, StageOp, StageSetReason};
use crate::api::{StagePhase, StageSet, StageSetStatus, StageStatus, keys};
use crate::config::InventoryMode;
use crate::kube_client::ClientFactory;
use crate::metrics::Metrics;
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
    /// `--inventory-mode`.
    pub inventory_mode: InventoryMode,
    /// `--max-teardown-wait`.
    pub max_teardown_wait: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            default_interval: Duration::from_secs(600),
            inventory_shard_cap: 5000,
            no_cross_namespace_refs: false,
            runbook_base: Some("https://stageset.projects.metio.wtf/runbooks".into()),
            staging_timeout: Duration::from_secs(60),
            inventory_mode: InventoryMode::Hybrid,
            max_teardown_wait: Duration::from_secs(3600),
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
    /// The controller's metrics.
    pub metrics: Arc<Metrics>,
    /// Forwards events to Flux's notification-controller (`--events-addr`).
    pub notifier: Option<notify::Notifier>,
    /// The StageInventory writes this controller made (see the InventoryWatcher).
    pub inventory_writes: Arc<inventory::InventoryWrites>,
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
        if let Err(e) = status::write(&client, &self.ss, &self.status).await {
            tracing::warn!(stageset = %self.key(), error = %e, "status write failed");
            return Outcome {
                requeue: Requeue::Backoff,
                ready: Some(ready),
            };
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
            Ok(()) => self.record_stages(),
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
        if let Err(e) = status::event(
            &client,
            notifier,
            ss,
            &self.env.instance,
            warning,
            reason,
            note,
        )
        .await
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
                produced.push(entry);
                pass.status.stages =
                    status::merge_stages(&spec_names, &pass.previous.stages, &produced);
                let requeue = failure.requeue();
                return pass
                    .finish_counted(Ready::new(failure.reason, failure.ready_message()), requeue)
                    .await;
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
            StageResult::Deleted => return Outcome::quiet(Requeue::Now),
        }
    }
    pass.status.stages = status::merge_stages(&spec_names, &pass.previous.stages, &produced);

    // R21: prune, unless an inventory was rebuilt this pass.
    let reconstructed: Vec<&StageDone> =
        done.iter().filter(|d| d.reconstructed.is_some()).collect();
    if !reconstructed.is_empty() {
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
    } else if let Err(failure) = prune_pass(pass, &previous, &done).await {
        let requeue = failure.requeue();
        return pass
            .finish_counted(Ready::new(failure.reason, failure.ready_message()), requeue)
            .await;
    }

    // R22: success.
    pass.status.last_applied_revisions = attempted;
    pass.status.action_failure_count = Some(0);
    let n = stages.len();
    pass.finish_counted(
        Ready::new(
            StageSetReason::Succeeded,
            format!("Applied and verified {n} stage(s)"),
        ),
        Requeue::After(jitter(steady)),
    )
    .await
}

/// The effective ServiceAccount of a stage (stage overrides StageSet).
/// delivery.md §2.3.4: the variables of a stage's `postBuild`. `substituteFrom`
/// objects are read as the StageSet-level ServiceAccount (never the controller
/// when one is named) in the StageSet's namespace; `optional` skips NotFound
/// only. Only inline values: no API access at all.
async fn post_build_vars(
    env: &Env,
    ss: &StageSet,
    namespace: &str,
    stage: &crate::api::Stage,
) -> Result<Option<substitute::Vars>, StageFailure> {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    let op = StageOp::ResolvePostBuildVariables;
    let Some(post_build) = stage.post_build.as_ref() else {
        return Ok(None);
    };
    let refs = post_build.substitute_from.as_deref().unwrap_or_default();
    let mut sources = Vec::with_capacity(refs.len());
    if !refs.is_empty() {
        let client = env
            .clients
            .for_service_account(namespace, effective_sa(ss, None))
            .await
            .map_err(|e| {
                StageFailure::new(&stage.name, StageOp::ConnectTargetCluster, e.to_string())
            })?;
        for r in refs {
            let kind = match r.kind {
                crate::api::SubstituteKind::ConfigMap => "ConfigMap",
                crate::api::SubstituteKind::Secret => "Secret",
            };
            let got = match r.kind {
                crate::api::SubstituteKind::ConfigMap => {
                    Api::<ConfigMap>::namespaced(client.clone(), namespace)
                        .get(&r.name)
                        .await
                        .map(|cm| cm.data.unwrap_or_default())
                }
                crate::api::SubstituteKind::Secret => {
                    // Read untyped: `.data` stays the API's base64 text, which
                    // the substitution decodes (and checks) once.
                    let secrets = kube::api::ApiResource::erase::<Secret>(&());
                    Api::<kube::api::DynamicObject>::namespaced_with(
                        client.clone(),
                        namespace,
                        &secrets,
                    )
                    .get(&r.name)
                    .await
                    .map(|s| {
                        s.data
                            .get("data")
                            .and_then(serde_json::Value::as_object)
                            .into_iter()
                            .flatten()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                            .collect()
                    })
                }
            };
            match got {
                Ok(data) => sources.push(substitute::VarSource {
                    kind: r.kind,
                    name: r.name.clone(),
                    data,
                }),
                Err(kube::Error::Api(s)) if s.code == 404 && r.optional == Some(true) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    return Err(StageFailure::new(
                        &stage.name,
                        op,
                        format!(
                            "{kind} {namespace}/{} not found (set optional: true to skip it)",
                            r.name
                        ),
                    ));
                }
                Err(e) if error::is_forbidden(&e) => {
                    let detail = match &e {
                        kube::Error::Api(s) => s.message.clone(),
                        other => other.to_string(),
                    };
                    return Err(StageFailure::rbac(
                        &stage.name,
                        op,
                        error::rbac_denied_message(
                            &format!("get {kind} {namespace}/{}", r.name),
                            &detail,
                        ),
                    ));
                }
                Err(e) => {
                    return Err(StageFailure::new(
                        &stage.name,
                        op,
                        format!("reading {kind} {namespace}/{}: {e}", r.name),
                    ));
                }
            }
        }
    }
    substitute::resolve_vars(&sources, post_build.substitute.as_ref())
        .map(Some)
        .map_err(|e| StageFailure::new(&stage.name, op, e.to_string()))
}

fn effective_sa<'a>(ss: &'a StageSet, stage: Option<&'a crate::api::Stage>) -> Option<&'a str> {
    stage
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|s| !s.is_empty())
        .or(ss.spec.service_account_name.as_deref())
        .filter(|s| !s.is_empty())
}

/// R21: deletes what left the StageSet, then trims every inventory to what the
/// stages render now.
async fn prune_pass(
    pass: &mut Pass<'_>,
    previous: &BTreeMap<String, inventory::StageRecord>,
    done: &[StageDone],
) -> Result<(), StageFailure> {
    let env = pass.env;
    let namespace = pass.namespace();
    let ss_name = pass.ss.name_any();
    let mode = env.settings.inventory_mode;
    let desired: Vec<(String, Vec<apply::ObjectRef>)> = done
        .iter()
        .map(|d| (d.entry.name.clone(), d.rendered.clone()))
        .collect();
    // In `applyset` mode the live ApplySet membership counts as recorded too.
    let mut records = previous.clone();
    if mode == InventoryMode::ApplySet {
        for d in done {
            let members = applyset_members(pass, d)
                .await
                .map_err(|e| StageFailure::new(&d.entry.name, StageOp::Prune, e))?;
            let rec =
                records
                    .entry(d.entry.name.clone())
                    .or_insert_with(|| inventory::StageRecord {
                        stage: d.entry.name.clone(),
                        position: d.position as i32,
                        ..Default::default()
                    });
            for m in members {
                rec.entries
                    .entry(inventory::entry_id(&m))
                    .or_insert_with(|| m.version().to_string());
            }
        }
    }
    let plan = prune::plan(&records, &desired);
    for (stage_name, objects) in &plan.prune {
        let stage = pass.ss.spec.stages.iter().find(|s| &s.name == stage_name);
        if stage.and_then(|s| s.prune) == Some(false) {
            tracing::info!(stageset = %pass.key(), stage = %stage_name, count = objects.len(), "prune: false, leaving objects that left the stage in place");
            continue;
        }
        let client = env
            .clients
            .for_service_account(&namespace, effective_sa(&pass.ss, stage))
            .await
            .map_err(|e| StageFailure::new(stage_name, StageOp::Prune, e.to_string()))?;
        teardown::delete_objects(&env.clients, &client, objects, &ss_name, &namespace)
            .await
            .map_err(|e| e.into_failure(stage_name, StageOp::Prune))?;
        let subjects: Vec<String> = objects.iter().map(apply::ObjectRef::subject).collect();
        tracing::info!(stageset = %pass.key(), stage = %stage_name, objects = %subjects.join(", "), "pruned");
    }
    // Trim the write-ahead inventories (they kept what was pending prune).
    for d in done.iter().filter(|d| d.recorded_extra) {
        inventory::write(
            &env.clients.controller(),
            &env.inventory_writes,
            &pass.ss,
            &d.entry.name,
            d.position,
            &d.rendered,
            env.settings.inventory_shard_cap,
            mode,
        )
        .await
        .map_err(|e| StageFailure::new(&d.entry.name, StageOp::RecordInventory, e))?;
    }
    // Stages removed from the spec: torn down as the StageSet, last first.
    for (stage_name, objects) in &plan.removed {
        let client = env
            .clients
            .for_service_account(&namespace, effective_sa(&pass.ss, None))
            .await
            .map_err(|e| StageFailure::new(stage_name, StageOp::Prune, e.to_string()))?;
        teardown::delete_objects(&env.clients, &client, objects, &ss_name, &namespace)
            .await
            .map_err(|e| e.into_failure(stage_name, StageOp::Prune))?;
        inventory::delete_stage(
            &env.clients.controller(),
            &env.inventory_writes,
            &namespace,
            &ss_name,
            stage_name,
        )
        .await
        .map_err(|e| StageFailure::new(stage_name, StageOp::Prune, e))?;
        env.metrics.forget_stage(&namespace, &ss_name, stage_name);
        tracing::info!(stageset = %pass.key(), stage = %stage_name, "removed stage torn down");
    }
    Ok(())
}

/// The live members of a stage's ApplySet (`applyset` mode): objects of the
/// recorded or rendered group-kinds labelled with the stage's ApplySet id.
async fn applyset_members(pass: &Pass<'_>, d: &StageDone) -> Result<Vec<apply::ObjectRef>, String> {
    let env = pass.env;
    let namespace = pass.namespace();
    let id = inventory::stage_applyset_id(&pass.ss.name_any(), &namespace, &d.entry.name);
    let stage = pass.ss.spec.stages.iter().find(|s| s.name == d.entry.name);
    let client = env
        .clients
        .for_service_account(&namespace, effective_sa(&pass.ss, stage))
        .await
        .map_err(|e| e.to_string())?;
    let selector = format!("{}={id}", keys::APPLYSET_PART_OF_LABEL);
    let (found, errors) = list_labelled(&env.clients, &client, &d.rendered, &selector).await;
    if errors.is_empty() {
        Ok(found)
    } else {
        Err(format!("listing ApplySet members: {}", errors.join("; ")))
    }
}

/// Lists, for every kind among `objects`, the live objects matching
/// `selector`: cluster-wide when allowed, else in each namespace the objects of
/// that kind live in. Returns what was found and the errors met.
async fn list_labelled(
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

/// What a stage that finished Ready hands back to the pass.
struct StageDone {
    entry: StageStatus,
    position: usize,
    /// What the stage renders now.
    rendered: Vec<apply::ObjectRef>,
    /// The write-ahead inventory also kept objects pending prune.
    recorded_extra: bool,
    /// `Some(partial)` when the inventory was rebuilt from live objects.
    reconstructed: Option<bool>,
}

enum StageResult {
    Ready(Box<StageDone>),
    Failed(StageFailure, StageStatus),
    Progressing(String, StageStatus),
    Deleted,
}

/// The inputs of one stage's run.
struct StageContext<'a> {
    position: usize,
    stage: &'a crate::api::Stage,
    source: &'a source::ResolvedSource,
    prior: Option<&'a StageStatus>,
    /// The inventory recorded before this pass.
    record: Option<&'a inventory::StageRecord>,
    /// The inventory is lost and must be rebuilt from live objects.
    reconstruct: bool,
    /// Objects earlier stages of this pass render (entry id → stage).
    claimed: &'a BTreeMap<String, String>,
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

async fn run_stage(pass: &mut Pass<'_>, ctx: StageContext<'_>) -> StageResult {
    let StageContext {
        position,
        stage,
        source,
        prior,
        record,
        reconstruct,
        claimed,
    } = ctx;
    let env = pass.env;
    let namespace = pass.namespace();
    let ss_name = pass.ss.name_any();
    let fail = |f: StageFailure| {
        let entry = failed_entry(&stage.name, &source.revision, &f, prior);
        StageResult::Failed(f, entry)
    };
    // S4: the stage identity.
    let client = match env
        .clients
        .for_service_account(&namespace, effective_sa(&pass.ss, Some(stage)))
        .await
    {
        Ok(c) => c,
        Err(e) => {
            return fail(StageFailure::new(
                &stage.name,
                StageOp::ConnectTargetCluster,
                e.to_string(),
            ));
        }
    };
    // CEL ready expressions are compiled before anything is applied (the
    // webhook rejects bad ones; this catches StageSets that bypassed it).
    let mut exprs = Vec::new();
    for check in stage
        .ready_checks
        .as_ref()
        .and_then(|r| r.exprs.as_ref())
        .into_iter()
        .flatten()
    {
        match crate::validate::cel::compile(check) {
            Ok(c) => exprs.push(c),
            Err(e) => {
                return fail(StageFailure::invalid_spec(
                    &stage.name,
                    StageOp::Verify,
                    format!(
                        "readyChecks.exprs for {} {}: {e}",
                        check.api_version, check.kind
                    ),
                ));
            }
        }
    }
    // Post-build variables are resolved before the download: a missing or
    // forbidden ConfigMap/Secret fails the stage without fetching anything.
    let vars = match post_build_vars(env, &pass.ss, &namespace, stage).await {
        Ok(v) => v,
        Err(f) => return fail(f),
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
    let patches = stage.patches.as_deref().unwrap_or_default();
    let mut objects = match build::render(&artifact.files, path, patches, vars.as_ref()) {
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
    // S12: stage, owner and ApplySet labels.
    let applyset = (env.settings.inventory_mode != InventoryMode::Entries)
        .then(|| inventory::stage_applyset_id(&ss_name, &namespace, &stage.name));
    apply::label(
        &mut objects,
        &ss_name,
        &namespace,
        &stage.name,
        applyset.as_deref(),
    );
    let mut rendered: Vec<apply::ObjectRef> = objects.iter().map(apply::ObjectRef::of).collect();
    rendered.sort_by_key(inventory::entry_id);
    rendered.dedup_by_key(|r| inventory::entry_id(r));
    // R20, checked before anything of this stage is applied: an object may
    // belong to one stage only.
    let duplicates = prune::duplicates(claimed, &rendered);
    if !duplicates.is_empty() {
        return fail(StageFailure::invalid_spec(
            &stage.name,
            StageOp::Build,
            format!(
                "{} object(s) are claimed by more than one stage: {}",
                duplicates.len(),
                duplicates.join(", ")
            ),
        ));
    }
    let entries_count = objects.len() as i64;
    // S14: conflict policies.
    let token = conflict::fresh_token();
    if let Err(e) = conflict::resolve(&mut objects, stage, &token) {
        return fail(StageFailure::new(&stage.name, StageOp::ConflictPolicy, e));
    }
    // S15: apply.
    let options = apply::ApplyOptions {
        staging_timeout: env.settings.staging_timeout,
        force_token: Some(token),
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
            .filter(|c| {
                matches!(
                    c.action,
                    apply::ChangeAction::Created | apply::ChangeAction::Configured
                )
            })
            .map(|c| format!("{} {}", c.object.subject(), c.action.as_str()))
            .collect();
        if !drifted.is_empty() {
            env.metrics
                .drift_corrected(&namespace, &ss_name, &stage.name, drifted.len() as u64);
            pass.event(
                true,
                EventReason::DriftCorrected.as_str(),
                &format!("stage \"{}\": {}", stage.name, drifted.join(", ")),
            )
            .await;
        }
    }
    // S18: write-ahead inventory: what the stage renders now, plus what it
    // recorded before and has not been pruned yet (so a pass that stops
    // before the prune never forgets an object), plus, when the inventory was
    // lost, the labelled live objects found.
    let mut recorded: BTreeMap<String, apply::ObjectRef> = rendered
        .iter()
        .map(|r| (inventory::entry_id(r), r.clone()))
        .collect();
    for r in record
        .map(inventory::StageRecord::objects)
        .unwrap_or_default()
    {
        recorded.entry(inventory::entry_id(&r)).or_insert(r);
    }
    let mut reconstructed = None;
    if reconstruct {
        let selector = format!(
            "{}={ss_name},{}={namespace},{}={}",
            keys::LABEL_OWNER_NAME,
            keys::LABEL_OWNER_NAMESPACE,
            keys::LABEL_STAGE,
            stage.name
        );
        let (found, errors) = list_labelled(&env.clients, &client, &rendered, &selector).await;
        if !errors.is_empty() {
            tracing::warn!(stageset = %pass.key(), stage = %stage.name, errors = %errors.join("; "), "inventory reconstruction is partial");
        }
        for r in found {
            recorded.entry(inventory::entry_id(&r)).or_insert(r);
        }
        reconstructed = Some(!errors.is_empty());
    }
    let recorded_extra = recorded.len() > rendered.len();
    let recorded: Vec<apply::ObjectRef> = recorded.into_values().collect();
    let shards = match inventory::write(
        &env.clients.controller(),
        &env.inventory_writes,
        &pass.ss,
        &stage.name,
        position,
        &recorded,
        env.settings.inventory_shard_cap,
        env.settings.inventory_mode,
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
    let applied: Vec<apply::ObjectRef> = changes.iter().map(|c| c.object.clone()).collect();
    let mut wait_set: Vec<apply::ObjectRef> =
        if ready_checks.and_then(|r| r.disable_wait) == Some(true) {
            Vec::new()
        } else {
            applied.clone()
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
    // One deadline bounds the whole verify phase: the kstatus wait, then the
    // CEL expressions (upstream gives each a full timeout).
    let deadline = tokio::time::Instant::now() + timeout;
    let mut verdict =
        verify::wait_ready(&env.clients, &client, &wait_set, timeout, &deleting).await;
    if verdict == verify::Verdict::Ready && !exprs.is_empty() {
        verdict =
            cel::wait_exprs(&env.clients, &client, &applied, &exprs, deadline, &deleting).await;
    }
    let done = StageDone {
        entry: ready_entry.clone(),
        position,
        rendered,
        recorded_extra,
        reconstructed,
    };
    match verdict {
        verify::Verdict::Ready => {
            pass.progress(ready_entry).await;
            StageResult::Ready(Box::new(done))
        }
        verify::Verdict::Deleted => StageResult::Deleted,
        verify::Verdict::Progressing(message) => {
            let on_timeout = stage.on_timeout.or(pass.ss.spec.on_timeout);
            if on_timeout == Some(crate::api::OnTimeout::Rollback) {
                fail(StageFailure::new(
                    &stage.name,
                    StageOp::Verify,
                    rollback_note(&pass.ss, message),
                ))
            } else {
                let entry = StageStatus {
                    phase: Some(StagePhase::Verifying),
                    message: Some(format!("verify: {message}")),
                    ..ready_entry
                };
                StageResult::Progressing(message, entry)
            }
        }
        verify::Verdict::Failed(message) => fail(StageFailure::new(
            &stage.name,
            StageOp::Verify,
            rollback_note(&pass.ss, message),
        )),
    }
}

/// Whole-run rollback needs the rollback store, which is not built yet: say
/// so instead of pretending a rollback happened.
fn rollback_note(ss: &StageSet, message: String) -> String {
    if ss.spec.rollback_on_failure == Some(true) {
        format!(
            "{message} (rollbackOnFailure is set, but whole-run rollback is not supported yet: the stage stays failed and nothing was rolled back)"
        )
    } else {
        message
    }
}
