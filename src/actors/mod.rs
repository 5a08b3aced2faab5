//! The actor system (ARCHITECTURE.md "Actors"): a Supervisor owning the
//! StageSet watch and one StageSetActor per StageSet, and a SourceWatcher for
//! the Flux source kinds. [`spawn`] runs it on its own thread with an actix
//! System on a multi-threaded Tokio runtime, so reconciles run in parallel.

pub mod cert;
pub mod inventories;
pub mod lease;
pub mod sources;
pub mod stageset;
pub mod supervisor;

use std::sync::Arc;

use actix::prelude::*;

use crate::cache::StageSetCache;
use crate::metrics::Metrics;
use crate::reconcile::Env;

/// How to run the controller's actors.
#[derive(Clone, Debug)]
pub struct ControllerOptions {
    /// `--concurrent`: reconciles of different StageSets in parallel.
    pub concurrent: usize,
    /// `--watch-namespaces` (empty: the whole cluster).
    pub watch_namespaces: Vec<String>,
    /// Worker threads of the runtime.
    pub worker_threads: usize,
    /// The HTTP listeners.
    pub servers: crate::http::ServerOptions,
    /// Runs on the controller thread right after `make_env`, before the
    /// actors and listeners start; an error aborts the start.
    pub on_start: Option<StartHook>,
}

/// Start-up work that needs the environment (e.g. provisioning the webhook
/// certificate before the listener answers), see [`ControllerOptions::on_start`].
#[derive(Clone)]
pub struct StartHook(pub Arc<StartFn>);

/// The function behind a [`StartHook`].
pub type StartFn =
    dyn Fn(Arc<Env>) -> futures::future::LocalBoxFuture<'static, Result<(), String>> + Send + Sync;

impl StartHook {
    pub fn new<F>(f: F) -> StartHook
    where
        F: Fn(Arc<Env>) -> futures::future::LocalBoxFuture<'static, Result<(), String>>
            + Send
            + Sync
            + 'static,
    {
        StartHook(Arc::new(f))
    }
}

impl std::fmt::Debug for StartHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StartHook")
    }
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            concurrent: 4,
            watch_namespaces: Vec::new(),
            worker_threads: 2,
            servers: crate::http::ServerOptions::default(),
            on_start: None,
        }
    }
}

/// A running controller; dropping it stops the actors.
pub struct ControllerHandle {
    system: actix::System,
    store: StageSetCache,
    metrics: Arc<Metrics>,
    bound: crate::http::Bound,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ControllerHandle {
    /// The controller's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The addresses the HTTP listeners bound.
    pub fn bound(&self) -> &crate::http::Bound {
        &self.bound
    }

    /// The StageSet cache (reflector stores), for the HTTP servers.
    pub fn store(&self) -> StageSetCache {
        self.store.clone()
    }

    /// Stops the actors and waits for the controller thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.system.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Waits until the controller stops (it only stops when asked to).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ControllerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts the Supervisor and SourceWatcher on a dedicated thread. `make_env`
/// runs on that thread's runtime, so the Kubernetes clients it builds are bound
/// to the runtime that drives them.
pub fn spawn<F>(make_env: F, options: ControllerOptions) -> std::io::Result<ControllerHandle>
where
    F: FnOnce() -> Result<Env, String> + Send + 'static,
{
    type Started = (
        actix::System,
        StageSetCache,
        Arc<Metrics>,
        crate::http::Bound,
    );
    let (tx, rx) = std::sync::mpsc::channel::<Result<Started, String>>();
    let threads = options.worker_threads.max(1);
    let thread = std::thread::Builder::new()
        .name("stageset-controller".into())
        .spawn(move || {
            let system = actix::System::with_tokio_rt(move || {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads)
                    .thread_name("reconcile")
                    .enable_all()
                    .build()
                    .expect("the controller runtime starts")
            });
            let started = system.block_on(async move {
                let env = match make_env() {
                    Ok(env) => Arc::new(env),
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return false;
                    }
                };
                if let Some(hook) = &options.on_start
                    && let Err(e) = (hook.0)(env.clone()).await
                {
                    let _ = tx.send(Err(e));
                    return false;
                }
                let client = env.clients.controller();
                let metrics = env.metrics.clone();
                let inventory_writes = env.inventory_writes.clone();
                let supervisor = supervisor::Supervisor::new(
                    env,
                    options.concurrent,
                    options.watch_namespaces.clone(),
                );
                let store = supervisor.cache();
                let addr = supervisor.start();
                inventories::InventoryWatcher::new(
                    client.clone(),
                    inventory_writes,
                    options.watch_namespaces.clone(),
                    addr.clone(),
                )
                .start();
                sources::SourceWatcher::new(client, options.watch_namespaces, addr).start();
                let servers = match crate::http::start(
                    &options.servers,
                    crate::http::State {
                        cache: store.clone(),
                        metrics: metrics.clone(),
                    },
                ) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return false;
                    }
                };
                let bound = servers.bound.clone();
                let _ = tx.send(Ok((actix::System::current(), store, metrics, bound)));
                true
            });
            if started {
                let _ = system.run();
            }
        })?;
    let (system, store, metrics, bound) = rx
        .recv()
        .map_err(|_| std::io::Error::other("the controller thread stopped during start-up"))?
        .map_err(std::io::Error::other)?;
    Ok(ControllerHandle {
        system,
        store,
        metrics,
        bound,
        thread: Some(thread),
    })
}
