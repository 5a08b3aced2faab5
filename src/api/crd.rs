//! CustomResourceDefinitions generated from the Rust types.
//!
//! kube's derive produces the schemas; this module finishes them the way the API
//! server and `kubectl explain` expect: no `nullable` markers on optional fields
//! (an absent field is how "unset" is written), `apiVersion`/`kind`/`metadata`
//! declared at the root, and the files named like the upstream controller-gen
//! output so that the chart's `crds/` directory lines up with existing installs.

use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::{Value, json};

use super::{FleetRollout, ImageVerificationPolicy, StageInventory, StageLedger, StageSet};

/// Header written at the top of every generated file.
pub const GENERATED_HEADER: &str =
    "# Generated from src/api by `stageset-controller crds`. Do not edit by hand.\n";

/// The CRDs of all five kinds, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    [
        StageSet::crd(),
        StageInventory::crd(),
        StageLedger::crd(),
        FleetRollout::crd(),
        ImageVerificationPolicy::crd(),
    ]
    .into_iter()
    .map(finish)
    .collect()
}

/// The CRD of the kind with this plural name.
pub fn by_plural(plural: &str) -> Option<CustomResourceDefinition> {
    all().into_iter().find(|c| c.spec.names.plural == plural)
}

fn finish(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    let mut crd = crd;
    crd.spec.names.list_kind = Some(format!("{}List", crd.spec.names.kind));
    let mut value = serde_json::to_value(&crd).expect("a CRD always serializes");
    if let Some(versions) = value
        .pointer_mut("/spec/versions")
        .and_then(Value::as_array_mut)
    {
        for version in versions {
            if let Some(schema) = version.pointer_mut("/schema/openAPIV3Schema") {
                strip_nullable(schema);
                declare_root_fields(schema);
            }
        }
    }
    serde_json::from_value(value).expect("the finished CRD is still a CRD")
}

/// Removes `nullable: true` and the `null` member of enums that schemars adds for
/// `Option` fields. Absent fields are how our API says "unset".
fn strip_nullable(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            map.remove("nullable");
            if let Some(Value::Array(values)) = map.get_mut("enum") {
                values.retain(|v| !v.is_null());
            }
            for (key, child) in map.iter_mut() {
                match key.as_str() {
                    // Maps from property names to schemas.
                    "properties" | "patternProperties" => {
                        if let Value::Object(props) = child {
                            props.values_mut().for_each(strip_nullable);
                        }
                    }
                    // Defaults and examples are data, not schemas.
                    "default" | "example" | "enum" => {}
                    _ => strip_nullable(child),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nullable),
        _ => {}
    }
}

fn declare_root_fields(schema: &mut Value) {
    let Some(root) = schema.as_object_mut() else {
        return;
    };
    root.remove("title");
    let properties = root
        .entry("properties")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("root properties are an object");
    properties.insert(
        "apiVersion".into(),
        json!({
            "description": "The versioned schema of this representation of the object.",
            "type": "string"
        }),
    );
    properties.insert(
        "kind".into(),
        json!({
            "description": "The REST resource this object represents, in CamelCase.",
            "type": "string"
        }),
    );
    properties.insert("metadata".into(), json!({ "type": "object" }));
}

/// `<group>_<plural>.yaml`, as controller-gen names CRD files.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// The YAML document for one CRD, with the generated-file header.
pub fn to_yaml(crd: &CustomResourceDefinition) -> String {
    let body = serde_yaml_ng::to_string(crd).expect("a CRD always serializes to YAML");
    format!("{GENERATED_HEADER}---\n{body}")
}

/// Every CRD as `(file name, YAML)`.
pub fn render_all() -> Vec<(String, String)> {
    all().iter().map(|c| (file_name(c), to_yaml(c))).collect()
}

/// Writes every CRD into `dir` (created if missing) and returns the paths written.
pub fn write_all(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (name, yaml) in render_all() {
        let path = dir.join(name);
        std::fs::write(&path, yaml)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_kinds_with_the_documented_shape() {
        let crds = all();
        assert_eq!(crds.len(), 5);
        let find = |plural: &str| by_plural(plural).unwrap();

        let ss = find("stagesets");
        assert_eq!(ss.spec.scope, "Namespaced");
        assert_eq!(ss.spec.names.kind, "StageSet");
        assert_eq!(ss.spec.names.list_kind.as_deref(), Some("StageSetList"));
        assert!(
            ss.spec
                .names
                .short_names
                .as_ref()
                .is_none_or(|s| s.is_empty())
        );
        let v = &ss.spec.versions[0];
        assert!(v.served && v.storage);
        assert!(v.subresources.as_ref().unwrap().status.is_some());
        let cols: Vec<_> = v
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| (c.name.as_str(), c.type_.as_str(), c.json_path.as_str()))
            .collect();
        assert_eq!(
            cols,
            [
                (
                    "Ready",
                    "string",
                    r#".status.conditions[?(@.type=="Ready")].status"#
                ),
                (
                    "Status",
                    "string",
                    r#".status.conditions[?(@.type=="Ready")].message"#
                ),
                ("Age", "date", ".metadata.creationTimestamp"),
            ]
        );

        let inv = find("stageinventories");
        assert_eq!(inv.spec.scope, "Namespaced");
        assert!(inv.spec.versions[0].subresources.is_none());
        assert_eq!(
            inv.metadata.labels.as_ref().unwrap()["applyset.kubernetes.io/is-parent-type"],
            "true"
        );

        let ledger = find("stageledgers");
        assert_eq!(
            ledger.spec.names.short_names.as_deref(),
            Some(&["sledger".to_string()][..])
        );
        let completed = &ledger.spec.versions[0]
            .additional_printer_columns
            .as_ref()
            .unwrap()[0];
        assert_eq!(completed.name, "Completed");
        assert_eq!(completed.type_, "integer");
        assert_eq!(completed.priority, Some(1));

        let fleet = find("fleetrollouts");
        assert_eq!(fleet.spec.scope, "Cluster");
        assert_eq!(
            fleet.spec.names.short_names.as_deref(),
            Some(&["fleet".to_string()][..])
        );

        let ivp = find("imageverificationpolicies");
        assert_eq!(ivp.spec.scope, "Cluster");
        assert_eq!(
            ivp.spec.names.short_names.as_deref(),
            Some(&["ivp".to_string()][..])
        );
        assert!(ivp.spec.versions[0].subresources.is_none());
    }

    #[test]
    fn no_nullable_markers_remain() {
        for crd in all() {
            let text = serde_json::to_string(&crd).unwrap();
            assert!(!text.contains("\"nullable\""), "{}", crd.spec.names.plural);
            assert!(!text.contains("null]"), "{}", crd.spec.names.plural);
        }
    }
}
