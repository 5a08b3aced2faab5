//! The listener: rmcp's streamable-HTTP service on a hyper HTTP/1 server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rmcp::transport::StreamableHttpServerConfig;
use rmcp::transport::StreamableHttpService;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;

use super::McpContext;
use super::tools::Tools;

/// Idle sessions are closed after this long (operations.md §3.6).
pub const IDLE_SESSION: Duration = Duration::from_secs(600);
/// How long a client may take to send the request headers.
const READ_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `addr` (Go's `host:port`; `:8084` is every interface) and serves
/// the tools on the current Tokio runtime. A bind failure is logged and
/// `None` returned: the controller keeps reconciling without MCP. The
/// server lives as long as the runtime (the controller's actix System).
pub fn start(addr: &str, ctx: McpContext) -> Option<SocketAddr> {
    let allow_mutations = ctx.allow_mutations;
    let listener = match std::net::TcpListener::bind(crate::http::socket_addr(addr))
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(tokio::net::TcpListener::from_std)
    {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(
                logger = "mcp",
                addr = %addr,
                error = %e,
                "MCP server stopped; the MCP endpoint is unavailable but reconciliation continues"
            );
            return None;
        }
    };
    let bound = listener.local_addr().ok()?;
    let mut sessions = LocalSessionManager::default();
    sessions.session_config.keep_alive = Some(IDLE_SESSION);
    // The server runs in a cluster behind a Service (any Host name): the
    // NetworkPolicy is the fence, not rmcp's loopback-only Host check.
    let config = StreamableHttpServerConfig::default().disable_allowed_hosts();
    let tools = Tools::new(ctx);
    let service = StreamableHttpService::new(move || Ok(tools.clone()), Arc::new(sessions), config);
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(logger = "mcp", error = %e, "accepting an MCP connection failed");
                    continue;
                }
            };
            let service = service.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let service = service.clone();
                    async move { Ok::<_, std::convert::Infallible>(service.handle(req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(READ_HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), svc);
                if let Err(e) = conn.await {
                    tracing::debug!(logger = "mcp", error = %e, "MCP connection ended");
                }
            });
        }
    });
    tracing::info!(
        logger = "mcp",
        addr = %bound,
        mutations = allow_mutations,
        "MCP server enabled"
    );
    Some(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> McpContext {
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        McpContext {
            cache: crate::cache::StageSetCache::new(1).0,
            client: kube::Client::try_from(config).unwrap(),
            store: None,
            allow_mutations: false,
            runbook_base: None,
            watch_namespaces: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_port_in_use_is_logged_not_fatal() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        assert_eq!(start(&addr, ctx()), None);
        let bound = start("127.0.0.1:0", ctx()).expect("a free port binds");
        assert_ne!(bound.port(), 0);
    }
}
