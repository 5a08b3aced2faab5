//! `stagesetctl baseline NAME` (delivery.md §6.10) and `reset-ledger NAME`
//! (§6.11): the StageLedger of a StageSet's Lifetime actions.

use clap::Args;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::json;

use super::{Ctx, FIELD_MANAGER, Failure, Outcome, api_error, fail};
use crate::api::action::ActionScope;
use crate::api::{LedgerRef, StageLedger, StageLedgerSpec, StageSet};

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  stagesetctl baseline web --stage prod --action create-db\n  stagesetctl baseline web --export > ledger.yaml"
)]
pub struct BaselineArgs {
    /// The StageSet (and StageLedger) name.
    pub name: String,
    /// The stage of the Lifetime action.
    #[arg(long, value_name = "STAGE", conflicts_with = "export")]
    pub stage: Option<String>,
    /// The Lifetime action to record as done.
    #[arg(long, value_name = "ACTION", conflicts_with = "export")]
    pub action: Option<String>,
    /// Print a StageLedger manifest whose baseline lists every completed action.
    #[arg(long)]
    pub export: bool,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  stagesetctl reset-ledger web --stage prod --action create-db\n  stagesetctl reset-ledger web --all"
)]
pub struct ResetArgs {
    /// The StageSet (and StageLedger) name.
    pub name: String,
    /// The stage of the completion to forget.
    #[arg(
        long,
        value_name = "STAGE",
        conflicts_with = "all",
        requires = "action"
    )]
    pub stage: Option<String>,
    /// The action of the completion to forget.
    #[arg(
        long,
        value_name = "ACTION",
        conflicts_with = "all",
        requires = "stage"
    )]
    pub action: Option<String>,
    /// Forget every completion and baseline entry.
    #[arg(long)]
    pub all: bool,
}

fn ledgers(ctx: &Ctx) -> Api<StageLedger> {
    Api::namespaced(ctx.client.clone(), &ctx.namespace)
}

fn post() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    }
}

/// Whether `action` of `stage` is a pre or post action with Lifetime scope.
fn is_lifetime(ss: &StageSet, stage: &str, action: &str) -> bool {
    ss.spec
        .stages
        .iter()
        .filter(|s| s.name == stage)
        .filter_map(|s| s.actions.as_ref())
        .flat_map(|a| a.pre.iter().flatten().chain(a.post.iter().flatten()))
        .any(|a| a.name == action && a.scope == Some(ActionScope::Lifetime))
}

pub async fn baseline(ctx: &Ctx, args: &BaselineArgs) -> Outcome {
    let api = ledgers(ctx);
    let existing = api.get_opt(&args.name).await.map_err(|e| {
        fail(format!(
            "reading StageLedger {}/{}: {}",
            ctx.namespace,
            args.name,
            api_error(&e)
        ))
    })?;
    if args.export {
        let completed = existing
            .as_ref()
            .and_then(|l| l.status.as_ref())
            .map(|s| s.completed_actions.clone())
            .unwrap_or_default();
        if completed.is_empty() {
            eprintln!(
                "note: StageLedger {}/{} records no completed actions",
                ctx.namespace, args.name
            );
        }
        let manifest = json!({
            "apiVersion": "stages.metio.wtf/v1",
            "kind": "StageLedger",
            "metadata": {"name": args.name, "namespace": ctx.namespace},
            "spec": {"baseline": completed.iter().map(|c| json!({"stage": c.stage, "action": c.action})).collect::<Vec<_>>()},
        });
        return super::get::print_value(&manifest, "yaml");
    }
    let (Some(stage), Some(action)) = (&args.stage, &args.action) else {
        return Err(Failure::Usage(
            "baseline needs --stage and --action, or --export".into(),
        ));
    };
    match ctx.stagesets().get_opt(&args.name).await {
        Ok(Some(ss)) => {
            if !is_lifetime(&ss, stage, action) {
                return Err(fail(format!(
                    "StageSet {} has no pre or post action {action:?} with scope Lifetime in stage {stage:?}",
                    args.name
                )));
            }
        }
        Ok(None) => eprintln!(
            "note: StageSet {}/{} does not exist; the baseline is recorded for when it does",
            ctx.namespace, args.name
        ),
        Err(e) => {
            return Err(fail(format!(
                "reading StageSet {}: {}",
                args.name,
                api_error(&e)
            )));
        }
    }
    let entry = LedgerRef {
        stage: stage.clone(),
        action: action.clone(),
    };
    match existing {
        None => {
            let mut ledger = StageLedger::new(
                &args.name,
                StageLedgerSpec {
                    baseline: Some(vec![entry]),
                },
            );
            ledger.metadata.namespace = Some(ctx.namespace.clone());
            api.create(&post(), &ledger).await.map_err(|e| {
                fail(format!(
                    "creating StageLedger {}: {}",
                    args.name,
                    api_error(&e)
                ))
            })?;
            println!(
                "Created StageLedger {} with baseline {stage}/{action}",
                args.name
            );
        }
        Some(mut ledger) => {
            let list = ledger.spec.baseline.get_or_insert_with(Vec::new);
            if list.contains(&entry) {
                println!(
                    "StageLedger {} already has baseline {stage}/{action}; nothing to do",
                    args.name
                );
                return Ok(());
            }
            list.push(entry);
            api.replace(&args.name, &post(), &ledger)
                .await
                .map_err(|e| {
                    fail(format!(
                        "updating StageLedger {}: {}",
                        args.name,
                        api_error(&e)
                    ))
                })?;
            println!(
                "Added baseline {stage}/{action} to StageLedger {}",
                args.name
            );
        }
    }
    Ok(())
}

pub async fn reset(ctx: &Ctx, args: &ResetArgs) -> Outcome {
    let target = match (&args.stage, &args.action, args.all) {
        (Some(s), Some(a), false) => Some((s.clone(), a.clone())),
        (None, None, true) => None,
        _ => {
            return Err(Failure::Usage(
                "reset-ledger needs --stage and --action, or --all".into(),
            ));
        }
    };
    let matches = |stage: &str, action: &str| match &target {
        None => true,
        Some((s, a)) => s == stage && a == action,
    };
    let api = ledgers(ctx);
    let mut ledger = api
        .get_opt(&args.name)
        .await
        .map_err(|e| {
            fail(format!(
                "reading StageLedger {}: {}",
                args.name,
                api_error(&e)
            ))
        })?
        .ok_or_else(|| {
            fail(format!(
                "StageLedger {}/{} not found",
                ctx.namespace, args.name
            ))
        })?;
    // The baseline first: otherwise the controller would adopt the
    // completions again right after they are removed.
    if let Some(list) = ledger.spec.baseline.as_mut() {
        let before = list.len();
        list.retain(|r| !matches(&r.stage, &r.action));
        if list.len() != before {
            ledger = api
                .replace(&args.name, &post(), &ledger)
                .await
                .map_err(|e| {
                    fail(format!(
                        "updating StageLedger {}: {}",
                        args.name,
                        api_error(&e)
                    ))
                })?;
        }
    }
    let mut removed = 0;
    if let Some(status) = ledger.status.as_mut() {
        let before = status.completed_actions.len();
        status
            .completed_actions
            .retain(|c| !matches(&c.stage, &c.action));
        removed = before - status.completed_actions.len();
        if removed > 0 {
            api.replace_status(&args.name, &post(), &ledger)
                .await
                .map_err(|e| {
                    fail(format!(
                        "updating the status of StageLedger {}: {}",
                        args.name,
                        api_error(&e)
                    ))
                })?;
        }
    }
    println!(
        "Reset {removed} completion(s) in StageLedger {}",
        ledger.name_any()
    );
    Ok(())
}
