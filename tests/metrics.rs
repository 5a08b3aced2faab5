//! Prometheus metrics end to end (operations.md §7.1–§7.3): a controller on
//! kube-sim runs a rollout, a stage removal, a failing StageSet, a held one and
//! a deletion; the `/metrics` exposition is scraped over HTTP and checked
//! against the bundled alert expressions, series eviction and the histogram
//! buckets.

#![recursion_limit = "256"]

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams};
use serde_json::json;
use stageset_controller::api::StageSet;
use support::*;

const NS: &str = "default";

/// The 11 built-in alert expressions of the bundled PrometheusRule
/// (operations.md §7.3), verbatim; [`render`] fills in the thresholds and the
/// chart placeholders with their defaults.
const ALERTS: &[(&str, &str)] = &[
    (
        "StageSetReconcileErrorsHigh",
        r#"sum by (namespace, name, reason) (rate(stageset_reconcile_total{reason!~"Succeeded|Suspended"}[5m])) > T.reconcileErrorRate"#,
    ),
    (
        "StageSetControllerWorkqueueDepthHigh",
        r#"workqueue_depth{controller="stageset"} > T.workqueueDepth"#,
    ),
    (
        "StageSetReconcileLatencyHigh",
        r#"histogram_quantile(0.99, sum by (le, controller) (rate(controller_runtime_reconcile_time_seconds_bucket{controller="stageset"}[10m]))) > T.reconcileLatencySeconds"#,
    ),
    (
        "StageSetControllerPodDown",
        r#"kube_pod_status_ready{namespace="<ns>",condition="true"} == 0 and on (namespace, pod) kube_pod_labels{namespace="<ns>",label_app_kubernetes_io_name="stageset-controller",label_app_kubernetes_io_instance="<release>",label_app_kubernetes_io_component="controller"}"#,
    ),
    (
        "StageSetWebhookCertRenewalFailing",
        r#"increase(stageset_webhook_cert_renewal_failures_total[1h]) > T.webhookCertRenewalFailuresPerHour"#,
    ),
    (
        "StageSetWatchEngagementFailing",
        r#"increase(stageset_watch_engagement_failures_total[1h]) > T.watchEngagementFailuresPerHour"#,
    ),
    ("StageSetBudgetFrozen", r#"stageset_budget_frozen == 1"#),
    (
        "StageSetStageBudgetFrozen",
        r#"stageset_stage_budget_frozen == 1"#,
    ),
    (
        "StageSetPromotionBlocked",
        r#"stageset_stage_promotion_blocked == 1"#,
    ),
    (
        "StageSetPromotionStuck",
        r#"stageset_stage_promotion_pending == 1"#,
    ),
    (
        "StageSetMetricSourceUnavailable",
        r#"increase(stageset_metric_source_errors_total[1h]) > T.metricSourceErrorsPerHour"#,
    ),
];

/// The chart's default thresholds and placeholder values.
fn render(expr: &str) -> String {
    let mut out = expr.to_string();
    for (k, v) in [
        ("T.reconcileErrorRate", "0.1"),
        ("T.workqueueDepth", "50"),
        ("T.reconcileLatencySeconds", "30"),
        ("T.webhookCertRenewalFailuresPerHour", "1"),
        ("T.watchEngagementFailuresPerHour", "1"),
        ("T.metricSourceErrorsPerHour", "3"),
        ("<ns>", "stageset-system"),
        ("<release>", "stageset-controller"),
    ] {
        out = out.replace(k, v);
    }
    out
}

// ---------------------------------------------------------------------------
// A small PromQL selector extractor.

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num,
    Op(String),
    Punct(char),
}

fn tokenize(expr: &str) -> Vec<Tok> {
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            out.push(Tok::Num);
        } else if c == '"' {
            i += 1;
            let mut s = String::new();
            while chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                s.push(chars[i]);
                i += 1;
            }
            i += 1;
            out.push(Tok::Str(s));
        } else if c == '[' {
            // A range (`[5m]`): no selector inside.
            while chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if "=!<>~".contains(c) {
            let start = i;
            while i < chars.len() && "=!<>~".contains(chars[i]) {
                i += 1;
            }
            out.push(Tok::Op(chars[start..i].iter().collect()));
        } else {
            out.push(Tok::Punct(c));
            i += 1;
        }
    }
    out
}

#[derive(Clone, Debug, Default)]
struct Selector {
    metric: String,
    /// (label, op, value).
    matchers: Vec<(String, String, String)>,
    /// Labels the expression groups or joins on around this selector.
    grouping: BTreeSet<String>,
}

const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
];

/// Aggregation operators (they may be followed by `by (…)` before their `(`).
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// The metric selectors of an expression, with their label matchers and the
/// labels the surrounding `by (…)` / `on (…)` clauses need.
fn selectors(expr: &str) -> Vec<Selector> {
    let toks = tokenize(expr);
    let mut out: Vec<Selector> = Vec::new();
    // (paren depth at which the group opened, labels).
    let mut groups: Vec<(usize, Vec<String>)> = Vec::new();
    let mut pending: Option<Vec<String>> = None;
    let mut joins: Vec<String> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    let label_list = |i: &mut usize| -> Vec<String> {
        assert_eq!(toks[*i], Tok::Punct('('), "{expr}");
        *i += 1;
        let mut labels = Vec::new();
        while toks[*i] != Tok::Punct(')') {
            if let Tok::Ident(l) = &toks[*i] {
                labels.push(l.clone());
            }
            *i += 1;
        }
        *i += 1;
        labels
    };
    while i < toks.len() {
        match &toks[i] {
            Tok::Ident(word) if word == "by" || word == "without" => {
                i += 1;
                let labels = label_list(&mut i);
                if word == "by" {
                    pending = Some(labels);
                }
            }
            Tok::Ident(word) if word == "on" || word == "ignoring" => {
                i += 1;
                let labels = label_list(&mut i);
                if word == "on" {
                    joins.extend(labels);
                }
            }
            Tok::Ident(word) if KEYWORDS.contains(&word.as_str()) => i += 1,
            Tok::Ident(word)
                if AGGREGATIONS.contains(&word.as_str())
                    || toks.get(i + 1) == Some(&Tok::Punct('(')) =>
            {
                // A function or aggregation; its `(` is handled below.
                i += 1;
            }
            Tok::Ident(metric) => {
                let mut s = Selector {
                    metric: metric.clone(),
                    ..Selector::default()
                };
                i += 1;
                if toks.get(i) == Some(&Tok::Punct('{')) {
                    i += 1;
                    while toks[i] != Tok::Punct('}') {
                        match (&toks[i], &toks[i + 1], &toks[i + 2]) {
                            (Tok::Ident(l), Tok::Op(op), Tok::Str(v)) => {
                                s.matchers.push((l.clone(), op.clone(), v.clone()));
                                i += 3;
                            }
                            (Tok::Punct(','), _, _) => i += 1,
                            other => panic!("unexpected matcher {other:?} in {expr}"),
                        }
                    }
                    i += 1;
                }
                for (_, labels) in &groups {
                    s.grouping.extend(labels.iter().cloned());
                }
                out.push(s);
            }
            Tok::Punct('(') => {
                depth += 1;
                if let Some(labels) = pending.take() {
                    groups.push((depth, labels));
                }
                i += 1;
            }
            Tok::Punct(')') => {
                if groups.last().is_some_and(|(d, _)| *d == depth) {
                    groups.pop();
                }
                depth -= 1;
                i += 1;
            }
            _ => i += 1,
        }
    }
    for s in &mut out {
        s.grouping.extend(joins.iter().cloned());
    }
    out
}

/// A label matcher against a value (absent labels match as "").
fn matches(op: &str, pattern: &str, value: &str) -> bool {
    // The alerts only use anchored alternations of plain words.
    let alternatives = || {
        assert!(
            pattern
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '|'),
            "regex {pattern:?} needs a real regex engine"
        );
        pattern.split('|').any(|a| a == value)
    };
    match op {
        "=" => value == pattern,
        "!=" => value != pattern,
        "=~" => alternatives(),
        "!~" => !alternatives(),
        other => panic!("unknown matcher {other}"),
    }
}

#[test]
fn the_selector_extractor_reads_the_alerts() {
    let s = selectors(&render(ALERTS[0].1));
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].metric, "stageset_reconcile_total");
    assert_eq!(
        s[0].matchers,
        [(
            "reason".to_string(),
            "!~".to_string(),
            "Succeeded|Suspended".to_string()
        )]
    );
    assert_eq!(
        s[0].grouping,
        ["name", "namespace", "reason"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    let s = selectors(&render(ALERTS[2].1));
    assert_eq!(
        s[0].metric,
        "controller_runtime_reconcile_time_seconds_bucket"
    );
    assert!(s[0].grouping.contains("le") && s[0].grouping.contains("controller"));
    let s = selectors(&render(ALERTS[3].1));
    let names: Vec<&str> = s.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(names, ["kube_pod_status_ready", "kube_pod_labels"]);
    assert!(s[1].grouping.contains("pod"));
    assert_eq!(s[1].matchers.len(), 4);
    let s = selectors(&render(ALERTS[6].1));
    assert_eq!(s[0].metric, "stageset_budget_frozen");
    assert!(s[0].matchers.is_empty() && s[0].grouping.is_empty());
    assert!(matches("!~", "Succeeded|Suspended", "StageFailed"));
    assert!(!matches("!~", "Succeeded|Suspended", "Suspended"));
}

// ---------------------------------------------------------------------------
// The exposition.

#[derive(Clone, Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

struct Exposition {
    /// Family name → type, from the `# TYPE` lines.
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

fn parse(text: &str) -> Exposition {
    let mut types = HashMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE line");
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() && chars[i] != '{' && chars[i] != ' ' {
            i += 1;
        }
        let name: String = chars[..i].iter().collect();
        let mut labels = BTreeMap::new();
        if chars[i] == '{' {
            i += 1;
            while chars[i] != '}' {
                let start = i;
                while chars[i] != '=' {
                    i += 1;
                }
                let label: String = chars[start..i].iter().collect();
                assert_eq!(chars[i + 1], '"', "{line}");
                i += 2;
                let mut value = String::new();
                while chars[i] != '"' {
                    if chars[i] == '\\' {
                        i += 1;
                        value.push(match chars[i] {
                            'n' => '\n',
                            c => c,
                        });
                    } else {
                        value.push(chars[i]);
                    }
                    i += 1;
                }
                i += 1;
                if chars[i] == ',' {
                    i += 1;
                }
                labels.insert(label, value);
            }
            i += 1;
        }
        let value: String = chars[i..].iter().collect();
        let value = value.split_whitespace().next().expect("a value");
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("value in {line}")),
        };
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    Exposition { types, samples }
}

impl Exposition {
    /// The family a sample name belongs to, with its type.
    fn family(&self, sample: &str) -> Option<(String, String)> {
        if let Some(t) = self.types.get(sample) {
            return Some((sample.to_string(), t.clone()));
        }
        let candidates = [
            ("_total", "counter"),
            ("_bucket", "histogram"),
            ("_sum", "histogram"),
            ("_count", "histogram"),
        ];
        candidates.iter().find_map(|(suffix, kind)| {
            let family = sample.strip_suffix(suffix)?;
            (self.types.get(family)? == kind).then(|| (family.to_string(), kind.to_string()))
        })
    }

    fn samples<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples(name)
            .find(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }

    /// The series of StageSet `namespace/name` (either label spelling).
    fn series_of(&self, namespace: &str, name: &str) -> Vec<String> {
        self.samples
            .iter()
            .filter(|s| {
                s.labels.get("namespace").map(String::as_str) == Some(namespace)
                    && (s.labels.get("name").map(String::as_str) == Some(name)
                        || s.labels.get("stageset").map(String::as_str) == Some(name))
            })
            .map(|s| format!("{} {:?}", s.name, s.labels))
            .collect()
    }

    fn le_bounds(&self, bucket: &str, labels: &[(&str, &str)]) -> Vec<String> {
        self.samples(bucket)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.labels["le"].clone())
            .collect()
    }
}

/// What the alert expressions need that the exposition lacks: metric names
/// that do not resolve, and selectors no series satisfies.
fn check_alerts(x: &Exposition) -> (BTreeSet<String>, Vec<String>) {
    let mut missing = BTreeSet::new();
    let mut problems = Vec::new();
    for (alert, expr) in ALERTS {
        let expr = render(expr);
        let found = selectors(&expr);
        assert!(!found.is_empty(), "{alert}: no selector in {expr}");
        for s in found {
            let Some((family, kind)) = x.family(&s.metric) else {
                missing.insert(s.metric.clone());
                continue;
            };
            // The sample name must have the form its type gives it.
            let expected_kind = if s.metric.ends_with("_total") {
                "counter"
            } else if s.metric.ends_with("_bucket") {
                "histogram"
            } else {
                "gauge"
            };
            if kind != expected_kind {
                problems.push(format!(
                    "{alert}: {} is a {kind} ({family}), expected a {expected_kind}",
                    s.metric
                ));
            }
            if s.matchers.is_empty() && s.grouping.is_empty() {
                continue;
            }
            let ok = x.samples(&s.metric).any(|sample| {
                s.grouping.iter().all(|l| sample.labels.contains_key(l))
                    && s.matchers.iter().all(|(l, op, v)| {
                        matches(
                            op,
                            v,
                            sample.labels.get(l).map(String::as_str).unwrap_or(""),
                        )
                    })
            });
            if !ok {
                problems.push(format!(
                    "{alert}: no {} series with labels {:?} matching {:?}",
                    s.metric, s.grouping, s.matchers
                ));
            }
        }
    }
    (missing, problems)
}

// ---------------------------------------------------------------------------
// The scenario.

async fn scrape(h: &Harness) -> String {
    let addr = h
        .controller
        .as_ref()
        .expect("controller")
        .bound()
        .metrics
        .expect("the metrics listener");
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(resp.status().as_u16(), 200);
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    resp.text().await.expect("body")
}

/// Scrapes until `pred` holds (up to 60 s).
async fn wait_metrics<F>(h: &Harness, what: &str, pred: F) -> Exposition
where
    F: Fn(&Exposition) -> bool,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = scrape(h).await;
        let x = parse(&text);
        if pred(&x) {
            return x;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_back_the_bundled_alerts_through_a_rollout_a_failure_and_a_deletion() {
    let h = Harness::start_with(HarnessOptions {
        listeners: true,
        flags: vec!["--concurrent=3".into()],
        ..Default::default()
    })
    .await;

    // Rollout: two stages, both Ready.
    for stage in ["a", "b"] {
        let art = h.artifact(
            &format!("{stage}.tar.gz"),
            &[("cm.yaml", &configmap(NS, &format!("cm-{stage}"), "x"))],
        );
        h.external_artifact(NS, stage, &art, "r1").await;
    }
    let two_stages = json!({"stages": [
        {"name": "a", "sourceRef": {"name": "a"}},
        {"name": "b", "sourceRef": {"name": "b"}}
    ]});
    h.stageset(NS, "shop", two_stages).await;
    h.wait_ready_reason(NS, "shop", "Succeeded", "Applied and verified 2 stage(s)")
        .await;
    let x = wait_metrics(&h, "the rollout's series", |x| {
        x.value(
            "stageset_reconcile_total",
            &[("name", "shop"), ("reason", "Succeeded")],
        )
        .is_some_and(|v| v >= 1.0)
            && x.value(
                "stageset_stage_ready",
                &[("stageset", "shop"), ("stage", "b")],
            ) == Some(1.0)
    })
    .await;
    for stage in ["a", "b"] {
        assert!(
            x.value(
                "stageset_stage_applied_total",
                &[("namespace", NS), ("name", "shop"), ("stage", stage)]
            )
            .is_some_and(|v| v >= 1.0),
            "stage {stage} applied"
        );
    }
    // client-go's request counter, labelled with the API server's host, and
    // the process families.
    let host = h.sim.url().trim_start_matches("https://").to_string();
    for method in ["GET", "PATCH"] {
        assert!(
            x.value(
                "rest_client_requests_total",
                &[("code", "200"), ("method", method), ("host", &host)]
            )
            .is_some_and(|v| v >= 1.0),
            "{method} requests to {host} are counted"
        );
    }
    assert_eq!(
        x.types.get("rest_client_requests").map(String::as_str),
        Some("counter")
    );
    assert!(
        x.value("process_cpu_seconds_total", &[])
            .is_some_and(|v| v > 0.0)
    );
    assert!(
        x.value("process_resident_memory_bytes", &[])
            .is_some_and(|v| v > 1_000_000.0)
    );
    assert!(x.value("process_open_fds", &[]).is_some_and(|v| v >= 3.0));
    assert!(x.value("process_max_fds", &[]).is_some_and(|v| v >= 64.0));
    assert!(
        x.value("process_start_time_seconds", &[])
            .is_some_and(|v| v > 1.7e9)
    );
    // The finalizer pass is a `requeue`, the success a `requeue_after`.
    let total = |x: &Exposition, result: &str| {
        x.value(
            "controller_runtime_reconcile_total",
            &[("controller", "stageset"), ("result", result)],
        )
        .unwrap_or(0.0)
    };
    assert!(total(&x, "requeue") >= 1.0);
    assert!(total(&x, "requeue_after") >= 1.0);
    assert_eq!(
        x.value(
            "controller_runtime_max_concurrent_reconciles",
            &[("controller", "stageset")]
        ),
        Some(3.0)
    );
    let queue = [("controller", "stageset"), ("name", "stageset")];
    assert!(x.value("workqueue_adds_total", &queue).unwrap() >= 2.0);
    assert!(x.value("workqueue_retries_total", &queue).unwrap() >= 2.0);
    assert!(
        x.value("workqueue_work_duration_seconds_count", &queue)
            .unwrap()
            >= 2.0
    );

    // A stage leaves the spec: its gauge goes, its counters stay.
    h.stageset(
        NS,
        "shop",
        json!({"stages": [{"name": "a", "sourceRef": {"name": "a"}}]}),
    )
    .await;
    h.wait_ready_reason(NS, "shop", "Succeeded", "Applied and verified 1 stage(s)")
        .await;
    let x = wait_metrics(&h, "the removed stage's gauge to go", |x| {
        x.value(
            "stageset_stage_ready",
            &[("stageset", "shop"), ("stage", "b")],
        )
        .is_none()
    })
    .await;
    assert_eq!(
        x.value(
            "stageset_stage_ready",
            &[("stageset", "shop"), ("stage", "a")]
        ),
        Some(1.0)
    );
    assert!(
        x.value(
            "stageset_stage_applied_total",
            &[("name", "shop"), ("stage", "b")]
        )
        .is_some()
    );

    // A failure: a stage whose ServiceAccount is missing keeps failing.
    h.stageset(
        NS,
        "broken",
        json!({"serviceAccountName": "ghost", "stages": [{"name": "app", "sourceRef": {"name": "a"}}]}),
    )
    .await;
    h.wait_ready_reason(NS, "broken", "StageFailed", "ghost")
        .await;
    // A hold: a missing dependency is not counted (§7.1.2).
    h.stageset(
        NS,
        "waiting",
        json!({"dependsOn": [{"name": "ghost"}], "stages": [{"name": "app", "sourceRef": {"name": "a"}}]}),
    )
    .await;
    h.wait_ready_reason(NS, "waiting", "DependencyNotReady", "")
        .await;
    let x = wait_metrics(&h, "the failure's series", |x| {
        x.value(
            "stageset_reconcile_total",
            &[("name", "broken"), ("reason", "StageFailed")],
        )
        .is_some()
            && x.value(
                "stageset_stage_ready",
                &[("stageset", "broken"), ("stage", "app")],
            ) == Some(0.0)
    })
    .await;
    assert!(total(&x, "error") >= 1.0);
    assert!(
        x.value(
            "controller_runtime_reconcile_errors_total",
            &[("controller", "stageset")]
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        x.samples("stageset_reconcile_total")
            .all(|s| s.labels["name"] != "waiting"),
        "DependencyNotReady is not counted"
    );
    assert!(
        x.samples("stageset_reconcile_total").all(
            |s| s.labels["reason"] != "DependencyNotReady" && s.labels["reason"] != "Suspended"
        )
    );

    // Deletion: every series of the StageSet goes (no force drop happened).
    assert!(!x.series_of(NS, "shop").is_empty());
    Api::<StageSet>::namespaced(h.client.clone(), NS)
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Api::<StageSet>::namespaced(h.client.clone(), NS)
        .get_opt("shop")
        .await
        .unwrap()
        .is_some()
    {
        assert!(Instant::now() < deadline, "shop was not torn down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let x = wait_metrics(&h, "the deleted StageSet's series to go", |x| {
        x.series_of(NS, "shop").is_empty()
    })
    .await;
    // The teardown pass ended without a requeue: a `success`.
    wait_metrics(&h, "the teardown's result", |x| total(x, "success") >= 1.0).await;
    // Still gone a moment later (nothing re-creates them).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = parse(&scrape(&h).await);
    assert_eq!(later.series_of(NS, "shop"), Vec::<String>::new());
    assert!(!later.series_of(NS, "broken").is_empty());

    // The alerts (§7.3) resolve: every metric they use is exported, with the
    // labels they filter and aggregate on; only kube-state-metrics' are not ours.
    let (missing, problems) = check_alerts(&x);
    assert_eq!(
        missing,
        ["kube_pod_labels", "kube_pod_status_ready"]
            .map(String::from)
            .into_iter()
            .collect::<BTreeSet<_>>()
    );
    assert!(problems.is_empty(), "{problems:#?}");

    // Histogram buckets are controller-runtime's.
    let reconcile = x.le_bounds(
        "controller_runtime_reconcile_time_seconds_bucket",
        &[("controller", "stageset")],
    );
    let expected: Vec<f64> = vec![
        0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8,
        0.9, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0,
        15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0,
    ];
    assert_eq!(reconcile.last().map(String::as_str), Some("+Inf"));
    let got: Vec<f64> = reconcile[..reconcile.len() - 1]
        .iter()
        .map(|b| b.parse().unwrap())
        .collect();
    assert_eq!(got, expected);
    for family in [
        "workqueue_queue_duration_seconds_bucket",
        "workqueue_work_duration_seconds_bucket",
    ] {
        let b = x.le_bounds(family, &queue);
        let got: Vec<f64> = b[..b.len() - 1]
            .iter()
            .map(|b| b.parse().unwrap())
            .collect();
        let expected: Vec<f64> = (0..12).map(|e| 10f64.powi(e - 8)).collect();
        assert_eq!(got.len(), expected.len(), "{family}: {b:?}");
        for (g, e) in got.iter().zip(&expected) {
            assert!((g / e - 1.0).abs() < 1e-9, "{family}: {g} vs {e}");
        }
        assert_eq!(b.last().map(String::as_str), Some("+Inf"));
    }
    // Reconciles were observed (count = the +Inf bucket).
    assert!(
        x.value(
            "controller_runtime_reconcile_time_seconds_count",
            &[("controller", "stageset")]
        )
        .unwrap()
            >= 3.0
    );
}

// ---------------------------------------------------------------------------
// The Grafana dashboard (charts/stageset-controller/files/dashboards).

/// The reconcile log lines of the run (operations.md §7.7): every line of a
/// pass carries the object and one `reconcileID`; a pass that delivered says
/// `StageSet synced`, a failing stage `stage failed` with its details.
async fn reconcile_log_lines(controller: &mut support::process::Controller) {
    let within = Duration::from_secs(60);
    let synced = controller.wait_line("StageSet synced", within).await;
    assert_eq!(synced["level"], "info", "{synced}");
    assert_eq!(synced["namespace"], NS, "{synced}");
    assert_eq!(synced["name"], "shop", "{synced}");
    assert_eq!(synced["controller"], "stageset", "{synced}");
    assert_eq!(synced["controllerGroup"], "stages.metio.wtf", "{synced}");
    assert_eq!(synced["controllerKind"], "StageSet", "{synced}");
    assert_eq!(synced["stages"], 1, "{synced}");
    assert_eq!(synced["ready"], true, "{synced}");
    assert!(
        synced["requeueAfter"]
            .as_str()
            .is_some_and(|d| d.ends_with('s')),
        "{synced}"
    );
    let id = synced["reconcileID"].as_str().expect("a reconcileID");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{synced}");
    // The pass's other lines carry the same id; other passes another.
    let logs = controller.logs();
    let same_pass: Vec<_> = logs.iter().filter(|l| l["reconcileID"] == id).collect();
    assert!(
        same_pass
            .iter()
            .any(|l| l["msg"] == "reconcile finished" && l["name"] == "shop"),
        "{same_pass:#?}"
    );
    assert!(
        same_pass
            .iter()
            .all(|l| l["namespace"] == NS && l["name"] == "shop"),
        "{same_pass:#?}"
    );
    let failed = controller.wait_line("stage failed", within).await;
    assert_eq!(failed["level"], "error", "{failed}");
    assert_eq!(failed["name"], "broken", "{failed}");
    assert_eq!(failed["stage"], "app", "{failed}");
    assert!(failed["op"].is_string(), "{failed}");
    assert!(failed["terminal"].is_boolean(), "{failed}");
    assert_eq!(failed["reason"], "StageFailed", "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("ghost")),
        "{failed}"
    );
    assert_ne!(failed["reconcileID"], synced["reconcileID"]);
}

/// Every query of the dashboard is evaluated by a real Prometheus that
/// scraped a controller through a run which exercises what the panels show
/// (a rollout, a failing StageSet, corrected drift, admission requests,
/// leader election): each must be valid PromQL and return at least one
/// finite sample, and every metric it names must be a family the
/// controller exports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_panel_has_data_on_a_real_prometheus() {
    if !support::prometheus::available("metrics") {
        return;
    }
    let h = Harness::start_with(HarnessOptions {
        start_controller: false,
        ..Default::default()
    })
    .await;
    let system = "stageset-system";
    h.namespace(system).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    h.sim.write_kubeconfig(&kubeconfig).unwrap();
    let certs = kube_sim::tls::generate(&[]).expect("certificates");
    std::fs::write(dir.path().join("tls.crt"), &certs.cert_pem).unwrap();
    std::fs::write(dir.path().join("tls.key"), &certs.key_pem).unwrap();
    let (metrics_port, webhook_port) = (free_port(), free_port());
    let mut controller = support::process::Controller::spawn(
        &kubeconfig,
        "dashboard-0",
        system,
        &[
            "--leader-elect".into(),
            format!("--metrics-bind-address=127.0.0.1:{metrics_port}"),
            "--enable-webhook=true".into(),
            "--webhook-cert-mode=cert-manager".into(),
            format!("--webhook-cert-dir={}", dir.path().display()),
            format!("--webhook-port={webhook_port}"),
        ],
    );
    let metrics_addr: std::net::SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    // Prometheus scrapes from the start, so rates see the run happen.
    let prometheus = support::prometheus::Prometheus::start(
        std::net::Ipv4Addr::LOCALHOST.into(),
        metrics_addr,
        "stageset-controller",
    );
    controller
        .wait_line("leader lease acquired", Duration::from_secs(60))
        .await;
    // Everything below happens after a first scrape, so rates and
    // quantiles see it.
    prometheus
        .wait_for_data(r#"up{job="stageset-controller"} == 1"#)
        .await;
    // The StageSet webhook, registered as the chart does.
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.encode(&certs.ca_pem);
    h.sim
        .load(json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "stageset-controller"},
            "webhooks": [{
                "name": "vstageset.stages.metio.wtf",
                "clientConfig": {
                    "url": format!("https://127.0.0.1:{webhook_port}/validate-stages-metio-wtf-v1-stageset"),
                    "caBundle": ca,
                },
                "rules": [{"apiGroups": ["stages.metio.wtf"], "apiVersions": ["v1"],
                    "operations": ["CREATE", "UPDATE"], "resources": ["stagesets"]}],
                "failurePolicy": "Fail", "sideEffects": "None", "admissionReviewVersions": ["v1"],
            }],
        }))
        .unwrap();
    // A rollout, a failing StageSet and corrected drift.
    let art = h.artifact("app.tar.gz", &[("cm.yaml", &configmap(NS, "app", "x"))]);
    h.external_artifact(NS, "app", &art, "r1").await;
    h.stageset(
        NS,
        "shop",
        json!({"stages": [{"name": "app", "sourceRef": {"name": "app"}}]}),
    )
    .await;
    h.wait_ready_reason(NS, "shop", "Succeeded", "").await;
    h.stageset(
        NS,
        "broken",
        json!({"serviceAccountName": "ghost", "stages": [{"name": "app", "sourceRef": {"name": "app"}}]}),
    )
    .await;
    h.wait_ready_reason(NS, "broken", "StageFailed", "ghost")
        .await;
    reconcile_log_lines(&mut controller).await;
    let cms = h.dynamic("v1", "ConfigMap", Some(NS)).await;
    cms.patch(
        "app",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"data": {"value": "drifted"}})),
    )
    .await
    .unwrap();
    Api::<StageSet>::namespaced(h.client.clone(), NS)
        .patch(
            "shop",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": "drift"}}}),
            ),
        )
        .await
        .unwrap();
    prometheus
        .wait_for_data("stageset_drift_corrected_total > 0")
        .await;
    prometheus
        .wait_for_data(r#"stageset_reconcile_total{reason="StageFailed"} > 0"#)
        .await;
    prometheus
        .wait_for_data("controller_runtime_webhook_requests_total > 0")
        .await;
    // Admission series appear with their first request: one more after
    // Prometheus saw them, so their rate is not 0.
    let before = prometheus
        .query("sum(controller_runtime_webhook_requests_total)")
        .await
        .unwrap()["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_default();
    h.stageset(
        NS,
        "later",
        json!({"suspend": true, "stages": [{"name": "app", "sourceRef": {"name": "app"}}]}),
    )
    .await;
    prometheus
        .wait_for_data(&format!(
            "sum(controller_runtime_webhook_requests_total) > {before}"
        ))
        .await;
    // Scrapes after the last change, so every rate has seen it.
    let scrapes = prometheus
        .query(r#"count_over_time(up{job="stageset-controller"}[10m])"#)
        .await
        .unwrap()["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_default();
    prometheus
        .wait_for_data(&format!(
            r#"count_over_time(up{{job="stageset-controller"}}[10m]) > {}"#,
            scrapes + 2
        ))
        .await;

    let exposition = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let families: BTreeSet<String> = parse(&exposition).types.keys().cloned().collect();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/charts/stageset-controller/files/dashboards/stageset-controller.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(dashboard["uid"], "stageset-controller");
    let names = regex::Regex::new(
        r"\b(?:stageset|controller_runtime|workqueue|leader_election|rest_client|process)_[a-z_]+",
    )
    .unwrap();
    let mut checked = 0;
    let mut problems = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap();
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {title} has no query");
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            assert!(
                !expr.contains("namespace"),
                "{title}: queries never name the namespace label"
            );
            for m in names.find_iter(expr) {
                let name = m.as_str();
                let family = ["_bucket", "_count", "_sum", "_total"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|f| families.contains(*f)))
                    .unwrap_or(name);
                if !families.contains(family) {
                    problems.push(format!("{title}: {name} is not exported"));
                }
            }
            let answer = prometheus.query(expr).await.unwrap();
            if answer["status"] != "success" {
                problems.push(format!("{title}: {expr}: {answer}"));
                continue;
            }
            let finite = answer["data"]["result"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["value"][1].as_str())
                .filter_map(|v| v.parse::<f64>().ok())
                .any(f64::is_finite);
            if !finite {
                problems.push(format!("{title}: {expr}: no finite sample: {answer}"));
            }
            checked += 1;
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(checked >= 20, "{checked} queries checked");
    controller.kill();
}
