//! `/healthz` (the process answers) and `/readyz` (every watch scope of the
//! StageSet cache finished its first list).

use actix_web::{HttpResponse, web};

use super::State;

pub(super) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

pub(super) async fn readyz(state: web::Data<State>) -> HttpResponse {
    if state.cache.is_synced() {
        HttpResponse::Ok().content_type("text/plain").body("ok")
    } else {
        HttpResponse::InternalServerError()
            .content_type("text/plain")
            .body("controller caches have not synced")
    }
}
