use super::*;

/// Every family with its exposed (sample) name and type.
const FAMILIES: &[(&str, &str)] = &[
    ("stageset_reconcile_total", "counter"),
    ("stageset_stage_applied_total", "counter"),
    ("stageset_action_runs_total", "counter"),
    ("stageset_drift_corrected_total", "counter"),
    ("stageset_update_deferred_total", "counter"),
    ("stageset_webhook_cert_renewal_failures_total", "counter"),
    ("stageset_watch_engagement_failures_total", "counter"),
    ("stageset_teardown_force_drop_total", "counter"),
    ("stageset_inventory_skipped_entries_total", "counter"),
    ("stageset_stage_ready", "gauge"),
    ("stageset_stage_promotion_pending", "gauge"),
    ("stageset_stage_promotion_blocked", "gauge"),
    ("stageset_budget_remaining", "gauge"),
    ("stageset_budget_frozen", "gauge"),
    ("stageset_metric_source_errors_total", "counter"),
    ("stageset_stage_budget_frozen", "gauge"),
    ("stageset_ledger_anchor_errors_total", "counter"),
    ("stageset_ledger_adoptions_total", "counter"),
    ("stageset_events_dropped_total", "counter"),
    ("controller_runtime_reconcile_total", "counter"),
    ("controller_runtime_reconcile_errors_total", "counter"),
    (
        "controller_runtime_terminal_reconcile_errors_total",
        "counter",
    ),
    ("controller_runtime_reconcile_panics_total", "counter"),
    ("controller_runtime_reconcile_time_seconds", "histogram"),
    ("controller_runtime_max_concurrent_reconciles", "gauge"),
    ("controller_runtime_active_workers", "gauge"),
    ("workqueue_depth", "gauge"),
    ("workqueue_adds_total", "counter"),
    ("workqueue_retries_total", "counter"),
    ("workqueue_queue_duration_seconds", "histogram"),
    ("workqueue_work_duration_seconds", "histogram"),
    ("workqueue_unfinished_work_seconds", "gauge"),
    ("workqueue_longest_running_processor_seconds", "gauge"),
    ("leader_election_master_status", "gauge"),
    ("rest_client_requests_total", "counter"),
    ("controller_runtime_webhook_requests_total", "counter"),
    ("controller_runtime_webhook_latency_seconds", "histogram"),
    ("controller_runtime_webhook_requests_in_flight", "gauge"),
    // Read from /proc at each scrape (metrics/process.rs).
    ("process_cpu_seconds_total", "counter"),
    ("process_resident_memory_bytes", "gauge"),
    ("process_virtual_memory_bytes", "gauge"),
    ("process_open_fds", "gauge"),
    ("process_start_time_seconds", "gauge"),
    ("process_max_fds", "gauge"),
];

#[test]
fn exactly_the_expected_families() {
    let m = Metrics::new(3);
    let text = m.encode();
    let types: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("# TYPE "))
        .map(str::to_string)
        .collect();
    let expected: Vec<String> = FAMILIES
        .iter()
        .map(|(name, kind)| {
            let family = if *kind == "counter" {
                name.strip_suffix("_total").expect("counters end in _total")
            } else {
                name
            };
            format!("# TYPE {family} {kind}")
        })
        .collect();
    assert_eq!(types, expected, "{text}");
    assert_eq!(
        FAMILIES
            .iter()
            .filter(|(n, _)| n.starts_with("stageset_"))
            .count(),
        19
    );
    // Counters carry the suffix exactly once.
    assert!(!text.contains("_total_total"), "{text}");
    assert!(text.ends_with("# EOF\n"));
    // The unlabelled counter exists from the start.
    assert!(
        text.contains("\nstageset_webhook_cert_renewal_failures_total 0\n"),
        "{text}"
    );
    m.cert_renewal_failed();
    assert!(
        m.encode()
            .contains("\nstageset_webhook_cert_renewal_failures_total 1\n")
    );
    // Both reasons of the bounded events-dropped family exist from the start.
    for reason in ["queue_full", "undeliverable"] {
        let line = format!("\nstageset_events_dropped_total{{reason=\"{reason}\"}} 0\n");
        assert!(text.contains(&line), "{line}\n{text}");
    }
    m.event_dropped(EventDropReason::QueueFull);
    m.event_dropped(EventDropReason::QueueFull);
    m.event_dropped(EventDropReason::Undeliverable);
    let after = m.encode();
    assert!(after.contains("\nstageset_events_dropped_total{reason=\"queue_full\"} 2\n"));
    assert!(after.contains("\nstageset_events_dropped_total{reason=\"undeliverable\"} 1\n"));
    // controller-runtime series exist at zero, like initMetrics.
    for line in [
        r#"controller_runtime_max_concurrent_reconciles{controller="stageset"} 3"#,
        r#"controller_runtime_active_workers{controller="stageset"} 0"#,
        r#"controller_runtime_reconcile_total{controller="stageset",result="success"} 0"#,
        r#"controller_runtime_reconcile_total{controller="stageset",result="requeue_after"} 0"#,
        r#"controller_runtime_reconcile_errors_total{controller="stageset"} 0"#,
        r#"controller_runtime_terminal_reconcile_errors_total{controller="stageset"} 0"#,
        r#"controller_runtime_reconcile_panics_total{controller="stageset"} 0"#,
        r#"workqueue_depth{controller="stageset",name="stageset"} 0"#,
        r#"workqueue_adds_total{controller="stageset",name="stageset"} 0"#,
        r#"workqueue_retries_total{controller="stageset",name="stageset"} 0"#,
    ] {
        assert!(text.contains(&format!("\n{line}\n")), "{line}\n{text}");
    }
}

fn buckets(text: &str, family: &str) -> Vec<String> {
    let prefix = format!("{family}_bucket{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.split("le=\"").nth(1))
        .filter_map(|l| l.split('"').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn histogram_buckets_are_controller_runtimes() {
    let m = Metrics::new(4);
    m.webhook_request("/validate", 200, 0.01);
    let text = m.encode();
    let reconcile: Vec<f64> = buckets(&text, "controller_runtime_reconcile_time_seconds")
        .iter()
        .filter(|b| *b != "+Inf")
        .map(|b| b.parse().unwrap())
        .collect();
    assert_eq!(reconcile, RECONCILE_TIME_BUCKETS);
    assert_eq!(reconcile.len(), 40);
    for family in [
        "workqueue_queue_duration_seconds",
        "workqueue_work_duration_seconds",
    ] {
        let b = buckets(&text, family);
        let values: Vec<f64> = b[..b.len() - 1]
            .iter()
            .map(|b| b.parse().unwrap())
            .collect();
        let expected = [
            1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0,
        ];
        assert_eq!(values.len(), expected.len(), "{family}: {b:?}");
        for (v, e) in values.iter().zip(expected) {
            assert!((v / e - 1.0).abs() < 1e-9, "{family}: {v} vs {e}");
        }
        assert_eq!(b.last().map(String::as_str), Some("+Inf"));
    }
    let webhook: Vec<f64> = buckets(&text, "controller_runtime_webhook_latency_seconds")
        .iter()
        .filter(|b| *b != "+Inf")
        .map(|b| b.parse().unwrap())
        .collect();
    assert_eq!(webhook, WEBHOOK_LATENCY_BUCKETS);
}

#[test]
fn workqueue_mapping() {
    let m = Arc::new(Metrics::new(2));
    m.workqueue_add();
    m.workqueue_add();
    let text = m.encode();
    assert!(text.contains(r#"workqueue_depth{controller="stageset",name="stageset"} 2"#));
    let guard = m.work_started(Instant::now());
    let text = m.encode();
    assert!(text.contains(r#"workqueue_depth{controller="stageset",name="stageset"} 1"#));
    assert!(text.contains(r#"controller_runtime_active_workers{controller="stageset"} 1"#));
    std::thread::sleep(Duration::from_millis(20));
    let text = m.encode();
    let longest = text
        .lines()
        .find(|l| l.starts_with("workqueue_longest_running_processor_seconds{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap();
    assert!(longest >= 0.02, "{text}");
    drop(guard);
    m.reconcile_result(ReconcileResult::Error);
    m.workqueue_retry();
    m.workqueue_drop();
    m.reconcile_result(ReconcileResult::RequeueAfter);
    m.reconcile_result(ReconcileResult::Requeue);
    m.reconcile_result(ReconcileResult::Success);
    m.reconcile_panicked();
    let text = m.encode();
    for line in [
        r#"workqueue_depth{controller="stageset",name="stageset"} 0"#,
        r#"workqueue_adds_total{controller="stageset",name="stageset"} 2"#,
        r#"workqueue_retries_total{controller="stageset",name="stageset"} 1"#,
        r#"workqueue_longest_running_processor_seconds{controller="stageset",name="stageset"} 0.0"#,
        r#"controller_runtime_active_workers{controller="stageset"} 0"#,
        r#"controller_runtime_reconcile_total{controller="stageset",result="error"} 2"#,
        r#"controller_runtime_reconcile_total{controller="stageset",result="requeue"} 1"#,
        r#"controller_runtime_reconcile_total{controller="stageset",result="requeue_after"} 1"#,
        r#"controller_runtime_reconcile_total{controller="stageset",result="success"} 1"#,
        r#"controller_runtime_reconcile_errors_total{controller="stageset"} 2"#,
        r#"controller_runtime_reconcile_panics_total{controller="stageset"} 1"#,
        r#"controller_runtime_reconcile_time_seconds_count{controller="stageset"} 1"#,
        r#"workqueue_work_duration_seconds_count{controller="stageset",name="stageset"} 1"#,
        r#"workqueue_queue_duration_seconds_count{controller="stageset",name="stageset"} 1"#,
    ] {
        assert!(text.contains(&format!("{line}\n")), "{line}\n{text}");
    }
}

#[test]
fn leader_and_webhook() {
    let m = Metrics::new(4);
    m.set_leader(crate::api::keys::LEASE_NAME, true);
    m.webhook_in_flight("/validate", 1);
    m.webhook_request("/validate", 200, 0.02);
    let text = m.encode();
    assert!(text.contains(
        r#"leader_election_master_status{name="stageset-controller.stages.metio.wtf"} 1"#
    ));
    assert!(text.contains(
        r#"controller_runtime_webhook_requests_total{webhook="/validate",code="200"} 1"#
    ));
    assert!(
        text.contains(r#"controller_runtime_webhook_requests_in_flight{webhook="/validate"} 1"#)
    );
    assert!(
        text.contains(r#"controller_runtime_webhook_latency_seconds_count{webhook="/validate"} 1"#)
    );
    m.webhook_in_flight("/validate", -1);
    m.set_leader(crate::api::keys::LEASE_NAME, false);
    let text = m.encode();
    assert!(
        text.contains(r#"controller_runtime_webhook_requests_in_flight{webhook="/validate"} 0"#)
    );
    assert!(text.contains(
        r#"leader_election_master_status{name="stageset-controller.stages.metio.wtf"} 0"#
    ));
}

fn record_everything(m: &Metrics, ns: &str, name: &str, stages: &[&str]) {
    m.reconcile_counted(ns, name, StageSetReason::Succeeded);
    m.reconcile_counted(ns, name, StageSetReason::StageFailed);
    m.teardown_force_dropped(ns, name, ForceDropReason::TimedOut);
    for stage in stages {
        m.stage_applied(ns, name, stage);
        m.drift_corrected(ns, name, stage, 3);
        m.inventory_skipped(ns, name, stage, 1);
    }
    let spec: Vec<String> = stages.iter().map(|s| s.to_string()).collect();
    let statuses: Vec<StageStatus> = stages
        .iter()
        .map(|s| StageStatus {
            name: s.to_string(),
            phase: Some(StagePhase::Ready),
            ..Default::default()
        })
        .collect();
    m.stage_statuses(ns, name, &spec, &statuses);
}

fn series_of(text: &str, ns: &str, name: &str) -> Vec<String> {
    let a = format!(r#"namespace="{ns}",name="{name}""#);
    let b = format!(r#"namespace="{ns}",stageset="{name}""#);
    text.lines()
        .filter(|l| !l.starts_with('#') && (l.contains(&a) || l.contains(&b)))
        .map(str::to_string)
        .collect()
}

#[test]
fn deletion_evicts_everything_but_the_force_drop_counter() {
    let m = Metrics::new(4);
    record_everything(&m, "n", "s", &["a", "b"]);
    record_everything(&m, "n", "other", &["a"]);
    let text = m.encode();
    assert!(
        text.contains(r#"stageset_drift_corrected_total{namespace="n",name="s",stage="a"} 3"#),
        "{text}"
    );
    assert!(text.contains(r#"stageset_stage_ready{namespace="n",stageset="s",stage="b"} 1"#));
    // Every family with a setter has a series for n/s (the families of
    // features not built yet get theirs when the feature lands).
    let before = series_of(&text, "n", "s");
    // 2 reasons, 1 force drop, 4 per stage.
    assert_eq!(before.len(), 2 + 1 + 4 * 2, "{before:#?}");
    // A deletion that no longer knows stage "b" still evicts it.
    m.forget_stageset("n", "s", &["a".to_string()]);
    let text = m.encode();
    assert_eq!(
        series_of(&text, "n", "s"),
        [r#"stageset_teardown_force_drop_total{namespace="n",name="s",reason="timed_out"} 1"#],
        "{text}"
    );
    // Other StageSets are untouched.
    assert_eq!(series_of(&text, "n", "other").len(), 2 + 1 + 4);
}

#[test]
fn removed_stages_lose_their_gauges() {
    let m = Metrics::new(4);
    record_everything(&m, "n", "s", &["a", "b"]);
    m.forget_stage("n", "s", "b");
    let text = m.encode();
    let b: Vec<String> = series_of(&text, "n", "s")
        .into_iter()
        .filter(|l| l.contains(r#"stage="b""#))
        .collect();
    // Counters (applied, drift, skipped) stay; the gauges go.
    assert_eq!(b.len(), 3, "{b:#?}");
    assert!(b.iter().all(|l| l.contains("_total{")), "{b:#?}");
    // Writing a status of a spec without "a" drops its gauges too.
    m.stage_statuses("n", "s", &[], &[]);
    let text = m.encode();
    assert!(!text.contains(r#"stageset_stage_ready{namespace="n",stageset="s""#));
    // And the deletion still evicts the counters of both.
    m.forget_stageset("n", "s", &[]);
    assert_eq!(series_of(&m.encode(), "n", "s").len(), 1);
}
