//! ImageVerificationPolicy: which images must carry a valid Sigstore signature,
//! and from whom.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::Duration;

/// Images matching `images` (and not `skip`) must verify against at least one
/// authority before any stage applies them.
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "stages.metio.wtf",
    version = "v1",
    kind = "ImageVerificationPolicy",
    plural = "imageverificationpolicies",
    singular = "imageverificationpolicy",
    shortname = "ivp",
    derive = "PartialEq",
    derive = "Default",
    doc = "ImageVerificationPolicy requires the container images it governs to carry a Sigstore signature from one of its authorities before a stage applies them.",
    printcolumn(name = "Images", type_ = "string", json_path = ".spec.images"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ImageVerificationPolicySpec {
    /// Globs over image references without tag or digest (`*` any run without `/`,
    /// `**` any run, `?` one character).
    #[schemars(length(min = 1))]
    pub images: Vec<String>,
    /// Accepted signers; an image must verify against at least one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorities: Option<Vec<VerificationAuthority>>,
    /// Attestations to require. Not enforced in this version; admission refuses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_attestations: Option<Vec<AttestationRequirement>>,
    /// Globs exempted from this policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip: Option<Vec<String>>,
}

/// A signer: exactly one of a keyless identity or a public key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VerificationAuthority {
    /// A Fulcio certificate identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyless: Option<KeylessAuthority>,
    /// A cosign public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<KeyAuthority>,
}

/// The OIDC issuer and subject a Fulcio certificate must carry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeylessAuthority {
    /// Exact OIDC issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Regular expression (RE2) the issuer must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_reg_exp: Option<String>,
    /// Exact certificate subject (SAN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Regular expression (RE2) the subject must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_reg_exp: Option<String>,
}

/// A PEM-encoded public key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyAuthority {
    /// PEM-encoded PKIX public key.
    pub public_key: String,
}

/// An attestation an image must carry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttestationRequirement {
    /// The in-toto predicate type.
    pub predicate_type: String,
    /// Maximum age of the attestation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
}
