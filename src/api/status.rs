//! The observed state of a StageSet. Written only by the controller.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, condition_list_schema, date_time_schema};

/// What the controller last observed and did for a StageSet.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageSetStatus {
    /// The last `reconcile.fluxcd.io/requestedAt` token handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// The `Ready` condition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "condition_list_schema")]
    pub conditions: Vec<Condition>,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Revisions pinned by the latest run, keyed `<namespace>/<name>` of the source.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub last_attempted_revisions: BTreeMap<String, String>,
    /// Revisions of the latest fully successful run; non-empty means deployed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub last_applied_revisions: BTreeMap<String, String>,
    /// Per-stage status, in spec order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageStatus>,
    /// The deployed release version (when versioning is on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The version waiting for approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_version: Option<String>,
    /// Migrations the planned version transition will run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_migrations: Vec<PendingMigration>,
    /// Migrations of the in-flight transition that completed (`name@digest`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub executed_migrations: Vec<String>,
    /// Migration actions of the in-flight transition that completed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub executed_migration_actions: Vec<String>,
    /// Consecutive migration failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_failure_count: Option<i32>,
    /// Consecutive action failures of stages with a pending Lifetime action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_failure_count: Option<i32>,
    /// The artifacts of the latest fully successful run, for rollback.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_applied_snapshot: Vec<StageArtifactRef>,
    /// Revisions an update window holds back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_update: Option<PendingUpdate>,
    /// The last `stages.metio.wtf/update-now` token handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_update_override: Option<String>,
    /// The last `stages.metio.wtf/reset-scope` token handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reset_scope: Option<String>,
    /// The active rollout-wide error-budget freeze.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_freeze: Option<BudgetFreeze>,
    /// The last `stages.metio.wtf/budget-override` token handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_budget_override: Option<String>,
}

// Lifecycle phase of a stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum StagePhase {
    Pending,
    Applying,
    Pruning,
    Verifying,
    Ready,
    Failed,
}

/// The observed state of one stage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageStatus {
    /// Stage name.
    pub name: String,
    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<StagePhase>,
    /// Revision the stage last applied (or failed at).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_revision: Option<String>,
    /// Number of objects the stage rendered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries_count: Option<i64>,
    /// Number of StageInventory shards recording the stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<i32>,
    /// `<operation>: <error>` after a failure or a hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Revision-scoped actions done at `ledgerRevision`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub executed_actions: Vec<String>,
    /// The revision `executedActions` belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger_revision: Option<String>,
    /// Version-scoped actions done at `ledgerVersion`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub executed_version_actions: Vec<String>,
    /// The version `executedVersionActions` belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger_version: Option<String>,
    /// The last `stages.metio.wtf/reconcile-stage` token handled for this stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// State of the promotion gates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion_state: Option<PromotionState>,
    /// The last `stages.metio.wtf/promote` token handled for this stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_promotion: Option<String>,
    /// The active per-stage error-budget freeze.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_freeze: Option<BudgetFreeze>,
}

// Phase of a stage's promotion gates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum PromotionPhase {
    Soaking,
    Analyzing,
    Blocked,
    AwaitingManual,
    Promoted,
}

/// The promotion-gate state of one stage at its applied revision.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromotionState {
    /// Current gate phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<PromotionPhase>,
    /// When the phase was entered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "date_time_schema")]
    pub since: Option<Time>,
    /// When the soak ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "date_time_schema")]
    pub soak_until: Option<Time>,
    /// Consecutive failing analysis evaluations at this revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_failures: Option<i32>,
    /// The restart check that blocked the stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_check: Option<String>,
    /// Restarts observed by that check beyond its baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_restarts: Option<i32>,
    /// Restart totals per check at the last promotion.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restart_baseline: Vec<RestartBaseline>,
    /// The event check that blocked the stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_check: Option<String>,
    /// Events observed by that check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_events: Option<i32>,
    /// A revision rolled back by a promotion gate; the stage stays parked on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted_revision: Option<String>,
    /// The latest analysis evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_analysis: Option<AnalysisResult>,
}

/// Restart total of one check at its baseline.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RestartBaseline {
    /// Check name.
    pub name: String,
    /// Restart total at the baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts: Option<i32>,
}

/// One evaluation of a stage's analysis.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisResult {
    /// When the checks were evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "date_time_schema")]
    pub time: Option<Time>,
    /// Whether every check passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed: Option<bool>,
    /// Per-check results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<AnalysisCheckResult>,
}

/// Result of one analysis check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AnalysisCheckResult {
    /// Check name.
    pub name: String,
    /// Observed value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Whether the value was within the threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    /// Why the value could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A migration the planned version transition will run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PendingMigration {
    /// Migration name.
    pub name: String,
    /// The boundary it crosses.
    pub to: String,
    /// Its `from` constraint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The stage it runs before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// Verbs of the actions that will run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
    /// Content digest of the migration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// The artifact a stage delivered in the last fully successful run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageArtifactRef {
    /// Stage name.
    pub stage: String,
    /// Artifact URL.
    pub url: String,
    /// Artifact digest (`<algorithm>:<hex>`).
    pub digest: String,
    /// Source revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Fingerprint of the post-build variables the stage was built with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substitution_digest: Option<String>,
}

/// Revisions held back by an update window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingUpdate {
    /// The held revisions, keyed like `lastAttemptedRevisions`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub revisions: BTreeMap<String, String>,
    /// When the window decision next changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "date_time_schema")]
    pub next_window_opens: Option<Time>,
}

/// An error-budget freeze.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetFreeze {
    /// The remaining budget observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<String>,
    /// The freeze threshold in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_threshold: Option<String>,
    /// The resume threshold in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_threshold: Option<String>,
    /// When the freeze began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "date_time_schema")]
    pub since: Option<Time>,
    /// The freeze is recorded only (dry run) and holds nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
}
