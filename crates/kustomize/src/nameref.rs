//! Name reference fix-up: after renames (prefix, suffix, hash), every field
//! that names another object in the build is pointed at its new name.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use crate::fieldspec::{self, walk};
use crate::resource::{Gvk, ResId, Resource};

/// What the pass needs of a resource, as a referrer and as a candidate
/// referral. The pass rewrites only the fields of objects that name other
/// objects, never an object's own id or `roleRef` kind, so this is taken
/// once, before any rewriting.
struct Candidate<'a> {
    /// Ids before renames, oldest first.
    prev: &'a [ResId],
    cur: ResId,
    prefixes: &'a [String],
    suffixes: &'a [String],
    /// The group and kind of `roleRef`, for a binding.
    role_ref: Option<Gvk>,
}

impl<'a> Candidate<'a> {
    /// Splits `r` into its object, to rewrite, and the rest, to read.
    fn of(r: &'a mut Resource) -> (&'a mut Value, Candidate<'a>) {
        let cur = r.cur_id();
        let role_ref = r.obj.get("roleRef").map(|rr| Gvk {
            group: rr
                .get("apiGroup")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
            version: String::new(),
            kind: rr
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
        });
        let Resource {
            obj,
            prev,
            prefixes,
            suffixes,
            ..
        } = r;
        let candidate = Candidate {
            prev,
            cur,
            prefixes,
            suffixes,
            role_ref,
        };
        (obj, candidate)
    }

    /// Every id the resource has had, the current one last.
    fn ids(&self) -> impl Iterator<Item = &ResId> {
        self.prev.iter().chain([&self.cur])
    }

    fn org_namespace(&self) -> &str {
        &self.prev.first().unwrap_or(&self.cur).namespace
    }
}

pub(crate) fn fix(ra: &mut [Resource]) -> Result<(), String> {
    let (mut objects, candidates): (Vec<&mut Value>, Vec<Candidate>) =
        ra.iter_mut().map(Candidate::of).unzip();
    let index = Index::new(&candidates);
    for rule in fieldspec::name_references() {
        for (obj, referrer) in objects.iter_mut().zip(&candidates) {
            for fs in &rule.referrers {
                if !referrer.cur.gvk.is_selected_by(&fs.gvk) {
                    continue;
                }
                let is_role_ref = fs.path.last().map(String::as_str) == Some("name")
                    && fs.path.len() >= 2
                    && fs.path[fs.path.len() - 2] == "roleRef";
                // The walk visits every element of a list (e.g. `subjects` or
                // `rules/resourceNames`) by itself.
                walk(obj, &fs.path, false, &mut |v| {
                    set(v, &rule.target, referrer, is_role_ref, &index)
                })?;
            }
        }
    }
    Ok(())
}

/// The candidates by every name they had (select only keeps name matches, so
/// looking them up first keeps the pass linear in the number of references),
/// and the original namespaces present (for the namespace pool rule).
struct Index<'a> {
    by_name: HashMap<&'a str, Vec<&'a Candidate<'a>>>,
    org_namespaces: HashSet<&'a str>,
}

impl<'a> Index<'a> {
    fn new(candidates: &'a [Candidate<'a>]) -> Self {
        let mut by_name: HashMap<&str, Vec<&Candidate>> = HashMap::new();
        for c in candidates {
            let mut names: Vec<&str> = c.ids().map(|id| id.name.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            for name in names {
                by_name.entry(name).or_default().push(c);
            }
        }
        Index {
            by_name,
            org_namespaces: candidates.iter().map(Candidate::org_namespace).collect(),
        }
    }

    fn named(&self, name: &str) -> Vec<&'a Candidate<'a>> {
        self.by_name.get(name).cloned().unwrap_or_default()
    }
}

fn set(
    v: &mut Value,
    target: &Gvk,
    referrer: &Candidate<'_>,
    is_role_ref: bool,
    index: &Index<'_>,
) -> Result<(), String> {
    match v {
        Value::String(old) => {
            let all = index.named(old);
            if let Some(c) = select(old, all, target, referrer, is_role_ref, false)? {
                *old = c.cur.name.clone();
            }
            Ok(())
        }
        Value::Object(m) => {
            let Some(old) = m.get("name").and_then(Value::as_str).map(str::to_string) else {
                return Ok(());
            };
            let named = index.named(&old);
            // kustomize narrows the pool to the original namespace when any
            // candidate came from it, else to the current namespace.
            let pool: Vec<&Candidate> = match m.get("namespace").and_then(Value::as_str) {
                None => named,
                Some(ns) if index.org_namespaces.contains(ns) => named
                    .into_iter()
                    .filter(|c| c.org_namespace() == ns)
                    .collect(),
                Some(ns) => named
                    .into_iter()
                    .filter(|c| c.cur.namespace == ns)
                    .collect(),
            };
            if let Some(c) = select(&old, pool, target, referrer, is_role_ref, true)? {
                if c.cur.name == old && c.cur.namespace.is_empty() {
                    return Ok(());
                }
                m.insert("name".into(), Value::String(c.cur.name.clone()));
                if !c.cur.namespace.is_empty() {
                    m.insert("namespace".into(), Value::String(c.cur.namespace.clone()));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// kustomize's selectReferral.
fn select<'a>(
    old: &str,
    pool: Vec<&'a Candidate<'a>>,
    target: &Gvk,
    referrer: &Candidate<'_>,
    is_role_ref: bool,
    with_namespace: bool,
) -> Result<Option<&'a Candidate<'a>>, String> {
    let mut c: Vec<&Candidate> = pool
        .into_iter()
        .filter(|c| c.ids().any(|id| id.name == old))
        .filter(|c| c.ids().any(|id| id.gvk.is_selected_by(target)))
        .filter(|c| match (&referrer.role_ref, is_role_ref) {
            (Some(rr), true) => c.ids().any(|id| id.gvk.is_selected_by(rr)),
            _ => true,
        })
        .filter(|c| {
            referrer.cur.gvk.is_cluster_scoped()
                || c.cur.gvk.is_cluster_scoped()
                || c.cur.gvk.kind == "ServiceAccount"
                || referrer.cur.ns_equals(&c.cur)
        })
        .collect();
    if c.len() == 1 {
        return Ok(Some(c[0]));
    }
    c.retain(|c| c.prefixes == referrer.prefixes && c.suffixes == referrer.suffixes);
    if c.len() == 1 {
        return Ok(Some(c[0]));
    }
    if c.is_empty() {
        return Ok(None);
    }
    let same = c.iter().all(|x| {
        x.cur.name == c[0].cur.name && (!with_namespace || x.cur.namespace == c[0].cur.namespace)
    });
    if same {
        return Ok(Some(c[0]));
    }
    let ids: Vec<String> = c.iter().map(|x| x.cur.to_string()).collect();
    Err(format!(
        "{}: found multiple possible referrals for {old:?}: {}",
        referrer.cur,
        ids.join(", ")
    ))
}
