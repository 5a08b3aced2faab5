//! Strategic merge patches, RFC 6902 JSON patches and patch target selectors.

use std::cell::OnceCell;

use regex::Regex;
use serde_json::{Map, Value};

use crate::resource::{ResId, Resource};

/// The slice of the Kubernetes schema that strategic merge needs: which
/// lists merge by which key. Everything else merges maps and replaces lists.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ty {
    Any,
    WorkloadRoot,
    WorkloadSpec,
    CronJobRoot,
    CronJobSpec,
    JobTemplate,
    PodTemplate,
    PodRoot,
    PodSpec,
    Container,
    ServiceRoot,
    ServiceSpec,
}

fn root_ty(kind: &str) -> Ty {
    match kind {
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "Job"
        | "ReplicationController" => Ty::WorkloadRoot,
        "CronJob" => Ty::CronJobRoot,
        "Pod" => Ty::PodRoot,
        "PodTemplate" => Ty::PodTemplate,
        "Service" => Ty::ServiceRoot,
        _ => Ty::Any,
    }
}

fn child(ty: Ty, field: &str) -> (Ty, Option<&'static str>) {
    match (ty, field) {
        (Ty::WorkloadRoot, "spec") => (Ty::WorkloadSpec, None),
        (Ty::WorkloadSpec, "template") => (Ty::PodTemplate, None),
        (Ty::CronJobRoot, "spec") => (Ty::CronJobSpec, None),
        (Ty::CronJobSpec, "jobTemplate") => (Ty::JobTemplate, None),
        (Ty::JobTemplate, "spec") => (Ty::WorkloadSpec, None),
        (Ty::PodTemplate, "template") => (Ty::PodTemplate, None),
        (Ty::PodTemplate, "spec") | (Ty::PodRoot, "spec") => (Ty::PodSpec, None),
        (Ty::PodSpec, "containers" | "initContainers" | "ephemeralContainers") => {
            (Ty::Container, Some("name"))
        }
        (Ty::PodSpec, "volumes" | "imagePullSecrets" | "resourceClaims" | "schedulingGates") => {
            (Ty::Any, Some("name"))
        }
        (Ty::PodSpec, "hostAliases") => (Ty::Any, Some("ip")),
        (Ty::PodSpec, "topologySpreadConstraints") => (Ty::Any, Some("topologyKey")),
        (Ty::Container, "ports") => (Ty::Any, Some("containerPort")),
        (Ty::Container, "env") => (Ty::Any, Some("name")),
        (Ty::Container, "volumeMounts") => (Ty::Any, Some("mountPath")),
        (Ty::Container, "volumeDevices") => (Ty::Any, Some("devicePath")),
        (Ty::ServiceRoot, "spec") => (Ty::ServiceSpec, None),
        (Ty::ServiceSpec, "ports") => (Ty::Any, Some("port")),
        _ => (Ty::Any, None),
    }
}

/// Applies a strategic merge patch to `target`. Returns false when the patch
/// deletes the whole object (`$patch: delete` at the top).
pub fn strategic_merge(target: &mut Value, patch: &Value) -> Result<bool, String> {
    if patch.get("$patch").and_then(Value::as_str) == Some("delete") {
        return Ok(false);
    }
    let kind = target
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    merge_value(target, patch, root_ty(&kind))?;
    Ok(true)
}

fn merge_value(target: &mut Value, patch: &Value, ty: Ty) -> Result<(), String> {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => merge_map(t, p, ty),
        (t, p) => {
            *t = strip_directives(p);
            Ok(())
        }
    }
}

fn merge_map(t: &mut Map<String, Value>, p: &Map<String, Value>, ty: Ty) -> Result<(), String> {
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut fresh = p.clone();
            fresh.remove("$patch");
            *t = strip_directives(&Value::Object(fresh))
                .as_object()
                .cloned()
                .unwrap_or_default();
            return Ok(());
        }
        Some("delete") => {
            t.clear();
            return Ok(());
        }
        Some(other) => return Err(format!("unknown patch directive $patch: {other}")),
        None => {}
    }
    for (k, pv) in p {
        if k.starts_with('$') {
            continue;
        }
        if pv.is_null() {
            t.remove(k);
            continue;
        }
        let (cty, key) = child(ty, k);
        match (t.get_mut(k), pv) {
            (Some(Value::Array(tl)), Value::Array(pl)) => match key {
                Some(key) => merge_keyed_list(tl, pl, key, cty)?,
                None => *tl = pl.iter().map(strip_directives).collect(),
            },
            (Some(tv @ Value::Object(_)), Value::Object(pm)) => {
                if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
                    t.remove(k);
                } else {
                    merge_value(tv, pv, cty)?;
                }
            }
            _ => {
                if pv.get("$patch").and_then(Value::as_str) == Some("delete") {
                    t.remove(k);
                    continue;
                }
                let fresh = match (pv, key) {
                    (Value::Array(pl), Some(_)) => Value::Array(
                        pl.iter()
                            .filter(|e| e.get("$patch").is_none())
                            .map(strip_directives)
                            .collect(),
                    ),
                    _ => strip_directives(pv),
                };
                t.insert(k.clone(), fresh);
            }
        }
    }
    Ok(())
}

fn merge_keyed_list(t: &mut Vec<Value>, p: &[Value], key: &str, ty: Ty) -> Result<(), String> {
    if p.iter()
        .any(|e| e.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *t = p
            .iter()
            .filter(|e| e.get("$patch").is_none())
            .map(strip_directives)
            .collect();
        return Ok(());
    }
    let mut original: Vec<Option<Value>> = std::mem::take(t).into_iter().map(Some).collect();
    let mut out = Vec::new();
    for pe in p {
        let Some(kv) = pe.get(key) else {
            // Elements without the key cannot be matched: appended as they are.
            out.push(strip_directives(pe));
            continue;
        };
        let idx = original
            .iter()
            .position(|o| o.as_ref().and_then(|o| o.get(key)) == Some(kv));
        let delete = pe.get("$patch").and_then(Value::as_str) == Some("delete");
        match idx {
            Some(i) => {
                let mut o = original[i].take().expect("present");
                if !delete {
                    merge_value(&mut o, pe, ty)?;
                    out.push(o);
                }
            }
            None if delete => {}
            None => {
                let mut fresh = Value::Object(Map::new());
                merge_value(&mut fresh, pe, ty)?;
                out.push(fresh);
            }
        }
    }
    out.extend(original.into_iter().flatten());
    *t = out;
    Ok(())
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn pointer_parts(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!("JSON pointer {path:?} must start with '/'"));
    };
    Ok(rest.split('/').map(unescape).collect())
}

fn parent_mut<'a>(
    doc: &'a mut Value,
    parts: &[String],
    path: &str,
) -> Result<&'a mut Value, String> {
    let mut cur = doc;
    for p in parts {
        cur = match cur {
            Value::Object(m) => m.get_mut(p.as_str()),
            Value::Array(a) => p.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| format!("path {path:?} does not exist"))?;
    }
    Ok(cur)
}

fn get(doc: &Value, path: &str) -> Result<Value, String> {
    let parts = pointer_parts(path)?;
    let mut cur = doc;
    for p in &parts {
        cur = match cur {
            Value::Object(m) => m.get(p.as_str()),
            Value::Array(a) => p.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        }
        .ok_or_else(|| format!("path {path:?} does not exist"))?;
    }
    Ok(cur.clone())
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let parts = pointer_parts(path)?;
    let (last, parents) = parts
        .split_last()
        .ok_or_else(|| "cannot remove the whole document".to_string())?;
    match parent_mut(doc, parents, path)? {
        Value::Object(m) => m
            .remove(last.as_str())
            .ok_or_else(|| format!("path {path:?} does not exist")),
        Value::Array(a) => {
            let i = last
                .parse::<usize>()
                .ok()
                .filter(|i| *i < a.len())
                .ok_or_else(|| format!("path {path:?} does not exist"))?;
            Ok(a.remove(i))
        }
        _ => Err(format!("path {path:?} does not exist")),
    }
}

fn add(doc: &mut Value, path: &str, value: Value, replace: bool) -> Result<(), String> {
    let parts = pointer_parts(path)?;
    let Some((last, parents)) = parts.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent_mut(doc, parents, path)? {
        Value::Object(m) => {
            if replace && !m.contains_key(last.as_str()) {
                return Err(format!("path {path:?} does not exist"));
            }
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" && !replace {
                a.push(value);
                return Ok(());
            }
            let i = last
                .parse::<usize>()
                .map_err(|_| format!("bad array index in {path:?}"))?;
            if replace {
                let slot = a
                    .get_mut(i)
                    .ok_or_else(|| format!("path {path:?} does not exist"))?;
                *slot = value;
            } else {
                if i > a.len() {
                    return Err(format!("index out of range in {path:?}"));
                }
                a.insert(i, value);
            }
            Ok(())
        }
        _ => Err(format!("path {path:?} does not exist")),
    }
}

/// Applies an RFC 6902 patch (a list of operations).
pub fn json6902(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let Value::Array(ops) = ops else {
        return Err("a JSON 6902 patch must be a list of operations".into());
    };
    for op in ops {
        let name = op.get("op").and_then(Value::as_str).unwrap_or_default();
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("operation {name:?} has no path"))?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| format!("operation {name:?} on {path:?} has no value"))
        };
        let from = || {
            op.get("from")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("operation {name:?} on {path:?} has no from"))
        };
        match name {
            "add" => add(doc, path, value()?, false)?,
            "replace" => add(doc, path, value()?, true)?,
            "remove" => {
                remove(doc, path)?;
            }
            "move" => {
                let v = remove(doc, from()?)?;
                add(doc, path, v, false)?;
            }
            "copy" => {
                let v = get(doc, from()?)?;
                add(doc, path, v, false)?;
            }
            "test" => {
                if get(doc, path)? != value()? {
                    return Err(format!("test operation on {path:?} failed"));
                }
            }
            other => return Err(format!("unknown JSON patch operation {other:?}")),
        }
    }
    Ok(())
}

/// A patch target: every non-empty field must match.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    group: Pattern,
    version: Pattern,
    kind: Pattern,
    name: Pattern,
    namespace: Pattern,
    label_selector: String,
    annotation_selector: String,
}

/// A target field: a regular expression that must match a whole value,
/// compiled once, when first needed (a selector is matched against every
/// resource).
#[derive(Debug, Clone, Default)]
struct Pattern {
    text: String,
    regex: OnceCell<Result<Regex, String>>,
}

impl Pattern {
    fn new(text: String) -> Pattern {
        Pattern {
            text,
            regex: OnceCell::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    fn regex(&self) -> Result<&Regex, String> {
        self.regex
            .get_or_init(|| {
                Regex::new(&format!("^(?:{})$", self.text))
                    .map_err(|e| format!("bad target pattern {:?}: {e}", self.text))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// True when the pattern is empty or matches `value`.
    fn admits(&self, value: &str) -> Result<bool, String> {
        Ok(self.is_empty() || self.regex()?.is_match(value))
    }
}

impl Selector {
    pub fn from_value(v: &Value) -> Result<Selector, String> {
        let Value::Object(m) = v else {
            return Err("target must be a map".into());
        };
        let mut s = Selector::default();
        for (k, val) in m {
            let text = match val {
                Value::String(x) => x.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            match k.as_str() {
                "group" => s.group = Pattern::new(text),
                "version" => s.version = Pattern::new(text),
                "kind" => s.kind = Pattern::new(text),
                "name" => s.name = Pattern::new(text),
                "namespace" => s.namespace = Pattern::new(text),
                "labelSelector" => s.label_selector = text,
                "annotationSelector" => s.annotation_selector = text,
                other => return Err(format!("target field {other:?} is not supported")),
            }
        }
        Ok(s)
    }

    pub fn matches(&self, r: &Resource) -> Result<bool, String> {
        // The original id, when the resource has been renamed.
        let org = r.prev.first();
        if !self.namespace.is_empty() {
            let re = self.namespace.regex()?;
            let cur = r.effective_namespace();
            let org = org.map_or(cur, ResId::effective_namespace);
            if !re.is_match(org) && !re.is_match(cur) {
                return Ok(false);
            }
        }
        if !self.name.is_empty() {
            let re = self.name.regex()?;
            let cur = r.name();
            let org = org.map_or(cur, |id| id.name.as_str());
            if !re.is_match(org) && !re.is_match(cur) {
                return Ok(false);
            }
        }
        let (group, version) = r.group_version();
        if !self.group.admits(group)?
            || !self.version.admits(version)?
            || !self.kind.admits(r.kind())?
        {
            return Ok(false);
        }
        let empty = Map::new();
        let metadata_map = |field| r.metadata_map(field).unwrap_or(&empty);
        if !self.label_selector.is_empty()
            && !label_selector_matches(&self.label_selector, metadata_map("labels"))?
        {
            return Ok(false);
        }
        if !self.annotation_selector.is_empty()
            && !label_selector_matches(&self.annotation_selector, metadata_map("annotations"))?
        {
            return Ok(false);
        }
        Ok(true)
    }
}

/// Splits a selector at top-level commas (not those inside parentheses).
fn split_requirements(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c)
            }
            ')' => {
                depth -= 1;
                cur.push(c)
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|x| x.trim().to_string())
        .filter(|x| !x.is_empty())
        .collect()
}

/// Kubernetes label selector syntax: `k=v`, `k==v`, `k!=v`, `k`, `!k`,
/// `k in (a,b)`, `k notin (a,b)`.
pub fn label_selector_matches(sel: &str, labels: &Map<String, Value>) -> Result<bool, String> {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    for req in split_requirements(sel) {
        let ok = if let Some(k) = req.strip_prefix('!') {
            get(k.trim()).is_none()
        } else if let Some((k, v)) = req.split_once("!=") {
            get(k.trim()) != Some(v.trim())
        } else if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
            get(k.trim()) == Some(v.trim())
        } else if let Some((k, set)) = split_set_op(&req, " notin ") {
            get(&k).is_none_or(|v| !set.iter().any(|s| s == v))
        } else if let Some((k, set)) = split_set_op(&req, " in ") {
            get(&k).is_some_and(|v| set.iter().any(|s| s == v))
        } else if req
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        {
            get(&req).is_some()
        } else {
            return Err(format!("cannot parse selector {sel:?}"));
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn split_set_op(req: &str, op: &str) -> Option<(String, Vec<String>)> {
    let (k, rest) = req.split_once(op)?;
    let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some((
        k.trim().to_string(),
        inner.split(',').map(|s| s.trim().to_string()).collect(),
    ))
}
