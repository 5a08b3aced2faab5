//! The hooks of one stage as the pass runs them (delivery.md S5, S7, S20,
//! §2.13, §3.6.5): the Lifetime gate, the ActionDirty halt, pre and post
//! lists with their ledgers, and the best-effort `onFailure` and
//! `onRollback` lists.

use std::collections::BTreeSet;

use kube::ResourceExt;

use crate::api::reasons::{EventReason, StageOp};
use crate::api::{Action, ActionScope, AnchorWitness, NamespacedObjectKindReference, Stage};
use crate::kube_client::ClientFactory;
use crate::reconcile::Pass;
use crate::reconcile::error::{Error, StageFailure};

use super::ledger::{Lifetime, scope_of};
use super::{ActionCtx, ActionError, run_best_effort, verbs};

/// How many failed pre/post lists of a stage with a pending Lifetime action
/// halt it (`ActionDirty`).
pub const DIRTY_THRESHOLD: i32 = 5;

/// Which list of a stage runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Pre,
    Post,
}

impl Hook {
    fn op(self) -> StageOp {
        match self {
            Hook::Pre => StageOp::PreAction,
            Hook::Post => StageOp::PostAction,
        }
    }

    fn actions(self, stage: &Stage) -> &[Action] {
        let actions = stage.actions.as_ref();
        match self {
            Hook::Pre => actions.and_then(|a| a.pre.as_deref()),
            Hook::Post => actions.and_then(|a| a.post.as_deref()),
        }
        .unwrap_or_default()
    }
}

/// The actions state of one stage in one pass.
pub struct StageHooks<'s> {
    pub stage: &'s Stage,
    /// The stage identity's client for the target cluster.
    pub client: kube::Client,
    /// The target cluster's clients (discovery, tenant clients).
    pub clients: crate::kube_client::ClientFactory,
    /// The revision ledger: Revision-scoped names done at `revision`.
    pub executed: Vec<String>,
    /// The version ledger: Version-scoped names done at the desired version
    /// (empty when the StageSet tracks no version).
    pub executed_version: Vec<String>,
}

/// An anchor, in the StageSet's namespace (ignored for cluster-scoped kinds).
fn anchor_ref(api_version: &str, kind: &str, name: &str) -> NamespacedObjectKindReference {
    NamespacedObjectKindReference {
        api_version: Some(api_version.to_string()),
        kind: kind.to_string(),
        name: name.to_string(),
        namespace: None,
    }
}

/// Whether the stage has a Lifetime pre/post action not done for good.
fn lifetime_pending(lifetime: Option<&Lifetime>, stage: &Stage) -> bool {
    let done = lifetime.map(|l| l.done(&stage.name)).unwrap_or_default();
    super::ledger::hook_actions(stage)
        .any(|a| scope_of(a) == ActionScope::Lifetime && !done.contains(&a.name))
}

/// The ActionDirty halt (§3.6.5, DECISIONS 10): once a stage with a pending
/// Lifetime action failed [`DIRTY_THRESHOLD`] times, its actions do not run
/// again until a `reconcile.fluxcd.io/requestedAt` token resets the count.
pub fn dirty_halt(pass: &Pass<'_>, stage: &Stage) -> Option<StageFailure> {
    let count = pass.status.action_failure_count.unwrap_or(0);
    (count >= DIRTY_THRESHOLD && lifetime_pending(pass.lifetime.as_ref(), stage)).then(|| {
        StageFailure::new(
            &stage.name,
            StageOp::PreAction,
            Error::Dirty(format!(
                "halted after {count} failed action runs of a stage with a pending Lifetime action; fix the cause, then request a reconcile (annotate reconcile.fluxcd.io/requestedAt, or flux reconcile)"
            )),
        )
    })
}

/// S5: drops the stage's Lifetime completions whose anchor is gone or was
/// replaced, so their actions run again; an unreadable anchor keeps the
/// completion (fail open) with a Warning.
pub async fn lifetime_gate(
    pass: &mut Pass<'_>,
    hooks: &StageHooks<'_>,
) -> Result<(), StageFailure> {
    let Some(lifetime) = pass.lifetime.as_ref() else {
        return Ok(());
    };
    let stage = &hooks.stage.name;
    let anchored: Vec<_> = lifetime
        .completions(stage)
        .into_iter()
        .filter_map(|c| c.anchor.map(|a| (c.action, a)))
        .collect();
    if anchored.is_empty() {
        return Ok(());
    }
    let mut invalidated = Vec::new();
    let mut unreadable = Vec::new();
    {
        let ctx = hooks_ctx(pass, &hooks.clients, &hooks.client);
        for (action, anchor) in &anchored {
            let reference = anchor_ref(&anchor.api_version, &anchor.kind, &anchor.name);
            match verbs::read_uid(&ctx, &reference).await {
                Ok(Some(uid)) if uid == anchor.uid => {}
                Ok(_) => invalidated.push((action.clone(), anchor.clone())),
                Err(e) => unreadable.push((action.clone(), anchor.clone(), e)),
            }
        }
    }
    for (action, anchor, error) in unreadable {
        let note = format!(
            "stage \"{stage}\" action \"{action}\": the completion anchor {} {} cannot be read ({error}); the completion is kept",
            anchor.kind, anchor.name
        );
        tracing::warn!(stageset = %pass.key(), "{note}");
        pass.env
            .metrics
            .ledger_anchor_error(&pass.namespace(), &pass.ss.name_any());
        pass.event(true, EventReason::LedgerAnchorUnreadable.as_str(), &note)
            .await;
    }
    if invalidated.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = invalidated.iter().map(|(a, _)| a.clone()).collect();
    let controller = pass.env.clients.controller();
    let mut lifetime = pass.lifetime.take().expect("loaded above");
    let written = lifetime.invalidate(&controller, stage, &names).await;
    pass.lifetime = Some(lifetime);
    written.map_err(|e| StageFailure::new(stage, StageOp::InvalidateLifetimeCompletion, e))?;
    for (action, anchor) in invalidated {
        let note = format!(
            "stage \"{stage}\" action \"{action}\": the completion anchor {} {} (uid {}) is gone or was replaced; the action runs again",
            anchor.kind, anchor.name, anchor.uid
        );
        pass.event(false, EventReason::LedgerInvalidated.as_str(), &note)
            .await;
    }
    Ok(())
}

/// S7 / S20: runs the stage's pre or post list, skipping what the ledgers
/// hold, recording each success in its ledger right after it ran. A failure
/// counts towards ActionDirty when the stage still has a Lifetime action
/// pending.
pub async fn run_hook(
    pass: &mut Pass<'_>,
    hooks: &mut StageHooks<'_>,
    hook: Hook,
) -> Result<(), StageFailure> {
    let stage = hooks.stage;
    let actions = hook.actions(stage);
    if actions.is_empty() {
        return Ok(());
    }
    let mut lifetime = pass.lifetime.take();
    let mut skip: BTreeSet<String> = hooks.executed.iter().cloned().collect();
    skip.extend(hooks.executed_version.iter().cloned());
    if let Some(l) = lifetime.as_ref() {
        skip.extend(l.done(&stage.name));
    }
    let namespace = pass.namespace();
    let ss_name = pass.ss.name_any();
    let metrics = pass.env.metrics.clone();
    let mut result = Ok(());
    {
        let ctx = hooks_ctx(pass, &hooks.clients, &hooks.client);
        for action in actions.iter().filter(|a| !skip.contains(&a.name)) {
            let ran = match super::run(&ctx, action).await {
                Ok(()) => record(
                    &ctx,
                    &mut lifetime,
                    (&mut hooks.executed, &mut hooks.executed_version),
                    stage,
                    action,
                )
                .await
                .map_err(|e| ActionError {
                    message: format!("action \"{}\": recording its completion: {e}", action.name),
                    denied: false,
                }),
                Err(e) => Err(e),
            };
            match ran {
                Ok(()) => metrics.action_run(
                    &namespace,
                    &ss_name,
                    super::ledger::scope_label(scope_of(action)),
                ),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
    }
    pass.lifetime = lifetime;
    let Err(ActionError { message, denied }) = result else {
        return Ok(());
    };
    let failure = |message: String| {
        if denied {
            StageFailure::rbac(&stage.name, hook.op(), message)
        } else {
            StageFailure::new(&stage.name, hook.op(), message)
        }
    };
    if !lifetime_pending(pass.lifetime.as_ref(), stage) {
        return Err(failure(message));
    }
    let count = pass.status.action_failure_count.unwrap_or(0) + 1;
    pass.status.action_failure_count = Some(count);
    if count >= DIRTY_THRESHOLD {
        return Err(StageFailure::new(
            &stage.name,
            hook.op(),
            Error::Dirty(format!(
                "{message} (failure {count} of a stage with a pending Lifetime action: halted until a reconcile is requested with reconcile.fluxcd.io/requestedAt)"
            )),
        ));
    }
    Err(failure(message))
}

/// Records a pre/post action that succeeded in its ledger: the revision or
/// version ledger in memory (persisted with the pass's status), a Lifetime
/// completion in the StageLedger right away, with its anchor's UID (an
/// anchor that cannot be read fails the action: a completion without a UID
/// could never be revoked).
async fn record(
    ctx: &ActionCtx<'_>,
    lifetime: &mut Option<Lifetime>,
    (executed, executed_version): (&mut Vec<String>, &mut Vec<String>),
    stage: &Stage,
    action: &Action,
) -> Result<(), String> {
    match scope_of(action) {
        ActionScope::Revision => {
            executed.push(action.name.clone());
            Ok(())
        }
        ActionScope::Version => {
            executed_version.push(action.name.clone());
            Ok(())
        }
        ActionScope::Lifetime => {
            let anchor = match action.completion_anchor.as_ref() {
                None => None,
                Some(a) => {
                    let reference = anchor_ref(&a.api_version, &a.kind, &a.name);
                    match verbs::read_uid(ctx, &reference).await {
                        Ok(Some(uid)) => Some(AnchorWitness {
                            api_version: a.api_version.clone(),
                            kind: a.kind.clone(),
                            name: a.name.clone(),
                            uid,
                        }),
                        Ok(None) => {
                            return Err(format!(
                                "the completion anchor {} {} does not exist",
                                a.kind, a.name
                            ));
                        }
                        Err(e) => {
                            return Err(format!(
                                "the completion anchor {} {} cannot be read: {e}",
                                a.kind, a.name
                            ));
                        }
                    }
                }
            };
            let ledger = lifetime
                .as_mut()
                .ok_or_else(|| "the StageLedger was not loaded".to_string())?;
            ledger
                .record(
                    &ctx.env.clients.controller(),
                    &stage.name,
                    &action.name,
                    anchor,
                )
                .await
                .map_err(|e| e.to_string())
        }
    }
}

fn hooks_ctx<'a>(
    pass: &'a Pass<'_>,
    clients: &ClientFactory,
    client: &kube::Client,
) -> ActionCtx<'a> {
    ActionCtx {
        env: pass.env,
        clients: clients.clone(),
        client: client.clone(),
        namespace: pass.namespace(),
        ss: &pass.ss,
    }
}

/// Runs the stage's `onFailure` list after a failure from the apply on,
/// every time (DECISIONS 10: no ledger). Its own failure is a Warning
/// `OnFailureAction`, never the stage's failure.
pub async fn on_failure(pass: &Pass<'_>, hooks: &StageHooks<'_>, failure: &StageFailure) {
    let actions = hooks
        .stage
        .actions
        .as_ref()
        .and_then(|a| a.on_failure.as_deref())
        .unwrap_or_default();
    if actions.is_empty() {
        return;
    }
    let ctx = hooks_ctx(pass, &hooks.clients, &hooks.client);
    if let Err(f) = run_best_effort(&ctx, actions).await {
        let note = format!(
            "stage \"{}\" onFailure (after {}): {}",
            hooks.stage.name, failure.op, f.message
        );
        tracing::warn!(stageset = %pass.key(), "{note}");
        pass.event(true, EventReason::OnFailureAction.as_str(), &note)
            .await;
    }
}

/// Runs `spec.onRollback` after a successful rollback, as the StageSet-level
/// identity, every time (no ledger). Its failure is a Warning
/// `OnRollbackAction`.
pub async fn on_rollback(pass: &Pass<'_>) {
    let actions = pass.ss.spec.on_rollback.as_deref().unwrap_or_default();
    if actions.is_empty() {
        return;
    }
    let namespace = pass.namespace();
    let sa = crate::reconcile::stage::effective_sa(&pass.ss, None);
    let connected = match pass.target() {
        Ok(clients) => clients
            .for_service_account(&namespace, sa)
            .await
            .map(|c| (clients.clone(), c))
            .map_err(|e| format!("connect to target cluster: {e}")),
        Err(e) => Err(e),
    };
    let (clients, client) = match connected {
        Ok(c) => c,
        Err(e) => {
            let note = format!("onRollback: {e}");
            tracing::warn!(stageset = %pass.key(), "{note}");
            pass.event(true, EventReason::OnRollbackAction.as_str(), &note)
                .await;
            return;
        }
    };
    let ctx = hooks_ctx(pass, &clients, &client);
    if let Err(f) = run_best_effort(&ctx, actions).await {
        let note = format!("onRollback: {}", f.message);
        tracing::warn!(stageset = %pass.key(), "{note}");
        pass.event(true, EventReason::OnRollbackAction.as_str(), &note)
            .await;
    }
}
