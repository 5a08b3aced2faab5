//! Label and field selectors, parsed and matched like the real apiserver.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::ApiError;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
    values: Vec<String>,
}

/// A parsed label selector (`a=b,c!=d,e in (f,g),!h,i`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}

impl LabelSelector {
    /// Parses selector syntax; an empty string selects everything.
    pub fn parse(input: &str) -> Result<LabelSelector, ApiError> {
        let err = |m: String| ApiError::bad_request(format!("unable to parse requirement: {m}"));
        let mut requirements = Vec::new();
        let chars: Vec<char> = input.chars().collect();
        let mut i = 0;
        let skip_ws = |i: &mut usize| {
            while *i < chars.len() && chars[*i].is_whitespace() {
                *i += 1;
            }
        };
        loop {
            skip_ws(&mut i);
            if i >= chars.len() {
                break;
            }
            let negate = chars[i] == '!';
            if negate {
                i += 1;
                skip_ws(&mut i);
            }
            let start = i;
            while i < chars.len() && is_key_char(chars[i]) {
                i += 1;
            }
            let key: String = chars[start..i].iter().collect();
            if key.is_empty() {
                return Err(err(format!(
                    "found '{}', expected: identifier",
                    chars.get(i).copied().unwrap_or(' ')
                )));
            }
            skip_ws(&mut i);
            if negate {
                requirements.push(Requirement {
                    key,
                    op: Op::DoesNotExist,
                    values: vec![],
                });
            } else if i >= chars.len() || chars[i] == ',' {
                requirements.push(Requirement {
                    key,
                    op: Op::Exists,
                    values: vec![],
                });
            } else {
                let rest: String = chars[i..].iter().collect();
                let (op, adv) = if rest.starts_with("==") {
                    (Op::Equals, 2)
                } else if rest.starts_with("!=") {
                    (Op::NotEquals, 2)
                } else if rest.starts_with('=') {
                    (Op::Equals, 1)
                } else if rest.starts_with('>') {
                    (Op::Gt, 1)
                } else if rest.starts_with('<') {
                    (Op::Lt, 1)
                } else if rest.starts_with("notin") {
                    (Op::NotIn, 5)
                } else if rest.starts_with("in") {
                    (Op::In, 2)
                } else {
                    return Err(err(format!(
                        "found '{rest}', expected: in, notin, =, ==, !=, gt, lt"
                    )));
                };
                i += adv;
                skip_ws(&mut i);
                if matches!(op, Op::In | Op::NotIn) {
                    if i >= chars.len() || chars[i] != '(' {
                        return Err(err("found end of string, expected: '('".into()));
                    }
                    i += 1;
                    let start = i;
                    while i < chars.len() && chars[i] != ')' {
                        i += 1;
                    }
                    if i >= chars.len() {
                        return Err(err("found end of string, expected: ')'".into()));
                    }
                    let values = chars[start..i]
                        .iter()
                        .collect::<String>()
                        .split(',')
                        .map(|v| v.trim().to_string())
                        .collect();
                    i += 1;
                    requirements.push(Requirement { key, op, values });
                } else {
                    let start = i;
                    while i < chars.len() && chars[i] != ',' && !chars[i].is_whitespace() {
                        i += 1;
                    }
                    let value: String = chars[start..i].iter().collect();
                    if matches!(op, Op::Gt | Op::Lt) && value.parse::<i64>().is_err() {
                        return Err(err(
                            "for 'Gt', 'Lt' operators, the value must be an integer".to_string(),
                        ));
                    }
                    requirements.push(Requirement {
                        key,
                        op,
                        values: vec![value],
                    });
                }
            }
            skip_ws(&mut i);
            if i < chars.len() {
                if chars[i] != ',' {
                    return Err(err(format!(
                        "found '{}', expected: ',' or 'end of string'",
                        chars[i]
                    )));
                }
                i += 1;
            }
        }
        Ok(LabelSelector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether a label map satisfies the selector.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| {
            let v = labels.get(&r.key);
            match r.op {
                Op::Equals => v == Some(&r.values[0]),
                Op::NotEquals => v != Some(&r.values[0]),
                Op::In => v.is_some_and(|v| r.values.contains(v)),
                Op::NotIn => v.is_none_or(|v| !r.values.contains(v)),
                Op::Exists => v.is_some(),
                Op::DoesNotExist => v.is_none(),
                Op::Gt | Op::Lt => {
                    let (Some(v), Ok(bound)) = (v, r.values[0].parse::<i64>()) else {
                        return false;
                    };
                    let Ok(v) = v.parse::<i64>() else {
                        return false;
                    };
                    if r.op == Op::Gt { v > bound } else { v < bound }
                }
            }
        })
    }

    /// Whether an object's `metadata.labels` satisfy the selector.
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.is_empty() || self.matches(&labels_of(obj))
    }
}

/// An object's labels as a map.
pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Matches a `metav1.LabelSelector` object (matchLabels + matchExpressions).
pub fn match_label_selector_object(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    if let Some(ml) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in ml {
            if labels.get(k).map(String::as_str) != v.as_str() {
                return false;
            }
        }
    }
    for expr in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = expr.get("key").and_then(Value::as_str).unwrap_or_default();
        let values: Vec<&str> = expr
            .get("values")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let v = labels.get(key).map(String::as_str);
        let ok = match expr.get("operator").and_then(Value::as_str) {
            Some("In") => v.is_some_and(|v| values.contains(&v)),
            Some("NotIn") => v.is_none_or(|v| !values.contains(&v)),
            Some("Exists") => v.is_some(),
            Some("DoesNotExist") => v.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// A parsed field selector: `field=value`, `field==value`, `field!=value`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<(String, bool, String)>,
}

impl FieldSelector {
    /// Parses the selector and checks every field against `supported` (which
    /// always includes `metadata.name` and `metadata.namespace`).
    pub fn parse(input: &str, supported: &[String]) -> Result<FieldSelector, ApiError> {
        let mut terms = Vec::new();
        for part in input.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, positive, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{input}'; can't understand '{part}'"
                )));
            };
            let field = field.trim().to_string();
            if field != "metadata.name"
                && field != "metadata.namespace"
                && !supported.contains(&field)
            {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            terms.push((field, positive, value.trim().to_string()));
        }
        Ok(FieldSelector { terms })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The value of `metadata.name` the selector pins, if any.
    pub fn pinned_name(&self) -> Option<&str> {
        self.terms
            .iter()
            .find(|(f, pos, _)| f == "metadata.name" && *pos)
            .map(|(_, _, v)| v.as_str())
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.terms.iter().all(|(field, positive, value)| {
            let actual = field_value(obj, field);
            (actual == *value) == *positive
        })
    }
}

/// The string value of a dotted field path (missing = empty string), as field
/// selectors compare it.
pub fn field_value(obj: &Value, field: &str) -> String {
    let mut cur = obj;
    for part in field.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

/// Field selectors a built-in kind supports beyond metadata.name/namespace.
pub fn builtin_field_labels(group: &str, kind: &str) -> Vec<String> {
    let v: &[&str] = match (group, kind) {
        ("", "Pod") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "Event") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("events.k8s.io", "Event") => &[
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "regarding.resourceVersion",
            "regarding.fieldPath",
            "reason",
            "reportingController",
            "type",
        ],
        ("", "Secret") => &["type"],
        ("", "Namespace") => &["status.phase"],
        ("", "Node") => &["spec.unschedulable"],
        ("", "ReplicationController") => &["status.replicas"],
        ("apps", "ReplicaSet") => &["status.replicas"],
        ("batch", "Job") => &["status.successful"],
        _ => &[],
    };
    v.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selectors() {
        let l = labels(&[("app", "web"), ("tier", "front"), ("n", "5")]);
        for (sel, want) in [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app in (web, api)", true),
            ("app notin (web)", false),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("app=web,tier=back", false),
            ("n>3", true),
            ("n<3", false),
            ("stages.metio.wtf/stage=x", false),
        ] {
            assert_eq!(
                LabelSelector::parse(sel).unwrap().matches(&l),
                want,
                "{sel}"
            );
        }
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("=x").is_err());
    }

    #[test]
    fn field_selectors() {
        let obj =
            json!({"metadata": {"name": "a", "namespace": "ns"}, "status": {"phase": "Running"}});
        let sup = builtin_field_labels("", "Pod");
        assert!(
            FieldSelector::parse("metadata.name=a", &sup)
                .unwrap()
                .matches(&obj)
        );
        assert!(
            !FieldSelector::parse("metadata.name!=a", &sup)
                .unwrap()
                .matches(&obj)
        );
        assert!(
            FieldSelector::parse("status.phase=Running,metadata.namespace=ns", &sup)
                .unwrap()
                .matches(&obj)
        );
        let err = FieldSelector::parse("spec.foo=a", &sup).unwrap_err();
        assert_eq!(err.message, "field label not supported: spec.foo");
        assert_eq!(
            FieldSelector::parse("metadata.name=a", &[])
                .unwrap()
                .pinned_name(),
            Some("a")
        );
    }

    #[test]
    fn selector_objects() {
        let l = labels(&[("app", "web")]);
        assert!(match_label_selector_object(&json!({}), &l));
        assert!(match_label_selector_object(
            &json!({"matchLabels": {"app": "web"}}),
            &l
        ));
        assert!(!match_label_selector_object(
            &json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}),
            &l
        ));
    }
}
