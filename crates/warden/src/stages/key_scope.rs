//! A key's scope: the endpoints and models it may use, for both kinds of key (a store
//! key's scope from `warden keys create`, a config key's `[keys.limits]` allow-lists).
//! Checked right after the body named the model, before anything else reads the request,
//! and whether or not `[limits]` is enabled.

use std::sync::Arc;

use crate::config::limits::LimitsConfig;
use crate::endpoint::Endpoint;
use crate::error::WardenError;
use crate::pipeline::{RequestContext, Stage, Step, Verdict};
use crate::stages::limits::model_matches;

pub struct KeyScopeCheck {
    limits: Arc<LimitsConfig>,
}

impl KeyScopeCheck {
    pub fn new(limits: Arc<LimitsConfig>) -> Self {
        Self { limits }
    }

    fn decide(&self, ctx: &RequestContext) -> Result<Verdict, WardenError> {
        let Some(key) = ctx.key.as_deref() else {
            return Ok(Verdict::Allow);
        };
        let endpoint_allowed = |allowed: bool| {
            if allowed {
                Ok(())
            } else {
                Err(WardenError::EndpointNotAllowed {
                    endpoint: ctx.endpoint.label(),
                    key: key.name.clone(),
                })
            }
        };
        let model = ctx.model.clone().or_else(|| model_in_path(ctx));
        if let Some(scope) = &key.scope {
            if let Some(endpoints) = &scope.endpoints {
                endpoint_allowed(endpoints.iter().any(|e| e == ctx.endpoint.label()))?;
            }
            if let Some(models) = &scope.models {
                check_models(ctx.endpoint, model.as_deref(), models, &key.name)?;
            }
        }
        if let Some(limits) = self.limits.keys.get(&key.name) {
            if let Some(endpoints) = &limits.allowed_endpoints {
                endpoint_allowed(endpoints.contains(&ctx.endpoint))?;
            }
            if let Some(models) = &limits.allowed_models {
                check_models(ctx.endpoint, model.as_deref(), models, &key.name)?;
            }
        }
        Ok(Verdict::Allow)
    }
}

/// `GET /v1/models/{id}` names its model in the path.
pub fn model_in_path(ctx: &RequestContext) -> Option<String> {
    (ctx.endpoint == Endpoint::Model)
        .then(|| ctx.path_and_query.split('?').next())
        .flatten()
        .and_then(|p| p.trim_end_matches('/').rsplit('/').next())
        .map(str::to_owned)
}

/// A key limited to some models: the request's model must match one, and a request that
/// names none is refused where upstream would pick one itself (a default model, or the
/// model of a `previous_response_id`), since that choice is outside the key's scope.
pub fn check_models(
    endpoint: Endpoint,
    model: Option<&str>,
    allowed: &[String],
    key: &str,
) -> Result<(), WardenError> {
    match model {
        Some(model) if allowed.iter().any(|pattern| model_matches(pattern, model)) => Ok(()),
        Some(model) => Err(WardenError::ModelNotAllowed {
            model: model.to_owned(),
            key: key.to_owned(),
        }),
        // The moderation model is not a model a key is scoped to; listing models names none.
        None if matches!(
            endpoint,
            Endpoint::Moderations | Endpoint::Models | Endpoint::Model
        ) =>
        {
            Ok(())
        }
        None => Err(WardenError::ModelRequired {
            key: key.to_owned(),
        }),
    }
}

impl Stage for KeyScopeCheck {
    fn name(&self) -> &'static str {
        "key_scope"
    }

    fn run<'a>(&'a self, ctx: &'a mut RequestContext) -> Step<'a> {
        Step::Ready(self.decide(ctx))
    }
}
