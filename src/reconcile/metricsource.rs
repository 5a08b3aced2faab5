//! Metric sources (delivery.md §5.2.2): one number from a Prometheus
//! instant query or from a JSON webhook through a kubectl JSONPath, fetched
//! with `Accept: application/json` through the same outbound guard as http
//! actions (`--allowed-action-hosts`, the dial guard, redirects re-checked,
//! no credentials across hosts, 30 s, 1 MiB), with an optional bearer token
//! from a Secret read as the StageSet's ServiceAccount.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;

use crate::api::{
    HttpMethod, LocalObjectReference, MetricSource, PrometheusSource, StageSet, WebhookSource,
};
use crate::validate::jsonpath::JsonPath;

use super::Env;
use super::error::describe;
use super::outbound::{HttpActionRequest, send};

/// Response bytes read at most.
pub const MAX_METRIC_BODY: usize = 1 << 20;

/// Reads the source's current value. Every failure is "source unavailable"
/// with a message that names the source, never the token.
pub async fn read(env: &Env, ss: &StageSet, source: &MetricSource) -> Result<f64, String> {
    read_as(env, Some(ss), source).await
}

/// Reads a source that carries no credentials (FleetRollout wave gates,
/// read with the controller's identity): a `secretRef` is refused.
pub async fn read_anonymous(env: &Env, source: &MetricSource) -> Result<f64, String> {
    read_as(env, None, source).await
}

async fn read_as(env: &Env, ss: Option<&StageSet>, source: &MetricSource) -> Result<f64, String> {
    match (&source.prometheus, &source.webhook) {
        (Some(p), None) => prometheus(env, ss, p).await,
        (None, Some(w)) => webhook(env, ss, w).await,
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

/// GETs `url` as a metric source does and returns the body, at most
/// [`MAX_METRIC_BODY`] bytes.
async fn get(
    env: &Env,
    ss: Option<&StageSet>,
    url: String,
    secret_ref: Option<&LocalObjectReference>,
) -> Result<bytes::Bytes, String> {
    let mut headers = BTreeMap::new();
    if let Some(r) = secret_ref {
        let Some(ss) = ss else {
            return Err("a secretRef is not supported here".to_string());
        };
        let mut value = b"Bearer ".to_vec();
        value.extend(token(env, ss, &r.name).await?);
        headers.insert("Authorization".to_string(), value);
    }
    let mut req = HttpActionRequest::new(url, HttpMethod::Get);
    req.headers = headers;
    req.max_body = MAX_METRIC_BODY;
    req.accept = Some("application/json");
    let resp = send(req, &env.actions).await.map_err(|e| e.to_string())?;
    if resp.body_truncated {
        return Err(format!("the answer is larger than {MAX_METRIC_BODY} bytes"));
    }
    Ok(resp.body)
}

async fn prometheus(env: &Env, ss: Option<&StageSet>, p: &PrometheusSource) -> Result<f64, String> {
    let query: String = url::form_urlencoded::byte_serialize(p.query.as_bytes()).collect();
    let url = format!(
        "{}/api/v1/query?query={query}",
        p.address.trim_end_matches('/')
    );
    get(env, ss, url, p.secret_ref.as_ref())
        .await
        .and_then(|body| parse_instant(&body))
        .map_err(|e| format!("prometheus {}: {e}", shown_url(&p.address)))
}

async fn webhook(env: &Env, ss: Option<&StageSet>, w: &WebhookSource) -> Result<f64, String> {
    let what = |e: String| format!("webhook {}: {e}", shown_url(&w.url));
    // A path that cannot work is known before anything is sent.
    let path = JsonPath::parse(&w.json_path).map_err(|e| what(format!("jsonPath {e}")))?;
    let body = get(env, ss, w.url.clone(), w.secret_ref.as_ref())
        .await
        .map_err(what)?;
    pick(&body, &path, &w.json_path).map_err(what)
}

/// The URL as it may appear in a message: without credentials, query or
/// fragment (either may carry a key).
fn shown_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "<unparsable URL>".to_string(),
    }
}

/// The one number `path` selects in a JSON answer: a JSON number or a
/// string holding one; finite.
pub fn pick(body: &[u8], path: &JsonPath, written: &str) -> Result<f64, String> {
    let doc: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| "the answer is not JSON".to_string())?;
    let found = path
        .find(&doc)
        .map_err(|e| format!("jsonPath {written}: {e}"))?;
    let value = match found.as_slice() {
        [one] => *one,
        [] => return Err(format!("jsonPath {written} matches nothing in the answer")),
        many => {
            return Err(format!(
                "jsonPath {written} matches {} values, not exactly one",
                many.len()
            ));
        }
    };
    let number = match value {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    let shown = |v: &serde_json::Value| {
        let text = v.to_string();
        if text.len() > 64 {
            format!("{}…", &text[..text.floor_char_boundary(64)])
        } else {
            text
        }
    };
    let number = number.ok_or_else(|| {
        format!(
            "jsonPath {written} selects {}, which is not a number",
            shown(value)
        )
    })?;
    if !number.is_finite() {
        return Err(format!(
            "jsonPath {written} selects {}, which is not finite",
            shown(value)
        ));
    }
    Ok(number)
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

    #[test]
    fn webhook_answers() {
        let pick = |body: &str, path: &str| {
            super::pick(body.as_bytes(), &JsonPath::parse(path).unwrap(), path)
        };
        assert_eq!(pick(r#"{"remaining": 0.25}"#, "{.remaining}"), Ok(0.25));
        assert_eq!(pick(r#"{"remaining": " 12 "}"#, "{.remaining}"), Ok(12.0));
        assert_eq!(pick("3", "{$}"), Ok(3.0));
        assert_eq!(
            pick(
                r#"{"objectives":[{"errorBudgetRemaining":"0.5"}]}"#,
                "{.objectives[0].errorBudgetRemaining}"
            ),
            Ok(0.5)
        );
        assert_eq!(
            pick(r#"{"a": 1}"#, "{.remaining}"),
            Err("jsonPath {.remaining} matches nothing in the answer".into())
        );
        assert_eq!(
            pick(r#"{"xs": [1, 2]}"#, "{.xs[*]}"),
            Err("jsonPath {.xs[*]} matches 2 values, not exactly one".into())
        );
        assert_eq!(
            pick(r#"{"r": "lots"}"#, "{.r}"),
            Err(r#"jsonPath {.r} selects "lots", which is not a number"#.into())
        );
        assert_eq!(
            pick(r#"{"r": "NaN"}"#, "{.r}"),
            Err(r#"jsonPath {.r} selects "NaN", which is not finite"#.into())
        );
        assert!(
            pick(r#"{"r": true}"#, "{.r}")
                .unwrap_err()
                .contains("not a number")
        );
        assert!(
            pick(r#"{"r": {"x": 1}}"#, "{.r}")
                .unwrap_err()
                .contains("not a number")
        );
        assert!(pick("<html>", "{.r}").unwrap_err().contains("not JSON"));
        assert!(
            pick(r#"{"xs": []}"#, "{.xs[0]}")
                .unwrap_err()
                .contains("out of bounds")
        );
    }

    #[test]
    fn urls_in_messages_carry_no_secrets() {
        assert_eq!(
            shown_url("https://user:pw@slo.example/budget?key=abc#x"),
            "https://slo.example/budget"
        );
        assert_eq!(shown_url("::"), "<unparsable URL>");
    }
}
