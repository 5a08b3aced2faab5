//! Test harness for the controller's integration tests: a kube-sim per test, a
//! real HTTP artifact server, our CRDs plus the Flux source CRDs, and the
//! controller itself, in-process, built from a real command line.

#![allow(dead_code)]

pub mod fleet;
pub mod process;
pub mod prometheus;
pub mod s3;
pub mod unsupported;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_sim::{KubeSim, Options, SimConfig};
use serde_json::{Value, json};
use stageset_controller::api::StageSet;
use stageset_controller::api::reasons::CONDITION_READY;
use stageset_controller::config::{Invocation, parse_from_ignoring_unsupported};
use stageset_controller::controller::ControllerHandle;
use stageset_controller::dev::artifacts::{ArtifactServer, Published, tar_gz};
use stageset_controller::dev::{flux, publish_external_artifact};

pub struct Harness {
    pub sim: KubeSim,
    pub client: kube::Client,
    pub artifacts: ArtifactServer,
    pub controller: Option<ControllerHandle>,
    pub flags: Vec<String>,
    pub listeners: bool,
    pub webhook_cert_dir: Option<std::path::PathBuf>,
    pub clock: stageset_controller::reconcile::Clock,
}

pub struct HarnessOptions {
    /// Workloads become ready this long after they change (None: only when a
    /// test says so).
    pub auto_ready: Option<Duration>,
    /// Extra controller flags.
    pub flags: Vec<String>,
    /// The controller's clock (None: the system clock).
    pub clock: Option<stageset_controller::reconcile::Clock>,
    /// Start the controller right away.
    pub start_controller: bool,
    /// Serve metrics, health and gate (and MCP with `--enable-mcp`) on
    /// loopback ports chosen by the OS.
    pub listeners: bool,
    /// Serve the webhook on a loopback port with `tls.crt`/`tls.key` from
    /// this directory (cert-manager mode).
    pub webhook_cert_dir: Option<std::path::PathBuf>,
    /// How long kube-sim holds every request (an API server's latency).
    pub latency: Duration,
}

impl Default for HarnessOptions {
    fn default() -> Self {
        HarnessOptions {
            auto_ready: None,
            flags: Vec::new(),
            clock: None,
            start_controller: true,
            listeners: false,
            webhook_cert_dir: None,
            latency: Duration::ZERO,
        }
    }
}

pub async fn kube_config(sim: &KubeSim) -> kube::Config {
    let kubeconfig = Kubeconfig::from_yaml(&sim.kubeconfig()).expect("kubeconfig");
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config")
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::start_with(HarnessOptions::default()).await
    }

    pub async fn start_with(options: HarnessOptions) -> Harness {
        let sim = KubeSim::start(Options {
            config: SimConfig {
                auto_ready: options.auto_ready,
                latency: options.latency,
                ..SimConfig::default()
            },
            ..Options::default()
        })
        .expect("kube-sim starts");
        for c in stageset_controller::api::crd::all() {
            sim.load(serde_json::to_value(&c).unwrap()).unwrap();
        }
        for c in flux::source_crds() {
            sim.load(c).unwrap();
        }
        let client = kube::Client::try_from(kube_config(&sim).await).unwrap();
        let artifacts = ArtifactServer::start().await.expect("artifact server");
        // Listeners are off unless a test asks for them (on port 0), so tests
        // running in parallel never fight over ports.
        let mut flags: Vec<String> = [
            "--allow-loopback-artifacts",
            "--metrics-bind-address=0",
            "--health-probe-bind-address=0",
            "--gate-bind-address=",
            "--enable-webhook=false",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(dir) = &options.webhook_cert_dir {
            // The certificate watcher follows the same directory.
            flags.push(format!("--webhook-cert-dir={}", dir.display()));
        }
        flags.extend(options.flags);
        let mut h = Harness {
            sim,
            client,
            artifacts,
            controller: None,
            flags,
            listeners: options.listeners,
            webhook_cert_dir: options.webhook_cert_dir,
            clock: options.clock.unwrap_or_default(),
        };
        if options.start_controller {
            h.start_controller().await;
        }
        h
    }

    /// Starts (or restarts) the controller with the harness's flags.
    pub async fn start_controller(&mut self) {
        let mut argv = vec!["stageset-controller".to_string()];
        argv.extend(self.flags.iter().cloned());
        let env = |_: &str| None;
        let Invocation::Run(config) =
            parse_from_ignoring_unsupported(argv, &env).expect("flags parse")
        else {
            panic!("not a controller run");
        };
        let kc = kube_config(&self.sim).await;
        let mut servers = stageset_controller::http::ServerOptions {
            workers: 1,
            ..Default::default()
        };
        if self.listeners {
            servers.metrics = Some("127.0.0.1:0".into());
            servers.health = Some("127.0.0.1:0".into());
            servers.gate = Some("127.0.0.1:0".into());
            // MCP only when the flags turn it on (it is off by default).
            if config.enable_mcp {
                servers.mcp = Some(stageset_controller::http::McpOptions {
                    addr: "127.0.0.1:0".into(),
                    allow_mutations: config.mcp_allow_mutations,
                });
            }
        }
        if let Some(dir) = &self.webhook_cert_dir {
            let certs = stageset_controller::tls::CertSlot::new();
            certs.load_dir(dir).expect("webhook certificate");
            servers.webhook = Some(stageset_controller::http::WebhookOptions {
                addr: "127.0.0.1:0".into(),
                certs,
            });
        }
        self.controller = Some(
            stageset_controller::controller::start_with_clock(
                &config,
                kc,
                servers,
                self.clock.clone(),
            )
            .expect("controller starts"),
        );
    }

    /// Stops the controller (e.g. to simulate a restart).
    pub fn stop_controller(&mut self) {
        if let Some(c) = self.controller.take() {
            c.stop();
        }
    }

    pub async fn namespace(&self, name: &str) {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
    }

    /// Serves files as a tar.gz artifact.
    pub fn artifact(&self, path: &str, files: &[(&str, &str)]) -> Published {
        let entries: Vec<(&str, &[u8])> = files.iter().map(|(n, c)| (*n, c.as_bytes())).collect();
        self.artifacts.publish(path, tar_gz(&entries))
    }

    /// Creates or updates an ExternalArtifact pointing at a published artifact.
    pub async fn external_artifact(
        &self,
        namespace: &str,
        name: &str,
        published: &Published,
        revision: &str,
    ) {
        publish_external_artifact(
            &self.client,
            namespace,
            name,
            &published.url,
            &published.digest,
            revision,
        )
        .await
        .expect("ExternalArtifact published");
    }

    /// Creates or updates a StageSet from its spec (server-side apply as a user).
    pub async fn stageset(&self, namespace: &str, name: &str, spec: Value) {
        let body = json!({
            "apiVersion": "stages.metio.wtf/v1",
            "kind": "StageSet",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec
        });
        Api::<StageSet>::namespaced(self.client.clone(), namespace)
            .patch(
                name,
                &PatchParams::apply("test-user").force(),
                &Patch::Apply(&body),
            )
            .await
            .expect("StageSet applied");
    }

    /// Sets a StageSet's `spec.suspend` (a user's merge patch).
    pub async fn suspend(&self, namespace: &str, name: &str, on: bool) {
        Api::<StageSet>::namespaced(self.client.clone(), namespace)
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"suspend": on}})),
            )
            .await
            .expect("spec.suspend patched");
    }

    /// Asks for a reconcile the way `flux reconcile` does (the
    /// `reconcile.fluxcd.io/requestedAt` annotation) and waits until a pass
    /// handled `token` and `also` holds.
    pub async fn request_reconcile<F>(
        &self,
        namespace: &str,
        name: &str,
        token: &str,
        also: F,
    ) -> StageSet
    where
        F: Fn(&StageSet) -> bool,
    {
        Api::<StageSet>::namespaced(self.client.clone(), namespace)
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": token}}}),
                ),
            )
            .await
            .unwrap();
        self.wait_stageset(namespace, name, &format!("token {token} handled"), |ss| {
            ss.status
                .as_ref()
                .and_then(|s| s.last_handled_reconcile_at.as_deref())
                == Some(token)
                && also(ss)
        })
        .await
    }

    pub async fn get_stageset(&self, namespace: &str, name: &str) -> StageSet {
        Api::<StageSet>::namespaced(self.client.clone(), namespace)
            .get(name)
            .await
            .unwrap()
    }

    /// Waits (up to 60 s) until the StageSet satisfies `pred`; panics with the
    /// last status otherwise.
    pub async fn wait_stageset<F>(
        &self,
        namespace: &str,
        name: &str,
        what: &str,
        pred: F,
    ) -> StageSet
    where
        F: Fn(&StageSet) -> bool,
    {
        self.wait_stageset_within(namespace, name, what, Duration::from_secs(60), pred)
            .await
    }

    /// [`Harness::wait_stageset`] with an explicit deadline.
    pub async fn wait_stageset_within<F>(
        &self,
        namespace: &str,
        name: &str,
        what: &str,
        within: Duration,
        pred: F,
    ) -> StageSet
    where
        F: Fn(&StageSet) -> bool,
    {
        let api: Api<StageSet> = Api::namespaced(self.client.clone(), namespace);
        let deadline = Instant::now() + within;
        let mut last = None;
        loop {
            if let Ok(ss) = api.get(name).await {
                if pred(&ss) {
                    return ss;
                }
                last = Some(ss);
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; last status: {}",
                    serde_json::to_string_pretty(&last.and_then(|s| s.status)).unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the Ready condition to have this reason (and, if given, a
    /// message containing `contains`).
    pub async fn wait_ready_reason(
        &self,
        namespace: &str,
        name: &str,
        reason: &str,
        contains: &str,
    ) -> StageSet {
        self.wait_stageset(
            namespace,
            name,
            &format!("Ready reason {reason} containing {contains:?}"),
            |ss| ready(ss).is_some_and(|(_, r, m)| r == reason && m.contains(contains)),
        )
        .await
    }

    /// A dynamic API for a kind.
    pub async fn dynamic(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Api<DynamicObject> {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = kube::core::GroupVersionKind::gvk(group, version, kind);
        let (ar, _) = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .expect("kind is served");
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        }
    }

    pub async fn get_opt(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<DynamicObject> {
        self.dynamic(api_version, kind, namespace)
            .await
            .get_opt(name)
            .await
            .unwrap()
    }

    /// Waits until an object exists.
    pub async fn wait_exists(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> DynamicObject {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(api) = tokio::time::timeout(
                Duration::from_secs(5),
                self.dynamic(api_version, kind, namespace),
            )
            .await
                && let Ok(Some(o)) = api.get_opt(name).await
            {
                return o;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {kind} {name}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Marks a workload ready (kube-sim plays its controller).
    pub fn set_ready(&self, api_version: &str, kind: &str, namespace: &str, name: &str) {
        self.sim
            .set_ready(api_version, kind, namespace, name)
            .expect("set ready");
    }

    /// The Events recorded about a StageSet (core/v1 view).
    pub async fn events(
        &self,
        namespace: &str,
        name: &str,
    ) -> Vec<k8s_openapi::api::core::v1::Event> {
        Api::<k8s_openapi::api::core::v1::Event>::namespaced(self.client.clone(), namespace)
            .list(&kube::api::ListParams::default().fields(&format!(
                "involvedObject.kind=StageSet,involvedObject.name={name}"
            )))
            .await
            .unwrap()
            .items
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop_controller();
    }
}

/// (status, reason, message) of a StageSet's Ready condition.
pub fn ready(ss: &StageSet) -> Option<(String, String, String)> {
    let c = ss
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_READY)?;
    Some((
        c.status.as_str().to_string(),
        c.reason.clone(),
        c.message.clone(),
    ))
}

/// A stage's phase as a string ("Ready", "Failed", "Verifying").
pub fn stage_phase(ss: &StageSet, stage: &str) -> Option<String> {
    ss.status
        .as_ref()?
        .stages
        .iter()
        .find(|s| s.name == stage)?
        .phase
        .map(|p| format!("{p:?}"))
}

pub fn configmap(namespace: &str, name: &str, data: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {namespace}\ndata:\n  value: \"{data}\"\n"
    )
}

pub fn deployment(namespace: &str, name: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n      - name: app\n        image: nginx:1.27\n"
    )
}

/// A loopback port free at the time of asking (for listeners a test
/// starts in another process).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
