//! Field specs: "this path in objects of this kind", kustomize's way of
//! saying where a transformer writes.

use serde_json::{Map, Value};

use crate::resource::Gvk;

#[derive(Debug, Clone)]
pub struct FieldSpec {
    pub gvk: Gvk,
    pub path: Vec<String>,
    pub create: bool,
}

impl FieldSpec {
    pub fn new(group: &str, version: &str, kind: &str, path: &str, create: bool) -> FieldSpec {
        FieldSpec {
            gvk: Gvk {
                group: group.into(),
                version: version.into(),
                kind: kind.into(),
            },
            path: split_path(path),
            create,
        }
    }
}

/// Splits "a/b\/c/d[]" into ["a", "b/c", "d"]; "[]" only marks a list,
/// which the walk handles by itself.
pub fn split_path(path: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = path.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'/') => {
                cur.push('/');
                chars.next();
            }
            '/' => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    parts.push(cur);
    parts
        .into_iter()
        .map(|p| p.strip_suffix("[]").map(str::to_string).unwrap_or(p))
        .filter(|p| !p.is_empty())
        .collect()
}

/// Calls `f` on every node at `path` under `v`, walking into every element
/// of lists met on the way. With `create`, missing maps on the way and a
/// missing final field (as `Value::Null`) are created.
pub fn walk<F>(v: &mut Value, path: &[String], create: bool, f: &mut F) -> Result<(), String>
where
    F: FnMut(&mut Value) -> Result<(), String>,
{
    if let Value::Array(items) = v {
        for item in items {
            walk(item, path, create, f)?;
        }
        return Ok(());
    }
    let Some((head, rest)) = path.split_first() else {
        return f(v);
    };
    let Value::Object(map) = v else {
        return Ok(());
    };
    match map.get_mut(head.as_str()) {
        Some(child) if !child.is_null() => return walk(child, rest, create, f),
        _ if !create => return Ok(()),
        _ => {}
    }
    let fresh = if rest.is_empty() {
        Value::Null
    } else {
        Value::Object(Map::new())
    };
    map.insert(head.clone(), fresh);
    let child = map.get_mut(head.as_str()).expect("just inserted");
    walk(child, rest, create, f)
}

fn specs(list: &[(&str, &str, &str, &str, bool)]) -> Vec<FieldSpec> {
    list.iter()
        .map(|(g, v, k, p, c)| FieldSpec::new(g, v, k, p, *c))
        .collect()
}

/// kustomize's metadataLabelsFieldSpecs (also its templateLabels).
pub fn metadata_labels() -> Vec<FieldSpec> {
    specs(&[
        ("", "", "", "metadata/labels", true),
        (
            "",
            "v1",
            "ReplicationController",
            "spec/template/metadata/labels",
            true,
        ),
        ("", "", "Deployment", "spec/template/metadata/labels", true),
        ("", "", "ReplicaSet", "spec/template/metadata/labels", true),
        ("", "", "DaemonSet", "spec/template/metadata/labels", true),
        (
            "apps",
            "",
            "StatefulSet",
            "spec/template/metadata/labels",
            true,
        ),
        (
            "apps",
            "",
            "StatefulSet",
            "spec/volumeClaimTemplates[]/metadata/labels",
            true,
        ),
        ("batch", "", "Job", "spec/template/metadata/labels", true),
        (
            "batch",
            "",
            "CronJob",
            "spec/jobTemplate/metadata/labels",
            true,
        ),
        (
            "batch",
            "",
            "CronJob",
            "spec/jobTemplate/spec/template/metadata/labels",
            true,
        ),
    ])
}

/// kustomize's commonLabels field specs: selectors plus metadata labels.
pub fn common_labels() -> Vec<FieldSpec> {
    let aff = [
        "spec/template/spec/affinity/podAffinity/preferredDuringSchedulingIgnoredDuringExecution/podAffinityTerm/labelSelector/matchLabels",
        "spec/template/spec/affinity/podAffinity/requiredDuringSchedulingIgnoredDuringExecution/labelSelector/matchLabels",
        "spec/template/spec/affinity/podAntiAffinity/preferredDuringSchedulingIgnoredDuringExecution/podAffinityTerm/labelSelector/matchLabels",
        "spec/template/spec/affinity/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution/labelSelector/matchLabels",
        "spec/template/spec/topologySpreadConstraints/labelSelector/matchLabels",
    ];
    let mut out = specs(&[
        ("", "v1", "Service", "spec/selector", true),
        ("", "v1", "ReplicationController", "spec/selector", true),
        ("", "", "Deployment", "spec/selector/matchLabels", true),
    ]);
    for p in aff {
        out.push(FieldSpec::new("apps", "", "Deployment", p, false));
    }
    out.extend(specs(&[
        ("", "", "ReplicaSet", "spec/selector/matchLabels", true),
        ("", "", "DaemonSet", "spec/selector/matchLabels", true),
        ("apps", "", "StatefulSet", "spec/selector/matchLabels", true),
        (
            "apps",
            "",
            "StatefulSet",
            "spec/volumeClaimTemplates[]/metadata/labels",
            true,
        ),
    ]));
    for p in aff {
        out.push(FieldSpec::new("apps", "", "StatefulSet", p, false));
    }
    out.extend(specs(&[
        ("batch", "", "Job", "spec/selector/matchLabels", false),
        (
            "batch",
            "",
            "CronJob",
            "spec/jobTemplate/spec/selector/matchLabels",
            false,
        ),
        (
            "policy",
            "",
            "PodDisruptionBudget",
            "spec/selector/matchLabels",
            false,
        ),
        (
            "networking.k8s.io",
            "",
            "NetworkPolicy",
            "spec/podSelector/matchLabels",
            false,
        ),
        (
            "networking.k8s.io",
            "",
            "NetworkPolicy",
            "spec/ingress/from/podSelector/matchLabels",
            false,
        ),
        (
            "networking.k8s.io",
            "",
            "NetworkPolicy",
            "spec/egress/to/podSelector/matchLabels",
            false,
        ),
    ]));
    out.extend(metadata_labels());
    out
}

/// kustomize's commonAnnotations field specs.
pub fn common_annotations() -> Vec<FieldSpec> {
    specs(&[
        ("", "", "", "metadata/annotations", true),
        (
            "",
            "v1",
            "ReplicationController",
            "spec/template/metadata/annotations",
            true,
        ),
        (
            "",
            "",
            "Deployment",
            "spec/template/metadata/annotations",
            true,
        ),
        (
            "",
            "",
            "ReplicaSet",
            "spec/template/metadata/annotations",
            true,
        ),
        (
            "",
            "",
            "DaemonSet",
            "spec/template/metadata/annotations",
            true,
        ),
        (
            "",
            "",
            "StatefulSet",
            "spec/template/metadata/annotations",
            true,
        ),
        (
            "batch",
            "",
            "Job",
            "spec/template/metadata/annotations",
            true,
        ),
        (
            "batch",
            "",
            "CronJob",
            "spec/jobTemplate/metadata/annotations",
            true,
        ),
        (
            "batch",
            "",
            "CronJob",
            "spec/jobTemplate/spec/template/metadata/annotations",
            true,
        ),
    ])
}

/// kustomize's replicas field specs.
pub fn replicas() -> Vec<FieldSpec> {
    specs(&[
        ("", "", "Deployment", "spec/replicas", true),
        ("", "", "ReplicationController", "spec/replicas", true),
        ("", "", "ReplicaSet", "spec/replicas", true),
        ("", "", "StatefulSet", "spec/replicas", true),
    ])
}

/// One name-reference rule: objects of `target` kind are referred to by name
/// from the fields in `referrers`.
pub struct NameRef {
    pub target: Gvk,
    pub referrers: Vec<FieldSpec>,
}

const POD_CM_PATHS: &[&str] = &[
    "spec/volumes/configMap/name",
    "spec/containers/env/valueFrom/configMapKeyRef/name",
    "spec/initContainers/env/valueFrom/configMapKeyRef/name",
    "spec/containers/envFrom/configMapRef/name",
    "spec/initContainers/envFrom/configMapRef/name",
    "spec/volumes/projected/sources/configMap/name",
];

const POD_SECRET_PATHS: &[&str] = &[
    "spec/volumes/secret/secretName",
    "spec/containers/env/valueFrom/secretKeyRef/name",
    "spec/initContainers/env/valueFrom/secretKeyRef/name",
    "spec/containers/envFrom/secretRef/name",
    "spec/initContainers/envFrom/secretRef/name",
    "spec/imagePullSecrets/name",
    "spec/volumes/projected/sources/secret/name",
];

/// Where pod specs live, by kind.
const POD_HOLDERS: &[(&str, &str, &str)] = &[
    ("v1", "Pod", ""),
    ("", "PodTemplate", "template/"),
    ("", "Deployment", "spec/template/"),
    ("", "ReplicaSet", "spec/template/"),
    ("", "DaemonSet", "spec/template/"),
    ("", "StatefulSet", "spec/template/"),
    ("", "Job", "spec/template/"),
    ("", "CronJob", "spec/jobTemplate/spec/template/"),
];

fn gvk(group: &str, version: &str, kind: &str) -> Gvk {
    Gvk {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
    }
}

/// kustomize's nameReference configuration (the common part of it).
pub fn name_references() -> Vec<NameRef> {
    let pod_refs = |paths: &[&str]| {
        let mut out = Vec::new();
        for (v, kind, prefix) in POD_HOLDERS {
            for p in paths {
                out.push(FieldSpec::new("", v, kind, &format!("{prefix}{p}"), false));
            }
        }
        out
    };
    let mut cm = pod_refs(POD_CM_PATHS);
    cm.extend([
        FieldSpec::new("", "", "Node", "spec/configSource/configMap", false),
        FieldSpec::new("", "", "Role", "rules/resourceNames", false),
        FieldSpec::new("", "", "ClusterRole", "rules/resourceNames", false),
        FieldSpec::new(
            "",
            "",
            "Ingress",
            "metadata/annotations/nginx.ingress.kubernetes.io\\/fastcgi-params-configmap",
            false,
        ),
    ]);
    let mut secret = pod_refs(POD_SECRET_PATHS);
    secret.extend([
        FieldSpec::new("", "", "Ingress", "spec/tls/secretName", false),
        FieldSpec::new(
            "",
            "",
            "Ingress",
            "metadata/annotations/ingress.kubernetes.io\\/auth-secret",
            false,
        ),
        FieldSpec::new(
            "",
            "",
            "Ingress",
            "metadata/annotations/nginx.ingress.kubernetes.io\\/auth-secret",
            false,
        ),
        FieldSpec::new(
            "",
            "",
            "Ingress",
            "metadata/annotations/nginx.ingress.kubernetes.io\\/auth-tls-secret",
            false,
        ),
        FieldSpec::new("", "", "ServiceAccount", "imagePullSecrets/name", false),
        FieldSpec::new("", "", "StorageClass", "parameters/secretName", false),
        FieldSpec::new("", "", "StorageClass", "parameters/adminSecretName", false),
        FieldSpec::new("", "", "StorageClass", "parameters/userSecretName", false),
        FieldSpec::new("", "", "StorageClass", "parameters/secretRef", false),
        FieldSpec::new("", "", "Role", "rules/resourceNames", false),
        FieldSpec::new("", "", "ClusterRole", "rules/resourceNames", false),
        FieldSpec::new(
            "",
            "",
            "PersistentVolume",
            "spec/azureFile/secretName",
            false,
        ),
    ]);
    let hpa = |kind: &str| NameRef {
        target: gvk("", "", kind),
        referrers: vec![FieldSpec::new(
            "",
            "",
            "HorizontalPodAutoscaler",
            "spec/scaleTargetRef/name",
            false,
        )],
    };
    let sa_holders = [
        ("Pod", "spec/serviceAccountName"),
        ("StatefulSet", "spec/template/spec/serviceAccountName"),
        ("Deployment", "spec/template/spec/serviceAccountName"),
        (
            "ReplicationController",
            "spec/template/spec/serviceAccountName",
        ),
        (
            "CronJob",
            "spec/jobTemplate/spec/template/spec/serviceAccountName",
        ),
        ("Job", "spec/template/spec/serviceAccountName"),
        ("DaemonSet", "spec/template/spec/serviceAccountName"),
    ];
    let mut sa = vec![
        FieldSpec::new(
            "rbac.authorization.k8s.io",
            "",
            "RoleBinding",
            "subjects",
            false,
        ),
        FieldSpec::new(
            "rbac.authorization.k8s.io",
            "",
            "ClusterRoleBinding",
            "subjects",
            false,
        ),
    ];
    let mut pvc = Vec::new();
    let mut prio = Vec::new();
    for (kind, path) in sa_holders {
        sa.push(FieldSpec::new("", "", kind, path, false));
        let base = path.trim_end_matches("serviceAccountName");
        pvc.push(FieldSpec::new(
            "",
            "",
            kind,
            &format!("{base}volumes/persistentVolumeClaim/claimName"),
            false,
        ));
        prio.push(FieldSpec::new(
            "",
            "",
            kind,
            &format!("{base}priorityClassName"),
            false,
        ));
    }
    vec![
        hpa("Deployment"),
        hpa("ReplicationController"),
        hpa("ReplicaSet"),
        hpa("StatefulSet"),
        NameRef {
            target: gvk("", "v1", "ConfigMap"),
            referrers: cm,
        },
        NameRef {
            target: gvk("", "v1", "Secret"),
            referrers: secret,
        },
        NameRef {
            target: gvk("", "v1", "Service"),
            referrers: vec![
                FieldSpec::new("apps", "", "StatefulSet", "spec/serviceName", false),
                FieldSpec::new(
                    "",
                    "",
                    "Ingress",
                    "spec/rules/http/paths/backend/serviceName",
                    false,
                ),
                FieldSpec::new("", "", "Ingress", "spec/backend/serviceName", false),
                FieldSpec::new(
                    "",
                    "",
                    "Ingress",
                    "spec/rules/http/paths/backend/service/name",
                    false,
                ),
                FieldSpec::new("", "", "Ingress", "spec/defaultBackend/service/name", false),
                FieldSpec::new(
                    "apiregistration.k8s.io",
                    "",
                    "APIService",
                    "spec/service/name",
                    false,
                ),
                FieldSpec::new(
                    "admissionregistration.k8s.io",
                    "",
                    "ValidatingWebhookConfiguration",
                    "webhooks/clientConfig/service",
                    false,
                ),
                FieldSpec::new(
                    "admissionregistration.k8s.io",
                    "",
                    "MutatingWebhookConfiguration",
                    "webhooks/clientConfig/service",
                    false,
                ),
                FieldSpec::new("", "", "HTTPRoute", "spec/rules/backendRefs/name", false),
            ],
        },
        NameRef {
            target: gvk("rbac.authorization.k8s.io", "", "Role"),
            referrers: vec![FieldSpec::new(
                "rbac.authorization.k8s.io",
                "",
                "RoleBinding",
                "roleRef/name",
                false,
            )],
        },
        NameRef {
            target: gvk("rbac.authorization.k8s.io", "", "ClusterRole"),
            referrers: vec![
                FieldSpec::new(
                    "rbac.authorization.k8s.io",
                    "",
                    "RoleBinding",
                    "roleRef/name",
                    false,
                ),
                FieldSpec::new(
                    "rbac.authorization.k8s.io",
                    "",
                    "ClusterRoleBinding",
                    "roleRef/name",
                    false,
                ),
            ],
        },
        NameRef {
            target: gvk("", "v1", "ServiceAccount"),
            referrers: sa,
        },
        NameRef {
            target: gvk("", "v1", "PersistentVolumeClaim"),
            referrers: pvc,
        },
        NameRef {
            target: gvk("", "v1", "PersistentVolume"),
            referrers: vec![
                FieldSpec::new("", "", "PersistentVolumeClaim", "spec/volumeName", false),
                FieldSpec::new("", "", "ClusterRole", "rules/resourceNames", false),
            ],
        },
        NameRef {
            target: gvk("storage.k8s.io", "v1", "StorageClass"),
            referrers: vec![
                FieldSpec::new("", "", "PersistentVolume", "spec/storageClassName", false),
                FieldSpec::new(
                    "",
                    "",
                    "PersistentVolumeClaim",
                    "spec/storageClassName",
                    false,
                ),
                FieldSpec::new(
                    "",
                    "",
                    "StatefulSet",
                    "spec/volumeClaimTemplates/spec/storageClassName",
                    false,
                ),
            ],
        },
        NameRef {
            target: gvk("scheduling.k8s.io", "v1", "PriorityClass"),
            referrers: prio,
        },
        NameRef {
            target: gvk("networking.k8s.io/v1", "v1", "IngressClass"),
            referrers: vec![FieldSpec::new(
                "",
                "",
                "Ingress",
                "spec/ingressClassName",
                false,
            )],
        },
    ]
}

/// Sets string entries into the map at `v` (creating it when `v` is null).
pub fn set_entries(v: &mut Value, entries: &Map<String, Value>) -> Result<(), String> {
    if v.is_null() {
        *v = Value::Object(Map::new());
    }
    let Value::Object(map) = v else {
        return Err("expected a map".into());
    };
    for (k, val) in entries {
        map.insert(k.clone(), val.clone());
    }
    Ok(())
}
