//! StageLedger: the durable record of Lifetime-scoped actions of the same-named
//! StageSet. It has no owner reference, so it outlives the StageSet on purpose.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, condition_list_schema, date_time_schema};

/// User-asserted completions of the same-named StageSet's Lifetime actions.
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "stages.metio.wtf",
    version = "v1",
    kind = "StageLedger",
    plural = "stageledgers",
    singular = "stageledger",
    shortname = "sledger",
    namespaced,
    status = "StageLedgerStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "StageLedger records which once-per-lifetime actions of the same-named StageSet have completed; it survives the StageSet's deletion.",
    printcolumn(
        name = "Completed",
        type_ = "integer",
        json_path = ".status.completedActions[*].action",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct StageLedgerSpec {
    /// Lifetime actions to record as already done (adoption). Entries are only
    /// ever added to the record, never removed from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Vec<LedgerRef>>,
}

/// A stage action, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LedgerRef {
    /// Stage name.
    pub stage: String,
    /// Action name in that stage.
    pub action: String,
}

/// Completions recorded by the controller.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageLedgerStatus {
    /// Completed Lifetime actions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub completed_actions: Vec<LedgerCompletion>,
    /// The `BaselineValid` condition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "condition_list_schema")]
    pub conditions: Vec<Condition>,
}

// How a completion came about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum LedgerOrigin {
    /// The controller ran the action.
    Executed,
    /// Taken over from `spec.baseline`.
    Baselined,
}

/// One completed Lifetime action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LedgerCompletion {
    /// Stage name.
    pub stage: String,
    /// Action name.
    pub action: String,
    /// `Executed` or `Baselined`.
    pub origin: LedgerOrigin,
    /// Audit digest of the action; never part of its identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The anchor object witnessed at completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<AnchorWitness>,
    /// When the completion was recorded.
    #[schemars(schema_with = "date_time_schema")]
    pub completed_at: Time,
}

/// The identity of a completion anchor at completion time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnchorWitness {
    /// API version of the anchor.
    pub api_version: String,
    /// Kind of the anchor.
    pub kind: String,
    /// Name of the anchor.
    pub name: String,
    /// UID of the anchor when the action completed.
    pub uid: String,
}
