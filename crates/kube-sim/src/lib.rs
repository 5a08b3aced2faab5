//! kube-sim: a loopback Kubernetes API server that speaks the real HTTP protocol,
//! so that real clients (kubectl, kube-rs) can be used in tests and local
//! development where no real kube-apiserver can run.
//!
//! Start one with [`KubeSim::start`]; it serves HTTPS on its own runtime thread,
//! writes an admin kubeconfig, and keeps every object in memory.

pub mod admission;
pub mod api;
pub mod defaults;
pub mod discovery;
pub mod error;
pub mod faults;
pub mod registry;
pub mod request;
pub mod selectors;
pub mod server;
pub mod sim;
pub mod store;
pub mod table;
pub mod tls;
pub mod typeinfo;
pub mod workloads;

pub use error::ApiError;
pub use faults::{FaultConfig, FaultCounts, FaultKind, RequestRecord};
pub use server::{KubeSim, Options, StartError, UserSpec, read_manifests};
pub use sim::SimConfig;
pub mod builtin_types;
pub mod convert;
pub mod fieldset;
pub mod godecode;
pub mod immutable;
pub mod openapi_v2;
pub mod protobuf;
pub mod rbac;
pub mod schema;
pub mod smp;
pub mod ssa;
pub mod validation;
