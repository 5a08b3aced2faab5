//! Kubernetes clients: the controller's own, and one impersonating client per
//! tenant ServiceAccount (docs/decisions.md 1), plus a discovery cache that maps a
//! kind to its resource.
//!
//! Tenant identity is header impersonation: the controller's credentials plus
//! `Impersonate-User: system:serviceaccount:<ns>:<sa>` and the groups
//! `system:serviceaccounts` and `system:authenticated`. Impersonation does not
//! prove the ServiceAccount exists, so [`ClientFactory::for_service_account`]
//! reads it first and fails closed; a named ServiceAccount never falls back to
//! the controller's identity.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, ApiResource};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, Scope};

/// The field manager of every write the controller makes.
pub const FIELD_MANAGER: &str = crate::api::keys::FIELD_MANAGER;

/// Groups a tenant ServiceAccount is impersonated with.
pub const TENANT_GROUPS: [&str; 2] = ["system:serviceaccounts", "system:authenticated"];

/// The in-cluster file holding the pod's namespace, mounted beside the
/// token and CA the in-cluster client configuration reads.
pub const NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";
/// The environment variable naming the pod's namespace when the file is
/// absent (runs outside a cluster, tests).
pub const NAMESPACE_ENV: &str = "POD_NAMESPACE";

/// The namespace this replica runs in: the in-cluster service-account
/// namespace file, else `$POD_NAMESPACE`. The webhook certificate
/// (`actors::cert`, when `--webhook-service-namespace` is not given) and
/// leader election (`actors::lease`, the Lease's namespace) both use it.
///
/// It lives here rather than in `leader.rs` because it is a fact about the
/// in-cluster environment, read from the same service-account mount as the
/// in-cluster client's credentials, and not about leadership; and
/// `kube_client` sits below `actors` and imports none of the modules that
/// use it, so both actors can share it without breaking the layers.
pub fn pod_namespace() -> Result<String, String> {
    namespace_from(
        std::fs::read_to_string(NAMESPACE_FILE).ok(),
        std::env::var(NAMESPACE_ENV).ok(),
    )
}

/// [`pod_namespace`] over the file's content (`None`: unreadable) and the
/// variable's value; both are trimmed and a blank one does not count.
pub fn namespace_from(file: Option<String>, env: Option<String>) -> Result<String, String> {
    let trimmed = |s: Option<String>| s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let file_problem = if file.is_some() {
        "is empty"
    } else {
        "is not readable"
    };
    trimmed(file).or_else(|| trimmed(env)).ok_or_else(|| {
        format!(
            "cannot determine the pod namespace: {NAMESPACE_FILE} {file_problem} and \
             ${NAMESPACE_ENV} is not set (set ${NAMESPACE_ENV} outside a cluster; the \
             webhook's namespace can also be given with --webhook-service-namespace)"
        )
    })
}

/// Why a tenant client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("serviceaccount \"{name}\" not found in namespace \"{namespace}\"")]
    MissingServiceAccount { namespace: String, name: String },
    #[error("reading serviceaccount \"{namespace}/{name}\": {source}")]
    Lookup {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("building a client for serviceaccount \"{namespace}/{name}\": {source}")]
    Client {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Why a kind could not be mapped to a resource.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("{kind} ({api_version}) is not a kind the API server serves")]
    NotServed { api_version: String, kind: String },
    #[error("discovering {kind} ({api_version}): {source}")]
    Api {
        api_version: String,
        kind: String,
        #[source]
        source: kube::Error,
    },
}

/// A served kind: its resource and whether it is namespaced.
#[derive(Clone, Debug)]
pub struct Resource {
    pub api: ApiResource,
    pub namespaced: bool,
}

/// A client-side rate limit shared by every client of a controller process
/// (DECISIONS 23: Flux's `--kube-api-qps` 50 and `--kube-api-burst` 300):
/// a token bucket that starts full, holds `burst` tokens and refills at `qps`
/// per second. A request that finds it empty reserves the next token and
/// waits for it, so waiters are served in arrival order, as client-go's
/// limiter does.
#[derive(Debug)]
pub struct RateLimit {
    qps: f64,
    burst: f64,
    state: Mutex<Bucket>,
    granted: std::sync::atomic::AtomicU64,
    throttled: std::sync::atomic::AtomicU64,
    /// Told about every answered (or failed) request.
    observer: std::sync::OnceLock<Observer>,
}

struct Observer(RequestObserver);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestObserver")
    }
}

/// Told about every request a client of the process made, once it ended:
/// (code, or `<error>` when no answer came; method; host), the labels of
/// client-go's `rest_client_requests_total`.
pub type RequestObserver = Arc<dyn Fn(&str, &str, &str) + Send + Sync>;

#[derive(Debug)]
struct Bucket {
    /// Tokens left; negative while requests wait for reserved tokens.
    tokens: f64,
    refilled: tokio::time::Instant,
}

/// Flux's default `--kube-api-qps`.
pub const DEFAULT_QPS: f64 = 50.0;
/// Flux's default `--kube-api-burst`.
pub const DEFAULT_BURST: u32 = 300;

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit::new(DEFAULT_QPS, DEFAULT_BURST)
    }
}

impl RateLimit {
    /// A bucket of `burst` tokens (at least 1) refilled at `qps` per second
    /// (must be positive; validated by the flag parser).
    pub fn new(qps: f64, burst: u32) -> RateLimit {
        let burst = f64::from(burst.max(1));
        RateLimit {
            qps,
            burst,
            state: Mutex::new(Bucket {
                tokens: burst,
                refilled: tokio::time::Instant::now(),
            }),
            granted: Default::default(),
            throttled: Default::default(),
            observer: Default::default(),
        }
    }

    /// Reports every request of every client passing this limit to
    /// `observer` (set once; the controller counts them in its metrics).
    pub fn observe_requests(&self, observer: RequestObserver) {
        let _ = self.observer.set(Observer(observer));
    }

    /// Takes one token, waiting for it when the bucket is empty. Returns how
    /// long the caller had to wait.
    pub async fn acquire(&self) -> std::time::Duration {
        let wait = {
            let mut b = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = tokio::time::Instant::now();
            let elapsed = now.saturating_duration_since(b.refilled).as_secs_f64();
            b.tokens = (b.tokens + elapsed * self.qps).min(self.burst);
            b.refilled = now;
            b.tokens -= 1.0;
            if b.tokens >= 0.0 {
                std::time::Duration::ZERO
            } else {
                std::time::Duration::from_secs_f64(-b.tokens / self.qps)
            }
        };
        self.granted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if !wait.is_zero() {
            self.throttled
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if wait >= std::time::Duration::from_secs(1) {
                tracing::debug!(
                    wait_ms = wait.as_millis() as u64,
                    "waiting for the client-side rate limit (--kube-api-qps/--kube-api-burst)"
                );
            }
            tokio::time::sleep(wait).await;
        }
        wait
    }

    /// Requests that passed the limiter so far.
    pub fn granted(&self) -> u64 {
        self.granted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Requests that had to wait for a token so far.
    pub fn throttled(&self) -> u64 {
        self.throttled.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The tower layer that puts a [`RateLimit`] in front of a client's stack
/// and reports each request's outcome to the limit's observer.
#[derive(Clone)]
struct RateLimitLayer {
    limit: Arc<RateLimit>,
    /// `host[:port]` of the API server, for the observer.
    host: Arc<str>,
}

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;
    fn layer(&self, inner: S) -> RateLimited<S> {
        RateLimited {
            inner,
            limit: self.limit.clone(),
            host: self.host.clone(),
        }
    }
}

struct RateLimited<S> {
    inner: S,
    limit: Arc<RateLimit>,
    host: Arc<str>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for RateLimited<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    /// The inner stack's future is lazy (nothing is sent before it is
    /// polled), so it is created here and polled once a token is granted.
    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let limit = self.limit.clone();
        let host = self.host.clone();
        let method = request.method().as_str().to_string();
        let sent = self.inner.call(request);
        Box::pin(async move {
            limit.acquire().await;
            let answer = sent.await;
            if let Some(Observer(observe)) = limit.observer.get() {
                let code = match &answer {
                    Ok(r) => r.status().as_u16().to_string(),
                    Err(_) => "<error>".to_string(),
                };
                observe(&code, &method, &host);
            }
            answer
        })
    }
}

/// A client for `config` whose every request passes `limit`.
fn limited_client(
    config: kube::Config,
    limit: &Arc<RateLimit>,
) -> Result<kube::Client, kube::Error> {
    let host: Arc<str> = config
        .cluster_url
        .authority()
        .map(|a| a.as_str())
        .unwrap_or_default()
        .into();
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&RateLimitLayer {
            limit: limit.clone(),
            host,
        })
        .build())
}

/// Hands out Kubernetes clients.
#[derive(Clone)]
pub struct ClientFactory {
    config: kube::Config,
    limit: Arc<RateLimit>,
    controller: kube::Client,
    tenants: Arc<Mutex<HashMap<(String, String), kube::Client>>>,
    kinds: Arc<Mutex<HashMap<GroupVersionKind, Resource>>>,
}

impl std::fmt::Debug for ClientFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientFactory")
            .field("cluster", &self.config.cluster_url)
            .finish_non_exhaustive()
    }
}

fn gvk_of(api_version: &str, kind: &str) -> GroupVersionKind {
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    GroupVersionKind::gvk(group, version, kind)
}

/// The controller's cluster, in operations.md OPS-09's order: the kubeconfig
/// `KUBECONFIG` names when it is set, else the in-cluster ServiceAccount,
/// else `~/.kube/config` (kube-rs's own `infer` prefers `~/.kube/config` to
/// the in-cluster identity, which would let a file baked into an image win).
pub async fn load_config() -> Result<kube::Config, String> {
    let options = kube::config::KubeConfigOptions::default();
    if std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty()) {
        return kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| format!("KUBECONFIG: {e}"));
    }
    let in_cluster = match kube::Config::incluster() {
        Ok(config) => return Ok(config),
        Err(e) => e,
    };
    kube::Config::from_kubeconfig(&options).await.map_err(|e| {
        format!("no KUBECONFIG, not in a cluster ({in_cluster}), and no usable ~/.kube/config: {e}")
    })
}

impl ClientFactory {
    /// A factory for a cluster configuration (the controller's identity).
    /// Its clients share the default rate limit.
    pub fn new(config: kube::Config) -> Result<ClientFactory, kube::Error> {
        ClientFactory::with_limit(config, Arc::new(RateLimit::default()))
    }

    /// A factory whose clients (the controller's and every tenant's) pass
    /// `limit`; remote clusters reuse it (DECISIONS 23: one budget per process).
    pub fn with_limit(
        config: kube::Config,
        limit: Arc<RateLimit>,
    ) -> Result<ClientFactory, kube::Error> {
        let controller = limited_client(config.clone(), &limit)?;
        Ok(ClientFactory {
            config,
            limit,
            controller,
            tenants: Arc::default(),
            kinds: Arc::default(),
        })
    }

    /// A factory for the cluster [`load_config`] finds.
    pub async fn infer() -> Result<ClientFactory, String> {
        ClientFactory::new(load_config().await?).map_err(|e| e.to_string())
    }

    /// The rate limit every client of this factory passes.
    pub fn rate_limit(&self) -> &Arc<RateLimit> {
        &self.limit
    }

    /// The controller's own client.
    pub fn controller(&self) -> kube::Client {
        self.controller.clone()
    }

    /// The client that acts for a StageSet or stage: the named ServiceAccount
    /// (impersonated, after checking it exists), or the controller itself when no
    /// ServiceAccount is named (single-tenant mode).
    pub async fn for_service_account(
        &self,
        namespace: &str,
        service_account: Option<&str>,
    ) -> Result<kube::Client, IdentityError> {
        let Some(sa) = service_account.filter(|s| !s.is_empty()) else {
            return Ok(self.controller.clone());
        };
        let sas: Api<ServiceAccount> = Api::namespaced(self.controller.clone(), namespace);
        match sas.get_opt(sa).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(IdentityError::MissingServiceAccount {
                    namespace: namespace.to_string(),
                    name: sa.to_string(),
                });
            }
            Err(source) => {
                return Err(IdentityError::Lookup {
                    namespace: namespace.to_string(),
                    name: sa.to_string(),
                    source,
                });
            }
        }
        let key = (namespace.to_string(), sa.to_string());
        if let Some(client) = self.lock_tenants().get(&key) {
            return Ok(client.clone());
        }
        let mut config = self.config.clone();
        config.auth_info.impersonate = Some(format!("system:serviceaccount:{namespace}:{sa}"));
        config.auth_info.impersonate_groups =
            Some(TENANT_GROUPS.iter().map(|g| g.to_string()).collect());
        let client =
            limited_client(config, &self.limit).map_err(|source| IdentityError::Client {
                namespace: namespace.to_string(),
                name: sa.to_string(),
                source,
            })?;
        self.lock_tenants().insert(key, client.clone());
        Ok(client)
    }

    fn lock_tenants(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), kube::Client>> {
        self.tenants.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets cached tenant clients of a namespace (e.g. when its StageSets go).
    pub fn forget_namespace(&self, namespace: &str) {
        self.lock_tenants().retain(|(ns, _), _| ns != namespace);
    }

    /// The resource serving `kind` at `api_version`. Cached; a kind that is not
    /// (yet) served is looked up again on every call, so CRDs installed by an
    /// earlier stage are found by later ones.
    pub async fn resource(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<Resource, DiscoveryError> {
        let gvk = gvk_of(api_version, kind);
        if let Some(r) = self
            .kinds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&gvk)
        {
            return Ok(r.clone());
        }
        match kube::discovery::pinned_kind(&self.controller, &gvk).await {
            Ok((api, caps)) => {
                let r = Resource {
                    api,
                    namespaced: is_namespaced(&caps),
                };
                self.kinds
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(gvk, r.clone());
                Ok(r)
            }
            Err(kube::Error::Discovery(_)) => Err(DiscoveryError::NotServed {
                api_version: api_version.to_string(),
                kind: kind.to_string(),
            }),
            Err(kube::Error::Api(s)) if s.code == 404 => Err(DiscoveryError::NotServed {
                api_version: api_version.to_string(),
                kind: kind.to_string(),
            }),
            Err(source) => Err(DiscoveryError::Api {
                api_version: api_version.to_string(),
                kind: kind.to_string(),
                source,
            }),
        }
    }

    /// Drops a cached kind (after the API server said it no longer serves it).
    pub fn forget_kind(&self, api_version: &str, kind: &str) {
        self.kinds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&gvk_of(api_version, kind));
    }
}

fn is_namespaced(caps: &ApiCapabilities) -> bool {
    matches!(caps.scope, Scope::Namespaced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_sources() {
        assert_eq!(namespace_from(Some("ops\n".into()), None).unwrap(), "ops");
        assert_eq!(
            namespace_from(Some("ops".into()), Some("env".into())).unwrap(),
            "ops"
        );
        assert_eq!(namespace_from(None, Some("env".into())).unwrap(), "env");
        assert_eq!(
            namespace_from(Some(" ".into()), Some(" env\n".into())).unwrap(),
            "env"
        );
        let err = namespace_from(None, Some("".into())).unwrap_err();
        assert!(
            err.starts_with("cannot determine the pod namespace: "),
            "{err}"
        );
        assert!(
            err.contains(NAMESPACE_FILE) && err.contains("$POD_NAMESPACE"),
            "{err}"
        );
        assert!(err.contains("is not readable"), "{err}");
        assert!(err.contains("--webhook-service-namespace"), "{err}");
        let err = namespace_from(Some("\n".into()), None).unwrap_err();
        assert!(err.contains(&format!("{NAMESPACE_FILE} is empty")), "{err}");
    }
}

#[cfg(test)]
mod rate_limit_tests {
    use super::*;
    use std::time::Duration;

    fn close(a: Duration, b: Duration) -> bool {
        a.abs_diff(b) < Duration::from_micros(10)
    }

    /// The bucket starts full, then paces at `qps`, and refills while idle
    /// (virtual time: the tokio clock is paused and advanced by the sleeps).
    #[tokio::test(start_paused = true)]
    async fn bursts_then_paces_then_refills() {
        let limit = RateLimit::new(10.0, 3);
        for _ in 0..3 {
            assert_eq!(limit.acquire().await, Duration::ZERO);
        }
        let waited = limit.acquire().await;
        assert!(close(waited, Duration::from_millis(100)), "{waited:?}");
        let waited = limit.acquire().await;
        assert!(close(waited, Duration::from_millis(100)), "{waited:?}");
        assert_eq!(limit.throttled(), 2);
        // Idle for a second: the bucket holds `burst` again, not more.
        tokio::time::sleep(Duration::from_secs(1)).await;
        for _ in 0..3 {
            assert_eq!(limit.acquire().await, Duration::ZERO);
        }
        assert!(limit.acquire().await > Duration::ZERO);
        assert_eq!(limit.granted(), 9);
    }

    /// Concurrent waiters reserve successive tokens: five requests on an
    /// empty bucket at 10 qps finish 0.5 s later, in arrival order.
    #[tokio::test(start_paused = true)]
    async fn concurrent_waiters_queue() {
        let limit = Arc::new(RateLimit::new(10.0, 1));
        limit.acquire().await;
        let start = tokio::time::Instant::now();
        let waits = futures::future::join_all((0..5).map(|_| {
            let limit = limit.clone();
            async move { limit.acquire().await }
        }))
        .await;
        for (i, w) in waits.iter().enumerate() {
            let expected = Duration::from_millis(100 * (i as u64 + 1));
            assert!(close(*w, expected), "waiter {i}: {w:?}");
        }
        let elapsed = start.elapsed();
        assert!(close(elapsed, Duration::from_millis(500)), "{elapsed:?}");
    }

    /// Every client of a factory — the controller's, a tenant's and a remote
    /// cluster's — passes the one shared limiter.
    #[tokio::test]
    async fn every_client_shares_the_limit() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let sim = kube_sim::KubeSim::start(kube_sim::Options::default()).expect("kube-sim starts");
        let text = sim.kubeconfig();
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&text).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("config");
        let limit = Arc::new(RateLimit::new(1000.0, 1000));
        let clients = ClientFactory::with_limit(config, limit.clone()).expect("clients");
        sim.reset_request_counts();
        let before = limit.granted();
        clients
            .controller()
            .apiserver_version()
            .await
            .expect("version");
        assert_eq!(limit.granted(), before + 1);
        // A tenant: the ServiceAccount lookup and the tenant's own request.
        let sas: Api<ServiceAccount> = Api::namespaced(clients.controller(), "default");
        sas.create(
            &Default::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "app"}})).unwrap(),
        )
        .await
        .expect("service account");
        let tenant = clients
            .for_service_account("default", Some("app"))
            .await
            .expect("tenant client");
        let _ = tenant.apiserver_version().await;
        let remote = crate::reconcile::target::connect(text.as_bytes(), clients.rate_limit())
            .await
            .expect("remote");
        let _ = remote.controller().apiserver_version().await;
        let seen: u64 = sim.request_counts().values().sum();
        assert_eq!(limit.granted() - before, seen, "{:?}", sim.request_counts());
        assert!(seen >= 5, "{seen}");
    }
}
