//! MetricSource and Threshold: the embedded types that error budgets, promotion
//! analysis, fast-track and FleetRollout wave gates use to read one number.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::LocalObjectReference;

/// Where a scalar comes from: exactly one of a Prometheus instant query or a JSON
/// webhook.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MetricSource {
    /// A Prometheus instant query that yields a scalar or a one-sample vector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusSource>,
    /// An HTTP endpoint answering JSON, from which a JSONPath picks one number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSource>,
}

/// A Prometheus instant query.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusSource {
    /// Base URL of the Prometheus API (http or https); the query is sent as
    /// `GET <address>/api/v1/query`.
    pub address: String,
    /// PromQL expression; it must yield a scalar or a vector with exactly one sample.
    pub query: String,
    /// Secret in the StageSet's namespace whose `token` key is sent as a bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
}

/// A JSON webhook read with GET.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSource {
    /// URL to GET (http or https), sent with `Accept: application/json`.
    pub url: String,
    /// kubectl-style JSONPath selecting exactly one number or numeric string.
    pub json_path: String,
    /// Secret in the StageSet's namespace whose `token` key is sent as a bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
}

/// Inclusive bounds a value must lie within. An unset bound is unbounded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Threshold {
    /// Smallest acceptable value (a decimal number, inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<String>,
    /// Largest acceptable value (a decimal number, inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<String>,
}
