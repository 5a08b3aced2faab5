//! FleetRollout (delivery.md §5.7, api.md §5): approves one version across
//! many StageSets wave by wave, stamping `stages.metio.wtf/approved-version`
//! on the members of every wave up to the first one that has not passed, and
//! halting (optionally stamping `stages.metio.wtf/rollback-to`) when a wave
//! that had settled regresses or its gate fails.
//!
//! The decisions are pure functions over the listed StageSets ([`members`],
//! [`assess`], [`walk`], [`stamps`]); [`reconcile_fleet`] does the reads and
//! writes around them with the controller's identity. The FleetActor
//! (src/actors/fleet.rs) decides when a pass runs.
//!
//! A change of the FleetRollout's spec (a new generation: a new target, new
//! waves) starts the waves afresh: soak ends and gate health of the previous
//! generation are not carried over, so raising `targetVersion` does not read
//! as every earlier wave having regressed (docs/design/fleet-rollout.md).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::api::reasons::{CONDITION_READY, FleetReason};
use crate::api::{
    Condition, ConditionStatus, FleetPhase, FleetRollout, FleetRolloutStatus, FleetWaveGate,
    FleetWaveStatus, LabelSelector, OnRegression, StageSet, WaveHealth, keys,
};
use crate::validate::selector::requirements;

use super::Env;
use super::error::{Error, describe, retrying};

/// How often a FleetRollout is looked at without a trigger.
pub const REQUEUE: Duration = Duration::from_secs(30);

/// Members listed in a message at most.
const LISTED: usize = 5;

/// Whether `labels` satisfy `selector` (already checked by [`requirements`]:
/// an unknown operator matches nothing).
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let exact = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    exact
        && selector.match_expressions.iter().flatten().all(|e| {
            let value = labels.get(&e.key);
            let values = e.values.as_deref().unwrap_or_default();
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => !value.is_some_and(|v| values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

fn key(ss: &StageSet) -> String {
    format!("{}/{}", ss.namespace().unwrap_or_default(), ss.name_any())
}

/// The StageSets `fleet` governs: its `selector`, in namespaces its
/// `namespaceSelector` picks (`namespaces`: name → labels). Err is the
/// `InvalidSelector` message. Sorted by namespace/name.
pub fn members<'a>(
    fleet: &FleetRollout,
    stagesets: &'a [StageSet],
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<Vec<&'a StageSet>, String> {
    requirements(&fleet.spec.selector).map_err(|e| format!("spec.selector: {e}"))?;
    if let Some(ns) = &fleet.spec.namespace_selector {
        requirements(ns).map_err(|e| format!("spec.namespaceSelector: {e}"))?;
    }
    let empty = BTreeMap::new();
    let mut out: Vec<&StageSet> = stagesets
        .iter()
        .filter(|ss| ss.metadata.deletion_timestamp.is_none())
        .filter(|ss| selects(&fleet.spec.selector, ss.labels()))
        .filter(|ss| {
            fleet.spec.namespace_selector.as_ref().is_none_or(|sel| {
                let ns = ss.namespace().unwrap_or_default();
                selects(sel, namespaces.get(&ns).unwrap_or(&empty))
            })
        })
        .collect();
    out.sort_by_key(|ss| key(ss));
    Ok(out)
}

/// `MembersContested`: members of `fleet` another FleetRollout also selects,
/// as `ns/name (also governed by FleetRollout <other>)`. Another rollout
/// whose own selectors do not parse governs nothing.
pub fn contested(
    fleet: &FleetRollout,
    mine: &[&StageSet],
    others: &[FleetRollout],
    stagesets: &[StageSet],
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
) -> Vec<String> {
    let mine: BTreeSet<String> = mine.iter().map(|ss| key(ss)).collect();
    let mut found = Vec::new();
    for other in others {
        if other.name_any() == fleet.name_any() || other.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Ok(theirs) = members(other, stagesets, namespaces) else {
            continue;
        };
        for ss in theirs {
            let k = key(ss);
            if mine.contains(&k) {
                found.push(format!(
                    "{k} (also governed by FleetRollout {})",
                    other.name_any()
                ));
            }
        }
    }
    found.sort();
    found
}

/// Where a member stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberState {
    pub key: String,
    /// It adopted the target: `status.version == targetVersion` (pinned) or
    /// no version waits (derived).
    pub adopted: bool,
    /// Ready=True for its current generation, no revisions held.
    pub ready: bool,
    /// `status.pendingVersion` (empty: none).
    pub pending: String,
}

/// A member's state against the fleet's target.
pub fn member_state(ss: &StageSet, target: Option<&str>) -> MemberState {
    let status = ss.status.as_ref();
    let pending = status
        .and_then(|s| s.pending_version.clone())
        .unwrap_or_default();
    let adopted = match target {
        Some(t) => status.and_then(|s| s.version.as_deref()) == Some(t),
        None => pending.is_empty(),
    };
    let ready = status.is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == CONDITION_READY && c.status == ConditionStatus::True)
            && s.observed_generation == ss.metadata.generation
            && s.pending_update
                .as_ref()
                .is_none_or(|p| p.revisions.is_empty())
    });
    MemberState {
        key: key(ss),
        adopted,
        ready,
        pending,
    }
}

/// One wave this pass: its status and its members.
#[derive(Clone, Debug)]
pub struct Wave<'a> {
    pub status: FleetWaveStatus,
    pub members: Vec<&'a StageSet>,
    pub states: Vec<MemberState>,
    /// Whether `status.soakUntil` was set before this pass.
    pub had_soak: bool,
}

/// Per-wave counts, soak and carried health (§5.7 step 4). `previous` is the
/// status of this generation (None: a new generation, nothing carried).
/// Err: the first wave selector that does not parse.
pub fn assess<'a>(
    fleet: &FleetRollout,
    members: &[&'a StageSet],
    previous: Option<&FleetRolloutStatus>,
    now: Timestamp,
) -> Result<Vec<Wave<'a>>, String> {
    let target = fleet.spec.target_version.as_deref();
    let mut waves = Vec::new();
    for (i, spec) in fleet.spec.waves.iter().enumerate() {
        requirements(&spec.selector)
            .map_err(|e| format!("spec.waves[{i}].selector ({}): {e}", spec.name))?;
        let mine: Vec<&StageSet> = members
            .iter()
            .copied()
            .filter(|ss| selects(&spec.selector, ss.labels()))
            .collect();
        let states: Vec<MemberState> = mine.iter().map(|ss| member_state(ss, target)).collect();
        let at_target = states.iter().filter(|s| s.adopted).count();
        let ready = states.iter().filter(|s| s.ready).count();
        let settled = states.iter().all(|s| s.adopted && s.ready);
        let before = previous.and_then(|p| p.waves.iter().find(|w| w.name == spec.name));
        let had_soak = before.is_some_and(|w| w.soak_until.is_some());
        let soak_until = match before.and_then(|w| w.soak_until.clone()) {
            Some(t) => Some(t),
            None if settled => {
                let soak = soak_of(spec).map_err(|e| format!("spec.waves[{i}].soak: {e}"))?;
                let soak =
                    jiff::SignedDuration::try_from(soak).unwrap_or(jiff::SignedDuration::MAX);
                Some(Time(now.checked_add(soak).unwrap_or(Timestamp::MAX)))
            }
            None => None,
        };
        waves.push(Wave {
            status: FleetWaveStatus {
                name: spec.name.clone(),
                total: Some(count(mine.len())),
                at_target: Some(count(at_target)),
                ready: Some(count(ready)),
                settled: Some(settled),
                soak_until,
                health: before.and_then(|w| w.health),
            },
            members: mine,
            states,
            had_soak,
        });
    }
    Ok(waves)
}

/// A wave's soak (unset: none). Err for text that is not a Go duration or
/// is negative.
pub fn soak_of(wave: &crate::api::FleetWave) -> Result<Duration, String> {
    let Some(text) = &wave.soak else {
        return Ok(Duration::ZERO);
    };
    let parsed = text.parse().map_err(|e| e.to_string())?;
    parsed
        .to_std()
        .ok_or_else(|| format!("{:?} is negative", text.as_str()))
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Where the waves stand after the walk (§5.7 step 5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Every wave passed.
    Completed,
    /// Wave `current` has not passed yet; `why` says what it waits for.
    Open { current: usize, why: String },
    /// Wave `wave` regressed or failed its gate.
    Halted { wave: usize, why: String },
}

impl Progress {
    /// Waves whose members are approved: every wave up to the first one not
    /// passed (all of them when completed).
    pub fn approved_waves(&self, waves: usize) -> usize {
        match self {
            Progress::Completed => waves,
            Progress::Open { current, .. } => current + 1,
            Progress::Halted { wave, .. } => wave + 1,
        }
    }
}

fn listed(keys: impl Iterator<Item = String>) -> String {
    let all: Vec<String> = keys.collect();
    let mut shown = all
        .iter()
        .take(LISTED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if all.len() > LISTED {
        shown.push_str(&format!(" and {} more", all.len() - LISTED));
    }
    shown
}

/// What an unsettled wave waits for, e.g. `1/3 at 1.2.0, 2/3 ready`.
fn waiting(wave: &Wave<'_>, target: Option<&str>) -> String {
    let total = wave.states.len();
    let adopted = wave.states.iter().filter(|s| s.adopted).count();
    let ready = wave.states.iter().filter(|s| s.ready).count();
    let at = match target {
        Some(t) => format!("at {t}"),
        None => "adopted".to_string(),
    };
    format!("{adopted}/{total} {at}, {ready}/{total} ready")
}

/// Walks the waves in order (§5.7 step 5): the first wave that had soaked
/// but is no longer settled halts; a settled wave whose soak ended passes
/// when it has no gate or its gate passes; a failing gate halts; a gate that
/// cannot be read holds. `readings` holds the gate readings taken so far
/// (by wave index); `Err(i)` asks for wave `i`'s gate to be read first (the
/// caller reads it and walks again, so only gates of reached waves are
/// read). Sets each evaluated wave's `health`.
pub fn walk(
    fleet: &FleetRollout,
    waves: &mut [Wave<'_>],
    now: Timestamp,
    readings: &BTreeMap<usize, GateReading>,
) -> Result<Progress, usize> {
    let target = fleet.spec.target_version.as_deref();
    for (i, spec) in fleet.spec.waves.iter().enumerate() {
        let wave = &mut waves[i];
        let settled = wave.status.settled == Some(true);
        if wave.had_soak && !settled {
            let behind = wave
                .states
                .iter()
                .filter(|s| !(s.adopted && s.ready))
                .map(|s| {
                    let why = match (s.adopted, s.ready) {
                        (false, false) => "not adopted, not Ready",
                        (false, true) => "not adopted",
                        _ => "not Ready",
                    };
                    format!("{} ({why})", s.key)
                });
            return Ok(Progress::Halted {
                wave: i,
                why: format!("wave {:?} regressed: {}", spec.name, listed(behind)),
            });
        }
        if !settled {
            return Ok(Progress::Open {
                current: i,
                why: format!(
                    "wave {:?} is rolling out: {}",
                    spec.name,
                    waiting(wave, target)
                ),
            });
        }
        if let Some(until) = wave.status.soak_until.as_ref().filter(|t| t.0 > now) {
            return Ok(Progress::Open {
                current: i,
                why: format!("wave {:?} settled; soaking until {}", spec.name, until.0),
            });
        }
        if spec.gate.is_none() {
            continue;
        }
        match readings.get(&i) {
            None => return Err(i),
            Some(GateReading::Passing) => wave.status.health = Some(WaveHealth::Passing),
            Some(GateReading::Failing(why)) => {
                wave.status.health = Some(WaveHealth::Failing);
                return Ok(Progress::Halted {
                    wave: i,
                    why: format!("wave {:?} gate failed: {why}", spec.name),
                });
            }
            Some(GateReading::Unknown(why)) => {
                wave.status.health = Some(WaveHealth::Unknown);
                return Ok(Progress::Open {
                    current: i,
                    why: format!("wave {:?} gate cannot be read: {why}", spec.name),
                });
            }
        }
    }
    Ok(Progress::Completed)
}

/// One reading of a wave gate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateReading {
    Passing,
    /// The value is outside the threshold.
    Failing(String),
    /// The source or the threshold could not be read.
    Unknown(String),
}

/// Reads a wave gate with the controller's identity (no credentials).
pub async fn read_gate(env: &Env, gate: &FleetWaveGate) -> GateReading {
    let value = match super::metricsource::read_anonymous(env, &gate.source).await {
        Ok(v) => v,
        Err(e) => return GateReading::Unknown(e),
    };
    match super::promotion::within(value, &gate.threshold) {
        Ok(true) => GateReading::Passing,
        Ok(false) => {
            let bounds = [("min", &gate.threshold.min), ("max", &gate.threshold.max)]
                .iter()
                .filter_map(|(n, b)| b.as_ref().map(|b| format!("{n} {b}")))
                .collect::<Vec<_>>()
                .join(", ");
            GateReading::Failing(format!("value {value} is outside the threshold ({bounds})"))
        }
        Err(e) => GateReading::Unknown(e),
    }
}

/// One annotation to stamp on a member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub namespace: String,
    pub name: String,
    pub annotation: &'static str,
    pub value: String,
}

/// The approvals (§5.7 step 6) and, on a halt with `onRegression: Rollback`,
/// the `rollback-to` stamps (step 8) that differ from what the members carry.
/// A member of several approved waves is stamped once.
pub fn stamps(fleet: &FleetRollout, waves: &[Wave<'_>], progress: &Progress) -> Vec<Stamp> {
    let target = fleet.spec.target_version.as_deref();
    let mut out: BTreeMap<(String, String, &'static str), String> = BTreeMap::new();
    let want =
        |ss: &StageSet, annotation: &'static str, value: String, out: &mut BTreeMap<_, _>| {
            if ss.annotations().get(annotation) != Some(&value) {
                out.insert(
                    (
                        ss.namespace().unwrap_or_default(),
                        ss.name_any(),
                        annotation,
                    ),
                    value,
                );
            }
        };
    for wave in waves.iter().take(progress.approved_waves(waves.len())) {
        for (ss, state) in wave.members.iter().zip(&wave.states) {
            let value = match target {
                Some(t) => t.to_string(),
                None if state.pending.is_empty() => continue,
                None => state.pending.clone(),
            };
            want(ss, keys::ANNOTATION_APPROVED_VERSION, value, &mut out);
        }
    }
    if let Some((wave, previous)) = rollback(fleet, progress) {
        // The rollback is the fleet's decision, so the fleet approves it too:
        // members pace every change (`approvalMode: Always`), and a rollback
        // held for approval would never run (docs/design/fleet-rollout.md).
        for ss in &waves[wave].members {
            want(
                ss,
                keys::ANNOTATION_ROLLBACK_TO,
                previous.to_string(),
                &mut out,
            );
            want(
                ss,
                keys::ANNOTATION_APPROVED_VERSION,
                previous.to_string(),
                &mut out,
            );
        }
    }
    out.into_iter()
        .map(|((namespace, name, annotation), value)| Stamp {
            namespace,
            name,
            annotation,
            value,
        })
        .collect()
}

/// The halted wave and the version it goes back to, when the rollout is
/// halted and `onRegression: Rollback` names a `previousVersion`.
pub fn rollback<'a>(fleet: &'a FleetRollout, progress: &Progress) -> Option<(usize, &'a str)> {
    match progress {
        Progress::Halted { wave, .. }
            if fleet.spec.on_regression == Some(OnRegression::Rollback) =>
        {
            let previous = fleet.spec.previous_version.as_deref()?;
            (!previous.is_empty()).then_some((*wave, previous))
        }
        _ => None,
    }
}

/// When to look again while waves are open: the remaining soak of the first
/// wave (spec order) whose soak ends within [`REQUEUE`], else [`REQUEUE`].
pub fn requeue_after(waves: &[Wave<'_>], now: Timestamp) -> Duration {
    waves
        .iter()
        .filter_map(|w| w.status.soak_until.as_ref())
        .filter_map(|t| Duration::try_from(t.0.duration_since(now)).ok())
        .find(|left| !left.is_zero() && *left <= REQUEUE)
        .unwrap_or(REQUEUE)
}

/// The outcome of one pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetOutcome {
    pub reason: FleetReason,
    pub message: String,
    /// None: only a change of the FleetRollout helps.
    pub requeue: Option<Duration>,
}

/// One pass over a FleetRollout (api.md §5.3): lists the StageSets (and
/// namespaces, when a namespaceSelector needs them) cluster-wide with the
/// controller's identity, decides, stamps, writes the status and, on a new
/// halt, records a Warning event.
pub async fn reconcile_fleet(
    env: &Env,
    fleet: &FleetRollout,
    others: &[FleetRollout],
) -> Result<FleetOutcome, Error> {
    let client = env.clients.controller();
    let now = env.clock.now();
    let name = fleet.name_any();
    let all_stagesets = Api::<StageSet>::all(client.clone());
    let everything = ListParams::default();
    let stagesets = retrying(|| all_stagesets.list(&everything))
        .await
        .map_err(|e| Error::api("listing StageSets", &e))?
        .items;
    let need_namespaces = std::iter::once(fleet)
        .chain(others)
        .any(|f| f.spec.namespace_selector.is_some());
    let namespaces: BTreeMap<String, BTreeMap<String, String>> = if need_namespaces {
        let all_namespaces = Api::<Namespace>::all(client.clone());
        retrying(|| all_namespaces.list(&everything))
            .await
            .map_err(|e| Error::api("listing namespaces", &e))?
            .items
            .into_iter()
            .map(|n| (n.name_any(), n.labels().clone()))
            .collect()
    } else {
        BTreeMap::new()
    };
    let generation = fleet.metadata.generation;
    let previous = fleet.status.clone().unwrap_or_default();
    let same_generation =
        previous.observed_generation.is_some() && previous.observed_generation == generation;
    let mut status = FleetRolloutStatus {
        observed_generation: generation,
        phase: previous.phase,
        current_wave: previous.current_wave.clone(),
        waves: if same_generation {
            previous.waves.clone()
        } else {
            Vec::new()
        },
        conditions: previous.conditions.clone(),
    };
    let outcome = decide(
        env,
        fleet,
        others,
        &stagesets,
        &namespaces,
        same_generation.then_some(&previous),
        now,
        &mut status,
    )
    .await?;
    if !matches!(
        outcome.reason,
        FleetReason::Progressing | FleetReason::Completed | FleetReason::Halted
    ) {
        // Stopped before the waves were walked: nothing progresses until
        // the cause is fixed, so no phase of the walk is claimed.
        status.phase = Some(FleetPhase::Pending);
        status.current_wave = None;
    }
    let changed = set_ready(&mut status, &outcome, generation, now);
    write_status(&client, fleet, &status).await?;
    if changed && outcome.reason == FleetReason::Halted {
        let note = outcome.message.clone();
        if let Err(e) = super::status::record_event(
            &client,
            &super::status::EventRecord {
                namespace: "default",
                name_prefix: &name,
                reporter: keys::FLEET_EVENT_REPORTER,
                instance: &env.instance,
                warning: true,
                reason: FleetReason::Halted.as_str(),
                note: &note,
                time: now,
                regarding: json!({
                    "apiVersion": crate::api::API_VERSION,
                    "kind": "FleetRollout",
                    "name": name,
                    "uid": fleet.meta().uid.clone().unwrap_or_default(),
                    "resourceVersion": fleet.meta().resource_version.clone().unwrap_or_default(),
                }),
            },
        )
        .await
        {
            tracing::warn!(fleetrollout = %name, error = %e, "recording the Halted event failed");
        }
    }
    Ok(outcome)
}

#[allow(clippy::too_many_arguments)]
async fn decide(
    env: &Env,
    fleet: &FleetRollout,
    others: &[FleetRollout],
    stagesets: &[StageSet],
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
    previous: Option<&FleetRolloutStatus>,
    now: Timestamp,
    status: &mut FleetRolloutStatus,
) -> Result<FleetOutcome, Error> {
    let stop = |reason, message: String, requeue| FleetOutcome {
        reason,
        message,
        requeue,
    };
    let mine = match members(fleet, stagesets, namespaces) {
        Ok(m) => m,
        Err(e) => return Ok(stop(FleetReason::InvalidSelector, e, None)),
    };
    let contested = contested(fleet, &mine, others, stagesets, namespaces);
    if !contested.is_empty() {
        return Ok(stop(
            FleetReason::MembersContested,
            format!(
                "members selected by more than one FleetRollout; nothing is approved until one lets go: {}",
                listed(contested.into_iter())
            ),
            Some(REQUEUE),
        ));
    }
    if let Some((i, w)) = fleet.spec.waves.iter().enumerate().find(|(_, w)| {
        w.gate.as_ref().is_some_and(|g| {
            g.source
                .prometheus
                .as_ref()
                .is_some_and(|p| p.secret_ref.is_some())
                || g.source
                    .webhook
                    .as_ref()
                    .is_some_and(|h| h.secret_ref.is_some())
        })
    }) {
        return Ok(stop(
            FleetReason::GateUnsupported,
            format!(
                "spec.waves[{i}].gate ({}) names a secretRef; fleet gates are read with the controller's identity and carry no credentials",
                w.name
            ),
            None,
        ));
    }
    if let Some(e) = fleet.spec.waves.iter().enumerate().find_map(|(i, w)| {
        soak_of(w)
            .err()
            .map(|e| format!("spec.waves[{i}].soak ({}): {e}", w.name))
    }) {
        return Ok(stop(FleetReason::InvalidSpec, e, None));
    }
    let mut waves = match assess(fleet, &mine, previous, now) {
        Ok(w) => w,
        Err(e) => return Ok(stop(FleetReason::InvalidSelector, e, None)),
    };
    let assigned: BTreeSet<String> = waves
        .iter()
        .flat_map(|w| w.states.iter().map(|s| s.key.clone()))
        .collect();
    let unassigned: Vec<String> = mine
        .iter()
        .map(|ss| key(ss))
        .filter(|k| !assigned.contains(k))
        .collect();
    if !unassigned.is_empty() {
        return Ok(stop(
            FleetReason::MembersUnassigned,
            format!(
                "{} member(s) match no wave: {}",
                unassigned.len(),
                listed(unassigned.into_iter())
            ),
            Some(REQUEUE),
        ));
    }
    let mut readings = BTreeMap::new();
    let progress = loop {
        match walk(fleet, &mut waves, now, &readings) {
            Ok(p) => break p,
            Err(i) => {
                let gate = fleet.spec.waves[i]
                    .gate
                    .as_ref()
                    .expect("walk asks only for gates");
                readings.insert(i, read_gate(env, gate).await);
            }
        }
    };
    for stamp in stamps(fleet, &waves, &progress) {
        let api = Api::<StageSet>::namespaced(env.clients.controller(), &stamp.namespace);
        let patch = json!({"metadata": {"annotations": {stamp.annotation: stamp.value}}});
        let params = PatchParams::default();
        let merge = Patch::Merge(&patch);
        match retrying(|| api.patch(&stamp.name, &params, &merge)).await {
            Ok(_) => tracing::info!(
                fleetrollout = %fleet.name_any(),
                stageset = %format!("{}/{}", stamp.namespace, stamp.name),
                annotation = stamp.annotation,
                value = %stamp.value,
                "stamped"
            ),
            // Gone meanwhile: the next pass no longer lists it.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(Error::api(
                    &format!(
                        "stamping {} on StageSet {}/{}",
                        stamp.annotation, stamp.namespace, stamp.name
                    ),
                    &e,
                ));
            }
        }
    }
    status.waves = waves.iter().map(|w| w.status.clone()).collect();
    let names = |i: usize| fleet.spec.waves[i].name.clone();
    Ok(match progress {
        Progress::Completed => {
            status.phase = Some(FleetPhase::Completed);
            status.current_wave = None;
            let at = fleet
                .spec
                .target_version
                .as_deref()
                .map(|t| format!(" at {t}"))
                .unwrap_or_default();
            stop(
                FleetReason::Completed,
                format!("all {} wave(s) passed{at}", fleet.spec.waves.len()),
                Some(REQUEUE),
            )
        }
        Progress::Open { current, why } => {
            status.phase = Some(FleetPhase::InProgress);
            status.current_wave = Some(names(current));
            stop(
                FleetReason::Progressing,
                why,
                Some(requeue_after(&waves, now)),
            )
        }
        Progress::Halted { wave, why } => {
            status.phase = Some(FleetPhase::Halted);
            status.current_wave = Some(names(wave));
            let rollback = match rollback(
                fleet,
                &Progress::Halted {
                    wave,
                    why: String::new(),
                },
            ) {
                Some((_, v)) => format!(
                    "; the wave's members are asked to roll back to {v} (stages.metio.wtf/rollback-to)"
                ),
                None => String::new(),
            };
            stop(
                FleetReason::Halted,
                format!("{why}{rollback}"),
                Some(REQUEUE),
            )
        }
    })
}

/// Sets the Ready condition, keeping `lastTransitionTime` while its status
/// holds. Returns whether (status, reason) changed.
fn set_ready(
    status: &mut FleetRolloutStatus,
    outcome: &FleetOutcome,
    generation: Option<i64>,
    now: Timestamp,
) -> bool {
    let value = if matches!(
        outcome.reason,
        FleetReason::Progressing | FleetReason::Completed
    ) {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    };
    let previous = status
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_READY)
        .cloned();
    let changed = previous
        .as_ref()
        .is_none_or(|p| p.status != value || p.reason != outcome.reason.as_str());
    let since = match previous {
        Some(p) if p.status == value => p.last_transition_time,
        _ => Time(now),
    };
    status.conditions.retain(|c| c.type_ != CONDITION_READY);
    status.conditions.push(Condition {
        type_: CONDITION_READY.to_string(),
        status: value,
        observed_generation: generation,
        last_transition_time: since,
        reason: outcome.reason.as_str().to_string(),
        message: outcome.message.clone(),
    });
    changed
}

async fn write_status(
    client: &kube::Client,
    fleet: &FleetRollout,
    status: &FleetRolloutStatus,
) -> Result<(), Error> {
    let api: Api<FleetRollout> = Api::all(client.clone());
    let name = fleet.name_any();
    let body = json!({
        "apiVersion": crate::api::API_VERSION,
        "kind": "FleetRollout",
        "metadata": {"name": name},
        "status": status,
    });
    let params = PatchParams::apply(keys::FIELD_MANAGER).force();
    let apply = Patch::Apply(&body);
    retrying(|| api.patch_status(&name, &params, &apply))
        .await
        .map(|_| ())
        .map_err(|e| {
            Error::Transient(format!(
                "writing the status of FleetRollout {name}: {}",
                describe(&e)
            ))
        })
}

#[cfg(test)]
mod tests;
