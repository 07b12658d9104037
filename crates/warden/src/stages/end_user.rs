//! Names the end user. Identity is bound to authentication: the id is only ever
//! read through the calling key, and the safety identifier hashes the key name with it,
//! so no client can speak for another key's user.

use std::sync::Arc;

use crate::config::limits::LimitsConfig;
use crate::config::EndUserPolicy;
use crate::error::WardenError;
use crate::identity::{validate_user_id, EndUser, UserSource};
use crate::pipeline::{RequestContext, Stage, Step, Verdict};

pub const USER_HEADER: &str = "x-warden-user";
pub const USER_TOKEN_HEADER: &str = "x-warden-user-token";

pub struct ResolveEndUser {
    limits: Arc<LimitsConfig>,
}

impl ResolveEndUser {
    pub fn new(limits: Arc<LimitsConfig>) -> Self {
        Self { limits }
    }

    fn decide(&self, ctx: &mut RequestContext) -> Result<Verdict, WardenError> {
        let key = ctx.key.clone().ok_or(WardenError::Internal)?;
        let end_user = if let Some(verifier) = &key.jwt {
            if ctx.headers.contains_key(USER_HEADER) {
                return Err(WardenError::EndUserHeaderNotAccepted {
                    key: key.name.clone(),
                });
            }
            match (ctx.user_claims.take(), ctx.header(USER_TOKEN_HEADER)) {
                (Some(claims), _) => Some(claims),
                (None, Some(token)) => Some(
                    verifier
                        .verify(token)
                        .map_err(WardenError::InvalidUserToken)?,
                ),
                (None, None) => None,
            }
            .map(|claims| {
                let user = EndUser {
                    id: claims.user_id.clone(),
                    source: UserSource::Token,
                };
                ctx.user_claims = Some(claims);
                user
            })
        } else if let Some(value) = ctx.headers.get(USER_HEADER) {
            let id = value.to_str().map_err(|_| {
                WardenError::InvalidEndUser("the X-Warden-User header is not visible ASCII".into())
            })?;
            Some(EndUser {
                id: id.to_owned(),
                source: UserSource::Header,
            })
        } else if key.trusted_user_field {
            let body = ctx.body.as_ref();
            let named = match body {
                Some(body) => match body.str_field("safety_identifier")? {
                    Some(id) => Some(id),
                    None => body.str_field("user")?,
                },
                None => None,
            };
            named.map(|id| EndUser {
                id,
                source: UserSource::BodyField,
            })
        } else {
            None
        };

        match end_user {
            Some(user) => {
                validate_user_id(&user.id)?;
                ctx.end_user = Some(user);
            }
            None if key.end_user == EndUserPolicy::Required => {
                return Err(WardenError::EndUserRequired {
                    key: key.name.clone(),
                })
            }
            None => {}
        }
        // Once, here: lockdown refuses by it, limits and pacing count by it.
        let claimed = ctx.user_claims.as_ref().and_then(|c| c.tier.as_deref());
        ctx.tier = Some(self.limits.tier_of(claimed, &key.name).to_owned());
        Ok(Verdict::Allow)
    }
}

impl Stage for ResolveEndUser {
    fn name(&self) -> &'static str {
        "end_user"
    }

    fn run<'a>(&'a self, ctx: &'a mut RequestContext) -> Step<'a> {
        Step::Ready(self.decide(ctx))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn stage() -> ResolveEndUser {
        let limits = crate::config::Config::embedded_default().unwrap().limits;
        ResolveEndUser::new(Arc::new(limits))
    }
    use crate::stages::testing::{context, key};

    #[test]
    fn header_names_the_user() {
        let mut ctx = context(
            key("app", EndUserPolicy::Required, false),
            br#"{"model":"m"}"#,
        );
        ctx.headers.insert(USER_HEADER, "alice".parse().unwrap());
        stage().decide(&mut ctx).unwrap();
        assert_eq!(ctx.end_user.unwrap().id, "alice");
    }

    #[test]
    fn required_user_missing_is_refused() {
        let mut ctx = context(
            key("app", EndUserPolicy::Required, false),
            br#"{"model":"m","user":"x"}"#,
        );
        let err = stage().decide(&mut ctx).unwrap_err();
        assert!(matches!(err, WardenError::EndUserRequired { .. }));
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn body_field_counts_only_on_trusted_keys() {
        let body = br#"{"model":"m","user":"carol"}"#;
        let mut untrusted = context(key("app", EndUserPolicy::Optional, false), body);
        stage().decide(&mut untrusted).unwrap();
        assert!(untrusted.end_user.is_none());

        let mut trusted = context(key("svc", EndUserPolicy::Optional, true), body);
        stage().decide(&mut trusted).unwrap();
        assert_eq!(trusted.end_user.unwrap().id, "carol");

        let mut prefers_safety_id = context(
            key("svc", EndUserPolicy::Required, true),
            br#"{"user":"carol","safety_identifier":"dave"}"#,
        );
        stage().decide(&mut prefers_safety_id).unwrap();
        assert_eq!(prefers_safety_id.end_user.unwrap().id, "dave");
    }

    #[test]
    fn header_wins_over_body_and_bad_ids_are_refused() {
        let mut ctx = context(
            key("svc", EndUserPolicy::Optional, true),
            br#"{"user":"carol"}"#,
        );
        ctx.headers.insert(USER_HEADER, "alice".parse().unwrap());
        stage().decide(&mut ctx).unwrap();
        assert_eq!(ctx.end_user.unwrap().id, "alice");

        let mut empty = context(key("app", EndUserPolicy::Optional, false), b"{}");
        empty.headers.insert(USER_HEADER, " ".parse().unwrap());
        assert!(matches!(
            stage().decide(&mut empty).unwrap_err(),
            WardenError::InvalidEndUser(_)
        ));
    }
}
