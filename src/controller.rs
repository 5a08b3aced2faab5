//! Starting the controller from a validated [`Config`]: clients, the delivery
//! pipeline's environment, and the actors. Shared by the binary, the `dev`
//! command and the integration tests, so all three run the same code.

use crate::actors::{self, ControllerHandle, ControllerOptions};
use crate::config::CertMode;
use crate::config::Config;
use crate::http::{ServerOptions, WebhookOptions};
use crate::kube_client::ClientFactory;
use crate::reconcile::{Env, Settings, artifact::Fetcher};
use crate::tls::CertSlot;

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
        max_teardown_wait: config
            .max_teardown_wait
            .to_std()
            .unwrap_or(std::time::Duration::from_secs(3600)),
        ..Settings::default()
    }
}

/// This replica's identity in events: the pod name when running in a cluster,
/// else the host name.
pub fn instance_name() -> String {
    std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "stageset-controller".to_string())
}

/// Starts the controller against the cluster `kube_config` points at.
pub fn start(config: &Config, kube_config: kube::Config) -> Result<ControllerHandle, String> {
    let servers = server_options(config)?;
    start_with(config, kube_config, servers)
}

/// [`start`] with the HTTP listeners given explicitly (tests bind port 0).
pub fn start_with(
    config: &Config,
    kube_config: kube::Config,
    servers: ServerOptions,
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
    // The clients must be built inside the controller's runtime (hyper needs
    // a reactor), so the environment is assembled on the controller thread.
    let allow_loopback = config.allow_loopback_artifacts;
    let concurrent = config.concurrent;
    let settings = settings(config);
    let leadership = if config.leader_elect {
        crate::leader::Leadership::candidate()
    } else {
        crate::leader::Leadership::always()
    };
    // Leader election (operations.md §4): resolved now so a missing namespace
    // is a start-up error; the LeaseActor starts from the start hook below.
    let election = if config.leader_elect {
        Some(actors::lease::LeaderElection::from_environment()?)
    } else {
        if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
            tracing::warn!(
                logger = "setup",
                "leader election is disabled (--leader-elect=false) in a cluster: running more than one replica this way is unsupported, every replica would reconcile"
            );
        }
        None
    };
    let events_addr = config.events_addr.clone();
    let make_env = move || -> Result<Env, String> {
        let clients = ClientFactory::new(kube_config)
            .map_err(|e| format!("building the Kubernetes client: {e}"))?;
        Ok(Env {
            clients,
            fetcher: Fetcher::new(allow_loopback),
            settings,
            instance: instance_name(),
            metrics: std::sync::Arc::new(crate::metrics::Metrics::new(concurrent)),
            leadership,
            notifier: events_addr.as_deref().map(crate::notify::Notifier::new),
            inventory_writes: Default::default(),
        })
    };
    // Webhook certificates (operations.md §5): checked now, provisioned on
    // the controller thread before the listener answers.
    let on_start =
        actors::cert::start_hook(config, servers.webhook.as_ref().map(|w| w.certs.clone()))?;
    let on_start = match election {
        Some(election) => Some(election.after(on_start)),
        None => on_start,
    };
    actors::spawn(
        make_env,
        ControllerOptions {
            concurrent: config.concurrent,
            watch_namespaces: config.watch_namespaces.clone(),
            servers,
            on_start,
            ..ControllerOptions::default()
        },
    )
    .map_err(|e| format!("starting the controller: {e}"))
    .inspect(|handle| {
        let b = handle.bound();
        let show = |a: Option<std::net::SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(
            logger = "setup",
            metrics = %show(b.metrics),
            health = %show(b.health),
            gate = %show(b.gate),
            webhook = %show(b.webhook),
            "listening"
        );
    })
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
        workers: 2,
    })
}
