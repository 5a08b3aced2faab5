//! stageset-controller: ordered, gated, multi-stage delivery of Flux artifacts.
//!
//! The binary in `src/main.rs` is a thin shell over this library so that the
//! integration tests under `tests/` exercise the same code the controller runs.

pub mod actors;
pub mod api;
pub mod cache;
pub mod cli;
pub mod config;
pub mod controller;
pub mod dev;
pub mod duration;
pub mod http;
pub mod kube_client;
pub mod leader;
pub mod logging;
pub mod mcp;
pub mod metrics;
pub mod reconcile;
pub mod telemetry;
pub mod tls;
pub mod validate;
