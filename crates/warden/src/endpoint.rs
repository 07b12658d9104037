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
    /// One of the REST routes of `routes::table` (files, batches, stored objects, audio…).
    Rest(crate::routes::RouteId),
    /// A path no table knows, passed through as-is (`[upstream] unknown_paths = "forward"`).
    Forward,
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
        Self::resolve_with(method, path, false)
    }

    /// As `resolve`; with `forward_unknown`, a path under `/v1` that no table knows is
    /// `Forward` instead of a 404.
    pub fn resolve_with(
        method: &Method,
        path: &str,
        forward_unknown: bool,
    ) -> Result<Endpoint, WardenError> {
        let path_no_slash = path.strip_suffix('/').unwrap_or(path);
        // `GET /v1/chat/completions` lists stored completions; only POST creates one.
        let rest = match crate::routes::lookup(method, path_no_slash) {
            crate::routes::Lookup::Found(id) => return Ok(Endpoint::Rest(id)),
            crate::routes::Lookup::WrongMethod => true,
            crate::routes::Lookup::Unknown => false,
        };
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
                _ if rest => {
                    return Err(WardenError::MethodNotAllowed {
                        method: method.to_string(),
                        path: path.to_owned(),
                    })
                }
                _ if forward_unknown && other.starts_with("/v1/") => return Ok(Endpoint::Forward),
                _ if other.starts_with("/v1/") => {
                    return Err(WardenError::NotProxied {
                        method: method.to_string(),
                        path: path.to_owned(),
                    })
                }
                // Not an OpenAI path at all.
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
        } else if rest {
            // `GET /v1/chat/completions` is the stored list: handled above; a PUT is 405.
            Err(WardenError::MethodNotAllowed {
                method: method.to_string(),
                path: path.to_owned(),
            })
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

    /// The endpoint a label names: one of `LABELS` or a REST route's.
    pub fn from_label(label: &str) -> Option<Endpoint> {
        const LEGACY: [Endpoint; 8] = [
            Endpoint::ChatCompletions,
            Endpoint::Responses,
            Endpoint::Completions,
            Endpoint::Embeddings,
            Endpoint::Moderations,
            Endpoint::ImagesGenerations,
            Endpoint::Models,
            Endpoint::Model,
        ];
        LEGACY
            .into_iter()
            .find(|e| e.label() == label)
            .or_else(|| crate::routes::by_label(label).map(Endpoint::Rest))
    }

    /// Every label a key scope may name: the model endpoints' and every REST route's.
    pub fn all_labels() -> impl Iterator<Item = &'static str> {
        Self::LABELS.iter().copied().chain(crate::routes::labels())
    }

    /// The REST route, for `Rest` endpoints.
    pub fn route(self) -> Option<&'static crate::routes::Route> {
        match self {
            Endpoint::Rest(id) => Some(id.route()),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Endpoint::Rest(id) => id.route().label,
            Endpoint::Forward => "forwarded",
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

    /// Whether the body is JSON the pipeline reads whole (a multipart form a check needs is
    /// turned into one by `read_body`; see `routes::multipart`).
    pub fn has_json_body(self) -> bool {
        match self {
            Endpoint::Models | Endpoint::Model | Endpoint::Forward | Endpoint::Realtime => false,
            Endpoint::Rest(id) => id.route().body == crate::routes::BodyKind::Json,
            _ => true,
        }
    }

    pub fn user_field(self) -> UserField {
        match self {
            Endpoint::ChatCompletions | Endpoint::Responses => UserField::SafetyIdentifier,
            Endpoint::ImagesGenerations => UserField::SafetyIdentifierAndUser,
            Endpoint::Completions | Endpoint::Embeddings => UserField::User,
            Endpoint::Moderations | Endpoint::Models | Endpoint::Model | Endpoint::Forward => {
                UserField::None
            }
            // The Images API takes both; a form field is written like a JSON one.
            // Only where the form is read (edits); variations are relayed unread.
            Endpoint::Rest(id) if id.route().label == "images.edits" => {
                UserField::SafetyIdentifierAndUser
            }
            Endpoint::Rest(_) => UserField::None,
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
        assert!(e.message().contains("does not proxy"), "{}", e.message());
        assert_eq!(
            Endpoint::resolve_with(&Method::POST, "/v1/nope", true).unwrap(),
            Endpoint::Forward
        );
        assert_eq!(
            Endpoint::resolve(&Method::GET, "/v1/chat/completions")
                .unwrap()
                .label(),
            "chat.completions.list"
        );
        let e = Endpoint::resolve(&Method::PUT, "/v1/chat/completions").unwrap_err();
        assert_eq!(e.status(), 405);
        let e = Endpoint::resolve(&Method::GET, "/v1/models/a/b").unwrap_err();
        assert_eq!(e.status(), 404);
    }
}
