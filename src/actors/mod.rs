//! The actor system (docs/architecture.md, "What runs"): a Supervisor owning the
//! StageSet watch and one StageSetActor per StageSet, a SourceWatcher for the
//! Flux source kinds, an InventoryWatcher for owned StageInventories and a
//! LedgerWatcher for StageLedgers users edit; the FleetActor for
//! FleetRollouts;
//! the LeaseActor (lease.rs) and the certificate actors (cert.rs) beside
//! them. `src/controller.rs` runs them on an actix System.

pub mod cert;
pub mod fleet;
pub mod inventories;
pub mod lease;
pub mod ledgers;
pub mod rollback_store;
pub mod sources;
pub mod stageset;
pub mod supervisor;

use std::sync::Arc;

use actix::prelude::*;

use crate::cache::StageSetCache;
use crate::leader::Leadership;
use crate::reconcile::Env;

/// How to run the delivery actors.
#[derive(Clone, Debug)]
pub struct ActorOptions {
    /// `--concurrent`: reconciles of different StageSets in parallel.
    pub concurrent: usize,
    /// `--watch-namespaces` (empty: the whole cluster).
    pub watch_namespaces: Vec<String>,
    /// `--watch-label-selector`: the StageSets this instance reconciles
    /// (every StageSet still enters the cache).
    pub watch_label_selector: crate::api::selector::LabelFilter,
}

/// Starts the Supervisor and the watchers that wake it, on the current actix
/// System. Returns the StageSet cache the Supervisor fills (the HTTP
/// listeners read it).
pub fn start(env: Arc<Env>, leadership: Arc<Leadership>, options: ActorOptions) -> StageSetCache {
    let client = env.clients.controller();
    let inventory_writes = env.inventory_writes.clone();
    let metrics = env.metrics.clone();
    let (supervisor_env, supervisor_leadership) = (env.clone(), leadership.clone());
    let supervisor = supervisor::Supervisor::new(
        env,
        leadership,
        options.concurrent,
        options.watch_namespaces.clone(),
        options.watch_label_selector.clone(),
    );
    let fleets = fleet::FleetActor::new(
        supervisor_env.clone(),
        supervisor_leadership.clone(),
        options.watch_label_selector.clone(),
    )
    .start();
    let supervisor = supervisor.with_fleets(fleets.recipient());
    let cache = supervisor.cache();
    let addr = supervisor.start();
    inventories::InventoryWatcher::new(
        client.clone(),
        inventory_writes,
        options.watch_namespaces.clone(),
        addr.clone().recipient(),
    )
    .start();
    ledgers::LedgerWatcher::new(
        client.clone(),
        options.watch_namespaces.clone(),
        addr.clone().recipient(),
    )
    .start();
    sources::SourceWatcher::new(client, metrics, options.watch_namespaces, addr.recipient())
        .start();
    cache
}
