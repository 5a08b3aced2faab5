//! The verbs that ask the controller to act, by writing the StageSet:
//! `suspend`, `resume`, `reconcile` (delivery.md §6.7) and `promote` (§6.8),
//! and their `--wait`.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use clap::Args;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use super::{Ctx, FIELD_MANAGER, Failure, Outcome, api_error, fail, token};
use crate::api::keys;
use crate::api::reasons::StageSetReason;
use crate::api::{DEFAULT_SOURCE_API_VERSION, DEFAULT_SOURCE_KIND, StageSet};

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  stagesetctl suspend web\n  stagesetctl resume web -n shop")]
pub struct SuspendArgs {
    /// The StageSet.
    pub name: String,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  stagesetctl reconcile web\n  stagesetctl reconcile web --with-source --wait --timeout 2m\n  stagesetctl reconcile web --stage prod\n  stagesetctl reconcile web --update-now --budget-override"
)]
pub struct ReconcileArgs {
    /// The StageSet.
    pub name: String,
    /// Re-run this stage's revision-scoped actions once.
    #[arg(long, value_name = "STAGE")]
    pub stage: Option<String>,
    /// Also request a reconcile of each stage's source (the ExternalArtifact's
    /// producer, or the Flux source).
    #[arg(long)]
    pub with_source: bool,
    /// With --with-source: a source that cannot be requested is an error,
    /// not a warning.
    #[arg(long, requires = "with_source")]
    pub strict: bool,
    /// Bypass closed update windows once.
    #[arg(long)]
    pub update_now: bool,
    /// Bypass error-budget freezes once.
    #[arg(long)]
    pub budget_override: bool,
    /// Clear the ledgers of this scope once (only `Version`).
    #[arg(long, value_name = "SCOPE", value_parser = clap::builder::PossibleValuesParser::new(["Version"]))]
    pub reset_scope: Option<String>,
    /// Request even when the StageSet is suspended.
    #[arg(long)]
    pub force: bool,
    /// Wait until the controller handled the request and the StageSet is Ready.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits (Go duration).
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    pub timeout: String,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  stagesetctl promote web --stage prod\n  stagesetctl promote web --stage prod --wait"
)]
pub struct PromoteArgs {
    /// The StageSet.
    pub name: String,
    /// The stage to promote.
    #[arg(long, required = true, value_name = "STAGE")]
    pub stage: String,
    /// Request even when the StageSet is suspended.
    #[arg(long)]
    pub force: bool,
    /// Wait until the controller handled the promotion.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits (Go duration).
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    pub timeout: String,
}

fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    }
}

async fn patch(ctx: &Ctx, name: &str, body: Value) -> Result<StageSet, Failure> {
    ctx.stagesets()
        .patch(name, &params(), &Patch::Merge(&body))
        .await
        .map_err(|e| {
            fail(format!(
                "updating StageSet {}/{name}: {}",
                ctx.namespace,
                api_error(&e)
            ))
        })
}

fn parse_wait(text: &str) -> Result<Duration, Failure> {
    crate::duration::GoDuration::parse(text)
        .ok()
        .and_then(|d| d.to_std())
        .ok_or_else(|| Failure::Usage(format!("--timeout: invalid duration {text:?}")))
}

/// `suspend NAME` (`suspend` true) and `resume NAME`: a merge patch of
/// `spec.suspend`; resume also stamps a reconcile request so the
/// StageSet reconciles right away.
pub async fn suspend(ctx: &Ctx, args: &SuspendArgs, suspend: bool) -> Outcome {
    ctx.stageset(&args.name).await?;
    if suspend {
        patch(ctx, &args.name, json!({"spec": {"suspend": true}})).await?;
        println!("StageSet {} suspended", args.name);
    } else {
        let t = token();
        patch(
            ctx,
            &args.name,
            json!({
                "metadata": {"annotations": {keys::ANNOTATION_REQUESTED_AT: t}},
                "spec": {"suspend": false},
            }),
        )
        .await?;
        println!("StageSet {} resumed (token {t})", args.name);
    }
    Ok(())
}

/// `reconcile NAME`.
pub async fn reconcile(ctx: &Ctx, args: &ReconcileArgs) -> Outcome {
    let timeout = parse_wait(&args.timeout)?;
    let ss = ctx.stageset(&args.name).await?;
    if ss.spec.suspend == Some(true) && !args.force {
        return Err(fail(format!(
            "StageSet {}/{} is suspended; resume it or pass --force",
            ctx.namespace, args.name
        )));
    }
    if let Some(stage) = &args.stage {
        super::select_stages(&ss, std::slice::from_ref(stage))?;
    }
    let t = token();
    if args.with_source {
        let failures = request_sources(ctx, &ss, &t).await;
        if failures > 0 && args.strict {
            return Err(fail(format!(
                "{failures} source(s) could not be asked to reconcile (--strict)"
            )));
        }
    }
    let mut annotations = serde_json::Map::new();
    annotations.insert(keys::ANNOTATION_REQUESTED_AT.into(), json!(t));
    if args.update_now {
        annotations.insert(keys::ANNOTATION_UPDATE_NOW.into(), json!(t));
    }
    if args.budget_override {
        annotations.insert(keys::ANNOTATION_BUDGET_OVERRIDE.into(), json!(t));
    }
    if args.reset_scope.is_some() {
        annotations.insert(keys::ANNOTATION_RESET_SCOPE.into(), json!(t));
    }
    if let Some(stage) = &args.stage {
        annotations.insert(
            keys::ANNOTATION_RECONCILE_STAGE.into(),
            json!(format!("{stage}@{t}")),
        );
    }
    patch(
        ctx,
        &args.name,
        json!({"metadata": {"annotations": annotations}}),
    )
    .await?;
    match &args.stage {
        Some(stage) => println!(
            "Reconcile requested for stage \"{stage}\" of StageSet {} (token {t})",
            args.name
        ),
        None => println!("Reconcile requested for StageSet {} (token {t})", args.name),
    }
    if !args.wait {
        return Ok(());
    }
    let stage = args.stage.clone();
    let (update_now, budget_override) = (args.update_now, args.budget_override);
    let handled = move |ss: &StageSet| {
        let Some(s) = ss.status.as_ref() else {
            return false;
        };
        let token_seen = match &stage {
            Some(stage) => s.stages.iter().any(|x| {
                &x.name == stage && x.last_handled_reconcile_at.as_deref() == Some(t.as_str())
            }),
            None => s.last_handled_reconcile_at.as_deref() == Some(t.as_str()),
        };
        token_seen
            && (!update_now || s.pending_update.is_none())
            && (!budget_override || s.budget_freeze.is_none())
    };
    wait(ctx, &args.name, timeout, "the reconcile request", handled).await
}

/// `promote NAME --stage S`.
pub async fn promote(ctx: &Ctx, args: &PromoteArgs) -> Outcome {
    let timeout = parse_wait(&args.timeout)?;
    let ss = ctx.stageset(&args.name).await?;
    let stage = super::select_stages(&ss, std::slice::from_ref(&args.stage))?;
    if stage.first().is_some_and(|s| s.promotion.is_none()) {
        return Err(fail(format!(
            "stage \"{}\" of StageSet {} has no promotion block; there is nothing to promote",
            args.stage, args.name
        )));
    }
    if ss.spec.suspend == Some(true) && !args.force {
        return Err(fail(format!(
            "StageSet {}/{} is suspended; resume it or pass --force",
            ctx.namespace, args.name
        )));
    }
    let t = token();
    patch(
        ctx,
        &args.name,
        json!({"metadata": {"annotations": {keys::ANNOTATION_PROMOTE: format!("{}@{t}", args.stage)}}}),
    )
    .await?;
    println!(
        "Promotion requested for stage \"{}\" of StageSet {} (token {t})",
        args.stage, args.name
    );
    if !args.wait {
        return Ok(());
    }
    let stage = args.stage.clone();
    let handled = move |ss: &StageSet| {
        ss.status.as_ref().is_some_and(|s| {
            s.stages
                .iter()
                .any(|x| x.name == stage && x.last_handled_promotion.as_deref() == Some(t.as_str()))
        })
    };
    let deadline = Instant::now() + timeout;
    let mut progress = Progress::new();
    loop {
        let ss = ctx.stageset(&args.name).await?;
        progress.show(&ss);
        if handled(&ss) {
            progress.done();
            println!("Promotion of stage \"{}\" handled", args.stage);
            return Ok(());
        }
        if Instant::now() >= deadline {
            progress.done();
            return Err(fail(format!(
                "timed out after {} waiting for the promotion to be handled",
                args.timeout
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Reasons of `Ready=False` that the controller is still working through;
/// `--wait` keeps waiting on them. Any other False reason ends the wait.
const IN_PROGRESS: [StageSetReason; 4] = [
    StageSetReason::StageProgressing,
    StageSetReason::Soaking,
    StageSetReason::SourceNotReady,
    StageSetReason::DependencyNotReady,
];

/// Polls every second until `handled` holds and the StageSet settled:
/// Ready=True is success; Ready=False with a reason that is not in
/// progress is a failure; so is the deadline.
async fn wait<F>(ctx: &Ctx, name: &str, timeout: Duration, what: &str, handled: F) -> Outcome
where
    F: Fn(&StageSet) -> bool,
{
    let deadline = Instant::now() + timeout;
    let mut progress = Progress::new();
    loop {
        let ss = ctx.stageset(name).await?;
        progress.show(&ss);
        let current =
            ss.status.as_ref().and_then(|s| s.observed_generation) >= ss.metadata.generation;
        if handled(&ss) && current {
            match super::get::ready(ss.status.as_ref()) {
                Some((s, reason, _)) if s == "True" => {
                    progress.done();
                    println!("StageSet {name} is Ready ({reason})");
                    return Ok(());
                }
                Some((s, reason, message)) if s == "False" => {
                    let busy =
                        StageSetReason::parse(&reason).is_some_and(|r| IN_PROGRESS.contains(&r));
                    if !busy {
                        progress.done();
                        return Err(fail(format!(
                            "StageSet {}/{name} is not Ready: {reason}: {message}",
                            ctx.namespace
                        )));
                    }
                }
                _ => {}
            }
        }
        if Instant::now() >= deadline {
            progress.done();
            let state = super::get::ready(ss.status.as_ref())
                .map(|(s, r, m)| format!("Ready={s} {r}: {m}"))
                .unwrap_or_else(|| "no Ready condition".into());
            return Err(fail(format!(
                "timed out after {}s waiting for {what} ({state})",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Stage progress while waiting: rewritten in place on a terminal, one
/// line per change otherwise.
pub struct Progress {
    tty: bool,
    last: String,
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            tty: std::io::stdout().is_terminal(),
            last: String::new(),
        }
    }

    pub fn show(&mut self, ss: &StageSet) {
        let status = ss.status.as_ref();
        let stages: Vec<String> = ss
            .spec
            .stages
            .iter()
            .map(|st| {
                let phase = status
                    .and_then(|s| s.stages.iter().find(|x| x.name == st.name))
                    .and_then(|x| x.phase)
                    .map(|p| format!("{p:?}"))
                    .unwrap_or_else(|| "Pending".into());
                format!("{}={phase}", st.name)
            })
            .collect();
        let ready = super::get::ready(status)
            .map(|(s, r, _)| format!("Ready={s} ({r})"))
            .unwrap_or_else(|| "Ready=Unknown".into());
        let line = format!("{ready}  {}", stages.join(" "));
        if line == self.last {
            return;
        }
        let mut out = std::io::stdout().lock();
        if self.tty {
            let _ = write!(out, "\r\x1b[K{line}");
        } else {
            let _ = writeln!(out, "  {line}");
        }
        let _ = out.flush();
        self.last = line;
    }

    pub fn done(&mut self) {
        if self.tty && !self.last.is_empty() {
            println!();
        }
        self.last.clear();
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

/// `--with-source`: stamps `reconcile.fluxcd.io/requestedAt` on every
/// distinct stage source (for an ExternalArtifact, on the producer its
/// `spec.sourceRef` points back to). Returns the number of failures, each
/// printed as a warning.
async fn request_sources(ctx: &Ctx, ss: &StageSet, t: &str) -> usize {
    let mut seen = BTreeSet::new();
    let mut failures = 0;
    for stage in &ss.spec.stages {
        let r = &stage.source_ref;
        let api_version = r
            .api_version
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_SOURCE_API_VERSION.to_string());
        let kind = r
            .kind
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_SOURCE_KIND.to_string());
        let namespace = r
            .namespace
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| ctx.namespace.clone());
        if !seen.insert((
            api_version.clone(),
            kind.clone(),
            namespace.clone(),
            r.name.clone(),
        )) {
            continue;
        }
        match request_source(ctx, &api_version, &kind, &namespace, &r.name, t).await {
            Ok(done) => println!("Reconcile requested for {done}"),
            Err(e) => {
                failures += 1;
                eprintln!("Warning: stage \"{}\": {e}", stage.name);
            }
        }
    }
    failures
}

async fn dynamic(
    ctx: &Ctx,
    api_version: &str,
    kind: &str,
    namespace: &str,
) -> Result<Api<DynamicObject>, String> {
    let r = ctx
        .clients
        .resource(api_version, kind)
        .await
        .map_err(|e| e.to_string())?;
    Ok(if r.namespaced {
        Api::namespaced_with(ctx.client.clone(), namespace, &r.api)
    } else {
        Api::all_with(ctx.client.clone(), &r.api)
    })
}

async fn request_source(
    ctx: &Ctx,
    api_version: &str,
    kind: &str,
    namespace: &str,
    name: &str,
    t: &str,
) -> Result<String, String> {
    let (target_version, target_kind, target_ns, target_name) = if kind == DEFAULT_SOURCE_KIND {
        let ea = dynamic(ctx, api_version, kind, namespace)
            .await?
            .get(name)
            .await
            .map_err(|e| format!("reading {kind} {namespace}/{name}: {}", api_error(&e)))?;
        let back = ea
            .data
            .pointer("/spec/sourceRef")
            .cloned()
            .unwrap_or(Value::Null);
        let s = |k: &str| {
            back.get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        if s("kind").is_empty() || s("name").is_empty() {
            return Err(format!(
                "{kind} {namespace}/{name} has no spec.sourceRef back to its producer; nothing to request"
            ));
        }
        let ns = Some(s("namespace"))
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| ea.namespace().unwrap_or_else(|| namespace.to_string()));
        (s("apiVersion"), s("kind"), ns, s("name"))
    } else {
        (
            api_version.to_string(),
            kind.to_string(),
            namespace.to_string(),
            name.to_string(),
        )
    };
    let api = dynamic(ctx, &target_version, &target_kind, &target_ns).await?;
    let body = json!({"metadata": {"annotations": {keys::ANNOTATION_REQUESTED_AT: t}}});
    api.patch(&target_name, &params(), &Patch::Merge(&body))
        .await
        .map_err(|e| {
            format!(
                "requesting a reconcile of {target_kind} {target_ns}/{target_name}: {}",
                api_error(&e)
            )
        })?;
    Ok(format!("{target_kind} {target_ns}/{target_name}"))
}
