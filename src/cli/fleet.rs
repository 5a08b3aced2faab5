//! `stagesetctl fleet NAME` (delivery.md §6.12): a FleetRollout's waves and
//! where each member stands, resolved with the reconciler's own member and
//! wave logic (src/reconcile/fleet.rs), or the object as YAML or JSON.

use std::collections::{BTreeMap, BTreeSet};

use clap::Args;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use super::get::print_value;
use super::{Ctx, Outcome, api_error, fail};
use crate::api::reasons::CONDITION_READY;
use crate::api::{ConditionStatus, FleetPhase, FleetRollout, StageSet, WaveHealth};
use crate::reconcile::fleet::{MemberState, assess, members};

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  stagesetctl fleet shop-1-4\n  stagesetctl fleet shop-1-4 -o yaml"
)]
pub struct FleetArgs {
    /// The FleetRollout (cluster-scoped).
    pub name: String,
    /// Output format: the progress view (""), yaml or json.
    #[arg(short = 'o', long, default_value = "", value_parser = clap::builder::PossibleValuesParser::new(["", "yaml", "json"]))]
    pub output: String,
}

pub async fn run(ctx: &Ctx, args: &FleetArgs) -> Outcome {
    let fleet = Api::<FleetRollout>::all(ctx.client.clone())
        .get_opt(&args.name)
        .await
        .map_err(|e| {
            fail(format!(
                "reading FleetRollout {}: {}",
                args.name,
                api_error(&e)
            ))
        })?
        .ok_or_else(|| fail(format!("FleetRollout {} not found", args.name)))?;
    if !args.output.is_empty() {
        let mut value = serde_json::to_value(&fleet)
            .map_err(|e| fail(format!("encoding FleetRollout {}: {e}", args.name)))?;
        value["apiVersion"] = crate::api::API_VERSION.into();
        value["kind"] = "FleetRollout".into();
        return print_value(&value, &args.output);
    }
    let stagesets = Api::<StageSet>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| fail(format!("listing StageSets: {}", api_error(&e))))?
        .items;
    let namespaces: BTreeMap<String, BTreeMap<String, String>> =
        if fleet.spec.namespace_selector.is_some() {
            Api::<Namespace>::all(ctx.client.clone())
                .list(&ListParams::default())
                .await
                .map_err(|e| fail(format!("listing namespaces: {}", api_error(&e))))?
                .items
                .into_iter()
                .map(|n| (n.name_any(), n.labels().clone()))
                .collect()
        } else {
            BTreeMap::new()
        };
    print!("{}", view(&fleet, &stagesets, &namespaces)?);
    Ok(())
}

/// The version the rollout moves to, as the header says it.
fn heading_version(fleet: &FleetRollout, states: &[MemberState]) -> String {
    if let Some(t) = &fleet.spec.target_version {
        return t.clone();
    }
    let pending: BTreeSet<&str> = states
        .iter()
        .map(|s| s.pending.as_str())
        .filter(|p| !p.is_empty())
        .collect();
    match pending.len() {
        0 => "the current version".to_string(),
        1 => pending.into_iter().next().unwrap_or_default().to_string(),
        _ => "mixed versions".to_string(),
    }
}

/// The progress view.
pub fn view(
    fleet: &FleetRollout,
    stagesets: &[StageSet],
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<String, super::Failure> {
    let name = fleet.name_any();
    let mine = members(fleet, stagesets, namespaces)
        .map_err(|e| fail(format!("FleetRollout {name}: {e}")))?;
    let now = jiff::Timestamp::now();
    let waves =
        assess(fleet, &mine, None, now).map_err(|e| fail(format!("FleetRollout {name}: {e}")))?;
    let all: Vec<MemberState> = waves.iter().flat_map(|w| w.states.clone()).collect();
    let status = fleet.status.clone().unwrap_or_default();
    let mut out = format!(
        "FleetRollout {name}  → version {}\n",
        heading_version(fleet, &all)
    );
    let phase = match status.phase.unwrap_or(FleetPhase::Pending) {
        FleetPhase::Pending => "Pending",
        FleetPhase::InProgress => "InProgress",
        FleetPhase::Halted => "Halted",
        FleetPhase::Completed => "Completed",
    };
    out.push_str(&format!(
        "phase: {phase}   wave: {}\n",
        status.current_wave.as_deref().unwrap_or("-")
    ));
    if let Some(c) = status
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_READY && c.status != ConditionStatus::True)
    {
        out.push_str(&format!("{}: {}\n", c.reason, c.message));
    }
    let target = fleet.spec.target_version.as_deref();
    for wave in &waves {
        let recorded = status.waves.iter().find(|w| w.name == wave.status.name);
        let total = wave.states.len();
        let adopted = wave.states.iter().filter(|s| s.adopted).count();
        let ready = wave.states.iter().filter(|s| s.ready).count();
        let at = match target {
            Some(t) => format!("at {t}"),
            None => "adopted".to_string(),
        };
        let mut line = format!(
            "wave {}   {adopted}/{total} {at}, {ready} ready",
            wave.status.name
        );
        if recorded.and_then(|w| w.settled) == Some(true) {
            line.push_str("   settled");
            if let Some(h) = recorded.and_then(|w| w.health) {
                let h = match h {
                    WaveHealth::Passing => "Passing",
                    WaveHealth::Failing => "Failing",
                    WaveHealth::Unknown => "Unknown",
                };
                line.push_str(&format!(", health: {h}"));
            }
        }
        out.push_str(&line);
        out.push('\n');
        for s in &wave.states {
            let mark = match (s.adopted, s.ready) {
                (true, true) => "✓".to_string(),
                (true, false) => "⚠ regressed".to_string(),
                (false, _) => {
                    let awaiting = target
                        .map(str::to_string)
                        .unwrap_or_else(|| s.pending.clone());
                    if s.pending.is_empty() {
                        format!("… awaiting {awaiting}")
                    } else {
                        format!("… held → awaiting {awaiting}")
                    }
                }
            };
            let (glyph, rest) = mark.split_once(' ').unwrap_or((mark.as_str(), ""));
            out.push_str(&format!("  {glyph} {}", s.key));
            if !rest.is_empty() {
                out.push_str(&format!("  {rest}"));
            }
            out.push('\n');
        }
    }
    Ok(out)
}
