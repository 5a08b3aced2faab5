use super::cost::ARITHMETIC;
use super::regex::regex_weight;
use super::*;
use serde_json::json;

fn spec(
    current: Option<&str>,
    in_progress: Option<&str>,
    failed: Option<&str>,
) -> CustomHealthCheck {
    CustomHealthCheck {
        api_version: "apps/v1".to_string(),
        kind: "Deployment".to_string(),
        current: current.map(str::to_string),
        in_progress: in_progress.map(str::to_string),
        failed: failed.map(str::to_string),
    }
}

fn check(current: Option<&str>, in_progress: Option<&str>, failed: Option<&str>) -> CompiledCheck {
    compile(&spec(current, in_progress, failed)).expect("compiles")
}

fn compile_error(current: &str) -> String {
    compile(&spec(Some(current), None, None)).expect_err(current)
}

/// Evaluates `expr` as `current` against `obj`.
fn holds(expr: &str, obj: &Value) -> ExprOutcome {
    evaluate(&check(Some(expr), None, None), obj)
}

/// The cost estimate of `expr` against `obj`.
fn estimate(expr: &str, obj: &Value) -> u64 {
    let program = ENV.compile(expr).expect("parses");
    let facts = Facts::new(obj);
    Analyzer::bound(&facts, obj)
        .run(program.expression())
        .expect("analyses")
        .cost
}

fn deployment(conditions: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "apps", "generation": 2},
        "spec": {"replicas": 3},
        "status": {"observedGeneration": 2, "replicas": 3, "conditions": conditions},
    })
}

#[test]
fn syntax_errors_name_the_expression() {
    let err = compile_error("status.(");
    assert!(
        err.starts_with("current: invalid CEL expression: 1:"),
        "{err}"
    );
    let err = compile(&spec(Some("true"), Some("status.x =="), None)).unwrap_err();
    assert!(
        err.starts_with("inProgress: invalid CEL expression"),
        "{err}"
    );
    let err = compile(&spec(None, None, Some("has(status)"))).unwrap_err();
    assert!(err.starts_with("failed: invalid CEL expression"), "{err}");
    let err = compile(&spec(Some("  "), None, None)).unwrap_err();
    assert_eq!(err, "current: the expression is empty");
}

#[test]
fn non_bool_results_are_rejected() {
    for (expr, got) in [
        ("'Ready'", "string"),
        ("42", "int"),
        ("1 + 2", "int"),
        ("'a' + 'b'", "string"),
        ("status.replicas + 1", ARITHMETIC),
        ("-status.replicas", ARITHMETIC),
        ("size(status.conditions)", "int"),
        ("status.conditions.map(c, c.type)", "list"),
        ("status.conditions.filter(c, c.status == 'True')", "list"),
        ("[true]", "list"),
        ("{'a': true}", "map"),
        ("kind", "string"),
        ("string(status.replicas)", "string"),
        ("status.message.lowerAscii()", "string"),
        ("true ? 1 : 2", "int"),
        ("status.?ready", "optional"),
        ("type(status)", "type"),
        ("null", "null"),
    ] {
        let err = compile_error(expr);
        assert_eq!(
            err,
            format!("current: the expression must evaluate to bool, but it evaluates to {got}"),
            "{expr}"
        );
    }
}

#[test]
fn bool_and_dyn_results_are_accepted() {
    for expr in [
        "true",
        "status.ready",
        "status['ready']",
        "dyn(status.ready)",
        "status.?ready.orValue(false)",
        "has(status.ready) && status.readyReplicas == spec.replicas",
        "status.conditions.exists(c, c.type == 'Ready')",
        "status.conditions.exists_one(c, c.status == 'True')",
        "cond ? status.a : false"
            .replace("cond", "has(status.a)")
            .as_str(),
        "kind == 'Deployment' && apiVersion.startsWith('apps/')",
        "type(status) == map",
        "timestamp(metadata.creationTimestamp) < timestamp('2030-01-01T00:00:00Z')",
    ] {
        compile(&spec(Some(expr), Some(expr), Some(expr)))
            .unwrap_or_else(|e| panic!("{expr}: {e}"));
    }
}

#[test]
fn unknown_references_are_rejected() {
    let err = compile_error("foo == 1");
    assert!(err.contains("undeclared reference to 'foo'"), "{err}");
    let err = compile_error("status.conditions.all(c, x.ready)");
    assert!(err.contains("undeclared reference to 'x'"), "{err}");
    let err = compile_error("status.name.frobnicate()");
    assert!(
        err.contains("undeclared reference to function 'frobnicate'"),
        "{err}"
    );
    // the macro variable is in scope only inside the macro
    let err = compile_error("status.conditions.all(c, true) && c.ready");
    assert!(err.contains("undeclared reference to 'c'"), "{err}");
}

#[test]
fn api_version_and_kind_are_required() {
    let mut s = spec(Some("true"), None, None);
    s.kind = String::new();
    assert_eq!(compile(&s).unwrap_err(), "kind is required");
    s.kind = "Deployment".to_string();
    s.api_version = " ".to_string();
    assert_eq!(compile(&s).unwrap_err(), "apiVersion is required");
}

/// Every function the analysis knows is one the interpreter has, with the
/// arity and argument order the rules assume.
#[test]
fn every_function_runs() {
    let obj = json!({
        "apiVersion": "v1",
        "kind": "Thing",
        "metadata": {"name": "x", "creationTimestamp": "2024-05-06T07:08:09Z"},
        "spec": {"replicas": 3, "ratio": 0.5, "big": 18446744073709551615u64},
        "status": {"replicas": 3},
    });
    for expr in [
        "size('abc') == 3 && 'abc'.size() == 3 && size([1]) == 1 && size({'a': 1}) == 1",
        "'abc'.contains('b') && 'abc'.startsWith('a') && 'abc'.endsWith('c')",
        "'abc'.matches('^a') && matches('abc', 'c$')",
        "int('1') == 1 && uint(1) == 1u && double(1) == 1.0 && bool('true')",
        "string(1) == '1' && bytes('a') == b'a' && dyn(1) == 1 && type(1) == int",
        "duration('1m') == duration('60s') && duration('90m').getHours() == 1",
        "timestamp(metadata.creationTimestamp) < timestamp('2025-01-01T00:00:00Z')",
        "timestamp(metadata.creationTimestamp).getFullYear() == 2024",
        "timestamp(metadata.creationTimestamp).getMonth() == 4",
        "timestamp(metadata.creationTimestamp).getDate() == 6",
        "timestamp(metadata.creationTimestamp).getDayOfMonth() == 5",
        "timestamp(metadata.creationTimestamp).getDayOfWeek() == 1",
        "timestamp(metadata.creationTimestamp).getDayOfYear() == 126",
        "timestamp(metadata.creationTimestamp).getHours('UTC') == 7",
        "timestamp(metadata.creationTimestamp).getMinutes() == 8",
        "timestamp(metadata.creationTimestamp).getSeconds() == 9",
        "timestamp(metadata.creationTimestamp).getMilliseconds() == 0",
        "optional.of(1).hasValue() && optional.none().orValue(2) == 2",
        "optional.ofNonZeroValue(0).or(optional.of(3)).value() == 3",
        "status.?missing.orValue(1) == 1 && status.?replicas.optMap(r, r + 1).value() == 4",
        "'abc'.charAt(1) == 'b' && 'abcb'.indexOf('b') == 1 && 'abcb'.lastIndexOf('b') == 3",
        "'abcb'.indexOf('b', 2) == 3 && 'abcb'.lastIndexOf('b', 2) == 1",
        "['a', 'b'].join('-') == 'a-b' && ['a'].join() == 'a'",
        "'AbC'.lowerAscii() == 'abc' && 'abc'.upperAscii() == 'ABC' && ' a '.trim() == 'a'",
        "'abc'.reverse() == 'cba' && 'aXa'.replace('X', 'b') == 'aba'",
        "'aXaX'.replace('X', 'b', 1) == 'abaX' && 'a,b'.split(',') == ['a', 'b']",
        "'a,b,c'.split(',', 2) == ['a', 'b,c']",
        "'abc'.substring(1) == 'bc' && 'abc'.substring(0, 1) == 'a'",
        "'%s-%d'.format(['a', 1]) == 'a-1' && strings.quote('a') == '\"a\"'",
        "base64.encode(b'a') == 'YQ==' && base64.decode('YQ==') == b'a'",
        "[1, 2].map(x, x * 2) == [2, 4] && [1, 2, 3].map(x, x > 1, x) == [2, 3]",
        "[1, 2].filter(x, x > 1) == [2] && [1, 2].exists_one(x, x == 1)",
        "[1].existsOne(x, x == 1) && [1, 2].all(x, x > 0) && [1, 2].exists(x, x > 1)",
        "{'a': 1}.all(k, k == 'a') && 'a' in {'a': 1} && 1 in [1] && [1] + [2] == [1, 2]",
        "-1 < 0 && 5 % 2 == 1 && 6 / 2 == 3 && 2 - 1 == 1 && !false && 1 <= 1 && 2 >= 1",
        "spec.replicas == 3 && spec.ratio == 0.5 && spec.big == 18446744073709551615u",
        "apiVersion == 'v1' && kind == 'Thing'",
    ] {
        assert_eq!(holds(expr, &obj), ExprOutcome::Current, "{expr}");
    }
}

#[test]
fn outcome_branches() {
    let obj =
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "status": {"phase": "Rolling"}});
    let is = |p: &str| format!("status.phase == '{p}'");
    // failed wins over current
    let c = check(Some("true"), None, Some(&is("Rolling")));
    assert!(
        matches!(evaluate(&c, &obj), ExprOutcome::Failed(m) if m.contains("failed expression"))
    );
    assert_eq!(
        evaluate(
            &check(Some(&is("Rolling")), None, Some(&is("Broken"))),
            &obj
        ),
        ExprOutcome::Current
    );
    // not current: in progress or not
    let c = check(Some(&is("Done")), Some(&is("Rolling")), None);
    assert!(
        matches!(evaluate(&c, &obj), ExprOutcome::InFlight(m) if m.contains("is false") && m.contains("inProgress"))
    );
    let c = check(Some(&is("Done")), Some(&is("Waiting")), None);
    assert!(
        matches!(evaluate(&c, &obj), ExprOutcome::NotReady(m) if m.contains("current expression") && m.contains("is false"))
    );
    // an evaluation error is not current, and may still be in progress
    let c = check(Some("status.missing.deep == 1"), Some(&is("Rolling")), None);
    assert!(matches!(evaluate(&c, &obj), ExprOutcome::InFlight(_)));
    let c = check(Some("status.missing.deep == 1"), None, None);
    assert!(matches!(evaluate(&c, &obj), ExprOutcome::NotReady(m) if m.contains("missing")),);
    // a dyn result that is not a bool is an evaluation error
    assert!(
        matches!(holds("status.phase", &obj), ExprOutcome::NotReady(m) if m.contains("evaluated to string, not bool"))
    );
    // no current: nothing to wait for, unless failed
    assert_eq!(
        evaluate(&check(None, Some("true"), None), &obj),
        ExprOutcome::Current
    );
    assert!(matches!(
        evaluate(&check(None, None, Some("true")), &obj),
        ExprOutcome::Failed(_)
    ));
    // a failed expression that errors does not fail
    assert_eq!(
        evaluate(&check(None, None, Some("status.missing.deep")), &obj),
        ExprOutcome::Current
    );
}

#[test]
fn missing_maps_are_empty() {
    let obj =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "status": null});
    for expr in [
        "!has(status.ready)",
        "status == {}",
        "spec == {}",
        "size(status) == 0",
        "!status.exists(k, true)",
        "has(metadata.name)",
    ] {
        assert_eq!(holds(expr, &obj), ExprOutcome::Current, "{expr}");
    }
    let bare = json!({});
    assert_eq!(
        holds(
            "apiVersion == '' && kind == '' && metadata == {} && spec == {} && status == {}",
            &bare
        ),
        ExprOutcome::Current
    );
}

#[test]
fn flux_style_deployment_check() {
    let c = check(
        Some("status.conditions.filter(c, c.type == 'Available').all(c, c.status == 'True')"),
        Some("status.conditions.exists(c, c.type == 'Progressing' && c.status == 'True')"),
        Some(
            "status.conditions.exists(c, c.type == 'Progressing' && c.reason == 'ProgressDeadlineExceeded')",
        ),
    );
    let available = deployment(json!([
        {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
        {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
    ]));
    assert_eq!(evaluate(&c, &available), ExprOutcome::Current);
    let rolling = deployment(json!([
        {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"},
        {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"},
    ]));
    assert!(matches!(evaluate(&c, &rolling), ExprOutcome::InFlight(_)));
    let stuck = deployment(json!([
        {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"},
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"},
    ]));
    assert!(matches!(evaluate(&c, &stuck), ExprOutcome::Failed(_)));
}

#[test]
fn matching_is_by_group_and_kind() {
    let c = check(Some("true"), None, None);
    assert!(c.matches("apps/v1", "Deployment"));
    assert!(c.matches("apps/v1beta2", "Deployment"));
    assert!(!c.matches("extensions/v1beta1", "Deployment"));
    assert!(!c.matches("apps/v1", "StatefulSet"));
    assert!(!c.matches("v1", "Deployment"));
    let mut core = spec(Some("true"), None, None);
    core.api_version = "v1".to_string();
    core.kind = "ConfigMap".to_string();
    let core = compile(&core).unwrap();
    assert!(core.matches("v1", "ConfigMap"));
    assert!(!core.matches("apps/v1", "ConfigMap"));
}

#[test]
fn cost_limit_refuses_nested_loops_over_a_big_list() {
    let items: Vec<u64> = (0..2000).collect();
    let obj = json!({"apiVersion": "v1", "kind": "Thing", "spec": {"items": items}});
    let nested = "spec.items.all(x, spec.items.all(y, spec.items.all(z, x + y != z - 5000)))";
    // checked first: were it under the limit, evaluating it would hang
    assert!(estimate(nested, &obj) > COST_LIMIT);
    match holds(nested, &obj) {
        ExprOutcome::NotReady(m) => assert!(m.contains("cost limit exceeded"), "{m}"),
        other => panic!("{other:?}"),
    }
    // cheap expressions on the same object run
    assert_eq!(
        holds("size(spec.items) == 2000", &obj),
        ExprOutcome::Current
    );
    assert_eq!(
        holds("spec.items.exists(x, x == 1999)", &obj),
        ExprOutcome::Current
    );
    assert!(estimate("spec.items.exists(x, x == 1999)", &obj) < 100_000);
    // the same nesting over a small list is fine
    let small = json!({"spec": {"items": [1, 2, 3]}});
    assert_eq!(holds(nested, &small), ExprOutcome::Current);
}

#[test]
fn estimate_follows_the_concrete_object() {
    let obj = json!({
        "spec": {"small": [1, 2], "big": (0..1000).collect::<Vec<u32>>(), "s": "a".repeat(1000)},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    });
    // loops are charged by the collection they run over, not the object
    let small = estimate(
        "spec.small.all(x, spec.small.all(y, x != y || x == y))",
        &obj,
    );
    assert!(small < 200, "{small}");
    let big = estimate("spec.big.all(x, spec.big.all(y, x != y || x == y))", &obj);
    assert!(big > 1_000_000, "{big}");
    // computed collections keep a bound: a map over the big list is as long
    let mapped = estimate(
        "spec.big.map(x, x).all(x, spec.big.map(y, y).all(y, x != y))",
        &obj,
    );
    assert!(mapped > 1_000_000, "{mapped}");
    // growing strings are charged by their size
    let grown = estimate(
        "'x'.replace('', spec.s).replace('', spec.s).replace('', spec.s).size() > 0",
        &obj,
    );
    assert!(grown > COST_LIMIT, "{grown}");
}

#[test]
fn regex_cost_follows_the_compiled_size() {
    let w = regex_weight("^v[0-9]+\\.[0-9]+$");
    assert!(w.compile < 2_000 && w.states < 100, "{w:?}");
    // counted repetitions multiply, nested ones multiply again
    assert_eq!(regex_weight("a{100}").compile, 20 * 100);
    assert_eq!(regex_weight("(ab){10}{3}").compile, 40 * 30);
    assert_eq!(regex_weight("a{2,5}b{3,}").compile, 20 * 5 + 20 * 4);
    assert!(regex_weight(r"(\w{50}){50}").compile >= 20_000 * 2_500);
    // Unicode classes are heavy, also inside brackets and with flags
    assert!(regex_weight(r"[\w-]").compile > 20_000);
    assert!(regex_weight(r"\p{Greek}").compile >= 20_000);
    assert!(regex_weight("(?i)abc").compile > regex_weight("abc").compile);
    // braces that are no repetition are literals
    assert_eq!(regex_weight("a{b}").compile, 20 * 4);

    let obj = json!({
        "spec": {"items": (0..10).collect::<Vec<u32>>(), "pattern": "^we"},
        "metadata": {"name": "web"},
    });
    let heavy = r"spec.items.all(i, 'x'.matches('(\\w{50}){50}|b'))";
    assert!(estimate(heavy, &obj) > COST_LIMIT);
    assert!(matches!(holds(heavy, &obj), ExprOutcome::NotReady(m) if m.contains("cost limit")));
    assert_eq!(
        holds("metadata.name.matches('^w[a-z]+$')", &obj),
        ExprOutcome::Current
    );
    // a pattern from the object is charged as the worst the crate compiles
    assert_eq!(
        holds("metadata.name.matches(spec.pattern)", &obj),
        ExprOutcome::Current
    );
    let dynamic = "spec.items.all(i, metadata.name.matches(spec.pattern))";
    assert!(estimate(dynamic, &obj) > COST_LIMIT);
}

#[test]
fn expressions_too_deep_long_or_busy_are_refused_before_parsing() {
    let deep = format!("{}true{}", "(".repeat(33), ")".repeat(33));
    assert!(compile_error(&deep).contains("nests 33 levels deep, more than the 32 allowed"));
    let ok = format!("{}true{}", "(".repeat(32), ")".repeat(32));
    assert!(
        compile(&CustomHealthCheck {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            current: Some(ok),
            ..Default::default()
        })
        .is_ok()
    );
    // Brackets inside string literals do not count.
    let quoted = format!("'{}' == 'x'", "(".repeat(100));
    assert!(
        compile(&CustomHealthCheck {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            current: Some(quoted),
            ..Default::default()
        })
        .is_ok()
    );
    let chain = vec!["true"; 600].join(" && ");
    assert!(compile_error(&chain).contains("operators, more than the 512 allowed"));
    let long = format!("'{}' == ''", "x".repeat(9000));
    assert!(compile_error(&long).contains("more than the 8192 allowed"));
}
