//! API compatibility: our types and generated CRDs against the upstream corpus of
//! real StageSet manifests and the upstream CRDs.
//!
//! Schema validation here is what the API server does before any webhook runs:
//! defaults applied, unknown fields rejected (kubectl's strict field validation),
//! the openAPIV3Schema checked with a JSON-schema validator, list-map keys kept
//! unique and the CRD's CEL rules (`x-kubernetes-validations`) evaluated.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use stageset_controller::api::{
    FleetRollout, ImageVerificationPolicy, StageInventory, StageLedger, StageSet, crd,
};

#[path = "support/corpus.rs"]
mod corpus;
use corpus::SCHEMA_LEVEL_INVALID;

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

fn load_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// The CRD schemas, keyed by kind.
fn schemas() -> BTreeMap<String, Value> {
    crd::all()
        .into_iter()
        .map(|c| {
            let schema = serde_json::to_value(
                c.spec.versions[0]
                    .schema
                    .as_ref()
                    .unwrap()
                    .open_api_v3_schema
                    .as_ref()
                    .unwrap(),
            )
            .unwrap();
            (c.spec.names.kind.clone(), schema)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// A validator with the API server's semantics for structural schemas.
// ---------------------------------------------------------------------------

/// Turns an openAPIV3Schema into a JSON Schema that rejects unknown fields.
fn strict_json_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                let converted = match k.as_str() {
                    "properties" => Value::Object(
                        v.as_object()
                            .unwrap()
                            .iter()
                            .map(|(name, s)| (name.clone(), strict_json_schema(s)))
                            .collect(),
                    ),
                    "items" | "additionalProperties" if v.is_object() => strict_json_schema(v),
                    k if k.starts_with("x-kubernetes-") => continue,
                    _ => v.clone(),
                };
                out.insert(k.clone(), converted);
            }
            let preserve = map
                .get("x-kubernetes-preserve-unknown-fields")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if map.contains_key("properties")
                && !map.contains_key("additionalProperties")
                && !preserve
            {
                out.insert("additionalProperties".into(), Value::Bool(false));
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// Applies schema defaults to absent fields, as the API server does on decode.
fn apply_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(obj) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (name, prop) in props {
                    if !obj.contains_key(name)
                        && let Some(default) = prop.get("default")
                    {
                        obj.insert(name.clone(), default.clone());
                    }
                    if let Some(child) = obj.get_mut(name) {
                        apply_defaults(prop, child);
                    }
                }
            }
            if let Some(extra) = schema.get("additionalProperties").filter(|s| s.is_object()) {
                for child in obj.values_mut() {
                    apply_defaults(extra, child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = schema.get("items") {
                for child in items {
                    apply_defaults(item, child);
                }
            }
        }
        _ => {}
    }
}

/// Checks list-map key uniqueness and CEL rules; returns human-readable errors.
fn check_extensions(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    if let Some(rules) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        for rule in rules {
            let expr = rule["rule"].as_str().unwrap();
            let program = cel::Program::compile(expr)
                .unwrap_or_else(|e| panic!("CEL rule {expr:?} does not compile: {e}"));
            let mut ctx = cel::Context::default();
            ctx.add_variable("self", value.clone()).unwrap();
            match program.execute(&ctx) {
                Ok(cel::Value::Bool(true)) => {}
                Ok(other) => errors.push(format!(
                    "{path}: {} (rule {expr:?} gave {other:?})",
                    rule["message"].as_str().unwrap_or("CEL rule failed")
                )),
                Err(e) => errors.push(format!("{path}: rule {expr:?} failed to evaluate: {e}")),
            }
        }
    }
    match value {
        Value::Object(obj) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (name, child) in obj {
                    if let Some(prop) = props.get(name) {
                        check_extensions(prop, child, &format!("{path}.{name}"), errors);
                    }
                }
            }
        }
        Value::Array(items) => {
            if schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") {
                let keys: Vec<&str> = schema["x-kubernetes-list-map-keys"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|k| k.as_str().unwrap())
                    .collect();
                let mut seen = BTreeSet::new();
                for item in items.iter() {
                    let key: Vec<String> = keys.iter().map(|k| item[*k].to_string()).collect();
                    if !seen.insert(key.clone()) {
                        errors.push(format!("{path}: Duplicate value: {key:?}"));
                    }
                }
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check_extensions(item_schema, item, &format!("{path}[{i}]"), errors);
                }
            }
        }
        _ => {}
    }
}

/// Validates an object against the CRD schema of its kind like the API server.
fn schema_errors(schemas: &BTreeMap<String, Value>, object: &Value) -> Vec<String> {
    let kind = object["kind"]
        .as_str()
        .expect("every corpus object has a kind");
    let schema = schemas
        .get(kind)
        .unwrap_or_else(|| panic!("no CRD for kind {kind}"));
    let mut object = object.clone();
    apply_defaults(schema, &mut object);
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&strict_json_schema(schema))
        .expect("the generated schema is a valid JSON schema");
    let mut errors: Vec<String> = validator
        .iter_errors(&object)
        .map(|e| format!("{}: {}", e.instance_path(), e))
        .collect();
    check_extensions(schema, &object, "", &mut errors);
    errors
}

// ---------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------

fn round_trip<T: DeserializeOwned + Serialize>(original: &Value, name: &str) {
    let typed: T = serde_json::from_value(original.clone())
        .unwrap_or_else(|e| panic!("{name} does not deserialize into our types: {e}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        &back, original,
        "{name}: serialize(deserialize(x)) lost or changed a field"
    );
}

#[test]
fn valid_corpus_deserializes_round_trips_and_passes_the_schema() {
    let schemas = schemas();
    let Some(reference) = corpus::reference("the valid upstream corpus against our schema") else {
        return;
    };
    let files = yaml_files(&reference.join("corpus/examples/valid"));
    assert_eq!(files.len(), 152, "the valid corpus has 152 files");
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for path in &files {
        let name = file_name(path);
        let object = load_yaml(path);
        let kind = object["kind"].as_str().unwrap().to_string();
        *by_kind.entry(kind.clone()).or_default() += 1;
        match kind.as_str() {
            "StageSet" => round_trip::<StageSet>(&object, &name),
            "StageInventory" => round_trip::<StageInventory>(&object, &name),
            "StageLedger" => round_trip::<StageLedger>(&object, &name),
            "FleetRollout" => round_trip::<FleetRollout>(&object, &name),
            "ImageVerificationPolicy" => round_trip::<ImageVerificationPolicy>(&object, &name),
            other => panic!("{name}: unexpected kind {other}"),
        }
        let errors = schema_errors(&schemas, &object);
        if !errors.is_empty() {
            failures.push(format!("{name}: {errors:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "valid files rejected by our schema:\n{}",
        failures.join("\n")
    );
    assert_eq!(by_kind["StageSet"], 144);
    assert_eq!(by_kind["FleetRollout"], 2);
    assert_eq!(by_kind["ImageVerificationPolicy"], 5);
    assert_eq!(by_kind["StageInventory"], 1);
}

#[test]
fn schema_level_invalid_corpus_is_rejected_and_the_rest_is_left_to_the_webhook() {
    let schemas = schemas();
    let Some(reference) = corpus::reference("the invalid upstream corpus against our schema")
    else {
        return;
    };
    let files = yaml_files(&reference.join("corpus/examples/invalid"));
    assert_eq!(files.len(), 142, "the invalid corpus has 142 files");
    let listed: BTreeSet<&str> = SCHEMA_LEVEL_INVALID.iter().copied().collect();
    let names: BTreeSet<String> = files.iter().map(|p| file_name(p)).collect();
    for name in &listed {
        assert!(
            names.contains(*name),
            "{name} is listed but not in the corpus"
        );
    }
    let mut wrong = Vec::new();
    for path in &files {
        let name = file_name(path);
        let errors = schema_errors(&schemas, &load_yaml(path));
        match (listed.contains(name.as_str()), errors.is_empty()) {
            (true, true) => wrong.push(format!("{name}: schema-level but our schema accepts it")),
            (false, false) => wrong.push(format!(
                "{name}: left to the webhook but our schema rejects it: {errors:?}"
            )),
            _ => {}
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Every property path the upstream CRDs declare exists in ours, with the same
/// type, and the same enum values where upstream has an enum.
#[test]
fn upstream_property_paths_exist_in_ours() {
    fn collect(schema: &Value, path: String, out: &mut BTreeMap<String, Value>) {
        out.insert(path.clone(), schema.clone());
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, child) in props {
                collect(child, format!("{path}.{name}"), out);
            }
        }
        if let Some(items) = schema.get("items") {
            collect(items, format!("{path}[]"), out);
        }
        if let Some(extra) = schema.get("additionalProperties").filter(|v| v.is_object()) {
            collect(extra, format!("{path}{{}}"), out);
        }
    }
    let ours = schemas();
    let mut checked = 0;
    let mut problems = Vec::new();
    let Some(reference) = corpus::reference("our CRDs against the upstream CRDs") else {
        return;
    };
    for path in yaml_files(&reference.join("upstream-crds")) {
        let upstream = load_yaml(&path);
        let kind = upstream["spec"]["names"]["kind"]
            .as_str()
            .unwrap()
            .to_string();
        let mut theirs = BTreeMap::new();
        collect(
            &upstream["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
            String::new(),
            &mut theirs,
        );
        let mut mine = BTreeMap::new();
        collect(&ours[&kind], String::new(), &mut mine);
        for (p, schema) in &theirs {
            checked += 1;
            let Some(our) = mine.get(p) else {
                problems.push(format!("{kind}: missing property path {p:?}"));
                continue;
            };
            if schema.get("type") != our.get("type") {
                problems.push(format!(
                    "{kind} {p}: type {:?} upstream, {:?} ours",
                    schema.get("type"),
                    our.get("type")
                ));
            }
            if let Some(theirs_enum) = schema.get("enum") {
                let a: BTreeSet<String> = theirs_enum
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_string())
                    .collect();
                let b: BTreeSet<String> = our
                    .get("enum")
                    .and_then(Value::as_array)
                    .map(|e| e.iter().map(|v| v.to_string()).collect())
                    .unwrap_or_default();
                if a != b {
                    problems.push(format!("{kind} {p}: enum {a:?} upstream, {b:?} ours"));
                }
            }
            for key in [
                "pattern", "minItems", "minimum", "maximum", "format", "default",
            ] {
                if let Some(v) = schema.get(key) {
                    let same = match (v, our.get(key)) {
                        (Value::Number(a), Some(Value::Number(b))) => a.as_f64() == b.as_f64(),
                        (a, b) => Some(a) == b,
                    };
                    if !same {
                        problems.push(format!(
                            "{kind} {p}: {key} {v} upstream, {:?} ours",
                            our.get(key)
                        ));
                    }
                }
            }
            if let Some(req) = schema.get("required").and_then(Value::as_array) {
                let ours_req: BTreeSet<&str> = our
                    .get("required")
                    .and_then(Value::as_array)
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                for r in req {
                    if !ours_req.contains(r.as_str().unwrap()) {
                        problems.push(format!("{kind} {p}: upstream requires {r}, ours does not"));
                    }
                }
            }
            for key in [
                "x-kubernetes-list-type",
                "x-kubernetes-list-map-keys",
                "x-kubernetes-validations",
            ] {
                if let Some(v) = schema.get(key)
                    && our.get(key) != Some(v)
                {
                    problems.push(format!(
                        "{kind} {p}: {key} {v} upstream, {:?} ours",
                        our.get(key)
                    ));
                }
            }
        }
    }
    assert!(checked > 800, "only {checked} paths checked");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn committed_crds_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/stageset-controller/files/crds");
    let rendered = crd::render_all();
    let mut stale = Vec::new();
    for (name, yaml) in &rendered {
        match std::fs::read_to_string(dir.join(name)) {
            Ok(committed) if &committed == yaml => {}
            Ok(_) => stale.push(format!("{name} differs")),
            Err(e) => stale.push(format!("{name}: {e}")),
        }
    }
    let expected: BTreeSet<&str> = rendered.iter().map(|(n, _)| n.as_str()).collect();
    for path in yaml_files(&dir) {
        let name = file_name(&path);
        if !expected.contains(name.as_str()) {
            stale.push(format!("{name} is committed but no type generates it"));
        }
    }
    assert!(
        stale.is_empty(),
        "charts/stageset-controller/files/crds is out of date ({}); run `cargo run -- crds`",
        stale.join(", ")
    );
}

/// The two CEL rules of the CRDs, exercised directly on both outcomes.
#[test]
fn cel_rules_of_the_crds() {
    let schemas = schemas();
    let stageset = |kube_config: Value| {
        json!({
            "apiVersion": "stages.metio.wtf/v1",
            "kind": "StageSet",
            "metadata": {"name": "a", "namespace": "b"},
            "spec": {"kubeConfig": kube_config, "stages": [{"name": "app", "sourceRef": {"name": "app"}}]}
        })
    };
    assert!(schema_errors(&schemas, &stageset(json!({"secretRef": {"name": "k"}}))).is_empty());
    assert!(schema_errors(&schemas, &stageset(json!({"configMapRef": {"name": "k"}}))).is_empty());
    let both = schema_errors(
        &schemas,
        &stageset(json!({"secretRef": {"name": "k"}, "configMapRef": {"name": "k"}})),
    );
    assert!(
        both.iter()
            .any(|e| e.contains("exactly one of spec.kubeConfig")),
        "{both:?}"
    );
    let neither = schema_errors(&schemas, &stageset(json!({})));
    assert!(
        neither
            .iter()
            .any(|e| e.contains("exactly one of spec.kubeConfig")),
        "{neither:?}"
    );

    let fleet = |extra: Value| {
        let mut spec = json!({"selector": {}, "waves": [{"name": "w", "selector": {}}]});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"apiVersion": "stages.metio.wtf/v1", "kind": "FleetRollout", "metadata": {"name": "f"}, "spec": spec})
    };
    assert!(
        schema_errors(&schemas, &fleet(json!({}))).is_empty(),
        "onRegression defaults to Halt"
    );
    assert!(
        schema_errors(
            &schemas,
            &fleet(json!({"onRegression": "Rollback", "previousVersion": "1.0.0"}))
        )
        .is_empty()
    );
    for bad in [
        json!({"onRegression": "Rollback"}),
        json!({"onRegression": "Rollback", "previousVersion": ""}),
    ] {
        let errors = schema_errors(&schemas, &fleet(bad));
        assert!(
            errors
                .iter()
                .any(|e| e.contains("previousVersion is required when onRegression is Rollback")),
            "{errors:?}"
        );
    }
}

#[test]
fn schema_defaults_and_absent_defaults() {
    let ss = &schemas()["StageSet"];
    let stage = &ss["properties"]["spec"]["properties"]["stages"]["items"];
    assert_eq!(
        stage["properties"]["conflictPolicy"]["properties"]["default"]["default"],
        "Fail"
    );
    let action = &stage["properties"]["actions"]["properties"]["pre"]["items"];
    assert!(
        action["properties"]["scope"].get("default").is_none(),
        "Action.scope has no default"
    );
    assert_eq!(
        schemas()["FleetRollout"]["properties"]["spec"]["properties"]["onRegression"]["default"],
        "Halt"
    );
}
