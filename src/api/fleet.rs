//! FleetRollout: paces adoption of a version across many StageSets in waves, by
//! stamping their `stages.metio.wtf/approved-version` annotation.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, Duration, LabelSelector, condition_list_schema, date_time_schema};
use super::metric::{MetricSource, Threshold};

// What a FleetRollout does when a wave regresses or its gate fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum OnRegression {
    /// Stop approving further waves.
    Halt,
    /// Stop, and ask the halted wave's members to go back to `previousVersion`.
    Rollback,
}

/// A version rollout across StageSets, wave by wave.
// kube's printcolumn(...) repeats `type_ = ...` once per column.
#[allow(clippy::duplicated_attributes)]
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "stages.metio.wtf",
    version = "v1",
    kind = "FleetRollout",
    plural = "fleetrollouts",
    singular = "fleetrollout",
    shortname = "fleet",
    status = "FleetRolloutStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "FleetRollout approves a version for many StageSets in ordered waves, advancing only while earlier waves are settled and healthy.",
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.targetVersion"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Wave", type_ = "string", json_path = ".status.currentWave"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.onRegression != 'Rollback' || (has(self.previousVersion) && size(self.previousVersion) > 0)",
    "message": "previousVersion is required when onRegression is Rollback"
}]))]
pub struct FleetRolloutSpec {
    /// The version to approve on every member. When omitted, each member's own
    /// pending version is approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_version: Option<String>,
    /// The member StageSets, in any namespace.
    pub selector: LabelSelector,
    /// Restricts members to namespaces whose labels match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// The waves, approved in order.
    #[schemars(length(min = 1))]
    pub waves: Vec<FleetWave>,
    /// `Halt` (default) or `Rollback` on regression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "Halt"))]
    pub on_regression: Option<OnRegression>,
    /// The version a `Rollback` returns the halted wave to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<String>,
}

/// One wave of members.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FleetWave {
    /// Wave name.
    pub name: String,
    /// Members matching this selector belong to the wave.
    pub selector: LabelSelector,
    /// How long the wave must stay settled before the next one opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak: Option<Duration>,
    /// A metric check the settled wave must pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<FleetWaveGate>,
}

/// A metric check on a wave, queried with the controller's identity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FleetWaveGate {
    /// Where the value comes from (`secretRef` is not supported here).
    pub source: MetricSource,
    /// Bounds the value must lie within.
    pub threshold: Threshold,
}

// Lifecycle phase of a FleetRollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum FleetPhase {
    Pending,
    InProgress,
    Halted,
    Completed,
}

// Health of a wave's gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum WaveHealth {
    Passing,
    Failing,
    Unknown,
}

/// Observed progress of a FleetRollout.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FleetRolloutStatus {
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<FleetPhase>,
    /// The first wave that has not passed (the halted wave when halted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_wave: Option<String>,
    /// Per-wave progress.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub waves: Vec<FleetWaveStatus>,
    /// The `Ready` condition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "condition_list_schema")]
    pub conditions: Vec<Condition>,
}

/// Progress of one wave.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FleetWaveStatus {
    /// Wave name.
    pub name: String,
    /// Members in the wave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<i32>,
    /// Members that adopted the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_target: Option<i32>,
    /// Members that are Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<i32>,
    /// Every member adopted the target and is Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled: Option<bool>,
    /// When the wave's soak ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "date_time_schema")]
    pub soak_until: Option<Time>,
    /// Health of the wave's gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<WaveHealth>,
}
