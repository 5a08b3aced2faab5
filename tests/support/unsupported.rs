//! One StageSet spec per row of the not-yet-supported table
//! (`validate::unsupported::NOT_SUPPORTED_YET`), each passing every
//! admission rule and setting exactly the row's field (plus what the rules
//! require with it), so that the only reason to refuse it is that row.

use serde_json::{Value, json};
use stageset_controller::validate::unsupported::NOT_SUPPORTED_YET;

/// `(field, spec, the message admission and the reconciler give)` for every
/// row; the stages read their artifact from `source`. Panics for a row
/// without an example, so a new row cannot go untested.
pub fn examples(source: &str) -> Vec<(&'static str, Value, String)> {
    let app = json!({"name": "app", "sourceRef": {"name": source}});
    NOT_SUPPORTED_YET
        .iter()
        .map(|row| {
            let spec = match row.field {
                "spec.kubeConfig.configMapRef" => {
                    json!({"stages": [app], "kubeConfig": {"configMapRef": {"name": "eks-identity"}}})
                }
                other => panic!("no example StageSet for the not-supported row {other}: add one"),
            };
            let path = row.field.replace("spec.stages[]", "spec.stages[1]");
            (
                row.field,
                spec,
                format!("{path} is not supported yet by this controller"),
            )
        })
        .collect()
}
