//! Running the simulator: an HTTPS listener on its own Tokio runtime, so that it
//! keeps serving while a test blocks its own thread (for example on a `kubectl`
//! child process).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::error::ApiResult;
use crate::rbac::UserInfo;
use crate::sim::{Sim, SimConfig};
use crate::tls::{self, KubeconfigUser, ServingCerts};

/// A bearer-token identity (`--user NAME:TOKEN[:GROUP,...]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserSpec {
    pub name: String,
    pub token: String,
    pub groups: Vec<String>,
}

impl std::str::FromStr for UserSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.splitn(3, ':');
        let name = parts.next().unwrap_or("");
        let token = parts.next().unwrap_or("");
        if name.is_empty() || token.is_empty() {
            return Err(format!("user {s:?} must be NAME:TOKEN[:GROUP,...]"));
        }
        let groups = parts
            .next()
            .map(|g| {
                g.split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Ok(UserSpec {
            name: name.to_string(),
            token: token.to_string(),
            groups,
        })
    }
}

/// How to start a simulator.
#[derive(Clone, Debug)]
pub struct Options {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The admin token (random when `None`); the admin is in `system:masters`.
    pub admin_token: Option<String>,
    /// Further bearer-token users.
    pub users: Vec<UserSpec>,
    /// Objects to create at start-up, in order (after the system namespaces).
    pub load: Vec<Value>,
    pub config: SimConfig,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: "127.0.0.1:0".parse().expect("valid address"),
            admin_token: None,
            users: Vec::new(),
            load: Vec::new(),
            config: SimConfig::default(),
        }
    }
}

/// A running simulator. Dropping it shuts it down.
pub struct KubeSim {
    sim: Arc<Sim>,
    addr: SocketAddr,
    certs: ServingCerts,
    admin_token: String,
    users: Vec<UserSpec>,
    runtime: tokio::runtime::Handle,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for KubeSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSim").field("addr", &self.addr).finish()
    }
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("generating certificates: {0}")]
    Certificates(String),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("starting the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("loading objects: {0}")]
    Load(String),
}

impl KubeSim {
    /// Starts a simulator on its own runtime thread and returns once it accepts
    /// connections.
    pub fn start(options: Options) -> Result<KubeSim, StartError> {
        let certs = tls::generate(&[]).map_err(|e| StartError::Certificates(e.to_string()))?;
        let server_config = tls::server_config(&certs).map_err(StartError::Certificates)?;
        let admin_token = options
            .admin_token
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let mut tokens: HashMap<String, UserInfo> = HashMap::new();
        tokens.insert(
            admin_token.clone(),
            UserInfo {
                name: "kube-sim-admin".into(),
                uid: String::new(),
                groups: vec!["system:masters".into(), "system:authenticated".into()],
                extra: BTreeMap::new(),
            },
        );
        for u in &options.users {
            let mut groups = u.groups.clone();
            if !groups.iter().any(|g| g == "system:authenticated") {
                groups.push("system:authenticated".into());
            }
            tokens.insert(
                u.token.clone(),
                UserInfo {
                    name: u.name.clone(),
                    uid: String::new(),
                    groups,
                    extra: BTreeMap::new(),
                },
            );
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kube-sim")
            .enable_all()
            .build()
            .map_err(StartError::Runtime)?;
        let handle = runtime.handle().clone();
        let std_listener =
            std::net::TcpListener::bind(options.listen).map_err(|source| StartError::Listen {
                addr: options.listen,
                source,
            })?;
        std_listener
            .set_nonblocking(true)
            .map_err(|source| StartError::Listen {
                addr: options.listen,
                source,
            })?;
        let addr = std_listener
            .local_addr()
            .map_err(|source| StartError::Listen {
                addr: options.listen,
                source,
            })?;
        let sim = Arc::new(Sim::new(options.config.clone(), tokens, handle.clone()));
        *sim.server_address
            .write()
            .unwrap_or_else(|p| p.into_inner()) = addr.to_string();
        let (shutdown_tx, mut shutdown_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), StartError>>();
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config);
        let serve_sim = sim.clone();
        let load = options.load.clone();
        let thread = std::thread::Builder::new()
            .name("kube-sim-server".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(source) => {
                            let _ = ready_tx.send(Err(StartError::Listen { addr, source }));
                            return;
                        }
                    };
                    serve_sim.bootstrap().await;
                    for obj in load {
                        if let Err(e) = serve_sim.load(obj).await {
                            let _ = ready_tx.send(Err(StartError::Load(e)));
                            return;
                        }
                    }
                    let _ = ready_tx.send(Ok(()));
                    loop {
                        tokio::select! {
                            _ = &mut shutdown_rx => break,
                            accepted = listener.accept() => {
                                let Ok((stream, _)) = accepted else { continue };
                                let acceptor = acceptor.clone();
                                let sim = serve_sim.clone();
                                tokio::spawn(async move {
                                    let Ok(tls) = acceptor.accept(stream).await else { return };
                                    let service = service_fn(move |req| crate::api::handle(sim.clone(), req));
                                    let _ = http1::Builder::new()
                                        .keep_alive(true)
                                        .serve_connection(TokioIo::new(tls), service)
                                        .await;
                                });
                            }
                        }
                    }
                });
                runtime.shutdown_timeout(std::time::Duration::from_secs(2));
            })
            .map_err(StartError::Runtime)?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(StartError::Load(
                    "the simulator thread stopped during start-up".into(),
                ));
            }
        }
        Ok(KubeSim {
            sim,
            addr,
            certs,
            admin_token,
            users: options.users,
            runtime: handle,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        })
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA that signed the serving certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.certs.ca_pem
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// An admin kubeconfig (current context `kube-sim`), with one extra context
    /// per configured user.
    pub fn kubeconfig(&self) -> String {
        let users: Vec<KubeconfigUser> = self
            .users
            .iter()
            .map(|u| KubeconfigUser {
                name: u.name.clone(),
                token: u.token.clone(),
            })
            .collect();
        tls::kubeconfig(&self.url(), &self.certs.ca_pem, &self.admin_token, &users)
    }

    /// Writes the kubeconfig to `path` (mode 0600 on Unix).
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(())
    }

    /// Runs a future on the simulator's runtime and waits for it (usable from
    /// synchronous and asynchronous callers alike).
    fn run<F, T>(&self, fut: F) -> T
    where
        F: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        self.runtime.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().expect("the simulator runtime is running")
    }

    /// Marks a workload healthy, as its controller would (Deployment,
    /// StatefulSet, DaemonSet, ReplicaSet, Job, Pod, PVC, LoadBalancer Service).
    pub fn set_ready(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> ApiResult<Value> {
        let sim = self.sim.clone();
        let (a, k, n, m) = (
            api_version.to_string(),
            kind.to_string(),
            namespace.to_string(),
            name.to_string(),
        );
        self.run(async move { sim.set_ready(&a, &k, &n, &m).await.map(|o| (*o).clone()) })
    }

    /// Marks a workload failed for good (Deployment progress deadline, Job
    /// backoff limit, Pod failed).
    pub fn set_failed(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> ApiResult<Value> {
        let sim = self.sim.clone();
        let (a, k, n, m) = (
            api_version.to_string(),
            kind.to_string(),
            namespace.to_string(),
            name.to_string(),
        );
        self.run(async move { sim.set_failed(&a, &k, &n, &m).await.map(|o| (*o).clone()) })
    }

    /// Marks a CRD Established (for simulators started without automatic
    /// establishment).
    pub fn establish_crd(&self, name: &str) -> ApiResult<Value> {
        let sim = self.sim.clone();
        let n = name.to_string();
        self.run(async move { sim.establish_crd(&n).await.map(|o| (*o).clone()) })
    }

    /// Creates (or, for objects that exist, server-side applies) an object as the
    /// admin, bypassing admission webhooks.
    pub fn load(&self, object: Value) -> Result<(), String> {
        let sim = self.sim.clone();
        self.run(async move { sim.load(object).await })
    }

    /// Forgets all watch history (plays etcd compaction): watches and lists from
    /// an older resourceVersion get 410 Gone.
    pub fn compact(&self) {
        self.sim.store.compact();
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.sim.store.current_rv()
    }

    /// Requests served so far, per verb (`get`, `list`, `watch`, `create`,
    /// `update`, `patch`, `delete`, `deletecollection`; a non-resource
    /// request under its lower-case method). Health probes are not counted.
    pub fn request_counts(&self) -> std::collections::BTreeMap<String, u64> {
        self.sim
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Starts counting requests from zero.
    pub fn reset_request_counts(&self) {
        self.sim
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Replaces the fault configuration at run time (the fault sequence
    /// starts over from its seed).
    pub fn set_faults(&self, faults: crate::faults::FaultConfig) {
        self.sim.faults.set_config(faults);
    }

    /// The fault configuration in force.
    pub fn faults(&self) -> crate::faults::FaultConfig {
        self.sim.faults.config()
    }

    /// Faults injected so far, per verb.
    pub fn fault_counts(&self) -> BTreeMap<String, crate::faults::FaultCounts> {
        self.sim.faults.counts()
    }

    /// Starts counting injected faults from zero.
    pub fn reset_fault_counts(&self) {
        self.sim.faults.reset_counts();
    }

    /// Starts a network partition: every request of a user not in
    /// `FaultConfig::exempt_users` (and every unauthenticated one) hangs
    /// until the partition ends or the client gives up, and open watches of
    /// such users deliver no events until it ends.
    pub fn start_partition(&self) {
        self.sim.faults.set_partition(true);
    }

    /// Ends the partition: held requests proceed.
    pub fn end_partition(&self) {
        self.sim.faults.set_partition(false);
    }

    /// Whether a partition is in force.
    pub fn partitioned(&self) -> bool {
        self.sim.faults.partitioned()
    }

    /// Every request served (oldest first, up to
    /// `SimConfig::request_log_capacity`), with the user it was authenticated
    /// as, the impersonated user, verb, resource, namespace, name, status
    /// code and injected fault. Health probes are not logged.
    pub fn request_log(&self) -> Vec<crate::faults::RequestRecord> {
        self.sim.faults.records()
    }

    /// Empties the request log.
    pub fn clear_request_log(&self) {
        self.sim.faults.clear_log();
    }

    /// Stops serving and waits for the runtime to wind down.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for KubeSim {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Sim {
    /// Creates an object as the simulator (no admission), waiting for CRDs to be
    /// served before objects of their kinds.
    pub(crate) async fn load(self: &Arc<Self>, obj: Value) -> Result<(), String> {
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let name = crate::sim::meta_str(&obj, "name").to_string();
        let Some(rt) = self.registry().by_kind(&api_version, &kind) else {
            return Err(format!(
                "{kind} {name}: no such kind is served ({api_version})"
            ));
        };
        let ns = crate::sim::meta_str(&obj, "namespace").to_string();
        let ns = if rt.namespaced && ns.is_empty() {
            "default".to_string()
        } else {
            ns
        };
        let ctx = crate::sim::WriteCtx::internal("kube-sim");
        let ctx = crate::sim::WriteCtx {
            field_manager: "kube-sim".into(),
            ..ctx
        };
        match self.create(&ctx, &rt, &ns, obj.clone()).await {
            Ok(_) => Ok(()),
            Err(e) if e.reason == "AlreadyExists" => self
                .patch(
                    &ctx,
                    &rt,
                    &ns,
                    &name,
                    crate::sim::PatchKind::Apply { force: true },
                    obj,
                )
                .await
                .map(|_| ())
                .map_err(|e| format!("{kind} {name}: {}", e.message)),
            Err(e) => Err(format!("{kind} {name}: {}", e.message)),
        }
    }
}

/// Reads every `.yaml`/`.yml`/`.json` file under `dir` (sorted, recursively) into
/// objects; multi-document YAML and `List` kinds are flattened.
pub fn read_manifests(dir: &Path) -> Result<Vec<Value>, String> {
    let mut files = Vec::new();
    collect_files(dir, &mut files).map_err(|e| format!("{}: {e}", dir.display()))?;
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc)
                .map_err(|e| format!("{}: {e}", f.display()))?;
            flatten(v, &mut out);
        }
    }
    Ok(out)
}

fn flatten(v: Value, out: &mut Vec<Value>) {
    if v.is_null() {
        return;
    }
    if v.get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("List"))
        && let Some(items) = v.get("items").and_then(Value::as_array)
    {
        for i in items {
            flatten(i.clone(), out);
        }
        return;
    }
    out.push(v);
}

fn collect_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_files(&path, out)?;
        } else if path
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        {
            out.push(path);
        }
    }
    Ok(())
}
