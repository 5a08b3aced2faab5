//! The `http` verb (api.md §2.9.3): wired to the outbound guard's client.

use crate::api::HttpAction;

use super::{ActionCtx, Attempt};

/// One attempt of an http action.
pub(super) async fn send(_ctx: &ActionCtx<'_>, _h: &HttpAction) -> Result<(), Attempt> {
    // WIP: the guarded client lands with the outbound-guard change; until
    // then http actions stay refused by admission (validate::unsupported).
    Err(Attempt::Stop(
        "http actions are not wired to the outbound guard yet".into(),
    ))
}
