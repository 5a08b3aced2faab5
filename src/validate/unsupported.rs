//! Spec fields whose behaviour this controller does not implement yet
//! (docs/decisions.md 15: nothing admitted is silently ignored).
//!
//! [`NOT_SUPPORTED_YET`] is the one table. A StageSet that sets one of its
//! fields to anything but the field's default is refused by admission with
//! `spec.<field> is not supported yet by this controller` and, when
//! admission was bypassed, fails its reconcile with `InvalidSpec` and the
//! same message before anything is fetched or applied. When a feature lands,
//! deleting its rows is the only change needed here.
//!
//! "Anything but the default": a present object, a non-empty list, `true`
//! for a bool. An empty list or an explicit `false` means what leaving the
//! field out means, so it is accepted.

use crate::api::{Stage, StageSet, StageSetSpec};

/// Where a row's field sits.
#[derive(Clone, Copy, Debug)]
pub enum Place {
    /// A field of `spec`.
    Spec(fn(&StageSetSpec) -> bool),
    /// A field of every stage (`spec.stages[]`).
    Stage(fn(&Stage) -> bool),
}

/// One field whose behaviour is not built yet.
#[derive(Clone, Copy, Debug)]
pub struct Unsupported {
    /// The field's path as users write it (`spec.kubeConfig`,
    /// `spec.stages[].promotion`).
    pub field: &'static str,
    /// What the field would do: the feature that is missing.
    pub feature: &'static str,
    /// Whether a spec (or stage) sets the field.
    pub place: Place,
}

/// The table (see the module documentation). Rows are checked in order and
/// the first field in use is reported; fields that need another field of
/// the table (migrations need `spec.version`) come before it, so a user
/// hears about the one they wrote.
pub const NOT_SUPPORTED_YET: &[Unsupported] = &[Unsupported {
    field: "spec.kubeConfig.configMapRef",
    feature: "cloud workload identity for remote clusters",
    place: Place::Spec(|s| {
        s.kube_config
            .as_ref()
            .is_some_and(|k| k.config_map_ref.is_some())
    }),
}];

/// The message for a field in use at `path`.
pub fn message(path: &str) -> String {
    format!("{path} is not supported yet by this controller")
}

/// Every use of a not-yet-supported field in `ss`, as concrete paths
/// (`spec.stages[2].promotion`), in table order, then stage order.
pub fn uses(ss: &StageSet) -> Vec<String> {
    uses_in(NOT_SUPPORTED_YET, ss)
}

fn uses_in(table: &[Unsupported], ss: &StageSet) -> Vec<String> {
    let mut found = Vec::new();
    for row in table {
        match row.place {
            Place::Spec(set) => {
                if set(&ss.spec) {
                    found.push(row.field.to_string());
                }
            }
            Place::Stage(set) => {
                let rest = row
                    .field
                    .strip_prefix("spec.stages[]")
                    .expect("stage rows name a spec.stages[] field");
                for (i, stage) in ss.spec.stages.iter().enumerate() {
                    if set(stage) {
                        found.push(format!("spec.stages[{i}]{rest}"));
                    }
                }
            }
        }
    }
    found
}

/// Refuses a StageSet that sets any not-yet-supported field; the message
/// names the first one found.
pub fn check(ss: &StageSet) -> Result<(), String> {
    match uses(ss).first() {
        Some(path) => Err(message(path)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn stageset(spec: Value) -> StageSet {
        serde_json::from_value(json!({
            "apiVersion": "stages.metio.wtf/v1",
            "kind": "StageSet",
            "metadata": {"name": "shop", "namespace": "team"},
            "spec": spec,
        }))
        .expect("decodes")
    }

    fn app(extra: Value) -> Value {
        let mut st = json!({"name": "app", "sourceRef": {"name": "app"}});
        for (k, v) in extra.as_object().unwrap() {
            st[k] = v.clone();
        }
        st
    }

    #[test]
    fn stage_rows_name_the_stage_index() {
        // No stage field is refused today; a table with one shows the paths.
        let table = [Unsupported {
            field: "spec.stages[].force",
            feature: "an example",
            place: Place::Stage(|s| s.force == Some(true)),
        }];
        let ss = stageset(json!({"stages": [
            app(json!({})),
            {"name": "two", "sourceRef": {"name": "b"}, "force": true},
        ]}));
        assert_eq!(uses_in(&table, &ss), ["spec.stages[1].force"]);
        assert_eq!(uses(&ss), Vec::<String>::new());
    }

    #[test]
    fn every_row_names_a_spec_field() {
        for row in NOT_SUPPORTED_YET {
            assert!(row.field.starts_with("spec."), "{}", row.field);
            match row.place {
                Place::Spec(_) => assert!(!row.field.contains('['), "{}", row.field),
                Place::Stage(_) => {
                    assert!(row.field.starts_with("spec.stages[]."), "{}", row.field)
                }
            }
        }
    }

    #[test]
    fn defaults_written_out_are_accepted() {
        let ss = stageset(json!({
            "stages": [app(json!({"actions": {"pre": [], "post": [], "onFailure": []}, "migrationAnchor": ""}))],
            "rollbackOnFailure": false,
            "onRollback": [],
            "updateWindows": [],
            "migrations": [],
        }));
        assert_eq!(uses(&ss), Vec::<String>::new());
        assert_eq!(check(&ss), Ok(()));
    }

    #[test]
    fn supported_fields_pass() {
        let ss = stageset(json!({
            "interval": "5m", "retryInterval": "1m", "timeout": "2m", "onTimeout": "Rollback",
            "serviceAccountName": "deployer", "suspend": false,
            "dependsOn": [{"name": "db", "minVersion": "1.2.0"}],
            "stages": [app(json!({"path": "./deploy", "prune": false, "force": true,
                "patches": [{"patch": "- op: add\n  path: /x\n  value: 1", "target": {"kind": "ConfigMap"}}],
                "postBuild": {"substitute": {"a": "b"}},
                "readyChecks": {"timeout": "1m", "disableWait": true}}))]
        }));
        assert_eq!(check(&ss), Ok(()));
    }

    #[test]
    fn the_first_use_is_reported_and_all_are_listed() {
        let ss = stageset(json!({
            "stages": [app(json!({"migrationAnchor": "db", "promotion": {"soak": "1m", "restartGate": {"onFailure": "Rollback", "checks": [
                {"name": "web", "selector": {"matchLabels": {"app": "web"}}}]}}}))],
            "errorBudget": {"source": {"prometheus": {"address": "http://p:9090", "query": "up"}},
                            "freezeThreshold": "0.1"},
            "kubeConfig": {"configMapRef": {"name": "kc"}},
            "version": {"value": "1.0.0"},
            "migrations": [{"name": "m", "to": "1.0.0"}],
            "migrationsSourceRef": {"sourceRef": {"name": "ladder"}},
        }));
        assert_eq!(uses(&ss), ["spec.kubeConfig.configMapRef"]);
        assert_eq!(
            check(&ss).unwrap_err(),
            "spec.kubeConfig.configMapRef is not supported yet by this controller"
        );
    }
}
