//! The HTTP surfaces (operations.md §3): metrics, health, gate and the
//! admission webhook. Every replica serves all of them, leader or not, and
//! they answer from in-memory state only (the StageSet cache, the metrics
//! registry), never by asking a StageSetActor.
//!
//! Each listener is its own actix-web server with request spans from
//! tracing-actix-web. A gate that cannot bind is logged and skipped (the
//! controller keeps reconciling); the others are required.

pub mod gate;
mod health;
mod metrics;
pub mod tls;
pub mod webhook;

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer, web};
use tracing_actix_web::TracingLogger;

use crate::cache::StageSetCache;
use crate::metrics::Metrics;

/// Which listeners to start (addresses in Go's `host:port` form; `:8080`
/// means every interface).
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    pub metrics: Option<String>,
    pub health: Option<String>,
    pub gate: Option<String>,
    pub webhook: Option<WebhookOptions>,
    /// The MCP listener (`--enable-mcp`); started by the controller, which
    /// holds what its tools need (src/mcp).
    pub mcp: Option<McpOptions>,
    /// Worker threads per listener.
    pub workers: usize,
}

/// The MCP listener and whether its write tools exist.
#[derive(Clone, Debug)]
pub struct McpOptions {
    pub addr: String,
    pub allow_mutations: bool,
}

/// The webhook listener and the certificate it serves.
#[derive(Clone, Debug)]
pub struct WebhookOptions {
    pub addr: String,
    pub certs: Arc<crate::tls::CertSlot>,
}

/// The addresses the listeners actually bound (port 0 picks one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bound {
    pub metrics: Option<SocketAddr>,
    pub health: Option<SocketAddr>,
    pub gate: Option<SocketAddr>,
    pub webhook: Option<SocketAddr>,
    pub mcp: Option<SocketAddr>,
}

/// What the handlers read.
#[derive(Clone)]
pub struct State {
    pub cache: StageSetCache,
    pub metrics: Arc<Metrics>,
}

/// Go's `:port` means all interfaces.
pub fn socket_addr(addr: &str) -> String {
    if let Some(port) = addr.strip_prefix(':') {
        format!("0.0.0.0:{port}")
    } else {
        addr.to_string()
    }
}

/// The running servers.
pub struct Servers {
    pub bound: Bound,
    handles: Vec<ServerHandle>,
}

impl Servers {
    /// Stops every listener, giving in-flight requests up to 5 s.
    pub async fn stop(&self) {
        for h in &self.handles {
            h.stop(true).await;
        }
    }

    /// [`Servers::stop`] from synchronous code (a thread of its own drives
    /// it, so it also works from inside another runtime): new connections
    /// are refused at once, requests in flight get up to `within` to finish
    /// (operations.md §1.9).
    pub fn stop_blocking(&self, within: std::time::Duration) {
        if self.handles.is_empty() {
            return;
        }
        let handles = self.handles.clone();
        let stopper = std::thread::Builder::new()
            .name("listeners-stop".into())
            .spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(async {
                    let all = futures::future::join_all(handles.iter().map(|h| h.stop(true)));
                    if tokio::time::timeout(within, all).await.is_err() {
                        tracing::warn!(waited = ?within, "listeners did not finish their requests in time; closing them");
                    }
                });
            });
        if let Ok(stopper) = stopper {
            let _ = stopper.join();
        }
    }
}

/// Starts the listeners on the current actix System.
pub fn start(options: &ServerOptions, state: State) -> Result<Servers, String> {
    let workers = options.workers.max(1);
    let mut bound = Bound::default();
    let mut handles = Vec::new();
    if let Some(addr) = &options.metrics {
        let st = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(st.clone()))
                .wrap(TracingLogger::default())
                .route("/metrics", web::get().to(metrics::handler))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(5)
        .bind(socket_addr(addr))
        .map_err(|e| format!("binding the metrics listener {addr}: {e}"))?;
        bound.metrics = server.addrs().first().copied();
        let server = server.run();
        handles.push(server.handle());
        actix_rt::spawn(server);
    }
    if let Some(addr) = &options.health {
        let st = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(st.clone()))
                .route("/healthz", web::get().to(health::healthz))
                .route("/healthz/{check}", web::get().to(health::healthz))
                .route("/readyz", web::get().to(health::readyz))
                .route("/readyz/{check}", web::get().to(health::readyz))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(5)
        .bind(socket_addr(addr))
        .map_err(|e| format!("binding the health probe listener {addr}: {e}"))?;
        bound.health = server.addrs().first().copied();
        let server = server.run();
        handles.push(server.handle());
        actix_rt::spawn(server);
    }
    if let Some(addr) = &options.gate {
        let st = state.clone();
        match HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(st.clone()))
                .wrap(TracingLogger::default())
                .route("/gate/{tail:.*}", web::route().to(gate::handler))
        })
        .workers(workers)
        .disable_signals()
        .shutdown_timeout(5)
        .client_request_timeout(std::time::Duration::from_secs(5))
        .bind(socket_addr(addr))
        {
            Ok(server) => {
                bound.gate = server.addrs().first().copied();
                let server = server.run();
                handles.push(server.handle());
                actix_rt::spawn(server);
            }
            Err(e) => tracing::error!(
                logger = "gate",
                addr = %addr,
                error = %e,
                "stage-gate server stopped; the gate endpoint is unavailable but reconciliation continues"
            ),
        }
    }
    if let Some(hook) = &options.webhook {
        let st = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(st.clone()))
                .app_data(web::PayloadConfig::new(webhook::MAX_BODY))
                .wrap(TracingLogger::default())
                .default_service(web::to(webhook::handler))
        })
        .workers(workers)
        .disable_signals()
        .shutdown_timeout(5)
        .bind_rustls_0_23(
            socket_addr(&hook.addr),
            tls::server_config(hook.certs.clone()),
        )
        .map_err(|e| format!("binding the webhook listener {}: {e}", hook.addr))?;
        bound.webhook = server.addrs().first().copied();
        let server = server.run();
        handles.push(server.handle());
        actix_rt::spawn(server);
    }
    Ok(Servers { bound, handles })
}
