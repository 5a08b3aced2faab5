//! Remote clusters (api.md §2.4.2, issue 15): a StageSet whose
//! `spec.kubeConfig.secretRef` names a kubeconfig delivers to a second
//! kube-sim (real TLS, bearer tokens) while its status, events and
//! StageInventory stay on the controller's cluster; prune and teardown act
//! there; a named ServiceAccount is impersonated there (and its rights are
//! the remote cluster's); a rotated kubeconfig is picked up; and every way a
//! kubeconfig can be wrong fails the first stage with a message that names
//! the problem and never quotes the kubeconfig.

#![recursion_limit = "256"]

mod support;

use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube_sim::{KubeSim, Options};
use serde_json::{Value, json};
use stageset_controller::api::StageSet;
use support::*;

const NS: &str = "shop";

/// A second cluster with the namespace `shop`, and a client for it.
async fn remote_cluster() -> (KubeSim, kube::Client) {
    let sim = KubeSim::start(Options::default()).expect("remote kube-sim starts");
    sim.load(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
        .unwrap();
    let client = kube::Client::try_from(kube_config(&sim).await).unwrap();
    (sim, client)
}

/// Stores `kubeconfig` under `key` of the Secret `name` (replacing it).
async fn put_kubeconfig(h: &Harness, name: &str, key: &str, kubeconfig: &str) {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(h.client.clone(), NS);
    let body = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": NS}, "stringData": {key: kubeconfig}});
    secrets
        .patch(
            name,
            &PatchParams::apply("remote-test").force(),
            &Patch::Apply(&body),
        )
        .await
        .unwrap();
}

async fn app_source(h: &Harness, revision: &str, files: &[(&str, String)]) {
    let files: Vec<(&str, &str)> = files.iter().map(|(n, c)| (*n, c.as_str())).collect();
    let art = h.artifact(&format!("app-{revision}.tar.gz"), &files);
    h.external_artifact(NS, "app", &art, revision).await;
}

fn remote_spec(extra: Value) -> Value {
    let mut spec = json!({"interval": "1h",
        "kubeConfig": {"secretRef": {"name": "prod-kubeconfig"}},
        "stages": [{"name": "app", "sourceRef": {"name": "app"}}]});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    spec
}

fn succeeded(ss: &StageSet) -> bool {
    ready(ss).is_some_and(|(s, r, _)| s == "True" && r == "Succeeded")
}

async fn config_map(
    client: &kube::Client,
    name: &str,
) -> Option<k8s_openapi::api::core::v1::ConfigMap> {
    Api::namespaced(client.clone(), NS)
        .get_opt(name)
        .await
        .unwrap()
}

async fn wait_gone(client: &kube::Client, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while config_map(client, name).await.is_some() {
        assert!(Instant::now() < deadline, "{name} was not deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Apply, prune and teardown happen on the remote cluster; the status and
/// the StageInventory stay on the controller's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_land_on_the_remote_cluster_only() {
    let h = Harness::start().await;
    h.namespace(NS).await;
    let (remote, remote_client) = remote_cluster().await;
    put_kubeconfig(&h, "prod-kubeconfig", "value", &remote.kubeconfig()).await;
    app_source(
        &h,
        "r1",
        &[
            ("a.yaml", configmap(NS, "app-config", "r1")),
            ("b.yaml", configmap(NS, "extra", "r1")),
        ],
    )
    .await;
    // The action's target and the extra ready check exist only remotely.
    remote
        .load(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "marker", "namespace": NS}}))
        .unwrap();
    h.stageset(
        NS,
        "payments",
        remote_spec(json!({"stages": [{"name": "app", "sourceRef": {"name": "app"},
            "readyChecks": {"checks": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "marker"}]},
            "actions": {"pre": [{"name": "mark", "patch": {
                "target": {"apiVersion": "v1", "kind": "ConfigMap", "name": "marker"},
                "patch": "{\"data\": {\"marked\": \"yes\"}}"}}]}}]})),
    )
    .await;
    h.wait_stageset(NS, "payments", "Ready", succeeded).await;
    let marker = config_map(&remote_client, "marker").await.unwrap();
    assert_eq!(
        marker.data.unwrap()["marked"],
        "yes",
        "the action ran remotely"
    );
    let cm = config_map(&remote_client, "app-config")
        .await
        .expect("applied on the remote cluster");
    assert_eq!(cm.data.unwrap()["value"], "r1");
    assert!(
        config_map(&h.client, "app-config").await.is_none(),
        "nothing lands locally"
    );
    let inventories = |client: kube::Client| async move {
        let api = Api::<stageset_controller::api::StageInventory>::namespaced(client, NS);
        api.list(&ListParams::default()).await.unwrap().items.len()
    };
    assert!(
        inventories(h.client.clone()).await > 0,
        "the inventory is local"
    );
    assert_eq!(
        Api::<kube::api::DynamicObject>::namespaced_with(
            remote_client.clone(),
            NS,
            &kube::api::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
                "",
                "v1",
                "ConfigMap"
            ))
        )
        .list(&ListParams::default().labels("stages.metio.wtf/name=payments"))
        .await
        .unwrap()
        .items
        .len(),
        2
    );
    // r2 drops "extra": pruned on the remote cluster.
    app_source(&h, "r2", &[("a.yaml", configmap(NS, "app-config", "r2"))]).await;
    h.wait_stageset(NS, "payments", "r2 applied", |ss| {
        succeeded(ss)
            && ss
                .status
                .as_ref()
                .unwrap()
                .last_applied_revisions
                .values()
                .any(|r| r == "r2")
    })
    .await;
    wait_gone(&remote_client, "extra").await;
    assert_eq!(
        config_map(&remote_client, "app-config")
            .await
            .unwrap()
            .data
            .unwrap()["value"],
        "r2"
    );
    // Deleted: torn down on the remote cluster.
    Api::<StageSet>::namespaced(h.client.clone(), NS)
        .delete("payments", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&remote_client, "app-config").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Api::<StageSet>::namespaced(h.client.clone(), NS)
        .get_opt("payments")
        .await
        .unwrap()
        .is_some()
    {
        assert!(Instant::now() < deadline, "the finalizer was not released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// With `serviceAccountName` the ServiceAccount is impersonated on the
/// remote cluster: its rights there decide (RBACDenied), and granting them
/// there lets the stage through. The kubeconfig Secret is read as that
/// ServiceAccount on the controller's cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_account_is_impersonated_on_the_remote_cluster() {
    let h = Harness::start().await;
    h.namespace(NS).await;
    let (remote, remote_client) = remote_cluster().await;
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "deployer", "namespace": NS}});
    // Locally the tenant may read its kubeconfig Secret, nothing else.
    for obj in [
        sa.clone(),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "kubeconfig-reader", "namespace": NS},
               "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["prod-kubeconfig"], "verbs": ["get"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "kubeconfig-reader", "namespace": NS},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "kubeconfig-reader"},
               "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": NS}]}),
    ] {
        h.sim.load(obj).unwrap();
    }
    // Remotely it may only read ConfigMaps.
    for obj in [
        sa,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "deployer", "namespace": NS},
               "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "deployer", "namespace": NS},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "deployer"},
               "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": NS}]}),
    ] {
        remote.load(obj).unwrap();
    }
    put_kubeconfig(&h, "prod-kubeconfig", "value", &remote.kubeconfig()).await;
    app_source(&h, "r1", &[("a.yaml", configmap(NS, "app-config", "r1"))]).await;
    h.stageset(
        NS,
        "tenant",
        remote_spec(json!({"serviceAccountName": "deployer"})),
    )
    .await;
    let ss = h
        .wait_ready_reason(
            NS,
            "tenant",
            "RBACDenied",
            "system:serviceaccount:shop:deployer",
        )
        .await;
    let message = ready(&ss).unwrap().2;
    assert!(message.contains("stage \"app\""), "{message}");
    assert!(config_map(&remote_client, "app-config").await.is_none());
    // Granted on the remote cluster: the stage goes through.
    remote
        .load(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "deployer", "namespace": NS},
               "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"]}]}))
        .unwrap();
    h.wait_stageset_within(
        NS,
        "tenant",
        "Ready after the grant",
        Duration::from_secs(180),
        succeeded,
    )
    .await;
    let cm = config_map(&remote_client, "app-config").await.unwrap();
    assert_eq!(cm.data.unwrap()["value"], "r1");
}

/// A rotated kubeconfig (the Secret now points at another cluster) is used
/// from the next pass on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_kubeconfig_is_picked_up() {
    let h = Harness::start().await;
    h.namespace(NS).await;
    let (first, first_client) = remote_cluster().await;
    let (second, second_client) = remote_cluster().await;
    put_kubeconfig(&h, "prod-kubeconfig", "value", &first.kubeconfig()).await;
    app_source(&h, "r1", &[("a.yaml", configmap(NS, "app-config", "r1"))]).await;
    h.stageset(NS, "payments", remote_spec(json!({}))).await;
    h.wait_stageset(NS, "payments", "Ready", succeeded).await;
    assert!(config_map(&first_client, "app-config").await.is_some());
    put_kubeconfig(&h, "prod-kubeconfig", "value", &second.kubeconfig()).await;
    Api::<StageSet>::namespaced(h.client.clone(), NS)
        .patch(
            "payments",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": "rotated"}}})),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while config_map(&second_client, "app-config").await.is_none() {
        assert!(
            Instant::now() < deadline,
            "the rotated kubeconfig was not used"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every way the kubeconfig can be wrong fails the first stage with
/// StageFailed "connect to target cluster", a message naming the problem,
/// nothing applied anywhere, and no credential from the kubeconfig in the
/// status or the events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_kubeconfigs_fail_closed_with_clear_messages() {
    let h = Harness::start().await;
    h.namespace(NS).await;
    let (remote, remote_client) = remote_cluster().await;
    app_source(&h, "r1", &[("a.yaml", configmap(NS, "app-config", "r1"))]).await;
    let good = remote.kubeconfig();
    let token = good
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .expect("the kubeconfig has a token")
        .to_string();
    let exec = good.replace(
        &format!("token: {token}"),
        "exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/sh\n      args: [-c, 'echo pwned']",
    );
    let insecure = good.replace(
        "certificate-authority-data:",
        "insecure-skip-tls-verify: true\n    x-was-certificate-authority-data:",
    );
    let token_file = good.replace(
        &format!("token: {token}"),
        "tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token",
    );
    let unreachable = good.replace(&remote.url(), "https://127.0.0.1:1");
    let wrong_token = good.replace(&token, "not-the-token");
    let cases: Vec<(&str, &str, String, &str)> = vec![
        (
            "no-key",
            "other",
            good.clone(),
            "kubeConfig secret \"prod-kubeconfig\" has no non-empty key \"value\"",
        ),
        (
            "unparseable",
            "value",
            format!("{{{{ not yaml {token}"),
            "the kubeconfig cannot be parsed",
        ),
        (
            "exec",
            "value",
            exec,
            "uses an exec credential plugin, which this controller never runs",
        ),
        (
            "insecure",
            "value",
            insecure,
            "sets insecure-skip-tls-verify, which this controller refuses",
        ),
        (
            "token-file",
            "value",
            token_file,
            "reads tokenFile from a file",
        ),
        (
            "unreachable",
            "value",
            unreachable,
            "the cluster at https://127.0.0.1:1/ cannot be reached",
        ),
        (
            "wrong-token",
            "value",
            wrong_token,
            "refused the kubeconfig's credentials",
        ),
    ];
    for (name, key, kubeconfig, want) in cases {
        let secret = format!("kc-{name}");
        put_kubeconfig(&h, &secret, key, &kubeconfig).await;
        h.stageset(
            NS,
            name,
            remote_spec(json!({"kubeConfig": {"secretRef": {"name": secret}}})),
        )
        .await;
        let ss = h
            .wait_ready_reason(
                NS,
                name,
                "StageFailed",
                "stage \"app\" connect to target cluster: ",
            )
            .await;
        let message = ready(&ss).unwrap().2;
        let want = want.replace("prod-kubeconfig", &secret);
        assert!(message.contains(&want), "{name}: {message}");
        let visible = format!(
            "{} {}",
            serde_json::to_string(&ss.status).unwrap(),
            serde_json::to_string(&h.events(NS, name).await).unwrap()
        );
        assert!(
            !visible.contains(&token),
            "{name}: the token leaked: {visible}"
        );
    }
    // A missing Secret.
    h.stageset(
        NS,
        "no-secret",
        remote_spec(json!({"kubeConfig": {"secretRef": {"name": "never-created"}}})),
    )
    .await;
    h.wait_ready_reason(
        NS,
        "no-secret",
        "StageFailed",
        "stage \"app\" connect to target cluster: kubeConfig secret \"never-created\" not found",
    )
    .await;
    assert!(config_map(&remote_client, "app-config").await.is_none());
    assert!(config_map(&h.client, "app-config").await.is_none());
}
