//! Defaulting of built-in kinds, as the real apiserver's defaulters do on every
//! write. Only the defaults of the kinds and fields that delivery tools and drift
//! detection commonly meet are implemented; a missing default would make a
//! server-side-apply dry run differ from the live object where a real server's
//! would not, so each one here mirrors `pkg/apis/*/v1/defaults.go`.

use serde_json::{Map, Value, json};

fn obj(v: &mut Value) -> Option<&mut Map<String, Value>> {
    v.as_object_mut()
}

fn default(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_string(), value);
    }
}

fn image_pull_policy(image: &str) -> &'static str {
    // A digest pins the image; otherwise `:latest` or no tag means Always.
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn default_container(c: &mut Value) {
    let Some(m) = obj(c) else { return };
    default(m, "terminationMessagePath", json!("/dev/termination-log"));
    default(m, "terminationMessagePolicy", json!("File"));
    if let Some(image) = m.get("image").and_then(Value::as_str).map(str::to_string) {
        default(m, "imagePullPolicy", json!(image_pull_policy(&image)));
    }
    default(m, "resources", json!({}));
    if let Some(ports) = m.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(obj) {
            default(p, "protocol", json!("TCP"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = m.get_mut(probe).and_then(obj) {
            default(p, "timeoutSeconds", json!(1));
            default(p, "periodSeconds", json!(10));
            default(p, "successThreshold", json!(1));
            default(p, "failureThreshold", json!(3));
        }
    }
}

/// Defaults a PodSpec.
pub fn default_pod_spec(spec: &mut Value) {
    let Some(m) = obj(spec) else { return };
    default(m, "restartPolicy", json!("Always"));
    default(m, "terminationGracePeriodSeconds", json!(30));
    default(m, "dnsPolicy", json!("ClusterFirst"));
    default(m, "securityContext", json!({}));
    default(m, "schedulerName", json!("default-scheduler"));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = m.get_mut(list).and_then(Value::as_array_mut) {
            cs.iter_mut().for_each(default_container);
        }
    }
    if m.get("serviceAccountName").is_some() && m.get("serviceAccount").is_none() {
        let sa = m["serviceAccountName"].clone();
        m.insert("serviceAccount".into(), sa);
    }
}

fn default_template(spec: &mut Map<String, Value>) {
    if let Some(pod_spec) = spec.get_mut("template").and_then(|t| t.get_mut("spec")) {
        default_pod_spec(pod_spec);
    }
}

/// Applies the defaults of a built-in kind to an object being written.
pub fn apply(group: &str, kind: &str, object: &mut Value) {
    match (group, kind) {
        ("", "Namespace") => {
            // SetDefaults_Namespace and the strategy's Canonicalize: the
            // `kubernetes.io/metadata.name` label always equals the name; a
            // client can neither remove nor change it.
            let name = object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if !name.is_empty()
                && let Some(meta) = object.get_mut("metadata").and_then(obj)
            {
                let labels = meta.entry("labels").or_insert_with(|| json!({}));
                if !labels.is_object() {
                    *labels = json!({});
                }
                if let Some(l) = obj(labels) {
                    l.insert("kubernetes.io/metadata.name".into(), json!(name));
                }
            }
            if let Some(m) = obj(object) {
                let spec = m.entry("spec").or_insert_with(|| json!({}));
                if let Some(s) = obj(spec) {
                    default(s, "finalizers", json!(["kubernetes"]));
                }
            }
        }
        ("", "Secret") => {
            if let Some(m) = obj(object) {
                default(m, "type", json!("Opaque"));
                // stringData is write-only: merged into data, then dropped.
                if let Some(Value::Object(sd)) = m.remove("stringData") {
                    use base64::Engine;
                    let data = m.entry("data").or_insert_with(|| json!({}));
                    if let Some(d) = obj(data) {
                        for (k, v) in sd {
                            let s = v.as_str().unwrap_or_default();
                            d.insert(
                                k,
                                json!(base64::engine::general_purpose::STANDARD.encode(s)),
                            );
                        }
                    }
                }
            }
        }
        ("", "Service") => {
            let Some(spec) = object.get_mut("spec").and_then(obj) else {
                return;
            };
            default(spec, "type", json!("ClusterIP"));
            default(spec, "sessionAffinity", json!("None"));
            let ty = spec
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("ClusterIP")
                .to_string();
            if ty != "ExternalName" {
                default(spec, "internalTrafficPolicy", json!("Cluster"));
                default(spec, "ipFamilies", json!(["IPv4"]));
                default(spec, "ipFamilyPolicy", json!("SingleStack"));
            }
            if ty == "NodePort" || ty == "LoadBalancer" {
                default(spec, "externalTrafficPolicy", json!("Cluster"));
            }
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports.iter_mut().filter_map(obj) {
                    default(p, "protocol", json!("TCP"));
                    if p.get("targetPort").is_none()
                        && let Some(port) = p.get("port").cloned()
                    {
                        p.insert("targetPort".into(), port);
                    }
                }
            }
        }
        ("", "Pod") => {
            if let Some(spec) = object.get_mut("spec") {
                default_pod_spec(spec);
            }
        }
        ("", "PersistentVolumeClaim") => {
            if let Some(spec) = object.get_mut("spec").and_then(obj) {
                default(spec, "volumeMode", json!("Filesystem"));
            }
        }
        ("", "PersistentVolume") => {
            if let Some(spec) = object.get_mut("spec").and_then(obj) {
                default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
                default(spec, "volumeMode", json!("Filesystem"));
            }
        }
        ("apps", "Deployment") => {
            let Some(spec) = object.get_mut("spec").and_then(obj) else {
                return;
            };
            default(spec, "replicas", json!(1));
            default(spec, "revisionHistoryLimit", json!(10));
            default(spec, "progressDeadlineSeconds", json!(600));
            default(
                spec,
                "strategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
            );
            default_template(spec);
        }
        ("apps", "StatefulSet") => {
            let Some(spec) = object.get_mut("spec").and_then(obj) else {
                return;
            };
            default(spec, "replicas", json!(1));
            default(spec, "podManagementPolicy", json!("OrderedReady"));
            default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
            );
            default(spec, "revisionHistoryLimit", json!(10));
            default(
                spec,
                "persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
            );
            default_template(spec);
        }
        ("apps", "DaemonSet") => {
            let Some(spec) = object.get_mut("spec").and_then(obj) else {
                return;
            };
            default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
            default(spec, "revisionHistoryLimit", json!(10));
            default_template(spec);
        }
        ("apps", "ReplicaSet") => {
            let Some(spec) = object.get_mut("spec").and_then(obj) else {
                return;
            };
            default(spec, "replicas", json!(1));
            default_template(spec);
        }
        ("batch", "Job") => {
            let Some(spec) = object.get_mut("spec").and_then(obj) else {
                return;
            };
            // Both default to 1 only when neither is set: a Job with only a
            // parallelism is a work queue (no completions).
            if spec.get("completions").is_none_or(Value::is_null)
                && spec.get("parallelism").is_none_or(Value::is_null)
            {
                spec.insert("completions".into(), json!(1));
            }
            default(spec, "parallelism", json!(1));
            default(spec, "backoffLimit", json!(6));
            default(spec, "completionMode", json!("NonIndexed"));
            default(spec, "suspend", json!(false));
            default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
            default(spec, "manualSelector", json!(false));
            default_template(spec);
        }
        ("batch", "CronJob") => {
            let Some(spec) = object.get_mut("spec").and_then(obj) else {
                return;
            };
            default(spec, "concurrencyPolicy", json!("Allow"));
            default(spec, "suspend", json!(false));
            default(spec, "successfulJobsHistoryLimit", json!(3));
            default(spec, "failedJobsHistoryLimit", json!(1));
            if let Some(job_spec) = spec
                .get_mut("jobTemplate")
                .and_then(|t| t.get_mut("spec"))
                .and_then(obj)
            {
                default_template(job_spec);
            }
        }
        _ => {}
    }
}

/// The status a kind starts with when created (its status subresource resets
/// whatever the client sent).
pub fn initial_status(group: &str, kind: &str) -> Option<Value> {
    match (group, kind) {
        ("", "Namespace") => Some(json!({"phase": "Active"})),
        ("", "Pod") => Some(json!({"phase": "Pending", "qosClass": "BestEffort"})),
        ("", "Service") => Some(json!({"loadBalancer": {}})),
        ("", "PersistentVolumeClaim") => Some(json!({"phase": "Pending"})),
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => Some(json!({})),
        ("batch", "Job" | "CronJob") => Some(json!({})),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_defaults() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "nginx", "ports": [{"containerPort": 80}]}]}}}});
        apply("apps", "Deployment", &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
    }

    #[test]
    fn pull_policy_rules() {
        assert_eq!(image_pull_policy("nginx:1.25"), "IfNotPresent");
        assert_eq!(image_pull_policy("nginx:latest"), "Always");
        assert_eq!(image_pull_policy("registry:5000/nginx"), "Always");
        assert_eq!(image_pull_policy("nginx@sha256:abc"), "IfNotPresent");
    }

    #[test]
    fn job_completions_default_only_without_parallelism() {
        let mut plain = json!({"spec": {"template": {"spec": {}}}});
        apply("batch", "Job", &mut plain);
        assert_eq!(
            (&plain["spec"]["completions"], &plain["spec"]["parallelism"]),
            (&json!(1), &json!(1))
        );
        let mut queue = json!({"spec": {"parallelism": 3, "template": {"spec": {}}}});
        apply("batch", "Job", &mut queue);
        assert!(queue["spec"].get("completions").is_none());
    }

    #[test]
    fn secret_string_data() {
        let mut s = json!({"stringData": {"a": "b"}});
        apply("", "Secret", &mut s);
        assert_eq!(s["data"]["a"], "Yg==");
        assert!(s.get("stringData").is_none());
        assert_eq!(s["type"], "Opaque");
    }
}
