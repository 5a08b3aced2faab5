//! Types shared by several kinds: references to other objects, label selectors,
//! conditions, durations and timestamps.
//!
//! Optional fields are `Option` throughout so that an object read from the cluster
//! and written back keeps exactly the fields the user wrote (an explicit `false` or
//! an empty list is not the same as an absent field for a reader of the object).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::duration::{DurationError, GoDuration};

/// Schema for a `metav1.Time` field: an RFC 3339 timestamp string.
pub(crate) fn date_time_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "format": "date-time" })
}

/// A duration written in Go syntax (`30s`, `5m`, `1h30m`).
///
/// The text is kept verbatim: the API server only checks that it is a string, so an
/// object may carry a malformed duration; the admission webhook and the reconciler
/// reject it with a message naming the field.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Duration(pub String);

impl Duration {
    pub fn new(text: impl Into<String>) -> Self {
        Duration(text.into())
    }

    /// Parses the text as a Go duration.
    pub fn parse(&self) -> Result<GoDuration, DurationError> {
        GoDuration::parse(&self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Duration {
    fn from(s: &str) -> Self {
        Duration(s.to_string())
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string" })
    }
}

/// Points at the Flux source whose artifact a stage (or a job/apply action, or a
/// migration ladder) consumes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceReference {
    /// API version of the referenced object. Defaults to `source.toolkit.fluxcd.io/v1`;
    /// required when `kind` names a producer (any kind other than ExternalArtifact,
    /// GitRepository, OCIRepository or Bucket), whose API group identifies the
    /// ExternalArtifact back-pointer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind of the referenced object. Defaults to `ExternalArtifact`. GitRepository,
    /// OCIRepository and Bucket are read directly; any other kind is a producer whose
    /// ExternalArtifact is found through its `spec.sourceRef` back-pointer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name of the referenced object.
    pub name: String,
    /// Namespace of the referenced object; defaults to the StageSet's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The Flux source API group.
pub const FLUX_SOURCE_GROUP: &str = "source.toolkit.fluxcd.io";
/// `apiVersion` of a source reference without one.
pub const DEFAULT_SOURCE_API_VERSION: &str = "source.toolkit.fluxcd.io/v1";
/// Kind of a source reference without one.
pub const DEFAULT_SOURCE_KIND: &str = "ExternalArtifact";
/// Kinds read directly (besides ExternalArtifact) when in the Flux group.
pub const DIRECT_KINDS: [&str; 3] = ["GitRepository", "OCIRepository", "Bucket"];

/// The API group of an apiVersion (`apps/v1` → `apps`, `v1` → ``).
pub fn group_of(api_version: &str) -> &str {
    api_version.split_once('/').map(|(g, _)| g).unwrap_or("")
}

impl SourceReference {
    /// Whether the reference names a producer (resolved through the
    /// ExternalArtifact back-pointer) rather than an object holding the
    /// artifact itself.
    pub fn is_producer(&self) -> bool {
        let kind = self.kind.as_deref().unwrap_or(DEFAULT_SOURCE_KIND);
        if kind.is_empty() || kind == DEFAULT_SOURCE_KIND {
            return false;
        }
        let group = self
            .api_version
            .as_deref()
            .map(group_of)
            .unwrap_or(FLUX_SOURCE_GROUP);
        !(DIRECT_KINDS.contains(&kind) && (group.is_empty() || group == FLUX_SOURCE_GROUP))
    }

    /// The kind, `ExternalArtifact` when unset or empty.
    pub fn kind_or_default(&self) -> &str {
        self.kind
            .as_deref()
            .filter(|k| !k.is_empty())
            .unwrap_or(DEFAULT_SOURCE_KIND)
    }
}

/// A Secret in the StageSet's namespace, optionally narrowed to one key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SecretKeyReference {
    /// Name of the Secret.
    pub name: String,
    /// Key inside the Secret's data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// An object in the same namespace, named.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LocalObjectReference {
    /// Name of the object.
    pub name: String,
}

/// Any object, by kind and name; the namespace defaults to the StageSet's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedObjectKindReference {
    /// API version of the object; the preferred version of `kind` when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind of the object.
    pub kind: String,
    /// Name of the object.
    pub name: String,
    /// Namespace of the object; defaults to the StageSet's namespace and is ignored
    /// for cluster-scoped kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Where the kubeconfig of a remote target cluster comes from: exactly one of a
/// Secret holding a kubeconfig or a ConfigMap describing cloud workload identity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.configMapRef) || has(self.secretRef)",
        "message": "exactly one of spec.kubeConfig.configMapRef or spec.kubeConfig.secretRef must be specified"
    },
    {
        "rule": "!has(self.configMapRef) || !has(self.secretRef)",
        "message": "exactly one of spec.kubeConfig.configMapRef or spec.kubeConfig.secretRef must be specified"
    }
]))]
pub struct KubeConfigReference {
    /// Secret in the StageSet's namespace holding a self-contained kubeconfig under
    /// `key` (default `value`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyReference>,
    /// ConfigMap in the StageSet's namespace selecting cloud workload-identity
    /// authentication (keys `provider`, `cluster`, `address`, `ca.crt`, `audiences`,
    /// `serviceAccountName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<LocalObjectReference>,
}

/// A standard Kubernetes label selector. An empty selector matches everything where
/// it is allowed at all; several fields refuse an empty selector.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-map-type" = "atomic"))]
pub struct LabelSelector {
    /// Labels that must all be present with exactly these values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<BTreeMap<String, String>>,
    /// Set-based requirements that must all hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub match_expressions: Option<Vec<LabelSelectorRequirement>>,
}

/// One set-based label requirement.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LabelSelectorRequirement {
    /// The label key.
    pub key: String,
    /// One of `In`, `NotIn`, `Exists`, `DoesNotExist`.
    pub operator: String,
    /// Values for `In` and `NotIn`; must be empty for `Exists` and `DoesNotExist`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub values: Option<Vec<String>>,
}

/// A Flux kustomize patch: a strategic-merge patch or a JSON6902 operation list,
/// optionally restricted to the objects a selector picks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Patch {
    /// The patch document: strategic-merge YAML, or a JSON6902 list of operations.
    pub patch: String,
    /// The objects to patch; when absent the patch names its own target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<PatchSelector>,
}

/// Selects the objects a kustomize patch applies to. Unset fields match anything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PatchSelector {
    /// API group of the objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// API version of the objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Kind of the objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name of the objects (a regular expression, as in kustomize).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace of the objects (a regular expression, as in kustomize).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Label selector the objects must match, in `kubectl -l` syntax.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<String>,
    /// Annotation selector the objects must match, in label-selector syntax.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation_selector: Option<String>,
}

// The status of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

/// An observation of one aspect of an object's state, in the standard Kubernetes
/// shape (`metav1.Condition`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The aspect this condition describes, e.g. `Ready`.
    #[serde(rename = "type")]
    #[schemars(
        regex(
            pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
        ),
        length(max = 316)
    )]
    pub type_: String,
    /// Whether the condition holds.
    pub status: ConditionStatus,
    /// The object's `metadata.generation` when the condition was last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
    /// When `status` last changed.
    #[schemars(schema_with = "date_time_schema")]
    pub last_transition_time: Time,
    /// A CamelCase, machine-readable cause of the current status.
    #[schemars(
        regex(pattern = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"),
        length(min = 1, max = 1024)
    )]
    pub reason: String,
    /// A human-readable explanation.
    #[schemars(length(max = 32768))]
    pub message: String,
}

/// Marks a list of conditions as a list-map keyed by `type`.
pub(crate) fn condition_list_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = <Vec<Condition>>::json_schema(generator);
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["type"]),
    );
    schema
}
