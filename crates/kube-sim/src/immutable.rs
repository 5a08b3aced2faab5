//! Update rules of built-in kinds: the fields a real kube-apiserver refuses to
//! change once an object exists, with the paths, error types and texts of
//! `pkg/apis/*/validation` (`ValidateXxxUpdate`) and of the registry strategies
//! (selector immutability of the apps/v1 workloads lives in their strategies),
//! plus the server-side normalisations of Services and PVCs those checks
//! depend on.
//!
//! [`validate_update`] runs on the object an update, a patch or an apply
//! computed (after defaulting), against the stored object, for the main
//! resource only: where the real `ValidateUpdate` of the strategy runs. Writes
//! to the status subresource go through the status strategies, which check
//! none of this. Creates are never checked.
//!
//! Values are rendered as the current `field.Error.ErrorBody` renders them:
//! `json.Marshal` of the typed value. For the `metav1.LabelSelector` of
//! selectors that is exact (struct field order: `matchLabels`,
//! `matchExpressions`). The Job pod template, `podFailurePolicy` and
//! `successPolicy` are internal Go types on the real server, which it marshals
//! with Go field names (`{"labels":..,"Spec":{"Volumes":..}}`); here they are
//! rendered as their v1 JSON. The diff that follows the PVC and PV messages is
//! `cmp.Diff` output on the real server, which go-cmp deliberately keeps
//! unstable; here it is an approximation in the same shape.
//!
//! Comparisons follow `apiequality.Semantic.DeepEqual`: a missing field, `null`,
//! an empty list and an empty map are alike, quantities compare by value
//! (`1Gi` equals `1024Mi`). Explicit zero scalars (`""`, `0`, `false`) count as
//! values, as pointer fields do in Go.

use std::cmp::Ordering;

use serde_json::{Map, Value, json};

use crate::validation::FieldError;

/// `apimachinery/pkg/api/validation.FieldImmutableErrorMsg`.
pub const FIELD_IMMUTABLE: &str = "field is immutable";
/// ConfigMaps and Secrets marked `immutable: true`.
pub const IMMUTABLE_WHEN_SET: &str = "field is immutable when `immutable` is set";
/// `ValidateStatefulSetUpdate` (1.34 and later, where `revisionHistoryLimit`
/// became mutable).
pub const STATEFULSET_SPEC_FORBIDDEN: &str = "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden";
/// `ValidatePersistentVolumeClaimUpdate`, before the spec diff.
pub const PVC_SPEC_FORBIDDEN: &str = "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims";
/// `ValidatePersistentVolumeUpdate`, before the source diff.
pub const PV_SOURCE_FORBIDDEN: &str = "spec.persistentvolumesource is immutable after creation";

const BETA_STORAGE_CLASS_ANNOTATION: &str = "volume.beta.kubernetes.io/storage-class";

/// The update errors of a built-in kind, in the order the real validation
/// appends them (ObjectMeta errors, which the caller has, come first).
pub fn validate_update(group: &str, kind: &str, new: &Value, old: &Value) -> Vec<FieldError> {
    match (group, kind) {
        ("", "ConfigMap") => config_map(new, old),
        ("", "Secret") => secret(new, old),
        ("", "Service") => service(new, old),
        ("", "PersistentVolumeClaim") => persistent_volume_claim(new, old),
        ("", "PersistentVolume") => persistent_volume(new, old),
        ("apps", "Deployment" | "ReplicaSet" | "DaemonSet") => selector_immutable(new, old),
        ("apps", "StatefulSet") => stateful_set(new, old),
        ("batch", "Job") => job(new, old),
        _ => Vec::new(),
    }
}

/// Server-side normalisation of a new object (the `PrepareForCreate` and
/// REST `BeginCreate` hooks that later update validation relies on). Runs
/// after managedFields are recorded, as on the real server.
pub fn prepare_create(group: &str, kind: &str, obj: &mut Value) {
    match (group, kind) {
        // normalizeClusterIPs: a client that set only the singular field.
        ("", "Service") => {
            let ip = str_at(obj, "/spec/clusterIP").to_string();
            if !ip.is_empty()
                && cluster_ips(obj).is_empty()
                && let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut)
            {
                spec.insert("clusterIPs".into(), json!([ip]));
            }
        }
        // pvcutil.NormalizeDataSources (creates only).
        ("", "PersistentVolumeClaim") => {
            let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
                return;
            };
            let source = spec.get("dataSource").filter(|v| v.is_object()).cloned();
            let source_ref = spec.get("dataSourceRef").filter(|v| v.is_object()).cloned();
            match (source, source_ref) {
                (Some(s), None) => {
                    let mut r = Map::new();
                    for k in ["apiGroup", "kind", "name"] {
                        if let Some(v) = s.get(k).filter(|v| !v.is_null()) {
                            r.insert(k.into(), v.clone());
                        }
                    }
                    spec.insert("dataSourceRef".into(), Value::Object(r));
                }
                (None, Some(r)) if str_at(&r, "/namespace").is_empty() => {
                    let mut s = Map::new();
                    for k in ["apiGroup", "kind", "name"] {
                        if let Some(v) = r.get(k).filter(|v| !v.is_null()) {
                            s.insert(k.into(), v.clone());
                        }
                    }
                    spec.insert("dataSource".into(), Value::Object(s));
                }
                _ => {}
            }
        }
        _ => {}
    }
}

/// Server-side normalisation of an updated object of the main resource,
/// before it is compared with the stored one: a Service keeps its cluster IPs
/// when the client left them out (`patchAllocatedValues`) and its singular and
/// plural cluster IP fields are kept in sync (`normalizeClusterIPs`).
pub fn prepare_update(group: &str, kind: &str, new: &mut Value, old: &Value) {
    if (group, kind) != ("", "Service") {
        return;
    }
    if !new.get("spec").is_some_and(Value::is_object) {
        return;
    }
    let old_ip = str_at(old, "/spec/clusterIP").to_string();
    let old_ips = cluster_ips(old);
    // patchAllocatedValues
    if needs_cluster_ip(old) && needs_cluster_ip(new) {
        let spec = new["spec"].as_object_mut().expect("spec is an object");
        if spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
            && !old_ip.is_empty()
        {
            spec.insert("clusterIP".into(), json!(old_ip));
        }
        if cluster_ips(new).is_empty() && !old_ips.is_empty() {
            new["spec"]["clusterIPs"] = json!(old_ips);
        }
    }
    // normalizeClusterIPs (update)
    let new_ip = str_at(new, "/spec/clusterIP").to_string();
    if !old_ips.is_empty() && cluster_ips(new).is_empty() && old_ip == new_ip {
        new["spec"]["clusterIPs"] = json!(old_ips);
    }
    if old_ip != new_ip {
        let same = cluster_ips(new) == old_ips;
        if !old_ip.is_empty()
            && new_ip.is_empty()
            && same
            && let Some(spec) = new["spec"].as_object_mut()
        {
            spec.remove("clusterIPs");
        }
        if !new_ip.is_empty() && same {
            new["spec"]["clusterIPs"] = json!([new_ip]);
        }
    }
}

// ---------------------------------------------------------------------------
// Kinds
// ---------------------------------------------------------------------------

fn immutable_flag_set(obj: &Value) -> bool {
    obj.get("immutable") == Some(&Value::Bool(true))
}

/// ValidateConfigMapUpdate.
fn config_map(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if immutable_flag_set(old) {
        if !immutable_flag_set(new) {
            errs.push(FieldError::forbidden("immutable", IMMUTABLE_WHEN_SET));
        }
        for field in ["data", "binaryData"] {
            if !semantic_eq(new.get(field), old.get(field)) {
                errs.push(FieldError::forbidden(field, IMMUTABLE_WHEN_SET));
            }
        }
    }
    errs
}

/// ValidateSecretUpdate (stringData was merged into data by defaulting).
fn secret(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let old_type = old.get("type").and_then(Value::as_str).unwrap_or("");
    let new_type = match new.get("type").and_then(Value::as_str).unwrap_or("") {
        "" => old_type,
        t => t,
    };
    if new_type != old_type {
        errs.push(FieldError::invalid(
            "type",
            Value::String(new_type.into()),
            FIELD_IMMUTABLE,
        ));
    }
    if immutable_flag_set(old) {
        if !immutable_flag_set(new) {
            errs.push(FieldError::forbidden("immutable", IMMUTABLE_WHEN_SET));
        }
        if !semantic_eq(new.get("data"), old.get("data")) {
            errs.push(FieldError::forbidden("data", IMMUTABLE_WHEN_SET));
        }
    }
    errs
}

fn service_type(svc: &Value) -> &str {
    match str_at(svc, "/spec/type") {
        "" => "ClusterIP",
        t => t,
    }
}

fn needs_cluster_ip(svc: &Value) -> bool {
    service_type(svc) != "ExternalName"
}

fn cluster_ips(svc: &Value) -> Vec<String> {
    svc.pointer("/spec/clusterIPs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn is_headless(svc: &Value) -> bool {
    let ips = cluster_ips(svc);
    ips.len() == 1 && ips[0] == "None"
}

/// validateUpgradeDowngradeClusterIPs (part of ValidateServiceUpdate): the
/// primary cluster IP may not change once set; a type change to or from
/// ExternalName, and headless to headless, are exempt.
fn service(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if !needs_cluster_ip(new) || !needs_cluster_ip(old) {
        return errs;
    }
    if is_headless(old) && is_headless(new) {
        return errs;
    }
    let old_ips = cluster_ips(old);
    let new_ips = cluster_ips(new);
    // The bad value is the whole new `[]string` (null when unset).
    let rendered = gofmt::marshal(new.pointer("/spec/clusterIPs").unwrap_or(&Value::Null));
    let invalid = |i: usize, detail: &str| {
        FieldError::invalid_rendered(format!("spec.clusterIPs[{i}]"), rendered.clone(), detail)
    };
    match old_ips.len().cmp(&new_ips.len()) {
        Ordering::Equal => {
            for (i, ip) in old_ips.iter().enumerate() {
                if *ip != new_ips[i] {
                    errs.push(invalid(i, "may not change once set"));
                }
            }
        }
        Ordering::Greater => {
            if new_ips.is_empty() {
                errs.push(invalid(0, "primary clusterIP can not be unset"));
            }
            if !old_ips.is_empty() && !new_ips.is_empty() && new_ips[0] != old_ips[0] {
                errs.push(invalid(0, "may not change once set"));
            }
            if new_ips.len() == 1 && str_at(new, "/spec/ipFamilyPolicy") != "SingleStack" {
                errs.push(invalid(
                    0,
                    "`ipFamilyPolicy` must be set to 'SingleStack' when releasing the secondary clusterIP",
                ));
            }
        }
        Ordering::Less => {
            if !old_ips.is_empty() && new_ips[0] != old_ips[0] {
                errs.push(invalid(0, "may not change once set"));
            }
        }
    }
    errs
}

/// ValidatePersistentVolumeClaimUpdate.
fn persistent_volume_claim(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut old_spec = old.get("spec").cloned().unwrap_or_else(|| json!({}));
    let mut new_spec = new.get("spec").cloned().unwrap_or_else(|| json!({}));
    if !old_spec.is_object() {
        old_spec = json!({});
    }
    if !new_spec.is_object() {
        new_spec = json!({});
    }
    // The volume binder sets volumeName once.
    if str_at(old, "/spec/volumeName").is_empty() {
        set_or_remove(&mut old_spec, "volumeName", new_spec.get("volumeName"));
    }
    let annotation = |o: &Value| -> Option<String> {
        o.pointer("/metadata/annotations")
            .and_then(|a| a.get(BETA_STORAGE_CLASS_ANNOTATION))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let (old_ann, new_ann) = (annotation(old), annotation(new));
    let class = |o: &Value| -> Option<String> {
        o.pointer("/spec/storageClassName")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let (old_class, new_class) = (class(old), class(new));
    let upgrade_from_annotation = old_ann.is_some()
        && old_class.is_none()
        && new_class.is_some()
        && new_class == old_ann
        && (new_ann.is_none() || new_ann == old_ann);
    if upgrade_from_annotation {
        set_or_remove(&mut new_spec, "storageClassName", None);
    } else {
        let (n, o) = (
            new_ann.clone().unwrap_or_default(),
            old_ann.clone().unwrap_or_default(),
        );
        if n != o {
            errs.push(FieldError::invalid(
                format!("metadata.annotations.{BETA_STORAGE_CLASS_ANNOTATION}"),
                Value::String(n),
                FIELD_IMMUTABLE,
            ));
        }
        // Setting a class on a claim that had none is allowed.
        let from_nil = new_class.is_some()
            && old_class.is_none()
            && (old_ann.is_none() || new_class == old_ann);
        if from_nil {
            set_or_remove(&mut new_spec, "storageClassName", None);
        }
    }
    let old_storage = old.pointer("/spec/resources/requests/storage").cloned();
    // The new object carries the stored status (the strategy resets it).
    if str_at(new, "/status/phase") == "Bound"
        && let Some(requests) = new_spec
            .pointer_mut("/resources/requests")
            .and_then(Value::as_object_mut)
    {
        // The Go code assigns the old value, a zero Quantity when there was none.
        requests.insert(
            "storage".into(),
            old_storage.clone().unwrap_or_else(|| json!("0")),
        );
    }
    set_or_remove(
        &mut new_spec,
        "volumeAttributesClassName",
        old_spec.get("volumeAttributesClassName"),
    );
    if !semantic_eq(Some(&new_spec), Some(&old_spec)) {
        let diff = struct_diff(
            "core.PersistentVolumeClaimSpec",
            &PVC_SPEC_FIELDS,
            &old_spec,
            &new_spec,
        );
        errs.push(FieldError::forbidden(
            "spec",
            format!("{PVC_SPEC_FORBIDDEN}\n{diff}"),
        ));
    }
    // Shrinking: RecoverVolumeExpansionFailure (on by default since 1.32)
    // allows going down as long as the request stays above the capacity.
    let quantity_at = |o: &Value, p: &str| {
        o.pointer(p)
            .and_then(Value::as_str)
            .and_then(parse_quantity)
            .unwrap_or(0)
    };
    let old_size = quantity_at(old, "/spec/resources/requests/storage");
    let new_size = quantity_at(new, "/spec/resources/requests/storage");
    let status_size = quantity_at(old, "/status/capacity/storage");
    if new_size < old_size && new_size <= status_size {
        errs.push(FieldError::forbidden(
            "spec.resources.requests.storage",
            "field can not be less than status.capacity",
        ));
    }
    errs.extend(volume_mode_immutable(new, old));
    let old_vac = old.pointer("/spec/volumeAttributesClassName");
    let new_vac = new.pointer("/spec/volumeAttributesClassName");
    if let Some(Value::String(_)) = old_vac
        && old_vac != new_vac
    {
        match new_vac {
            None | Some(Value::Null) => errs.push(FieldError::forbidden(
                "spec.volumeAttributesClassName",
                "update from non-nil value to nil is forbidden",
            )),
            Some(Value::String(s)) if s.is_empty() => errs.push(FieldError::forbidden(
                "spec.volumeAttributesClassName",
                "update from non-nil value to an empty string is forbidden",
            )),
            _ => {}
        }
    }
    errs
}

/// `ValidateImmutableField(spec.VolumeMode, ..., field.NewPath("volumeMode"))`
/// (the real path has no `spec.`).
fn volume_mode_immutable(new: &Value, old: &Value) -> Vec<FieldError> {
    let (n, o) = (
        new.pointer("/spec/volumeMode"),
        old.pointer("/spec/volumeMode"),
    );
    if semantic_eq(n, o) {
        return Vec::new();
    }
    vec![FieldError::invalid_rendered(
        "volumeMode",
        gofmt::marshal(n.unwrap_or(&Value::Null)),
        FIELD_IMMUTABLE,
    )]
}

/// The JSON fields of a `PersistentVolumeSource` (inlined in a PV's spec)
/// with their Go names, in struct order.
const PV_SOURCE_FIELDS: [(&str, &str); 22] = [
    ("gcePersistentDisk", "GCEPersistentDisk"),
    ("awsElasticBlockStore", "AWSElasticBlockStore"),
    ("hostPath", "HostPath"),
    ("glusterfs", "Glusterfs"),
    ("nfs", "NFS"),
    ("rbd", "RBD"),
    ("quobyte", "Quobyte"),
    ("iscsi", "ISCSI"),
    ("flexVolume", "FlexVolume"),
    ("cinder", "Cinder"),
    ("cephfs", "CephFS"),
    ("fc", "FC"),
    ("flocker", "Flocker"),
    ("azureFile", "AzureFile"),
    ("vsphereVolume", "VsphereVolume"),
    ("azureDisk", "AzureDisk"),
    ("photonPersistentDisk", "PhotonPersistentDisk"),
    ("portworxVolume", "PortworxVolume"),
    ("scaleIO", "ScaleIO"),
    ("local", "Local"),
    ("storageos", "StorageOS"),
    ("csi", "CSI"),
];

const PVC_SPEC_FIELDS: [(&str, &str); 9] = [
    ("accessModes", "AccessModes"),
    ("selector", "Selector"),
    ("resources", "Resources"),
    ("volumeName", "VolumeName"),
    ("storageClassName", "StorageClassName"),
    ("volumeMode", "VolumeMode"),
    ("dataSource", "DataSource"),
    ("dataSourceRef", "DataSourceRef"),
    ("volumeAttributesClassName", "VolumeAttributesClassName"),
];

fn pv_source(pv: &Value) -> Value {
    let mut out = Map::new();
    for (k, _) in PV_SOURCE_FIELDS {
        if let Some(v) = pv.pointer(&format!("/spec/{k}")) {
            out.insert(k.into(), v.clone());
        }
    }
    Value::Object(out)
}

/// ValidatePersistentVolumeUpdate (node affinity rules are not modelled).
fn persistent_volume(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let old_source = pv_source(old);
    let mut new_source = pv_source(new);
    // A CSI volume may gain a controllerExpandSecretRef.
    let old_has_ref = old
        .pointer("/spec/csi/controllerExpandSecretRef")
        .is_some_and(|v| !v.is_null());
    if old.pointer("/spec/csi").is_some_and(Value::is_object)
        && !old_has_ref
        && let Some(csi) = new_source.get_mut("csi").and_then(Value::as_object_mut)
    {
        csi.remove("controllerExpandSecretRef");
    }
    if !semantic_eq(Some(&new_source), Some(&old_source)) {
        let diff = struct_diff(
            "core.PersistentVolumeSource",
            &PV_SOURCE_FIELDS,
            &old_source,
            &new_source,
        );
        errs.push(FieldError::forbidden(
            "spec.persistentvolumesource",
            format!("{PV_SOURCE_FORBIDDEN}\n{diff}"),
        ));
    }
    errs.extend(volume_mode_immutable(new, old));
    if old
        .pointer("/spec/volumeAttributesClassName")
        .is_some_and(Value::is_string)
        && new
            .pointer("/spec/volumeAttributesClassName")
            .is_none_or(Value::is_null)
    {
        errs.push(FieldError::forbidden(
            "spec.volumeAttributesClassName",
            "update from non-nil value to nil is forbidden",
        ));
    }
    errs
}

/// Deployment, ReplicaSet and DaemonSet strategies (apps/v1): `spec.selector`
/// may not change.
fn selector_immutable(new: &Value, old: &Value) -> Vec<FieldError> {
    immutable_selector_at("spec.selector", new, old)
}

fn immutable_selector_at(path: &str, new: &Value, old: &Value) -> Vec<FieldError> {
    let (n, o) = (new.pointer("/spec/selector"), old.pointer("/spec/selector"));
    if semantic_eq(n, o) {
        return Vec::new();
    }
    vec![FieldError::invalid_rendered(
        path,
        render_label_selector(n),
        FIELD_IMMUTABLE,
    )]
}

/// ValidateStatefulSetUpdate: only some spec fields may change.
fn stateful_set(new: &Value, old: &Value) -> Vec<FieldError> {
    let old_spec = old.get("spec").cloned().unwrap_or_else(|| json!({}));
    let mut new_spec = new.get("spec").cloned().unwrap_or_else(|| json!({}));
    if !new_spec.is_object() {
        new_spec = json!({});
    }
    for field in [
        "replicas",
        "template",
        "updateStrategy",
        "minReadySeconds",
        "ordinals",
        "revisionHistoryLimit",
        "persistentVolumeClaimRetentionPolicy",
    ] {
        set_or_remove(&mut new_spec, field, old_spec.get(field));
    }
    if semantic_eq(Some(&new_spec), Some(&old_spec)) {
        Vec::new()
    } else {
        vec![FieldError::forbidden("spec", STATEFULSET_SPEC_FORBIDDEN)]
    }
}

/// ValidateJobSpecUpdate (with the options of the Job strategy: elastic
/// Indexed Jobs, and scheduling directives mutable while a Job is suspended
/// and has never started).
fn job(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let field_of = |o: &Value, f: &str| o.pointer(&format!("/spec/{f}")).cloned();
    let render = |v: &Option<Value>| gofmt::marshal(v.as_ref().unwrap_or(&Value::Null));

    // completions
    let (new_c, old_c) = (field_of(new, "completions"), field_of(old, "completions"));
    if !semantic_eq(new_c.as_ref(), old_c.as_ref()) {
        let indexed = str_at(new, "/spec/completionMode") == "Indexed";
        if !indexed {
            errs.push(FieldError::invalid_rendered(
                "spec.completions",
                render(&new_c),
                FIELD_IMMUTABLE,
            ));
        } else if new_c.as_ref().is_some_and(|c| !c.is_null())
            && new_c != field_of(new, "parallelism")
        {
            errs.push(FieldError::invalid_rendered(
                "spec.completions",
                render(&new_c),
                "can only be modified in tandem with spec.parallelism",
            ));
        }
    }
    errs.extend(immutable_selector_at("spec.selector", new, old));

    // template
    let new_t = new
        .pointer("/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut old_t = old
        .pointer("/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let suspended = old.pointer("/spec/suspend") == Some(&Value::Bool(true));
    let not_started = old.pointer("/status/startTime").is_none_or(Value::is_null);
    if suspended && not_started && old_t.is_object() {
        allow_scheduling_directives(&mut old_t, &new_t);
    }
    if !semantic_eq(Some(&new_t), Some(&old_t)) {
        errs.push(FieldError::invalid_rendered(
            "spec.template",
            gofmt::marshal(&new_t),
            FIELD_IMMUTABLE,
        ));
    }
    for f in [
        "completionMode",
        "podFailurePolicy",
        "backoffLimitPerIndex",
        "managedBy",
        "successPolicy",
    ] {
        let (n, o) = (field_of(new, f), field_of(old, f));
        if !semantic_eq(n.as_ref(), o.as_ref()) {
            errs.push(FieldError::invalid_rendered(
                format!("spec.{f}"),
                render(&n),
                FIELD_IMMUTABLE,
            ));
        }
    }
    errs
}

/// validatePodTemplateUpdate's exemption: the old template takes the new
/// node affinity, node selector, tolerations, labels, annotations and
/// scheduling gates before the comparison.
fn allow_scheduling_directives(old_t: &mut Value, new_t: &Value) {
    let new_affinity = new_t.pointer("/spec/affinity").filter(|v| !v.is_null());
    let new_node_affinity = new_t
        .pointer("/spec/affinity/nodeAffinity")
        .filter(|v| !v.is_null())
        .cloned();
    if !old_t.get("spec").is_some_and(Value::is_object) {
        old_t["spec"] = json!({});
    }
    let old_affinity_set = old_t
        .pointer("/spec/affinity")
        .is_some_and(|v| !v.is_null());
    match (new_affinity.is_some(), old_affinity_set) {
        (false, true) => {
            if let Some(a) = old_t
                .pointer_mut("/spec/affinity")
                .and_then(Value::as_object_mut)
            {
                a.remove("nodeAffinity");
            }
            if old_t
                .pointer("/spec/affinity")
                .is_some_and(|a| a.as_object().is_some_and(|m| m.is_empty()))
                && let Some(spec) = old_t["spec"].as_object_mut()
            {
                spec.remove("affinity");
            }
        }
        (true, false) => {
            let mut a = Map::new();
            if let Some(na) = new_node_affinity {
                a.insert("nodeAffinity".into(), na);
            }
            old_t["spec"]["affinity"] = Value::Object(a);
        }
        (true, true) => {
            if let Some(a) = old_t
                .pointer_mut("/spec/affinity")
                .and_then(Value::as_object_mut)
            {
                match new_node_affinity {
                    Some(na) => {
                        a.insert("nodeAffinity".into(), na);
                    }
                    None => {
                        a.remove("nodeAffinity");
                    }
                }
            }
        }
        (false, false) => {}
    }
    for f in ["nodeSelector", "tolerations", "schedulingGates"] {
        let v = new_t.pointer(&format!("/spec/{f}"));
        set_or_remove(&mut old_t["spec"], f, v);
    }
    if !old_t.get("metadata").is_some_and(Value::is_object) {
        old_t["metadata"] = json!({});
    }
    for f in ["labels", "annotations"] {
        let v = new_t.pointer(&format!("/metadata/{f}"));
        set_or_remove(&mut old_t["metadata"], f, v);
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn set_or_remove(obj: &mut Value, key: &str, value: Option<&Value>) {
    let Some(m) = obj.as_object_mut() else { return };
    match value {
        Some(v) => {
            m.insert(key.into(), v.clone());
        }
        None => {
            m.remove(key);
        }
    }
}

/// `json.Marshal` of a `*metav1.LabelSelector`: struct field order
/// (`matchLabels`, then `matchExpressions` of `key`, `operator`, `values`),
/// empty fields omitted, `null` for no selector.
pub fn render_label_selector(selector: Option<&Value>) -> String {
    let Some(sel) = selector.filter(|v| !v.is_null()) else {
        return "null".into();
    };
    let mut parts = Vec::new();
    if let Some(ml) = sel
        .get("matchLabels")
        .filter(|v| v.as_object().is_some_and(|m| !m.is_empty()))
    {
        parts.push(format!("\"matchLabels\":{}", gofmt::marshal(ml)));
    }
    if let Some(me) = sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
    {
        let items: Vec<String> = me
            .iter()
            .map(|r| {
                let key = r.get("key").cloned().unwrap_or(json!(""));
                let op = r.get("operator").cloned().unwrap_or(json!(""));
                let mut s = format!(
                    "{{\"key\":{},\"operator\":{}",
                    gofmt::marshal(&key),
                    gofmt::marshal(&op)
                );
                if let Some(vals) = r
                    .get("values")
                    .filter(|v| v.as_array().is_some_and(|a| !a.is_empty()))
                {
                    s.push_str(&format!(",\"values\":{}", gofmt::marshal(vals)));
                }
                s.push('}');
                s
            })
            .collect();
        parts.push(format!("\"matchExpressions\":[{}]", items.join(",")));
    }
    format!("{{{}}}", parts.join(","))
}

/// `apiequality.Semantic.DeepEqual` on JSON: absent, `null`, empty lists and
/// empty maps are alike; quantities in `requests`, `limits` and `capacity`
/// compare by value.
pub fn semantic_eq(a: Option<&Value>, b: Option<&Value>) -> bool {
    normalize(a, None) == normalize(b, None)
}

/// The canonical form [`semantic_eq`] compares; `None` for an empty value.
fn normalize(v: Option<&Value>, parent: Option<&str>) -> Option<Value> {
    match v? {
        Value::Null => None,
        Value::Array(items) if items.is_empty() => None,
        Value::Array(items) => Some(Value::Array(
            items
                .iter()
                .map(|item| {
                    normalize(Some(item), None).unwrap_or_else(|| match item {
                        Value::Object(_) => json!({}),
                        Value::Array(_) => json!([]),
                        _ => Value::Null,
                    })
                })
                .collect(),
        )),
        Value::Object(m) => {
            let quantities = matches!(parent, Some("requests" | "limits" | "capacity"));
            let mut out = Map::new();
            for (k, child) in m {
                let normalized = match child {
                    Value::String(s) if quantities => Some(match parse_quantity(s) {
                        Some(n) => json!(format!("quantity:{n}")),
                        None => child.clone(),
                    }),
                    _ => normalize(Some(child), Some(k)),
                };
                if let Some(n) = normalized {
                    out.insert(k.clone(), n);
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        other => Some(other.clone()),
    }
}

/// A `resource.Quantity` in nano units (rounded up, as the real type rounds
/// values below its nano scale); `None` when it does not parse or overflows.
pub fn parse_quantity(s: &str) -> Option<i128> {
    let s = s.trim();
    let (negative, rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let num_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(num_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return None;
    }
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    let digits = format!("{int_part}{frac_part}");
    let mantissa: i128 = digits.parse().ok()?;
    let mut exp10: i32 = -(frac_part.len() as i32);
    let mut exp2: u32 = 0;
    match suffix {
        "" => {}
        "Ki" => exp2 = 10,
        "Mi" => exp2 = 20,
        "Gi" => exp2 = 30,
        "Ti" => exp2 = 40,
        "Pi" => exp2 = 50,
        "Ei" => exp2 = 60,
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        s if s.starts_with(['e', 'E']) => exp10 += s[1..].parse::<i32>().ok()?,
        _ => return None,
    }
    let mut value = mantissa.checked_mul(1i128.checked_shl(exp2)?)?;
    let scale = exp10 + 9;
    if scale >= 0 {
        value = value.checked_mul(10i128.checked_pow(scale as u32)?)?;
    } else {
        let div = 10i128.checked_pow((-scale) as u32)?;
        value = (value + div - 1) / div;
    }
    Some(if negative { -value } else { value })
}

/// An approximation of `cmp.Diff(old, new)` of a Go struct whose fields are
/// `fields` (JSON name, Go name): changed fields as `-`/`+` lines, runs of
/// identical fields elided.
fn struct_diff(type_name: &str, fields: &[(&str, &str)], old: &Value, new: &Value) -> String {
    let render = |v: Option<&Value>| match normalize(v, None) {
        None => "nil".to_string(),
        Some(_) => gofmt::marshal(v.unwrap_or(&Value::Null)),
    };
    let mut lines = vec![format!("  {type_name}{{")];
    let mut identical = 0;
    let flush = |lines: &mut Vec<String>, identical: &mut usize| {
        if *identical > 0 {
            let noun = if *identical == 1 { "field" } else { "fields" };
            lines.push(format!("  \t... // {identical} identical {noun}"));
            *identical = 0;
        }
    };
    for (json_name, go_name) in fields {
        let (o, n) = (old.get(*json_name), new.get(*json_name));
        if semantic_eq(o, n) {
            identical += 1;
            continue;
        }
        flush(&mut lines, &mut identical);
        lines.push(format!("- \t{go_name}: {},", render(o)));
        lines.push(format!("+ \t{go_name}: {},", render(n)));
    }
    flush(&mut lines, &mut identical);
    lines.push("  }".into());
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(|e| e.to_string()).collect()
    }

    fn deployment(labels: Value) -> Value {
        json!({"spec": {"replicas": 1, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}}}})
    }

    #[test]
    fn selectors_of_apps_workloads_are_immutable() {
        let old = deployment(json!({"app": "web"}));
        assert!(validate_update("apps", "Deployment", &old, &old).is_empty());
        let mut scaled = old.clone();
        scaled["spec"]["replicas"] = json!(3);
        assert!(validate_update("apps", "Deployment", &scaled, &old).is_empty());

        let new = deployment(json!({"app": "web2", "tier": "a"}));
        for kind in ["Deployment", "ReplicaSet", "DaemonSet"] {
            let errs = validate_update("apps", kind, &new, &old);
            assert_eq!(
                messages(&errs),
                [
                    r#"spec.selector: Invalid value: {"matchLabels":{"app":"web2","tier":"a"}}: field is immutable"#
                ]
            );
            assert_eq!(errs[0].kind.reason(), "FieldValueInvalid");
        }
        // Struct order, not sorted order; empty fields omitted; removal is null.
        let sel = json!({"matchExpressions": [{"operator": "In", "key": "k", "values": ["a"]},
            {"key": "x", "operator": "Exists", "values": []}], "matchLabels": {"b": "1", "a": "2"}});
        assert_eq!(
            render_label_selector(Some(&sel)),
            r#"{"matchLabels":{"a":"2","b":"1"},"matchExpressions":[{"key":"k","operator":"In","values":["a"]},{"key":"x","operator":"Exists"}]}"#
        );
        let mut removed = old.clone();
        removed["spec"].as_object_mut().unwrap().remove("selector");
        assert_eq!(
            messages(&validate_update("apps", "Deployment", &removed, &old)),
            ["spec.selector: Invalid value: null: field is immutable"]
        );
        // An empty matchExpressions list is no change.
        let mut same = old.clone();
        same["spec"]["selector"]["matchExpressions"] = json!([]);
        assert!(validate_update("apps", "DaemonSet", &same, &old).is_empty());
    }

    #[test]
    fn statefulset_spec_outside_the_mutable_fields_is_forbidden() {
        let old = json!({"spec": {"replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}}}, "revisionHistoryLimit": 10,
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"resources": {"requests": {"storage": "1Gi"}}}}]}});
        let mut ok = old.clone();
        ok["spec"]["replicas"] = json!(5);
        ok["spec"]["template"]["spec"] = json!({"containers": [{"name": "c", "image": "x"}]});
        ok["spec"]["minReadySeconds"] = json!(10);
        ok["spec"]["revisionHistoryLimit"] = json!(3);
        ok["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
        ok["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] =
            json!("1024Mi");
        assert!(validate_update("apps", "StatefulSet", &ok, &old).is_empty());
        for (field, value) in [
            ("selector", json!({"matchLabels": {"app": "other"}})),
            ("serviceName", json!("other")),
            (
                "volumeClaimTemplates",
                json!([{"metadata": {"name": "data"}, "spec": {"resources": {"requests": {"storage": "2Gi"}}}}]),
            ),
        ] {
            let mut bad = old.clone();
            bad["spec"][field] = value;
            assert_eq!(
                messages(&validate_update("apps", "StatefulSet", &bad, &old)),
                [format!("spec: Forbidden: {STATEFULSET_SPEC_FORBIDDEN}")],
                "{field}"
            );
        }
    }

    #[test]
    fn immutable_config_maps_and_secrets() {
        let old = json!({"immutable": true, "data": {"a": "1"}});
        assert!(validate_update("", "ConfigMap", &old, &old).is_empty());
        let mut labelled = old.clone();
        labelled["metadata"] = json!({"labels": {"x": "y"}});
        assert!(validate_update("", "ConfigMap", &labelled, &old).is_empty());
        let new = json!({"immutable": false, "data": {"a": "2"}, "binaryData": {"b": "AA=="}});
        assert_eq!(
            messages(&validate_update("", "ConfigMap", &new, &old)),
            [
                "immutable: Forbidden: field is immutable when `immutable` is set",
                "data: Forbidden: field is immutable when `immutable` is set",
                "binaryData: Forbidden: field is immutable when `immutable` is set",
            ]
        );
        // Mutable ones change freely, and may become immutable.
        let mutable = json!({"data": {"a": "1"}});
        assert!(validate_update("", "ConfigMap", &new, &mutable).is_empty());

        let old =
            json!({"type": "kubernetes.io/tls", "immutable": true, "data": {"tls.crt": "YQ=="}});
        let new = json!({"type": "Opaque", "data": {"tls.crt": "Yg=="}});
        let errs = validate_update("", "Secret", &new, &old);
        assert_eq!(
            messages(&errs),
            [
                r#"type: Invalid value: "Opaque": field is immutable"#,
                "immutable: Forbidden: field is immutable when `immutable` is set",
                "data: Forbidden: field is immutable when `immutable` is set",
            ]
        );
        assert_eq!(
            errs.iter().map(|e| e.kind.reason()).collect::<Vec<_>>(),
            [
                "FieldValueInvalid",
                "FieldValueForbidden",
                "FieldValueForbidden"
            ]
        );
    }

    #[test]
    fn job_selector_template_and_completions() {
        let old = json!({"spec": {"completions": 1, "parallelism": 1, "completionMode": "NonIndexed",
            "selector": {"matchLabels": {"j": "1"}},
            "template": {"metadata": {"labels": {"j": "1"}}, "spec": {"containers": [{"name": "c", "image": "a"}]}}}});
        let mut new = old.clone();
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("b");
        new["spec"]["completions"] = json!(3);
        new["spec"]["parallelism"] = json!(2);
        let errs = validate_update("batch", "Job", &new, &old);
        assert_eq!(
            errs.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(),
            ["spec.completions", "spec.template"]
        );
        assert_eq!(
            errs[0].to_string(),
            "spec.completions: Invalid value: 3: field is immutable"
        );
        assert!(errs[1].to_string().ends_with(": field is immutable"));

        // Indexed Jobs scale completions together with parallelism.
        let mut indexed = old.clone();
        indexed["spec"]["completionMode"] = json!("Indexed");
        let mut scaled = indexed.clone();
        scaled["spec"]["completions"] = json!(4);
        scaled["spec"]["parallelism"] = json!(4);
        assert!(validate_update("batch", "Job", &scaled, &indexed).is_empty());
        scaled["spec"]["parallelism"] = json!(2);
        assert_eq!(
            messages(&validate_update("batch", "Job", &scaled, &indexed)),
            [
                "spec.completions: Invalid value: 4: can only be modified in tandem with spec.parallelism"
            ]
        );

        // A suspended Job that never started takes new scheduling directives.
        let mut suspended = old.clone();
        suspended["spec"]["suspend"] = json!(true);
        let mut moved = suspended.clone();
        moved["spec"]["template"]["spec"]["nodeSelector"] = json!({"zone": "a"});
        moved["spec"]["template"]["metadata"]["labels"]["extra"] = json!("x");
        assert!(validate_update("batch", "Job", &moved, &suspended).is_empty());
        let mut started = suspended.clone();
        started["status"] = json!({"startTime": "2025-01-01T00:00:00Z"});
        assert_eq!(
            validate_update("batch", "Job", &moved, &started)[0].field,
            "spec.template"
        );
        let mut sel = old.clone();
        sel["spec"]["selector"]["matchLabels"]["j"] = json!("2");
        assert_eq!(
            messages(&validate_update("batch", "Job", &sel, &old)),
            [r#"spec.selector: Invalid value: {"matchLabels":{"j":"2"}}: field is immutable"#]
        );
    }

    #[test]
    fn service_cluster_ips() {
        let mut svc = json!({"spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "ports": [{"port": 80}]}});
        prepare_create("", "Service", &mut svc);
        assert_eq!(svc["spec"]["clusterIPs"], json!(["10.96.0.10"]));

        // Left out: kept. Type changes are fine.
        let mut omitted = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        prepare_update("", "Service", &mut omitted, &svc);
        assert_eq!(omitted["spec"]["clusterIP"], "10.96.0.10");
        assert_eq!(omitted["spec"]["clusterIPs"], json!(["10.96.0.10"]));
        assert!(validate_update("", "Service", &omitted, &svc).is_empty());

        // Changed singular field (the plural one kept from the live object).
        let mut changed = svc.clone();
        changed["spec"]["clusterIP"] = json!("10.96.0.11");
        prepare_update("", "Service", &mut changed, &svc);
        assert_eq!(
            messages(&validate_update("", "Service", &changed, &svc)),
            [r#"spec.clusterIPs[0]: Invalid value: ["10.96.0.11"]: may not change once set"#]
        );
        // To ExternalName and back is not checked.
        let ext = json!({"spec": {"type": "ExternalName", "externalName": "example.com"}});
        assert!(validate_update("", "Service", &ext, &svc).is_empty());
        // No cluster IP (kube-sim allocates none): nothing to protect.
        let plain = json!({"spec": {"type": "ClusterIP"}});
        let mut plain2 = plain.clone();
        prepare_update("", "Service", &mut plain2, &plain);
        assert!(validate_update("", "Service", &plain2, &plain).is_empty());
    }

    fn pvc(storage: &str, phase: &str) -> Value {
        json!({"spec": {"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem",
            "resources": {"requests": {"storage": storage}}},
            "status": {"phase": phase, "capacity": {"storage": storage}}})
    }

    #[test]
    fn pvc_spec_is_immutable_but_bound_claims_resize() {
        let bound = pvc("1Gi", "Bound");
        let bigger = pvc("2Gi", "Bound");
        assert!(validate_update("", "PersistentVolumeClaim", &bigger, &bound).is_empty());
        let same = pvc("1024Mi", "Bound");
        assert!(validate_update("", "PersistentVolumeClaim", &same, &bound).is_empty());
        // Not for unbound claims.
        let pending = pvc("1Gi", "Pending");
        let errs = validate_update(
            "",
            "PersistentVolumeClaim",
            &pvc("2Gi", "Pending"),
            &pending,
        );
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec");
        assert!(
            errs[0]
                .to_string()
                .starts_with(&format!("spec: Forbidden: {PVC_SPEC_FORBIDDEN}\n"))
        );
        // Access modes never change; the diff names the field.
        let mut modes = bound.clone();
        modes["spec"]["accessModes"] = json!(["ReadOnlyMany"]);
        let errs = validate_update("", "PersistentVolumeClaim", &modes, &bound);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0]
                .detail
                .contains("- \tAccessModes: [\"ReadWriteOnce\"],")
        );
        assert!(
            errs[0]
                .detail
                .contains("+ \tAccessModes: [\"ReadOnlyMany\"],")
        );
        // Shrinking below the capacity.
        let errs = validate_update("", "PersistentVolumeClaim", &pvc("512Mi", "Bound"), &bound);
        assert_eq!(
            messages(&errs),
            [
                "spec.resources.requests.storage: Forbidden: field can not be less than status.capacity"
            ]
        );
        // volumeName is set once; a class may be set on a claim without one.
        let mut named = bound.clone();
        named["spec"]["volumeName"] = json!("pv-1");
        named["spec"]["storageClassName"] = json!("fast");
        assert!(validate_update("", "PersistentVolumeClaim", &named, &bound).is_empty());
        let mut renamed = named.clone();
        renamed["spec"]["volumeName"] = json!("pv-2");
        assert_eq!(
            validate_update("", "PersistentVolumeClaim", &renamed, &named)[0].field,
            "spec"
        );
        // volumeMode: both the spec error and the (spec-less) field error.
        let mut block = bound.clone();
        block["spec"]["volumeMode"] = json!("Block");
        assert_eq!(
            messages(&validate_update(
                "",
                "PersistentVolumeClaim",
                &block,
                &bound
            ))[1],
            r#"volumeMode: Invalid value: "Block": field is immutable"#
        );
        // volumeAttributesClassName changes, but is never unset.
        let mut vac = bound.clone();
        vac["spec"]["volumeAttributesClassName"] = json!("gold");
        let mut vac2 = vac.clone();
        vac2["spec"]["volumeAttributesClassName"] = json!("silver");
        assert!(validate_update("", "PersistentVolumeClaim", &vac2, &vac).is_empty());
        assert_eq!(
            messages(&validate_update("", "PersistentVolumeClaim", &bound, &vac)),
            [
                "spec.volumeAttributesClassName: Forbidden: update from non-nil value to nil is forbidden"
            ]
        );
    }

    #[test]
    fn pv_source_and_data_source_normalisation() {
        let old = json!({"spec": {"capacity": {"storage": "1Gi"}, "hostPath": {"path": "/a"}, "volumeMode": "Filesystem"}});
        let mut grown = old.clone();
        grown["spec"]["capacity"]["storage"] = json!("2Gi");
        assert!(validate_update("", "PersistentVolume", &grown, &old).is_empty());
        let mut moved = old.clone();
        moved["spec"]["hostPath"]["path"] = json!("/b");
        let errs = validate_update("", "PersistentVolume", &moved, &old);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec.persistentvolumesource");
        assert!(errs[0].to_string().starts_with(
            "spec.persistentvolumesource: Forbidden: spec.persistentvolumesource is immutable after creation\n"
        ));

        let mut claim =
            json!({"spec": {"dataSource": {"kind": "PersistentVolumeClaim", "name": "src"}}});
        prepare_create("", "PersistentVolumeClaim", &mut claim);
        assert_eq!(
            claim["spec"]["dataSourceRef"],
            json!({"kind": "PersistentVolumeClaim", "name": "src"})
        );
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("1Gi"), parse_quantity("1024Mi"));
        assert_eq!(parse_quantity("1"), parse_quantity("1000m"));
        assert_eq!(parse_quantity("1.5k"), parse_quantity("1500"));
        assert_eq!(parse_quantity("1e3"), parse_quantity("1k"));
        assert_eq!(parse_quantity("0.1"), parse_quantity("100m"));
        assert!(parse_quantity("2Gi") > parse_quantity("2G"));
        assert_eq!(parse_quantity("abc"), None);
        assert_eq!(parse_quantity("1Xi"), None);
    }
}
