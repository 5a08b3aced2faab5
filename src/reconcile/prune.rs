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

use kube::ResourceExt;

use crate::api::keys;
use crate::api::reasons::StageOp;
use crate::config::InventoryMode;
use crate::reconcile::apply::{self, ObjectRef};
use crate::reconcile::error::StageFailure;
use crate::reconcile::inventory::{self, StageRecord, entry_id};
use crate::reconcile::stage::{StageDone, effective_sa};
use crate::reconcile::{Pass, teardown};

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

/// R21: deletes what left the StageSet, then trims every inventory to what the
/// stages render now.
pub(super) async fn prune_pass(
    pass: &mut Pass<'_>,
    previous: &BTreeMap<String, inventory::StageRecord>,
    done: &[StageDone],
) -> Result<(), StageFailure> {
    let env = pass.env;
    let namespace = pass.namespace();
    let ss_name = pass.ss.name_any();
    let mode = env.settings.inventory_mode;
    let desired: Vec<(String, Vec<apply::ObjectRef>)> = done
        .iter()
        .map(|d| (d.entry.name.clone(), d.rendered.clone()))
        .collect();
    // In `applyset` mode the live ApplySet membership counts as recorded too.
    let mut records = previous.clone();
    if mode == InventoryMode::ApplySet {
        for d in done {
            let members = applyset_members(pass, d)
                .await
                .map_err(|e| StageFailure::new(&d.entry.name, StageOp::Prune, e))?;
            let rec =
                records
                    .entry(d.entry.name.clone())
                    .or_insert_with(|| inventory::StageRecord {
                        stage: d.entry.name.clone(),
                        position: d.position as i32,
                        ..Default::default()
                    });
            for m in members {
                rec.entries
                    .entry(inventory::entry_id(&m))
                    .or_insert_with(|| m.version().to_string());
            }
        }
    }
    let plan = plan(&records, &desired);
    for (stage_name, objects) in &plan.prune {
        let stage = pass.ss.spec.stages.iter().find(|s| &s.name == stage_name);
        if stage.and_then(|s| s.prune) == Some(false) {
            tracing::info!(stageset = %pass.key(), stage = %stage_name, count = objects.len(), "prune: false, leaving objects that left the stage in place");
            continue;
        }
        let target = pass
            .target()
            .map_err(|e| StageFailure::new(stage_name, StageOp::Prune, e))?;
        let client = target
            .for_service_account(&namespace, effective_sa(&pass.ss, stage))
            .await
            .map_err(|e| StageFailure::new(stage_name, StageOp::Prune, e.to_string()))?;
        teardown::delete_objects(
            target,
            &client,
            objects,
            &ss_name,
            &namespace,
            env.settings.apply_concurrency,
        )
        .await
        .map_err(|e| StageFailure::new(stage_name, StageOp::Prune, e))?;
        let subjects: Vec<String> = objects.iter().map(apply::ObjectRef::subject).collect();
        tracing::info!(stageset = %pass.key(), stage = %stage_name, objects = %subjects.join(", "), "pruned");
    }
    // Trim the write-ahead inventories (they kept what was pending prune).
    for d in done.iter().filter(|d| d.recorded_extra) {
        inventory::write(
            &env.clients.controller(),
            &env.inventory_writes,
            &pass.ss,
            &d.entry.name,
            d.position,
            &d.rendered,
            env.settings.inventory_shard_cap,
            mode,
        )
        .await
        .map_err(|e| StageFailure::new(&d.entry.name, StageOp::RecordInventory, e))?;
    }
    // Stages removed from the spec: torn down as the StageSet, last first.
    for (stage_name, objects) in &plan.removed {
        let target = pass
            .target()
            .map_err(|e| StageFailure::new(stage_name, StageOp::Prune, e))?;
        let client = target
            .for_service_account(&namespace, effective_sa(&pass.ss, None))
            .await
            .map_err(|e| StageFailure::new(stage_name, StageOp::Prune, e.to_string()))?;
        teardown::delete_objects(
            target,
            &client,
            objects,
            &ss_name,
            &namespace,
            env.settings.apply_concurrency,
        )
        .await
        .map_err(|e| StageFailure::new(stage_name, StageOp::Prune, e))?;
        inventory::delete_stage(
            &env.clients.controller(),
            &env.inventory_writes,
            &namespace,
            &ss_name,
            stage_name,
        )
        .await
        .map_err(|e| StageFailure::new(stage_name, StageOp::Prune, e))?;
        env.metrics.forget_stage(&namespace, &ss_name, stage_name);
        tracing::info!(stageset = %pass.key(), stage = %stage_name, "removed stage torn down");
    }
    Ok(())
}

/// The live members of a stage's ApplySet (`applyset` mode): objects of the
/// recorded or rendered group-kinds labelled with the stage's ApplySet id.
async fn applyset_members(pass: &Pass<'_>, d: &StageDone) -> Result<Vec<apply::ObjectRef>, String> {
    let namespace = pass.namespace();
    let id = inventory::stage_applyset_id(&pass.ss.name_any(), &namespace, &d.entry.name);
    let stage = pass.ss.spec.stages.iter().find(|s| s.name == d.entry.name);
    let target = pass.target()?;
    let client = target
        .for_service_account(&namespace, effective_sa(&pass.ss, stage))
        .await
        .map_err(|e| e.to_string())?;
    let selector = format!("{}={id}", keys::APPLYSET_PART_OF_LABEL);
    let (found, errors) = inventory::list_labelled(target, &client, &d.rendered, &selector).await;
    if errors.is_empty() {
        Ok(found)
    } else {
        Err(format!("listing ApplySet members: {}", errors.join("; ")))
    }
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
