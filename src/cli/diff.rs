//! `stagesetctl diff NAME` (delivery.md §6.4): each selected stage rendered,
//! labelled and conflict-resolved as the controller does it, then
//! server-side applied with `dryRun=All` under the controller's field
//! manager; what would change is printed as a unified diff of masked,
//! noise-stripped YAML, followed by what pruning would delete, the actions
//! and migrations the next pass would run, and a summary line.

use std::collections::BTreeMap;
use std::io::IsTerminal;

use clap::Args;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::Value;

use super::build::RenderArgs;
use super::render::Masker;
use super::{Ctx, Failure, Outcome, api_error, fail, select_stages};
use crate::api::action::ActionScope;
use crate::api::{StageLedger, StageSet, keys};
use crate::reconcile::apply::{self, ObjectRef};
use crate::reconcile::{conflict, inventory, prune};

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  stagesetctl diff web\n  stagesetctl diff web --stage prod --show-unchanged\n  stagesetctl diff web --source-dir ./deploy --exit-code=false\n\nExit status: 0 no changes, 1 changes found (unless --exit-code=false), 3 error."
)]
pub struct DiffArgs {
    /// The StageSet.
    pub name: String,
    #[command(flatten)]
    pub render: RenderArgs,
    /// Compare with a server-side dry-run apply (true) or with the live
    /// object as it is (false).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub server_side: bool,
    /// Print Secret values instead of masking them.
    #[arg(long)]
    pub show_secrets: bool,
    /// Also list objects that would not change (and skipped ones).
    #[arg(long)]
    pub show_unchanged: bool,
    /// Preview what pruning would delete.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub prune: bool,
    /// Colour the output: auto (a terminal, NO_COLOR unset), always, never.
    #[arg(long, default_value = "auto", value_parser = clap::builder::PossibleValuesParser::new(["auto", "always", "never"]))]
    pub color: String,
    /// Exit 1 when something would change.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub exit_code: bool,
}

/// What would happen to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Create,
    Configure,
    Delete,
    Unchanged,
    Skip,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Create => "create",
            Verdict::Configure => "configure",
            Verdict::Delete => "delete",
            Verdict::Unchanged => "unchanged",
            Verdict::Skip => "skip",
        }
    }
}

/// One entry of the diff.
struct Entry {
    verdict: Verdict,
    object: ObjectRef,
    stage: String,
    /// Noise-stripped live object (None: absent).
    live: Option<Value>,
    /// Noise-stripped result of the apply (None: deleted).
    merged: Option<Value>,
}

/// Drops what the server owns or every write changes (§6.4 noise list).
pub fn strip_noise(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("status");
        if let Some(md) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in [
                "managedFields",
                "resourceVersion",
                "uid",
                "generation",
                "creationTimestamp",
                "selfLink",
            ] {
                md.remove(k);
            }
            if let Some(a) = md.get_mut("annotations").and_then(Value::as_object_mut) {
                a.remove("kubectl.kubernetes.io/last-applied-configuration");
                // The per-apply recreate token changes on every pass.
                if let Some(f) = a.get_mut(keys::ANNOTATION_FORCE) {
                    *f = Value::String("*".into());
                }
                if a.is_empty() {
                    md.remove("annotations");
                }
            }
        }
    }
    v
}

async fn api_of(
    ctx: &Ctx,
    client: &kube::Client,
    r: &ObjectRef,
) -> Result<Api<DynamicObject>, Failure> {
    let res = ctx
        .clients
        .resource(&r.api_version, &r.kind)
        .await
        .map_err(|e| fail(format!("{}: {e}", r.subject())))?;
    if res.namespaced {
        if r.namespace.is_empty() {
            return Err(fail(format!(
                "{} is namespaced but the rendered object has no namespace",
                r.subject()
            )));
        }
        Ok(Api::namespaced_with(client.clone(), &r.namespace, &res.api))
    } else {
        Ok(Api::all_with(client.clone(), &res.api))
    }
}

fn to_value(o: &DynamicObject) -> Value {
    serde_json::to_value(o).unwrap_or(Value::Null)
}

/// Whether the controller stamps the ApplySet membership label: not in its
/// `entries` inventory mode, recognisable by stored shards without the
/// ApplySet id label; with nothing stored yet, the default mode (which does).
pub async fn applyset_mode(ctx: &Ctx, ss: &StageSet) -> Result<bool, Failure> {
    use crate::api::StageInventory;
    let params = kube::api::ListParams::default().labels(&format!(
        "{}={}",
        keys::LABEL_STAGE_SET,
        ss.name_any()
    ));
    let shards =
        Api::<StageInventory>::namespaced(ctx.client.clone(), &ss.namespace().unwrap_or_default())
            .list(&params)
            .await
            .map_err(|e| fail(format!("listing StageInventories: {}", api_error(&e))))?
            .items;
    Ok(shards.is_empty()
        || shards
            .iter()
            .any(|s| s.labels().contains_key(keys::APPLYSET_ID_LABEL)))
}

/// The stage, owner and (`applyset`) ApplySet labels and the conflict
/// handling, as the controller stamps them before an apply. Returns the
/// apply's force token.
pub fn prepare(
    ss: &StageSet,
    stage: &crate::api::Stage,
    objects: &mut [Value],
    applyset: bool,
) -> Result<String, Failure> {
    let namespace = ss.namespace().unwrap_or_default();
    let name = ss.name_any();
    let id = applyset.then(|| inventory::stage_applyset_id(&name, &namespace, &stage.name));
    apply::label(objects, &name, &namespace, &stage.name, id.as_deref());
    let token = conflict::fresh_token();
    conflict::resolve(objects, stage, &token)
        .map_err(|e| fail(format!("stage \"{}\": {e}", stage.name)))?;
    Ok(token)
}

/// `writer` does the dry run (the caller, or the tenant with --as-tenant);
/// the live object is read as the caller.
async fn classify(
    ctx: &Ctx,
    writer: &kube::Client,
    obj: &Value,
    stage: &str,
    server_side: bool,
) -> Result<Entry, Failure> {
    let r = ObjectRef::of(obj);
    let api = api_of(ctx, &ctx.client, &r).await?;
    let live = api
        .get_opt(&r.name)
        .await
        .map_err(|e| fail(format!("reading {}: {}", r.subject(), api_error(&e))))?
        .map(|l| to_value(&l));
    let keep_existing = obj
        .pointer("/metadata/annotations/stages.metio.wtf~1keep-existing")
        .and_then(Value::as_str)
        == Some("true");
    let entry = |verdict, live: Option<&Value>, merged: Option<Value>| Entry {
        verdict,
        object: r.clone(),
        stage: stage.to_string(),
        live: live.map(strip_noise),
        merged: merged.map(|m| strip_noise(&m)),
    };
    if keep_existing && let Some(l) = &live {
        return Ok(entry(Verdict::Skip, Some(l), Some(l.clone())));
    }
    let merged = if server_side {
        let params = PatchParams::apply(keys::FIELD_MANAGER).force().dry_run();
        let dry = api_of(ctx, writer, &r)
            .await?
            .patch(&r.name, &params, &Patch::Apply(obj))
            .await
            .map_err(|e| {
                fail(format!(
                    "server-side dry run of {} (stage \"{stage}\"): {}",
                    r.subject(),
                    api_error(&e)
                ))
            })?;
        to_value(&dry)
    } else {
        obj.clone()
    };
    let verdict = match &live {
        None => Verdict::Create,
        Some(l) if strip_noise(l) == strip_noise(&merged) => Verdict::Unchanged,
        Some(_) => Verdict::Configure,
    };
    Ok(entry(verdict, live.as_ref(), Some(merged)))
}

/// The objects pruning would delete: the controller's prune plan over the
/// stored inventory, where stages not selected keep their records; objects
/// already gone, not labelled as this StageSet's, or annotated
/// `prune: disabled` are left out, as the controller leaves them.
/// Returns (stage, object, live object) in plan order.
pub async fn prune_preview(
    ctx: &Ctx,
    ss: &StageSet,
    rendered: &BTreeMap<String, Vec<ObjectRef>>,
) -> Result<Vec<(String, ObjectRef, Value)>, Failure> {
    let name = ss.name_any();
    let namespace = ss.namespace().unwrap_or_default();
    let records = inventory::read(&ctx.client, &namespace, &name)
        .await
        .map_err(|e| fail(format!("reading the inventory of {name}: {e}")))?;
    let desired: Vec<(String, Vec<ObjectRef>)> = ss
        .spec
        .stages
        .iter()
        .map(|s| {
            let objs = match rendered.get(&s.name) {
                Some(r) => r.clone(),
                None => records
                    .get(&s.name)
                    .map(|r| r.objects())
                    .unwrap_or_default(),
            };
            (s.name.clone(), objs)
        })
        .collect();
    let plan = prune::plan(&records, &desired);
    let no_prune = |stage: &str| {
        ss.spec
            .stages
            .iter()
            .any(|s| s.name == stage && s.prune == Some(false))
    };
    let mut removed: Vec<(String, ObjectRef)> = Vec::new();
    for (stage, objs) in plan.prune.iter().chain(plan.removed.iter()) {
        if no_prune(stage) {
            continue;
        }
        removed.extend(objs.iter().map(|o| (stage.clone(), o.clone())));
    }
    let mut out = Vec::new();
    for (stage, r) in removed {
        let api = match api_of(ctx, &ctx.client, &r).await {
            Ok(a) => a,
            // A kind no longer served: nothing left to delete.
            Err(_) => continue,
        };
        let Some(live) = api
            .get_opt(&r.name)
            .await
            .map_err(|e| fail(format!("reading {}: {}", r.subject(), api_error(&e))))?
        else {
            continue;
        };
        let labels = live.labels();
        let ours = labels.get(keys::LABEL_OWNER_NAME) == Some(&name)
            && labels.get(keys::LABEL_OWNER_NAMESPACE) == Some(&namespace);
        let disabled = live
            .annotations()
            .get(keys::ANNOTATION_PRUNE)
            .map(String::as_str)
            == Some(keys::PRUNE_DISABLED);
        if !ours || disabled {
            continue;
        }
        out.push((stage, r, to_value(&live)));
    }
    Ok(out)
}

async fn prunes(
    ctx: &Ctx,
    ss: &StageSet,
    rendered: &BTreeMap<String, Vec<ObjectRef>>,
) -> Result<Vec<Entry>, Failure> {
    Ok(prune_preview(ctx, ss, rendered)
        .await?
        .into_iter()
        .map(|(stage, object, live)| Entry {
            verdict: Verdict::Delete,
            object,
            stage,
            live: Some(strip_noise(&live)),
            merged: None,
        })
        .collect())
}

struct Paint {
    on: bool,
}

impl Paint {
    fn wrap(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

fn yaml(v: Option<&Value>, masker: &mut Masker, show_secrets: bool) -> String {
    match v {
        None => String::new(),
        Some(v) => {
            let mut v = v.clone();
            if !show_secrets {
                masker.mask(&mut v);
            }
            kustomize::yaml::document_to_string(&v)
        }
    }
}

fn print_entry(e: &Entry, masker: &mut Masker, args: &DiffArgs, paint: &Paint) {
    let where_ = if e.object.namespace.is_empty() {
        String::new()
    } else {
        format!(" [{}]", e.object.namespace)
    };
    let header = format!(
        "{} {}/{}{where_}  (stage: {})",
        e.verdict.as_str(),
        e.object.kind,
        e.object.name,
        e.stage
    );
    println!("{}", paint.wrap("1", &header));
    if matches!(e.verdict, Verdict::Unchanged | Verdict::Skip) {
        return;
    }
    let old = yaml(e.live.as_ref(), masker, args.show_secrets);
    let new = yaml(e.merged.as_ref(), masker, args.show_secrets);
    let diff = similar::TextDiff::from_lines(&old, &new);
    let text = diff
        .unified_diff()
        .context_radius(3)
        .header("live", "merged")
        .to_string();
    for line in text.lines() {
        let painted = if line.starts_with("+++") || line.starts_with("---") {
            paint.wrap("1", line)
        } else if line.starts_with('+') {
            paint.wrap("32", line)
        } else if line.starts_with('-') {
            paint.wrap("31", line)
        } else if line.starts_with("@@") {
            paint.wrap("36", line)
        } else {
            line.to_string()
        };
        println!("{painted}");
    }
}

/// Whether the completion anchor of a Lifetime completion is gone or was
/// replaced (the controller then runs the action again). An anchor that
/// cannot be read keeps the completion, as in the controller.
pub async fn anchor_gone(ctx: &Ctx, namespace: &str, anchor: &crate::api::AnchorWitness) -> bool {
    let Ok(res) = ctx
        .clients
        .resource(&anchor.api_version, &anchor.kind)
        .await
    else {
        return false;
    };
    let api: Api<DynamicObject> = if res.namespaced {
        Api::namespaced_with(ctx.client.clone(), namespace, &res.api)
    } else {
        Api::all_with(ctx.client.clone(), &res.api)
    };
    match api.get_opt(&anchor.name).await {
        Ok(Some(o)) => o.metadata.uid.as_deref() != Some(anchor.uid.as_str()),
        Ok(None) => true,
        Err(_) => false,
    }
}

/// The pre/post actions of a stage the next pass would run (the ledger
/// rules of §6.6, against the deployed version for Version scope) and its
/// onFailure actions, as `phase name type detail` lines.
async fn actions_to_run(
    ctx: &Ctx,
    ss: &StageSet,
    stage: &crate::api::Stage,
    revision: &str,
    ledger: Option<&StageLedger>,
) -> Vec<String> {
    let Some(actions) = stage.actions.as_ref() else {
        return Vec::new();
    };
    let namespace = ss.namespace().unwrap_or_default();
    let status = ss.status.as_ref();
    let st = status.and_then(|s| s.stages.iter().find(|x| x.name == stage.name));
    let completion = |name: &str| {
        ledger
            .and_then(|l| l.status.as_ref())
            .and_then(|s| {
                s.completed_actions
                    .iter()
                    .find(|c| c.stage == stage.name && c.action == name)
            })
            .cloned()
    };
    // Baseline entries become completions on the controller's next pass.
    let baselined = |name: &str| {
        ledger.is_some_and(|l| {
            l.spec
                .baseline
                .iter()
                .flatten()
                .any(|b| b.stage == stage.name && b.action == name)
        })
    };
    let mut out = Vec::new();
    for (phase, list) in [("pre", &actions.pre), ("post", &actions.post)] {
        for a in list.iter().flatten() {
            let verdict = match a.scope.unwrap_or(ActionScope::Revision) {
                ActionScope::Lifetime => match completion(&a.name) {
                    Some(c) => match &c.anchor {
                        Some(anchor) if anchor_gone(ctx, &namespace, anchor).await => {
                            Some(format!(
                                "scope Lifetime, re-run: the completion anchor {} {} is gone or was replaced",
                                anchor.kind, anchor.name
                            ))
                        }
                        _ => None,
                    },
                    None if baselined(&a.name) => None,
                    None => Some("scope Lifetime, not completed yet".to_string()),
                },
                ActionScope::Version => {
                    let done = st.is_some_and(|s| {
                        s.ledger_version.is_some()
                            && s.ledger_version == status.and_then(|x| x.version.clone())
                            && s.executed_version_actions.contains(&a.name)
                    });
                    (!done).then(|| "scope Version, not run at the deployed version".to_string())
                }
                ActionScope::Revision if revision.is_empty() => {
                    Some("scope Revision, local render; ledger not consulted".to_string())
                }
                ActionScope::Revision => {
                    let done = st.is_some_and(|s| {
                        s.ledger_revision.as_deref() == Some(revision)
                            && s.executed_actions.contains(&a.name)
                    });
                    (!done).then(|| format!("scope Revision, new revision {revision}"))
                }
            };
            if let Some(detail) = verdict {
                out.push(format!(
                    "{phase} {} {} {detail}",
                    a.name,
                    a.verbs().first().copied().unwrap_or("-")
                ));
            }
        }
    }
    for a in actions.on_failure.iter().flatten() {
        out.push(format!(
            "onFailure {} {} runs only if the stage fails",
            a.name,
            a.verbs().first().copied().unwrap_or("-")
        ));
    }
    out
}

pub async fn run(ctx: &Ctx, args: &DiffArgs) -> Outcome {
    let dirs = args.render.source_dirs()?;
    let ss = ctx.stageset(&args.name).await?;
    let stages = select_stages(&ss, &args.render.stage)?;
    let renderer = args.render.renderer(ctx, &ss, dirs).await?;
    let paint = Paint {
        on: match args.color.as_str() {
            "always" => true,
            "never" => false,
            _ => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        },
    };
    let ledger = Api::<StageLedger>::namespaced(ctx.client.clone(), &ctx.namespace)
        .get_opt(&args.name)
        .await
        .map_err(|e| {
            fail(format!(
                "reading StageLedger {}: {}",
                args.name,
                api_error(&e)
            ))
        })?;
    let applyset = applyset_mode(ctx, &ss).await?;
    let mut per_stage: Vec<(String, Vec<Entry>)> = Vec::new();
    let mut rendered_refs: BTreeMap<String, Vec<ObjectRef>> = BTreeMap::new();
    let mut action_lines: Vec<(String, Vec<String>)> = Vec::new();
    for stage in &stages {
        let rendered = renderer.render(stage).await?;
        let mut objects = rendered.objects;
        prepare(&ss, stage, &mut objects, applyset)?;
        apply::sort_for_apply(&mut objects);
        let writer = if args.render.as_tenant {
            super::render::tenant_client(ctx, &ss, Some(stage)).await?
        } else {
            ctx.client.clone()
        };
        let mut entries = Vec::with_capacity(objects.len());
        for obj in &objects {
            entries.push(classify(ctx, &writer, obj, &stage.name, args.server_side).await?);
        }
        rendered_refs.insert(
            stage.name.clone(),
            objects.iter().map(ObjectRef::of).collect(),
        );
        per_stage.push((stage.name.clone(), entries));
        action_lines.push((
            stage.name.clone(),
            actions_to_run(ctx, &ss, stage, &rendered.revision, ledger.as_ref()).await,
        ));
    }
    let deletions = if args.prune {
        prunes(ctx, &ss, &rendered_refs).await?
    } else {
        Vec::new()
    };
    // Each stage's changes, then its deletions; deletions of stages gone
    // from the spec last, sorted.
    let mut removed_stage: Vec<Entry> = Vec::new();
    for d in deletions {
        match per_stage.iter_mut().find(|(s, _)| *s == d.stage) {
            Some((_, entries)) => entries.push(d),
            None => removed_stage.push(d),
        }
    }
    removed_stage.sort_by_key(|e| (e.stage.clone(), inventory::entry_id(&e.object)));
    let mut masker = Masker::new();
    let mut counts: BTreeMap<Verdict, usize> = BTreeMap::new();
    let all = per_stage
        .iter()
        .flat_map(|(_, e)| e.iter())
        .chain(removed_stage.iter());
    for e in all {
        *counts.entry(e.verdict).or_default() += 1;
        if matches!(e.verdict, Verdict::Unchanged | Verdict::Skip) && !args.show_unchanged {
            continue;
        }
        print_entry(e, &mut masker, args, &paint);
    }
    if action_lines.iter().any(|(_, l)| !l.is_empty()) {
        println!("Actions to run:");
        for (stage, lines) in &action_lines {
            for l in lines {
                println!("  {stage}: {l}");
            }
        }
    }
    let migrations = ss
        .status
        .as_ref()
        .map(|s| s.pending_migrations.clone())
        .unwrap_or_default();
    if !migrations.is_empty() {
        println!("Migrations to run:");
        for m in &migrations {
            println!(
                "  {} → {}  before {}  {}",
                m.name,
                m.to,
                m.stage.as_deref().unwrap_or("(first stage)"),
                m.actions.join(",")
            );
        }
    }
    let n = |v: Verdict| counts.get(&v).copied().unwrap_or(0);
    let changes = n(Verdict::Create) + n(Verdict::Configure) + n(Verdict::Delete);
    if changes == 0 {
        println!("Summary: no changes");
    } else {
        println!(
            "Summary: {} to create, {} to configure, {} to delete, {} unchanged, {} skipped",
            n(Verdict::Create),
            n(Verdict::Configure),
            n(Verdict::Delete),
            n(Verdict::Unchanged),
            n(Verdict::Skip)
        );
    }
    if changes > 0 && args.exit_code {
        return Err(Failure::Differences);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn noise_is_stripped() {
        let live = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "uid": "u", "resourceVersion": "3", "generation": 1,
                "creationTimestamp": "2024-01-01T00:00:00Z", "managedFields": [],
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "data": {"k": "v"}, "status": {}
        });
        assert_eq!(
            strip_noise(&live),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}})
        );
    }
}
