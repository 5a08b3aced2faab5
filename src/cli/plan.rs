//! `stagesetctl plan [NAME...]` (delivery.md §6.6): a read-only preview of
//! what the next pass of each StageSet would run: the version transition,
//! a verdict per pre/post action from the ledgers, the migrations (or the
//! rollback steps of a downgrade), the gates holding it, and the prunes.
//!
//! The desired version and the downgrade steps come from the controller's
//! own functions (`reconcile::version`); the ledgers are read from the
//! StageSet's status and its StageLedger.

use std::collections::BTreeMap;

use clap::Args;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde::Serialize;

use super::render::{Rendered, Renderer, SourceDirs};
use super::{Ctx, Failure, Outcome, api_error, fail, select_stages};
use crate::api::action::ActionScope;
use crate::api::{StageLedger, StageSet};
use crate::reconcile::apply::ObjectRef;
use crate::reconcile::version::{self, PlanError, Transition};
use crate::reconcile::windows;

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  stagesetctl plan web\n  stagesetctl plan -A -o json\n  stagesetctl plan -l team=shop --stage prod\n\nExit status: 0 nothing would run, 1 something would run, 3 error."
)]
pub struct PlanArgs {
    /// StageSets to plan (default: every StageSet of the namespace).
    #[arg(conflicts_with_all = ["all_namespaces", "selector"])]
    pub names: Vec<String>,
    /// Stages to plan (repeatable or comma-separated; default: all).
    #[arg(long, value_name = "STAGE")]
    pub stage: Vec<String>,
    /// Render from a local directory: `STAGE=PATH` or a bare PATH (repeatable).
    #[arg(long, value_name = "[STAGE=]PATH")]
    pub source_dir: Vec<String>,
    /// Output format.
    #[arg(short = 'o', long, default_value = "text", value_parser = clap::builder::PossibleValuesParser::new(["text", "json", "yaml"]))]
    pub output: String,
    /// Plan the StageSets of every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Plan the StageSets matching this label selector.
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
}

/// The plan of one StageSet (the JSON/YAML shape of §6.6).
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub namespace: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<VersionReport>,
    pub stages: Vec<StageReport>,
    pub migrations: Vec<MigrationReport>,
    pub rollback: Vec<RollbackStep>,
    pub gates: Vec<String>,
    pub prunes: Vec<PruneReport>,
    pub notes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub would_run: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct VersionReport {
    pub current: Option<String>,
    pub desired: Option<String>,
    pub downgrade: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct StageReport {
    pub name: String,
    /// Empty for a local render.
    pub revision: String,
    pub actions: Vec<ActionReport>,
}

#[derive(Debug, Serialize)]
pub struct ActionReport {
    pub phase: String,
    pub name: String,
    pub scope: String,
    /// `WILL RUN`, `SKIP` or `RE-RUN`.
    pub state: String,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct MigrationReport {
    pub name: String,
    pub to: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub stage: String,
    pub verbs: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct RollbackStep {
    pub name: String,
    pub to: String,
    pub verbs: Vec<String>,
    pub irreversible: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneReport {
    pub stage: String,
    pub kind: String,
    pub name: String,
    pub state_bearing: bool,
}

pub async fn run(ctx: &Ctx, args: &PlanArgs) -> Outcome {
    let dirs = SourceDirs::parse(&args.source_dir)?;
    let mut reports = Vec::new();
    if !args.names.is_empty() {
        // A named target that fails stops the command.
        for name in &args.names {
            let ss = ctx.stageset(name).await?;
            let report = plan(ctx, &ss, args, &dirs).await;
            if let Some(e) = &report.error {
                return Err(fail(format!("StageSet {}/{name}: {e}", ctx.namespace)));
            }
            reports.push(report);
        }
    } else {
        let api: Api<StageSet> = if args.all_namespaces {
            Api::all(ctx.client.clone())
        } else {
            ctx.stagesets()
        };
        let mut params = ListParams::default();
        if let Some(l) = &args.selector {
            params = params.labels(l);
        }
        let mut items = api
            .list(&params)
            .await
            .map_err(|e| fail(format!("listing StageSets: {}", api_error(&e))))?
            .items;
        if items.is_empty() {
            eprintln!("no StageSets matched");
            return Ok(());
        }
        items.sort_by_key(|s| (s.namespace().unwrap_or_default(), s.name_any()));
        for ss in &items {
            reports.push(plan(ctx, ss, args, &dirs).await);
        }
    }
    match args.output.as_str() {
        "json" | "yaml" => {
            let v = serde_json::to_value(&reports).map_err(|e| fail(e.to_string()))?;
            super::get::print_value(&v, &args.output)?;
        }
        _ => {
            for r in &reports {
                print!("{}", text(r));
            }
        }
    }
    let failed = reports.iter().filter(|r| r.error.is_some()).count();
    if failed > 0 {
        return Err(fail(format!("{failed} StageSet(s) could not be planned")));
    }
    if reports.iter().any(|r| r.would_run) {
        return Err(Failure::Differences);
    }
    Ok(())
}

fn plan_error(e: PlanError) -> String {
    match e {
        PlanError::Refused { message, .. } | PlanError::Waiting { message, .. } => message,
        PlanError::Transient(m) => m,
    }
}

fn verbs(actions: Option<&Vec<crate::api::Action>>) -> Vec<String> {
    actions
        .into_iter()
        .flatten()
        .filter_map(|a| a.verbs().first().map(|v| v.to_string()))
        .collect()
}

/// Plans one StageSet; a failure is recorded in the report.
async fn plan(ctx: &Ctx, ss: &StageSet, args: &PlanArgs, dirs: &SourceDirs) -> Report {
    let mut report = Report {
        namespace: ss.namespace().unwrap_or_default(),
        name: ss.name_any(),
        ..Report::default()
    };
    if let Err(e) = fill(ctx, ss, args, dirs, &mut report).await {
        report.error = Some(match e {
            Failure::Runtime(m) | Failure::Usage(m) => m,
            Failure::Differences => "differences".into(),
        });
        report.would_run = false;
    }
    report
}

async fn fill(
    ctx: &Ctx,
    ss: &StageSet,
    args: &PlanArgs,
    dirs: &SourceDirs,
    report: &mut Report,
) -> Result<(), Failure> {
    let namespace = report.namespace.clone();
    let stages = select_stages(ss, &args.stage)?;
    let ledger = Api::<StageLedger>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(&report.name)
        .await
        .map_err(|e| {
            fail(format!(
                "reading StageLedger {}: {}",
                report.name,
                api_error(&e)
            ))
        })?;
    let renderer = Renderer::new(ctx, ss, dirs.clone(), false, false).await?;
    let mut rendered: BTreeMap<String, Rendered> = BTreeMap::new();
    for stage in &stages {
        rendered.insert(stage.name.clone(), renderer.render(stage).await?);
    }

    // The version transition.
    let status = ss.status.as_ref();
    let current_raw = status
        .and_then(|s| s.version.clone())
        .filter(|v| !v.is_empty());
    let mut versions: Option<(semver::Version, Option<semver::Version>)> = None;
    if let Some(source) = &ss.spec.version {
        let raw = desired_raw(ss, source, &renderer, &mut rendered).await;
        match raw
            .and_then(|raw| version::versions(ss, current_raw.as_deref(), &raw).map_err(plan_error))
        {
            Ok(v) => versions = Some(v),
            Err(e) => report.notes.push(format!("desired version: {e}")),
        }
        report.version = Some(VersionReport {
            current: current_raw.clone(),
            desired: versions.as_ref().map(|(d, _)| d.to_string()),
            downgrade: versions
                .as_ref()
                .is_some_and(|(d, c)| c.as_ref().is_some_and(|c| d.cmp_precedence(c).is_lt())),
        });
    }
    let transition = versions
        .as_ref()
        .map(|(d, c)| version::classify(d, c.as_ref()));

    // Action verdicts.
    for stage in &stages {
        let r = &rendered[&stage.name];
        let st = status.and_then(|s| s.stages.iter().find(|x| x.name == stage.name));
        let mut actions = Vec::new();
        for (phase, list) in stage
            .actions
            .iter()
            .flat_map(|a| [("pre", &a.pre), ("post", &a.post)])
        {
            for a in list.iter().flatten() {
                let scope = a.scope.unwrap_or(ActionScope::Revision);
                let (state, reason) = match scope {
                    ActionScope::Lifetime => {
                        lifetime(ctx, &namespace, ledger.as_ref(), &stage.name, &a.name).await
                    }
                    ActionScope::Version => match (&versions, transition) {
                        (None, _) if ss.spec.version.is_none() => {
                            ("WILL RUN", "no spec.version".to_string())
                        }
                        (None, _) => ("WILL RUN", "the desired version is unknown".to_string()),
                        (_, Some(Transition::Baseline)) => {
                            ("SKIP", "baseline on adoption".to_string())
                        }
                        (Some((desired, current)), _) => {
                            let done = st.is_some_and(|s| {
                                s.ledger_version.as_deref() == Some(desired.to_string().as_str())
                                    && s.executed_version_actions.contains(&a.name)
                            });
                            if done {
                                ("SKIP", format!("already ran for version {desired}"))
                            } else {
                                match current {
                                    Some(c) if c != desired => {
                                        ("WILL RUN", format!("new version episode {c} → {desired}"))
                                    }
                                    _ => ("WILL RUN", format!("version {desired}")),
                                }
                            }
                        }
                    },
                    ActionScope::Revision if r.revision.is_empty() => {
                        ("WILL RUN", "local render; ledger not consulted".to_string())
                    }
                    ActionScope::Revision => {
                        let done = st.is_some_and(|s| {
                            s.ledger_revision.as_deref() == Some(r.revision.as_str())
                                && s.executed_actions.contains(&a.name)
                        });
                        if done {
                            ("SKIP", format!("already ran at revision {}", r.revision))
                        } else {
                            ("WILL RUN", "new revision".to_string())
                        }
                    }
                };
                actions.push(ActionReport {
                    phase: phase.to_string(),
                    name: a.name.clone(),
                    scope: crate::reconcile::actions::ledger::scope_label(scope).to_string(),
                    state: state.to_string(),
                    reason,
                });
            }
        }
        report.stages.push(StageReport {
            name: stage.name.clone(),
            revision: r.revision.clone(),
            actions,
        });
    }

    // Migrations, or the steps of a downgrade.
    let pending = || -> Vec<MigrationReport> {
        status
            .map(|s| s.pending_migrations.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|m| MigrationReport {
                name: m.name,
                to: m.to,
                from: m.from,
                stage: m.stage.unwrap_or_default(),
                verbs: m.actions,
            })
            .collect()
    };
    match (&versions, transition) {
        (Some((desired, Some(current))), Some(Transition::Downgrade)) => {
            let source = ss.spec.version.as_ref();
            if source.and_then(|v| v.allow_downgrade) != Some(true) {
                report.notes.push(format!(
                    "the downgrade {current} → {desired} is refused while spec.version.allowDowngrade is not true"
                ));
            }
            if ss.spec.migrations_source_ref.is_some() {
                report.notes.push(
                    "the ladder comes from spec.migrationsSourceRef, which plan does not read; showing status.pendingMigrations".into(),
                );
                report.migrations = pending();
            } else {
                let ladder = ss.spec.migrations.clone().unwrap_or_default();
                match version::select(ss, &ladder, Transition::Downgrade, desired, current) {
                    Ok(steps) => {
                        report.rollback = steps
                            .iter()
                            .map(|p| RollbackStep {
                                name: p.migration.name.clone(),
                                to: p.migration.to.clone(),
                                verbs: verbs(p.migration.down.as_ref()),
                                irreversible: p
                                    .migration
                                    .down
                                    .as_ref()
                                    .is_none_or(|d| d.is_empty()),
                            })
                            .collect()
                    }
                    Err(e) => report.notes.push(format!("rollback: {}", plan_error(e))),
                }
            }
        }
        _ => report.migrations = pending(),
    }

    // Gates.
    let now = jiff::Timestamp::now();
    if let Some(list) = ss.spec.update_windows.as_ref().filter(|w| !w.is_empty()) {
        match windows::compile(list) {
            Ok(compiled) if !windows::allowed(&compiled, now) => {
                report
                    .gates
                    .push(match windows::next_change(&compiled, now) {
                        Some(t) => format!("update window closed until {t} [live: now]"),
                        None => "update window closed [live: now]".to_string(),
                    })
            }
            Ok(_) => {}
            Err(e) => report.notes.push(format!("updateWindows: {e}")),
        }
    }
    if let Some(s) = status {
        if let Some(f) = &s.budget_freeze {
            report.gates.push(format!(
                "error budget frozen (remaining {}, threshold {}) [live: status]",
                f.remaining.as_deref().unwrap_or("?"),
                f.freeze_threshold.as_deref().unwrap_or("?")
            ));
        }
        for st in &s.stages {
            if let Some(phase) = st.promotion_state.as_ref().and_then(|p| p.phase) {
                report.gates.push(format!(
                    "stage {}: promotion {phase:?} [live: status]",
                    st.name
                ));
            }
            if st.budget_freeze.is_some() {
                report.gates.push(format!(
                    "stage {}: error budget frozen [live: status]",
                    st.name
                ));
            }
        }
    }

    // Prunes.
    let refs: BTreeMap<String, Vec<ObjectRef>> = rendered
        .iter()
        .filter(|(name, _)| stages.iter().any(|s| &s.name == *name))
        .map(|(name, r)| (name.clone(), r.objects.iter().map(ObjectRef::of).collect()))
        .collect();
    for (stage, object, _) in super::diff::prune_preview(ctx, ss, &refs).await? {
        let state_bearing = matches!(
            (object.group(), object.kind.as_str()),
            ("", "PersistentVolumeClaim") | ("", "PersistentVolume") | ("apps", "StatefulSet")
        );
        report.prunes.push(PruneReport {
            stage,
            kind: object.kind,
            name: object.name,
            state_bearing,
        });
    }

    report.would_run = report
        .stages
        .iter()
        .flat_map(|s| &s.actions)
        .any(|a| a.state != "SKIP")
        || !report.migrations.is_empty()
        || !report.rollback.is_empty()
        || !report.prunes.is_empty();
    Ok(())
}

/// The Lifetime verdict: RE-RUN when the completion's anchor is gone or was
/// replaced, SKIP when completed or baselined, else WILL RUN.
async fn lifetime(
    ctx: &Ctx,
    namespace: &str,
    ledger: Option<&StageLedger>,
    stage: &str,
    action: &str,
) -> (&'static str, String) {
    let completion = ledger.and_then(|l| l.status.as_ref()).and_then(|s| {
        s.completed_actions
            .iter()
            .find(|c| c.stage == stage && c.action == action)
    });
    match completion {
        Some(c) => match &c.anchor {
            Some(anchor) if super::diff::anchor_gone(ctx, namespace, anchor).await => (
                "RE-RUN",
                format!(
                    "completion anchor {} {} is gone or was replaced",
                    anchor.kind, anchor.name
                ),
            ),
            _ => ("SKIP", "completed".to_string()),
        },
        None if ledger.is_some_and(|l| {
            l.spec
                .baseline
                .iter()
                .flatten()
                .any(|b| b.stage == stage && b.action == action)
        }) =>
        {
            ("SKIP", "baselined".to_string())
        }
        None => ("WILL RUN", "not completed yet".to_string()),
    }
}

/// The desired version as its source spells it, read from the rendered
/// stages (rendering the named stage when it was not selected).
async fn desired_raw(
    ss: &StageSet,
    source: &crate::api::VersionSource,
    renderer: &Renderer<'_>,
    rendered: &mut BTreeMap<String, Rendered>,
) -> Result<String, String> {
    if let Some(v) = source.value.as_ref().filter(|v| !v.trim().is_empty()) {
        return Ok(v.trim().to_string());
    }
    let (stage_name, what) = if let Some(a) = &source.from_artifact {
        (Some(a.stage.as_str()), "fromArtifact")
    } else if let Some(o) = &source.from_object {
        (o.stage.as_deref().filter(|s| !s.is_empty()), "fromObject")
    } else {
        return Err("spec.version sets none of value, fromObject, fromArtifact".into());
    };
    let stage = match stage_name {
        None => ss.spec.stages.first(),
        Some(n) => ss.spec.stages.iter().find(|s| s.name == n),
    }
    .ok_or_else(|| format!("spec.version.{what}.stage is not a stage of this StageSet"))?;
    if !rendered.contains_key(&stage.name) {
        let r = renderer.render(stage).await.map_err(|e| match e {
            Failure::Runtime(m) | Failure::Usage(m) => m,
            Failure::Differences => String::new(),
        })?;
        rendered.insert(stage.name.clone(), r);
    }
    let r = &rendered[&stage.name];
    if let Some(a) = &source.from_artifact {
        let path = a.path.trim_start_matches("./");
        let bytes = r
            .files
            .get(path)
            .ok_or_else(|| format!("stage \"{}\" has no file {:?}", stage.name, a.path))?;
        let text = String::from_utf8_lossy(bytes).trim().to_string();
        if text.is_empty() {
            return Err(format!(
                "file {:?} is empty; it must hold the version",
                a.path
            ));
        }
        return Ok(text);
    }
    let o = source.from_object.as_ref().expect("checked above");
    version::version_of_object(&r.objects, &stage.name, o).map_err(plan_error)
}

/// The text layout.
pub fn text(r: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let version = r.version.as_ref().map(|v| {
        format!(
            "  (version {} → {}{})",
            v.current.as_deref().unwrap_or("none"),
            v.desired.as_deref().unwrap_or("unknown"),
            if v.downgrade { ", downgrade" } else { "" }
        )
    });
    let _ = writeln!(
        out,
        "StageSet {}/{}{}",
        r.namespace,
        r.name,
        version.unwrap_or_default()
    );
    if let Some(e) = &r.error {
        let _ = writeln!(out, "error: {e}");
        return out;
    }
    for s in &r.stages {
        let rev = if s.revision.is_empty() {
            "local render"
        } else {
            s.revision.as_str()
        };
        let _ = writeln!(out, "stage {}  (revision {rev})", s.name);
        for a in &s.actions {
            let _ = writeln!(
                out,
                "  {} {} {} (scope: {} — {})",
                a.phase, a.name, a.state, a.scope, a.reason
            );
        }
    }
    if !r.migrations.is_empty() {
        let _ = writeln!(out, "migrations:");
        for m in &r.migrations {
            let _ = writeln!(
                out,
                "  {} → {}  before {}  {}",
                m.name,
                m.to,
                m.stage,
                m.verbs.join(",")
            );
        }
    }
    if !r.rollback.is_empty() {
        let _ = writeln!(out, "rollback:");
        for m in &r.rollback {
            let _ = writeln!(
                out,
                "  {} (down from {})  {}{}",
                m.name,
                m.to,
                m.verbs.join(","),
                if m.irreversible { "  irreversible" } else { "" }
            );
        }
    }
    if !r.gates.is_empty() {
        let _ = writeln!(out, "gates:");
        for g in &r.gates {
            let _ = writeln!(out, "  {g}");
        }
    }
    if !r.prunes.is_empty() {
        let _ = writeln!(out, "prunes:");
        for p in &r.prunes {
            let _ = writeln!(
                out,
                "  {}: {}/{}{}",
                p.stage,
                p.kind,
                p.name,
                if p.state_bearing {
                    "  ⚠ state-bearing"
                } else {
                    ""
                }
            );
        }
    }
    for n in &r.notes {
        let _ = writeln!(out, "note: {n}");
    }
    out
}
