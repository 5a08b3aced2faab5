//! The image verification gate (delivery.md §5.8, S13) is not built yet.
//! Until it is, it fails closed: while any `ImageVerificationPolicy` exists,
//! every stage fails with `ImageUnverified` before anything is applied,
//! rather than delivering images a platform admin asked to have verified.
//! Without any policy there is nothing to verify and stages pass, as
//! upstream's gate does when no policy matches (without
//! `--require-image-verification`, which this binary refuses).

use kube::api::{Api, ListParams};

use crate::api::ImageVerificationPolicy;
use crate::reconcile::error::Error;

/// The message of a stage held by the gate; `names` are some of the
/// policies that exist.
pub fn unsupported_message(names: &[String], more: bool) -> String {
    format!(
        "image verification is not supported yet by this controller; ImageVerificationPolicies exist ({}{}), so nothing is applied unverified (delete them to deliver without verification)",
        names.join(", "),
        if more { ", ..." } else { "" }
    )
}

/// Fails closed while any ImageVerificationPolicy exists (read with the
/// controller's identity: the policies are cluster-scoped and belong to the
/// platform admin). A policy kind that is not installed means no policy.
pub async fn gate(client: &kube::Client) -> Result<(), Error> {
    let api: Api<ImageVerificationPolicy> = Api::all(client.clone());
    match api.list(&ListParams::default().limit(3)).await {
        Ok(list) if list.items.is_empty() => Ok(()),
        Ok(list) => {
            let names: Vec<String> = list
                .items
                .iter()
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            let more = list
                .metadata
                .continue_
                .as_deref()
                .is_some_and(|c| !c.is_empty());
            Err(Error::Unverified(unsupported_message(&names, more)))
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::api("listing ImageVerificationPolicies", &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_the_policies() {
        assert_eq!(
            unsupported_message(&["corp".into(), "team".into()], true),
            "image verification is not supported yet by this controller; ImageVerificationPolicies exist (corp, team, ...), so nothing is applied unverified (delete them to deliver without verification)"
        );
    }
}
