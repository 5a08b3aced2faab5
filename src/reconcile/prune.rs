//! Pruning (delivery.md §2.12): after every stage of a pass is Ready, delete
//! what left the StageSet, once, across all stages.
//!
//! [`plan`] is pure: an object recorded for a stage but no longer rendered by it
//! is pruned only if no other stage renders it now (ownership moves between
//! stages without a delete); stages removed from the spec are torn down in
//! descending recorded position. The deletes themselves go through
//! [`crate::reconcile::teardown::delete_objects`], which only deletes objects
//! that still carry this StageSet's owner labels and are not annotated
//! `stages.metio.wtf/prune: disabled`.

use std::collections::{BTreeMap, BTreeSet};

use crate::reconcile::apply::ObjectRef;
use crate::reconcile::inventory::{StageRecord, entry_id};

/// What one pass must delete.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Per stage still in the spec (spec order): objects that left it.
    pub prune: Vec<(String, Vec<ObjectRef>)>,
    /// Stages no longer in the spec, in teardown order (descending recorded
    /// position, then name), with the objects no current stage claims.
    pub removed: Vec<(String, Vec<ObjectRef>)>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.prune.iter().all(|(_, o)| o.is_empty()) && self.removed.is_empty()
    }
}

/// Computes the plan from the recorded inventories and this pass's renders
/// (`desired`, in spec order).
pub fn plan(
    previous: &BTreeMap<String, StageRecord>,
    desired: &[(String, Vec<ObjectRef>)],
) -> Plan {
    let claimed: BTreeSet<String> = desired
        .iter()
        .flat_map(|(_, objs)| objs.iter().map(entry_id))
        .collect();
    let mut out = Plan::default();
    for (stage, _) in desired {
        let Some(record) = previous.get(stage) else {
            continue;
        };
        let gone: Vec<ObjectRef> = record
            .objects()
            .into_iter()
            .filter(|r| !claimed.contains(&entry_id(r)))
            .collect();
        if !gone.is_empty() {
            out.prune.push((stage.clone(), gone));
        }
    }
    let in_spec: BTreeSet<&str> = desired.iter().map(|(s, _)| s.as_str()).collect();
    let mut removed: Vec<&StageRecord> = previous
        .values()
        .filter(|r| !in_spec.contains(r.stage.as_str()))
        .collect();
    removed.sort_by(|a, b| b.position.cmp(&a.position).then(a.stage.cmp(&b.stage)));
    for record in removed {
        let objs = record
            .objects()
            .into_iter()
            .filter(|r| !claimed.contains(&entry_id(r)))
            .collect();
        out.removed.push((record.stage.clone(), objs));
    }
    out
}

/// Objects rendered by more than one stage of a pass: the subjects of those
/// in `candidate` that an earlier stage (`claimed`) already rendered.
pub fn duplicates(claimed: &BTreeMap<String, String>, candidate: &[ObjectRef]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    candidate
        .iter()
        .filter_map(|r| {
            let id = entry_id(r);
            let other = claimed.get(&id)?;
            seen.insert(id)
                .then(|| format!("{} (also in stage \"{other}\")", r.subject()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::inventory::parse_id;

    fn refs(ids: &[&str]) -> Vec<ObjectRef> {
        ids.iter().map(|id| parse_id(id, "v1").unwrap()).collect()
    }

    fn record(stage: &str, position: i32, ids: &[&str]) -> (String, StageRecord) {
        (
            stage.to_string(),
            StageRecord {
                stage: stage.to_string(),
                position,
                entries: ids
                    .iter()
                    .map(|i| (i.to_string(), "v1".to_string()))
                    .collect(),
            },
        )
    }

    #[test]
    fn objects_that_left_are_pruned() {
        let previous = BTreeMap::from([record("a", 0, &["n_x__ConfigMap", "n_y__ConfigMap"])]);
        let desired = vec![("a".to_string(), refs(&["n_x__ConfigMap"]))];
        let p = plan(&previous, &desired);
        assert_eq!(p.prune, vec![("a".to_string(), refs(&["n_y__ConfigMap"]))]);
        assert!(p.removed.is_empty());
    }

    #[test]
    fn moving_between_stages_never_deletes() {
        let previous = BTreeMap::from([
            record("a", 0, &["n_x__ConfigMap"]),
            record("b", 1, &["n_z__ConfigMap"]),
        ]);
        let desired = vec![
            ("a".to_string(), vec![]),
            ("b".to_string(), refs(&["n_x__ConfigMap", "n_z__ConfigMap"])),
        ];
        assert!(plan(&previous, &desired).is_empty());
    }

    #[test]
    fn removed_stages_in_reverse_position() {
        let previous = BTreeMap::from([
            record("first", 0, &["n_a__ConfigMap"]),
            record("second", 1, &["n_b__ConfigMap", "n_keep__ConfigMap"]),
            record("third", 2, &["n_c__ConfigMap"]),
            record("also-third", 2, &["n_d__ConfigMap"]),
        ]);
        let desired = vec![("kept".to_string(), refs(&["n_keep__ConfigMap"]))];
        let p = plan(&previous, &desired);
        let order: Vec<&str> = p.removed.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(order, ["also-third", "third", "second", "first"]);
        assert_eq!(
            p.removed[2].1,
            refs(&["n_b__ConfigMap"]),
            "claimed objects stay"
        );
    }

    #[test]
    fn malformed_entries_escape_pruning() {
        let previous = BTreeMap::from([record("a", 0, &["bogus", "n_y__ConfigMap"])]);
        let p = plan(&previous, &[("a".to_string(), vec![])]);
        assert_eq!(p.prune, vec![("a".to_string(), refs(&["n_y__ConfigMap"]))]);
    }

    #[test]
    fn duplicate_claims() {
        let claimed = BTreeMap::from([("n_x__ConfigMap".to_string(), "a".to_string())]);
        let d = duplicates(&claimed, &refs(&["n_x__ConfigMap", "n_y__ConfigMap"]));
        assert_eq!(d, ["ConfigMap/n/x (also in stage \"a\")"]);
    }
}
