//! Stage 3: a store key's scope — the models and endpoints it was issued for. Config keys
//! are scoped by `[keys.limits]` in the limits stage instead.

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
        if let (Some(models), Some(model)) = (&scope.models, &ctx.model) {
            if !models.iter().any(|pattern| model_matches(pattern, model)) {
                return Err(WardenError::ModelNotAllowed {
                    model: model.clone(),
                    key: key.name.clone(),
                });
            }
        }
        Ok(Verdict::Allow)
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
