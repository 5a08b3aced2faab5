//! FleetRollout end to end (delivery.md §5.7, api.md §5): versioned member
//! StageSets in several namespaces on kube-sim, the controller in-process.
//! Waves open in order once the previous one settled and soaked (the soak on
//! an injected clock), approvals are stamped only on opened waves, a settled
//! wave that regresses halts the rollout (and clears when the member
//! recovers, or asks the wave to roll back), contention and unassigned
//! members stop all stamping, and malformed specs are named. Wave gates read
//! metric sources through the outbound guard, so they are tested in
//! tests/outbound_net.rs.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use kube::api::{Api, DeleteParams};
use serde_json::json;
use stageset_controller::api::{FleetPhase, FleetRollout};
use support::fleet::*;
use support::*;

fn spec(waves: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    let mut s = json!({
        "targetVersion": "1.1.0",
        "selector": {"matchLabels": {"app": "shop"}},
        "waves": waves,
    });
    for (k, v) in extra.as_object().unwrap() {
        s[k] = v.clone();
    }
    s
}

fn wave(name: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut w = json!({"name": name, "selector": {"matchLabels": {"wave": name}}});
    for (k, v) in extra.as_object().unwrap() {
        w[k] = v.clone();
    }
    w
}

/// Three waves across three namespaces: only the canary is approved until it
/// settled and soaked an hour (injected clock); then the early and the rest
/// waves open one after the other as their members settle, and the rollout
/// completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waves_open_in_order_after_settling_and_soaking() {
    let start: jiff::Timestamp = "2026-12-07T10:00:00Z".parse().unwrap();
    let offset = Arc::new(AtomicI64::new(0));
    let seen = offset.clone();
    let clock = stageset_controller::reconcile::Clock::from_fn(move || {
        start + jiff::SignedDuration::from_secs(seen.load(Ordering::SeqCst))
    });
    let h = Harness::start_with(HarnessOptions {
        clock: Some(clock),
        ..Default::default()
    })
    .await;
    let members = [
        ("team-a", "web", "canary"),
        ("team-b", "web", "early"),
        ("team-b", "api", "early"),
        ("team-c", "web", "rest"),
    ];
    for ns in ["team-a", "team-b", "team-c"] {
        team(&h, ns, json!({})).await;
    }
    for (ns, name, w) in members {
        member(&h, ns, name, w, "1.0.0").await;
    }
    for (ns, name, _) in members {
        h.wait_stageset(ns, name, "baseline 1.0.0", at("1.0.0"))
            .await;
    }
    fleet(
        &h,
        "shop",
        spec(
            json!([
                wave("canary", json!({"soak": "1h"})),
                wave("early", json!({})),
                wave("rest", json!({}))
            ]),
            json!({}),
        ),
    )
    .await;
    let f = wait_fleet_reason(
        &h,
        "shop",
        "Progressing",
        "wave \"canary\" is rolling out: 0/1 at 1.1.0, 1/1 ready",
    )
    .await;
    let st = f.status.unwrap();
    assert_eq!(st.phase, Some(FleetPhase::InProgress));
    assert_eq!(st.current_wave.as_deref(), Some("canary"));
    assert_eq!(st.observed_generation, Some(1));
    assert_eq!(
        annotation(&h, "team-a", "web", APPROVED).await.as_deref(),
        Some("1.1.0")
    );
    assert_eq!(annotation(&h, "team-b", "web", APPROVED).await, None);
    // The platform team bumps every member; only the canary may go.
    for (ns, name, w) in members {
        member(&h, ns, name, w, "1.1.0").await;
    }
    h.wait_stageset("team-a", "web", "canary at 1.1.0", at("1.1.0"))
        .await;
    for (ns, name, _) in &members[1..] {
        h.wait_stageset(ns, name, "held at 1.0.0", held("1.1.0"))
            .await;
    }
    let f = wait_fleet(&h, "shop", "the canary soaking", |f| {
        fleet_ready(f).is_some_and(|(_, _, m)| m.contains("soaking until"))
    })
    .await;
    let st = f.status.unwrap();
    let canary = &st.waves[0];
    assert_eq!(
        (canary.total, canary.at_target, canary.ready, canary.settled),
        (Some(1), Some(1), Some(1), Some(true))
    );
    assert_eq!(
        canary.soak_until.as_ref().map(|t| t.0.to_string()),
        Some("2026-12-07T11:00:00Z".to_string())
    );
    assert_eq!(
        fleet_ready(&FleetRollout {
            status: Some(st.clone()),
            ..FleetRollout::new("x", Default::default())
        })
        .unwrap()
        .2,
        "wave \"canary\" settled; soaking until 2026-12-07T11:00:00Z"
    );
    assert_eq!(
        (
            st.waves[1].total,
            st.waves[1].at_target,
            st.waves[1].settled
        ),
        (Some(2), Some(0), Some(false))
    );
    // Stamped before the status was written: nothing beyond the canary.
    for (ns, name, _) in &members[1..] {
        assert_eq!(
            annotation(&h, ns, name, APPROVED).await,
            None,
            "{ns}/{name}"
        );
    }
    // `stagesetctl fleet` shows the same, member by member.
    let (code, out, err) = stagesetctl(&h, &["fleet", "shop"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "FleetRollout shop  → version 1.1.0\n\
         phase: InProgress   wave: canary\n\
         wave canary   1/1 at 1.1.0, 1 ready   settled\n  \
         ✓ team-a/web\n\
         wave early   0/2 at 1.1.0, 0 ready\n  \
         … team-b/api  held → awaiting 1.1.0\n  \
         … team-b/web  held → awaiting 1.1.0\n\
         wave rest   0/1 at 1.1.0, 0 ready\n  \
         … team-c/web  held → awaiting 1.1.0\n"
    );
    // Two hours later the soak is over.
    offset.store(2 * 3600, Ordering::SeqCst);
    poke(&h, "shop", "after-soak").await;
    let f = wait_fleet_reason(&h, "shop", "Completed", "all 3 wave(s) passed at 1.1.0").await;
    let st = f.status.unwrap();
    assert_eq!(st.phase, Some(FleetPhase::Completed));
    assert_eq!(st.current_wave, None);
    for w in &st.waves {
        assert_eq!(w.settled, Some(true), "{}", w.name);
        assert_eq!(w.at_target, w.total, "{}", w.name);
    }
    for (ns, name, _) in members {
        h.wait_stageset(ns, name, "at 1.1.0", at("1.1.0")).await;
        assert_eq!(
            annotation(&h, ns, name, APPROVED).await.as_deref(),
            Some("1.1.0")
        );
    }
    assert!(fleet_events(&h, "shop").await.is_empty());
    let (code, out, _) = stagesetctl(&h, &["fleet", "shop"]).await;
    assert_eq!(code, 0);
    assert!(
        out.starts_with("FleetRollout shop  → version 1.1.0\nphase: Completed   wave: -\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "wave early   2/2 at 1.1.0, 2 ready   settled\n  ✓ team-b/api\n  ✓ team-b/web\n"
        ),
        "{out}"
    );
    let (code, out, _) = stagesetctl(&h, &["fleet", "shop", "-o", "json"]).await;
    assert_eq!(code, 0);
    let parsed: FleetRollout = serde_json::from_str(&out).expect("fleet -o json parses");
    assert_eq!(
        parsed.status.and_then(|s| s.phase),
        Some(FleetPhase::Completed)
    );
    let (code, _, err) = stagesetctl(&h, &["fleet", "nope"]).await;
    assert_eq!(
        (code, err.as_str()),
        (3, "Error: FleetRollout nope not found\n")
    );
    let metrics = h.controller.as_ref().unwrap().metrics().encode();
    assert!(
        metrics.contains("controller_runtime_reconcile_total{controller=\"fleetrollout\""),
        "fleet passes are counted"
    );
}

/// A settled wave whose member stops being Ready halts the rollout (Warning
/// event, phase Halted) and the halt clears when the member recovers. With
/// `onRegression: Rollback`, the halted wave's members (only those) are
/// asked to go back to `previousVersion`, and they do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regressions_halt_and_clear_or_roll_back() {
    let h = Harness::start().await;
    for ns in ["team-a", "team-b"] {
        team(&h, ns, json!({})).await;
    }
    member(&h, "team-a", "web", "canary", "1.0.0").await;
    member(&h, "team-b", "web", "early", "1.0.0").await;
    for ns in ["team-a", "team-b"] {
        h.wait_stageset(ns, "web", "baseline", at("1.0.0")).await;
    }
    let waves = json!([wave("canary", json!({})), wave("early", json!({}))]);
    fleet(&h, "shop", spec(waves.clone(), json!({}))).await;
    member(&h, "team-a", "web", "canary", "1.1.0").await;
    member(&h, "team-b", "web", "early", "1.1.0").await;
    wait_fleet_reason(&h, "shop", "Completed", "").await;
    // The canary member stops being Ready.
    h.suspend("team-a", "web", true).await;
    let f = wait_fleet_reason(
        &h,
        "shop",
        "Halted",
        "wave \"canary\" regressed: team-a/web (not Ready)",
    )
    .await;
    let st = f.status.unwrap();
    assert_eq!(st.phase, Some(FleetPhase::Halted));
    assert_eq!(st.current_wave.as_deref(), Some("canary"));
    assert_eq!(
        fleet_ready(&FleetRollout {
            status: Some(st),
            ..FleetRollout::new("x", Default::default())
        })
        .unwrap()
        .0,
        "False"
    );
    let events = wait_fleet_events(&h, "shop", |e| !e.is_empty()).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].0.as_str(), events[0].1.as_str()),
        ("Warning", "Halted")
    );
    assert!(events[0].2.contains("regressed"), "{events:?}");
    // Plain Halt asks nobody to roll back.
    assert_eq!(annotation(&h, "team-a", "web", ROLLBACK_TO).await, None);
    // Recovered: the halt clears.
    h.suspend("team-a", "web", false).await;
    wait_fleet_reason(&h, "shop", "Completed", "").await;

    // Now with Rollback: a new generation starts the waves afresh.
    fleet(
        &h,
        "shop",
        spec(
            waves,
            json!({"onRegression": "Rollback", "previousVersion": "1.0.0"}),
        ),
    )
    .await;
    wait_fleet(&h, "shop", "generation 2 completed", |f| {
        f.status.as_ref().and_then(|s| s.observed_generation) == Some(2)
            && fleet_ready(f).is_some_and(|(_, r, _)| r == "Completed")
    })
    .await;
    h.suspend("team-b", "web", true).await;
    wait_fleet_reason(
        &h,
        "shop",
        "Halted",
        "wave \"early\" regressed: team-b/web (not Ready); the wave's members are asked to roll back to 1.0.0",
    )
    .await;
    assert_eq!(
        annotation(&h, "team-b", "web", ROLLBACK_TO)
            .await
            .as_deref(),
        Some("1.0.0")
    );
    assert_eq!(
        annotation(&h, "team-b", "web", APPROVED).await.as_deref(),
        Some("1.0.0"),
        "the fleet approves the rollback it asks for"
    );
    assert_eq!(annotation(&h, "team-a", "web", ROLLBACK_TO).await, None);
    // The member honours it once resumed; the rollout stays halted, now
    // because the member left the target.
    h.suspend("team-b", "web", false).await;
    h.wait_stageset("team-b", "web", "rolled back", at("1.0.0"))
        .await;
    wait_fleet_reason(&h, "shop", "Halted", "team-b/web (not adopted)").await;
    h.wait_stageset("team-a", "web", "canary untouched", at("1.1.0"))
        .await;
}

/// Members that no wave selects, or that another FleetRollout also selects,
/// stop every approval until fixed; a namespaceSelector narrows the
/// members; malformed specs are named with their field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unassigned_contested_and_malformed_rollouts_stamp_nothing() {
    let h = Harness::start().await;
    team(&h, "team-a", json!({"tier": "gold"})).await;
    team(&h, "team-b", json!({"tier": "gold"})).await;
    team(&h, "team-c", json!({"tier": "lab"})).await;
    member(&h, "team-a", "web", "canary", "1.0.0").await;
    member(&h, "team-b", "web", "early", "1.0.0").await;
    member(&h, "team-c", "web", "lab", "1.0.0").await;
    let waves = json!([wave("canary", json!({})), wave("early", json!({}))]);
    fleet(&h, "one", spec(waves.clone(), json!({}))).await;
    wait_fleet_reason(
        &h,
        "one",
        "MembersUnassigned",
        "1 member(s) match no wave: team-c/web",
    )
    .await;
    assert_eq!(annotation(&h, "team-a", "web", APPROVED).await, None);
    // Only the gold namespaces take part.
    fleet(
        &h,
        "one",
        spec(
            waves,
            json!({"namespaceSelector": {"matchLabels": {"tier": "gold"}}}),
        ),
    )
    .await;
    wait_fleet_reason(&h, "one", "Progressing", "wave \"canary\"").await;
    assert_eq!(
        annotation(&h, "team-a", "web", APPROVED).await.as_deref(),
        Some("1.1.0")
    );
    // A second rollout claims the early member: both stop.
    fleet(
        &h,
        "two",
        json!({"targetVersion": "2.0.0", "selector": {"matchLabels": {"wave": "early"}},
            "waves": [{"name": "all", "selector": {}}]}),
    )
    .await;
    wait_fleet_reason(
        &h,
        "two",
        "MembersContested",
        "team-b/web (also governed by FleetRollout one)",
    )
    .await;
    poke(&h, "one", "contested").await;
    wait_fleet_reason(
        &h,
        "one",
        "MembersContested",
        "team-b/web (also governed by FleetRollout two)",
    )
    .await;
    assert_eq!(annotation(&h, "team-b", "web", APPROVED).await, None);
    let one = Api::<FleetRollout>::all(h.client.clone())
        .get("one")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(
        (one.phase, one.current_wave),
        (Some(FleetPhase::Pending), None),
        "a stopped rollout claims no wave"
    );
    Api::<FleetRollout>::all(h.client.clone())
        .delete("two", &DeleteParams::default())
        .await
        .unwrap();
    poke(&h, "one", "released").await;
    wait_fleet_reason(&h, "one", "Progressing", "").await;

    // Malformed rollouts, each governing nobody.
    let nobody = json!({"matchLabels": {"app": "nobody"}});
    fleet(
        &h,
        "gate-with-secret",
        json!({"selector": nobody, "waves": [{"name": "w", "selector": {},
            "gate": {"source": {"prometheus": {"address": "http://prometheus:9090", "query": "up",
                "secretRef": {"name": "token"}}}, "threshold": {"min": "1"}}}]}),
    )
    .await;
    wait_fleet_reason(
        &h,
        "gate-with-secret",
        "GateUnsupported",
        "spec.waves[0].gate (w) names a secretRef",
    )
    .await;
    fleet(
        &h,
        "bad-selector",
        json!({"selector": {"matchExpressions": [{"key": "app", "operator": "Near", "values": ["x"]}]},
            "waves": [{"name": "w", "selector": {}}]}),
    )
    .await;
    wait_fleet_reason(
        &h,
        "bad-selector",
        "InvalidSelector",
        "spec.selector: \"Near\" is not a valid label selector operator",
    )
    .await;
    fleet(
        &h,
        "bad-soak",
        json!({"selector": nobody, "waves": [{"name": "w", "selector": {}, "soak": "a while"}]}),
    )
    .await;
    let f = wait_fleet_reason(&h, "bad-soak", "InvalidSpec", "spec.waves[0].soak (w)").await;
    assert_eq!(fleet_ready(&f).unwrap().0, "False");
    // The malformed ones contest nothing: "one" still progresses.
    poke(&h, "one", "after-malformed").await;
    wait_fleet(&h, "one", "progressing again", |f| {
        fleet_ready(f).is_some_and(|(_, r, _)| r == "Progressing")
            && f.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("reconcile.fluxcd.io/requestedAt"))
                .is_some_and(|t| t == "after-malformed")
    })
    .await;

    // A member deleted for good is recounted well before the rollout's own
    // 30 s requeue, which the poke above just restarted (the teardown's last
    // status write and the delete event both wake it).
    let canary_total = |f: &FleetRollout| {
        f.status.as_ref().and_then(|s| {
            s.waves
                .iter()
                .find(|w| w.name == "canary")
                .and_then(|w| w.total)
        })
    };
    let before = wait_fleet(&h, "one", "canary counted", |f| canary_total(f) == Some(1)).await;
    Api::<stageset_controller::api::StageSet>::namespaced(h.client.clone(), "team-a")
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    let api: Api<FleetRollout> = Api::all(h.client.clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let f = api.get("one").await.unwrap();
        if canary_total(&f) == Some(0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the deleted member is still counted: {:?}, before: {:?}",
            f.status,
            before.status
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Runs `stagesetctl` against the harness's kube-sim (off the async
/// workers: kube-sim serves on them).
async fn stagesetctl(h: &Harness, args: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, h.sim.kubeconfig()).unwrap();
    let mut argv = vec![format!("--kubeconfig={}", kubeconfig.display())];
    argv.extend(args.iter().map(|s| s.to_string()));
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_stagesetctl"))
            .args(&argv)
            .env_remove("KUBECONFIG")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    drop(dir);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
