//! Start-up prerequisite diagnostics (operations.md §3.3.1): until every
//! watched kind of ours is served and the controller may list and watch it,
//! say which is missing and why, every 30 s, on every replica. The watches
//! themselves keep retrying on their own; this only turns a silent wait into a
//! log line an operator can act on.
//!
//! A pass asks discovery afresh (`GET /apis/stages.metio.wtf/v1`, nothing
//! cached) and, for each kind that is served, a SelfSubjectAccessReview for
//! `list` and for `watch` — cluster-wide, or in each watched namespace when
//! `--watch-namespaces` restricts the namespaced kinds. When the authorization
//! API is not served the RBAC half is skipped. Flux source kinds are optional
//! and not checked.

use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

/// The API group and version of our kinds.
pub const GROUP: &str = crate::api::GROUP;
pub const VERSION: &str = "v1";

/// How often an unmet pass is repeated.
pub const RECHECK: Duration = Duration::from_secs(30);

/// The watched kinds: plural and whether it is namespaced.
pub const WATCHED: [(&str, bool); 4] = [
    ("stagesets", true),
    ("stageinventories", true),
    ("stageledgers", true),
    ("fleetrollouts", false),
];

/// The verbs the watches need.
const VERBS: [&str; 2] = ["list", "watch"];

/// One prerequisite that does not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unmet {
    /// `<plural>.<group>`.
    pub resource: String,
    /// What is wrong, in the spec's words.
    pub reason: String,
}

/// One pass over every prerequisite. `namespaces` is `--watch-namespaces`
/// (empty: the whole cluster). Empty when everything holds.
pub async fn check(client: &kube::Client, namespaces: &[String]) -> Vec<Unmet> {
    let served = match served_resources(client).await {
        Ok(served) => served,
        Err(reason) => {
            return WATCHED
                .iter()
                .map(|(plural, _)| unmet(plural, reason.clone()))
                .collect();
        }
    };
    let mut out = Vec::new();
    let mut authorization_served = true;
    for (plural, namespaced) in WATCHED {
        if !served.iter().any(|r| r == plural) {
            out.push(unmet(plural, "CRD is not installed".to_string()));
            continue;
        }
        if !authorization_served {
            continue;
        }
        let scopes: Vec<Option<&str>> = if namespaced && !namespaces.is_empty() {
            namespaces.iter().map(|n| Some(n.as_str())).collect()
        } else {
            vec![None]
        };
        'verbs: for verb in VERBS {
            for namespace in &scopes {
                match allowed(client, plural, verb, *namespace).await {
                    Access::Allowed => {}
                    Access::Denied => {
                        let scope = namespace
                            .map(|n| format!(" in namespace {n}"))
                            .unwrap_or_default();
                        out.push(unmet(
                            plural,
                            format!(
                                "operator ServiceAccount may not {verb} it{scope} — grant list+watch in the operator ClusterRole"
                            ),
                        ));
                        break 'verbs;
                    }
                    Access::Unchecked(reason) => {
                        out.push(unmet(plural, reason));
                        break 'verbs;
                    }
                    Access::NotServed => {
                        authorization_served = false;
                        break 'verbs;
                    }
                }
            }
        }
    }
    out
}

/// Repeats [`check`] every `every` until a pass finds nothing unmet: one WARN
/// line per unmet prerequisite per pass, one INFO line when a pass succeeds
/// after a warning. Returns how many passes warned.
pub async fn watch(client: kube::Client, namespaces: Vec<String>, every: Duration) -> usize {
    watch_with(client, namespaces, every, |_| {}).await
}

/// [`watch`], telling `on_pass` what each pass found.
pub async fn watch_with(
    client: kube::Client,
    namespaces: Vec<String>,
    every: Duration,
    mut on_pass: impl FnMut(&[Unmet]),
) -> usize {
    let mut warned = 0;
    loop {
        let unmet = check(&client, &namespaces).await;
        on_pass(&unmet);
        if unmet.is_empty() {
            if warned > 0 {
                tracing::info!(
                    passes = warned,
                    "all watched resources are now installed and permitted; reconciliation can proceed"
                );
            }
            return warned;
        }
        warned += 1;
        for u in &unmet {
            tracing::warn!(resource = %u.resource, reason = %u.reason, "waiting for a watched resource before reconciling");
        }
        tokio::time::sleep(every).await;
    }
}

fn unmet(plural: &str, reason: String) -> Unmet {
    Unmet {
        resource: format!("{plural}.{GROUP}"),
        reason,
    }
}

/// The plurals discovery lists for our group version; a group that is not
/// served lists nothing.
async fn served_resources(client: &kube::Client) -> Result<Vec<String>, String> {
    match client
        .list_api_group_resources(&format!("{GROUP}/{VERSION}"))
        .await
    {
        Ok(list) => Ok(list.resources.into_iter().map(|r| r.name).collect()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Vec::new()),
        Err(e) => Err(format!("cannot look it up in discovery: {e}")),
    }
}

enum Access {
    Allowed,
    Denied,
    /// The review could not be made (the reason says why).
    Unchecked(String),
    /// The authorization API is not served: the check is skipped.
    NotServed,
}

async fn allowed(
    client: &kube::Client,
    plural: &str,
    verb: &str,
    namespace: Option<&str>,
) -> Access {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(GROUP.to_string()),
                version: Some(VERSION.to_string()),
                resource: Some(plural.to_string()),
                verb: Some(verb.to_string()),
                namespace: namespace.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    match api.create(&PostParams::default(), &review).await {
        Ok(answer) => match answer.status {
            Some(status) if status.allowed => Access::Allowed,
            _ => Access::Denied,
        },
        Err(kube::Error::Api(s)) if matches!(s.code, 404 | 405) => Access::NotServed,
        Err(e) => Access::Unchecked(format!("cannot check RBAC: {e}")),
    }
}
