//! The FleetActor runs the FleetRollout reconciler (src/reconcile/fleet.rs):
//! it watches FleetRollouts cluster-wide, hears from the Supervisor about
//! every StageSet change, and runs one pass at a time (fleets are few; a pass
//! lists the StageSets once), only while this replica is the leader.
//!
//! When a pass is due: a FleetRollout appears, its spec or annotations change
//! (`reconcile.fluxcd.io/requestedAt` works as for StageSets), a StageSet whose
//! labels its `selector` matches changes (after a short delay that gathers a
//! burst of member changes into one pass), this replica acquires the lease, and
//! the requeue the last pass asked for (30 s, or sooner when a soak ends). A
//! failed pass is retried with the controller-runtime back-off.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};

use crate::actors::stageset::backoff_delay;
use crate::api::FleetRollout;
use crate::api::selector::LabelFilter;
use crate::leader::Leadership;
use crate::metrics::ReconcileResult;
use crate::reconcile::Env;
use crate::reconcile::fleet::{reconcile_fleet, selects};

/// How long a member change waits for more changes before the pass runs.
const GATHER: Duration = Duration::from_millis(200);

/// A StageSet was added, changed or deleted (from the Supervisor's watch).
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct MemberChanged {
    pub labels: BTreeMap<String, String>,
}

pub struct FleetActor {
    env: Arc<Env>,
    leadership: Arc<Leadership>,
    /// `--watch-label-selector`: the FleetRollouts this instance reconciles
    /// (the shard key applies to every kind we reconcile, as in Flux).
    shard: LabelFilter,
    /// Every FleetRollout, from the watch.
    fleets: BTreeMap<String, FleetRollout>,
    /// When each fleet's next pass is due.
    due: BTreeMap<String, Instant>,
    /// The fleet whose pass is running.
    running: Option<String>,
    failures: HashMap<String, u32>,
    timer: Option<SpawnHandle>,
}

impl FleetActor {
    pub fn new(env: Arc<Env>, leadership: Arc<Leadership>, shard: LabelFilter) -> Self {
        FleetActor {
            env,
            leadership,
            shard,
            fleets: BTreeMap::new(),
            due: BTreeMap::new(),
            running: None,
            failures: HashMap::new(),
            timer: None,
        }
    }

    /// Asks for a pass of `name` after `delay` (an earlier request stands).
    fn schedule(&mut self, name: &str, delay: Duration, ctx: &mut Context<Self>) {
        let at = Instant::now() + delay;
        self.due
            .entry(name.to_string())
            .and_modify(|d| *d = (*d).min(at))
            .or_insert(at);
        self.pump(ctx);
    }

    /// Starts the earliest due pass, or sets a timer for it.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if let Some(t) = self.timer.take() {
            ctx.cancel_future(t);
        }
        if self.running.is_some() || !self.leadership.is_leader() {
            return;
        }
        let Some((name, at)) = self
            .due
            .iter()
            .min_by_key(|(_, at)| **at)
            .map(|(n, a)| (n.clone(), *a))
        else {
            return;
        };
        let now = Instant::now();
        if at > now {
            self.timer = Some(ctx.run_later(at - now, |act, ctx| {
                act.timer = None;
                act.pump(ctx);
            }));
            return;
        }
        self.due.remove(&name);
        if !self.fleets.contains_key(&name) {
            self.pump(ctx);
            return;
        }
        self.running = Some(name.clone());
        let env = self.env.clone();
        let others: Vec<FleetRollout> = self.fleets.values().cloned().collect();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            // The newest copy: the watch may not have our last status write
            // yet, and soak ends are carried from it.
            let api: Api<FleetRollout> = Api::all(env.clients.controller());
            let fleet = match crate::reconcile::error::retrying(|| api.get_opt(&name)).await {
                Ok(Some(f)) => f,
                Ok(None) => return (name, None, started),
                Err(e) => {
                    let err = crate::reconcile::error::Error::api("reading the FleetRollout", &e);
                    return (name, Some(Err(err)), started);
                }
            };
            let outcome = reconcile_fleet(&env, &fleet, &others).await;
            (name, Some(outcome), started)
        });
        let metrics = self.env.metrics.clone();
        ctx.spawn(actix::fut::wrap_future::<_, Self>(task).map(
            move |joined, act, ctx| {
                let (name, result) = match joined {
                    Ok((name, result, started)) => {
                        let seconds = started.elapsed().as_secs_f64();
                        let counted = match &result {
                            Some(Ok(o)) if o.requeue.is_some() => ReconcileResult::RequeueAfter,
                            Some(Ok(_)) | None => ReconcileResult::Success,
                            Some(Err(_)) => ReconcileResult::Error,
                        };
                        metrics.fleet_reconciled(counted, seconds);
                        (name, result)
                    }
                    Err(e) => {
                        // A panic in the pass: counted, retried with back-off.
                        metrics.fleet_reconciled(ReconcileResult::Error, 0.0);
                        let name = act.running.clone().unwrap_or_default();
                        tracing::error!(fleetrollout = %name, error = %e, "the FleetRollout pass panicked");
                        (
                            name,
                            Some(Err(crate::reconcile::error::Error::Transient(
                                "the pass panicked".into(),
                            ))),
                        )
                    }
                };
                act.running = None;
                match result {
                    None => {}
                    Some(Ok(outcome)) => {
                        act.failures.remove(&name);
                        tracing::info!(
                            fleetrollout = %name,
                            reason = outcome.reason.as_str(),
                            message = %outcome.message,
                            "FleetRollout reconciled"
                        );
                        if let Some(after) = outcome.requeue {
                            act.schedule(&name, after, ctx);
                        }
                    }
                    Some(Err(e)) => {
                        let failures = act.failures.entry(name.clone()).or_default();
                        *failures += 1;
                        let delay = backoff_delay(*failures);
                        tracing::warn!(fleetrollout = %name, error = %e, retry_in = ?delay, "FleetRollout pass failed");
                        act.schedule(&name, delay, ctx);
                    }
                }
                act.pump(ctx);
            },
        ));
    }
}

impl Actor for FleetActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let api: Api<FleetRollout> = Api::all(self.env.clients.controller());
        ctx.add_stream(watcher(api, watcher::Config::default()).default_backoff());
        let changes = futures::stream::unfold(self.leadership.subscribe(), |mut rx| async move {
            rx.changed().await.ok()?;
            let leader = *rx.borrow_and_update();
            Some((LeadershipChanged(leader), rx))
        });
        ctx.add_stream(changes);
    }
}

/// This replica acquired (or lost) the lease.
#[derive(Message)]
#[rtype(result = "()")]
struct LeadershipChanged(bool);

impl StreamHandler<LeadershipChanged> for FleetActor {
    fn handle(&mut self, msg: LeadershipChanged, ctx: &mut Context<Self>) {
        if msg.0 {
            let names: Vec<String> = self.fleets.keys().cloned().collect();
            for name in names {
                self.schedule(&name, Duration::ZERO, ctx);
            }
        }
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

/// Whether a FleetRollout's new state asks for a pass: new, or its spec or
/// annotations changed. Status writes (ours) change neither.
fn wants_pass(before: Option<&FleetRollout>, now: &FleetRollout) -> bool {
    before.is_none_or(|b| {
        b.metadata.generation != now.metadata.generation || b.annotations() != now.annotations()
    })
}

impl StreamHandler<Result<watcher::Event<FleetRollout>, watcher::Error>> for FleetActor {
    fn handle(
        &mut self,
        item: Result<watcher::Event<FleetRollout>, watcher::Error>,
        ctx: &mut Context<Self>,
    ) {
        match item {
            Ok(watcher::Event::Apply(f)) | Ok(watcher::Event::InitApply(f)) => {
                let name = f.name_any();
                if !self.shard.matches(f.labels()) {
                    // Another shard's (or relabelled away from this one).
                    self.fleets.remove(&name);
                    self.due.remove(&name);
                    return;
                }
                let wake = wants_pass(self.fleets.get(&name), &f);
                self.fleets.insert(name.clone(), f);
                if wake {
                    self.schedule(&name, Duration::ZERO, ctx);
                }
            }
            Ok(watcher::Event::Delete(f)) => {
                let name = f.name_any();
                self.fleets.remove(&name);
                self.due.remove(&name);
                self.failures.remove(&name);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "FleetRollout watch failed; retrying"),
        }
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        tracing::error!("the FleetRollout watch ended");
    }
}

impl Handler<MemberChanged> for FleetActor {
    type Result = ();

    fn handle(&mut self, msg: MemberChanged, ctx: &mut Context<Self>) {
        let woken: Vec<String> = self
            .fleets
            .iter()
            .filter(|(_, f)| selects(&f.spec.selector, &msg.labels))
            .map(|(n, _)| n.clone())
            .collect();
        for name in woken {
            self.schedule(&name, GATHER, ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fleet(generation: i64, annotations: serde_json::Value) -> FleetRollout {
        serde_json::from_value(json!({
            "apiVersion": "stages.metio.wtf/v1", "kind": "FleetRollout",
            "metadata": {"name": "f", "generation": generation, "annotations": annotations},
            "spec": {"selector": {}, "waves": [{"name": "all", "selector": {}}]}
        }))
        .unwrap()
    }

    #[test]
    fn spec_and_annotation_changes_ask_for_a_pass() {
        let one = fleet(1, json!({}));
        assert!(wants_pass(None, &one));
        assert!(!wants_pass(Some(&one), &fleet(1, json!({}))));
        assert!(wants_pass(Some(&one), &fleet(2, json!({}))));
        assert!(wants_pass(
            Some(&one),
            &fleet(1, json!({"reconcile.fluxcd.io/requestedAt": "now"}))
        ));
    }
}
