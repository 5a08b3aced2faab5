//! The `stages.metio.wtf/v1` API: Rust types for every kind, the shared embedded
//! types, condition and event reasons, the well-known label/annotation keys, and
//! the generated CustomResourceDefinitions. Nothing here talks to a cluster.

pub mod action;
pub mod common;
pub mod crd;
pub mod fleet;
pub mod imagepolicy;
pub mod inventory;
pub mod keys;
pub mod ledger;
pub mod metric;
pub mod reasons;
pub mod selector;
pub mod stageset;
pub mod status;

pub use action::*;
pub use common::*;
pub use fleet::*;
pub use imagepolicy::*;
pub use inventory::*;
pub use ledger::*;
pub use metric::*;
pub use stageset::*;
pub use status::*;

/// The API group of every kind here.
pub const GROUP: &str = "stages.metio.wtf";
/// The only served and stored version.
pub const VERSION: &str = "v1";
/// `apiVersion` of every kind here.
pub const API_VERSION: &str = "stages.metio.wtf/v1";
