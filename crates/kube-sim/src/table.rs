//! Server-side printing: `meta.k8s.io/v1` Tables for `kubectl get`, with the
//! printer columns of CRDs (kubectl JSONPath) and of common built-in kinds.

use serde_json::{Value, json};

use crate::registry::ResourceType;

/// Evaluates a kubectl-style JSONPath (`.status.conditions[?(@.type=="Ready")].status`,
/// `.metadata.labels.stages\.metio\.wtf/stage`, `.items[*].name`, `.a[0]`) and
/// returns every match.
pub fn jsonpath(root: &Value, path: &str) -> Vec<Value> {
    let path = path.trim();
    let path = path
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or(path);
    let path = path.strip_prefix('$').unwrap_or(path);
    let mut current: Vec<Value> = vec![root.clone()];
    let chars: Vec<char> = path.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                let mut name = String::new();
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        name.push(chars[i + 1]);
                        i += 2;
                        continue;
                    }
                    name.push(chars[i]);
                    i += 1;
                }
                if name.is_empty() {
                    continue;
                }
                current = current
                    .into_iter()
                    .filter_map(|v| v.get(&name).cloned())
                    .collect();
            }
            '[' => {
                let end = match chars[i..].iter().position(|c| *c == ']') {
                    Some(e) => i + e,
                    None => return vec![],
                };
                let inner: String = chars[i + 1..end].iter().collect();
                i = end + 1;
                let inner = inner.trim();
                if inner == "*" {
                    current = current
                        .into_iter()
                        .flat_map(|v| match v {
                            Value::Array(a) => a,
                            Value::Object(m) => m.into_iter().map(|(_, v)| v).collect(),
                            _ => vec![],
                        })
                        .collect();
                } else if let Some(filter) =
                    inner.strip_prefix("?(").and_then(|f| f.strip_suffix(')'))
                {
                    current = current
                        .into_iter()
                        .flat_map(|v| match v {
                            Value::Array(a) => a,
                            _ => vec![],
                        })
                        .filter(|item| filter_matches(item, filter))
                        .collect();
                } else if let Ok(idx) = inner.parse::<i64>() {
                    current = current
                        .into_iter()
                        .filter_map(|v| {
                            let a = v.as_array()?;
                            let n = a.len() as i64;
                            let k = if idx < 0 { n + idx } else { idx };
                            (0..n).contains(&k).then(|| a[k as usize].clone())
                        })
                        .collect();
                } else {
                    let key = inner.trim_matches(|c| c == '\'' || c == '"');
                    current = current
                        .into_iter()
                        .filter_map(|v| v.get(key).cloned())
                        .collect();
                }
            }
            _ => {
                // A leading name without a dot.
                let mut name = String::new();
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    name.push(chars[i]);
                    i += 1;
                }
                current = current
                    .into_iter()
                    .filter_map(|v| v.get(&name).cloned())
                    .collect();
            }
        }
    }
    current
}

fn filter_matches(item: &Value, filter: &str) -> bool {
    for op in ["==", "!="] {
        if let Some((lhs, rhs)) = filter.split_once(op) {
            let lhs = lhs.trim().strip_prefix('@').unwrap_or(lhs.trim());
            let left = jsonpath(item, lhs);
            let rhs = rhs.trim();
            let right: Value = serde_json::from_str(rhs)
                .unwrap_or_else(|_| Value::String(rhs.trim_matches('\'').to_string()));
            let eq = left.first() == Some(&right);
            return if op == "==" { eq } else { !eq };
        }
    }
    let path = filter.trim().strip_prefix('@').unwrap_or(filter.trim());
    !jsonpath(item, path).is_empty()
}

fn cell_text(values: &[Value]) -> Value {
    match values {
        [] => json!("<none>"),
        [Value::String(s)] => json!(s),
        [v @ (Value::Number(_) | Value::Bool(_))] => v.clone(),
        many => json!(
            many.iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

/// Go's `duration.HumanDuration`, as kubectl prints ages.
pub fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let d = (hours / 24) % 365;
        return if d == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{d}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn age(ts: &Value) -> Value {
    let Some(s) = ts.as_str() else {
        return json!("<unknown>");
    };
    match s.parse::<jiff::Timestamp>() {
        Ok(t) => {
            let secs = jiff::Timestamp::now().as_second() - t.as_second();
            json!(human_duration(secs))
        }
        Err(_) => json!("<invalid>"),
    }
}

fn col(name: &str, ty: &str, format: &str, description: &str) -> Value {
    json!({"name": name, "type": ty, "format": format, "description": description, "priority": 0})
}

fn str_at<'a>(obj: &'a Value, ptr: &str) -> &'a str {
    obj.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn int_at(obj: &Value, ptr: &str) -> i64 {
    obj.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

/// Column definitions and a row function for a type.
/// Renders the cells of one row.
type RowFn = Box<dyn Fn(&Value) -> Vec<Value>>;

fn columns(rt: &ResourceType) -> (Vec<Value>, RowFn) {
    let name_col = col(
        "Name",
        "string",
        "name",
        "Name must be unique within a namespace.",
    );
    if let Some(crd) = &rt.crd {
        let mut defs = vec![name_col];
        let specs: Vec<Value> = crd.printer_columns.clone();
        let has_age = specs
            .iter()
            .any(|c| c["jsonPath"] == ".metadata.creationTimestamp");
        for c in &specs {
            let mut d = col(
                c["name"].as_str().unwrap_or(""),
                c["type"].as_str().unwrap_or("string"),
                c["format"].as_str().unwrap_or(""),
                c["description"].as_str().unwrap_or(""),
            );
            d["priority"] = c.get("priority").cloned().unwrap_or(json!(0));
            defs.push(d);
        }
        if specs.is_empty() || !has_age && specs.is_empty() {
            defs.push(col("Age", "date", "", "CreationTimestamp"));
        }
        let empty = specs.is_empty();
        return (
            defs,
            Box::new(move |obj: &Value| {
                let mut cells = vec![json!(str_at(obj, "/metadata/name"))];
                for c in &specs {
                    let path = c["jsonPath"].as_str().unwrap_or("");
                    let values = jsonpath(obj, path);
                    if c["type"] == "date" {
                        cells.push(values.first().map(age).unwrap_or(json!("<unknown>")));
                    } else {
                        cells.push(cell_text(&values));
                    }
                }
                if empty {
                    cells.push(age(&obj["metadata"]["creationTimestamp"]));
                }
                cells
            }),
        );
    }
    let age_col = col("Age", "string", "", "CreationTimestamp");
    let (extra, f): (Vec<Value>, RowFn) = match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "ConfigMap") => (
            vec![col("Data", "integer", "", "Number of data entries")],
            Box::new(|o: &Value| {
                let n = o["data"].as_object().map_or(0, |m| m.len())
                    + o["binaryData"].as_object().map_or(0, |m| m.len());
                vec![json!(n)]
            }),
        ),
        ("", "Secret") => (
            vec![
                col("Type", "string", "", "The type of the secret"),
                col("Data", "integer", "", "Number of data entries"),
            ],
            Box::new(|o: &Value| {
                vec![
                    json!(str_at(o, "/type")),
                    json!(o["data"].as_object().map_or(0, |m| m.len())),
                ]
            }),
        ),
        ("", "Namespace") => (
            vec![col("Status", "string", "", "The status of the namespace")],
            Box::new(|o: &Value| vec![json!(str_at(o, "/status/phase"))]),
        ),
        ("", "Pod") => (
            vec![
                col("Ready", "string", "", "Ready containers"),
                col(
                    "Status",
                    "string",
                    "",
                    "The aggregate status of the containers",
                ),
                col("Restarts", "string", "", "Container restarts"),
            ],
            Box::new(|o: &Value| {
                let total = o
                    .pointer("/spec/containers")
                    .and_then(Value::as_array)
                    .map_or(0, |a| a.len());
                let statuses = o
                    .pointer("/status/containerStatuses")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let ready = statuses.iter().filter(|s| s["ready"] == true).count();
                let restarts: i64 = statuses
                    .iter()
                    .map(|s| s["restartCount"].as_i64().unwrap_or(0))
                    .sum();
                let phase = if o.pointer("/metadata/deletionTimestamp").is_some() {
                    "Terminating"
                } else {
                    str_at(o, "/status/phase")
                };
                vec![
                    json!(format!("{ready}/{total}")),
                    json!(phase),
                    json!(restarts.to_string()),
                ]
            }),
        ),
        ("apps", "Deployment" | "StatefulSet" | "ReplicaSet") => (
            vec![
                col("Ready", "string", "", "Number of the pod with ready state"),
                col(
                    "Up-to-date",
                    "integer",
                    "",
                    "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
                ),
                col(
                    "Available",
                    "integer",
                    "",
                    "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
                ),
            ],
            Box::new(|o: &Value| {
                vec![
                    json!(format!(
                        "{}/{}",
                        int_at(o, "/status/readyReplicas"),
                        o.pointer("/spec/replicas")
                            .and_then(Value::as_i64)
                            .unwrap_or(1)
                    )),
                    json!(int_at(o, "/status/updatedReplicas")),
                    json!(int_at(o, "/status/availableReplicas")),
                ]
            }),
        ),
        ("", "Service") => (
            vec![
                col("Type", "string", "", "The type of the service"),
                col("Cluster-IP", "string", "", "The IP address of the service"),
                col("Port(s)", "string", "", "The ports of the service"),
            ],
            Box::new(|o: &Value| {
                let ports: Vec<String> = o
                    .pointer("/spec/ports")
                    .and_then(Value::as_array)
                    .map(|ps| {
                        ps.iter()
                            .map(|p| {
                                format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("TCP"))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                vec![
                    json!(str_at(o, "/spec/type")),
                    json!(str_at(o, "/spec/clusterIP")),
                    json!(if ports.is_empty() {
                        "<none>".to_string()
                    } else {
                        ports.join(",")
                    }),
                ]
            }),
        ),
        ("batch", "Job") => (
            vec![
                col("Status", "string", "", "Status of the job"),
                col("Completions", "string", "", "The completion status"),
            ],
            Box::new(|o: &Value| {
                let conds = o
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let status = if conds
                    .iter()
                    .any(|c| c["type"] == "Complete" && c["status"] == "True")
                {
                    "Complete"
                } else if conds
                    .iter()
                    .any(|c| c["type"] == "Failed" && c["status"] == "True")
                {
                    "Failed"
                } else {
                    "Running"
                };
                vec![
                    json!(status),
                    json!(format!(
                        "{}/{}",
                        int_at(o, "/status/succeeded"),
                        o.pointer("/spec/completions")
                            .and_then(Value::as_i64)
                            .unwrap_or(1)
                    )),
                ]
            }),
        ),
        ("", "Event") => (
            vec![
                col("Type", "string", "", "Type of the event"),
                col("Reason", "string", "", "Reason of the event"),
                col("Object", "string", "", "The object the event is about"),
                col("Message", "string", "", "Message"),
            ],
            Box::new(|o: &Value| {
                vec![
                    json!(str_at(o, "/type")),
                    json!(str_at(o, "/reason")),
                    json!(format!(
                        "{}/{}",
                        str_at(o, "/involvedObject/kind").to_ascii_lowercase(),
                        str_at(o, "/involvedObject/name")
                    )),
                    json!(str_at(o, "/message")),
                ]
            }),
        ),
        ("coordination.k8s.io", "Lease") => (
            vec![col("Holder", "string", "", "The holder of the lease")],
            Box::new(|o: &Value| vec![json!(str_at(o, "/spec/holderIdentity"))]),
        ),
        _ => (vec![], Box::new(|_: &Value| vec![])),
    };
    let mut defs = vec![name_col];
    defs.extend(extra);
    defs.push(age_col);
    (
        defs,
        Box::new(move |o: &Value| {
            let mut cells = vec![json!(str_at(o, "/metadata/name"))];
            cells.extend(f(o));
            cells.push(age(&o["metadata"]["creationTimestamp"]));
            cells
        }),
    )
}

/// Renders objects as a Table.
pub fn to_table(
    rt: &ResourceType,
    objects: &[Value],
    list_meta: Value,
    include_object: &str,
) -> Value {
    let (defs, row) = columns(rt);
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let object = match include_object {
                "None" => Value::Null,
                "Object" => o.clone(),
                _ => json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o.get("metadata").cloned().unwrap_or(json!({}))
                }),
            };
            json!({"cells": row(o), "object": object})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": defs,
        "rows": rows
    })
}

/// Whether the Accept header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.replace(' ', "").contains("as=Table"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_subset() {
        let o = json!({
            "metadata": {"labels": {"stages.metio.wtf/stage": "app"}},
            "status": {"conditions": [{"type": "Other", "status": "False"}, {"type": "Ready", "status": "True", "message": "ok"}],
                       "completedActions": [{"action": "a"}, {"action": "b"}]},
            "spec": {"images": ["x", "y"]}
        });
        assert_eq!(
            jsonpath(&o, r#".status.conditions[?(@.type=="Ready")].status"#),
            vec![json!("True")]
        );
        assert_eq!(
            jsonpath(&o, r".metadata.labels.stages\.metio\.wtf/stage"),
            vec![json!("app")]
        );
        assert_eq!(
            jsonpath(&o, ".status.completedActions[*].action"),
            vec![json!("a"), json!("b")]
        );
        assert_eq!(
            jsonpath(&o, ".status.conditions[1].message"),
            vec![json!("ok")]
        );
        assert_eq!(jsonpath(&o, "{.spec.images[0]}"), vec![json!("x")]);
        assert!(jsonpath(&o, ".missing.field").is_empty());
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(3600 * 3), "3h");
        assert_eq!(human_duration(3600 * 50), "2d2h");
    }
}
