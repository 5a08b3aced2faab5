//! Typed actions: the hooks a stage runs before and after it applies, on failure,
//! after a rollback, and as the steps of a version migration.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    Duration, LabelSelector, NamespacedObjectKindReference, SecretKeyReference, SourceReference,
};

/// The hooks of one stage.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageActions {
    /// Run after the stage's anchored migrations and before its artifact is fetched
    /// and applied. A failure leaves the stage untouched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre: Option<Vec<Action>>,
    /// Run after the stage's objects are healthy. The stage is Ready only when all of
    /// them succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post: Option<Vec<Action>>,
    /// Run, best effort, when the stage fails from apply onward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<Vec<Action>>,
}

// How long a successful action stays done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ActionScope {
    /// Once per pinned source revision (the default for pre and post actions).
    Revision,
    /// Once per resolved `spec.version`.
    Version,
    /// Once for the lifetime of the StageSet name, recorded in its StageLedger.
    Lifetime,
}

/// One action. Exactly one verb (`patch`, `http`, `wait`, `job`, `delete`, `apply`)
/// must be set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Action {
    /// Identifies the action in ledgers and events; unique within its list (and, for
    /// a stage, across pre, post and onFailure).
    pub name: String,
    /// How long a success counts (pre and post actions only). Defaults to Revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<ActionScope>,
    /// Upper bound for all attempts of the action together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Extra attempts after a retryable failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub retries: Option<i32>,
    /// Patch existing objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<PatchAction>,
    /// Call an HTTP endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpAction>,
    /// Sleep, or wait until a CEL expression holds on an object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitAction>,
    /// Create objects (typically Jobs) from an artifact and wait for them to complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobAction>,
    /// Delete an object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete: Option<DeleteAction>,
    /// Server-side apply objects from an artifact without recording them in the
    /// inventory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply: Option<ApplyAction>,
    /// An object whose UID witnesses a Lifetime completion: if the object is
    /// deleted or replaced, the action runs again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_anchor: Option<CompletionAnchor>,
}

impl Action {
    /// The names of the verbs this action sets, in the canonical order.
    pub fn verbs(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.patch.is_some() {
            out.push("patch");
        }
        if self.http.is_some() {
            out.push("http");
        }
        if self.wait.is_some() {
            out.push("wait");
        }
        if self.job.is_some() {
            out.push("job");
        }
        if self.delete.is_some() {
            out.push("delete");
        }
        if self.apply.is_some() {
            out.push("apply");
        }
        out
    }
}

/// The object whose UID witnesses a Lifetime completion, in the StageSet's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompletionAnchor {
    /// API version of the anchor object.
    pub api_version: String,
    /// Kind of the anchor object.
    pub kind: String,
    /// Name of the anchor object.
    pub name: String,
}

// The patch flavour of a patch action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum PatchType {
    /// A merge patch document (the default).
    #[serde(rename = "merge")]
    Merge,
    /// A JSON6902 list of operations.
    #[serde(rename = "json6902")]
    Json6902,
}

/// Patch one object, or every object of a kind that a selector matches.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PatchAction {
    /// The object(s) to patch.
    pub target: PatchTarget,
    /// `merge` (default) or `json6902`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<PatchType>,
    /// The patch body.
    pub patch: String,
}

/// The objects a patch action changes: exactly one of `name` or `selector`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PatchTarget {
    /// API version; the preferred version of `kind` when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind of the objects.
    pub kind: String,
    /// Namespace of the objects; defaults to the StageSet's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name of a single object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Patch every object of `kind` in the namespace that this selector matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// HTTP methods an http action may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Post,
    Put,
    Patch,
    Delete,
    Head,
}

/// Call an HTTP endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpAction {
    /// The http or https URL to call. Loopback, link-local and multicast addresses are
    /// refused; with `--allowed-action-hosts` the host must match an allowed glob.
    pub url: String,
    /// HTTP method; defaults to POST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<HttpMethod>,
    /// Request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Take the request body from a Secret key instead of `body`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_from: Option<SecretKeyReference>,
    /// Request headers from Secret keys: the key is the header name, its value the
    /// header value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_from: Option<Vec<SecretKeyReference>>,
    /// Status codes that count as success; any 2xx when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(range(min = 100, max = 599)))]
    pub expected_status: Option<Vec<i32>>,
}

/// Sleep for a fixed time, or wait until a CEL expression holds on an object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WaitAction {
    /// Sleep this long and succeed; when set, `expr` is not evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
    /// The object `expr` is evaluated on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<NamespacedObjectKindReference>,
    /// CEL expression over the target (`apiVersion`, `kind`, `metadata`, `spec`,
    /// `status`) that must become true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expr: Option<String>,
    /// How long to wait for `expr`; defaults to 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// Create the objects an artifact renders (usually Jobs), wait until each reports
/// `Complete` or `Failed`, then delete them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobAction {
    /// The source whose artifact holds the objects.
    pub source_ref: SourceReference,
    /// Directory inside the artifact; defaults to the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

// Propagation policy of a delete action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum DeleteCascade {
    Background,
    Foreground,
    Orphan,
}

/// Delete one object; a missing object counts as success.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeleteAction {
    /// The object to delete.
    pub target: NamespacedObjectKindReference,
    /// How dependents are deleted; defaults to the resource's own policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cascade: Option<DeleteCascade>,
}

/// Server-side apply the objects an artifact renders, without recording them in the
/// stage inventory (they are never pruned).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplyAction {
    /// The source whose artifact holds the objects.
    pub source_ref: SourceReference,
    /// Directory inside the artifact; defaults to the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Wait until the applied objects are healthy (bounded by the action timeout or 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<bool>,
}
