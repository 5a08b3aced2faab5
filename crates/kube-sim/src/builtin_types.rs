//! Type trees of built-in kinds, with the list types, list-map keys, atomic
//! maps and strategic merge metadata that the real Kubernetes OpenAPI and Go
//! struct tags declare (`x-kubernetes-list-type`, `x-kubernetes-list-map-keys`,
//! `x-kubernetes-map-type`/`+structType=atomic`, `patchStrategy`,
//! `patchMergeKey`).
//!
//! Object-valued fields are declared (rather than left to `Any`) wherever the
//! real schema declares them, because ownership tracking differs between a
//! declared field and an undeclared map key: an undeclared key is owned as a
//! whole (a `"."` entry in `fieldsV1`). Scalar fields mostly need no
//! declaration: they are leaves either way. Fields no table here knows are
//! `Any` (maps granular, lists atomic).
//!
//! `zero_value` gives, per kind, the skeleton that the Go zero value of the
//! kind serializes to (struct-typed fields that are never omitted, and
//! non-`omitempty` lists that serialize as `null`). The real server compares
//! typed objects, so these are always present on both sides of a comparison;
//! the managed-fields bookkeeping overlays them to compute the same `"."`
//! entries the real server does.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::typeinfo::{ListType, SmpStrategy, TypeNode};

fn obj<const N: usize>(fields: [(&str, TypeNode); N]) -> TypeNode {
    TypeNode::object(fields)
}

/// An object that is replaced and owned as a whole (`+structType=atomic`).
fn atomic_obj<const N: usize>(fields: [(&str, TypeNode); N]) -> TypeNode {
    TypeNode::Object {
        fields: fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<BTreeMap<_, _>>(),
        additional: Some(Box::new(TypeNode::Any)),
        atomic: true,
        retain_keys: false,
    }
}

/// A map of strings (labels, annotations, data...), merged key by key.
fn string_map() -> TypeNode {
    TypeNode::Object {
        fields: BTreeMap::new(),
        additional: Some(Box::new(TypeNode::Scalar)),
        atomic: false,
        retain_keys: false,
    }
}

/// A map of strings owned as a whole (`+mapType=atomic`).
fn atomic_string_map() -> TypeNode {
    TypeNode::Object {
        fields: BTreeMap::new(),
        additional: Some(Box::new(TypeNode::Scalar)),
        atomic: true,
        retain_keys: false,
    }
}

fn atomic() -> TypeNode {
    TypeNode::atomic_list(TypeNode::Any)
}

fn atomic_of(items: TypeNode) -> TypeNode {
    TypeNode::atomic_list(items)
}

/// A list-map keyed by `keys` for apply that merges by `smp_key`.
fn lmap(items: TypeNode, keys: &[&str], smp_key: &str) -> TypeNode {
    TypeNode::list_map(items, keys, Some(smp_key))
}

/// A set of scalars for apply without a strategic merge strategy.
fn set_replace() -> TypeNode {
    TypeNode::List {
        items: Box::new(TypeNode::Scalar),
        list_type: ListType::Set,
        smp: SmpStrategy::Replace,
    }
}

/// Marks an object with the strategic merge `retainKeys` strategy.
fn retain_keys(mut ty: TypeNode) -> TypeNode {
    if let TypeNode::Object { retain_keys, .. } = &mut ty {
        *retain_keys = true;
    }
    ty
}

fn s() -> TypeNode {
    TypeNode::Scalar
}

/// `metav1.Condition`-like status conditions: a list-map keyed by `type`,
/// merged by `type`.
fn conditions() -> TypeNode {
    lmap(obj([("type", s())]), &["type"], "type")
}

fn label_selector() -> TypeNode {
    atomic_obj([
        ("matchLabels", string_map()),
        ("matchExpressions", atomic()),
    ])
}

fn local_object_reference() -> TypeNode {
    atomic_obj([("name", s())])
}

fn object_reference() -> TypeNode {
    atomic_obj([("name", s())])
}

/// `ObjectMeta`.
pub fn metadata_type() -> TypeNode {
    obj([
        ("name", s()),
        ("generateName", s()),
        ("namespace", s()),
        ("uid", s()),
        ("resourceVersion", s()),
        ("generation", s()),
        ("creationTimestamp", s()),
        ("deletionTimestamp", s()),
        ("deletionGracePeriodSeconds", s()),
        ("selfLink", s()),
        ("labels", string_map()),
        ("annotations", string_map()),
        ("finalizers", TypeNode::scalar_set()),
        (
            "ownerReferences",
            lmap(
                obj([
                    ("apiVersion", s()),
                    ("kind", s()),
                    ("name", s()),
                    ("uid", s()),
                    ("controller", s()),
                    ("blockOwnerDeletion", s()),
                ]),
                &["uid"],
                "uid",
            ),
        ),
        ("managedFields", atomic()),
    ])
}

/// A kind's type with its `metadata` field typed as `ObjectMeta` (for custom
/// resources, whose schemas do not describe metadata).
pub fn with_object_meta(ty: TypeNode) -> TypeNode {
    match ty {
        TypeNode::Object {
            mut fields,
            additional,
            atomic,
            retain_keys,
        } => {
            fields.insert("metadata".to_string(), metadata_type());
            fields
                .entry("apiVersion".to_string())
                .or_insert(TypeNode::Scalar);
            fields.entry("kind".to_string()).or_insert(TypeNode::Scalar);
            TypeNode::Object {
                fields,
                additional,
                atomic,
                retain_keys,
            }
        }
        _ => TypeNode::object([
            ("apiVersion", TypeNode::Scalar),
            ("kind", TypeNode::Scalar),
            ("metadata", metadata_type()),
        ]),
    }
}

/// A top-level object with `apiVersion`, `kind`, `metadata` and these fields.
fn kind_type<const N: usize>(fields: [(&str, TypeNode); N]) -> TypeNode {
    let mut all: Vec<(&str, TypeNode)> = vec![
        ("apiVersion", s()),
        ("kind", s()),
        ("metadata", metadata_type()),
    ];
    all.extend(fields);
    TypeNode::object(all)
}

// ---------------------------------------------------------------------------
// core/v1 building blocks

fn resource_requirements() -> TypeNode {
    obj([
        ("limits", string_map()),
        ("requests", string_map()),
        (
            "claims",
            TypeNode::list_map(obj([("name", s())]), &["name"], None),
        ),
    ])
}

fn env_var() -> TypeNode {
    obj([
        ("name", s()),
        ("value", s()),
        (
            "valueFrom",
            obj([
                ("fieldRef", atomic_obj([("fieldPath", s())])),
                ("resourceFieldRef", atomic_obj([("resource", s())])),
                ("configMapKeyRef", atomic_obj([("name", s()), ("key", s())])),
                ("secretKeyRef", atomic_obj([("name", s()), ("key", s())])),
                ("fileKeyRef", atomic_obj([("path", s())])),
            ]),
        ),
    ])
}

fn lifecycle_handler() -> TypeNode {
    obj([
        ("exec", obj([("command", atomic())])),
        ("httpGet", obj([("httpHeaders", atomic()), ("port", s())])),
        ("tcpSocket", obj([("port", s())])),
        ("sleep", obj([("seconds", s())])),
    ])
}

fn probe() -> TypeNode {
    obj([
        ("exec", obj([("command", atomic())])),
        ("httpGet", obj([("httpHeaders", atomic()), ("port", s())])),
        ("tcpSocket", obj([("port", s())])),
        ("grpc", obj([("port", s())])),
    ])
}

fn se_linux_options() -> TypeNode {
    obj([("user", s()), ("role", s()), ("type", s()), ("level", s())])
}

fn seccomp_profile() -> TypeNode {
    obj([("type", s()), ("localhostProfile", s())])
}

fn security_context() -> TypeNode {
    obj([
        ("capabilities", obj([("add", atomic()), ("drop", atomic())])),
        ("seLinuxOptions", se_linux_options()),
        ("windowsOptions", obj([("gmsaCredentialSpecName", s())])),
        ("seccompProfile", seccomp_profile()),
        ("appArmorProfile", obj([("type", s())])),
    ])
}

fn container() -> TypeNode {
    obj([
        ("name", s()),
        ("image", s()),
        ("command", atomic()),
        ("args", atomic()),
        (
            "ports",
            lmap(
                obj([("containerPort", s()), ("protocol", s())]),
                &["containerPort", "protocol"],
                "containerPort",
            ),
        ),
        ("env", lmap(env_var(), &["name"], "name")),
        (
            "envFrom",
            atomic_of(obj([
                ("configMapRef", local_object_reference()),
                ("secretRef", local_object_reference()),
            ])),
        ),
        ("resources", resource_requirements()),
        ("resizePolicy", atomic()),
        ("restartPolicyRules", atomic()),
        (
            "volumeMounts",
            lmap(obj([("mountPath", s())]), &["mountPath"], "mountPath"),
        ),
        (
            "volumeDevices",
            lmap(obj([("devicePath", s())]), &["devicePath"], "devicePath"),
        ),
        ("livenessProbe", probe()),
        ("readinessProbe", probe()),
        ("startupProbe", probe()),
        (
            "lifecycle",
            obj([
                ("postStart", lifecycle_handler()),
                ("preStop", lifecycle_handler()),
            ]),
        ),
        ("securityContext", security_context()),
    ])
}

fn key_to_path_items() -> TypeNode {
    atomic()
}

fn volume() -> TypeNode {
    retain_keys(obj([
        ("name", s()),
        ("emptyDir", obj([("medium", s()), ("sizeLimit", s())])),
        ("hostPath", obj([("path", s())])),
        (
            "configMap",
            obj([("name", s()), ("items", key_to_path_items())]),
        ),
        (
            "secret",
            obj([("secretName", s()), ("items", key_to_path_items())]),
        ),
        ("persistentVolumeClaim", obj([("claimName", s())])),
        ("downwardAPI", obj([("items", atomic())])),
        ("projected", obj([("sources", atomic())])),
        (
            "csi",
            obj([
                ("driver", s()),
                ("volumeAttributes", string_map()),
                ("nodePublishSecretRef", local_object_reference()),
            ]),
        ),
        ("nfs", obj([("server", s()), ("path", s())])),
        ("image", obj([("reference", s())])),
        (
            "ephemeral",
            obj([(
                "volumeClaimTemplate",
                obj([("metadata", metadata_type()), ("spec", pvc_spec())]),
            )]),
        ),
    ]))
}

fn node_selector() -> TypeNode {
    atomic_obj([("nodeSelectorTerms", atomic())])
}

fn affinity() -> TypeNode {
    let pod_affinity = || {
        obj([
            ("requiredDuringSchedulingIgnoredDuringExecution", atomic()),
            ("preferredDuringSchedulingIgnoredDuringExecution", atomic()),
        ])
    };
    obj([
        (
            "nodeAffinity",
            obj([
                (
                    "requiredDuringSchedulingIgnoredDuringExecution",
                    node_selector(),
                ),
                ("preferredDuringSchedulingIgnoredDuringExecution", atomic()),
            ]),
        ),
        ("podAffinity", pod_affinity()),
        ("podAntiAffinity", pod_affinity()),
    ])
}

fn pod_spec() -> TypeNode {
    obj([
        ("volumes", lmap(volume(), &["name"], "name")),
        ("initContainers", lmap(container(), &["name"], "name")),
        ("containers", lmap(container(), &["name"], "name")),
        ("ephemeralContainers", lmap(container(), &["name"], "name")),
        (
            "imagePullSecrets",
            lmap(local_object_reference(), &["name"], "name"),
        ),
        ("tolerations", atomic()),
        (
            "hostAliases",
            lmap(obj([("ip", s()), ("hostnames", atomic())]), &["ip"], "ip"),
        ),
        (
            "topologySpreadConstraints",
            lmap(
                obj([
                    ("topologyKey", s()),
                    ("whenUnsatisfiable", s()),
                    ("labelSelector", label_selector()),
                    ("matchLabelKeys", atomic()),
                ]),
                &["topologyKey", "whenUnsatisfiable"],
                "topologyKey",
            ),
        ),
        (
            "resourceClaims",
            TypeNode::List {
                items: Box::new(retain_keys(obj([("name", s())]))),
                list_type: ListType::Map {
                    keys: vec!["name".to_string()],
                },
                smp: SmpStrategy::Merge {
                    key: Some("name".to_string()),
                },
            },
        ),
        (
            "schedulingGates",
            lmap(obj([("name", s())]), &["name"], "name"),
        ),
        ("readinessGates", atomic()),
        ("nodeSelector", atomic_string_map()),
        ("affinity", affinity()),
        (
            "securityContext",
            obj([
                ("seLinuxOptions", se_linux_options()),
                ("windowsOptions", obj([("gmsaCredentialSpecName", s())])),
                ("seccompProfile", seccomp_profile()),
                ("appArmorProfile", obj([("type", s())])),
                ("supplementalGroups", atomic()),
                ("sysctls", atomic()),
            ]),
        ),
        (
            "dnsConfig",
            obj([
                ("nameservers", atomic()),
                ("searches", atomic()),
                ("options", atomic()),
            ]),
        ),
        ("os", obj([("name", s())])),
        ("overhead", string_map()),
        ("resources", resource_requirements()),
    ])
}

fn pod_template_spec() -> TypeNode {
    obj([("metadata", metadata_type()), ("spec", pod_spec())])
}

fn pod_status() -> TypeNode {
    obj([
        ("conditions", conditions()),
        ("podIPs", lmap(obj([("ip", s())]), &["ip"], "ip")),
        ("hostIPs", lmap(obj([("ip", s())]), &["ip"], "ip")),
        ("initContainerStatuses", atomic()),
        ("containerStatuses", atomic()),
        ("ephemeralContainerStatuses", atomic()),
        (
            "resourceClaimStatuses",
            lmap(obj([("name", s())]), &["name"], "name"),
        ),
        ("resize", s()),
    ])
}

fn pvc_spec() -> TypeNode {
    obj([
        ("accessModes", atomic()),
        ("selector", label_selector()),
        (
            "resources",
            obj([("limits", string_map()), ("requests", string_map())]),
        ),
        ("dataSource", atomic_obj([("kind", s()), ("name", s())])),
        ("dataSourceRef", obj([("kind", s()), ("name", s())])),
    ])
}

fn workload_status() -> TypeNode {
    obj([("conditions", conditions())])
}

fn rolling_strategy() -> TypeNode {
    obj([
        ("type", s()),
        (
            "rollingUpdate",
            obj([("maxUnavailable", s()), ("maxSurge", s())]),
        ),
    ])
}

/// The type of a built-in kind (`group` is `""` for the core group). Kinds not
/// in the table get a type with `metadata` known and everything else `Any`.
pub fn builtin_type(group: &str, kind: &str) -> TypeNode {
    match (group, kind) {
        ("", "Pod") => kind_type([("spec", pod_spec()), ("status", pod_status())]),
        ("", "PodTemplate") => kind_type([("template", pod_template_spec())]),
        ("", "ReplicationController") => kind_type([
            (
                "spec",
                obj([
                    ("selector", atomic_string_map()),
                    ("template", pod_template_spec()),
                ]),
            ),
            ("status", workload_status()),
        ]),
        ("apps", "Deployment") => kind_type([
            (
                "spec",
                obj([
                    ("selector", label_selector()),
                    ("template", pod_template_spec()),
                    ("strategy", retain_keys(rolling_strategy())),
                ]),
            ),
            ("status", workload_status()),
        ]),
        ("apps", "ReplicaSet") => kind_type([
            (
                "spec",
                obj([
                    ("selector", label_selector()),
                    ("template", pod_template_spec()),
                ]),
            ),
            ("status", workload_status()),
        ]),
        ("apps", "StatefulSet") => kind_type([
            (
                "spec",
                obj([
                    ("selector", label_selector()),
                    ("template", pod_template_spec()),
                    ("volumeClaimTemplates", atomic()),
                    (
                        "updateStrategy",
                        obj([("type", s()), ("rollingUpdate", obj([("partition", s())]))]),
                    ),
                    (
                        "persistentVolumeClaimRetentionPolicy",
                        obj([("whenDeleted", s()), ("whenScaled", s())]),
                    ),
                    ("ordinals", obj([("start", s())])),
                ]),
            ),
            ("status", workload_status()),
        ]),
        ("apps", "DaemonSet") => kind_type([
            (
                "spec",
                obj([
                    ("selector", label_selector()),
                    ("template", pod_template_spec()),
                    ("updateStrategy", rolling_strategy()),
                ]),
            ),
            ("status", workload_status()),
        ]),
        ("apps", "ControllerRevision") => kind_type([]),
        ("batch", "Job") => kind_type([("spec", job_spec()), ("status", job_status())]),
        ("batch", "CronJob") => kind_type([
            (
                "spec",
                obj([(
                    "jobTemplate",
                    obj([("metadata", metadata_type()), ("spec", job_spec())]),
                )]),
            ),
            ("status", obj([("active", atomic())])),
        ]),
        ("", "Service") => kind_type([
            (
                "spec",
                obj([
                    (
                        "ports",
                        lmap(
                            obj([("port", s()), ("protocol", s()), ("targetPort", s())]),
                            &["port", "protocol"],
                            "port",
                        ),
                    ),
                    ("selector", atomic_string_map()),
                    ("clusterIPs", atomic()),
                    ("externalIPs", atomic()),
                    ("ipFamilies", atomic()),
                    ("loadBalancerSourceRanges", atomic()),
                    (
                        "sessionAffinityConfig",
                        obj([("clientIP", obj([("timeoutSeconds", s())]))]),
                    ),
                ]),
            ),
            (
                "status",
                obj([
                    ("conditions", conditions()),
                    ("loadBalancer", obj([("ingress", atomic())])),
                ]),
            ),
        ]),
        ("", "Endpoints") => kind_type([("subsets", atomic())]),
        ("", "Node") => kind_type([
            (
                "spec",
                obj([
                    ("podCIDRs", set_replace_merge()),
                    ("taints", atomic()),
                    ("configSource", obj([])),
                ]),
            ),
            (
                "status",
                obj([
                    ("conditions", conditions()),
                    ("addresses", lmap(obj([("type", s())]), &["type"], "type")),
                    ("capacity", string_map()),
                    ("allocatable", string_map()),
                    (
                        "daemonEndpoints",
                        obj([("kubeletEndpoint", obj([("Port", s())]))]),
                    ),
                    ("nodeInfo", obj([])),
                    ("images", atomic()),
                    ("volumesInUse", atomic()),
                    ("volumesAttached", atomic()),
                    ("runtimeHandlers", atomic()),
                    ("declaredFeatures", atomic()),
                    ("features", obj([])),
                    ("config", obj([])),
                ]),
            ),
        ]),
        ("", "Namespace") => kind_type([
            ("spec", obj([("finalizers", atomic())])),
            ("status", obj([("conditions", conditions())])),
        ]),
        ("", "PersistentVolumeClaim") => kind_type([
            ("spec", pvc_spec()),
            (
                "status",
                obj([
                    ("conditions", conditions()),
                    ("accessModes", atomic()),
                    ("capacity", string_map()),
                    ("allocatedResources", string_map()),
                    ("allocatedResourceStatuses", string_map()),
                ]),
            ),
        ]),
        ("", "PersistentVolume") => kind_type([
            (
                "spec",
                obj([
                    ("accessModes", atomic()),
                    ("capacity", string_map()),
                    ("claimRef", object_reference()),
                    ("mountOptions", atomic()),
                    ("nodeAffinity", obj([("required", node_selector())])),
                    ("csi", obj([("volumeAttributes", string_map())])),
                ]),
            ),
            ("status", obj([])),
        ]),
        ("", "ConfigMap") => kind_type([("data", string_map()), ("binaryData", string_map())]),
        ("", "Secret") => kind_type([("data", string_map()), ("stringData", string_map())]),
        ("", "ServiceAccount") => kind_type([
            (
                "secrets",
                lmap(object_reference_granular(), &["name"], "name"),
            ),
            ("imagePullSecrets", atomic()),
        ]),
        ("", "Event") => kind_type([
            ("involvedObject", object_reference()),
            ("related", object_reference()),
            ("source", obj([("component", s()), ("host", s())])),
            ("series", obj([("count", s()), ("lastObservedTime", s())])),
        ]),
        ("events.k8s.io", "Event") => kind_type([
            ("regarding", object_reference()),
            ("related", object_reference()),
            ("series", obj([("count", s()), ("lastObservedTime", s())])),
            ("deprecatedSource", obj([("component", s()), ("host", s())])),
        ]),
        ("", "LimitRange") | ("", "ResourceQuota") => {
            kind_type([("spec", obj([])), ("status", obj([]))])
        }
        ("rbac.authorization.k8s.io", "Role") => kind_type([("rules", atomic())]),
        ("rbac.authorization.k8s.io", "ClusterRole") => kind_type([
            ("rules", atomic()),
            ("aggregationRule", obj([("clusterRoleSelectors", atomic())])),
        ]),
        ("rbac.authorization.k8s.io", "RoleBinding")
        | ("rbac.authorization.k8s.io", "ClusterRoleBinding") => kind_type([
            ("subjects", atomic()),
            (
                "roleRef",
                atomic_obj([("apiGroup", s()), ("kind", s()), ("name", s())]),
            ),
        ]),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => kind_type([
            (
                "spec",
                obj([
                    (
                        "names",
                        obj([("shortNames", atomic()), ("categories", atomic())]),
                    ),
                    ("versions", atomic()),
                    ("conversion", obj([])),
                ]),
            ),
            (
                "status",
                obj([
                    ("conditions", conditions()),
                    (
                        "acceptedNames",
                        obj([("shortNames", atomic()), ("categories", atomic())]),
                    ),
                    ("storedVersions", atomic()),
                ]),
            ),
        ]),
        ("coordination.k8s.io", "Lease") => kind_type([("spec", obj([]))]),
        ("networking.k8s.io", "Ingress") => kind_type([
            (
                "spec",
                obj([
                    ("rules", atomic()),
                    ("tls", atomic()),
                    ("defaultBackend", obj([])),
                ]),
            ),
            (
                "status",
                obj([("loadBalancer", obj([("ingress", atomic())]))]),
            ),
        ]),
        ("networking.k8s.io", "NetworkPolicy") => kind_type([(
            "spec",
            obj([
                ("podSelector", label_selector()),
                ("ingress", atomic()),
                ("egress", atomic()),
                ("policyTypes", atomic()),
            ]),
        )]),
        ("policy", "PodDisruptionBudget") => kind_type([
            ("spec", obj([("selector", label_selector())])),
            (
                "status",
                obj([
                    ("conditions", conditions()),
                    ("disruptedPods", string_map()),
                ]),
            ),
        ]),
        ("autoscaling", "HorizontalPodAutoscaler") => kind_type([
            (
                "spec",
                obj([
                    ("scaleTargetRef", obj([("kind", s()), ("name", s())])),
                    ("metrics", atomic()),
                    ("behavior", obj([])),
                ]),
            ),
            (
                "status",
                obj([("conditions", conditions()), ("currentMetrics", atomic())]),
            ),
        ]),
        _ => kind_type([]),
    }
}

fn set_replace_merge() -> TypeNode {
    // `podCIDRs`: a set for apply, merged as a set by strategic merge.
    TypeNode::scalar_set()
}

fn object_reference_granular() -> TypeNode {
    // ServiceAccount secrets are ObjectReferences, which are atomic structs.
    object_reference()
}

fn job_spec() -> TypeNode {
    obj([
        ("selector", label_selector()),
        ("template", pod_template_spec()),
        ("podFailurePolicy", obj([("rules", atomic())])),
        ("successPolicy", obj([("rules", atomic())])),
    ])
}

fn job_status() -> TypeNode {
    obj([
        ("conditions", conditions()),
        (
            "uncountedTerminatedPods",
            obj([("succeeded", set_replace()), ("failed", set_replace())]),
        ),
    ])
}

/// The skeleton the Go zero value of a built-in kind serializes to (see the
/// module documentation); `{}` for kinds not in the table.
pub fn zero_value(group: &str, kind: &str) -> Value {
    let pod_template = || json!({"metadata": {}, "spec": {"containers": null}});
    match (group, kind) {
        ("", "Pod") => json!({"metadata": {}, "spec": {"containers": null}, "status": {}}),
        ("", "PodTemplate") => json!({"metadata": {}, "template": pod_template()}),
        ("", "ReplicationController") => json!({"metadata": {}, "spec": {}, "status": {}}),
        ("apps", "Deployment") => json!({
            "metadata": {},
            "spec": {"selector": null, "template": pod_template(), "strategy": {}},
            "status": {}
        }),
        ("apps", "ReplicaSet") => json!({
            "metadata": {},
            "spec": {"selector": null, "template": pod_template()},
            "status": {}
        }),
        ("apps", "StatefulSet") => json!({
            "metadata": {},
            "spec": {"selector": null, "template": pod_template(), "updateStrategy": {}},
            "status": {}
        }),
        ("apps", "DaemonSet") => json!({
            "metadata": {},
            "spec": {"selector": null, "template": pod_template(), "updateStrategy": {}},
            "status": {}
        }),
        ("batch", "Job") => {
            json!({"metadata": {}, "spec": {"template": pod_template()}, "status": {}})
        }
        ("batch", "CronJob") => json!({
            "metadata": {},
            "spec": {"jobTemplate": {"metadata": {}, "spec": {"template": pod_template()}}},
            "status": {}
        }),
        ("", "Service") => json!({"metadata": {}, "spec": {}, "status": {"loadBalancer": {}}}),
        ("", "Node") => json!({
            "metadata": {},
            "spec": {},
            "status": {"daemonEndpoints": {"kubeletEndpoint": {}}, "nodeInfo": {}}
        }),
        ("", "Namespace") | ("", "PersistentVolume") => {
            json!({"metadata": {}, "spec": {}, "status": {}})
        }
        ("", "PersistentVolumeClaim") => {
            json!({"metadata": {}, "spec": {"resources": {}}, "status": {}})
        }
        ("", "Event") => json!({"metadata": {}, "involvedObject": {}, "source": {}}),
        ("rbac.authorization.k8s.io", "Role") | ("rbac.authorization.k8s.io", "ClusterRole") => {
            json!({"metadata": {}, "rules": null})
        }
        ("rbac.authorization.k8s.io", "RoleBinding")
        | ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            json!({"metadata": {}, "roleRef": {}})
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => json!({
            "metadata": {},
            "spec": {"names": {}, "versions": null},
            "status": {"acceptedNames": {}, "storedVersions": null}
        }),
        ("coordination.k8s.io", "Lease") => json!({"metadata": {}, "spec": {}}),
        ("networking.k8s.io", "Ingress") => {
            json!({"metadata": {}, "spec": {}, "status": {"loadBalancer": {}}})
        }
        ("networking.k8s.io", "NetworkPolicy") => {
            json!({"metadata": {}, "spec": {"podSelector": {}}})
        }
        ("policy", "PodDisruptionBudget") => json!({"metadata": {}, "spec": {}, "status": {}}),
        ("autoscaling", "HorizontalPodAutoscaler") => {
            json!({"metadata": {}, "spec": {"scaleTargetRef": {}}, "status": {}})
        }
        ("", "ConfigMap") | ("", "Secret") | ("", "ServiceAccount") | ("", "Endpoints") => {
            json!({"metadata": {}})
        }
        _ if is_builtin_group(group) => json!({"metadata": {}}),
        _ => json!({}),
    }
}

/// Whether `group` is served by the API server itself (not by a CRD).
pub fn is_builtin_group(group: &str) -> bool {
    group.is_empty() || !group.contains('.') || group.ends_with(".k8s.io")
}

/// Splits an `apiVersion` into group and version.
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// The fields an endpoint resets, which server-side apply ignores for
/// ownership (the strategies' `GetResetFields`): for kinds with a status
/// subresource, the main resource resets `status` and `/status` resets `spec`.
/// (Some real status strategies also reset parts of `metadata`, e.g. the
/// labels of workloads; that is not modelled.)
pub fn reset_fields(
    group: &str,
    kind: &str,
    subresource: Option<&str>,
) -> crate::fieldset::FieldSet {
    use crate::fieldset::{FieldSet, Path};
    let has_status = matches!(
        (group, kind),
        ("", "Pod")
            | ("", "ReplicationController")
            | ("", "Service")
            | ("", "Node")
            | ("", "Namespace")
            | ("", "PersistentVolume")
            | ("", "PersistentVolumeClaim")
            | ("", "ResourceQuota")
            | ("apps", "Deployment")
            | ("apps", "ReplicaSet")
            | ("apps", "StatefulSet")
            | ("apps", "DaemonSet")
            | ("batch", "Job")
            | ("batch", "CronJob")
            | ("apiextensions.k8s.io", "CustomResourceDefinition")
            | ("networking.k8s.io", "Ingress")
            | ("policy", "PodDisruptionBudget")
            | ("autoscaling", "HorizontalPodAutoscaler")
    );
    match subresource {
        None if has_status => FieldSet::from_paths([Path::fields(&["status"])]),
        Some("status") => FieldSet::from_paths([Path::fields(&["spec"])]),
        _ => FieldSet::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::typeinfo::ListType;

    fn at<'a>(ty: &'a TypeNode, path: &[&str]) -> &'a TypeNode {
        let mut t = ty;
        for p in path {
            t = if *p == "[]" { t.items() } else { t.field(p) };
        }
        t
    }

    fn keys(ty: &TypeNode) -> Vec<String> {
        match ty.list_type() {
            ListType::Map { keys } => keys,
            other => panic!("not a list-map: {other:?}"),
        }
    }

    #[test]
    fn metadata() {
        let m = metadata_type();
        assert_eq!(m.field("finalizers").list_type(), ListType::Set);
        assert_eq!(
            m.field("finalizers").smp_strategy(),
            SmpStrategy::Merge { key: None }
        );
        assert_eq!(keys(m.field("ownerReferences")), vec!["uid"]);
        assert_eq!(
            m.field("ownerReferences").smp_strategy(),
            SmpStrategy::Merge {
                key: Some("uid".into())
            }
        );
        assert_eq!(m.field("managedFields").list_type(), ListType::Atomic);
        assert!(!m.field("labels").is_atomic_map());
        assert_eq!(m.field("labels").field("x"), &TypeNode::Scalar);
    }

    #[test]
    fn pod_template_holders() {
        let paths: [(&str, &str, &[&str]); 7] = [
            ("", "Pod", &["spec"]),
            ("apps", "Deployment", &["spec", "template", "spec"]),
            ("apps", "ReplicaSet", &["spec", "template", "spec"]),
            ("apps", "StatefulSet", &["spec", "template", "spec"]),
            ("apps", "DaemonSet", &["spec", "template", "spec"]),
            ("batch", "Job", &["spec", "template", "spec"]),
            (
                "batch",
                "CronJob",
                &["spec", "jobTemplate", "spec", "template", "spec"],
            ),
        ];
        for (group, kind, spec_path) in paths {
            let ty = builtin_type(group, kind);
            let spec = at(&ty, spec_path);
            for list in ["containers", "initContainers", "ephemeralContainers"] {
                assert_eq!(keys(spec.field(list)), vec!["name"], "{kind} {list}");
            }
            let c = spec.field("containers").items();
            assert_eq!(keys(c.field("ports")), vec!["containerPort", "protocol"]);
            assert_eq!(
                c.field("ports").smp_strategy(),
                SmpStrategy::Merge {
                    key: Some("containerPort".into())
                }
            );
            assert_eq!(keys(c.field("env")), vec!["name"]);
            assert_eq!(c.field("envFrom").list_type(), ListType::Atomic);
            assert_eq!(keys(c.field("volumeMounts")), vec!["mountPath"]);
            assert_eq!(keys(c.field("volumeDevices")), vec!["devicePath"]);
            assert_eq!(keys(spec.field("volumes")), vec!["name"]);
            assert!(spec.field("volumes").items().retains_keys());
            assert_eq!(keys(spec.field("imagePullSecrets")), vec!["name"]);
            assert_eq!(spec.field("tolerations").list_type(), ListType::Atomic);
            assert_eq!(keys(spec.field("hostAliases")), vec!["ip"]);
            assert_eq!(
                keys(spec.field("topologySpreadConstraints")),
                vec!["topologyKey", "whenUnsatisfiable"]
            );
            assert_eq!(keys(spec.field("resourceClaims")), vec!["name"]);
            assert_eq!(spec.field("readinessGates").list_type(), ListType::Atomic);
            assert!(spec.field("nodeSelector").is_atomic_map());
        }
        let pod = builtin_type("", "Pod");
        assert_eq!(keys(at(&pod, &["status", "conditions"])), vec!["type"]);
    }

    #[test]
    fn other_kinds() {
        let svc = builtin_type("", "Service");
        assert_eq!(keys(at(&svc, &["spec", "ports"])), vec!["port", "protocol"]);
        assert_eq!(
            at(&svc, &["spec", "ports"]).smp_strategy(),
            SmpStrategy::Merge {
                key: Some("port".into())
            }
        );
        assert!(at(&svc, &["spec", "selector"]).is_atomic_map());
        for (g, k) in [
            ("apps", "Deployment"),
            ("apps", "StatefulSet"),
            ("apps", "DaemonSet"),
            ("batch", "Job"),
            ("", "Node"),
            ("", "Namespace"),
            ("", "PersistentVolumeClaim"),
        ] {
            let ty = builtin_type(g, k);
            assert_eq!(
                keys(at(&ty, &["status", "conditions"])),
                vec!["type"],
                "{k}"
            );
        }
        let d = builtin_type("apps", "Deployment");
        assert!(at(&d, &["spec", "selector"]).is_atomic_map());
        let cm = builtin_type("", "ConfigMap");
        assert_eq!(cm.field("data").field("k"), &TypeNode::Scalar);
        assert!(!cm.field("data").is_atomic_map());
        let role = builtin_type("rbac.authorization.k8s.io", "Role");
        assert_eq!(role.field("rules").list_type(), ListType::Atomic);
        let rb = builtin_type("rbac.authorization.k8s.io", "RoleBinding");
        assert_eq!(rb.field("subjects").list_type(), ListType::Atomic);
        let crd = builtin_type("apiextensions.k8s.io", "CustomResourceDefinition");
        // The real OpenAPI declares `versions` atomic.
        assert_eq!(
            at(&crd, &["spec", "versions"]).list_type(),
            ListType::Atomic
        );
        let unknown = builtin_type("example.com", "Widget");
        assert_eq!(
            keys(at(&unknown, &["metadata", "ownerReferences"])),
            vec!["uid"]
        );
        assert_eq!(unknown.field("spec"), &TypeNode::Any);
        let ev = builtin_type("", "Event");
        assert!(ev.field("involvedObject").is_atomic_map());
    }

    #[test]
    fn with_object_meta_adds_metadata() {
        let t = with_object_meta(TypeNode::object([("spec", TypeNode::Any)]));
        assert_eq!(
            t.field("metadata").field("finalizers").list_type(),
            ListType::Set
        );
        assert_eq!(t.field("spec"), &TypeNode::Any);
    }

    #[test]
    fn zero_values_and_reset_fields() {
        assert_eq!(
            zero_value("apps", "Deployment")["spec"]["template"]["spec"]["containers"],
            Value::Null
        );
        assert_eq!(zero_value("example.com", "Widget"), json!({}));
        assert_eq!(split_api_version("apps/v1"), ("apps", "v1"));
        assert_eq!(split_api_version("v1"), ("", "v1"));
        assert_eq!(reset_fields("apps", "Deployment", None).len(), 1);
        assert!(reset_fields("", "ConfigMap", None).is_empty());
    }
}
