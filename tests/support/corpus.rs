//! Corpus facts shared by the test binaries that check the API (`tests/api.rs`:
//! our schema), admission (`tests/webhook.rs`: schema plus webhook) and the
//! chart (`tests/helm.rs`: documented values files).
//!
//! The corpus is the upstream project's collection of real manifests; it is
//! not part of this repository. When the reference tree sits beside the
//! repository (`../shared/reference`), the conformance tests check against
//! it; without it they are skipped with one line on stderr, unless
//! `STAGESET_REQUIRE_REFERENCE=1` (set by `.ci/run`) makes its absence a
//! failure. Our own fixtures (`tests/fixtures/`) run either way.

use std::path::{Path, PathBuf};

/// The upstream reference tree (the corpus and the upstream CRDs), if it is
/// present; see the module documentation. `what` names the skipped check.
#[allow(dead_code)]
pub fn reference(what: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference");
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("STAGESET_REQUIRE_REFERENCE").is_ok_and(|v| v == "1") {
        panic!(
            "STAGESET_REQUIRE_REFERENCE=1, but the upstream reference tree is missing at {}",
            dir.display()
        );
    }
    eprintln!(
        "skipped: {what} (the upstream reference tree is not at {})",
        dir.display()
    );
    None
}

#[allow(dead_code)] // not read by tests/helm.rs
/// Invalid corpus files whose rejection is a rule of the CRD schema itself (a
/// required field, an enum, a pattern, a bound, a list-map key, a CEL rule).
/// Every other invalid file passes the schema and is left to the admission webhook.
pub const SCHEMA_LEVEL_INVALID: &[&str] = &[
    "001-fleet-member-fromobject-missing-kind-name.yaml",
    "004-fleet-rollback-without-previous-version.yaml",
    "005-dependson-empty-name.yaml",
    "020-decryption-provider-vault.yaml",
    "021-decryption-provider-empty.yaml",
    "022-decryption-secretref-without-name.yaml",
    "023-errorbudget-missing-source.yaml",
    "024-errorbudget-missing-address.yaml",
    "025-errorbudget-missing-query.yaml",
    "029-errorbudget-onsourceerror-unknown.yaml",
    "030-errorbudget-secretref-without-name.yaml",
    "031-ontimeout-spec-unknown.yaml",
    "032-ontimeout-stage-lowercase.yaml",
    "033-analysis-no-checks.yaml",
    "036-analysis-check-missing-source.yaml",
    "038-analysis-onfailure-unknown.yaml",
    "039-analysis-onsourceerror-unknown.yaml",
    "042-metric-source-webhook-missing-url.yaml",
    "043-metric-source-webhook-missing-jsonpath.yaml",
    "044-metric-source-webhook-secretref-without-name.yaml",
    "050-restartgate-duplicate-check.yaml",
    "052-restartgate-onfailure-unknown.yaml",
    "053-restartgate-check-onfailure-unknown.yaml",
    "056-eventgate-check-no-reasons.yaml",
    "057-eventgate-duplicate-check.yaml",
    "059-eventgate-onfailure-unknown.yaml",
    "060-eventgate-check-onfailure-unknown.yaml",
    "062-kubeconfig-configmapref-without-name.yaml",
    "063-kubeconfig-secretref-without-name.yaml",
    "064-kubeconfig-both-refs.yaml",
    "065-kubeconfig-neither-ref.yaml",
    "082-scope-unknown-value.yaml",
    "084-completion-anchor-missing-name.yaml",
    "090-readychecks-check-missing-kind.yaml",
    "091-readychecks-check-missing-name.yaml",
    "115-patch-type-strategic.yaml",
    "116-patch-type-uppercase.yaml",
    "117-substitutefrom-kind-lowercase.yaml",
    "118-substitutefrom-kind-pod.yaml",
    "119-windowscope-lowercase.yaml",
    "120-window-type-lowercase.yaml",
    "121-window-type-block.yaml",
    "122-conflictpolicy-default-delete.yaml",
    "123-conflictpolicy-rule-action-lowercase.yaml",
    "124-decryption-provider-uppercase.yaml",
    "125-http-method-lowercase.yaml",
    "126-http-method-options.yaml",
    "127-http-expected-status-below-range.yaml",
    "128-http-expected-status-above-range.yaml",
    "129-action-retries-negative.yaml",
    "130-stages-empty.yaml",
    "131-stages-missing.yaml",
    "132-stage-name-uppercase.yaml",
    "133-ivp-no-images.yaml",
];

/// Valid corpus StageSets that set a field this controller does not
/// implement yet (`validate::unsupported::NOT_SUPPORTED_YET`): admission
/// refuses them with exactly this message (docs/decisions.md 15). The list
/// shrinks as features land; every other valid file is admitted. (Read by
/// tests/webhook.rs only.)
#[allow(dead_code)]
pub const NOT_SUPPORTED_YET: &[(&str, &str)] = &[(
    "102-stageset-kubeconfig-configmapref.yaml",
    "spec.kubeConfig.configMapRef is not supported yet by this controller",
)];
