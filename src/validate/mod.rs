//! Every admission rule as a pure function (api.md §11, delivery.md §2.20):
//! the StageSet and ImageVerificationPolicy rule sets, and the parsers they
//! need (cron schedules, semantic versions, label selectors, CEL ready
//! expressions, kubectl JSONPath). Nothing here talks to a cluster or a runtime.
//!
//! The admission webhook (`src/http/webhook.rs`) and the reconciler's R5
//! fallback call the same functions, so a StageSet that bypassed admission
//! is refused at reconcile time with the message admission would have given.
//!
//! A StageSet passes when every rule holds *and* it uses no field whose
//! behaviour this controller does not implement yet ([`unsupported`],
//! docs/decisions.md 15). The rules run first, so a spec that is wrong gets the
//! rule's message rather than "not supported yet".

pub mod cel;
pub mod cron;
mod decode;
pub mod gofmt;
mod imagepolicy;
pub mod jsonpath;
pub mod selector;
pub mod semver;
mod stageset;
pub mod unsupported;

use serde_json::Value;

use crate::api::{ImageVerificationPolicy, StageSet};

pub use imagepolicy::validate_image_verification_policy;
pub use stageset::{
    MAX_ACTIONS_PER_MIGRATION, MAX_MIGRATION_ACTION_RETRIES, MAX_MIGRATIONS_PER_LADDER,
    load_location, stageset_rules, validate_ladder, validate_migration,
};

/// Why an object is refused: a value that does not even decode (upstream
/// answers these with HTTP 400), or a failed rule (403 Forbidden).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalid {
    Decode(String),
    Rule(String),
}

impl Invalid {
    /// The user-facing message.
    pub fn message(self) -> String {
        match self {
            Invalid::Decode(m) | Invalid::Rule(m) => m,
        }
    }
}

/// The admission verdict on a typed StageSet: every rule, then the
/// not-supported-yet table. The error is the user-facing message (the
/// admission denial, or the `InvalidSpec` message of the reconciler's
/// fallback).
pub fn validate_stageset(ss: &StageSet) -> Result<(), String> {
    stageset_rules(ss)?;
    unsupported::check(ss)
}

/// The admission verdict on a StageSet as the API server sends it (JSON that
/// may carry enum values the typed API cannot hold). `request_namespace`
/// fills in a namespace the object itself does not carry.
pub fn stageset_object(object: &Value, request_namespace: Option<&str>) -> Result<(), Invalid> {
    let (mut ss, bad) = decode::decode(object).map_err(Invalid::Decode)?;
    if ss.metadata.namespace.as_deref().is_none_or(str::is_empty) {
        ss.metadata.namespace = request_namespace.map(str::to_string);
    }
    stageset::check(&ss, &bad)?;
    unsupported::check(&ss).map_err(Invalid::Rule)
}

/// The admission verdict on an ImageVerificationPolicy as the API server
/// sends it.
pub fn image_policy_object(object: &Value) -> Result<(), Invalid> {
    let mut object = object.clone();
    if let Some(o) = object.as_object_mut() {
        o.remove("status");
    }
    let policy = serde_json::from_value::<ImageVerificationPolicy>(object)
        .map_err(|e| Invalid::Decode(format!("decoding the ImageVerificationPolicy: {e}")))?;
    imagepolicy::check(&policy)
}

#[cfg(test)]
mod tests;
