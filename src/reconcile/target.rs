//! The cluster a StageSet delivers to (api.md §2.4.2, delivery.md R11/S4):
//! the controller's own, or a remote one named by `spec.kubeConfig.secretRef`.
//!
//! A remote cluster gets its own [`ClientFactory`] (its credentials, its
//! discovery cache, its impersonating tenant clients), built from the
//! kubeconfig in the Secret and cached by the Secret's resourceVersion, so an
//! edited or rotated kubeconfig is picked up on the next pass. The Secret is
//! read as the StageSet-level tenant on the controller's cluster. Status,
//! events, StageInventories and the StageLedger always stay on the
//! controller's cluster; applied objects, readiness reads, actions, prune and
//! teardown go to the target.
//!
//! The kubeconfig must be self-contained and is checked before use, failing
//! closed: credential plugins (`exec`, `auth-provider`) would run programs
//! or call out from the controller's pod, file references (`tokenFile`,
//! `client-certificate`, `client-key`, `certificate-authority`) would read
//! the controller's own files (its ServiceAccount token among them) and hand
//! them to a server the tenant chose, and `insecure-skip-tls-verify` turns
//! TLS off. All are refused with a message naming the field.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::api::StageSet;
use crate::kube_client::ClientFactory;

/// The default data key of the kubeconfig Secret.
pub const DEFAULT_KEY: &str = "value";

/// Why the target cluster could not be reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetError {
    pub message: String,
    /// The tenant may not read the Secret (Forbidden).
    pub denied: bool,
}

impl TargetError {
    fn new(message: impl Into<String>) -> TargetError {
        TargetError {
            message: message.into(),
            denied: false,
        }
    }
}

impl std::fmt::Display for TargetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A remote connection's cache key: (namespace, Secret, data key).
type RemoteKey = (String, String, String);
/// A remote connection and the Secret resourceVersion it was built from.
type Remote = (String, ClientFactory);

/// Remote cluster connections, by (namespace, Secret, key); each remembers
/// the Secret's resourceVersion it was built from.
#[derive(Default)]
pub struct Targets {
    remotes: Mutex<HashMap<RemoteKey, Remote>>,
}

impl std::fmt::Debug for Targets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.lock().len();
        f.debug_struct("Targets").field("remotes", &n).finish()
    }
}

impl Targets {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RemoteKey, Remote>> {
        self.remotes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The clients of the cluster `ss` delivers to: `local` unless
    /// `spec.kubeConfig.secretRef` names a kubeconfig.
    pub async fn resolve(
        &self,
        local: &ClientFactory,
        ss: &StageSet,
    ) -> Result<ClientFactory, TargetError> {
        let Some(reference) = ss
            .spec
            .kube_config
            .as_ref()
            .and_then(|k| k.secret_ref.as_ref())
        else {
            if ss
                .spec
                .kube_config
                .as_ref()
                .is_some_and(|k| k.config_map_ref.is_some())
            {
                // Refused by admission and R5 (not supported yet); never
                // fall back to the local cluster.
                return Err(TargetError::new(
                    "spec.kubeConfig.configMapRef is not supported yet by this controller",
                ));
            }
            return Ok(local.clone());
        };
        let namespace = ss.namespace().unwrap_or_default();
        let key = reference
            .key
            .as_deref()
            .filter(|k| !k.is_empty())
            .unwrap_or(DEFAULT_KEY);
        // Read as the StageSet-level tenant (api.md §2.4.1).
        let reader = local
            .for_service_account(&namespace, ss.spec.service_account_name.as_deref())
            .await
            .map_err(|e| TargetError::new(e.to_string()))?;
        let secrets: Api<Secret> = Api::namespaced(reader, &namespace);
        let secret = match secrets.get_opt(&reference.name).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Err(TargetError::new(format!(
                    "kubeConfig secret \"{}\" not found",
                    reference.name
                )));
            }
            Err(kube::Error::Api(s)) if s.code == 403 => {
                return Err(TargetError {
                    message: format!(
                        "reading kubeConfig secret \"{}\": {}",
                        reference.name, s.message
                    ),
                    denied: true,
                });
            }
            Err(e) => {
                return Err(TargetError::new(format!(
                    "reading kubeConfig secret \"{}\": {}",
                    reference.name,
                    crate::reconcile::error::describe(&e)
                )));
            }
        };
        let cache_key = (namespace.clone(), reference.name.clone(), key.to_string());
        let version = secret.resource_version().unwrap_or_default();
        if let Some((v, clients)) = self.lock().get(&cache_key)
            && *v == version
        {
            return Ok(clients.clone());
        }
        let text = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.clone())
            .filter(|b| !b.is_empty())
            .ok_or_else(|| {
                TargetError::new(format!(
                    "kubeConfig secret \"{}\" has no non-empty key \"{key}\"",
                    reference.name
                ))
            })?;
        let clients = connect(&text, local.rate_limit()).await.map_err(|e| {
            TargetError::new(format!("kubeConfig secret \"{}\": {e}", reference.name))
        })?;
        self.lock().insert(cache_key, (version, clients.clone()));
        Ok(clients)
    }
}

/// A client factory for a self-contained kubeconfig (see the module docs).
/// Errors never quote the kubeconfig: it holds credentials.
///
/// Its clients pass `limit`, the controller's own rate limit (DECISIONS 23).
pub async fn connect(
    text: &[u8],
    limit: &std::sync::Arc<crate::kube_client::RateLimit>,
) -> Result<ClientFactory, String> {
    let text = std::str::from_utf8(text).map_err(|_| "the kubeconfig is not UTF-8".to_string())?;
    let kubeconfig = Kubeconfig::from_yaml(text)
        .map_err(|e| format!("the kubeconfig cannot be parsed: {}", parse_error(&e)))?;
    check_self_contained(&kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("the kubeconfig is not usable: {}", parse_error(&e)))?;
    let server = config.cluster_url.to_string();
    let clients = ClientFactory::with_limit(config, limit.clone())
        .map_err(|e| format!("building a client for the kubeconfig: {e}"))?;
    // One request before the connection is cached, so an unreachable server
    // or refused credentials fail the pass here, named as such.
    clients
        .controller()
        .apiserver_version()
        .await
        .map_err(|e| match &e {
            kube::Error::Api(s) if s.code == 401 || s.code == 403 => format!(
                "the cluster at {server} refused the kubeconfig's credentials: {}",
                crate::reconcile::error::describe(&e)
            ),
            _ => format!(
                "the cluster at {server} cannot be reached: {}",
                crate::reconcile::error::describe(&e)
            ),
        })?;
    Ok(clients)
}

/// A kubeconfig error's message without what the kubeconfig contains: the
/// YAML parser quotes input in some errors, so only the error's kind is
/// kept for those.
fn parse_error(e: &kube::config::KubeconfigError) -> String {
    use kube::config::KubeconfigError as K;
    match e {
        K::Parse(_) => "not a valid kubeconfig document".into(),
        K::MissingClusterUrl => "the cluster has no server URL".into(),
        K::CurrentContextNotSet => "no current-context is set".into(),
        K::LoadContext(name) => format!("context \"{name}\" not found"),
        K::LoadClusterOfContext(name) => format!("cluster \"{name}\" not found"),
        K::ParseProxyUrl(_) => "the proxy-url is not a valid URL".into(),
        K::ParseClusterUrl(_) => "the cluster server is not a valid URL".into(),
        _ => "its credentials or certificates cannot be loaded".into(),
    }
}

/// Refuses what a tenant's kubeconfig may not do (see the module docs).
pub fn check_self_contained(kc: &Kubeconfig) -> Result<(), String> {
    for named in &kc.clusters {
        let Some(cluster) = &named.cluster else {
            continue;
        };
        let what = format!("cluster \"{}\"", named.name);
        if cluster.insecure_skip_tls_verify == Some(true) {
            return Err(format!(
                "{what} sets insecure-skip-tls-verify, which this controller refuses"
            ));
        }
        if cluster.certificate_authority.is_some() {
            return Err(format!(
                "{what} reads certificate-authority from a file; embed it as certificate-authority-data"
            ));
        }
    }
    for named in &kc.auth_infos {
        let Some(user) = &named.auth_info else {
            continue;
        };
        let what = format!("user \"{}\"", named.name);
        if user.exec.is_some() {
            return Err(format!(
                "{what} uses an exec credential plugin, which this controller never runs"
            ));
        }
        if user.auth_provider.is_some() {
            return Err(format!(
                "{what} uses an auth-provider, which this controller does not support"
            ));
        }
        if user.token_file.is_some() {
            return Err(format!(
                "{what} reads tokenFile from a file; embed the token"
            ));
        }
        if user.client_certificate.is_some() || user.client_key.is_some() {
            return Err(format!(
                "{what} reads client-certificate or client-key from a file; embed them as -data"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(cluster: &str, user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: c\n  context: {{cluster: k, user: u}}\nclusters:\n- name: k\n  cluster:\n    server: https://remote.example:6443\n{cluster}users:\n- name: u\n  user:\n{user}"
        )
    }

    fn check(text: &str) -> Result<(), String> {
        check_self_contained(&Kubeconfig::from_yaml(text).unwrap())
    }

    #[test]
    fn self_contained_kubeconfigs_pass() {
        assert_eq!(
            check(&kubeconfig(
                "    certificate-authority-data: Y2E=\n",
                "    token: abc\n"
            )),
            Ok(())
        );
    }

    #[test]
    fn plugins_files_and_insecure_tls_are_refused() {
        let cases = [
            (
                kubeconfig(
                    "",
                    "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: aws\n",
                ),
                "user \"u\" uses an exec credential plugin",
            ),
            (
                kubeconfig("", "    auth-provider:\n      name: gcp\n"),
                "user \"u\" uses an auth-provider",
            ),
            (
                kubeconfig(
                    "",
                    "    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token\n",
                ),
                "user \"u\" reads tokenFile from a file",
            ),
            (
                kubeconfig(
                    "",
                    "    client-certificate: /etc/cert.pem\n    client-key: /etc/key.pem\n",
                ),
                "user \"u\" reads client-certificate or client-key from a file",
            ),
            (
                kubeconfig(
                    "    certificate-authority: /etc/ca.pem\n",
                    "    token: abc\n",
                ),
                "cluster \"k\" reads certificate-authority from a file",
            ),
            (
                kubeconfig("    insecure-skip-tls-verify: true\n", "    token: abc\n"),
                "cluster \"k\" sets insecure-skip-tls-verify",
            ),
        ];
        for (text, want) in cases {
            let err = check(&text).unwrap_err();
            assert!(err.starts_with(want), "{err}");
        }
    }

    #[tokio::test]
    async fn unparseable_kubeconfigs_never_echo_their_content() {
        let secret = "users: [{name: u, token: s3cr3t-value";
        let err = match connect(secret.as_bytes(), &Default::default()).await {
            Err(e) => e,
            Ok(_) => panic!("parsed"),
        };
        assert!(err.starts_with("the kubeconfig cannot be parsed"), "{err}");
        assert!(!err.contains("s3cr3t"), "{err}");
        let err = match connect(b"apiVersion: v1\nkind: Config\n", &Default::default()).await {
            Err(e) => e,
            Ok(_) => panic!("usable"),
        };
        assert!(!err.is_empty());
    }
}
