use super::*;
use serde_json::{Value, json};

fn fleet(spec: Value) -> FleetRollout {
    serde_json::from_value(json!({
        "apiVersion": "stages.metio.wtf/v1", "kind": "FleetRollout",
        "metadata": {"name": "rollout", "generation": 1},
        "spec": spec,
    }))
    .unwrap()
}

/// A member StageSet: `version` deployed, `pending` waiting, Ready or not.
fn member(ns: &str, name: &str, wave: &str, version: &str, pending: &str, ready: bool) -> StageSet {
    let mut status = json!({
        "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"},
            "reason": if ready {"Succeeded"} else {"StageFailed"}, "message": "",
            "lastTransitionTime": "2026-12-01T00:00:00Z"}],
    });
    if !version.is_empty() {
        status["version"] = json!(version);
    }
    if !pending.is_empty() {
        status["pendingVersion"] = json!(pending);
    }
    serde_json::from_value(json!({
        "apiVersion": "stages.metio.wtf/v1", "kind": "StageSet",
        "metadata": {"name": name, "namespace": ns, "generation": 1,
            "labels": {"app": "shop", "wave": wave}},
        "spec": {"stages": [{"name": "app", "sourceRef": {"name": "s"}}]},
        "status": status,
    }))
    .unwrap()
}

fn three_waves(extra: Value) -> FleetRollout {
    let mut spec = json!({
        "targetVersion": "1.1.0",
        "selector": {"matchLabels": {"app": "shop"}},
        "waves": [
            {"name": "canary", "selector": {"matchLabels": {"wave": "canary"}}, "soak": "10m"},
            {"name": "early", "selector": {"matchLabels": {"wave": "early"}}},
            {"name": "rest", "selector": {"matchExpressions": [{"key": "wave", "operator": "In", "values": ["rest"]}]}},
        ],
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    fleet(spec)
}

fn now() -> Timestamp {
    "2026-12-07T10:00:00Z".parse().unwrap()
}

fn no_namespaces() -> BTreeMap<String, BTreeMap<String, String>> {
    BTreeMap::new()
}

#[test]
fn selectors_match_like_apimachinery() {
    let sel: LabelSelector = serde_json::from_value(json!({
        "matchLabels": {"a": "1"},
        "matchExpressions": [
            {"key": "b", "operator": "NotIn", "values": ["x"]},
            {"key": "c", "operator": "Exists"},
            {"key": "d", "operator": "DoesNotExist"},
        ]
    }))
    .unwrap();
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert!(selects(&sel, &labels(&[("a", "1"), ("c", "")])));
    assert!(selects(
        &sel,
        &labels(&[("a", "1"), ("b", "y"), ("c", "z")])
    ));
    assert!(!selects(
        &sel,
        &labels(&[("a", "1"), ("b", "x"), ("c", "")])
    ));
    assert!(!selects(&sel, &labels(&[("a", "1")])));
    assert!(!selects(&sel, &labels(&[("a", "1"), ("c", ""), ("d", "")])));
    assert!(!selects(&sel, &labels(&[("a", "2"), ("c", "")])));
    assert!(selects(&LabelSelector::default(), &labels(&[])));
}

#[test]
fn members_honour_the_namespace_selector_and_bad_selectors_are_named() {
    let sets = [
        member("team-a", "web", "canary", "", "", true),
        member("team-b", "web", "rest", "", "", true),
    ];
    let mut namespaces = BTreeMap::new();
    namespaces.insert(
        "team-a".to_string(),
        BTreeMap::from([("tier".to_string(), "gold".to_string())]),
    );
    let f = three_waves(json!({"namespaceSelector": {"matchLabels": {"tier": "gold"}}}));
    let got: Vec<String> = members(&f, &sets, &namespaces)
        .unwrap()
        .iter()
        .map(|ss| key(ss))
        .collect();
    assert_eq!(got, ["team-a/web"]);
    let bad = three_waves(
        json!({"selector": {"matchExpressions": [{"key": "app", "operator": "Near"}]}}),
    );
    assert_eq!(
        members(&bad, &sets, &namespaces).unwrap_err(),
        "spec.selector: \"Near\" is not a valid label selector operator"
    );
}

#[test]
fn contention_names_the_member_and_the_other_rollout() {
    let sets = [
        member("team-a", "web", "canary", "", "", true),
        member("team-b", "api", "rest", "", "", true),
    ];
    let mine = three_waves(json!({}));
    let mut other = fleet(
        json!({"selector": {"matchLabels": {"wave": "rest"}}, "waves": [{"name": "all", "selector": {}}]}),
    );
    other.metadata.name = Some("other".into());
    let m = members(&mine, &sets, &no_namespaces()).unwrap();
    assert_eq!(
        contested(&mine, &m, &[mine.clone(), other], &sets, &no_namespaces()),
        ["team-b/api (also governed by FleetRollout other)"]
    );
}

#[test]
fn waves_settle_soak_and_open_in_order() {
    let sets = [
        member("a", "canary-1", "canary", "1.1.0", "", true),
        member("b", "early-1", "early", "1.0.0", "1.1.0", false),
        member("c", "rest-1", "rest", "1.0.0", "1.1.0", false),
    ];
    let f = three_waves(json!({}));
    let m = members(&f, &sets, &no_namespaces()).unwrap();
    let mut waves = assess(&f, &m, None, now()).unwrap();
    assert_eq!(waves[0].status.settled, Some(true));
    assert_eq!(waves[0].status.at_target, Some(1));
    assert_eq!(
        waves[0].status.soak_until,
        Some(Time("2026-12-07T10:10:00Z".parse().unwrap()))
    );
    assert_eq!(waves[1].status.settled, Some(false));
    assert_eq!(waves[1].status.soak_until, None);
    // Soaking: the canary wave is current; only its members are approved.
    let progress = walk(&f, &mut waves, now(), &BTreeMap::new()).unwrap();
    assert_eq!(
        progress,
        Progress::Open {
            current: 0,
            why: "wave \"canary\" settled; soaking until 2026-12-07T10:10:00Z".into()
        }
    );
    let s = stamps(&f, &waves, &progress);
    assert_eq!(
        s,
        [Stamp {
            namespace: "a".into(),
            name: "canary-1".into(),
            annotation: keys::ANNOTATION_APPROVED_VERSION,
            value: "1.1.0".into()
        }]
    );
    // The soak is due back within 30 s only when it ends within 30 s.
    assert_eq!(requeue_after(&waves, now()), REQUEUE);
    let late: Timestamp = "2026-12-07T10:09:50Z".parse().unwrap();
    assert_eq!(requeue_after(&waves, late), Duration::from_secs(10));
    // After the soak the next wave opens and is approved too.
    let previous = FleetRolloutStatus {
        observed_generation: Some(1),
        waves: waves.iter().map(|w| w.status.clone()).collect(),
        ..Default::default()
    };
    let after: Timestamp = "2026-12-07T10:11:00Z".parse().unwrap();
    let mut waves = assess(&f, &m, Some(&previous), after).unwrap();
    let progress = walk(&f, &mut waves, after, &BTreeMap::new()).unwrap();
    assert_eq!(
        progress,
        Progress::Open {
            current: 1,
            why: "wave \"early\" is rolling out: 0/1 at 1.1.0, 0/1 ready".into()
        }
    );
    let names: Vec<String> = stamps(&f, &waves, &progress)
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["canary-1", "early-1"]);
}

#[test]
fn a_settled_wave_that_regresses_halts_and_rollback_stamps_it() {
    let f = three_waves(json!({"onRegression": "Rollback", "previousVersion": "1.0.0"}));
    let sets = [member("a", "canary-1", "canary", "1.1.0", "", false)];
    let m = members(&f, &sets, &no_namespaces()).unwrap();
    let previous = FleetRolloutStatus {
        observed_generation: Some(1),
        waves: vec![FleetWaveStatus {
            name: "canary".into(),
            settled: Some(true),
            soak_until: Some(Time("2026-12-07T09:00:00Z".parse().unwrap())),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut waves = assess(&f, &m, Some(&previous), now()).unwrap();
    let progress = walk(&f, &mut waves, now(), &BTreeMap::new()).unwrap();
    assert_eq!(
        progress,
        Progress::Halted {
            wave: 0,
            why: "wave \"canary\" regressed: a/canary-1 (not Ready)".into()
        }
    );
    let s = stamps(&f, &waves, &progress);
    // Asked to roll back, and the rollback approved (members need approval
    // for every change).
    let back = |annotation| Stamp {
        namespace: "a".into(),
        name: "canary-1".into(),
        annotation,
        value: "1.0.0".into(),
    };
    assert_eq!(
        s,
        [
            back(keys::ANNOTATION_APPROVED_VERSION),
            back(keys::ANNOTATION_ROLLBACK_TO)
        ]
    );
    // Halt alone (the default) stamps no rollback.
    let halt = three_waves(json!({}));
    let s = stamps(&halt, &waves, &progress);
    assert!(
        s.iter()
            .all(|s| s.annotation != keys::ANNOTATION_ROLLBACK_TO)
    );
}

#[test]
fn gates_pass_fail_or_hold() {
    let mut f = three_waves(json!({}));
    f.spec.waves[0].soak = None;
    f.spec.waves[0].gate = Some(
        serde_json::from_value(json!({
            "source": {"prometheus": {"address": "http://prom", "query": "q"}},
            "threshold": {"max": "0.1"}
        }))
        .unwrap(),
    );
    let sets = [
        member("a", "canary-1", "canary", "1.1.0", "", true),
        member("b", "early-1", "early", "1.0.0", "", true),
    ];
    let m = members(&f, &sets, &no_namespaces()).unwrap();
    let mut waves = assess(&f, &m, None, now()).unwrap();
    // The gate is read only once the wave is reached.
    assert_eq!(walk(&f, &mut waves, now(), &BTreeMap::new()), Err(0));
    let read = |r: GateReading| BTreeMap::from([(0usize, r)]);
    let p = walk(&f, &mut waves, now(), &read(GateReading::Passing)).unwrap();
    assert!(matches!(p, Progress::Open { current: 1, .. }));
    assert_eq!(waves[0].status.health, Some(WaveHealth::Passing));
    let p = walk(
        &f,
        &mut waves,
        now(),
        &read(GateReading::Unknown("down".into())),
    )
    .unwrap();
    assert_eq!(
        p,
        Progress::Open {
            current: 0,
            why: "wave \"canary\" gate cannot be read: down".into()
        }
    );
    assert_eq!(waves[0].status.health, Some(WaveHealth::Unknown));
    let p = walk(
        &f,
        &mut waves,
        now(),
        &read(GateReading::Failing("value 0.5".into())),
    )
    .unwrap();
    assert_eq!(
        p,
        Progress::Halted {
            wave: 0,
            why: "wave \"canary\" gate failed: value 0.5".into()
        }
    );
}

#[test]
fn derived_targets_approve_each_members_pending_version() {
    let f = fleet(json!({
        "selector": {"matchLabels": {"app": "shop"}},
        "waves": [{"name": "all", "selector": {}}],
    }));
    let sets = [
        member("a", "one", "x", "1.0.0", "1.2.0", false),
        member("b", "two", "x", "2.0.0", "2.1.0", false),
        member("c", "done", "x", "3.0.0", "", true),
    ];
    let m = members(&f, &sets, &no_namespaces()).unwrap();
    let mut waves = assess(&f, &m, None, now()).unwrap();
    assert_eq!(waves[0].status.at_target, Some(1));
    let p = walk(&f, &mut waves, now(), &BTreeMap::new()).unwrap();
    let s: Vec<(String, String)> = stamps(&f, &waves, &p)
        .into_iter()
        .map(|s| (s.name, s.value))
        .collect();
    assert_eq!(
        s,
        [
            ("one".to_string(), "1.2.0".to_string()),
            ("two".to_string(), "2.1.0".to_string())
        ]
    );
}

#[test]
fn soaks_are_checked() {
    let mut f = three_waves(json!({}));
    f.spec.waves[1].soak = Some("soon".into());
    assert!(soak_of(&f.spec.waves[1]).unwrap_err().contains("soon"));
    f.spec.waves[1].soak = Some("-1m".into());
    assert_eq!(
        soak_of(&f.spec.waves[1]).unwrap_err(),
        "\"-1m\" is negative"
    );
    assert_eq!(soak_of(&f.spec.waves[0]), Ok(Duration::from_secs(600)));
}

#[test]
fn already_stamped_members_are_not_patched_again() {
    let f = three_waves(json!({}));
    let mut canary = member("a", "canary-1", "canary", "1.0.0", "1.1.0", false);
    canary
        .annotations_mut()
        .insert(keys::ANNOTATION_APPROVED_VERSION.into(), "1.1.0".into());
    let sets = [canary];
    let m = members(&f, &sets, &no_namespaces()).unwrap();
    let mut waves = assess(&f, &m, None, now()).unwrap();
    let p = walk(&f, &mut waves, now(), &BTreeMap::new()).unwrap();
    assert!(stamps(&f, &waves, &p).is_empty());
}
