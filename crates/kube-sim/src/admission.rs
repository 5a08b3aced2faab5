//! Validating admission webhooks: the server calls every matching webhook of
//! every ValidatingWebhookConfiguration over TLS (verified with its caBundle),
//! honouring rules, selectors, failurePolicy, timeoutSeconds and sideEffects.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::registry::{ResourceType, StorageKey};
use crate::selectors::{labels_of, match_label_selector_object};
use crate::sim::{Operation, Sim, WriteCtx, meta_str};

fn matches_list(list: Option<&Value>, value: &str) -> bool {
    list.and_then(Value::as_array).is_some_and(|items| {
        items
            .iter()
            .filter_map(Value::as_str)
            .any(|i| i == "*" || i == value)
    })
}

fn matches_resource(list: Option<&Value>, resource: &str, subresource: &str) -> bool {
    list.and_then(Value::as_array).is_some_and(|items| {
        items.iter().filter_map(Value::as_str).any(|r| {
            if r == "*/*" {
                return true;
            }
            match (r.split_once('/'), subresource.is_empty()) {
                (None, true) => r == "*" || r == resource,
                (None, false) => false,
                (Some((res, sub)), false) => {
                    (res == "*" || res == resource) && (sub == "*" || sub == subresource)
                }
                (Some(_), true) => false,
            }
        })
    })
}

fn rule_matches(rule: &Value, op: Operation, rt: &ResourceType, subresource: &str) -> bool {
    let scope_ok = match rule.get("scope").and_then(Value::as_str).unwrap_or("*") {
        "Cluster" => !rt.namespaced,
        "Namespaced" => rt.namespaced,
        _ => true,
    };
    scope_ok
        && matches_list(rule.get("operations"), op.as_str())
        && matches_list(rule.get("apiGroups"), &rt.group)
        && matches_list(rule.get("apiVersions"), &rt.version)
        && matches_resource(rule.get("resources"), &rt.plural, subresource)
}

/// The `https://...` URL and, for services, the host to resolve to an address.
fn target(sim: &Sim, client_config: &Value) -> Result<(String, Option<(String, String)>), String> {
    if let Some(url) = client_config.get("url").and_then(Value::as_str) {
        return Ok((url.to_string(), None));
    }
    let svc = client_config
        .get("service")
        .ok_or("clientConfig has neither url nor service")?;
    let ns = svc.get("namespace").and_then(Value::as_str).unwrap_or("");
    let name = svc.get("name").and_then(Value::as_str).unwrap_or("");
    let path = svc.get("path").and_then(Value::as_str).unwrap_or("/");
    let port = svc.get("port").and_then(Value::as_i64).unwrap_or(443);
    let mapped = sim
        .config
        .service_map
        .get(&format!("{ns}/{name}"))
        .ok_or_else(|| format!("service \"{name}\" not found"))?;
    let host = format!("{name}.{ns}.svc");
    Ok((
        format!("https://{host}:{port}{path}"),
        Some((host, mapped.clone())),
    ))
}

fn http_client(
    ca_bundle: Option<&str>,
    resolve: Option<&(String, String)>,
    timeout: Duration,
) -> Result<reqwest::Client, String> {
    crate::tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    if let Some(b64) = ca_bundle {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("caBundle is not base64: {e}"))?;
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("caBundle: {e}"))?;
            roots.add(cert).map_err(|e| format!("caBundle: {e}"))?;
        }
    }
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut builder = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(timeout)
        .no_proxy();
    if let Some((host, addr)) = resolve {
        let sock: std::net::SocketAddr = addr
            .parse()
            .map_err(|e| format!("service map address {addr:?}: {e}"))?;
        builder = builder.resolve(host, sock);
    }
    builder.build().map_err(|e| e.to_string())
}

impl Sim {
    /// Runs the validating webhooks that match this request.
    pub(crate) async fn admit(
        self: &Arc<Self>,
        ctx: &WriteCtx,
        rt: &Arc<ResourceType>,
        op: Operation,
        object: &Value,
        old: Option<&Value>,
    ) -> ApiResult<()> {
        let key = StorageKey::new(
            "admissionregistration.k8s.io",
            "validatingwebhookconfigurations",
        );
        let (configs, _) = self.store.list(&key, None, None)?;
        if configs.is_empty() {
            return Ok(());
        }
        let subject = if object.is_null() {
            old.unwrap_or(&Value::Null)
        } else {
            object
        };
        let ns = meta_str(subject, "namespace").to_string();
        let name = meta_str(subject, "name").to_string();
        let ns_labels = if rt.group.is_empty() && rt.kind == "Namespace" {
            labels_of(subject)
        } else if !ns.is_empty() {
            self.store
                .get(&StorageKey::new("", "namespaces"), "", &ns)
                .map(|n| labels_of(&n))
                .unwrap_or_default()
        } else {
            Default::default()
        };
        for config in configs {
            for hook in config
                .get("webhooks")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let hook_name = hook.get("name").and_then(Value::as_str).unwrap_or("");
                let rules_match =
                    hook.get("rules")
                        .and_then(Value::as_array)
                        .is_some_and(|rules| {
                            rules
                                .iter()
                                .any(|r| rule_matches(r, op, rt, &ctx.subresource))
                        });
                if !rules_match {
                    continue;
                }
                if let Some(sel) = hook.get("namespaceSelector")
                    && (rt.namespaced || rt.kind == "Namespace")
                    && !match_label_selector_object(sel, &ns_labels)
                {
                    continue;
                }
                if let Some(sel) = hook.get("objectSelector") {
                    let new_ok =
                        !object.is_null() && match_label_selector_object(sel, &labels_of(object));
                    let old_ok =
                        old.is_some_and(|o| match_label_selector_object(sel, &labels_of(o)));
                    if !new_ok && !old_ok {
                        continue;
                    }
                }
                let side_effects = hook
                    .get("sideEffects")
                    .and_then(Value::as_str)
                    .unwrap_or("Unknown");
                if ctx.dry_run && !matches!(side_effects, "None" | "NoneOnDryRun") {
                    return Err(ApiError::bad_request(format!(
                        "admission webhook \"{hook_name}\" does not support dry run"
                    )));
                }
                let fail_open = hook.get("failurePolicy").and_then(Value::as_str) == Some("Ignore");
                let timeout = Duration::from_secs(
                    hook.get("timeoutSeconds")
                        .and_then(Value::as_u64)
                        .unwrap_or(10)
                        .clamp(1, 30),
                );
                let review = json!({
                    "apiVersion": "admission.k8s.io/v1",
                    "kind": "AdmissionReview",
                    "request": {
                        "uid": uuid::Uuid::new_v4().to_string(),
                        "kind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
                        "resource": {"group": rt.group, "version": rt.version, "resource": rt.plural},
                        "requestKind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
                        "requestResource": {"group": rt.group, "version": rt.version, "resource": rt.plural},
                        "subResource": if ctx.subresource.is_empty() { Value::Null } else { json!(ctx.subresource) },
                        "name": name,
                        "namespace": if ns.is_empty() { Value::Null } else { json!(ns) },
                        "operation": op.as_str(),
                        "userInfo": {
                            "username": ctx.user.name,
                            "uid": ctx.user.uid,
                            "groups": ctx.user.groups,
                            "extra": ctx.user.extra,
                        },
                        "object": if object.is_null() { Value::Null } else { object.clone() },
                        "oldObject": old.cloned().unwrap_or(Value::Null),
                        "dryRun": ctx.dry_run,
                        "options": match op {
                            Operation::Create => json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": ctx.field_manager}),
                            Operation::Update => json!({"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": ctx.field_manager}),
                            Operation::Delete => json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1"}),
                        },
                    }
                });
                match self.call_webhook(hook, &review, timeout).await {
                    Ok(response) => {
                        let allowed = response
                            .pointer("/response/allowed")
                            .and_then(Value::as_bool)
                            .unwrap_or(false);
                        if !allowed {
                            let status = response
                                .pointer("/response/status")
                                .cloned()
                                .unwrap_or(json!({}));
                            let code = status.get("code").and_then(Value::as_u64).unwrap_or(0);
                            let code = if code < 400 { 400 } else { code as u16 };
                            let reason = status.get("reason").and_then(Value::as_str).unwrap_or("");
                            let message =
                                status.get("message").and_then(Value::as_str).unwrap_or("");
                            let denied =
                                format!("admission webhook \"{hook_name}\" denied the request");
                            let full = if !message.is_empty() {
                                format!("{denied}: {message}")
                            } else if !reason.is_empty() {
                                format!("{denied}: {reason}")
                            } else {
                                format!("{denied} without explanation")
                            };
                            let mut err = ApiError::new(code, reason, full);
                            if let Some(d) = status.get("details") {
                                err = err.with_details(d.clone());
                            }
                            return Err(err);
                        }
                    }
                    Err(e) if fail_open => {
                        tracing::warn!(webhook = hook_name, error = %e, "webhook failed; failurePolicy Ignore");
                    }
                    Err(e) => {
                        return Err(ApiError::internal(format!(
                            "Internal error occurred: failed calling webhook \"{hook_name}\": {e}"
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    async fn call_webhook(
        &self,
        hook: &Value,
        review: &Value,
        timeout: Duration,
    ) -> Result<Value, String> {
        let client_config = hook.get("clientConfig").cloned().unwrap_or(json!({}));
        let (url, resolve) = target(self, &client_config)?;
        let url_with_timeout = format!(
            "{url}{}timeout={}s",
            if url.contains('?') { "&" } else { "?" },
            timeout.as_secs()
        );
        let client = http_client(
            client_config.get("caBundle").and_then(Value::as_str),
            resolve.as_ref(),
            timeout,
        )?;
        let response = client
            .post(&url_with_timeout)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .body(serde_json::to_vec(review).map_err(|e| e.to_string())?)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "failed to call webhook: Post \"{url_with_timeout}\": {}",
                    error_chain(&e)
                )
            })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| format!("failed to read webhook response: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "received invalid webhook response: expected status 200, got {}",
                status.as_u16()
            ));
        }
        let body: Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("received invalid webhook response: {e}"))?;
        let expected_uid = review.pointer("/request/uid");
        if body.pointer("/response/uid") != expected_uid {
            return Err(format!(
                "expected response.uid={}, got {}",
                expected_uid.cloned().unwrap_or(Value::Null),
                body.pointer("/response/uid")
                    .cloned()
                    .unwrap_or(Value::Null)
            ));
        }
        Ok(body)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_rule_matching() {
        let r = json!(["stagesets"]);
        assert!(matches_resource(Some(&r), "stagesets", ""));
        assert!(!matches_resource(Some(&r), "stagesets", "status"));
        assert!(matches_resource(
            Some(&json!(["stagesets/status"])),
            "stagesets",
            "status"
        ));
        assert!(matches_resource(Some(&json!(["*/*"])), "x", "status"));
        assert!(matches_resource(Some(&json!(["*"])), "x", ""));
        assert!(!matches_resource(Some(&json!(["*"])), "x", "status"));
        assert!(matches_list(Some(&json!(["CREATE", "UPDATE"])), "UPDATE"));
        assert!(!matches_list(Some(&json!(["CREATE"])), "DELETE"));
    }
}
