//! `stageset-controller dev`: a complete local demo. It starts kube-sim
//! in-process (workloads become ready on their own), installs our CRDs and the
//! Flux source CRDs, serves the sample release in `examples/dev-release` as
//! tar.gz artifacts over HTTP, creates one ExternalArtifact per stage, runs the
//! controller with its listeners on loopback (the admission webhook in
//! self-signed mode behind a ValidatingWebhookConfiguration, as the chart
//! installs it), creates the StageSet through that webhook, and prints each
//! stage's progress until Ctrl-C.

pub mod artifacts;
pub mod flux;

use std::path::PathBuf;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::runtime::watcher;
use serde_json::json;

use crate::api::{StageSet, crd};
use crate::config::DevOptions;

/// The sample release: stage name → files.
pub const RELEASE: &[(&str, &[(&str, &str)])] = &[
    (
        "platform",
        &[
            (
                "namespace.yaml",
                include_str!("../../examples/dev-release/platform/namespace.yaml"),
            ),
            (
                "greeting-crd.yaml",
                include_str!("../../examples/dev-release/platform/greeting-crd.yaml"),
            ),
        ],
    ),
    (
        "config",
        &[
            (
                "settings.yaml",
                include_str!("../../examples/dev-release/config/settings.yaml"),
            ),
            (
                "greeting.yaml",
                include_str!("../../examples/dev-release/config/greeting.yaml"),
            ),
        ],
    ),
    (
        "app",
        &[(
            "deployment.yaml",
            include_str!("../../examples/dev-release/app/deployment.yaml"),
        )],
    ),
];

/// Namespace of the demo StageSet and its ExternalArtifacts.
pub const DEMO_NAMESPACE: &str = "default";
/// Name of the demo StageSet.
pub const DEMO_STAGESET: &str = "hello";

/// The webhook Service and configuration names of the dev cluster.
const DEV_WEBHOOK_SERVICE: &str = "stageset-controller-webhook";
const DEV_WEBHOOK_CONFIG: &str = "stageset-controller-dev";

/// The ValidatingWebhookConfiguration the chart would install, without a
/// caBundle (the controller's self-signed mode publishes it).
fn dev_webhook_configuration() -> serde_json::Value {
    let entry = |name: &str, path: &str, resource: &str| {
        json!({
            "name": name,
            "admissionReviewVersions": ["v1"],
            "clientConfig": {"service": {"name": DEV_WEBHOOK_SERVICE, "namespace": DEMO_NAMESPACE, "path": path, "port": 443}},
            "rules": [{"apiGroups": ["stages.metio.wtf"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": [resource]}],
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "timeoutSeconds": 10
        })
    };
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": DEV_WEBHOOK_CONFIG},
        "webhooks": [
            entry("vstageset.stages.metio.wtf", crate::http::webhook::STAGESET_PATH, "stagesets"),
            entry("vimageverificationpolicy.stages.metio.wtf", crate::http::webhook::IMAGE_POLICY_PATH, "imageverificationpolicies"),
        ]
    })
}

/// The `ApiResource` of Flux's ExternalArtifact.
pub fn external_artifact_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("source.toolkit.fluxcd.io", "v1", "ExternalArtifact"),
        "externalartifacts",
    )
}

/// Creates (or updates) an ExternalArtifact and marks it Ready with `status.artifact`,
/// as source-controller would.
pub async fn publish_external_artifact(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    url: &str,
    digest: &str,
    revision: &str,
) -> Result<(), kube::Error> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &external_artifact_resource());
    let pp = PatchParams::apply("source-controller").force();
    let body = json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "ExternalArtifact",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {}
    });
    api.patch(name, &pp, &Patch::Apply(&body)).await?;
    let status = json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "ExternalArtifact",
        "metadata": {"name": name, "namespace": namespace},
        "status": flux::ready_status(url, digest, revision)
    });
    api.patch_status(name, &pp, &Patch::Apply(&status)).await?;
    Ok(())
}

/// Runs the demo until Ctrl-C or SIGTERM.
pub async fn run(options: &DevOptions) -> Result<(), String> {
    rustls::crypto::ring::default_provider()
        .install_default()
        .ok();
    // The admission webhook listens on a loopback port chosen now, so the API
    // server can be told where the webhook Service lives.
    let webhook_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("choosing a webhook port: {e}"))?
        .port();
    let sim = kube_sim::KubeSim::start(kube_sim::Options {
        listen: options.listen_sim,
        config: kube_sim::SimConfig {
            auto_ready: Some(Duration::from_millis(500)),
            bookmark_interval: Duration::from_secs(5),
            service_map: [(
                format!("{DEMO_NAMESPACE}/{DEV_WEBHOOK_SERVICE}"),
                format!("127.0.0.1:{webhook_port}"),
            )]
            .into(),
            ..kube_sim::SimConfig::default()
        },
        ..kube_sim::Options::default()
    })
    .map_err(|e| format!("starting kube-sim: {e}"))?;
    let kubeconfig_path = match &options.kubeconfig {
        Some(p) => p.clone(),
        None => {
            let dir = std::env::temp_dir().join(format!("stageset-dev-{}", std::process::id()));
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            dir.join("kubeconfig")
        }
    };
    sim.write_kubeconfig(&kubeconfig_path)
        .map_err(|e| format!("writing {}: {e}", kubeconfig_path.display()))?;
    for c in crd::all() {
        sim.load(serde_json::to_value(&c).map_err(|e| e.to_string())?)?;
    }
    for c in flux::source_crds() {
        sim.load(c)?;
    }
    let kube_config = kube_config_for(&sim).await?;
    let client = kube::Client::try_from(kube_config.clone()).map_err(|e| e.to_string())?;

    // The artifacts.
    let server = artifacts::ArtifactServer::start()
        .await
        .map_err(|e| format!("starting the artifact server: {e}"))?;
    for (stage, files) in RELEASE {
        let entries: Vec<(&str, &[u8])> = files.iter().map(|(n, c)| (*n, c.as_bytes())).collect();
        let published = server.publish(&format!("{stage}.tar.gz"), artifacts::tar_gz(&entries));
        let revision = format!("v1@{}", published.digest);
        publish_external_artifact(
            &client,
            DEMO_NAMESPACE,
            &format!("hello-{stage}"),
            &published.url,
            &published.digest,
            &revision,
        )
        .await
        .map_err(|e| format!("creating ExternalArtifact hello-{stage}: {e}"))?;
    }

    // The validating webhook configuration, as the chart installs it; the
    // controller publishes its self-signed CA into it.
    sim.load(dev_webhook_configuration())?;
    let cert_dir = kubeconfig_path
        .parent()
        .map(|d| d.join("webhook-certs"))
        .unwrap_or_else(|| std::env::temp_dir().join("stageset-dev-webhook-certs"));

    // The controller.
    let env = |_: &str| None;
    let flags = vec![
        "stageset-controller".to_string(),
        "--allow-loopback-artifacts".into(),
        "--log-level=warn".into(),
        // The listeners are given below on loopback ports the OS picks
        // (the flags only accept fixed ports).
        "--metrics-bind-address=0".into(),
        "--health-probe-bind-address=0".into(),
        "--gate-bind-address=".into(),
        "--enable-webhook=true".into(),
        "--webhook-cert-mode=self-signed".into(),
        format!("--webhook-cert-dir={}", cert_dir.display()),
        format!("--webhook-port={webhook_port}"),
        format!("--webhook-service-name={DEV_WEBHOOK_SERVICE}"),
        format!("--webhook-service-namespace={DEMO_NAMESPACE}"),
        format!("--webhook-validating-config-name={DEV_WEBHOOK_CONFIG}"),
    ];
    let invocation =
        crate::config::parse_from_ignoring_unsupported(flags, &env).map_err(|e| e.to_string())?;
    let crate::config::Invocation::Run(config) = invocation else {
        return Err("unexpected dev configuration".into());
    };
    let mut servers = crate::controller::server_options(&config)?;
    servers.metrics = Some("127.0.0.1:0".into());
    servers.health = Some("127.0.0.1:0".into());
    servers.gate = Some("127.0.0.1:0".into());
    if let Some(w) = servers.webhook.as_mut() {
        w.addr = format!("127.0.0.1:{webhook_port}");
    }
    servers.workers = 1;
    let controller = crate::controller::start_with(&config, kube_config, servers)?;

    // The StageSet.
    let stages: Vec<serde_json::Value> = RELEASE
        .iter()
        .map(|(stage, _)| json!({"name": stage, "sourceRef": {"name": format!("hello-{stage}")}, "timeout": "2m"}))
        .collect();
    let stageset = json!({
        "apiVersion": crate::api::API_VERSION,
        "kind": "StageSet",
        "metadata": {"name": DEMO_STAGESET, "namespace": DEMO_NAMESPACE},
        "spec": {"interval": "1m", "stages": stages}
    });
    Api::<StageSet>::namespaced(client.clone(), DEMO_NAMESPACE)
        .patch(
            DEMO_STAGESET,
            &PatchParams::apply("stageset-dev").force(),
            &Patch::Apply(&stageset),
        )
        .await
        .map_err(|e| format!("creating the StageSet: {e}"))?;

    println!("kube-sim: {}", sim.url());
    println!("artifacts: {}", server.url_for(""));
    println!("kubeconfig: {}", kubeconfig_path.display());
    let bound = controller.bound().clone();
    if let Some(a) = bound.gate {
        println!(
            "gate: http://{a}/gate/{DEMO_NAMESPACE}/{DEMO_STAGESET}/{}",
            RELEASE.last().map(|(s, _)| *s).unwrap_or_default()
        );
    }
    if let Some(a) = bound.metrics {
        println!("metrics: http://{a}/metrics");
    }
    if let Some(a) = bound.health {
        println!("health: http://{a}/readyz");
    }
    if let Some(a) = bound.webhook {
        println!("webhook: https://{a}/validate-stages-metio-wtf-v1-stageset");
    }
    println!(
        "inspect: kubectl --kubeconfig {} get stagesets,stageinventories -A",
        kubeconfig_path.display()
    );
    println!(
        "stageset: {DEMO_NAMESPACE}/{DEMO_STAGESET} rolls out stages {}",
        RELEASE
            .iter()
            .map(|(s, _)| *s)
            .collect::<Vec<_>>()
            .join(" → ")
    );
    let progress = print_progress(client.clone());
    tokio::select! {
        r = progress => r?,
        _ = shutdown_signal() => println!("stopping"),
    }
    controller.stop();
    drop(server);
    sim.shutdown();
    Ok(())
}

async fn kube_config_for(sim: &kube_sim::KubeSim) -> Result<kube::Config, String> {
    let kubeconfig = Kubeconfig::from_yaml(&sim.kubeconfig()).map_err(|e| e.to_string())?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| e.to_string())
}

/// Prints the StageSet's stage phases and Ready condition whenever they change.
async fn print_progress(client: kube::Client) -> Result<(), String> {
    let api: Api<StageSet> = Api::namespaced(client, DEMO_NAMESPACE);
    let mut last = String::new();
    let stream = watcher(
        api,
        watcher::Config::default().fields(&format!("metadata.name={DEMO_STAGESET}")),
    );
    let mut stream = stream.boxed();
    while let Some(event) = stream.try_next().await.map_err(|e| e.to_string())? {
        let (watcher::Event::Apply(ss) | watcher::Event::InitApply(ss)) = event else {
            continue;
        };
        let Some(status) = ss.status else { continue };
        let stages: Vec<String> = status
            .stages
            .iter()
            .map(|s| {
                format!(
                    "{}={}",
                    s.name,
                    s.phase
                        .map(|p| format!("{p:?}"))
                        .unwrap_or_else(|| "-".into())
                )
            })
            .collect();
        let ready = crate::reconcile::status::ready_of(&status)
            .map(|c| format!("Ready={} {}: {}", c.status.as_str(), c.reason, c.message))
            .unwrap_or_default();
        let line = format!("progress: [{}] {ready}", stages.join(" "));
        if line != last {
            println!("{line}");
            last = line;
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

/// Where `dev` writes its kubeconfig by default.
pub fn default_kubeconfig_dir() -> PathBuf {
    std::env::temp_dir().join(format!("stageset-dev-{}", std::process::id()))
}
