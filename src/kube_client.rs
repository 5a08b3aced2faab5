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

/// Hands out Kubernetes clients.
#[derive(Clone)]
pub struct ClientFactory {
    config: kube::Config,
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

impl ClientFactory {
    /// A factory for a cluster configuration (the controller's identity).
    pub fn new(config: kube::Config) -> Result<ClientFactory, kube::Error> {
        let controller = kube::Client::try_from(config.clone())?;
        Ok(ClientFactory {
            config,
            controller,
            tenants: Arc::default(),
            kinds: Arc::default(),
        })
    }

    /// The configuration from `KUBECONFIG`, `~/.kube/config` or the in-cluster
    /// service account.
    pub async fn infer() -> Result<ClientFactory, String> {
        let config = kube::Config::infer().await.map_err(|e| e.to_string())?;
        ClientFactory::new(config).map_err(|e| e.to_string())
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
        let client = kube::Client::try_from(config).map_err(|source| IdentityError::Client {
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
