//! One test per admission rule (api.md §11.2, §11.3) with its exact message,
//! and the evaluation order.

use serde_json::{Value, json};

use super::*;
use crate::api::{ImageVerificationPolicy, StageSet};

const NS: &str = "team";

fn stageset(spec: Value) -> StageSet {
    serde_json::from_value(json!({
        "apiVersion": "stages.metio.wtf/v1",
        "kind": "StageSet",
        "metadata": {"name": "shop", "namespace": NS},
        "spec": spec,
    }))
    .expect("the test spec decodes")
}

/// The message of the first failing rule (the rules alone: the
/// not-supported-yet table has its own tests in `unsupported`).
fn err(spec: Value) -> String {
    stageset_rules(&stageset(spec)).expect_err("the spec is refused")
}

fn ok(spec: Value) {
    if let Err(e) = stageset_rules(&stageset(spec)) {
        panic!("refused: {e}");
    }
}

fn app() -> Value {
    json!({"name": "app", "sourceRef": {"name": "app"}})
}

/// `stages: [app + extra]`.
fn one_stage(extra: Value) -> Value {
    let mut st = app();
    for (k, v) in extra.as_object().unwrap() {
        st[k] = v.clone();
    }
    json!({"stages": [st]})
}

fn wait(name: &str) -> Value {
    json!({"name": name, "wait": {"duration": "1s"}})
}

fn with(mut action: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        action[k] = v.clone();
    }
    action
}

fn prom() -> Value {
    json!({"prometheus": {"address": "http://prom:9090", "query": "up"}})
}

fn version() -> Value {
    json!({"value": "1.0.0"})
}

fn object(spec: Value) -> Value {
    json!({
        "apiVersion": "stages.metio.wtf/v1",
        "kind": "StageSet",
        "metadata": {"name": "shop", "namespace": NS},
        "spec": spec,
    })
}

/// Admission of a raw StageSet spec (enum rules need the raw JSON), as
/// `(allowed, code, message)`: 403 for a failed rule, 400 for a value that
/// does not decode.
fn admit(spec: Value) -> (bool, u64, String) {
    match stageset_object(&object(spec), Some(NS)) {
        Ok(()) => (true, 200, String::new()),
        Err(Invalid::Rule(m)) => (false, 403, m),
        Err(Invalid::Decode(m)) => (false, 400, m),
    }
}

fn denied(spec: Value) -> String {
    let (allowed, code, message) = admit(spec);
    assert!(!allowed, "admitted");
    assert_eq!(code, 403, "{message}");
    message
}

// --- WS-01 .. WS-10: stages and their actions ---------------------------------

#[test]
fn ws01_stage_names_unique() {
    assert_eq!(
        err(json!({"stages": [app(), app()]})),
        "stage name \"app\" is not unique; stage names must be unique within the StageSet"
    );
}

#[test]
fn ws02_producer_source_needs_api_version() {
    assert_eq!(
        err(
            json!({"stages": [{"name": "app", "sourceRef": {"kind": "JsonnetSnippet", "name": "orders"}}]})
        ),
        "stage \"app\" sourceRef: kind \"JsonnetSnippet\" is a producer reference and requires apiVersion (the API group identifies the producer's ExternalArtifact back-pointer)"
    );
    ok(
        json!({"stages": [{"name": "app", "sourceRef": {"kind": "JsonnetSnippet", "apiVersion": "jaas.metio.wtf/v1", "name": "orders"}}]}),
    );
    for kind in [
        "ExternalArtifact",
        "GitRepository",
        "OCIRepository",
        "Bucket",
    ] {
        ok(json!({"stages": [{"name": "app", "sourceRef": {"kind": kind, "name": "s"}}]}));
    }
}

#[test]
fn ws03_actions_set_exactly_one_verb() {
    assert_eq!(
        err(one_stage(json!({"actions": {"pre": [{"name": "a"}]}}))),
        "stage \"app\" action \"a\" (pre): exactly one of patch, http, wait, job, delete, apply must be set, found 0"
    );
    let two = with(
        wait("a"),
        json!({"delete": {"target": {"kind": "Job", "name": "j"}}}),
    );
    assert_eq!(
        err(one_stage(json!({"actions": {"onFailure": [two]}}))),
        "stage \"app\" action \"a\" (onFailure): exactly one of patch, http, wait, job, delete, apply must be set, found 2"
    );
}

#[test]
fn ws04_action_name_set() {
    assert_eq!(
        err(one_stage(json!({"actions": {"post": [wait("")]}}))),
        "stage \"app\" has an action with an empty name in post; action names are the idempotency-ledger key and must be set"
    );
}

#[test]
fn ws05_action_names_unique_across_phases() {
    assert_eq!(
        err(one_stage(
            json!({"actions": {"pre": [wait("x")], "onFailure": [wait("x")]}})
        )),
        "stage \"app\" has duplicate action name \"x\" (pre and onFailure); action names are the idempotency-ledger key and must be unique across pre, post, and onFailure"
    );
    assert_eq!(
        err(one_stage(
            json!({"actions": {"pre": [wait("x"), wait("x")]}})
        )),
        "stage \"app\" has duplicate action name \"x\" (pre and pre); action names are the idempotency-ledger key and must be unique across pre, post, and onFailure"
    );
}

#[test]
fn ws06_scope_known() {
    assert_eq!(
        denied(one_stage(
            json!({"actions": {"pre": [with(wait("a"), json!({"scope": "Bogus"}))]}})
        )),
        "stage \"app\" action \"a\" (pre): unknown scope \"Bogus\"; must be Revision, Version, or Lifetime"
    );
    // An unknown scope on onFailure is reported as unknown first.
    assert_eq!(
        denied(one_stage(
            json!({"actions": {"onFailure": [with(wait("a"), json!({"scope": "always"}))]}})
        )),
        "stage \"app\" action \"a\" (onFailure): unknown scope \"always\"; must be Revision, Version, or Lifetime"
    );
}

#[test]
fn ws07_no_scope_on_on_failure() {
    assert_eq!(
        err(one_stage(
            json!({"actions": {"onFailure": [with(wait("a"), json!({"scope": "Lifetime"}))]}})
        )),
        "stage \"app\" onFailure action \"a\" sets scope; scope is valid only on pre/post actions, and onFailure is ledger-exempt"
    );
}

#[test]
fn ws08_version_scope_needs_spec_version() {
    let spec =
        one_stage(json!({"actions": {"post": [with(wait("a"), json!({"scope": "Version"}))]}}));
    assert_eq!(
        err(spec.clone()),
        "stage \"app\" action \"a\" sets scope: Version but spec.version is unset; version-scoped actions require a version to key on"
    );
    let mut spec = spec;
    spec["version"] = version();
    ok(spec);
}

#[test]
fn ws09_completion_anchor_only_on_lifetime() {
    let anchor =
        json!({"completionAnchor": {"apiVersion": "v1", "kind": "ConfigMap", "name": "m"}});
    assert_eq!(
        err(one_stage(
            json!({"actions": {"pre": [with(wait("a"), anchor.clone())]}})
        )),
        "stage \"app\" action \"a\" (pre): completionAnchor is valid only on a scope: Lifetime action"
    );
    let mut lifetime = with(wait("a"), anchor);
    lifetime["scope"] = json!("Lifetime");
    ok(one_stage(json!({"actions": {"pre": [lifetime]}})));
}

#[test]
fn ws10_completion_anchor_complete() {
    let a = with(
        wait("a"),
        json!({"scope": "Lifetime", "completionAnchor": {"apiVersion": "v1", "kind": "ConfigMap", "name": ""}}),
    );
    assert_eq!(
        err(one_stage(json!({"actions": {"post": [a]}}))),
        "stage \"app\" action \"a\" (post): completionAnchor requires apiVersion, kind, and name"
    );
}

// --- WS-11 .. WS-15: onRollback -------------------------------------------------

fn on_rollback(actions: Value) -> Value {
    json!({"stages": [app()], "onRollback": actions})
}

#[test]
fn ws11_on_rollback_one_verb() {
    assert_eq!(
        err(on_rollback(json!([{"name": "bad"}]))),
        "onRollback action \"bad\": exactly one of patch, http, wait, job, delete, apply must be set, found 0"
    );
}

#[test]
fn ws12_on_rollback_name_set() {
    assert_eq!(
        err(on_rollback(json!([wait("")]))),
        "onRollback has an action with an empty name; action names identify the action in events and must be set"
    );
}

#[test]
fn ws13_on_rollback_names_unique() {
    assert_eq!(
        err(on_rollback(json!([wait("dup"), wait("dup")]))),
        "onRollback has duplicate action name \"dup\"; action names must be unique"
    );
}

#[test]
fn ws14_on_rollback_no_scope() {
    let msg = "onRollback action \"revert\" sets scope; scope is valid only on a stage's pre/post actions, and onRollback is ledger-exempt";
    assert_eq!(
        err(on_rollback(json!([with(
            wait("revert"),
            json!({"scope": "Lifetime"})
        )]))),
        msg
    );
    // Any value, known or not.
    assert_eq!(
        denied(on_rollback(json!([with(
            wait("revert"),
            json!({"scope": "Sometimes"})
        )]))),
        msg
    );
}

#[test]
fn ws15_on_rollback_no_completion_anchor() {
    let a = with(
        wait("revert"),
        json!({"completionAnchor": {"apiVersion": "v1", "kind": "ConfigMap", "name": "m"}}),
    );
    assert_eq!(
        err(on_rollback(json!([a]))),
        "onRollback action \"revert\" sets completionAnchor; it is valid only on a scope: Lifetime pre/post action"
    );
}

// --- WS-16 .. WS-34: migrations -------------------------------------------------

fn migration(name: &str, to: &str) -> Value {
    json!({"name": name, "to": to})
}

fn migrations(list: Value) -> Value {
    json!({"stages": [app()], "version": version(), "migrations": list})
}

fn migration_err(m: Value) -> String {
    err(migrations(json!([m])))
}

#[test]
fn ws16_inline_and_sourced_exclusive() {
    assert_eq!(
        err(
            json!({"stages": [app()], "version": version(), "migrations": [migration("m", "2.0.0")], "migrationsSourceRef": {"sourceRef": {"name": "ladder"}}})
        ),
        "spec.migrations and spec.migrationsSourceRef are mutually exclusive"
    );
}

#[test]
fn ws17_migrations_need_version() {
    assert_eq!(
        err(json!({"stages": [app()], "migrations": [migration("m", "2.0.0")]})),
        "migrations require spec.version"
    );
    assert_eq!(
        err(json!({"stages": [app()], "migrationsSourceRef": {"sourceRef": {"name": "ladder"}}})),
        "migrations require spec.version"
    );
    // An empty inline list configures nothing.
    ok(json!({"stages": [app()], "migrations": []}));
}

#[test]
fn ws18_sourced_ladder_same_namespace() {
    assert_eq!(
        err(
            json!({"stages": [app()], "version": version(), "migrationsSourceRef": {"sourceRef": {"name": "ladder", "namespace": "other"}}})
        ),
        "spec.migrationsSourceRef must reference a source in the StageSet's own namespace; cross-namespace migration sources are not allowed"
    );
    ok(
        json!({"stages": [app()], "version": version(), "migrationsSourceRef": {"sourceRef": {"name": "ladder", "namespace": NS}}}),
    );
}

#[test]
fn ws19_names_and_anchors_unique() {
    let spec = |stages: Value| json!({"stages": stages, "version": version(), "migrations": [migration("m", "2.0.0")]});
    assert_eq!(
        err(spec(json!([
            {"name": "deploy", "sourceRef": {"name": "a"}, "migrationAnchor": "db"},
            {"name": "verify", "sourceRef": {"name": "a"}, "migrationAnchor": "deploy"}
        ]))),
        "stage \"verify\" migrationAnchor \"deploy\" collides with another stage name or migrationAnchor"
    );
    assert_eq!(
        err(spec(json!([
            {"name": "deploy", "sourceRef": {"name": "a"}, "migrationAnchor": "verify"},
            {"name": "verify", "sourceRef": {"name": "a"}}
        ]))),
        "stage name \"verify\" collides with another stage name or migrationAnchor"
    );
    // Without migrations the anchors are not checked.
    ok(json!({"stages": [
        {"name": "deploy", "sourceRef": {"name": "a"}, "migrationAnchor": "verify"},
        {"name": "verify", "sourceRef": {"name": "a"}}
    ]}));
}

#[test]
fn ws20_ladder_size_cap() {
    let ladder: Vec<Value> = (0..201)
        .map(|i| migration(&format!("m{i}"), "2.0.0"))
        .collect();
    assert_eq!(
        err(migrations(json!(ladder))),
        "migration ladder has 201 migrations, exceeding the limit of 200"
    );
    let ladder: Vec<Value> = (0..200)
        .map(|i| migration(&format!("m{i}"), "2.0.0"))
        .collect();
    ok(migrations(json!(ladder)));
}

#[test]
fn ws21_to_ws25_migration_fields() {
    assert_eq!(
        migration_err(migration("", "2.0.0")),
        "a migration has an empty name"
    );
    assert_eq!(
        migration_err(migration("a", "")),
        "migration \"a\" has an empty to"
    );
    assert_eq!(
        migration_err(migration("a", "not-a-version")),
        "migration \"a\" has an invalid to \"not-a-version\": Invalid Semantic Version"
    );
    assert_eq!(
        migration_err(json!({"name": "a", "to": "2.0.0", "from": ">>bad"})),
        "migration \"a\" has an invalid from constraint \">>bad\": improper constraint: >>bad"
    );
    assert_eq!(
        migration_err(json!({"name": "a", "to": "2.0.0", "from": "1.0.0"})),
        "migration \"a\" from \"1.0.0\" is a bare version, which matches only that exact version; write \">=1.0.0\" (from this version onward) or \"=1.0.0\" (exactly that version) to make the intent explicit"
    );
    assert_eq!(
        migration_err(json!({"name": "a", "to": "2.0.0", "from": "v1.0.0"})),
        "migration \"a\" from \"v1.0.0\" is a bare version, which matches only that exact version; write \">=v1.0.0\" (from this version onward) or \"=v1.0.0\" (exactly that version) to make the intent explicit"
    );
    for from in [">=1.0.0, <2.0.0", "=1.0.0", "1.x", "1.*", "^1.2", "~1.2"] {
        ok(migrations(json!([{"name": "a", "to": "v2", "from": from}])));
    }
}

#[test]
fn ws26_actions_per_direction_cap() {
    let many: Vec<Value> = (0..101).map(|i| wait(&format!("a{i}"))).collect();
    assert_eq!(
        migration_err(json!({"name": "m", "to": "2.0.0", "actions": many})),
        "migration \"m\" has 101 actions, exceeding the limit of 100"
    );
    assert_eq!(
        migration_err(json!({"name": "m", "to": "2.0.0", "down": many})),
        "migration \"m\" has 101 down actions, exceeding the limit of 100"
    );
}

#[test]
fn ws27_to_ws32_migration_actions() {
    let m = |field: &str, actions: Value| {
        let mut m = migration("m", "2.0.0");
        m[field] = actions;
        migration_err(m)
    };
    assert_eq!(
        m("actions", json!([{"name": "noop"}])),
        "migration \"m\" action \"noop\": exactly one verb must be set, found 0"
    );
    assert_eq!(
        m("down", json!([{"name": "undo"}])),
        "migration \"m\" down action \"undo\": exactly one verb must be set, found 0"
    );
    assert_eq!(
        m("actions", json!([wait("")])),
        "migration \"m\" has an action with an empty name; action names are the idempotency-ledger key and must be set"
    );
    assert_eq!(
        m("down", json!([wait("")])),
        "migration \"m\" has a down action with an empty name; action names are the idempotency-ledger key and must be set"
    );
    assert_eq!(
        m("actions", json!([wait("dup"), wait("dup")])),
        "migration \"m\" has duplicate action name \"dup\"; action names are the idempotency-ledger key and must be unique"
    );
    // Up and down are separate name spaces.
    ok(migrations(
        json!([{"name": "m", "to": "2.0.0", "actions": [wait("x")], "down": [wait("x")]}]),
    ));
    assert_eq!(
        m(
            "down",
            json!([with(wait("undo"), json!({"scope": "Revision"}))])
        ),
        "migration \"m\" down action \"undo\" sets scope; scope is valid only on a stage's pre/post actions — a migration action is already keyed to its version transition by the migration ledger"
    );
    assert_eq!(
        m(
            "actions",
            json!([with(
                wait("a"),
                json!({"completionAnchor": {"apiVersion": "v1", "kind": "ConfigMap", "name": "x"}})
            )])
        ),
        "migration \"m\" action \"a\" sets completionAnchor; it is valid only on a scope: Lifetime pre/post action"
    );
    assert_eq!(
        m("actions", json!([with(wait("a"), json!({"retries": 11}))])),
        "migration \"m\" action \"a\" has retries 11; it must be between 0 and 10"
    );
    ok(migrations(
        json!([{"name": "m", "to": "2.0.0", "actions": [with(wait("a"), json!({"retries": 10}))]}]),
    ));
}

#[test]
fn ws33_migration_names_unique() {
    assert_eq!(
        err(migrations(json!([
            migration("cleanup", "2.0.0"),
            migration("cleanup", "3.0.0")
        ]))),
        "duplicate migration name \"cleanup\"; names are the idempotency-ledger key and must be unique"
    );
}

#[test]
fn ws34_migration_anchor_known() {
    assert_eq!(
        migration_err(json!({"name": "m", "to": "2.0.0", "stage": "nope"})),
        "migration \"m\" anchors to unknown stage or anchor \"nope\""
    );
    let spec = json!({
        "stages": [{"name": "app", "sourceRef": {"name": "a"}, "migrationAnchor": "schema"}],
        "version": version(),
        "migrations": [{"name": "m", "to": "2.0.0", "stage": "schema"}, {"name": "n", "to": "3.0.0", "stage": "app"}]
    });
    ok(spec);
}

#[test]
fn ladder_validation_is_exposed_for_sourced_ladders() {
    let ladder: Vec<crate::api::Migration> =
        serde_json::from_value(json!([migration("a", "1.0.0"), migration("a", "2.0.0")])).unwrap();
    assert_eq!(
        validate_ladder(&ladder).unwrap_err(),
        "duplicate migration name \"a\"; names are the idempotency-ledger key and must be unique"
    );
    assert_eq!(validate_migration(&ladder[0]), Ok(()));
}

// --- WS-35 .. WS-41 ---------------------------------------------------------------

#[test]
fn ws35_version_exactly_one_source() {
    let spec = |v: Value| json!({"stages": [app()], "version": v});
    assert_eq!(
        err(spec(json!({"approvalMode": "Always"}))),
        "spec.version must set exactly one of value, fromObject, or fromArtifact, found 0"
    );
    assert_eq!(
        err(spec(
            json!({"value": "1.0.0", "fromArtifact": {"stage": "app", "path": "VERSION"}})
        )),
        "spec.version must set exactly one of value, fromObject, or fromArtifact, found 2"
    );
    assert_eq!(
        err(spec(json!({"value": ""}))),
        "spec.version must set exactly one of value, fromObject, or fromArtifact, found 0"
    );
    ok(spec(
        json!({"fromObject": {"kind": "ConfigMap", "name": "v"}}),
    ));
    ok(spec(
        json!({"fromObject": {"kind": "ConfigMap", "name": "v", "fieldPath": "{.data.version}"}}),
    ));
    assert_eq!(
        err(spec(
            json!({"fromObject": {"kind": "ConfigMap", "name": "v", "fieldPath": "{.data[}"}})
        )),
        "spec.version.fromObject.fieldPath is not a valid JSONPath: \"{.data[}\": expected an index, a slice, '*', a quoted name or a filter at offset 7"
    );
}

#[test]
fn ws36_ws37_decryption() {
    assert_eq!(
        denied(json!({"stages": [app()], "decryption": {"provider": "vault"}})),
        "spec.decryption.provider must be \"sops\", got \"vault\""
    );
    assert_eq!(
        err(
            json!({"stages": [app()], "decryption": {"provider": "sops", "secretRef": {"name": ""}}})
        ),
        "spec.decryption.secretRef.name must be set when secretRef is given"
    );
    ok(json!({"stages": [app()], "decryption": {"provider": "sops"}}));
}

#[test]
fn ws38_to_ws41_kube_config() {
    let spec = |kc: Value| json!({"stages": [app()], "kubeConfig": kc});
    assert_eq!(
        err(spec(
            json!({"secretRef": {"name": "a"}, "configMapRef": {"name": "b"}})
        )),
        "spec.kubeConfig must set exactly one of secretRef or configMapRef, not both"
    );
    assert_eq!(
        err(spec(json!({}))),
        "spec.kubeConfig must set one of secretRef or configMapRef"
    );
    assert_eq!(
        err(spec(json!({"secretRef": {"name": ""}}))),
        "spec.kubeConfig.secretRef.name must be set"
    );
    assert_eq!(
        err(spec(json!({"configMapRef": {"name": ""}}))),
        "spec.kubeConfig.configMapRef.name must be set"
    );
    ok(spec(
        json!({"secretRef": {"name": "remote", "key": "value"}}),
    ));
}

// --- WS-42 .. WS-48: error budgets -------------------------------------------

fn budget(source: Value, extra: Value) -> Value {
    let mut eb = json!({"source": source, "freezeThreshold": "0.1"});
    for (k, v) in extra.as_object().unwrap() {
        eb[k] = v.clone();
    }
    json!({"stages": [app()], "errorBudget": eb})
}

#[test]
fn ws42_to_ws45_metric_sources() {
    let at = "spec.errorBudget.source";
    let cases = [
        (
            json!({}),
            format!("{at} must set exactly one of prometheus or webhook, found 0"),
        ),
        (
            json!({"prometheus": {"address": "http://p", "query": "q"}, "webhook": {"url": "http://w", "jsonPath": "{$}"}}),
            format!("{at} must set exactly one of prometheus or webhook, found 2"),
        ),
        (
            json!({"prometheus": {"address": "", "query": "q"}}),
            format!("{at}.prometheus.address must be set"),
        ),
        (
            json!({"prometheus": {"address": "http://p", "query": ""}}),
            format!("{at}.prometheus.query must be set"),
        ),
        (
            json!({"prometheus": {"address": "http://p", "query": "q", "secretRef": {"name": ""}}}),
            format!("{at}.prometheus.secretRef.name must be set when secretRef is given"),
        ),
        (
            json!({"webhook": {"url": "", "jsonPath": "{$}"}}),
            format!("{at}.webhook.url must be set"),
        ),
        (
            json!({"webhook": {"url": "http://w", "jsonPath": ""}}),
            format!("{at}.webhook.jsonPath must be set"),
        ),
        (
            json!({"webhook": {"url": "http://w", "jsonPath": "{$}", "secretRef": {"name": ""}}}),
            format!("{at}.webhook.secretRef.name must be set when secretRef is given"),
        ),
        (
            json!({"webhook": {"url": "http://w", "jsonPath": "{.items[?(@.a == )]}"}}),
            format!(
                "{at}.webhook.jsonPath is not a valid JSONPath: \"{{.items[?(@.a == )]}}\": a filter operand is missing at offset 17"
            ),
        ),
    ];
    for (source, want) in cases {
        assert_eq!(err(budget(source, json!({}))), want);
    }
    ok(budget(
        json!({"webhook": {"url": "http://w", "jsonPath": "{$.v}", "secretRef": {"name": "t"}}}),
        json!({}),
    ));
}

#[test]
fn ws46_ws47_thresholds() {
    assert_eq!(
        err(budget(prom(), json!({"freezeThreshold": "x"}))),
        "spec.errorBudget.freezeThreshold \"x\" is not a number"
    );
    assert_eq!(
        err(budget(prom(), json!({"resumeThreshold": "y"}))),
        "spec.errorBudget.resumeThreshold \"y\" is not a number"
    );
    assert_eq!(
        err(budget(prom(), json!({"resumeThreshold": "0.05"}))),
        "spec.errorBudget.resumeThreshold (0.05) must be >= freezeThreshold (0.1)"
    );
    ok(budget(prom(), json!({"resumeThreshold": "0.1"})));
    ok(budget(prom(), json!({"resumeThreshold": "2e-1"})));
    // Per stage, after the rollout-wide budget.
    let mut spec = one_stage(
        json!({"name": "prod", "errorBudget": {"source": prom(), "freezeThreshold": "0.1", "resumeThreshold": "0.05"}}),
    );
    assert_eq!(
        err(spec.clone()),
        "stage \"prod\" errorBudget.resumeThreshold (0.05) must be >= freezeThreshold (0.1)"
    );
    spec["errorBudget"] = json!({"source": {}, "freezeThreshold": "0.1"});
    assert_eq!(
        err(spec),
        "spec.errorBudget.source must set exactly one of prometheus or webhook, found 0"
    );
}

#[test]
fn ws48_budget_on_source_error() {
    assert_eq!(
        denied(budget(prom(), json!({"onSourceError": "Ignore"}))),
        "spec.errorBudget.onSourceError must be Allow or Hold, got \"Ignore\""
    );
    assert_eq!(
        denied(one_stage(
            json!({"errorBudget": {"source": prom(), "freezeThreshold": "1", "onSourceError": "hold"}})
        )),
        "stage \"app\" errorBudget.onSourceError must be Allow or Hold, got \"hold\""
    );
}

// --- WS-49 .. WS-62: promotion ------------------------------------------------

fn promotion(p: Value) -> Value {
    one_stage(json!({"promotion": p}))
}

fn selector() -> Value {
    json!({"matchLabels": {"app": "api"}})
}

#[test]
fn ws49_ws50_fast_track() {
    assert_eq!(
        err(promotion(
            json!({"fastTrack": {"source": prom(), "max": "0.01"}})
        )),
        "stage \"app\" promotion.fastTrack requires a soak to shorten"
    );
    assert_eq!(
        err(promotion(
            json!({"soak": "0s", "fastTrack": {"source": prom(), "max": "0.01"}})
        )),
        "stage \"app\" promotion.fastTrack requires a soak to shorten"
    );
    assert_eq!(
        err(promotion(
            json!({"soak": "1h", "fastTrack": {"source": {}, "max": "0.01"}})
        )),
        "stage \"app\" promotion.fastTrack.source must set exactly one of prometheus or webhook, found 0"
    );
    assert_eq!(
        err(promotion(
            json!({"soak": "1h", "fastTrack": {"source": prom(), "max": "fast"}})
        )),
        "stage \"app\" promotion.fastTrack.max \"fast\" is not a number"
    );
    ok(promotion(
        json!({"soak": "1h", "fastTrack": {"source": prom(), "max": "0.01", "after": "10m"}}),
    ));
}

#[test]
fn ws51_to_ws57_restart_and_event_gates() {
    for gate in ["restartGate", "eventGate"] {
        let check = |extra: Value| {
            let mut c = json!({"name": "api", "selector": selector()});
            if gate == "eventGate" {
                c["reasons"] = json!(["BackOff"]);
            }
            for (k, v) in extra.as_object().unwrap() {
                c[k] = v.clone();
            }
            c
        };
        let spec = |g: Value| promotion(json!({gate: g}));
        assert_eq!(
            denied(spec(
                json!({"onFailure": "Abort", "checks": [check(json!({}))]})
            )),
            format!(
                "stage \"app\" promotion.{gate}.onFailure must be Hold or Rollback, got \"Abort\""
            )
        );
        assert_eq!(
            err(spec(json!({"checks": []}))),
            format!("stage \"app\" promotion.{gate} must declare at least one check")
        );
        assert_eq!(
            err(spec(json!({"checks": [check(json!({"name": ""}))]}))),
            format!("stage \"app\" promotion.{gate} has a check with an empty name")
        );
        assert_eq!(
            err(spec(
                json!({"checks": [check(json!({})), check(json!({}))]})
            )),
            format!("stage \"app\" promotion.{gate} has duplicate check name \"api\"")
        );
        assert_eq!(
            err(spec(
                json!({"checks": [check(json!({"selector": {"matchExpressions": [{"key": "app", "operator": "In"}]}}))]})
            )),
            format!(
                "stage \"app\" promotion.{gate} check \"api\" has an invalid selector: values: Invalid value: []string{{}}: for 'in', 'notin' operators, values set can't be empty"
            )
        );
        assert_eq!(
            err(spec(json!({"checks": [check(json!({"selector": {}}))]}))),
            format!(
                "stage \"app\" promotion.{gate} check \"api\" selector must match at least one label"
            )
        );
        assert_eq!(
            denied(spec(
                json!({"checks": [check(json!({"onFailure": "rollback"}))]})
            )),
            format!(
                "stage \"app\" promotion.{gate} check \"api\" onFailure must be Hold or Rollback, got \"rollback\""
            )
        );
        ok(spec(
            json!({"onFailure": "Rollback", "checks": [check(json!({"onFailure": "Hold", "maxRestarts": 2}))]}),
        ));
    }
}

#[test]
fn ws56_event_check_reasons() {
    assert_eq!(
        err(promotion(
            json!({"eventGate": {"checks": [{"name": "api", "selector": selector(), "reasons": []}]}})
        )),
        "stage \"app\" promotion.eventGate check \"api\" must name at least one event reason"
    );
}

#[test]
fn ws58_to_ws62_analysis() {
    let check = |extra: Value| {
        let mut c = json!({"name": "err", "source": prom(), "threshold": {"max": "0.05"}});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let spec = |a: Value| promotion(json!({"analysis": a}));
    assert_eq!(
        err(spec(json!({"checks": []}))),
        "stage \"app\" promotion.analysis must declare at least one check"
    );
    assert_eq!(
        err(spec(json!({"checks": [check(json!({"name": ""}))]}))),
        "stage \"app\" promotion.analysis has a check with an empty name"
    );
    assert_eq!(
        err(spec(
            json!({"checks": [check(json!({})), check(json!({}))]})
        )),
        "stage \"app\" promotion.analysis has duplicate check name \"err\""
    );
    assert_eq!(
        err(spec(
            json!({"checks": [check(json!({"source": {"webhook": {"url": "http://w", "jsonPath": ""}}}))]})
        )),
        "stage \"app\" promotion.analysis check \"err\" source.webhook.jsonPath must be set"
    );
    assert_eq!(
        err(spec(json!({"checks": [check(json!({"threshold": {}}))]}))),
        "stage \"app\" promotion.analysis check \"err\" must set at least one of threshold.min or threshold.max"
    );
    assert_eq!(
        err(spec(
            json!({"checks": [check(json!({"threshold": {"min": "low"}}))]})
        )),
        "stage \"app\" check \"err\" threshold.min \"low\" is not a number"
    );
    assert_eq!(
        err(spec(
            json!({"checks": [check(json!({"threshold": {"min": "0", "max": "high"}}))]})
        )),
        "stage \"app\" check \"err\" threshold.max \"high\" is not a number"
    );
    assert_eq!(
        denied(spec(
            json!({"checks": [check(json!({}))], "onFailure": "Abort"})
        )),
        "stage \"app\" promotion.analysis.onFailure must be Hold or Rollback, got \"Abort\""
    );
    assert_eq!(
        denied(spec(
            json!({"checks": [check(json!({}))], "onSourceError": "Fail"})
        )),
        "stage \"app\" promotion.analysis.onSourceError must be Hold or Allow, got \"Fail\""
    );
    ok(spec(
        json!({"checks": [check(json!({}))], "onFailure": "Rollback", "onSourceError": "Allow", "failureLimit": 2}),
    ));
}

#[test]
fn promotion_gates_run_in_order() {
    // fastTrack is checked before the gates, restartGate before analysis.
    assert_eq!(
        err(promotion(json!({
            "fastTrack": {"source": prom(), "max": "1"},
            "restartGate": {"checks": []},
            "analysis": {"checks": []}
        }))),
        "stage \"app\" promotion.fastTrack requires a soak to shorten"
    );
    assert_eq!(
        err(promotion(
            json!({"restartGate": {"checks": []}, "eventGate": {"checks": []}, "analysis": {"checks": []}})
        )),
        "stage \"app\" promotion.restartGate must declare at least one check"
    );
}

// --- WS-63 .. WS-65: readyChecks ------------------------------------------------

fn ready(rc: Value) -> Value {
    one_stage(json!({"readyChecks": rc}))
}

#[test]
fn ws63_ready_check_references() {
    assert_eq!(
        err(ready(
            json!({"checks": [{"kind": "Deployment", "name": "a"}, {"kind": "", "name": "b"}]})
        )),
        "stage \"app\" readyChecks.checks[1]: kind and name are required"
    );
    assert_eq!(
        err(ready(
            json!({"checks": [{"kind": "Deployment", "name": ""}]})
        )),
        "stage \"app\" readyChecks.checks[0]: kind and name are required"
    );
}

#[test]
fn ws64_ready_expr_api_version() {
    assert_eq!(
        err(ready(
            json!({"exprs": [{"apiVersion": "a/b/c", "kind": "X", "current": "true"}]})
        )),
        "stage \"app\" readyChecks.exprs[0] apiVersion \"a/b/c\": unexpected GroupVersion string: a/b/c"
    );
    assert_eq!(
        err(ready(
            json!({"exprs": [{"apiVersion": "", "kind": "X", "current": "true"}]})
        )),
        "stage \"app\" readyChecks.exprs[0] apiVersion \"\": apiVersion is required"
    );
}

#[test]
fn ws65_ready_exprs_compile_to_bool() {
    let e = err(ready(
        json!({"exprs": [{"apiVersion": "apps/v1", "kind": "Deployment", "current": "this is not ( valid CEL"}]}),
    ));
    assert!(
        e.starts_with(
            "stage \"app\" readyChecks.exprs[0] current \"this is not ( valid CEL\": compile CEL: "
        ),
        "{e}"
    );
    let e = err(ready(
        json!({"exprs": [{"apiVersion": "apps/v1", "kind": "Deployment", "current": "true", "failed": "@@"}]}),
    ));
    assert!(
        e.starts_with("stage \"app\" readyChecks.exprs[0] failed \"@@\": compile CEL: "),
        "{e}"
    );
    assert_eq!(
        err(ready(
            json!({"exprs": [{"apiVersion": "apps/v1", "kind": "Deployment", "inProgress": "1 + 2"}]})
        )),
        "stage \"app\" readyChecks.exprs[0] inProgress \"1 + 2\": CEL \"1 + 2\" must evaluate to bool, but its result type is int"
    );
    // The reconciler's compiler refuses an empty expression and an empty
    // kind, so admission does too (upstream skipped an empty expression).
    assert_eq!(
        err(ready(
            json!({"exprs": [{"apiVersion": "apps/v1", "kind": "Deployment", "current": ""}]})
        )),
        "stage \"app\" readyChecks.exprs[0] current \"\": compile CEL: the expression is empty"
    );
    assert_eq!(
        err(ready(
            json!({"exprs": [{"apiVersion": "apps/v1", "kind": " ", "current": "true"}]})
        )),
        "stage \"app\" readyChecks.exprs[0] kind \" \": kind is required"
    );
    ok(ready(json!({"exprs": [{
        "apiVersion": "apps/v1", "kind": "Deployment",
        "current": "status.conditions.exists(c, c.type == 'Available' && c.status == 'True')",
        "inProgress": "has(status.observedGeneration) && status.observedGeneration != metadata.generation",
        "failed": "status.conditions.exists(c, c.type == 'Progressing' && c.reason == 'ProgressDeadlineExceeded')"
    }]})));
}

// --- WS-66 .. WS-74 ----------------------------------------------------------------

#[test]
fn ws66_on_timeout() {
    assert_eq!(
        denied(json!({"stages": [app()], "onTimeout": "Abort"})),
        "spec.onTimeout must be Hold or Rollback, got \"Abort\""
    );
    assert_eq!(
        denied(one_stage(json!({"onTimeout": "hold"}))),
        "stage \"app\" onTimeout must be Hold or Rollback, got \"hold\""
    );
    ok(json!({"stages": [with(app(), json!({"onTimeout": "Rollback"}))], "onTimeout": "Hold"}));
}

#[test]
fn ws67_ws68_depends_on() {
    let spec = |d: Value| json!({"stages": [app()], "dependsOn": d});
    assert_eq!(
        err(spec(json!([{"name": "db"}, {"name": ""}]))),
        "spec.dependsOn[1]: name is required"
    );
    assert_eq!(
        err(spec(json!([{"name": "db", "minVersion": "two"}]))),
        "spec.dependsOn[0] (db): minVersion \"two\" is not a valid semver: Invalid Semantic Version"
    );
    ok(spec(
        json!([{"name": "db", "namespace": "data", "minVersion": "v1.2"}]),
    ));
}

fn window(w: Value) -> Value {
    json!({"stages": [app()], "updateWindows": [w]})
}

#[test]
fn ws69_to_ws72_window_shapes() {
    let cases = [
        (
            json!({"type": "Deny", "schedule": "0 2 * * *", "duration": "1h", "from": "2026-12-24T00:00:00Z"}),
            "update window is both recurring (schedule/duration) and absolute (from/to)",
        ),
        (
            json!({"type": "Deny"}),
            "update window sets neither a schedule+duration nor from+to",
        ),
        (
            json!({"type": "Deny", "from": "2026-12-24T00:00:00Z"}),
            "absolute update window requires both from and to",
        ),
        (
            json!({"type": "Deny", "to": "2026-12-24T00:00:00Z"}),
            "absolute update window requires both from and to",
        ),
        (
            json!({"type": "Deny", "from": "2026-12-24T00:00:00Z", "to": "2026-12-24T00:00:00Z"}),
            "absolute update window to must be after from",
        ),
        (
            json!({"type": "Allow", "schedule": "0 2 * * *"}),
            "recurring update window requires both schedule and duration",
        ),
        (
            json!({"type": "Allow", "duration": "1h"}),
            "recurring update window requires both schedule and duration",
        ),
        (
            json!({"type": "Allow", "schedule": "0 2 * * *", "duration": "0s"}),
            "recurring update window duration must be positive",
        ),
        (
            json!({"type": "Allow", "schedule": "0 2 * * *", "duration": "-1h"}),
            "recurring update window duration must be positive",
        ),
    ];
    for (w, want) in cases {
        assert_eq!(err(window(w.clone())), want, "{w}");
    }
    ok(window(
        json!({"type": "Deny", "from": "2026-12-24T00:00:00Z", "to": "2026-12-27T00:00:00Z"}),
    ));
    ok(window(
        json!({"type": "Allow", "schedule": "0 9 * * MON-FRI", "duration": "8h", "timeZone": "Europe/Berlin"}),
    ));
    ok(window(
        json!({"type": "Allow", "schedule": "@daily", "duration": "1h", "timeZone": "UTC"}),
    ));
}

#[test]
fn ws73_ws74_time_zone_and_schedule() {
    assert_eq!(
        err(window(
            json!({"type": "Allow", "schedule": "0 2 * * *", "duration": "1h", "timeZone": "Mars/Olympus"})
        )),
        "timeZone \"Mars/Olympus\": unknown time zone Mars/Olympus"
    );
    assert_eq!(
        err(window(
            json!({"type": "Allow", "schedule": "0 2 * * *", "duration": "1h", "timeZone": "europe/berlin"})
        )),
        "timeZone \"europe/berlin\": unknown time zone europe/berlin"
    );
    assert_eq!(
        err(window(
            json!({"type": "Allow", "schedule": "not a cron", "duration": "1h"})
        )),
        "schedule \"not a cron\": expected exactly 5 fields, found 3: [not a cron]"
    );
    // The zone and the schedule are checked before the duration's sign.
    assert_eq!(
        err(window(
            json!({"type": "Allow", "schedule": "61 * * * *", "duration": "0s"})
        )),
        "schedule \"61 * * * *\": end of range (61) above maximum (59): 61"
    );
}

#[test]
fn malformed_durations_are_decode_errors() {
    assert_eq!(
        err(window(
            json!({"type": "Allow", "schedule": "0 2 * * *", "duration": "8 hours"})
        )),
        "spec.updateWindows[0].duration: time: unknown unit \" hours\" in duration \"8 hours\""
    );
    assert_eq!(
        err(json!({"stages": [app(), app()], "interval": "10"})),
        "spec.interval: time: missing unit in duration \"10\""
    );
    assert_eq!(
        err(one_stage(
            json!({"actions": {"post": [{"name": "w", "wait": {"duration": "soon"}}]}})
        )),
        "spec.stages[0].actions.post[0].wait.duration: time: invalid duration \"soon\""
    );
    // Through the webhook it is upstream's 400 (admission.Errored).
    let (allowed, code, message) = admit(json!({"stages": [app()], "interval": "1 day"}));
    assert!(!allowed);
    assert_eq!(code, 400);
    assert_eq!(
        message,
        "spec.interval: time: unknown unit \" day\" in duration \"1 day\""
    );
}

#[test]
fn first_failing_rule_wins_across_groups() {
    let spec = json!({
        "stages": [app(), app()],
        "onRollback": [{"name": "x"}],
        "version": {},
        "dependsOn": [{"name": ""}],
        "updateWindows": [{"type": "Deny"}]
    });
    assert_eq!(
        err(spec),
        "stage name \"app\" is not unique; stage names must be unique within the StageSet"
    );
    let spec = json!({"stages": [app()], "version": {}, "decryption": {"provider": "sops", "secretRef": {"name": ""}}});
    assert_eq!(
        err(spec),
        "spec.version must set exactly one of value, fromObject, or fromArtifact, found 0"
    );
    // Enum rules keep their place too: the stage rules come before WS-66.
    let spec = json!({"stages": [app(), app()], "onTimeout": "Never"});
    assert_eq!(
        denied(spec),
        "stage name \"app\" is not unique; stage names must be unique within the StageSet"
    );
}

// --- ImageVerificationPolicy -----------------------------------------------------

const KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEMS7YnPAAadRDomo4zBiwCU+0dz2R
6JFVl/QNKU5cB8v+t/h4gfPuYH2e+3NaZPuTfbYRGzgyLEHUqpZtWgfYUw==
-----END PUBLIC KEY-----
";

fn keyless() -> Value {
    json!({"keyless": {"issuer": "https://token.actions.githubusercontent.com", "subject": "https://github.com/acme/app/.github/workflows/release.yaml@refs/heads/main"}})
}

fn policy(spec: Value) -> ImageVerificationPolicy {
    serde_json::from_value(json!({
        "apiVersion": "stages.metio.wtf/v1",
        "kind": "ImageVerificationPolicy",
        "metadata": {"name": "p"},
        "spec": spec
    }))
    .unwrap()
}

fn ivp_err(spec: Value) -> String {
    validate_image_verification_policy(&policy(spec)).expect_err("refused")
}

#[test]
fn ivp_rules() {
    let cases = [
        (json!({"images": [], "authorities": [keyless()]}), "spec.images must list at least one glob".to_string()),
        (json!({"images": ["reg.io/**", "  "], "authorities": [keyless()]}), "spec.images[1] must not be empty".to_string()),
        (json!({"images": ["reg.io/**"], "skip": [""], "authorities": [keyless()]}), "spec.skip[0] must not be empty".to_string()),
        (
            json!({"images": ["reg.io/**"], "authorities": [keyless()], "requireAttestations": [{"predicateType": "https://slsa.dev/provenance/v1"}]}),
            "spec.requireAttestations is not enforced in this version; remove it".to_string(),
        ),
        (json!({"images": ["reg.io/**"]}), "spec.authorities must list at least one keyless authority".to_string()),
        (json!({"images": ["reg.io/**"], "authorities": []}), "spec.authorities must list at least one keyless authority".to_string()),
        (
            json!({"images": ["reg.io/**"], "authorities": [{"keyless": keyless()["keyless"], "key": {"publicKey": KEY}}]}),
            "spec.authorities[0] sets both keyless and key; set exactly one".to_string(),
        ),
        (
            json!({"images": ["reg.io/**"], "authorities": [keyless(), {}]}),
            "spec.authorities[1] sets neither keyless nor key; set exactly one".to_string(),
        ),
        (
            json!({"images": ["reg.io/**"], "authorities": [{"key": {"publicKey": "not a pem"}}]}),
            "spec.authorities[0].key.publicKey is not PEM-encoded".to_string(),
        ),
        (
            json!({"images": ["reg.io/**"], "authorities": [{"keyless": {"subject": "s"}}]}),
            "spec.authorities[0].keyless must set issuer or issuerRegExp".to_string(),
        ),
        (
            json!({"images": ["reg.io/**"], "authorities": [{"keyless": {"issuer": "i", "issuerRegExp": "i.*", "subject": "s"}}]}),
            "spec.authorities[0].keyless sets both issuer and issuerRegExp; set exactly one".to_string(),
        ),
        (
            json!({"images": ["reg.io/**"], "authorities": [{"keyless": {"issuer": "i"}}]}),
            "spec.authorities[0].keyless must set subject or subjectRegExp".to_string(),
        ),
        (
            json!({"images": ["reg.io/**"], "authorities": [{"keyless": {"issuer": "i", "subject": "s", "subjectRegExp": "s"}}]}),
            "spec.authorities[0].keyless sets both subject and subjectRegExp; set exactly one".to_string(),
        ),
        (
            json!({"images": ["reg.io/**"], "authorities": [{"keyless": {"issuer": "i", "subjectRegExp": "("}}]}),
            "spec.authorities[0].keyless.subjectRegExp is not a valid regexp: error parsing regexp: unclosed group: `(`".to_string(),
        ),
    ];
    for (spec, want) in cases {
        assert_eq!(ivp_err(spec.clone()), want, "{spec}");
    }
    let e = ivp_err(
        json!({"images": ["reg.io/**"], "authorities": [{"key": {"publicKey": "-----BEGIN PUBLIC KEY-----\naGVsbG8=\n-----END PUBLIC KEY-----\n"}}]}),
    );
    assert!(
        e.starts_with("spec.authorities[0].key.publicKey is not a valid public key: "),
        "{e}"
    );
    validate_image_verification_policy(&policy(json!({
        "images": ["reg.io/**"],
        "skip": ["reg.io/base/*"],
        "authorities": [keyless(), {"key": {"publicKey": KEY}}, {"keyless": {"issuerRegExp": "^https://.*$", "subjectRegExp": "^https://github\\.com/acme/.+$"}}]
    })))
    .unwrap();
}

#[test]
fn wait_expressions_need_a_target_and_compile() {
    let waits = |w: Value| one_stage(json!({"actions": {"pre": [{"name": "w", "wait": w}]}}));
    ok(waits(
        json!({"target": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        "expr": "status.availableReplicas >= 3", "timeout": "5m"}),
    ));
    // A duration wins: the expression is not used, so not checked.
    ok(waits(json!({"duration": "1s", "expr": "not ( valid"})));
    assert_eq!(
        err(waits(json!({"expr": "status.ready == true"}))),
        "stage \"app\" action \"w\" (pre): wait.expr needs wait.target, the object it is evaluated on"
    );
    let e = err(waits(
        json!({"target": {"apiVersion": "v1", "kind": "ConfigMap", "name": "db"},
        "expr": "object.data.phase == 'running'"}),
    ));
    assert_eq!(
        e,
        "stage \"app\" action \"w\" (pre): wait.expr \"object.data.phase == 'running'\": compile CEL: undeclared reference to 'object' (the variables are apiVersion, kind, metadata, spec and status)"
    );
    let e = err(
        json!({"stages": [{"name": "app", "sourceRef": {"name": "a"}}],
        "onRollback": [{"name": "w", "wait": {"target": {"kind": "ConfigMap", "name": "db"}, "expr": "(("}}]}),
    );
    assert!(
        e.starts_with("onRollback action \"w\": wait.expr \"((\": compile CEL: "),
        "{e}"
    );
    let e = err(
        json!({"stages": [{"name": "app", "sourceRef": {"name": "a"}}],
        "version": {"value": "1.0.0"},
        "migrations": [{"name": "m", "to": "1.1.0", "down": [{"name": "w",
            "wait": {"target": {"kind": "ConfigMap", "name": "db"}, "expr": "self.data.x"}}]}]}),
    );
    assert!(
        e.starts_with("migration \"m\" down action \"w\": wait.expr \"self.data.x\": compile CEL: undeclared reference to 'self'"),
        "{e}"
    );
}
