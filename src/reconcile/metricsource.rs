//! Metric sources (delivery.md §5.2.2): one number from a Prometheus
//! instant query, fetched through the same outbound guard as http actions
//! (`--allowed-action-hosts`, the dial guard, redirects re-checked, no
//! credentials across hosts), with an optional bearer token from a Secret
//! read as the StageSet's ServiceAccount.
//!
//! JSON webhook sources are refused by admission until they are built.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;

use crate::api::{HttpMethod, MetricSource, PrometheusSource, StageSet};

use super::Env;
use super::error::describe;
use super::outbound::{HttpActionRequest, send};

/// Response bytes read at most.
pub const MAX_METRIC_BODY: usize = 1 << 20;

/// Reads the source's current value. Every failure is "source unavailable"
/// with a message that names the source, never the token.
pub async fn read(env: &Env, ss: &StageSet, source: &MetricSource) -> Result<f64, String> {
    match (&source.prometheus, &source.webhook) {
        (Some(p), None) => prometheus(env, ss, p).await,
        (None, Some(_)) => Err("webhook metric sources are not supported yet".into()),
        _ => Err("a metric source needs exactly one of prometheus or webhook".into()),
    }
}

/// The bearer token of a `secretRef` (key `token`), read as the StageSet's
/// ServiceAccount in its namespace.
async fn token(env: &Env, ss: &StageSet, name: &str) -> Result<Vec<u8>, String> {
    let namespace = ss.namespace().unwrap_or_default();
    let client = env
        .clients
        .for_service_account(&namespace, ss.spec.service_account_name.as_deref())
        .await
        .map_err(|e| e.to_string())?;
    let secret = Api::<Secret>::namespaced(client, &namespace)
        .get_opt(name)
        .await
        .map_err(|e| format!("reading Secret \"{name}\": {}", describe(&e)))?
        .ok_or_else(|| format!("Secret \"{name}\" does not exist"))?;
    secret
        .data
        .and_then(|d| d.get("token").map(|t| t.0.clone()))
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("Secret \"{name}\" has no non-empty key \"token\""))
}

async fn prometheus(env: &Env, ss: &StageSet, p: &PrometheusSource) -> Result<f64, String> {
    let query: String = url::form_urlencoded::byte_serialize(p.query.as_bytes()).collect();
    let url = format!(
        "{}/api/v1/query?query={query}",
        p.address.trim_end_matches('/')
    );
    let mut headers = BTreeMap::new();
    if let Some(r) = &p.secret_ref {
        let mut value = b"Bearer ".to_vec();
        value.extend(token(env, ss, &r.name).await?);
        headers.insert("Authorization".to_string(), value);
    }
    let mut req = HttpActionRequest::new(url, HttpMethod::Get);
    req.headers = headers;
    req.max_body = MAX_METRIC_BODY;
    let resp = send(req, &env.actions)
        .await
        .map_err(|e| format!("prometheus {}: {e}", p.address))?;
    if resp.body_truncated {
        return Err(format!(
            "prometheus {}: the answer is larger than {MAX_METRIC_BODY} bytes",
            p.address
        ));
    }
    parse_instant(&resp.body).map_err(|e| format!("prometheus {}: {e}", p.address))
}

/// The value of an instant query's answer: a scalar, or a vector of
/// exactly one sample; finite.
pub fn parse_instant(body: &[u8]) -> Result<f64, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| "the answer is not JSON".to_string())?;
    if v["status"] != "success" {
        let error = v["error"].as_str().unwrap_or("no error given");
        return Err(format!("the query failed: {error}"));
    }
    let data = &v["data"];
    let sample = match data["resultType"].as_str() {
        Some("scalar") => &data["result"],
        Some("vector") => {
            let result = data["result"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            match result {
                [one] => &one["value"],
                _ => {
                    return Err(format!(
                        "the query returned {} samples, not exactly one",
                        result.len()
                    ));
                }
            }
        }
        other => {
            return Err(format!(
                "the query returned a {}, not a scalar or a vector",
                other.unwrap_or("nothing")
            ));
        }
    };
    let text = sample[1].as_str().ok_or("the sample has no value")?;
    let value: f64 = text
        .parse()
        .map_err(|_| format!("the sample value {text:?} is not a number"))?;
    if !value.is_finite() {
        return Err(format!("the sample value {text} is not finite"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instant_answers() {
        let vector = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.7e9,"0.25"]}]}}"#;
        assert_eq!(parse_instant(vector), Ok(0.25));
        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1.7e9,"3"]}}"#;
        assert_eq!(parse_instant(scalar), Ok(3.0));
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(parse_instant(empty).unwrap_err().contains("0 samples"));
        let nan = br#"{"status":"success","data":{"resultType":"scalar","result":[1.7e9,"NaN"]}}"#;
        assert!(parse_instant(nan).unwrap_err().contains("not finite"));
        let failed = br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert_eq!(
            parse_instant(failed),
            Err("the query failed: parse error".into())
        );
        assert!(parse_instant(b"<html>").is_err());
    }
}
