//! StageSet: an ordered, gated list of stages, each delivering one Flux artifact.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::action::{Action, StageActions};
use super::common::{
    Duration, KubeConfigReference, LabelSelector, LocalObjectReference,
    NamespacedObjectKindReference, Patch, SourceReference, date_time_schema,
};
use super::metric::{MetricSource, Threshold};
use super::status::StageSetStatus;

// What to do when a stage's health check times out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum OnTimeout {
    /// Stop at the stage, keep its objects applied and re-check later (the default).
    Hold,
    /// Treat the timeout as a stage failure (onFailure actions, rollback).
    Rollback,
}

// Whether update windows hold only new revisions or every reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum WindowScope {
    /// Hold only new revisions; drift correction continues (the default).
    Updates,
    /// Hold every reconcile while closed.
    All,
}

/// The spec of a StageSet.
// kube's printcolumn(...) repeats `type_ = ...` once per column.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "stages.metio.wtf",
    version = "v1",
    kind = "StageSet",
    plural = "stagesets",
    singular = "stageset",
    namespaced,
    status = "StageSetStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "StageSet delivers an ordered list of stages built from Flux source artifacts: each stage is applied, verified and gated before the next one starts.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].message"#
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct StageSetSpec {
    /// How often the StageSet is reconciled when nothing else triggers it. Defaults
    /// to the controller's `--default-interval` (10m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Re-check cadence while waiting on something transient (a source, a
    /// dependency, a promotion gate). Defaults to the interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_interval: Option<Duration>,
    /// A shorter cadence on which applied state is re-asserted to correct drift.
    /// Used only when positive and shorter than the interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_detection_interval: Option<Duration>,
    /// Default health-check timeout of every stage. Defaults to 15m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Default behaviour of every stage when its health check times out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<OnTimeout>,
    /// Stops reconciliation while true; applied objects are left as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// StageSets that must be Ready (and optionally at a minimum version) before
    /// this one delivers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<Vec<Dependency>>,
    /// The tenant ServiceAccount, in the StageSet's namespace, that every cluster
    /// operation of this StageSet impersonates. Empty uses the controller's identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Deliver to a remote cluster instead of the controller's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_config: Option<KubeConfigReference>,
    /// Decrypt SOPS-encrypted files in every stage's artifact before building.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decryption: Option<Decryption>,
    /// Where the release version comes from; enables versioned migrations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<VersionSource>,
    /// Inline migration ladder, run when the deployed version crosses a boundary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrations: Option<Vec<Migration>>,
    /// Load the migration ladder from an artifact instead of `migrations`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrations_source_ref: Option<MigrationsSource>,
    /// Restore the last fully successful revision when a stage fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_on_failure: Option<bool>,
    /// Actions run after any rollback, under the StageSet's identity, every time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_rollback: Option<Vec<Action>>,
    /// Time windows that allow or deny delivery of new revisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_windows: Option<Vec<UpdateWindow>>,
    /// What closed windows hold: `Updates` (default) or `All`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_scope: Option<WindowScope>,
    /// Freeze the whole rollout while an error budget is exhausted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_budget: Option<ErrorBudget>,
    /// The stages, delivered strictly in this order.
    #[schemars(length(min = 1))]
    pub stages: Vec<Stage>,
}

/// A StageSet this one waits for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    /// Name of the StageSet depended on.
    pub name: String,
    /// Namespace of the dependency; defaults to this StageSet's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Semantic version the dependency's `status.version` must have reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<String>,
}

// The decryption backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum DecryptionProvider {
    #[serde(rename = "sops")]
    Sops,
}

/// SOPS decryption of the artifacts' encrypted files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Decryption {
    /// The decryption backend; only `sops`.
    pub provider: DecryptionProvider,
    /// Secret (read as the tenant) holding age keys (`*.agekey`) or armored PGP keys
    /// (`*.asc`). Omit when only cloud KMS is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
}

/// One stage: an artifact that is built, applied, verified and gated as a unit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stage {
    /// Stage name, unique in the StageSet; used in labels, inventories and status,
    /// so it is a DNS label of at most 63 characters.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(max = 63))]
    pub name: String,
    /// A role name migrations may anchor to instead of the stage name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_anchor: Option<String>,
    /// The Flux source whose artifact this stage delivers.
    pub source_ref: SourceReference,
    /// Directory inside the artifact to build; defaults to the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// ServiceAccount this stage impersonates instead of the StageSet's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Delete objects that left this stage (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<bool>,
    /// Health-check timeout of this stage; overrides `spec.timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Behaviour of this stage when its health check times out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<OnTimeout>,
    /// Recreate objects whose immutable fields changed (shorthand for a conflict
    /// policy defaulting to Recreate; ignored when `conflictPolicy` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
    /// What to do when an apply hits an immutable-field conflict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict_policy: Option<ConflictPolicy>,
    /// Apply objects annotated `helm.sh/hook` as ordinary objects (default true);
    /// false drops them from the build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_helm_hook_resources: Option<bool>,
    /// Kustomize patches applied during the build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patches: Option<Vec<Patch>>,
    /// Variable substitution after the build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_build: Option<PostBuild>,
    /// Hooks run around the stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<StageActions>,
    /// How the stage's health is verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_checks: Option<ReadyChecks>,
    /// Gates between this stage becoming healthy and the next stage starting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<StagePromotion>,
    /// Hold entry into this stage while an error budget is exhausted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_budget: Option<ErrorBudget>,
}

// The response to an apply conflict on immutable fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ConflictAction {
    /// Fail the stage.
    Fail,
    /// Delete the object and create it again.
    Recreate,
    /// Create the object when absent and never update it afterwards.
    KeepExisting,
}

/// Conflict handling for a stage.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ConflictPolicy {
    /// Action for objects no rule matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "Fail"))]
    pub default: Option<ConflictAction>,
    /// Rules, first match wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<ConflictRule>>,
}

/// A conflict action for the objects a target matches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConflictRule {
    /// The rendered objects this rule governs.
    pub target: ConflictTarget,
    /// Action on conflict.
    pub action: ConflictAction,
    /// Must be true for a rule that recreates a PersistentVolumeClaim or
    /// PersistentVolume, since recreating them destroys data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_data_loss: Option<bool>,
}

/// Exact-match selector over rendered objects; unset fields match anything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConflictTarget {
    /// apiVersion of the objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind of the objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name of the objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace of the objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Variable substitution applied to the built manifests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostBuild {
    /// Inline variables; they override values from `substituteFrom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substitute: Option<BTreeMap<String, String>>,
    /// ConfigMaps and Secrets whose data provide variables, merged in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substitute_from: Option<Vec<SubstituteReference>>,
}

// Kinds that can provide substitution variables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum SubstituteKind {
    ConfigMap,
    Secret,
}

/// A ConfigMap or Secret in the StageSet's namespace, read as the tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SubstituteReference {
    /// `ConfigMap` or `Secret`.
    pub kind: SubstituteKind,
    /// Name of the object.
    pub name: String,
    /// Skip the object when it does not exist (other errors still fail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// How a stage's health is verified after apply.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadyChecks {
    /// Health-check timeout; the most specific level of the timeout ladder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Do not wait on the applied objects themselves (explicit checks and
    /// expressions still apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_wait: Option<bool>,
    /// Further objects that must become healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<Vec<NamespacedObjectKindReference>>,
    /// CEL health rules for applied objects of a kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exprs: Option<Vec<CustomHealthCheck>>,
}

/// CEL health rules for the applied objects of one kind. Expressions see
/// `apiVersion`, `kind`, `metadata`, `spec` and `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomHealthCheck {
    /// API version (the group is matched, the version ignored).
    pub api_version: String,
    /// Kind the rules apply to.
    pub kind: String,
    /// True when the object is healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// True when the object is still progressing (a timeout then holds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_progress: Option<String>,
    /// True when the object has failed (the stage fails at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

// When a version transition needs the `approved-version` annotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ApprovalMode {
    /// Never (the default).
    Never,
    /// When at least one migration would run.
    OnMigrations,
    /// For every version change.
    Always,
}

/// Where the desired release version comes from: exactly one of `value`,
/// `fromObject` or `fromArtifact`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionSource {
    /// The version, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Read the version from a rendered object of a stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_object: Option<ObjectVersionRef>,
    /// Read the version from a file in a stage's artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_artifact: Option<ArtifactVersionRef>,
    /// Refuse a major version bump that selects no migration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_migration_coverage: Option<bool>,
    /// When version transitions need approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_mode: Option<ApprovalMode>,
    /// Permit the desired version to be lower than the deployed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_downgrade: Option<bool>,
}

/// A rendered object whose field (or `app.kubernetes.io/version` label) is the
/// version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectVersionRef {
    /// Stage whose render is searched; defaults to the first stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// API version of the object; empty matches any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind of the object.
    pub kind: String,
    /// Name of the object.
    pub name: String,
    /// kubectl JSONPath of the version field, e.g. `{.data.version}`; defaults to the
    /// `app.kubernetes.io/version` label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_path: Option<String>,
}

/// A file in a stage's artifact whose trimmed content is the version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ArtifactVersionRef {
    /// Stage whose artifact holds the file.
    pub stage: String,
    /// Path of the file inside the artifact.
    pub path: String,
}

/// One step of the migration ladder.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Migration {
    /// Unique name; the ledger key.
    pub name: String,
    /// The exact semantic version this migration crosses.
    pub to: String,
    /// Semver constraint the deployed version must satisfy (e.g. `>=1.0.0, <2.0.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Stage (by `migrationAnchor` or name) the migration runs before; defaults to
    /// the first stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// Actions run when the version crosses `to` upwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<Action>>,
    /// Actions run when the version crosses `to` downwards; without them the
    /// boundary cannot be crossed downwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down: Option<Vec<Action>>,
}

/// An artifact holding the migration ladder.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationsSource {
    /// The source, always in the StageSet's own namespace.
    pub source_ref: SourceReference,
    /// File or directory inside the artifact; defaults to the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

// Whether a window allows or denies delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum WindowType {
    Allow,
    Deny,
}

/// A time window: recurring (`schedule` + `duration`) or absolute (`from` + `to`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateWindow {
    /// `Allow` or `Deny`.
    #[serde(rename = "type")]
    pub type_: WindowType,
    /// Five-field cron expression (or a descriptor like `@daily`) of each start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// How long each recurring window stays open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
    /// IANA time zone of `schedule`; defaults to UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Start of an absolute window (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "date_time_schema")]
    pub from: Option<Time>,
    /// End of an absolute window (exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "date_time_schema")]
    pub to: Option<Time>,
}

// Behaviour when a metric source cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum SourceErrorPolicy {
    /// Proceed as if the check passed.
    Allow,
    /// Hold as if the check failed.
    Hold,
}

/// An error-budget freeze with hysteresis.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBudget {
    /// The remaining budget.
    pub source: MetricSource,
    /// Freeze when the remaining budget is below this decimal number.
    pub freeze_threshold: String,
    /// Lift a freeze only once the budget is at or above this number; defaults to
    /// `freezeThreshold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_threshold: Option<String>,
    /// `Allow` (default) proceeds when the source is unreadable; `Hold` holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_source_error: Option<SourceErrorPolicy>,
    /// Re-check cadence while frozen; defaults to the retry interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Record what would freeze without ever holding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
}

// Hold or roll the stage back when a promotion gate fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum GateFailurePolicy {
    Hold,
    Rollback,
}

/// Gates between a stage becoming healthy and the next stage starting.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StagePromotion {
    /// Hold this long after the stage first became Ready at a revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak: Option<Duration>,
    /// Wait for the `stages.metio.wtf/promote` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_manual_promotion: Option<bool>,
    /// Metric checks that must pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<PromotionAnalysis>,
    /// Promote before the soak ends when a metric is good enough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fast_track: Option<FastTrack>,
    /// Block on container restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_gate: Option<RestartGate>,
    /// Block on Warning events of selected pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_gate: Option<EventGate>,
}

/// Metric checks gating promotion.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromotionAnalysis {
    /// The checks; all must pass.
    #[schemars(length(min = 1))]
    pub checks: Vec<AnalysisCheck>,
    /// Re-check cadence; defaults to the retry interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Consecutive failing evaluations tolerated before the stage is blocked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub failure_limit: Option<i32>,
    /// `Hold` (default) or `Rollback` once the failure limit is exceeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<GateFailurePolicy>,
    /// `Hold` (default) counts an unreadable source as failing; `Allow` ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_source_error: Option<SourceErrorPolicy>,
    /// Record results without ever blocking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
}

/// One named metric check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AnalysisCheck {
    /// Unique name of the check.
    pub name: String,
    /// Where the value comes from.
    pub source: MetricSource,
    /// Bounds the value must lie within.
    pub threshold: Threshold,
}

/// Shorten the soak when a metric is good enough.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FastTrack {
    /// Where the value comes from.
    pub source: MetricSource,
    /// Promote early when the value is at most this decimal number.
    pub max: String,
    /// Minimum soak before fast-tracking is considered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Duration>,
}

/// Block promotion when selected pods' containers restart too often.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestartGate {
    /// `Hold` (default) or `Rollback` on a breach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<GateFailurePolicy>,
    /// The checks, keyed by name.
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub checks: Vec<RestartCheck>,
}

/// A restart budget for the pods a selector matches.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestartCheck {
    /// Unique name of the check.
    pub name: String,
    /// Pods in the StageSet's namespace to watch; must not be empty.
    pub selector: LabelSelector,
    /// Restarts tolerated since the baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_restarts: Option<i32>,
    /// Overrides the gate's `onFailure` for this check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<GateFailurePolicy>,
}

/// Block promotion when selected pods emit too many Warning events.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventGate {
    /// `Hold` (default) or `Rollback` on a breach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<GateFailurePolicy>,
    /// The checks, keyed by name.
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub checks: Vec<EventCheck>,
}

/// A Warning-event budget for the pods a selector matches.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventCheck {
    /// Unique name of the check.
    pub name: String,
    /// Pods in the StageSet's namespace to watch; must not be empty.
    pub selector: LabelSelector,
    /// Event reasons that count (e.g. `BackOff`, `Unhealthy`).
    #[schemars(length(min = 1))]
    pub reasons: Vec<String>,
    /// Matching events tolerated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_events: Option<i32>,
    /// Overrides the gate's `onFailure` for this check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<GateFailurePolicy>,
}
