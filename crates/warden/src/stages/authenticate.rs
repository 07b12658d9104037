//! Which virtual key is calling. The client's Authorization never goes further.

use std::sync::Arc;

use super::end_user::USER_TOKEN_HEADER;
use crate::error::WardenError;
use crate::keys::KeyRegistry;
use crate::pipeline::{RequestContext, Stage, Step, Verdict};

pub struct Authenticate {
    keys: Arc<KeyRegistry>,
}

impl Authenticate {
    pub fn new(keys: Arc<KeyRegistry>) -> Self {
        Self { keys }
    }

    fn decide(&self, ctx: &mut RequestContext) -> Result<Verdict, WardenError> {
        if let Some(value) = ctx.headers.get(http::header::AUTHORIZATION) {
            let bearer = value
                .to_str()
                .ok()
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .ok_or(WardenError::InvalidApiKey)?;
            match self.keys.lookup(bearer) {
                Some(key) => ctx.key = Some(key),
                None => {
                    if let Some(name) = self.keys.retired(bearer) {
                        // A revoked or expired key still in use: likely leaked.
                        ctx.findings
                            .push(crate::pipeline::Finding::RetiredKey { name });
                    }
                    return Err(WardenError::InvalidApiKey);
                }
            }
            return Ok(Verdict::Allow);
        }
        // No API key: a browser or phone presenting only a signed user token. The key is
        // the one whose verifier accepts the signature.
        let Some(token) = ctx.header(USER_TOKEN_HEADER) else {
            return Err(WardenError::MissingApiKey);
        };
        let mut last_error = None;
        for key in self.keys.token_keys() {
            let Some(verifier) = &key.jwt else { continue };
            match verifier.verify(token) {
                Ok(claims) => {
                    ctx.user_claims = Some(claims);
                    ctx.key = Some(key.clone());
                    return Ok(Verdict::Allow);
                }
                Err(why) => last_error = Some(why),
            }
        }
        Err(match last_error {
            Some(why) => WardenError::InvalidUserToken(why),
            None => WardenError::MissingApiKey,
        })
    }
}

impl Stage for Authenticate {
    fn name(&self) -> &'static str {
        "authenticate"
    }

    fn run<'a>(&'a self, ctx: &'a mut RequestContext) -> Step<'a> {
        Step::Ready(self.decide(ctx))
    }
}
