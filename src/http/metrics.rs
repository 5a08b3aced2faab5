//! `GET /metrics`: the registry in OpenMetrics text.

use actix_web::{HttpResponse, web};

use super::State;

pub(super) async fn handler(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok()
        // prometheus-client writes OpenMetrics text (counter families are
        // declared without `_total`, `# EOF` at the end); say so, and
        // Prometheus parses it as such.
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.encode())
}
