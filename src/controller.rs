//! The wiring (docs/architecture.md, "What runs"): from a validated [`Config`] to a
//! running controller. Clients, the pipeline's environment, the certificate
//! and lease actors, the delivery actors and the HTTP listeners are started
//! here, in one place, on one actix System. Shared by the binary, the `dev`
//! command and the integration tests, so all three run the same code.

use std::sync::Arc;

use crate::actors::cert::CertPlan;
use crate::actors::lease::LeaderElection;
use crate::actors::rollback_store::StorePlan;
use crate::actors::{self, ActorOptions};
use crate::cache::StageSetCache;
use crate::config::{CertMode, Config};
use crate::http::{Bound, McpOptions, ServerOptions, WebhookOptions};
use crate::kube_client::ClientFactory;
use crate::leader::{Leadership, instance_name};
use crate::metrics::Metrics;
use crate::reconcile::{Env, Settings, artifact::Fetcher};
use crate::tls::CertSlot;

/// Worker threads of the controller's runtime (reconciles run on it).
const WORKER_THREADS: usize = 2;

/// The pipeline settings a configuration implies.
pub fn settings(config: &Config) -> Settings {
    Settings {
        default_interval: config
            .default_interval
            .to_std()
            .unwrap_or(std::time::Duration::from_secs(600)),
        inventory_shard_cap: config.inventory_shard_cap,
        no_cross_namespace_refs: config.no_cross_namespace_refs,
        runbook_base: config.runbook_base_url.clone(),
        inventory_mode: config.inventory_mode,
        allowed_action_hosts: config.allowed_action_hosts.clone(),
        require_verified_migration_sources: config.require_verified_migration_sources,
        require_pinned_migration_sources: config.require_pinned_migration_sources,
        apply_concurrency: config.apply_concurrency,
        max_teardown_wait: config
            .max_teardown_wait
            .to_std()
            .unwrap_or(std::time::Duration::from_secs(3600)),
        ..Settings::default()
    }
}

/// A running controller; dropping it stops everything.
pub struct ControllerHandle {
    system: actix::System,
    cache: StageSetCache,
    metrics: Arc<Metrics>,
    listeners: crate::http::Servers,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ControllerHandle {
    /// The controller's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The addresses the HTTP listeners bound.
    pub fn bound(&self) -> &Bound {
        &self.listeners.bound
    }

    /// The StageSet cache the HTTP listeners read.
    pub fn store(&self) -> StageSetCache {
        self.cache.clone()
    }

    /// Stops the actors and listeners and waits for the controller thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// The SIGTERM path (operations.md §1.9): the listeners stop accepting
    /// and finish the requests in flight (up to 5 s: an admission review a
    /// rolling restart interrupts would fail the user's write), then
    /// everything stops as [`ControllerHandle::stop`] does.
    pub fn stop_gracefully(mut self) {
        self.listeners
            .stop_blocking(std::time::Duration::from_secs(5));
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

/// The start-up checks that come before the cluster configuration is loaded
/// (operations.md §1.6): the rollback store's flags, its directory or its
/// client. An error exits 1.
pub fn preflight(config: &Config) -> Result<(), String> {
    rollback_store_plan(config).map(|_| ())
}

fn rollback_store_plan(config: &Config) -> Result<Option<StorePlan>, String> {
    StorePlan::from_config(
        config,
        &|k| std::env::var(k).ok(),
        std::env::var_os("HOME").map(std::path::PathBuf::from),
    )
}

/// Starts the controller against the cluster `kube_config` points at.
pub fn start(config: &Config, kube_config: kube::Config) -> Result<ControllerHandle, String> {
    let servers = server_options(config)?;
    start_with(config, kube_config, servers)
}

/// Everything the controller thread needs, resolved from the configuration
/// before the thread starts (so flag and environment errors are start-up
/// errors).
struct Plan {
    kube_config: kube::Config,
    allow_loopback: bool,
    concurrent: usize,
    rate_limit: (f64, u32),
    settings: Settings,
    events_addr: Option<String>,
    leadership: Arc<Leadership>,
    election: Option<LeaderElection>,
    certs: Option<(CertPlan, Arc<CertSlot>)>,
    store: Option<StorePlan>,
    actors: ActorOptions,
    servers: ServerOptions,
    clock: crate::reconcile::Clock,
}

/// [`start`] with the HTTP listeners given explicitly (tests bind port 0).
pub fn start_with(
    config: &Config,
    kube_config: kube::Config,
    servers: ServerOptions,
) -> Result<ControllerHandle, String> {
    start_with_clock(
        config,
        kube_config,
        servers,
        crate::reconcile::Clock::system(),
    )
}

/// [`start_with`] on a clock the caller controls (tests of update windows).
pub fn start_with_clock(
    config: &Config,
    kube_config: kube::Config,
    servers: ServerOptions,
    clock: crate::reconcile::Clock,
) -> Result<ControllerHandle, String> {
    rustls::crypto::ring::default_provider()
        .install_default()
        .ok();
    if config.allow_loopback_artifacts {
        tracing::warn!(
            logger = "setup",
            "--allow-loopback-artifacts is set: artifacts may be fetched from loopback addresses; never use this in production"
        );
    }
    // The rollback store (operations.md §1.6): checked before anything else.
    let store = rollback_store_plan(config)?;
    // Leader election (operations.md §4): resolved now so a missing namespace
    // is a start-up error.
    let election = if config.leader_elect {
        Some(LeaderElection::from_environment(
            crate::api::keys::lease_name(&config.watch_label_selector),
        )?)
    } else {
        if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
            tracing::warn!(
                logger = "setup",
                "leader election is disabled (--leader-elect=false) in a cluster: running more than one replica this way is unsupported, every replica would reconcile"
            );
        }
        None
    };
    // Webhook certificates (operations.md §5): checked now, provisioned on
    // the controller thread before the listener answers.
    let certs = match (CertPlan::from_config(config)?, servers.webhook.as_ref()) {
        (Some(plan), Some(webhook)) => Some((plan, webhook.certs.clone())),
        _ => None,
    };
    let plan = Plan {
        kube_config,
        allow_loopback: config.allow_loopback_artifacts,
        concurrent: config.concurrent,
        rate_limit: (config.kube_api_qps, config.kube_api_burst),
        settings: settings(config),
        events_addr: config.events_addr.clone(),
        leadership: if config.leader_elect {
            Leadership::candidate()
        } else {
            Leadership::always()
        },
        election,
        certs,
        store,
        actors: ActorOptions {
            concurrent: config.concurrent,
            watch_namespaces: config.watch_namespaces.clone(),
            watch_label_selector: config.watch_label_selector.clone(),
        },
        servers,
        clock,
    };
    if !config.watch_namespaces.is_empty() {
        tracing::info!(logger = "setup", namespaces = ?config.watch_namespaces, "watch scope restricted");
    }
    let handle = spawn(plan).map_err(|e| format!("starting the controller: {e}"))?;
    let b = handle.bound();
    let show = |a: Option<std::net::SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(
        logger = "setup",
        metrics = %show(b.metrics),
        health = %show(b.health),
        gate = %show(b.gate),
        webhook = %show(b.webhook),
        mcp = %show(b.mcp),
        "listening"
    );
    Ok(handle)
}

type Started = (
    actix::System,
    StageSetCache,
    Arc<Metrics>,
    crate::http::Servers,
);

/// Runs the controller on a dedicated thread: an actix System on a
/// multi-threaded Tokio runtime, so reconciles run in parallel. The clients
/// are built on that thread's runtime, which drives them.
fn spawn(plan: Plan) -> std::io::Result<ControllerHandle> {
    let (tx, rx) = std::sync::mpsc::channel::<Result<Started, String>>();
    let thread = std::thread::Builder::new()
        .name("stageset-controller".into())
        .spawn(move || {
            let system = actix::System::with_tokio_rt(move || {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(WORKER_THREADS)
                    .thread_name("reconcile")
                    .enable_all()
                    .build()
                    .expect("the controller runtime starts")
            });
            let started = system.block_on(run(plan));
            let ok = started.is_ok();
            let _ = tx.send(started);
            if ok {
                let _ = system.run();
            }
        })?;
    let (system, cache, metrics, listeners) = rx
        .recv()
        .map_err(|_| std::io::Error::other("the controller thread stopped during start-up"))?
        .map_err(std::io::Error::other)?;
    Ok(ControllerHandle {
        system,
        cache,
        metrics,
        listeners,
        thread: Some(thread),
    })
}

/// Starts everything on the current actix System, in order: certificates
/// (a replica whose certificate provisioning fails never takes the lease),
/// the lease, the delivery actors, the listeners.
async fn run(plan: Plan) -> Result<Started, String> {
    let (qps, burst) = plan.rate_limit;
    let limit = Arc::new(crate::kube_client::RateLimit::new(qps, burst));
    let metrics = Arc::new(Metrics::new(plan.concurrent));
    let counted = metrics.clone();
    limit.observe_requests(Arc::new(move |code, method, host| {
        counted.rest_client_request(code, method, host)
    }));
    let clients = ClientFactory::with_limit(plan.kube_config, limit)
        .map_err(|e| format!("building the Kubernetes client: {e}"))?;
    let rollback_store =
        match plan.store {
            Some(store) => Some(Arc::new(store.discover_region().await.start()?)
                as crate::reconcile::rollback::Store),
            None => None,
        };
    let env = Arc::new(Env {
        clients,
        fetcher: Fetcher::new(plan.allow_loopback),
        actions: crate::reconcile::outbound::ActionPolicy::new(
            plan.settings.allowed_action_hosts.clone(),
        ),
        settings: plan.settings,
        instance: instance_name(),
        metrics: metrics.clone(),
        notifier: plan
            .events_addr
            .as_deref()
            .map(|addr| crate::reconcile::notify::Notifier::new(addr, metrics.clone())),
        inventory_writes: Default::default(),
        targets: Default::default(),
        clock: plan.clock.clone(),
        rollback_store,
        own_writes: Default::default(),
    });
    let client = env.clients.controller();
    // The MCP server acts as the controller itself (operations.md §3.6).
    let mcp_client = client.clone();
    let mcp_store = env.rollback_store.clone();
    let mcp_runbook = env.settings.runbook_base.clone();
    let mcp_watch = plan.actors.watch_namespaces.clone();
    let prerequisites_client = client.clone();
    let prerequisite_namespaces = plan.actors.watch_namespaces.clone();
    if let Some((certs, slot)) = plan.certs {
        certs.start(client.clone(), metrics.clone(), slot).await?;
    }
    if let Some(election) = plan.election {
        election.start(client, plan.leadership.clone(), Some(metrics.clone()));
    }
    let cache = actors::start(env, plan.leadership, plan.actors);
    let mut servers = crate::http::start(
        &plan.servers,
        crate::http::State {
            cache: cache.clone(),
            metrics: metrics.clone(),
        },
    )?;
    if let Some(mcp) = &plan.servers.mcp {
        servers.bound.mcp = crate::mcp::start(
            &mcp.addr,
            crate::mcp::McpContext {
                cache: cache.clone(),
                client: mcp_client,
                store: mcp_store,
                allow_mutations: mcp.allow_mutations,
                runbook_base: mcp_runbook,
                watch_namespaces: mcp_watch,
            },
        );
    }
    // Every replica says why it cannot watch yet (operations.md §3.3.1).
    let prerequisites = crate::reconcile::prerequisites::watch(
        prerequisites_client,
        prerequisite_namespaces,
        crate::reconcile::prerequisites::RECHECK,
    );
    actix::spawn(async move {
        prerequisites.await;
    });
    Ok((actix::System::current(), cache, metrics, servers))
}

/// The HTTP listeners a configuration asks for. In `cert-manager` mode the
/// mounted certificate must be readable at start (it is reloaded when the
/// files change); in `self-signed` mode the slot starts empty and
/// [`start_with`] provisions it before the listener starts.
pub fn server_options(config: &Config) -> Result<ServerOptions, String> {
    let webhook = if config.enable_webhook {
        let certs = CertSlot::new();
        if config.webhook_cert_mode == CertMode::CertManager {
            certs.load_dir(&config.webhook_cert_dir).map_err(|e| {
                format!("loading the webhook certificate from --webhook-cert-dir: {e}")
            })?;
        }
        Some(WebhookOptions {
            addr: format!(":{}", config.webhook_port),
            certs,
        })
    } else {
        None
    };
    Ok(ServerOptions {
        metrics: config.metrics_bind_address.clone(),
        health: config.health_probe_bind_address.clone(),
        gate: config.gate_bind_address.clone(),
        webhook,
        mcp: config
            .mcp_bind_address
            .clone()
            .filter(|_| config.enable_mcp)
            .map(|addr| McpOptions {
                addr,
                allow_mutations: config.mcp_allow_mutations,
            }),
        workers: 2,
    })
}
