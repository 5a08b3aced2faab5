//! Fault injection and the request log, driven by kube-rs: a "controller"
//! user gets the faults, the admin client of the test is exempt.

#![recursion_limit = "512"]

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams, WatchParams};
use kube::runtime::watcher;
use kube_sim::{FaultConfig, FaultKind, KubeSim, Options, SimConfig, UserSpec};
use serde_json::json;

const CONTROLLER: &str = "controller";

fn sim_with(faults: FaultConfig) -> KubeSim {
    start_with(Options {
        users: vec![UserSpec {
            name: CONTROLLER.into(),
            token: "controller-token".into(),
            groups: vec!["system:masters".into()],
        }],
        config: SimConfig {
            faults: FaultConfig {
                exempt_users: vec!["kube-sim-admin".into()],
                ..faults
            },
            ..SimConfig::default()
        },
        ..Options::default()
    })
}

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"a": "b"}})).unwrap()
}

/// The controller's client without kube-rs's default retries of 429, 503
/// and 504 (which honour `Retry-After`).
async fn controller_without_retries(sim: &KubeSim) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&sim.kubeconfig()).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions {
            context: Some(CONTROLLER.into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    config.default_retry = false;
    kube::Client::try_from(config).unwrap()
}

/// A raw GET of a ConfigMap as the controller: (status, Retry-After).
async fn raw_get(client: &kube::Client, name: &str) -> (u16, Option<String>) {
    let req = http::Request::get(format!("/api/v1/namespaces/default/configmaps/{name}"))
        .body(Vec::new())
        .unwrap();
    let resp = client
        .send(req.map(kube::client::Body::from))
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string()),
    )
}

#[tokio::test]
async fn status_faults_follow_the_seed_and_are_counted() {
    let config = FaultConfig {
        seed: 42,
        rate_429: 0.3,
        rate_500: 0.2,
        rate_503: 0.1,
        retry_after_secs: 3,
        verbs: vec!["get".into()],
        ..FaultConfig::default()
    };
    let mut sequences = Vec::new();
    for _ in 0..2 {
        let sim = sim_with(config.clone());
        let admin: Api<ConfigMap> = Api::namespaced(client(&sim).await, "default");
        admin
            .create(&PostParams::default(), &cm("x"))
            .await
            .unwrap();
        let controller = controller_without_retries(&sim).await;
        let mut codes = Vec::new();
        for _ in 0..60 {
            let (code, retry_after) = raw_get(&controller, "x").await;
            match code {
                429 => assert_eq!(retry_after.as_deref(), Some("3")),
                200 | 500 | 503 => assert!(retry_after.is_none()),
                other => panic!("unexpected status {other}"),
            }
            codes.push(code);
        }
        // The admin is exempt, and verbs not selected are never faulted.
        for _ in 0..20 {
            admin.get("x").await.unwrap();
        }
        let as_controller: Api<ConfigMap> = Api::namespaced(controller.clone(), "default");
        for _ in 0..10 {
            as_controller.list(&Default::default()).await.unwrap();
        }
        let counts = sim.fault_counts();
        let get = counts.get("get").copied().unwrap_or_default();
        assert_eq!(
            get.too_many_requests,
            codes.iter().filter(|c| **c == 429).count() as u64
        );
        assert_eq!(
            get.internal_error,
            codes.iter().filter(|c| **c == 500).count() as u64
        );
        assert_eq!(
            get.service_unavailable,
            codes.iter().filter(|c| **c == 503).count() as u64
        );
        assert!(get.total() > 10 && get.total() < 50, "{get:?}");
        assert!(!counts.contains_key("list"));
        // The request log has the same story.
        let log = sim.request_log();
        let faulted: Vec<u16> = log
            .iter()
            .filter(|r| r.user == CONTROLLER && r.verb == "get")
            .map(|r| r.code)
            .collect();
        assert_eq!(faulted, codes);
        assert!(
            log.iter()
                .filter(|r| r.fault == Some(FaultKind::TooManyRequests))
                .all(|r| r.code == 429 && r.user == CONTROLLER)
        );
        sequences.push(codes);
    }
    assert_eq!(sequences[0], sequences[1], "the same seed, the same faults");

    // Without retries kube-rs surfaces the 429 (a plain-text body, as API
    // Priority and Fairness answers) as an error; its default client retries
    // 429 and 503 (honouring Retry-After), so the fault costs time only.
    let sim = sim_with(FaultConfig {
        rate_429: 1.0,
        verbs: vec!["get".into()],
        ..FaultConfig::default()
    });
    let admin: Api<ConfigMap> = Api::namespaced(client(&sim).await, "default");
    admin
        .create(&PostParams::default(), &cm("x"))
        .await
        .unwrap();
    let no_retries: Api<ConfigMap> =
        Api::namespaced(controller_without_retries(&sim).await, "default");
    let err = no_retries.get("x").await.unwrap_err();
    assert!(format!("{err:?}").contains("429"), "{err:?}");
    sim.set_faults(FaultConfig {
        seed: 3,
        rate_429: 0.5,
        rate_503: 0.2,
        retry_after_secs: 1,
        verbs: vec!["get".into()],
        exempt_users: vec!["kube-sim-admin".into()],
        ..FaultConfig::default()
    });
    sim.reset_fault_counts();
    let retrying: Api<ConfigMap> =
        Api::namespaced(client_for_context(&sim, Some(CONTROLLER)).await, "default");
    for _ in 0..4 {
        retrying.get("x").await.unwrap();
    }
    assert!(sim.fault_counts()["get"].total() >= 1);
}

#[tokio::test]
async fn a_reset_connection_still_commits_the_write() {
    let sim = sim_with(FaultConfig {
        rate_reset: 1.0,
        verbs: vec!["create".into()],
        ..FaultConfig::default()
    });
    let admin: Api<ConfigMap> = Api::namespaced(client(&sim).await, "default");
    let controller: Api<ConfigMap> =
        Api::namespaced(client_for_context(&sim, Some(CONTROLLER)).await, "default");
    let err = controller
        .create(&PostParams::default(), &cm("cut"))
        .await
        .unwrap_err();
    assert!(!matches!(err, kube::Error::Api(_)), "{err:?}");
    // The client saw an error, but the object exists.
    assert_eq!(admin.get("cut").await.unwrap().data.unwrap()["a"], "b");
    assert_eq!(sim.fault_counts()["create"].connection_reset, 1);
    let rec = sim
        .request_log()
        .into_iter()
        .find(|r| r.verb == "create" && r.user == CONTROLLER)
        .unwrap();
    assert_eq!(
        (rec.code, rec.fault),
        (201, Some(FaultKind::ConnectionReset))
    );
}

#[tokio::test]
async fn watches_end_early_and_resumes_may_be_gone() {
    let sim = sim_with(FaultConfig {
        seed: 1,
        watch_end_rate: 1.0,
        watch_end_after: Duration::from_millis(300),
        watch_resume_gone_rate: 1.0,
        verbs: vec!["watch".into()],
        ..FaultConfig::default()
    });
    let admin: Api<ConfigMap> = Api::namespaced(client(&sim).await, "default");
    let controller: Api<ConfigMap> =
        Api::namespaced(client_for_context(&sim, Some(CONTROLLER)).await, "default");
    admin
        .create(&PostParams::default(), &cm("w0"))
        .await
        .unwrap();
    let rv = sim.resource_version().to_string();
    // An idle watch just closes (long before its timeout).
    let started = std::time::Instant::now();
    let events: Vec<_> = controller
        .watch(&WatchParams::default().timeout(60), &rv)
        .await
        .unwrap()
        .collect()
        .await;
    assert!(events.is_empty(), "{events:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // Resuming from where it stopped: 410 Gone.
    let events: Vec<_> = controller
        .watch(&WatchParams::default().timeout(60), &rv)
        .await
        .unwrap()
        .collect()
        .await;
    match &events[..] {
        [Ok(kube::core::WatchEvent::Error(e))] => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected one 410 ERROR event, got {other:?}"),
    }
    let counts = sim.fault_counts()["watch"];
    assert_eq!((counts.watch_ended, counts.watch_gone), (1, 1));
    // The admin's watches are untouched.
    let admin_watch = admin
        .watch(&WatchParams::default().timeout(1), &rv)
        .await
        .unwrap();
    admin
        .create(&PostParams::default(), &cm("w1"))
        .await
        .unwrap();
    let events: Vec<_> = admin_watch.collect().await;
    assert_eq!(events.len(), 1, "{events:?}");

    // kube-rs's watcher rides through ended watches and 410s by re-listing.
    let sim = sim_with(FaultConfig {
        seed: 2,
        watch_end_rate: 1.0,
        watch_end_after: Duration::from_millis(200),
        watch_resume_gone_rate: 1.0,
        verbs: vec!["watch".into()],
        ..FaultConfig::default()
    });
    let admin: Api<ConfigMap> = Api::namespaced(client(&sim).await, "default");
    let controller: Api<ConfigMap> =
        Api::namespaced(client_for_context(&sim, Some(CONTROLLER)).await, "default");
    let mut stream = watcher(controller, watcher::Config::default()).boxed();
    let mut seen = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut created = 0;
    loop {
        let counts = sim.fault_counts().get("watch").copied().unwrap_or_default();
        if seen.len() == 6 && counts.watch_ended >= 2 && counts.watch_gone >= 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "seen {seen:?}, faults {counts:?}"
        );
        if created < 6 {
            admin
                .create(&PostParams::default(), &cm(&format!("n{created}")))
                .await
                .unwrap();
            created += 1;
        }
        let Ok(ev) = tokio::time::timeout(Duration::from_millis(300), stream.next()).await else {
            continue;
        };
        if let Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) =
            ev.expect("the watcher stream goes on")
        {
            seen.insert(c.metadata.name.unwrap());
        }
    }
}

#[tokio::test]
async fn a_partition_holds_requests_until_it_ends() {
    let sim = sim_with(FaultConfig::default());
    let admin: Api<ConfigMap> = Api::namespaced(client(&sim).await, "default");
    let controller: Api<ConfigMap> =
        Api::namespaced(client_for_context(&sim, Some(CONTROLLER)).await, "default");
    admin
        .create(&PostParams::default(), &cm("p"))
        .await
        .unwrap();
    controller.get("p").await.unwrap();

    sim.start_partition();
    assert!(sim.partitioned());
    // The controller's request hangs (here until the client gives up)...
    let held = tokio::time::timeout(Duration::from_millis(500), controller.get("p")).await;
    assert!(held.is_err(), "the request should hang during a partition");
    // ...while the exempt admin goes on.
    admin.get("p").await.unwrap();
    // A request held when the partition ends completes.
    let pending = tokio::spawn({
        let controller = controller.clone();
        async move { controller.get("p").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pending.is_finished());
    sim.end_partition();
    let got = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("released when the partition ends")
        .unwrap()
        .unwrap();
    assert_eq!(got.metadata.name.as_deref(), Some("p"));
    assert!(sim.fault_counts()["get"].partitioned >= 2);
}

#[tokio::test]
async fn the_request_log_names_who_wrote_what() {
    let sim = sim_with(FaultConfig::default());
    let admin_client = client(&sim).await;
    let admin_ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin_client.clone());
    admin_ns
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "tenant"}})).unwrap(),
        )
        .await
        .unwrap();
    sim.clear_request_log();

    let controller = client_for_context(&sim, Some(CONTROLLER)).await;
    let own: Api<ConfigMap> = Api::namespaced(controller.clone(), "default");
    own.create(&PostParams::default(), &cm("mine"))
        .await
        .unwrap();
    // Writes into the tenant namespace as the tenant's user, by impersonation.
    let kubeconfig =
        kube::config::Kubeconfig::from_yaml(&sim.kubeconfig()).expect("valid kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions {
            context: Some(CONTROLLER.into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    config.auth_info.impersonate = Some("system:serviceaccount:tenant:deployer".into());
    config.auth_info.impersonate_groups = Some(vec!["system:masters".into()]);
    let impersonating = kube::Client::try_from(config).unwrap();
    let tenant: Api<ConfigMap> = Api::namespaced(impersonating, "tenant");
    tenant
        .create(&PostParams::default(), &cm("theirs"))
        .await
        .unwrap();
    let missing: Api<ConfigMap> = Api::namespaced(controller.clone(), "tenant");
    assert!(missing.get("nope").await.is_err());

    let log = sim.request_log();
    let writes: Vec<_> = log.iter().filter(|r| r.is_write()).collect();
    assert_eq!(writes.len(), 2, "{writes:#?}");
    assert_eq!(
        (
            writes[0].user.as_str(),
            writes[0].impersonated_user.as_deref(),
            writes[0].verb.as_str(),
            writes[0].resource.as_str(),
            writes[0].namespace.as_str(),
            writes[0].name.as_str(),
            writes[0].code
        ),
        (CONTROLLER, None, "create", "configmaps", "default", "", 201)
    );
    assert_eq!(
        (
            writes[1].user.as_str(),
            writes[1].impersonated_user.as_deref(),
            writes[1].effective_user(),
            writes[1].namespace.as_str(),
            writes[1].code
        ),
        (
            CONTROLLER,
            Some("system:serviceaccount:tenant:deployer"),
            "system:serviceaccount:tenant:deployer",
            "tenant",
            201
        )
    );
    // What a controller test asserts: no tenant write under the controller's own identity.
    assert!(!log.iter().any(|r| r.is_write()
        && r.namespace == "tenant"
        && r.user == CONTROLLER
        && r.impersonated_user.is_none()));
    let get = log
        .iter()
        .find(|r| r.verb == "get" && r.name == "nope")
        .unwrap();
    assert_eq!((get.code, get.namespace.as_str()), (404, "tenant"));
}
