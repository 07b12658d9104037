//! The OpenAI endpoints Warden serves, and what each one's body looks like to the stages.

use http::Method;

use crate::error::WardenError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    ChatCompletions,
    Responses,
    Completions,
    Embeddings,
    Moderations,
    ImagesGenerations,
    Models,
    Model,
    /// `GET /v1/realtime`: a WebSocket session (see `realtime/`).
    Realtime,
    /// `POST /v1/realtime/client_secrets`: an ephemeral key for a browser or phone.
    RealtimeClientSecrets,
}

/// How an endpoint names its end user to OpenAI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserField {
    /// `safety_identifier` is set; a client `user` is replaced too.
    SafetyIdentifier,
    /// Both are set: the Images API takes `safety_identifier` beside its older `user`.
    SafetyIdentifierAndUser,
    /// The endpoint still uses `user`.
    User,
    /// No end-user field (moderations, models).
    None,
    /// The `OpenAI-Safety-Identifier` header: Realtime's session config has no field.
    Header,
}

impl Endpoint {
    /// Matches a request line; unknown paths are 404, known paths with the wrong method 405.
    pub fn resolve(method: &Method, path: &str) -> Result<Endpoint, WardenError> {
        let path_no_slash = path.strip_suffix('/').unwrap_or(path);
        let (endpoint, allowed) = match path_no_slash {
            "/v1/chat/completions" => (Endpoint::ChatCompletions, Method::POST),
            "/v1/responses" => (Endpoint::Responses, Method::POST),
            "/v1/completions" => (Endpoint::Completions, Method::POST),
            "/v1/embeddings" => (Endpoint::Embeddings, Method::POST),
            "/v1/moderations" => (Endpoint::Moderations, Method::POST),
            "/v1/images/generations" => (Endpoint::ImagesGenerations, Method::POST),
            "/v1/models" => (Endpoint::Models, Method::GET),
            "/v1/realtime" => (Endpoint::Realtime, Method::GET),
            "/v1/realtime/client_secrets" => (Endpoint::RealtimeClientSecrets, Method::POST),
            other => match other.strip_prefix("/v1/models/") {
                Some(id) if !id.is_empty() && !id.contains('/') => (Endpoint::Model, Method::GET),
                _ => {
                    return Err(WardenError::NotFound {
                        method: method.to_string(),
                        path: path.to_owned(),
                    })
                }
            },
        };
        if *method == allowed {
            Ok(endpoint)
        } else {
            Err(WardenError::MethodNotAllowed {
                method: method.to_string(),
                path: path.to_owned(),
            })
        }
    }

    /// Low-cardinality label for events and metrics.
    /// Every endpoint's label, as keys' scopes and limits name them.
    pub const LABELS: &'static [&'static str] = &[
        "chat.completions",
        "responses",
        "completions",
        "embeddings",
        "moderations",
        "images.generations",
        "models",
        "models.retrieve",
        "realtime",
        "realtime.client_secrets",
    ];

    pub fn label(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat.completions",
            Endpoint::Responses => "responses",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Moderations => "moderations",
            Endpoint::ImagesGenerations => "images.generations",
            Endpoint::Models => "models",
            Endpoint::Model => "models.retrieve",
            Endpoint::Realtime => "realtime",
            Endpoint::RealtimeClientSecrets => "realtime.client_secrets",
        }
    }

    pub fn has_json_body(self) -> bool {
        !matches!(
            self,
            Endpoint::Models | Endpoint::Model | Endpoint::Realtime
        )
    }

    pub fn user_field(self) -> UserField {
        match self {
            Endpoint::ChatCompletions | Endpoint::Responses => UserField::SafetyIdentifier,
            Endpoint::ImagesGenerations => UserField::SafetyIdentifierAndUser,
            Endpoint::Completions | Endpoint::Embeddings => UserField::User,
            Endpoint::Moderations | Endpoint::Models | Endpoint::Model => UserField::None,
            Endpoint::Realtime | Endpoint::RealtimeClientSecrets => UserField::Header,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn known_paths_resolve() {
        assert_eq!(
            Endpoint::resolve(&Method::POST, "/v1/chat/completions").unwrap(),
            Endpoint::ChatCompletions
        );
        assert_eq!(
            Endpoint::resolve(&Method::GET, "/v1/models/gpt-4o").unwrap(),
            Endpoint::Model
        );
    }

    #[test]
    fn unknown_is_404_and_wrong_method_is_405() {
        let e = Endpoint::resolve(&Method::POST, "/v1/nope").unwrap_err();
        assert_eq!(e.status(), 404);
        let e = Endpoint::resolve(&Method::GET, "/v1/chat/completions").unwrap_err();
        assert_eq!(e.status(), 405);
        let e = Endpoint::resolve(&Method::GET, "/v1/models/a/b").unwrap_err();
        assert_eq!(e.status(), 404);
    }
}
