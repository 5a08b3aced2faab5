//! Starting the controller from a validated [`Config`]: clients, the delivery
//! pipeline's environment, and the actors. Shared by the binary, the `dev`
//! command and the integration tests, so all three run the same code.

use crate::actors::{self, ControllerHandle, ControllerOptions};
use crate::config::Config;
use crate::kube_client::ClientFactory;
use crate::reconcile::{Env, Settings, artifact::Fetcher};

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
    let settings = settings(config);
    let make_env = move || -> Result<Env, String> {
        let clients = ClientFactory::new(kube_config)
            .map_err(|e| format!("building the Kubernetes client: {e}"))?;
        Ok(Env {
            clients,
            fetcher: Fetcher::new(allow_loopback),
            settings,
            instance: instance_name(),
            metrics: std::sync::Arc::new(crate::metrics::Metrics::new()),
        })
    };
    actors::spawn(
        make_env,
        ControllerOptions {
            concurrent: config.concurrent,
            watch_namespaces: config.watch_namespaces.clone(),
            ..ControllerOptions::default()
        },
    )
    .map_err(|e| format!("starting the controller: {e}"))
}
