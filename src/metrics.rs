//! Prometheus metrics (operations.md §7.1, §7.2; delivery.md §5.11): one
//! registry per controller, recorded by the pipeline and the actors, served in
//! the OpenMetrics text format at `/metrics` ([`Metrics::encode`],
//! [`CONTENT_TYPE`]).
//!
//! # Custom families (§7.1)
//!
//! Names, types and label names are the upstream ones, so existing dashboards
//! and the bundled alerts keep working. Counters are registered without the
//! `_total` suffix: the encoder appends it to the sample names (the OpenMetrics
//! `# TYPE` line names the family without it). Note the label split upstream
//! uses: `name` on most families, `stageset` on the per-stage gauges and the
//! skipped-entries counter.
//!
//! `stageset_reconcile_total` only counts the outcomes of §7.1.2 (the pipeline
//! calls [`Metrics::reconcile_counted`] from those paths only). Families whose
//! features are not built yet (actions, update windows, error budgets,
//! promotion, the lifetime ledger, dynamic watches, certificate renewal, metric
//! sources) are registered and exported so dashboards and alerts resolve; the
//! typed helpers below are what those features call.
//!
//! One family is ours, not upstream's: `stageset_events_dropped_total{reason}`
//! counts events that never reached notification-controller (`--events-addr`,
//! src/reconcile/notify.rs): `queue_full` when the bounded queue had no room,
//! `undeliverable` when delivery was given up (retries or the deadline
//! exhausted, a refusal, or the forwarder gone). Both series exist from the
//! start, at zero.
//!
//! Series lifecycle: [`Metrics::forget_stageset`] drops every series of a
//! deleted StageSet except `stageset_teardown_force_drop_total` (families 3, 17
//! and 18 included: ◆ Decision, D-23); [`Metrics::forget_stage`] drops the
//! per-stage gauges (10, 11, 12, 16) of a stage that left a live StageSet's
//! spec. The stage names a StageSet ever recorded are remembered, so a deletion
//! also evicts stages the caller no longer knows about.
//!
//! # controller-runtime families (§7.2)
//!
//! Emulated for the StageSet controller (`controller="stageset"`, and
//! `name="stageset"` on the workqueue families), mapped onto the actor model
//! (src/actors/stageset.rs) like this:
//!
//! - **add** (`workqueue_adds_total`, `workqueue_depth` +1): a StageSet actor
//!   is asked to run (a trigger arrives, its requeue timer fires, it starts or
//!   restarts) and is not already queued. A trigger arriving while its reconcile
//!   runs queues one coalesced follow-up run (client-go's "dirty" item); further
//!   triggers fold into it and are not counted again. Followers queue nothing.
//! - **queued**: from the add until the run holds one of the `--concurrent`
//!   permits (`workqueue_depth` counts these StageSets; the wait is observed in
//!   `workqueue_queue_duration_seconds`). A queued StageSet whose actor stops
//!   (StageSet gone) leaves the depth without being worked.
//! - **work**: the reconcile itself, while it holds the permit
//!   (`controller_runtime_active_workers`, `workqueue_work_duration_seconds`,
//!   `controller_runtime_reconcile_time_seconds`;
//!   `workqueue_unfinished_work_seconds` and
//!   `workqueue_longest_running_processor_seconds` are computed from the runs in
//!   progress at every scrape, so a worker parked in a verify wait shows up).
//! - **result** (`controller_runtime_reconcile_total{result}`): the pass's
//!   [`ReconcileResult`], which the pipeline derives from its requeue
//!   decision: `After` → `requeue_after`, `Now` → `requeue`, `Backoff` →
//!   `error` (plus `controller_runtime_reconcile_errors_total`), `Never` →
//!   `success`. A panicking reconcile counts `error` and
//!   `controller_runtime_reconcile_panics_total`. Terminal failures write their
//!   status and ask for a fixed re-check (docs/decisions.md 20: a minute for
//!   `RBACDenied`, the StageSet's interval otherwise), which counts as
//!   `requeue_after`, not as an error, so
//!   `controller_runtime_terminal_reconcile_errors_total` stays 0.
//! - **retry** (`workqueue_retries_total`): every requeue the pass asks for
//!   (`Now`, `After`, `Backoff`) and the restart after a panic, as client-go
//!   counts every `AddAfter`/`AddRateLimited`.
//! - `controller_runtime_max_concurrent_reconciles` is `--concurrent`.
//!
//! The leader-election and webhook families are recorded through
//! [`Metrics::set_leader`], [`Metrics::webhook_request`] and
//! [`Metrics::webhook_in_flight`].

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::reasons::StageSetReason;
use crate::api::{StagePhase, StageStatus};

mod labels;
pub mod process;
pub use labels::*;

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `controller` (and workqueue `name`) label value of the StageSet controller.
pub const CONTROLLER: &str = "stageset";
/// The `controller` label of the FleetRollout reconciler's series.
pub const FLEET_CONTROLLER: &str = "fleetrollout";

/// `controller_runtime_reconcile_time_seconds` buckets (controller-runtime's).
pub const RECONCILE_TIME_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9,
    1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 15.0, 20.0,
    25.0, 30.0, 40.0, 50.0, 60.0,
];

/// The workqueue duration buckets of controller-runtime:
/// `prometheus.ExponentialBuckets(10e-9, 10, 12)`, i.e. 1e-8 s … 1000 s.
pub fn workqueue_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(1e-8, 10.0, 12)
}

/// The webhook latency buckets (client_golang's `DefBuckets`).
pub const WEBHOOK_LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The `scope` values of `stageset_action_runs_total`.
pub const ACTION_SCOPES: &[&str] = &["Revision", "Version", "Lifetime"];

/// Why a finalizer was force-dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForceDropReason {
    TimedOut,
    Permanent,
    Unauthorized,
}

impl ForceDropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ForceDropReason::TimedOut => "timed_out",
            ForceDropReason::Permanent => "permanent",
            ForceDropReason::Unauthorized => "unauthorized",
        }
    }
}

/// Why an event was not forwarded to notification-controller
/// (`stageset_events_dropped_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventDropReason {
    /// The bounded queue was full; the event was never sent.
    QueueFull,
    /// Delivery was given up: retries or the deadline exhausted, a refusal,
    /// or no forwarder running.
    Undeliverable,
}

impl EventDropReason {
    /// Every reason, so both series exist from the start.
    pub const ALL: [EventDropReason; 2] =
        [EventDropReason::QueueFull, EventDropReason::Undeliverable];

    pub fn as_str(self) -> &'static str {
        match self {
            EventDropReason::QueueFull => "queue_full",
            EventDropReason::Undeliverable => "undeliverable",
        }
    }
}

/// How a reconcile ended, as controller-runtime counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReconcileResult {
    /// Done; the next run comes from a watch event.
    Success,
    /// Run again right away.
    Requeue,
    /// Run again after a delay.
    RequeueAfter,
    /// Failed; retried with back-off.
    Error,
}

impl ReconcileResult {
    /// The `result` label of `controller_runtime_reconcile_total`.
    pub fn label(self) -> &'static str {
        match self {
            ReconcileResult::RequeueAfter => "requeue_after",
            ReconcileResult::Requeue => "requeue",
            ReconcileResult::Error => "error",
            ReconcileResult::Success => "success",
        }
    }
}

/// A family that is always exported: its `# HELP`/`# TYPE` lines appear even
/// before the first series is recorded (prometheus-client skips empty
/// families), so every family of §7.1/§7.2 is visible from the start.
#[derive(Debug)]
struct Declared<M>(M);

impl<M: EncodeMetric> EncodeMetric for Declared<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }

    fn is_empty(&self) -> bool {
        false
    }
}

fn declare<M>(registry: &mut Registry, name: &str, help: &str, metric: M)
where
    M: EncodeMetric + Send + Sync + std::fmt::Debug + 'static,
{
    registry.register(name, help, Declared(metric));
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;
type FloatGauge = Gauge<f64, AtomicU64>;

fn reconcile_time_histogram() -> Histogram {
    Histogram::new(RECONCILE_TIME_BUCKETS.iter().copied())
}

fn workqueue_histogram() -> Histogram {
    Histogram::new(workqueue_buckets())
}

fn webhook_histogram() -> Histogram {
    Histogram::new(WEBHOOK_LATENCY_BUCKETS.iter().copied())
}

/// Every family of §7.1, in table order.
struct Custom {
    /// 1. `stageset_reconcile_total{namespace,name,reason}`.
    reconcile: Family<ReasonLabels, Counter>,
    /// 2. `stageset_stage_applied_total{namespace,name,stage}`.
    stage_applied: Family<StageLabels, Counter>,
    /// 3. `stageset_action_runs_total{namespace,name,scope}`.
    action_runs: Family<ScopeLabels, Counter>,
    /// 4. `stageset_drift_corrected_total{namespace,name,stage}`.
    drift_corrected: Family<StageLabels, Counter>,
    /// 5. `stageset_update_deferred_total{namespace,name}`.
    update_deferred: Family<NameLabels, Counter>,
    /// 6. `stageset_webhook_cert_renewal_failures_total`.
    cert_renewal_failures: Counter,
    /// 7. `stageset_watch_engagement_failures_total{gvk}`.
    watch_engagement_failures: Family<GvkLabels, Counter>,
    /// 8. `stageset_teardown_force_drop_total{namespace,name,reason}`, kept
    ///    after deletion.
    teardown_force_drop: Family<ReasonLabels, Counter>,
    /// 9. `stageset_inventory_skipped_entries_total{namespace,stageset,stage}`.
    inventory_skipped: Family<StageSetStageLabels, Counter>,
    /// 10. `stageset_stage_ready{namespace,stageset,stage}`.
    stage_ready: Family<StageSetStageLabels, Gauge>,
    /// 11. `stageset_stage_promotion_pending{namespace,stageset,stage}`.
    promotion_pending: Family<StageSetStageLabels, Gauge>,
    /// 12. `stageset_stage_promotion_blocked{namespace,stageset,stage}`.
    promotion_blocked: Family<StageSetStageLabels, Gauge>,
    /// 13. `stageset_budget_remaining{namespace,name}`.
    budget_remaining: Family<NameLabels, FloatGauge>,
    /// 14. `stageset_budget_frozen{namespace,name}`.
    budget_frozen: Family<NameLabels, Gauge>,
    /// 15. `stageset_metric_source_errors_total{namespace,name}`.
    metric_source_errors: Family<NameLabels, Counter>,
    /// 16. `stageset_stage_budget_frozen{namespace,stageset,stage}`.
    stage_budget_frozen: Family<StageSetStageLabels, Gauge>,
    /// 17. `stageset_ledger_anchor_errors_total{namespace,name}`.
    ledger_anchor_errors: Family<NameLabels, Counter>,
    /// 18. `stageset_ledger_adoptions_total{namespace,name}`.
    ledger_adoptions: Family<NameLabels, Counter>,
    /// Ours: `stageset_events_dropped_total{reason}`.
    events_dropped: Family<DropLabels, Counter>,
}

/// The controller-runtime / client-go compatible families of §7.2.
struct Runtime {
    reconcile_total: Family<ResultLabels, Counter>,
    reconcile_errors: Family<ControllerLabels, Counter>,
    terminal_reconcile_errors: Family<ControllerLabels, Counter>,
    reconcile_panics: Family<ControllerLabels, Counter>,
    reconcile_time: HistogramFamily<ControllerLabels>,
    max_concurrent: Family<ControllerLabels, Gauge>,
    active_workers: Family<ControllerLabels, Gauge>,
    depth: Family<QueueLabels, Gauge>,
    adds: Family<QueueLabels, Counter>,
    retries: Family<QueueLabels, Counter>,
    queue_duration: HistogramFamily<QueueLabels>,
    work_duration: HistogramFamily<QueueLabels>,
    unfinished_work: Family<QueueLabels, FloatGauge>,
    longest_running: Family<QueueLabels, FloatGauge>,
    leader: Family<LeaseLabels, Gauge>,
    rest_client_requests: Family<RestClientLabels, Counter>,
    webhook_requests: Family<WebhookCodeLabels, Counter>,
    webhook_latency: HistogramFamily<WebhookLabels>,
    webhook_in_flight: Family<WebhookLabels, Gauge>,
}

/// The controller's metrics.
pub struct Metrics {
    registry: Registry,
    custom: Custom,
    runtime: Runtime,
    /// Stage names each StageSet (namespace, name) recorded a series for, so a
    /// deletion evicts them all.
    stages: Mutex<HashMap<(String, String), BTreeSet<String>>>,
    /// Reconciles in progress (token → start), for the unfinished-work gauges.
    in_flight: Mutex<HashMap<u64, Instant>>,
    next_token: AtomicU64,
}

impl Default for Metrics {
    /// Metrics for the default `--concurrent` (4).
    fn default() -> Self {
        Metrics::new(4)
    }
}

impl Metrics {
    /// The registry with every family; `concurrent` is `--concurrent`
    /// (`controller_runtime_max_concurrent_reconciles`).
    pub fn new(concurrent: usize) -> Metrics {
        let mut r = Registry::default();
        let custom = Custom {
            reconcile: Family::default(),
            stage_applied: Family::default(),
            action_runs: Family::default(),
            drift_corrected: Family::default(),
            update_deferred: Family::default(),
            cert_renewal_failures: Counter::default(),
            watch_engagement_failures: Family::default(),
            teardown_force_drop: Family::default(),
            inventory_skipped: Family::default(),
            stage_ready: Family::default(),
            promotion_pending: Family::default(),
            promotion_blocked: Family::default(),
            budget_remaining: Family::default(),
            budget_frozen: Family::default(),
            metric_source_errors: Family::default(),
            stage_budget_frozen: Family::default(),
            ledger_anchor_errors: Family::default(),
            ledger_adoptions: Family::default(),
            events_dropped: Family::default(),
        };
        let c = &custom;
        declare(
            &mut r,
            "stageset_reconcile",
            "Number of StageSet reconciles that ended in a counted outcome, by Ready reason",
            c.reconcile.clone(),
        );
        declare(
            &mut r,
            "stageset_stage_applied",
            "Number of times a stage was applied and verified",
            c.stage_applied.clone(),
        );
        declare(
            &mut r,
            "stageset_action_runs",
            "Number of pre/post actions executed, by scope",
            c.action_runs.clone(),
        );
        declare(
            &mut r,
            "stageset_drift_corrected",
            "Number of objects whose out-of-band drift was corrected on a same-revision reconcile",
            c.drift_corrected.clone(),
        );
        declare(
            &mut r,
            "stageset_update_deferred",
            "Number of reconciles that held a rollout because an update window was closed",
            c.update_deferred.clone(),
        );
        declare(
            &mut r,
            "stageset_webhook_cert_renewal_failures",
            "Number of failed self-signed webhook certificate renewals (including recovered panics)",
            c.cert_renewal_failures.clone(),
        );
        declare(
            &mut r,
            "stageset_watch_engagement_failures",
            "Number of failures to engage a dynamic source/producer watch, by GroupVersionKind",
            c.watch_engagement_failures.clone(),
        );
        declare(
            &mut r,
            "stageset_teardown_force_drop",
            "Number of StageSets whose finalizer was force-dropped without a complete teardown",
            c.teardown_force_drop.clone(),
        );
        declare(
            &mut r,
            "stageset_inventory_skipped_entries",
            "Number of malformed StageInventory entries skipped while reading (they escape pruning)",
            c.inventory_skipped.clone(),
        );
        declare(
            &mut r,
            "stageset_stage_ready",
            "Whether the stage's phase is Ready (1) or not (0)",
            c.stage_ready.clone(),
        );
        declare(
            &mut r,
            "stageset_stage_promotion_pending",
            "Whether the stage is applied but not yet promoted (1) or not (0)",
            c.promotion_pending.clone(),
        );
        declare(
            &mut r,
            "stageset_stage_promotion_blocked",
            "Whether the stage's promotion is Blocked (1) or not (0)",
            c.promotion_blocked.clone(),
        );
        declare(
            &mut r,
            "stageset_budget_remaining",
            "Last error-budget value observed for the StageSet (typically 0..1)",
            c.budget_remaining.clone(),
        );
        declare(
            &mut r,
            "stageset_budget_frozen",
            "Whether a rollout-wide error-budget freeze holds new revisions (1) or not (0)",
            c.budget_frozen.clone(),
        );
        declare(
            &mut r,
            "stageset_metric_source_errors",
            "Number of metric-source query failures (error budgets and promotion analysis)",
            c.metric_source_errors.clone(),
        );
        declare(
            &mut r,
            "stageset_stage_budget_frozen",
            "Whether a per-stage error-budget freeze holds the stage (1) or not (0)",
            c.stage_budget_frozen.clone(),
        );
        declare(
            &mut r,
            "stageset_ledger_anchor_errors",
            "Number of Lifetime action completions whose completionAnchor was unreadable (kept, fail-open)",
            c.ledger_anchor_errors.clone(),
        );
        declare(
            &mut r,
            "stageset_ledger_adoptions",
            "Number of first reconciles that adopted a non-empty StageLedger",
            c.ledger_adoptions.clone(),
        );
        declare(
            &mut r,
            "stageset_events_dropped",
            "Number of events not forwarded to notification-controller, by reason (queue_full, undeliverable)",
            c.events_dropped.clone(),
        );
        for reason in EventDropReason::ALL {
            c.events_dropped
                .get_or_create(&DropLabels {
                    reason: reason.as_str().into(),
                })
                .inc_by(0);
        }

        let runtime = Runtime {
            reconcile_total: Family::default(),
            reconcile_errors: Family::default(),
            terminal_reconcile_errors: Family::default(),
            reconcile_panics: Family::default(),
            reconcile_time: Family::new_with_constructor(reconcile_time_histogram),
            max_concurrent: Family::default(),
            active_workers: Family::default(),
            depth: Family::default(),
            adds: Family::default(),
            retries: Family::default(),
            queue_duration: Family::new_with_constructor(workqueue_histogram),
            work_duration: Family::new_with_constructor(workqueue_histogram),
            unfinished_work: Family::default(),
            longest_running: Family::default(),
            leader: Family::default(),
            rest_client_requests: Family::default(),
            webhook_requests: Family::default(),
            webhook_latency: Family::new_with_constructor(webhook_histogram),
            webhook_in_flight: Family::default(),
        };
        let t = &runtime;
        declare(
            &mut r,
            "controller_runtime_reconcile",
            "Total number of reconciliations per controller",
            t.reconcile_total.clone(),
        );
        declare(
            &mut r,
            "controller_runtime_reconcile_errors",
            "Total number of reconciliation errors per controller",
            t.reconcile_errors.clone(),
        );
        declare(
            &mut r,
            "controller_runtime_terminal_reconcile_errors",
            "Total number of terminal reconciliation errors per controller",
            t.terminal_reconcile_errors.clone(),
        );
        declare(
            &mut r,
            "controller_runtime_reconcile_panics",
            "Total number of reconciliation panics per controller",
            t.reconcile_panics.clone(),
        );
        declare(
            &mut r,
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            t.reconcile_time.clone(),
        );
        declare(
            &mut r,
            "controller_runtime_max_concurrent_reconciles",
            "Maximum number of concurrent reconciles per controller",
            t.max_concurrent.clone(),
        );
        declare(
            &mut r,
            "controller_runtime_active_workers",
            "Number of currently used workers per controller",
            t.active_workers.clone(),
        );
        declare(
            &mut r,
            "workqueue_depth",
            "Current depth of workqueue",
            t.depth.clone(),
        );
        declare(
            &mut r,
            "workqueue_adds",
            "Total number of adds handled by workqueue",
            t.adds.clone(),
        );
        declare(
            &mut r,
            "workqueue_retries",
            "Total number of retries handled by workqueue",
            t.retries.clone(),
        );
        declare(
            &mut r,
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested",
            t.queue_duration.clone(),
        );
        declare(
            &mut r,
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from workqueue takes",
            t.work_duration.clone(),
        );
        declare(
            &mut r,
            "workqueue_unfinished_work_seconds",
            "How many seconds of work has been done that is in progress and hasn't been observed by work_duration. Large values indicate stuck threads. One can deduce the number of stuck threads by observing the rate at which this increases",
            t.unfinished_work.clone(),
        );
        declare(
            &mut r,
            "workqueue_longest_running_processor_seconds",
            "How many seconds has the longest running processor for workqueue been running",
            t.longest_running.clone(),
        );
        declare(
            &mut r,
            "leader_election_master_status",
            "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master. 'name' is the string used to identify the lease. Please make sure to group by name",
            t.leader.clone(),
        );
        declare(
            &mut r,
            "rest_client_requests",
            "Number of HTTP requests, partitioned by status code, method, and host.",
            t.rest_client_requests.clone(),
        );
        r.register_collector(Box::new(process::ProcessCollector));
        declare(
            &mut r,
            "controller_runtime_webhook_requests",
            "Total number of admission requests by HTTP status code",
            t.webhook_requests.clone(),
        );
        declare(
            &mut r,
            "controller_runtime_webhook_latency_seconds",
            "Histogram of the latency of processing admission requests",
            t.webhook_latency.clone(),
        );
        declare(
            &mut r,
            "controller_runtime_webhook_requests_in_flight",
            "Current number of admission requests being served",
            t.webhook_in_flight.clone(),
        );

        // Like controller-runtime's initMetrics: every controller series exists
        // (at zero) from the start, so rates and alerts resolve at once.
        let controller = ControllerLabels {
            controller: CONTROLLER.into(),
        };
        for result in ["success", "error", "requeue", "requeue_after"] {
            t.reconcile_total
                .get_or_create(&ResultLabels {
                    controller: CONTROLLER.into(),
                    result: result.into(),
                })
                .inc_by(0);
        }
        t.reconcile_errors.get_or_create(&controller).inc_by(0);
        t.terminal_reconcile_errors
            .get_or_create(&controller)
            .inc_by(0);
        t.reconcile_panics.get_or_create(&controller).inc_by(0);
        t.max_concurrent
            .get_or_create(&controller)
            .set(concurrent.max(1) as i64);
        t.active_workers.get_or_create(&controller).set(0);
        let queue = queue_labels();
        t.depth.get_or_create(&queue).set(0);
        t.adds.get_or_create(&queue).inc_by(0);
        t.retries.get_or_create(&queue).inc_by(0);
        t.unfinished_work.get_or_create(&queue).set(0.0);
        t.longest_running.get_or_create(&queue).set(0.0);
        // Empty histograms, so the bucket series exist before the first run.
        let _ = t.reconcile_time.get_or_create(&controller);
        let _ = t.queue_duration.get_or_create(&queue);
        let _ = t.work_duration.get_or_create(&queue);

        Metrics {
            registry: r,
            custom,
            runtime,
            stages: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(0),
        }
    }

    /// The registry in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        self.update_unfinished_work();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    // ---- §7.1: recorded by the pipeline ----------------------------------

    /// `stageset_reconcile_total`: one of the counted outcomes of §7.1.2 was
    /// written to the status. Call only from those paths.
    pub fn reconcile_counted(&self, namespace: &str, name: &str, reason: StageSetReason) {
        self.custom
            .reconcile
            .get_or_create(&reason_labels(namespace, name, reason.as_str()))
            .inc();
    }

    /// `stageset_stage_applied_total`: a stage was applied and verified.
    pub fn stage_applied(&self, namespace: &str, name: &str, stage: &str) {
        self.remember(namespace, name, stage);
        self.custom
            .stage_applied
            .get_or_create(&stage_labels(namespace, name, stage))
            .inc();
    }

    /// `stageset_drift_corrected_total`: `objects` drifted objects corrected.
    pub fn drift_corrected(&self, namespace: &str, name: &str, stage: &str, objects: u64) {
        self.remember(namespace, name, stage);
        self.custom
            .drift_corrected
            .get_or_create(&stage_labels(namespace, name, stage))
            .inc_by(objects);
    }

    /// `stageset_inventory_skipped_entries_total`: malformed entries skipped.
    pub fn inventory_skipped(&self, namespace: &str, stageset: &str, stage: &str, entries: u64) {
        self.remember(namespace, stageset, stage);
        self.custom
            .inventory_skipped
            .get_or_create(&stageset_stage_labels(namespace, stageset, stage))
            .inc_by(entries);
    }

    /// `stageset_action_runs_total`: a pre/post action of `scope` ran.
    pub fn action_run(&self, namespace: &str, name: &str, scope: &str) {
        self.custom
            .action_runs
            .get_or_create(&ScopeLabels {
                namespace: namespace.into(),
                name: name.into(),
                scope: scope.into(),
            })
            .inc();
    }

    /// `stageset_ledger_anchor_errors_total`: a completionAnchor was
    /// unreadable (the completion was kept).
    pub fn ledger_anchor_error(&self, namespace: &str, name: &str) {
        self.custom
            .ledger_anchor_errors
            .get_or_create(&name_labels(namespace, name))
            .inc();
    }

    /// `stageset_ledger_adoptions_total`: a first reconcile adopted a
    /// StageLedger that already had completions.
    pub fn ledger_adopted(&self, namespace: &str, name: &str) {
        self.custom
            .ledger_adoptions
            .get_or_create(&name_labels(namespace, name))
            .inc();
    }

    /// `stageset_stage_promotion_pending` / `_blocked` of a stage that
    /// reached its promotion gate.
    pub fn promotion(
        &self,
        namespace: &str,
        stageset: &str,
        stage: &str,
        pending: bool,
        blocked: bool,
    ) {
        let labels = stageset_stage_labels(namespace, stageset, stage);
        self.custom
            .promotion_pending
            .get_or_create(&labels)
            .set(i64::from(pending));
        self.custom
            .promotion_blocked
            .get_or_create(&labels)
            .set(i64::from(blocked));
    }

    /// `stageset_budget_remaining` (when read) and `stageset_budget_frozen`
    /// of a StageSet's rollout-wide error budget.
    pub fn budget(&self, namespace: &str, name: &str, remaining: Option<f64>, frozen: bool) {
        let labels = name_labels(namespace, name);
        if let Some(r) = remaining {
            self.custom.budget_remaining.get_or_create(&labels).set(r);
        }
        self.custom
            .budget_frozen
            .get_or_create(&labels)
            .set(i64::from(frozen));
    }

    /// `stageset_watch_engagement_failures_total`: a watch of a served kind
    /// could not be started or broke (`gvk` in Go's
    /// `<group>/<version>, Kind=<Kind>` form).
    pub fn watch_engagement_failed(&self, gvk: &str) {
        self.custom
            .watch_engagement_failures
            .get_or_create(&labels::GvkLabels {
                gvk: gvk.to_string(),
            })
            .inc();
    }

    /// `stageset_stage_budget_frozen` of a stage's own error budget.
    pub fn stage_budget_frozen(&self, namespace: &str, stageset: &str, stage: &str, frozen: bool) {
        self.custom
            .stage_budget_frozen
            .get_or_create(&stageset_stage_labels(namespace, stageset, stage))
            .set(i64::from(frozen));
    }

    /// `stageset_metric_source_errors_total`: an error-budget or analysis
    /// source could not be read.
    pub fn metric_source_error(&self, namespace: &str, name: &str) {
        self.custom
            .metric_source_errors
            .get_or_create(&name_labels(namespace, name))
            .inc();
    }

    /// `stageset_update_deferred_total`: an update window started holding a
    /// StageSet.
    pub fn update_deferred(&self, namespace: &str, name: &str) {
        self.custom
            .update_deferred
            .get_or_create(&name_labels(namespace, name))
            .inc();
    }

    /// `stageset_teardown_force_drop_total`: a finalizer was force-dropped.
    pub fn teardown_force_dropped(&self, namespace: &str, name: &str, reason: ForceDropReason) {
        self.custom
            .teardown_force_drop
            .get_or_create(&reason_labels(namespace, name, reason.as_str()))
            .inc();
    }

    /// `stageset_stage_ready`, from the stage entries just written to the
    /// status (1 when the phase is Ready, else 0). Stages that left the spec
    /// lose their per-stage gauges.
    pub fn stage_statuses(
        &self,
        namespace: &str,
        stageset: &str,
        spec_stages: &[String],
        stages: &[StageStatus],
    ) {
        for s in stages.iter().filter(|s| spec_stages.contains(&s.name)) {
            self.remember(namespace, stageset, &s.name);
            let ready = i64::from(s.phase == Some(StagePhase::Ready));
            self.custom
                .stage_ready
                .get_or_create(&stageset_stage_labels(namespace, stageset, &s.name))
                .set(ready);
        }
        let known = self.known_stages(namespace, stageset);
        for stage in known.iter().filter(|s| !spec_stages.contains(s)) {
            self.forget_stage(namespace, stageset, stage);
        }
    }

    /// `stageset_events_dropped_total{reason}`: an event was not forwarded to
    /// notification-controller.
    pub fn event_dropped(&self, reason: EventDropReason) {
        self.custom
            .events_dropped
            .get_or_create(&DropLabels {
                reason: reason.as_str().into(),
            })
            .inc();
    }

    /// `stageset_webhook_cert_renewal_failures_total`: a self-signed renewal
    /// failed (or panicked).
    pub fn cert_renewal_failed(&self) {
        self.custom.cert_renewal_failures.inc();
    }

    // ---- series lifecycle --------------------------------------------------

    /// Drops the series of a stage that left a live StageSet's spec: the
    /// per-stage gauges (families 10, 11, 12, 16). Its counters stay until the
    /// StageSet is deleted.
    pub fn forget_stage(&self, namespace: &str, stageset: &str, stage: &str) {
        let labels = stageset_stage_labels(namespace, stageset, stage);
        self.custom.stage_ready.remove(&labels);
        self.custom.promotion_pending.remove(&labels);
        self.custom.promotion_blocked.remove(&labels);
        self.custom.stage_budget_frozen.remove(&labels);
    }

    /// Drops every series of a deleted StageSet (families 1–5, 9–18 for that
    /// identity; `stageset_teardown_force_drop_total` stays). `stages` are the
    /// spec's stage names; stages recorded earlier are evicted too.
    pub fn forget_stageset(&self, namespace: &str, name: &str, stages: &[String]) {
        let mut all: BTreeSet<String> = stages.iter().cloned().collect();
        if let Some(known) = self
            .stages
            .lock()
            .expect("metrics index")
            .remove(&(namespace.to_string(), name.to_string()))
        {
            all.extend(known);
        }
        let c = &self.custom;
        for reason in StageSetReason::ALL {
            c.reconcile
                .remove(&reason_labels(namespace, name, reason.as_str()));
        }
        for scope in ACTION_SCOPES {
            c.action_runs.remove(&ScopeLabels {
                namespace: namespace.into(),
                name: name.into(),
                scope: (*scope).into(),
            });
        }
        let id = name_labels(namespace, name);
        c.update_deferred.remove(&id);
        c.budget_remaining.remove(&id);
        c.budget_frozen.remove(&id);
        c.metric_source_errors.remove(&id);
        c.ledger_anchor_errors.remove(&id);
        c.ledger_adoptions.remove(&id);
        for stage in &all {
            let labels = stage_labels(namespace, name, stage);
            c.stage_applied.remove(&labels);
            c.drift_corrected.remove(&labels);
            c.inventory_skipped
                .remove(&stageset_stage_labels(namespace, name, stage));
            self.forget_stage(namespace, name, stage);
        }
    }

    /// [`Metrics::forget_stageset`] by key (`namespace/name`), for the
    /// Supervisor when a StageSet is gone.
    pub fn forget_stageset_key(&self, key: &str) {
        if let Some((namespace, name)) = key.split_once('/') {
            self.forget_stageset(namespace, name, &[]);
        }
    }

    // ---- §7.2: the StageSet controller's work queue ------------------------

    /// A StageSet was queued for a reconcile (see the module doc).
    pub fn workqueue_add(&self) {
        let queue = queue_labels();
        self.runtime.adds.get_or_create(&queue).inc();
        self.runtime.depth.get_or_create(&queue).inc();
    }

    /// A queued StageSet was given up without being worked (its actor stopped).
    pub fn workqueue_drop(&self) {
        self.runtime.depth.get_or_create(&queue_labels()).dec();
    }

    /// A requeue was scheduled (`AddAfter` / `AddRateLimited`).
    pub fn workqueue_retry(&self) {
        self.runtime.retries.get_or_create(&queue_labels()).inc();
    }

    /// A queued StageSet got a worker (`--concurrent` permit): leaves the queue
    /// and starts its work; the returned guard ends the work when dropped
    /// (also when the reconcile panics).
    pub fn work_started(self: &Arc<Self>, queued_at: Instant) -> WorkGuard {
        let queue = queue_labels();
        let rt = &self.runtime;
        rt.depth.get_or_create(&queue).dec();
        rt.queue_duration
            .get_or_create(&queue)
            .observe(queued_at.elapsed().as_secs_f64());
        rt.active_workers.get_or_create(&controller_labels()).inc();
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        self.in_flight
            .lock()
            .expect("metrics in-flight")
            .insert(token, started);
        WorkGuard {
            metrics: self.clone(),
            token,
            started,
        }
    }

    /// `controller_runtime_reconcile_total{result}` (and the error counter)
    /// for a finished reconcile.
    pub fn reconcile_result(&self, outcome: ReconcileResult) {
        let rt = &self.runtime;
        let result = outcome.label();
        rt.reconcile_total
            .get_or_create(&ResultLabels {
                controller: CONTROLLER.into(),
                result: result.into(),
            })
            .inc();
        if outcome == ReconcileResult::Error {
            rt.reconcile_errors
                .get_or_create(&controller_labels())
                .inc();
        }
    }

    /// `rest_client_requests_total{code, method, host}`: one request to a
    /// Kubernetes API server answered with `code` (`<error>` when no answer
    /// came), as client-go counts them.
    pub fn rest_client_request(&self, code: &str, method: &str, host: &str) {
        self.runtime
            .rest_client_requests
            .get_or_create(&RestClientLabels {
                code: code.into(),
                method: method.into(),
                host: host.into(),
            })
            .inc();
    }

    /// A FleetRollout pass ended (`controller="fleetrollout"`, operations.md
    /// §7.2): `controller_runtime_reconcile_total{result}`, the error counter
    /// and `controller_runtime_reconcile_time_seconds`.
    pub fn fleet_reconciled(&self, outcome: ReconcileResult, seconds: f64) {
        let rt = &self.runtime;
        let controller = ControllerLabels {
            controller: FLEET_CONTROLLER.into(),
        };
        rt.reconcile_total
            .get_or_create(&ResultLabels {
                controller: FLEET_CONTROLLER.into(),
                result: outcome.label().into(),
            })
            .inc();
        if outcome == ReconcileResult::Error {
            rt.reconcile_errors.get_or_create(&controller).inc();
        }
        rt.reconcile_time
            .get_or_create(&controller)
            .observe(seconds);
    }

    /// A reconcile panicked (counted as an error, as controller-runtime does
    /// when it recovers the panic).
    pub fn reconcile_panicked(&self) {
        self.runtime
            .reconcile_panics
            .get_or_create(&controller_labels())
            .inc();
        self.reconcile_result(ReconcileResult::Error);
    }

    fn update_unfinished_work(&self) {
        let now = Instant::now();
        let (total, longest) = self
            .in_flight
            .lock()
            .expect("metrics in-flight")
            .values()
            .map(|s| now.saturating_duration_since(*s))
            .fold((Duration::ZERO, Duration::ZERO), |(t, l), d| {
                (t + d, l.max(d))
            });
        let queue = queue_labels();
        self.runtime
            .unfinished_work
            .get_or_create(&queue)
            .set(total.as_secs_f64());
        self.runtime
            .longest_running
            .get_or_create(&queue)
            .set(longest.as_secs_f64());
    }

    // ---- §7.2: leader election and webhook ---------------------------------

    /// `leader_election_master_status{name="<lease>"}`: 1 while this replica
    /// holds the lease, 0 once it lost (or released) it.
    pub fn set_leader(&self, lease: &str, leader: bool) {
        self.runtime
            .leader
            .get_or_create(&LeaseLabels { name: lease.into() })
            .set(i64::from(leader));
    }

    /// One admission request served: `webhook` is the webhook's path (as
    /// controller-runtime labels it), `code` the HTTP status code.
    pub fn webhook_request(&self, webhook: &str, code: u16, seconds: f64) {
        self.runtime
            .webhook_requests
            .get_or_create(&WebhookCodeLabels {
                webhook: webhook.into(),
                code: code.to_string(),
            })
            .inc();
        self.runtime
            .webhook_latency
            .get_or_create(&WebhookLabels {
                webhook: webhook.into(),
            })
            .observe(seconds);
    }

    /// `controller_runtime_webhook_requests_in_flight`: +1 when a request
    /// starts, -1 when it ends.
    pub fn webhook_in_flight(&self, webhook: &str, delta: i64) {
        self.runtime
            .webhook_in_flight
            .get_or_create(&WebhookLabels {
                webhook: webhook.into(),
            })
            .inc_by(delta);
    }

    // ---- helpers -----------------------------------------------------------

    fn remember(&self, namespace: &str, name: &str, stage: &str) {
        let mut index = self.stages.lock().expect("metrics index");
        let set = index
            .entry((namespace.to_string(), name.to_string()))
            .or_default();
        if !set.contains(stage) {
            set.insert(stage.to_string());
        }
    }

    fn known_stages(&self, namespace: &str, name: &str) -> Vec<String> {
        self.stages
            .lock()
            .expect("metrics index")
            .get(&(namespace.to_string(), name.to_string()))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// A reconcile holding a worker; dropping it ends the work
/// (`controller_runtime_active_workers`, the work and reconcile durations).
pub struct WorkGuard {
    metrics: Arc<Metrics>,
    token: u64,
    started: Instant,
}

impl Drop for WorkGuard {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let rt = &self.metrics.runtime;
        if let Ok(mut m) = self.metrics.in_flight.lock() {
            m.remove(&self.token);
        }
        rt.active_workers.get_or_create(&controller_labels()).dec();
        rt.work_duration
            .get_or_create(&queue_labels())
            .observe(elapsed);
        rt.reconcile_time
            .get_or_create(&controller_labels())
            .observe(elapsed);
    }
}

#[cfg(test)]
mod tests;
