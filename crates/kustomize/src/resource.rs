//! Resources as kustomize tracks them: the object plus the names it has had.

use serde_json::{Map, Value};

/// Group, version and kind of an object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Gvk {
    pub group: String,
    pub version: String,
    pub kind: String,
}

impl Gvk {
    pub fn from_api_version(api_version: &str, kind: &str) -> Gvk {
        let (group, version) = split_api_version(api_version);
        Gvk {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
        }
    }

    /// True when every non-empty field of `selector` equals ours.
    pub fn is_selected_by(&self, selector: &Gvk) -> bool {
        (selector.group.is_empty() || selector.group == self.group)
            && (selector.version.is_empty() || selector.version == self.version)
            && (selector.kind.is_empty() || selector.kind == self.kind)
    }

    pub fn is_cluster_scoped(&self) -> bool {
        is_cluster_scoped_kind(&self.kind)
    }
}

/// Group and version of an `apiVersion` (`apps/v1`, or `v1` in the core
/// group).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.rsplit_once('/').unwrap_or(("", api_version))
}

/// The namespace of an object of `kind` as the API server sees it (""
/// for cluster-scoped kinds, "default" when none is set).
fn effective_namespace<'a>(kind: &str, namespace: &'a str) -> &'a str {
    if is_cluster_scoped_kind(kind) {
        ""
    } else if namespace.is_empty() {
        "default"
    } else {
        namespace
    }
}

/// Kinds the Kubernetes API serves without a namespace (kustomize's list).
pub fn is_cluster_scoped_kind(kind: &str) -> bool {
    matches!(
        kind,
        "APIService"
            | "CSIDriver"
            | "CSINode"
            | "CertificateSigningRequest"
            | "ClusterRole"
            | "ClusterRoleBinding"
            | "ComponentStatus"
            | "CustomResourceDefinition"
            | "FlowSchema"
            | "IngressClass"
            | "MutatingWebhookConfiguration"
            | "MutatingAdmissionPolicy"
            | "MutatingAdmissionPolicyBinding"
            | "Namespace"
            | "Node"
            | "PersistentVolume"
            | "PodSecurityPolicy"
            | "PriorityClass"
            | "PriorityLevelConfiguration"
            | "RuntimeClass"
            | "SelfSubjectAccessReview"
            | "SelfSubjectRulesReview"
            | "StorageClass"
            | "SubjectAccessReview"
            | "TokenReview"
            | "ValidatingAdmissionPolicy"
            | "ValidatingAdmissionPolicyBinding"
            | "ValidatingWebhookConfiguration"
            | "VolumeAttachment"
    )
}

/// The identity of a resource: kind and name, plus namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResId {
    pub gvk: Gvk,
    pub name: String,
    pub namespace: String,
}

impl ResId {
    /// The namespace as the API server sees it ("" means "default").
    pub fn effective_namespace(&self) -> &str {
        effective_namespace(&self.gvk.kind, &self.namespace)
    }

    pub fn ns_equals(&self, other: &ResId) -> bool {
        self.effective_namespace() == other.effective_namespace()
    }

    pub fn equals(&self, other: &ResId) -> bool {
        self.gvk == other.gvk && self.name == other.name && self.ns_equals(other)
    }
}

impl std::fmt::Display for ResId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let api = if self.gvk.group.is_empty() {
            self.gvk.version.clone()
        } else {
            format!("{}/{}", self.gvk.group, self.gvk.version)
        };
        write!(f, "{} {} {}", api, self.gvk.kind, self.name)?;
        if !self.namespace.is_empty() {
            write!(f, " (namespace {})", self.namespace)?;
        }
        Ok(())
    }
}

/// How a generated object joins resources that already exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    Create,
    Merge,
    Replace,
}

/// One object in the build, with the bookkeeping kustomize keeps for it.
#[derive(Debug, Clone)]
pub struct Resource {
    pub obj: Value,
    /// Ids the object had before renames, oldest first (not including the current one).
    pub prev: Vec<ResId>,
    pub prefixes: Vec<String>,
    pub suffixes: Vec<String>,
    /// Generated objects get a content hash appended to the name at the end.
    pub needs_hash: bool,
    pub behavior: Behavior,
}

impl Resource {
    pub fn new(obj: Value) -> Resource {
        Resource {
            obj,
            prev: Vec::new(),
            prefixes: Vec::new(),
            suffixes: Vec::new(),
            needs_hash: false,
            behavior: Behavior::Create,
        }
    }

    pub fn str_at(&self, path: &[&str]) -> &str {
        let mut v = &self.obj;
        for p in path {
            match v.get(p) {
                Some(x) => v = x,
                None => return "",
            }
        }
        v.as_str().unwrap_or_default()
    }

    pub fn kind(&self) -> &str {
        self.str_at(&["kind"])
    }
    pub fn name(&self) -> &str {
        self.str_at(&["metadata", "name"])
    }
    pub fn namespace(&self) -> &str {
        self.str_at(&["metadata", "namespace"])
    }
    /// Group and version of the object's `apiVersion`.
    pub fn group_version(&self) -> (&str, &str) {
        split_api_version(self.str_at(&["apiVersion"]))
    }
    /// The current namespace as the API server sees it
    /// ([`ResId::effective_namespace`]).
    pub fn effective_namespace(&self) -> &str {
        effective_namespace(self.kind(), self.namespace())
    }
    pub fn gvk(&self) -> Gvk {
        Gvk::from_api_version(self.str_at(&["apiVersion"]), self.kind())
    }

    pub fn cur_id(&self) -> ResId {
        ResId {
            gvk: self.gvk(),
            name: self.name().to_owned(),
            namespace: self.namespace().to_owned(),
        }
    }

    pub fn org_id(&self) -> ResId {
        self.prev.first().cloned().unwrap_or_else(|| self.cur_id())
    }

    /// Whether the current id equals `id` ([`ResId::equals`]), without
    /// building the current id unless name and kind match.
    pub fn cur_id_equals(&self, id: &ResId) -> bool {
        self.name() == id.name && self.kind() == id.gvk.kind && self.cur_id().equals(id)
    }

    /// Whether the current ids of `self` and `other` are equal
    /// ([`ResId::equals`]).
    pub fn has_same_id(&self, other: &Resource) -> bool {
        self.name() == other.name()
            && self.kind() == other.kind()
            && self.group_version() == other.group_version()
            && self.effective_namespace() == other.effective_namespace()
    }

    /// Whether any id the resource has had (in `prev`, or the current one)
    /// equals `id`.
    pub fn has_id(&self, id: &ResId) -> bool {
        self.prev.iter().any(|x| x.equals(id)) || self.cur_id_equals(id)
    }

    /// Every name the resource has had, the current one last (repeated
    /// when it did not change).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.prev
            .iter()
            .map(|id| id.name.as_str())
            .chain([self.name()])
    }

    pub fn metadata_mut(&mut self) -> &mut Map<String, Value> {
        let obj = self.obj.as_object_mut().expect("resources are objects");
        let md = obj
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if !md.is_object() {
            *md = Value::Object(Map::new());
        }
        md.as_object_mut().expect("metadata is an object")
    }

    pub fn store_previous_id(&mut self) {
        let id = self.cur_id();
        self.prev.push(id);
    }

    pub fn set_name(&mut self, name: &str) {
        self.metadata_mut()
            .insert("name".into(), Value::String(name.into()));
    }

    pub fn set_namespace(&mut self, ns: &str) {
        if ns.is_empty() {
            self.metadata_mut().remove("namespace");
        } else {
            self.metadata_mut()
                .insert("namespace".into(), Value::String(ns.into()));
        }
    }

    pub fn string_map(&self, field: &str) -> Map<String, Value> {
        self.metadata_map(field).cloned().unwrap_or_default()
    }

    /// The map at `metadata.<field>` (labels, annotations), if there is one.
    pub fn metadata_map(&self, field: &str) -> Option<&Map<String, Value>> {
        self.obj
            .get("metadata")
            .and_then(|m| m.get(field))
            .and_then(Value::as_object)
    }
}
