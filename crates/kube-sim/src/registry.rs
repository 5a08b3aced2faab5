//! The resource types the server serves: the built-in kinds clients rely on, plus
//! one type per served version of every Established CustomResourceDefinition.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::typeinfo::TypeNode;

/// Where objects of a resource are stored: group and plural, independent of the
/// version they were written with.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorageKey {
    pub group: String,
    pub resource: String,
}

impl StorageKey {
    pub fn new(group: &str, resource: &str) -> Self {
        StorageKey {
            group: group.to_string(),
            resource: resource.to_string(),
        }
    }

    /// `resource` for the core group, `resource.group` otherwise (as in messages).
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }
}

/// Data that only custom resources carry.
#[derive(Debug)]
pub struct CrdInfo {
    /// Name of the CRD (`<plural>.<group>`).
    pub name: String,
    /// The version's openAPIV3Schema.
    pub schema: Option<Value>,
    /// Compiled schema for validation (built once per CRD version).
    pub compiled: Option<crate::schema::CompiledSchema>,
    /// `additionalPrinterColumns` of the version.
    pub printer_columns: Vec<Value>,
    /// `selectableFields` JSON paths (without the leading dot).
    pub selectable_fields: Vec<String>,
    /// Whether this version is the storage version.
    pub storage: bool,
}

/// One served group/version/resource.
#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Verbs on the collection and items.
    pub verbs: Vec<&'static str>,
    /// `status` when the kind has a status subresource; `scale` etc.
    pub subresources: Vec<&'static str>,
    /// Whether `metadata.generation` is maintained (bumped on spec changes).
    pub has_generation: bool,
    /// Only `create` is served (review kinds).
    pub create_only: bool,
    pub type_node: Arc<TypeNode>,
    pub crd: Option<Arc<CrdInfo>>,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn storage_key(&self) -> StorageKey {
        if crate::convert::is_events_v1(&self.group, &self.kind) {
            // Stored as core Events (see convert.rs).
            return StorageKey::new("", "events");
        }
        StorageKey::new(&self.group, &self.plural)
    }

    pub fn has_status(&self) -> bool {
        self.subresources.contains(&"status")
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
}

const CRUD: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

struct Builtin {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    categories: &'static [&'static str],
    subresources: &'static [&'static str],
    generation: bool,
    create_only: bool,
}

const fn b(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
) -> Builtin {
    Builtin {
        group,
        version,
        kind,
        plural,
        namespaced,
        short: &[],
        categories: &[],
        subresources: &[],
        generation: false,
        create_only: false,
    }
}

impl Builtin {
    const fn short(mut self, s: &'static [&'static str]) -> Self {
        self.short = s;
        self
    }
    const fn all(mut self) -> Self {
        self.categories = &["all"];
        self
    }
    const fn status(mut self) -> Self {
        self.subresources = &["status"];
        self
    }
    const fn scale(mut self) -> Self {
        self.subresources = &["status", "scale"];
        self
    }
    const fn generation(mut self) -> Self {
        self.generation = true;
        self
    }
    const fn review(mut self) -> Self {
        self.create_only = true;
        self
    }
}

/// The built-in kinds served (a subset of a real cluster: what the controller,
/// kubectl and Helm use).
const BUILTINS: &[Builtin] = &[
    b("", "v1", "Namespace", "namespaces", false)
        .short(&["ns"])
        .status(),
    b("", "v1", "ConfigMap", "configmaps", true).short(&["cm"]),
    b("", "v1", "Secret", "secrets", true),
    b("", "v1", "Service", "services", true)
        .short(&["svc"])
        .all()
        .status(),
    b("", "v1", "ServiceAccount", "serviceaccounts", true).short(&["sa"]),
    b("", "v1", "Pod", "pods", true)
        .short(&["po"])
        .all()
        .status()
        .generation(),
    b("", "v1", "Event", "events", true).short(&["ev"]),
    b(
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        true,
    )
    .short(&["pvc"])
    .status(),
    b("", "v1", "PersistentVolume", "persistentvolumes", false)
        .short(&["pv"])
        .status(),
    b("", "v1", "Endpoints", "endpoints", true).short(&["ep"]),
    b("", "v1", "Node", "nodes", false).short(&["no"]).status(),
    b("", "v1", "ResourceQuota", "resourcequotas", true)
        .short(&["quota"])
        .status(),
    b("", "v1", "LimitRange", "limitranges", true).short(&["limits"]),
    b("apps", "v1", "Deployment", "deployments", true)
        .short(&["deploy"])
        .all()
        .scale()
        .generation(),
    b("apps", "v1", "StatefulSet", "statefulsets", true)
        .short(&["sts"])
        .all()
        .scale()
        .generation(),
    b("apps", "v1", "DaemonSet", "daemonsets", true)
        .short(&["ds"])
        .all()
        .status()
        .generation(),
    b("apps", "v1", "ReplicaSet", "replicasets", true)
        .short(&["rs"])
        .all()
        .scale()
        .generation(),
    b(
        "apps",
        "v1",
        "ControllerRevision",
        "controllerrevisions",
        true,
    ),
    b("batch", "v1", "Job", "jobs", true)
        .all()
        .status()
        .generation(),
    b("batch", "v1", "CronJob", "cronjobs", true)
        .short(&["cj"])
        .all()
        .status()
        .generation(),
    b("rbac.authorization.k8s.io", "v1", "Role", "roles", true),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        false,
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        true,
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
    ),
    b("coordination.k8s.io", "v1", "Lease", "leases", true),
    b("events.k8s.io", "v1", "Event", "events", true).short(&["ev"]),
    b(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
    )
    .short(&["crd", "crds"])
    .status()
    .generation(),
    b(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        false,
    )
    .generation(),
    b(
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        false,
    )
    .generation(),
    b(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        true,
    )
    .short(&["pdb"])
    .status()
    .generation(),
    b(
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        true,
    )
    .short(&["hpa"])
    .all()
    .status()
    .generation(),
    b(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        true,
    )
    .short(&["netpol"])
    .generation(),
    b("networking.k8s.io", "v1", "Ingress", "ingresses", true)
        .short(&["ing"])
        .status()
        .generation(),
    b(
        "networking.k8s.io",
        "v1",
        "IngressClass",
        "ingressclasses",
        false,
    ),
    b(
        "storage.k8s.io",
        "v1",
        "StorageClass",
        "storageclasses",
        false,
    )
    .short(&["sc"]),
    b(
        "scheduling.k8s.io",
        "v1",
        "PriorityClass",
        "priorityclasses",
        false,
    )
    .short(&["pc"]),
    b(
        "authorization.k8s.io",
        "v1",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
        false,
    )
    .review(),
    b(
        "authorization.k8s.io",
        "v1",
        "SelfSubjectRulesReview",
        "selfsubjectrulesreviews",
        false,
    )
    .review(),
    b(
        "authorization.k8s.io",
        "v1",
        "SubjectAccessReview",
        "subjectaccessreviews",
        false,
    )
    .review(),
    b(
        "authorization.k8s.io",
        "v1",
        "LocalSubjectAccessReview",
        "localsubjectaccessreviews",
        true,
    )
    .review(),
    b(
        "authentication.k8s.io",
        "v1",
        "SelfSubjectReview",
        "selfsubjectreviews",
        false,
    )
    .review(),
];

/// The preferred order of groups in discovery (core first, like a real server).
const GROUP_ORDER: &[&str] = &[
    "",
    "apiregistration.k8s.io",
    "apps",
    "events.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "networking.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "scheduling.k8s.io",
    "coordination.k8s.io",
];

/// The served resource types.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    types: Vec<Arc<ResourceType>>,
    /// CRD name → the types it contributes.
    crds: BTreeMap<String, Vec<Arc<ResourceType>>>,
}

impl Registry {
    /// The registry with only built-in kinds.
    pub fn builtin() -> Registry {
        let types = BUILTINS
            .iter()
            .map(|bt| {
                Arc::new(ResourceType {
                    group: bt.group.to_string(),
                    version: bt.version.to_string(),
                    kind: bt.kind.to_string(),
                    plural: bt.plural.to_string(),
                    singular: bt.kind.to_ascii_lowercase(),
                    namespaced: bt.namespaced,
                    short_names: bt.short.iter().map(|s| s.to_string()).collect(),
                    categories: bt.categories.iter().map(|s| s.to_string()).collect(),
                    verbs: if bt.create_only {
                        vec!["create"]
                    } else {
                        CRUD.to_vec()
                    },
                    subresources: bt.subresources.to_vec(),
                    has_generation: bt.generation,
                    create_only: bt.create_only,
                    type_node: Arc::new(crate::builtin_types::builtin_type(bt.group, bt.kind)),
                    crd: None,
                })
            })
            .collect();
        Registry {
            types,
            crds: BTreeMap::new(),
        }
    }

    /// Every served type, built-ins first.
    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceType>> {
        self.types
            .iter()
            .chain(self.crds.values().flat_map(|v| v.iter()))
    }

    /// The type served at group/version/plural.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.all()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }

    /// The type of a kind at an apiVersion (`v1`, `apps/v1`).
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceType>> {
        let (group, version) = split_api_version(api_version);
        self.all()
            .find(|t| t.group == group && t.version == version && t.kind == kind)
            .cloned()
    }

    /// Any served version of group/plural, preferring the storage version of CRDs.
    pub fn any_version(&self, group: &str, plural: &str) -> Option<Arc<ResourceType>> {
        let mut candidates: Vec<_> = self
            .all()
            .filter(|t| t.group == group && t.plural == plural)
            .cloned()
            .collect();
        candidates.sort_by_key(|t| !t.crd.as_ref().is_some_and(|c| c.storage));
        candidates.into_iter().next()
    }

    /// The served versions of a group, preferred first.
    pub fn versions_of(&self, group: &str) -> Vec<String> {
        let mut versions: Vec<String> = Vec::new();
        // Storage versions of CRDs first, then the rest in order of appearance.
        for t in self.all().filter(|t| t.group == group) {
            if t.crd.as_ref().is_some_and(|c| c.storage) && !versions.contains(&t.version) {
                versions.insert(0, t.version.clone());
            }
        }
        for t in self.all().filter(|t| t.group == group) {
            if !versions.contains(&t.version) {
                versions.push(t.version.clone());
            }
        }
        versions
    }

    /// The served groups (excluding core), in discovery order.
    pub fn groups(&self) -> Vec<String> {
        let mut groups: Vec<String> = Vec::new();
        for g in GROUP_ORDER.iter().filter(|g| !g.is_empty()) {
            if self.all().any(|t| t.group == *g) {
                groups.push(g.to_string());
            }
        }
        let mut extra: Vec<String> = self
            .all()
            .filter(|t| !t.group.is_empty() && !GROUP_ORDER.contains(&t.group.as_str()))
            .map(|t| t.group.clone())
            .collect();
        extra.sort();
        extra.dedup();
        groups.extend(extra);
        groups
    }

    /// Types served at one group/version.
    pub fn in_group_version(&self, group: &str, version: &str) -> Vec<Arc<ResourceType>> {
        self.all()
            .filter(|t| t.group == group && t.version == version)
            .cloned()
            .collect()
    }

    /// Replaces the types contributed by a CRD (empty removes them).
    pub fn set_crd(&mut self, crd_name: &str, types: Vec<Arc<ResourceType>>) {
        if types.is_empty() {
            self.crds.remove(crd_name);
        } else {
            self.crds.insert(crd_name.to_string(), types);
        }
    }

    /// Whether a CRD currently contributes types.
    pub fn has_crd(&self, crd_name: &str) -> bool {
        self.crds.contains_key(crd_name)
    }
}

/// `apps/v1` → (`apps`, `v1`); `v1` → (``, `v1`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// Builds the types a CustomResourceDefinition contributes (one per served
/// version), or an error message when the CRD cannot be served.
pub fn types_from_crd(crd: &Value) -> Result<Vec<Arc<ResourceType>>, String> {
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let spec = crd.get("spec").ok_or("spec is missing")?;
    let group = spec
        .get("group")
        .and_then(Value::as_str)
        .ok_or("spec.group is missing")?;
    let names = spec.get("names").ok_or("spec.names is missing")?;
    let kind = names
        .get("kind")
        .and_then(Value::as_str)
        .ok_or("spec.names.kind is missing")?;
    let plural = names
        .get("plural")
        .and_then(Value::as_str)
        .ok_or("spec.names.plural is missing")?;
    let singular = names
        .get("singular")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_ascii_lowercase());
    let str_list = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let short_names = str_list(names.get("shortNames"));
    let categories = str_list(names.get("categories"));
    let namespaced = spec.get("scope").and_then(Value::as_str) != Some("Cluster");
    let mut out = Vec::new();
    for version in spec
        .get("versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if !version
            .get("served")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            continue;
        }
        let vname = version
            .get("name")
            .and_then(Value::as_str)
            .ok_or("a version has no name")?;
        let schema = version
            .pointer("/schema/openAPIV3Schema")
            .cloned()
            .or_else(|| spec.pointer("/validation/openAPIV3Schema").cloned());
        let compiled = match &schema {
            Some(s) => Some(
                crate::schema::CompiledSchema::new(s)
                    .map_err(|e| format!("version {vname}: {e}"))?,
            ),
            None => None,
        };
        let type_node = schema
            .as_ref()
            .map(TypeNode::from_openapi)
            .unwrap_or_default();
        let mut subresources = Vec::new();
        if version.pointer("/subresources/status").is_some() {
            subresources.push("status");
        }
        if version.pointer("/subresources/scale").is_some() {
            subresources.push("scale");
        }
        let selectable_fields = version
            .get("selectableFields")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|f| f.get("jsonPath").and_then(Value::as_str))
                    .map(|p| p.trim_start_matches('.').to_string())
                    .collect()
            })
            .unwrap_or_default();
        out.push(Arc::new(ResourceType {
            group: group.to_string(),
            version: vname.to_string(),
            kind: kind.to_string(),
            plural: plural.to_string(),
            singular: singular.clone(),
            namespaced,
            short_names: short_names.clone(),
            categories: categories.clone(),
            verbs: CRUD.to_vec(),
            subresources,
            has_generation: true,
            create_only: false,
            type_node: Arc::new(with_metadata(type_node)),
            crd: Some(Arc::new(CrdInfo {
                name: name.clone(),
                schema,
                compiled,
                printer_columns: version
                    .get("additionalPrinterColumns")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
                selectable_fields,
                storage: version
                    .get("storage")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            })),
        }));
    }
    Ok(out)
}

/// Adds the ObjectMeta type to a custom resource's type tree (the CRD schema
/// declares `metadata` as a bare object).
fn with_metadata(node: TypeNode) -> TypeNode {
    match node {
        TypeNode::Object {
            mut fields,
            additional,
            atomic,
            retain_keys,
        } => {
            // Every custom resource has these at its root, declared or not.
            fields.insert(
                "metadata".to_string(),
                crate::builtin_types::metadata_type(),
            );
            fields.insert("apiVersion".to_string(), TypeNode::Scalar);
            fields.insert("kind".to_string(), TypeNode::Scalar);
            TypeNode::Object {
                fields,
                additional,
                atomic,
                retain_keys,
            }
        }
        other => other,
    }
}
