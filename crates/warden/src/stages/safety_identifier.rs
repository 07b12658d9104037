//! Gives OpenAI a per-user identity it can act on instead of the organization. Chat and
//! responses get `safety_identifier` (a client `user` is replaced too), images both fields,
//! endpoints that still use `user` get the same value there. A client's own
//! `safety_identifier` never passes, on any endpoint: OpenAI would pin its flags on
//! whoever the client named.

use std::sync::Arc;

use crate::endpoint::UserField;
use crate::error::WardenError;
use crate::identity::safety_id::SafetyIdentifiers;
use crate::pipeline::{RequestContext, Stage, Step, Verdict};

/// Where Realtime takes the end user's identifier (its session config has no field).
pub const SAFETY_HEADER: http::HeaderName =
    http::HeaderName::from_static("openai-safety-identifier");

pub struct InjectSafetyIdentifier {
    ids: Arc<SafetyIdentifiers>,
}

impl InjectSafetyIdentifier {
    pub fn new(ids: Arc<SafetyIdentifiers>) -> Self {
        Self { ids }
    }

    fn rewrite(&self, ctx: &mut RequestContext) -> Result<Verdict, WardenError> {
        let field = ctx.endpoint.user_field();
        if field == UserField::None {
            let removed = ctx
                .body
                .as_mut()
                .is_some_and(|body| body.remove("safety_identifier"));
            return Ok(if removed {
                Verdict::Rewrite
            } else {
                Verdict::Allow
            });
        }
        let key = ctx.key.as_deref().ok_or(WardenError::Internal)?;
        let id = self
            .ids
            .for_user(&key.name, ctx.end_user.as_ref().map(|u| u.id.as_str()));
        if field == UserField::Header {
            let value = http::HeaderValue::from_str(&id).map_err(|_| WardenError::Internal)?;
            ctx.headers.insert(SAFETY_HEADER, value);
            ctx.safety_identifier = Some(id);
            return Ok(Verdict::Rewrite);
        }
        let body = ctx.body.as_mut().ok_or(WardenError::Internal)?;
        match field {
            UserField::SafetyIdentifier => {
                body.set_str("safety_identifier", &id);
                if body.contains("user") {
                    body.set_str("user", &id);
                }
            }
            UserField::SafetyIdentifierAndUser => {
                body.set_str("safety_identifier", &id);
                body.set_str("user", &id);
            }
            UserField::User => {
                body.remove("safety_identifier");
                body.set_str("user", &id);
            }
            UserField::None | UserField::Header => {}
        }
        ctx.safety_identifier = Some(id);
        Ok(Verdict::Rewrite)
    }
}

impl Stage for InjectSafetyIdentifier {
    fn name(&self) -> &'static str {
        "safety_identifier"
    }

    fn run<'a>(&'a self, ctx: &'a mut RequestContext) -> Step<'a> {
        Step::Ready(self.rewrite(ctx))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::EndUserPolicy;
    use crate::endpoint::Endpoint;
    use crate::identity::{EndUser, UserSource};
    use crate::secret::Secret;
    use crate::stages::testing::{context, key};

    fn stage() -> InjectSafetyIdentifier {
        InjectSafetyIdentifier::new(Arc::new(SafetyIdentifiers::new(&Secret::new(
            "secret-0123456789",
        ))))
    }

    fn body_of(ctx: &RequestContext) -> serde_json::Value {
        serde_json::from_slice(&ctx.outgoing_body()).unwrap()
    }

    #[test]
    fn chat_gets_a_hash_and_client_values_are_replaced() {
        let mut ctx = context(
            key("app", EndUserPolicy::Required, false),
            br#"{"model":"m","messages":[],"user":"alice","safety_identifier":"spoof","prompt_cache_key":"k"}"#,
        );
        ctx.end_user = Some(EndUser {
            id: "alice".into(),
            source: UserSource::Header,
        });
        assert_eq!(stage().rewrite(&mut ctx).unwrap(), Verdict::Rewrite);
        let body = body_of(&ctx);
        let id = body["safety_identifier"].as_str().unwrap();
        assert!(id.len() <= 64 && !id.contains("alice") && id != "spoof");
        assert_eq!(body["user"], body["safety_identifier"]);
        assert_eq!(body["prompt_cache_key"], "k");
    }

    #[test]
    fn user_endpoints_get_the_same_hash_in_user() {
        let mut chat = context(
            key("app", EndUserPolicy::Required, false),
            br#"{"messages":[]}"#,
        );
        chat.end_user = Some(EndUser {
            id: "alice".into(),
            source: UserSource::Header,
        });
        stage().rewrite(&mut chat).unwrap();

        let mut embeddings = context(
            key("app", EndUserPolicy::Required, false),
            br#"{"input":"x","safety_identifier":"spoofed"}"#,
        );
        embeddings.endpoint = Endpoint::Embeddings;
        embeddings.end_user = chat.end_user.clone();
        stage().rewrite(&mut embeddings).unwrap();
        let body = body_of(&embeddings);
        assert_eq!(body["user"], body_of(&chat)["safety_identifier"]);
        assert!(body.get("safety_identifier").is_none());
    }

    #[test]
    fn no_endpoint_forwards_a_client_safety_identifier() {
        for endpoint in [
            Endpoint::Completions,
            Endpoint::Embeddings,
            Endpoint::ImagesGenerations,
            Endpoint::Moderations,
        ] {
            let mut ctx = context(
                key("app", EndUserPolicy::Optional, false),
                br#"{"input":"x","prompt":"y","safety_identifier":"someone-else"}"#,
            );
            ctx.endpoint = endpoint;
            stage().rewrite(&mut ctx).unwrap();
            let body = body_of(&ctx);
            assert_ne!(
                body.get("safety_identifier").and_then(|v| v.as_str()),
                Some("someone-else"),
                "{endpoint:?}"
            );
        }
    }

    #[test]
    fn moderations_are_left_alone() {
        let mut ctx = context(
            key("app", EndUserPolicy::Optional, false),
            br#"{"input":"x"}"#,
        );
        ctx.endpoint = Endpoint::Moderations;
        assert_eq!(stage().rewrite(&mut ctx).unwrap(), Verdict::Allow);
        assert_eq!(&ctx.outgoing_body()[..], br#"{"input":"x"}"#);
    }
}
