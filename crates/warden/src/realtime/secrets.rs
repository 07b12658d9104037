//! `POST /v1/realtime/client_secrets`: an ephemeral key for a browser or phone, minted only
//! for an authenticated end user (token, or virtual key + `X-Warden-User`). The pipeline
//! already filtered and moderated the session's instructions and checked its model; here
//! the expiry is capped and the user's hourly session count is taken.

use crate::error::WardenError;
use crate::gateway::Gateway;
use crate::pipeline::RequestContext;
use http::StatusCode;

use super::RealtimeRefusal;

pub fn admit(gateway: &Gateway, ctx: &mut RequestContext) -> Result<(), WardenError> {
    let config = gateway.realtime.config();
    if !config.enabled {
        return Err(disabled());
    }
    let (Some(key), Some(user)) = (ctx.key.as_deref(), ctx.end_user.as_ref()) else {
        return Err(RealtimeRefusal::error(
            StatusCode::FORBIDDEN,
            "end_user_required",
            "Realtime client secrets are minted only for an identified end user: send an end-user token (X-Warden-User-Token) or X-Warden-User with this key.",
        ));
    };
    gateway.realtime.start(&key.name, &user.id)?;
    let cap = config.client_secret_max_ttl.as_secs();
    let body = ctx.body.as_mut().ok_or(WardenError::Internal)?;
    let asked = body
        .raw("expires_after")
        .and_then(|raw| serde_json::from_str::<serde_json::Value>(raw.get()).ok())
        .and_then(|v| v.get("seconds").and_then(serde_json::Value::as_u64));
    if asked.is_none_or(|s| s > cap) {
        let capped = serde_json::json!({"anchor": "created_at", "seconds": cap}).to_string();
        let raw =
            serde_json::value::RawValue::from_string(capped).map_err(|_| WardenError::Internal)?;
        body.set_raw("expires_after", raw);
    }
    Ok(())
}

pub fn disabled() -> WardenError {
    RealtimeRefusal::error(
        StatusCode::NOT_FOUND,
        "realtime_disabled",
        "The Realtime API is turned off on this gateway ([realtime] enabled = false).",
    )
}
