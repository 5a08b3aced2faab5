//! StageInventory: one shard of the record of what a stage applied.
//!
//! The entries live in `spec` rather than `status` so that backup tools that
//! restore only `spec` keep the prune history. Users never write these objects.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One shard of a stage's inventory.
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "stages.metio.wtf",
    version = "v1",
    kind = "StageInventory",
    plural = "stageinventories",
    singular = "stageinventory",
    namespaced,
    derive = "PartialEq",
    derive = "Default",
    label("applyset.kubernetes.io/is-parent-type", "true"),
    doc = "StageInventory records, in shards, the objects one stage of a StageSet applied, so that the controller prunes and tears down exactly those objects.",
    printcolumn(
        name = "Stage",
        type_ = "string",
        json_path = r".metadata.labels.stages\.metio\.wtf/stage"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct StageInventorySpec {
    /// Index of the stage in `spec.stages` when this shard was written; teardown
    /// runs in descending position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_position: Option<i32>,
    /// The recorded objects, sorted by `id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<Vec<InventoryEntry>>,
}

/// One applied object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InventoryEntry {
    /// `<namespace>_<name>_<group>_<kind>`; namespace empty for cluster-scoped
    /// objects, group empty for the core group.
    pub id: String,
    /// The version part of the apiVersion the object was applied with.
    pub v: String,
}
