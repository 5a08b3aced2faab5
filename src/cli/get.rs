//! `stagesetctl get [NAME]` (delivery.md §6.2): a table of StageSets, one
//! StageSet in detail, or the objects as YAML or JSON.

use clap::Args;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use super::{Ctx, Outcome, api_error, fail, table};
use crate::api::reasons::CONDITION_READY;
use crate::api::status::StagePhase;
use crate::api::{StageSet, StageSetStatus};

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  stagesetctl get\n  stagesetctl get -A\n  stagesetctl get web\n  stagesetctl get web -o yaml"
)]
pub struct GetArgs {
    /// The StageSet to show in detail (default: list them).
    pub name: Option<String>,
    /// List StageSets of every namespace.
    #[arg(short = 'A', long, conflicts_with = "name")]
    pub all_namespaces: bool,
    /// Output format: the table or detail view (""), yaml or json.
    #[arg(short = 'o', long, default_value = "", value_parser = clap::builder::PossibleValuesParser::new(["", "yaml", "json"]))]
    pub output: String,
}

pub async fn run(ctx: &Ctx, args: &GetArgs) -> Outcome {
    if let Some(name) = &args.name {
        let ss = ctx.stageset(name).await?;
        return match args.output.as_str() {
            "" => {
                print!("{}", detail(&ss));
                Ok(())
            }
            format => print_value(&object_value(&ss), format),
        };
    }
    let api: Api<StageSet> = if args.all_namespaces {
        Api::all(ctx.client.clone())
    } else {
        ctx.stagesets()
    };
    let mut items = api
        .list(&ListParams::default())
        .await
        .map_err(|e| fail(format!("listing StageSets: {}", api_error(&e))))?
        .items;
    items.sort_by_key(|s| (s.namespace().unwrap_or_default(), s.name_any()));
    match args.output.as_str() {
        "" if items.is_empty() => {
            println!("No StageSets found.");
            Ok(())
        }
        "" => {
            print!("{}", list_table(&items, args.all_namespaces));
            Ok(())
        }
        format => print_value(
            &json!({
                "apiVersion": "v1",
                "kind": "List",
                "metadata": {"resourceVersion": ""},
                "items": items.iter().map(object_value).collect::<Vec<_>>(),
            }),
            format,
        ),
    }
}

/// Prints a value as YAML or JSON.
pub fn print_value(v: &Value, format: &str) -> Outcome {
    let text = match format {
        "json" => serde_json::to_string_pretty(v)
            .map(|s| s + "\n")
            .map_err(|e| e.to_string()),
        _ => serde_yaml_ng::to_string(v).map_err(|e| e.to_string()),
    }
    .map_err(|e| fail(format!("encoding the output: {e}")))?;
    print!("{text}");
    Ok(())
}

/// The object with its apiVersion and kind (list items come without them)
/// and without managedFields (as `kubectl get -o yaml` shows it).
pub fn object_value(ss: &StageSet) -> Value {
    let mut v = serde_json::to_value(ss).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("apiVersion".into(), json!("stages.metio.wtf/v1"));
        o.insert("kind".into(), json!("StageSet"));
        if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("managedFields");
        }
    }
    v
}

/// (status, reason, message) of the Ready condition.
pub fn ready(status: Option<&StageSetStatus>) -> Option<(String, String, String)> {
    let c = status?
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_READY)?;
    Some((
        c.status.as_str().to_string(),
        c.reason.clone(),
        c.message.clone(),
    ))
}

fn dash(s: Option<&str>) -> String {
    s.filter(|s| !s.is_empty()).unwrap_or("-").to_string()
}

/// The list table: `[NAMESPACE] NAME READY REASON STAGES VERSION PENDING`.
pub fn list_table(items: &[StageSet], namespaces: bool) -> String {
    let mut rows = Vec::with_capacity(items.len() + 1);
    let mut header: Vec<String> = Vec::new();
    if namespaces {
        header.push("NAMESPACE".into());
    }
    header.extend(
        ["NAME", "READY", "REASON", "STAGES", "VERSION", "PENDING"]
            .iter()
            .map(|s| s.to_string()),
    );
    rows.push(header);
    for ss in items {
        let status = ss.status.as_ref();
        let (ready_status, reason) = match ready(status) {
            Some((s, r, _)) => (s, dash(Some(&r))),
            None => ("Unknown".to_string(), "-".to_string()),
        };
        // Status entries of stages that left the spec are not counted, so
        // the count never exceeds the spec's.
        let ready_stages = status
            .map(|s| {
                s.stages
                    .iter()
                    .filter(|st| st.phase == Some(StagePhase::Ready))
                    .filter(|st| ss.spec.stages.iter().any(|x| x.name == st.name))
                    .count()
            })
            .unwrap_or(0);
        let mut row = Vec::new();
        if namespaces {
            row.push(ss.namespace().unwrap_or_default());
        }
        row.push(ss.name_any());
        row.push(ready_status);
        row.push(reason);
        row.push(format!("{ready_stages}/{}", ss.spec.stages.len()));
        row.push(dash(status.and_then(|s| s.version.as_deref())));
        row.push(pending(status));
        rows.push(row);
    }
    table(&rows)
}

fn pending(status: Option<&StageSetStatus>) -> String {
    match status.and_then(|s| s.pending_update.as_ref()) {
        Some(p) => match &p.next_window_opens {
            Some(t) => format!("held until {}", t.0),
            None => "held".to_string(),
        },
        None => "-".to_string(),
    }
}

/// The detail view of one StageSet.
pub fn detail(ss: &StageSet) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let status = ss.status.as_ref();
    let _ = writeln!(out, "Name:        {}", ss.name_any());
    let _ = writeln!(out, "Namespace:   {}", ss.namespace().unwrap_or_default());
    if ss.spec.suspend == Some(true) {
        let _ = writeln!(out, "Suspended:   true");
    }
    match ready(status) {
        Some((s, r, m)) => {
            let _ = writeln!(out, "Ready:       {s} ({r})");
            let _ = writeln!(out, "Message:     {m}");
        }
        None => {
            let _ = writeln!(out, "Ready:       Unknown (not reconciled yet)");
        }
    }
    let _ = writeln!(
        out,
        "Version:     {}",
        dash(status.and_then(|s| s.version.as_deref()))
    );
    if let Some(s) = status {
        if !s.pending_migrations.is_empty() {
            let names: Vec<&str> = s
                .pending_migrations
                .iter()
                .map(|m| m.name.as_str())
                .collect();
            let _ = writeln!(out, "Pending migrations: {}", names.join(", "));
        }
        if let Some(t) = &s.last_handled_reconcile_at {
            let _ = writeln!(out, "Last handled reconcile: {t}");
        }
        if let Some(p) = &s.pending_update {
            let _ = writeln!(out, "Pending update:");
            if let Some(t) = &p.next_window_opens {
                let _ = writeln!(out, "  Next window opens: {}", t.0);
            }
            for (key, rev) in &p.revisions {
                let _ = writeln!(out, "  Held: {key} -> {rev}");
            }
        }
    }
    let _ = writeln!(out, "Stages:");
    let mut rows = vec![vec![
        "NAME".to_string(),
        "PHASE".to_string(),
        "REVISION".to_string(),
        "ENTRIES".to_string(),
    ]];
    for stage in &ss.spec.stages {
        let st = status.and_then(|s| s.stages.iter().find(|x| x.name == stage.name));
        rows.push(vec![
            stage.name.clone(),
            st.and_then(|s| s.phase)
                .map(|p| format!("{p:?}"))
                .unwrap_or_else(|| "-".into()),
            dash(st.and_then(|s| s.applied_revision.as_deref())),
            st.and_then(|s| s.entries_count)
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    for line in table(&rows).lines() {
        let _ = writeln!(out, "  {line}");
    }
    out
}
