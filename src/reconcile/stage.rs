//! One stage of a pass (delivery.md §2, S4–S19): identity, post-build
//! variables, fetch, build, labels, the duplicate-claim check, conflict
//! policies, apply, drift report, write-ahead inventory and verify. The
//! first half ([`prepare`]) touches nothing in the target cluster; the second
//! ([`deploy`]) writes.

use std::collections::BTreeMap;

use kube::api::Api;
use kube::{Resource, ResourceExt};
use tracing::Instrument;

use crate::api::reasons::{EventReason, StageOp};
use crate::api::{StagePhase, StageSet, StageStatus, keys};
use crate::config::InventoryMode;

use super::actions::hooks::{self, Hook, StageHooks};
use super::actions::ledger;
use super::error::{self, StageFailure};
use super::{
    Env, Pass, apply, build, cel, conflict, decrypt, images, inventory, podgates, promotion, prune,
    rollback, source, substitute, verify,
};

/// What a stage that finished Ready hands back to the pass.
pub(super) struct StageDone {
    pub(super) entry: StageStatus,
    pub(super) position: usize,
    /// What the stage renders now.
    pub(super) rendered: Vec<apply::ObjectRef>,
    /// The write-ahead inventory also kept objects pending prune.
    pub(super) recorded_extra: bool,
    /// `Some(partial)` when the inventory was rebuilt from live objects.
    pub(super) reconstructed: Option<bool>,
    /// Where this stage's objects came from, for `status.lastAppliedSnapshot`.
    pub(super) snapshot: crate::api::StageArtifactRef,
}

pub(super) enum StageResult {
    Ready(Box<StageDone>),
    /// Held: by its promotion gate once applied (S21, `applied`), or by its
    /// error budget before anything (S3); the stages after it wait.
    Held {
        applied: bool,
        entry: StageStatus,
        reason: crate::api::reasons::StageSetReason,
        message: String,
        requeue: std::time::Duration,
    },
    Failed(StageFailure, StageStatus),
    Progressing(String, StageStatus),
    /// The promotion gate could not be evaluated (a transient read or revert
    /// error, R19.4): the entry is persisted, Ready is left alone, and the
    /// pass is retried with back-off.
    Unevaluable(String, StageStatus),
    Deleted,
}

/// The inputs of one stage's run.
pub(super) struct StageContext<'a> {
    pub(super) position: usize,
    pub(super) stage: &'a crate::api::Stage,
    pub(super) source: &'a source::ResolvedSource,
    pub(super) prior: Option<&'a StageStatus>,
    /// The inventory recorded before this pass.
    pub(super) record: Option<&'a inventory::StageRecord>,
    /// The inventory is lost and must be rebuilt from live objects.
    pub(super) reconstruct: bool,
    /// Objects earlier stages of this pass render (entry id → stage).
    pub(super) claimed: &'a BTreeMap<String, String>,
    /// Every stage's inventory before this pass.
    pub(super) records: &'a BTreeMap<String, inventory::StageRecord>,
}

impl StageContext<'_> {
    /// The stage's entry after `failure`: the attempted revision, the
    /// revision ledger as far as it got, the handled tokens of before (a
    /// forced stage that fails is forced again next pass).
    fn failed(&self, failure: StageFailure, executed: &[String]) -> StageResult {
        let entry = StageStatus {
            phase: Some(StagePhase::Failed),
            message: Some(failure.stage_message()),
            ..self.entry(executed)
        };
        StageResult::Failed(failure, entry)
    }

    /// The stage's entry for this pass's revision, with the fields of a
    /// previous entry that survive (handled tokens, promotion) and the
    /// revision ledger as it stands.
    fn entry(&self, executed: &[String]) -> StageStatus {
        let prior = self.prior.cloned().unwrap_or_default();
        StageStatus {
            name: self.stage.name.clone(),
            applied_revision: Some(self.source.revision.clone()),
            executed_actions: executed.to_vec(),
            ledger_revision: Some(self.source.revision.clone()),
            executed_version_actions: prior.executed_version_actions,
            ledger_version: prior.ledger_version,
            last_handled_reconcile_at: prior.last_handled_reconcile_at,
            last_handled_promotion: prior.last_handled_promotion,
            promotion_state: prior.promotion_state,
            ..StageStatus::default()
        }
    }
}

/// Runs one stage: its identity (S4), [`prepare`], then [`deploy`].
pub(super) async fn run_stage(pass: &mut Pass<'_>, ctx: StageContext<'_>) -> StageResult {
    let stage = ctx.stage;
    // S1: a revision a promotion gate rolled back stays parked.
    if let Some(parked) = parked(pass, &ctx) {
        return parked;
    }
    // S2, R15: the revision ledger, unless a reconcile-stage token clears it.
    let forced = ledger::force_token(&pass.ss, &stage.name, ctx.prior);
    let executed = ledger::revision_ledger(ctx.prior, &ctx.source.revision, forced.is_some());
    // S3: the stage's own error budget, when it would get a new revision;
    // a dry-run freeze is stamped on the stage's entry when it is done.
    let budget_freeze = match stage_budget(pass, &ctx).await {
        Ok(freeze) => freeze,
        Err(held) => return held,
    };
    // S4: the target cluster (R11) and the stage identity on it.
    let clients = match &pass.target {
        Ok(clients) => clients.clone(),
        Err(e) => {
            let f = if e.denied {
                StageFailure::rbac(
                    &stage.name,
                    StageOp::ConnectTargetCluster,
                    e.message.clone(),
                )
            } else {
                StageFailure::new(
                    &stage.name,
                    StageOp::ConnectTargetCluster,
                    e.message.clone(),
                )
            };
            return ctx.failed(f, &executed);
        }
    };
    // R14's keys: a Secret that cannot be read or a key that does not
    // parse fails here, before anything is fetched.
    if let Some(Err(e)) = &pass.keys {
        let f = StageFailure::new(&stage.name, StageOp::ConfigureDecryption, e.clone());
        return ctx.failed(f, &executed);
    }
    let client = match clients
        .for_service_account(&pass.namespace(), effective_sa(&pass.ss, Some(stage)))
        .await
    {
        Ok(c) => c,
        Err(e) => {
            let f = StageFailure::new(&stage.name, StageOp::ConnectTargetCluster, e.to_string());
            return ctx.failed(f, &executed);
        }
    };
    let executed_version = version_ledger(pass, &ctx).await;
    let mut hooks = StageHooks {
        stage,
        client,
        clients,
        executed,
        executed_version,
    };
    let mut result = match prepare(pass, &ctx, &mut hooks).await {
        Ok(prepared) => deploy(pass, &ctx, prepared, &mut hooks, forced).await,
        Err(f) => ctx.failed(f, &hooks.executed),
    };
    if let Some(plan) = &pass.version {
        let stamp = |entry: &mut StageStatus| {
            entry.executed_version_actions = hooks.executed_version.clone();
            entry.ledger_version = Some(plan.desired.clone());
        };
        match &mut result {
            StageResult::Ready(done) => stamp(&mut done.entry),
            StageResult::Held { entry, .. }
            | StageResult::Failed(_, entry)
            | StageResult::Progressing(_, entry)
            | StageResult::Unevaluable(_, entry) => stamp(entry),
            StageResult::Deleted => {}
        }
    }
    if budget_freeze.is_some() {
        match &mut result {
            StageResult::Ready(done) => done.entry.budget_freeze = budget_freeze,
            StageResult::Held { entry, .. }
            | StageResult::Failed(_, entry)
            | StageResult::Progressing(_, entry)
            | StageResult::Unevaluable(_, entry) => entry.budget_freeze = budget_freeze,
            StageResult::Deleted => {}
        }
    }
    result
}

/// S2's version ledger (delivery.md §3.4): the Version-scoped actions done
/// for the desired version. A baseline counts every one of them done
/// without running it; a ledger of another version, or a fresh
/// `reset-scope` token, starts empty. Carried to a new revision, each
/// carried action is reported skipped (Normal `ActionSkipped`).
async fn version_ledger(pass: &mut Pass<'_>, ctx: &StageContext<'_>) -> Vec<String> {
    use crate::api::ActionScope;
    let Some(plan) = pass.version.clone() else {
        return Vec::new();
    };
    let versioned: Vec<String> = ledger::hook_actions(ctx.stage)
        .filter(|a| ledger::scope_of(a) == ActionScope::Version)
        .map(|a| a.name.clone())
        .collect();
    if plan.transition == super::version::Transition::Baseline {
        return versioned;
    }
    let carried: Vec<String> = match ctx.prior {
        Some(p)
            if !pass.reset_version_ledgers
                && p.ledger_version.as_deref() == Some(plan.desired.as_str()) =>
        {
            p.executed_version_actions.clone()
        }
        _ => return Vec::new(),
    };
    let new_revision =
        ctx.prior.and_then(|p| p.applied_revision.as_deref()) != Some(ctx.source.revision.as_str());
    if new_revision {
        for action in carried.iter().filter(|a| versioned.contains(a)) {
            let note = format!(
                "stage \"{}\" action \"{action}\": skipped at revision {}; it already ran for version {} (scope: Version)",
                ctx.stage.name, ctx.source.revision, plan.desired
            );
            pass.event(false, EventReason::ActionSkipped.as_str(), &note)
                .await;
        }
    }
    carried
}

/// S1 (delivery.md §2, §5.5): a stage whose promotion gate rolled back
/// the revision it is pinned to again is not applied again; it keeps its
/// status (at the restored revision) and holds with `PromotionBlocked`
/// until a new revision, a fresh promote token, or the rollback setting is
/// removed.
fn parked(pass: &Pass<'_>, ctx: &StageContext<'_>) -> Option<StageResult> {
    let stage = ctx.stage;
    let prior = ctx.prior?;
    let state = prior.promotion_state.as_ref()?;
    if !promotion::can_roll_back(stage)
        || state.phase != Some(crate::api::PromotionPhase::Blocked)
        || state.aborted_revision.as_deref() != Some(ctx.source.revision.as_str())
    {
        return None;
    }
    let annotation = pass
        .ss
        .annotations()
        .get(keys::ANNOTATION_PROMOTE)
        .map(String::as_str);
    if promotion::promote_token(annotation, &stage.name)
        .is_some_and(|t| prior.last_handled_promotion.as_deref() != Some(t))
    {
        return None;
    }
    let namespace = pass.namespace();
    let ss_name = pass.ss.name_any();
    pass.env
        .metrics
        .promotion(&namespace, &ss_name, &stage.name, true, true);
    let (_, retry, _) = super::intervals(&pass.ss, &pass.env.settings);
    let restored = prior.applied_revision.as_deref().unwrap_or("none");
    Some(StageResult::Held {
        applied: false,
        entry: prior.clone(),
        reason: crate::api::reasons::StageSetReason::PromotionBlocked,
        message: format!(
            "stage \"{stage}\" is parked at revision {restored}: revision {aborted} was rolled back after its promotion gate failed and is not applied again until a new revision, a promote token (kubectl -n {namespace} annotate stageset/{ss_name} --overwrite stages.metio.wtf/promote={stage}@<token>) or removing onFailure: Rollback",
            stage = stage.name,
            aborted = ctx.source.revision,
        ),
        requeue: retry,
    })
}

/// S3 (delivery.md §5.2.4): a stage with its own error budget that would
/// receive a new revision is held while that budget is exhausted; it keeps
/// its current revision and the stages after it are not touched. Proceeding,
/// it returns the freeze a dry run recorded (None otherwise).
async fn stage_budget(
    pass: &mut Pass<'_>,
    ctx: &StageContext<'_>,
) -> Result<Option<crate::api::BudgetFreeze>, StageResult> {
    let stage = ctx.stage;
    let namespace = pass.namespace();
    let ss_name = pass.ss.name_any();
    let Some(budget) = stage.error_budget.as_ref() else {
        return Ok(None);
    };
    let prior_revision = ctx.prior.and_then(|p| p.applied_revision.as_deref());
    let keep_prior = || {
        ctx.prior
            .cloned()
            .unwrap_or_else(|| crate::api::StageStatus {
                name: stage.name.clone(),
                ..Default::default()
            })
    };
    if pass.budget_overridden || prior_revision == Some(ctx.source.revision.as_str()) {
        pass.env
            .metrics
            .stage_budget_frozen(&namespace, &ss_name, &stage.name, false);
        // What a dry run recorded for this revision stays with it until the
        // next evaluation; an override clears it.
        let kept = ctx
            .prior
            .and_then(|p| p.budget_freeze.clone())
            .filter(|f| f.dry_run == Some(true) && !pass.budget_overridden);
        return Ok(kept);
    }
    // A hold is re-read every errorBudget.interval, else every
    // retryInterval (delivery.md §1.3).
    let (_, retry, _) = super::intervals(&pass.ss, &pass.env.settings);
    let prior_freeze = ctx.prior.and_then(|p| p.budget_freeze.clone());
    let path = format!("spec.stages[{}].errorBudget", ctx.position);
    let verdict = super::budget::evaluate(
        pass.env,
        &pass.ss,
        budget,
        &path,
        prior_freeze.as_ref(),
        retry,
        false,
    )
    .await;
    let (reason, what, freeze, requeue) = match verdict {
        super::budget::Verdict::Invalid(m) => {
            return Err(StageResult::Held {
                applied: false,
                entry: keep_prior(),
                reason: crate::api::reasons::StageSetReason::InvalidSpec,
                message: m,
                requeue: super::error::PERMANENT_RETRY,
            });
        }
        super::budget::Verdict::Proceed {
            freeze,
            dry_run_started,
            source_error,
        } => {
            pass.env
                .metrics
                .stage_budget_frozen(&namespace, &ss_name, &stage.name, false);
            if dry_run_started {
                let note = format!(
                    "stage \"{}\": dry run: the error budget is exhausted; delivering anyway",
                    stage.name
                );
                pass.event(false, EventReason::BudgetExhausted.as_str(), &note)
                    .await;
            }
            if let Some(e) = source_error {
                let note = format!(
                    "stage \"{}\": the error budget source is unavailable, delivering anyway (onSourceError: Allow): {e}",
                    stage.name
                );
                pass.event(true, EventReason::BudgetSourceUnavailable.as_str(), &note)
                    .await;
            }
            // A dry run's freeze is recorded with the stage's entry.
            return Ok(freeze);
        }
        super::budget::Verdict::Hold {
            reason,
            what,
            freeze,
            requeue,
        } => (reason, what, freeze, requeue),
    };
    pass.env.metrics.stage_budget_frozen(
        &namespace,
        &ss_name,
        &stage.name,
        reason == crate::api::reasons::StageSetReason::BudgetExhausted,
    );
    let entry = crate::api::StageStatus {
        budget_freeze: freeze,
        ..keep_prior()
    };
    let what = format!(
        "stage \"{}\" held at revision {}: {what}",
        stage.name,
        prior_revision.unwrap_or("none")
    );
    let (reason, message) = if pass.previous.last_applied_revisions.is_empty() {
        (reason, what)
    } else {
        (
            crate::api::reasons::StageSetReason::Succeeded,
            format!("Deployed; {what}"),
        )
    };
    Err(StageResult::Held {
        applied: false,
        entry,
        reason,
        message,
        requeue,
    })
}

/// What [`prepare`] hands to [`deploy`].
struct Prepared {
    /// The rendered, labelled objects, conflict policies not applied yet.
    objects: Vec<serde_json::Value>,
    /// Their references, sorted by inventory id, without duplicates.
    rendered: Vec<apply::ObjectRef>,
    /// The compiled CEL ready expressions.
    exprs: Vec<crate::validate::cel::CompiledCheck>,
    /// The fingerprint of the post-build variables used (empty: none).
    substitution_digest: String,
}

/// S5–S13 and R20: everything before the stage's objects are applied. Only
/// the pre actions write to the target cluster; a failure here leaves the
/// stage's objects untouched.
async fn prepare(
    pass: &mut Pass<'_>,
    ctx: &StageContext<'_>,
    hooks: &mut StageHooks<'_>,
) -> Result<Prepared, StageFailure> {
    let StageContext {
        stage,
        source,
        claimed,
        ..
    } = *ctx;
    let env = pass.env;
    let namespace = pass.namespace();
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
                return Err(StageFailure::invalid_spec(
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
    // The ActionDirty halt, S5 the Lifetime gate, S7 the pre actions (no
    // onFailure: nothing of the stage is applied yet).
    if let Some(halted) = hooks::dirty_halt(pass, stage) {
        return Err(halted);
    }
    hooks::lifetime_gate(pass, hooks).await?;
    // S6: the migrations anchored here.
    super::actions::migrations::run_anchored(pass, hooks, ctx.position).await?;
    hooks::run_hook(pass, hooks, Hook::Pre).await?;
    // Post-build variables are resolved before the download: a missing or
    // forbidden ConfigMap/Secret fails the stage without fetching anything.
    let vars = post_build_vars(env, &pass.ss, &namespace, stage).await?;
    // S8: fetch the pinned artifact.
    let span = crate::traced_span!(
        "stage.fetch",
        stage = %stage.name,
        stage.revision = %source.revision,
        stage.digest = %source.digest,
    );
    let artifact = match env
        .fetcher
        .fetch(&source.url, &source.digest)
        .instrument(span.clone())
        .await
    {
        Ok(a) => a,
        Err(e) => {
            let f = StageFailure::new(&stage.name, StageOp::FetchArtifact, e);
            crate::telemetry::fail(&span, &f.ready_message());
            return Err(f);
        }
    };
    // S9, S11, S12: decrypt, build, then the stage, owner and ApplySet labels.
    let objects = build_stage(pass, stage, artifact.files, vars.as_ref())?;
    let mut rendered: Vec<apply::ObjectRef> = objects.iter().map(apply::ObjectRef::of).collect();
    rendered.sort_by_key(inventory::entry_id);
    rendered.dedup_by_key(|r| inventory::entry_id(r));
    // R20, checked before anything of this stage is applied: an object may
    // belong to one stage only.
    let duplicates = prune::duplicates(claimed, &rendered);
    if !duplicates.is_empty() {
        return Err(StageFailure::invalid_spec(
            &stage.name,
            StageOp::Build,
            format!(
                "{} object(s) are claimed by more than one stage: {}",
                duplicates.len(),
                duplicates.join(", ")
            ),
        ));
    }
    // S13: image verification (fails closed while it is not built).
    images::gate(&env.clients.controller())
        .await
        .map_err(|e| StageFailure::new(&stage.name, StageOp::ImageVerification, e))?;
    // api.md D2: Helm hook objects kept (applyHelmHookResources true, the
    // default) are applied as ordinary objects, said once per revision.
    let kept_hooks = objects.iter().filter(|o| is_helm_hook(o)).count();
    let new_revision =
        ctx.prior.and_then(|p| p.applied_revision.as_deref()) != Some(source.revision.as_str());
    if kept_hooks > 0 && new_revision {
        let note = format!(
            "stage \"{}\": {kept_hooks} object(s) annotated helm.sh/hook are applied as ordinary objects, not run as Helm hooks (set applyHelmHookResources: false to drop them)",
            stage.name
        );
        pass.event(true, EventReason::HelmHookResource.as_str(), &note)
            .await;
    }
    Ok(Prepared {
        objects,
        rendered,
        exprs,
        substitution_digest: vars.as_ref().map(|v| v.digest()).unwrap_or_default(),
    })
}

/// S9 then [`render_objects`]: decrypts the SOPS files of the artifact
/// with the pass's keys (R14), builds, and refuses output that still holds
/// SOPS ciphertext, so an encrypted value is never applied as it is. Shared
/// by a pass and by the rebuild of a rollback.
pub(super) fn build_stage(
    pass: &Pass<'_>,
    stage: &crate::api::Stage,
    mut files: BTreeMap<String, Vec<u8>>,
    vars: Option<&substitute::Vars>,
) -> Result<Vec<serde_json::Value>, StageFailure> {
    let keys = match &pass.keys {
        Some(Ok(keys)) => Some(keys.as_ref()),
        Some(Err(e)) => {
            return Err(StageFailure::new(
                &stage.name,
                StageOp::ConfigureDecryption,
                e.clone(),
            ));
        }
        None => None,
    };
    let dir = stage.path.as_deref().unwrap_or("./");
    let decrypt_span = crate::traced_span!("stage.decrypt", stage = %stage.name);
    let decrypted = decrypt_span.in_scope(|| decrypt::decrypt_for_stage(&mut files, keys, dir));
    let leftovers = match decrypted {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(stageset = %pass.key(), stage = %stage.name, error = %e.detail(), "decryption failed");
            let f = StageFailure::new(
                &stage.name,
                StageOp::Decrypt,
                decrypt_message(&e, keys.is_some()),
            );
            crate::telemetry::fail(&decrypt_span, &f.ready_message());
            return Err(f);
        }
    };
    let build_span = crate::traced_span!("stage.build", stage = %stage.name);
    let objects =
        match build_span.in_scope(|| render_objects(pass.env, &pass.ss, stage, &files, vars)) {
            Ok(o) => o,
            Err(e) => {
                let f = StageFailure::new(&stage.name, StageOp::Build, e);
                crate::telemetry::fail(&build_span, &f.ready_message());
                return Err(f);
            }
        };
    if let Some(subject) = decrypt::ciphertext_in(&objects) {
        let why = match &leftovers.first {
            Some(e) => {
                tracing::warn!(stageset = %pass.key(), stage = %stage.name, error = %e.detail(), "decryption failed");
                decrypt_message(e, keys.is_some())
            }
            None if keys.is_none() => "the StageSet sets no spec.decryption".to_string(),
            None => "a value was not decrypted".to_string(),
        };
        let f = StageFailure::new(
            &stage.name,
            StageOp::Decrypt,
            format!("{subject} holds SOPS-encrypted data; nothing is applied ({why})"),
        );
        crate::telemetry::fail(&decrypt_span, &f.ready_message());
        return Err(f);
    }
    Ok(objects)
}

/// The status text of a decryption failure: "decryption failed" and the
/// file, plus the one fact a user needs when decryption is not configured.
fn decrypt_message(e: &decrypt::DecryptError, configured: bool) -> String {
    if configured {
        e.to_string()
    } else {
        format!("{e}: the file is SOPS-encrypted, but the StageSet sets no spec.decryption")
    }
}

/// Whether an object carries the `helm.sh/hook` annotation.
fn is_helm_hook(object: &serde_json::Value) -> bool {
    object
        .pointer("/metadata/annotations/helm.sh~1hook")
        .is_some()
}

/// S11 and S12: builds a stage's objects from its artifact's files (path,
/// patches, post-build substitution), drops Helm hook resources when the
/// stage says so, and stamps the stage, owner and ApplySet labels. Shared by
/// a pass and by the rebuild of a rollback.
pub(super) fn render_objects(
    env: &Env,
    ss: &StageSet,
    stage: &crate::api::Stage,
    files: &BTreeMap<String, Vec<u8>>,
    vars: Option<&substitute::Vars>,
) -> Result<Vec<serde_json::Value>, String> {
    let namespace = ss.namespace().unwrap_or_default();
    let ss_name = ss.name_any();
    let path = stage.path.as_deref().unwrap_or("./");
    let patches = stage.patches.as_deref().unwrap_or_default();
    let mut objects = build::render(files, path, patches, vars).map_err(|e| e.to_string())?;
    // Helm hook resources: dropped when the stage says so (api.md D2).
    if stage.apply_helm_hook_resources == Some(false) {
        objects.retain(|o| !is_helm_hook(o));
    }
    let applyset = (env.settings.inventory_mode != InventoryMode::Entries)
        .then(|| inventory::stage_applyset_id(&ss_name, &namespace, &stage.name));
    apply::label(
        &mut objects,
        &ss_name,
        &namespace,
        &stage.name,
        applyset.as_deref(),
    );
    Ok(objects)
}

/// S14–S20: conflict policies, write-ahead inventory, apply, drift report,
/// verify and the post actions. Every failure from the apply on runs the
/// stage's `onFailure` list first.
async fn deploy(
    pass: &mut Pass<'_>,
    ctx: &StageContext<'_>,
    prepared: Prepared,
    hooks: &mut StageHooks<'_>,
    forced: Option<String>,
) -> StageResult {
    let StageContext {
        position,
        stage,
        source,
        prior,
        record,
        reconstruct,
        ..
    } = *ctx;
    let Prepared {
        mut objects,
        rendered,
        exprs,
        substitution_digest,
    } = prepared;
    let client = hooks.client.clone();
    let env = pass.env;
    let namespace = pass.namespace();
    let ss_name = pass.ss.name_any();
    let entries_count = objects.len() as i64;
    // The rendering as applied (before conflict annotations), kept for
    // rollbacks after the apply (S17).
    let rendering = rollback::wants_rendering(pass).then(|| rollback::encode(&objects));
    // S14: conflict policies.
    let token = conflict::fresh_token();
    if let Err(e) = conflict::resolve(&mut objects, stage, &token) {
        let f = StageFailure::new(&stage.name, StageOp::ConflictPolicy, e);
        return ctx.failed(f, &hooks.executed);
    }
    // S18: write-ahead inventory, before the apply: what the stage renders
    // now, plus what it recorded before and has not been pruned yet, plus,
    // when the inventory was lost, the labelled live objects found. Recorded
    // before the first write, so an apply cut short (a crash, a failed
    // request) never leaves an object it created unrecorded, and a pass that
    // stops before the prune never forgets one (docs/reliability.md). An
    // entry whose object the apply never created is harmless: prune and
    // teardown skip what is gone or not labelled as this StageSet's.
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
        let (found, errors) =
            inventory::list_labelled(&hooks.clients, &client, &rendered, &selector).await;
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
        Err(e) => {
            // Nothing is written yet.
            let f = StageFailure::new(&stage.name, StageOp::RecordInventory, e);
            return ctx.failed(f, &hooks.executed);
        }
    };
    // S15: apply.
    let options = apply::ApplyOptions {
        concurrency: env.settings.apply_concurrency,
        staging_timeout: env.settings.staging_timeout,
        force_token: Some(token),
    };
    let span = crate::traced_span!(
        "stage.apply",
        stage = %stage.name,
        stage.objectCount = objects.len(),
    );
    let applied = apply::apply(&hooks.clients, &client, objects, &options)
        .instrument(span.clone())
        .await;
    let changes = match applied {
        Ok(c) => c,
        Err(e) => {
            let f = StageFailure::new(&stage.name, StageOp::Apply, e);
            crate::telemetry::fail(&span, &f.ready_message());
            return failed_deployed(pass, ctx, hooks, f).await;
        }
    };
    // S17: the rollback store.
    if let Some(rendering) = rendering {
        rollback::keep_rendering(pass, &stage.name, &source.digest, rendering).await;
    }
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
        let namespaced = hooks
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
    // The apply just read or wrote every object: its view is the first round.
    let known = verify::Known {
        seen: changes
            .iter()
            .filter_map(|c| c.seen.clone().map(|h| (c.object.subject(), h)))
            .collect(),
        concurrency: env.settings.apply_concurrency,
    };
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
        phase: Some(StagePhase::Ready),
        entries_count: Some(entries_count),
        shards: Some(shards as i32),
        ..ctx.entry(&hooks.executed)
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
    let mut verdict = verify::wait_ready(
        &hooks.clients,
        &client,
        &wait_set,
        known,
        timeout,
        &deleting,
    )
    .await;
    if verdict == verify::Verdict::Ready && !exprs.is_empty() {
        verdict = cel::wait_exprs(
            &hooks.clients,
            &client,
            &applied,
            &exprs,
            deadline,
            &deleting,
        )
        .await;
    }
    match verdict {
        verify::Verdict::Ready => {}
        verify::Verdict::Deleted => return StageResult::Deleted,
        verify::Verdict::Progressing(message) => {
            let on_timeout = stage.on_timeout.or(pass.ss.spec.on_timeout);
            if on_timeout == Some(crate::api::OnTimeout::Rollback) {
                let f = StageFailure::new(&stage.name, StageOp::Verify, message);
                return failed_deployed(pass, ctx, hooks, f).await;
            }
            let entry = StageStatus {
                phase: Some(StagePhase::Verifying),
                message: Some(format!("verify: {message}")),
                ..ready_entry
            };
            return StageResult::Progressing(message, entry);
        }
        verify::Verdict::Failed(message) => {
            let f = StageFailure::new(&stage.name, StageOp::Verify, message);
            return failed_deployed(pass, ctx, hooks, f).await;
        }
    }
    // S20: the post actions; the stage is Ready once they all succeeded.
    if let Err(f) = hooks::run_hook(pass, hooks, Hook::Post).await {
        return failed_deployed(pass, ctx, hooks, f).await;
    }
    let mut entry = StageStatus {
        executed_actions: hooks.executed.clone(),
        last_handled_reconcile_at: forced.or(ready_entry.last_handled_reconcile_at.clone()),
        ..ready_entry
    };
    // S21: the promotion gate.
    let (_, retry, _) = super::intervals(&pass.ss, &env.settings);
    let annotation = pass
        .ss
        .annotations()
        .get(keys::ANNOTATION_PROMOTE)
        .map(String::as_str);
    // The restart and event gates read pods and events on the target as the
    // stage's identity, every time the stage gets here.
    let gates = stage.promotion.as_ref();
    let prior_baseline = ctx
        .prior
        .and_then(|p| p.promotion_state.as_ref())
        .map(|s| s.restart_baseline.clone())
        .unwrap_or_default();
    let observed = async {
        let restarts = match gates.and_then(|g| g.restart_gate.as_ref()) {
            Some(g) => Some(podgates::restarts(&client, &namespace, g, &prior_baseline).await?),
            None => None,
        };
        let event = match gates.and_then(|g| g.event_gate.as_ref()) {
            Some(g) => podgates::events(&client, &namespace, g).await?,
            None => None,
        };
        Ok::<_, podgates::ReadError>((restarts, event))
    }
    .await;
    let (restarts, event) = match observed {
        Ok(o) => o,
        Err(podgates::ReadError::Denied(m)) => {
            pass.progress(entry.clone()).await;
            return StageResult::Held {
                applied: true,
                entry,
                reason: crate::api::reasons::StageSetReason::RBACDenied,
                message: format!(
                    "stage \"{}\" promotion gate: {}",
                    stage.name,
                    super::error::rbac_denied_message("reading pods or events", &m)
                ),
                requeue: super::error::PERMANENT_RETRY,
            };
        }
        Err(podgates::ReadError::Transient(m)) => {
            return StageResult::Unevaluable(
                format!("promotion gate cannot be evaluated yet: {m}"),
                entry,
            );
        }
    };
    // Analysis checks and the fast track read their metric sources.
    let analysis = match gates.and_then(|g| g.analysis.as_ref()) {
        Some(spec) => Some(analyse(pass, spec).await),
        None => None,
    };
    let fast_track_ok = match gates.and_then(|g| g.fast_track.as_ref()) {
        Some(f) => match f.max.trim().parse::<f64>() {
            Ok(max) if max.is_finite() => super::metricsource::read(env, &pass.ss, &f.source)
                .await
                .is_ok_and(|v| v <= max),
            _ => false,
        },
        None => false,
    };
    let mut gate = promotion::decide(&promotion::Inputs {
        stage,
        namespace: &namespace,
        stageset: &ss_name,
        prior: ctx.prior,
        revision: &source.revision,
        token: promotion::promote_token(annotation, &stage.name),
        now: env.clock.now(),
        retry,
        restarts: restarts.as_ref(),
        event: event.as_ref(),
        analysis: analysis.as_ref(),
        fast_track_ok,
    });
    if stage.promotion.is_some() || gate.handled_token.is_some() {
        entry.promotion_state = Some(gate.state.clone());
    }
    if let Some(token) = gate.handled_token.clone() {
        entry.last_handled_promotion = Some(token);
    }
    if gate.rollback {
        let revert = rollback::Revert {
            position,
            stage,
            failing: &source.revision,
            rendered: &rendered,
            records: ctx.records,
            claimed: ctx.claimed,
        };
        let outcome = rollback::revert_stage(pass, revert).await;
        let promotion::Decision::Hold { message, .. } = &mut gate.decision else {
            unreachable!("a gate that rolls back holds");
        };
        // The Warning event is the Ready transition's (reason
        // PromotionBlocked, this message), recorded when the pass finishes.
        match outcome {
            Ok((restored, tracked)) => {
                message.push_str(&format!("; rolled back to revision {restored}"));
                entry.applied_revision = Some(restored);
                entry.entries_count = Some(tracked as i64);
                if let Some(state) = entry.promotion_state.as_mut() {
                    state.aborted_revision = Some(source.revision.clone());
                }
                tracing::warn!(stageset = %pass.key(), stage = %stage.name, "{message}");
                super::actions::hooks::on_rollback(pass).await;
            }
            Err(rollback::RollbackError::Transient(m)) => {
                // Retried with back-off; the promotion state is not touched.
                entry.promotion_state = ctx.prior.and_then(|p| p.promotion_state.clone());
                return StageResult::Unevaluable(
                    format!(
                        "the promotion gate failed and reverting the stage cannot finish yet: {m}"
                    ),
                    entry,
                );
            }
            Err(
                rollback::RollbackError::Unavailable(m) | rollback::RollbackError::Unverified(m),
            ) => {
                message.push_str(&format!("; could not be reverted: {m}; holding"));
                tracing::warn!(stageset = %pass.key(), stage = %stage.name, "{message}");
            }
        }
    }
    let blocked = gate.state.phase == Some(crate::api::PromotionPhase::Blocked);
    // Applied and not promoted: a hold, and also Blocked (operations.md
    // §7.1 #11), so the promotion-stuck alert covers a blocked stage too.
    let pending = blocked || matches!(gate.decision, promotion::Decision::Hold { .. });
    if stage.promotion.is_some() {
        env.metrics
            .promotion(&namespace, &ss_name, &stage.name, pending, blocked);
    }
    pass.progress(entry.clone()).await;
    if let promotion::Decision::Hold {
        reason,
        message,
        requeue,
    } = gate.decision
    {
        return StageResult::Held {
            applied: true,
            entry,
            reason,
            message,
            requeue,
        };
    }
    StageResult::Ready(Box::new(StageDone {
        entry,
        position,
        rendered,
        recorded_extra,
        reconstructed,
        snapshot: rollback::snapshot_entry(
            &stage.name,
            &source.url,
            &source.digest,
            &source.revision,
            &substitution_digest,
        ),
    }))
}

/// Queries every analysis check once (delivery.md §5.5, pre-evaluation).
async fn analyse(pass: &Pass<'_>, spec: &crate::api::PromotionAnalysis) -> promotion::Analysis {
    let mut checks = Vec::with_capacity(spec.checks.len());
    let (mut breached, mut source_error) = (false, false);
    for check in &spec.checks {
        let mut result = crate::api::AnalysisCheckResult {
            name: check.name.clone(),
            ..Default::default()
        };
        match super::metricsource::read(pass.env, &pass.ss, &check.source).await {
            Ok(v) => {
                result.value = Some(v.to_string());
                match promotion::within(v, &check.threshold) {
                    Ok(ok) => {
                        result.ok = Some(ok);
                        breached |= !ok;
                    }
                    Err(e) => {
                        result.ok = Some(false);
                        result.error = Some(e);
                        breached = true;
                    }
                }
            }
            Err(e) => {
                pass.env
                    .metrics
                    .metric_source_error(&pass.namespace(), &pass.ss.name_any());
                result.ok = Some(false);
                result.error = Some(e);
                source_error = true;
            }
        }
        checks.push(result);
    }
    promotion::Analysis {
        result: crate::api::AnalysisResult {
            time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                pass.env.clock.now(),
            )),
            passed: Some(!breached && !source_error),
            checks,
        },
        breached,
        source_error,
    }
}

/// A failure from the apply on: the `onFailure` list runs (best effort),
/// then the stage fails as it would have.
async fn failed_deployed(
    pass: &mut Pass<'_>,
    ctx: &StageContext<'_>,
    hooks: &StageHooks<'_>,
    failure: StageFailure,
) -> StageResult {
    hooks::on_failure(pass, hooks, &failure).await;
    ctx.failed(failure, &hooks.executed)
}

/// delivery.md §2.3.4: the variables of a stage's `postBuild`. `substituteFrom`
/// objects are read as the StageSet-level ServiceAccount (never the controller
/// when one is named) in the StageSet's namespace; `optional` skips NotFound
/// only. Only inline values: no API access at all.
pub(super) async fn post_build_vars(
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

pub(super) fn effective_sa<'a>(
    ss: &'a StageSet,
    stage: Option<&'a crate::api::Stage>,
) -> Option<&'a str> {
    stage
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|s| !s.is_empty())
        .or(ss.spec.service_account_name.as_deref())
        .filter(|s| !s.is_empty())
}
