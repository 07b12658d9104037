//! A store key's scope — the models and endpoints it was issued for. Config keys
//! are scoped by `[keys.limits]` in the limits stage instead.

use crate::endpoint::Endpoint;
use crate::error::WardenError;
use crate::pipeline::{RequestContext, Stage, Step, Verdict};
use crate::stages::limits::model_matches;

pub struct KeyScopeCheck;

impl KeyScopeCheck {
    fn decide(ctx: &RequestContext) -> Result<Verdict, WardenError> {
        let Some(key) = ctx.key.as_deref() else {
            return Ok(Verdict::Allow);
        };
        let Some(scope) = &key.scope else {
            return Ok(Verdict::Allow);
        };
        if let Some(endpoints) = &scope.endpoints {
            let label = ctx.endpoint.label();
            if !endpoints.iter().any(|e| e == label) {
                return Err(WardenError::EndpointNotAllowed {
                    endpoint: label,
                    key: key.name.clone(),
                });
            }
        }
        if let Some(models) = &scope.models {
            check_models(ctx.endpoint, ctx.model.as_deref(), models, &key.name)?;
        }
        Ok(Verdict::Allow)
    }
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
        Step::Ready(Self::decide(ctx))
    }
}
