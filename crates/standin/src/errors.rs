//! OpenAI error envelopes: one type, mapped to a status and `{"error":{message,type,param,code}}` in one place.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::StatusCode;
use serde_json::json;

/// An error answered in OpenAI's envelope; all four keys are always present.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<String>,
    code: Option<&'static str>,
    headers: Vec<(&'static str, String)>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            headers: Vec::new(),
        }
    }

    /// 400 `invalid_request_error`.
    pub(crate) fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 400 for a body that is not JSON, worded as OpenAI words it.
    pub(crate) fn malformed_json() -> Self {
        Self::invalid_request(
            "We could not parse the JSON body of your request. (HINT: This likely means you \
             aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, \
             but what was sent was not valid JSON. If you have trouble figuring out how to fix \
             this, please contact us through our help center at help.openai.com.)",
        )
    }

    /// 400 for a required parameter that is absent.
    pub(crate) fn missing(param: &str) -> Self {
        Self::invalid_request(format!("Missing required parameter: '{param}'."))
            .param(param)
            .code("missing_required_parameter")
    }

    /// 404 for a path this API does not serve.
    pub(crate) fn invalid_url(method: &http::Method, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("Invalid URL ({method} {path})"),
        )
    }

    /// 405 for a known path called with the wrong method.
    pub(crate) fn invalid_method(method: &http::Method, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            format!("Invalid method for URL ({method} {path})"),
        )
    }

    /// 404 with a code, e.g. `model_not_found`.
    pub(crate) fn not_found(message: impl Into<String>, code: &'static str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", message).code(code)
    }

    /// 404 for an object id that is not known, worded like OpenAI's `No such File object`.
    pub(crate) fn no_such(what: &str, id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("No such {what}: {id}"),
        )
        .param("id")
    }

    /// 413 for a body over the stand-in's cap.
    pub(crate) fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("Request body is larger than the stand-in's limit of {limit} bytes."),
        )
    }

    /// 401 `invalid_api_key`; `given` is the key the caller sent, if any.
    pub(crate) fn invalid_api_key(given: Option<&str>) -> Self {
        let message = match given {
            None => "You didn't provide an API key. You need to provide your API key in an \
                     Authorization header using Bearer auth (i.e. Authorization: Bearer \
                     YOUR_KEY), or as the password field (with blank username) if you're \
                     accessing the API from your browser and are prompted for a username and \
                     password. You can obtain an API key from \
                     https://platform.openai.com/account/api-keys."
                .to_owned(),
            Some(key) => format!(
                "Incorrect API key provided: {}. You can find your API key at \
                 https://platform.openai.com/account/api-keys.",
                mask(key)
            ),
        };
        Self::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message)
            .code("invalid_api_key")
    }

    /// 429 `rate_limit_exceeded` with short retry hints so SDK retries stay fast.
    pub(crate) fn rate_limited() -> Self {
        let mut error = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "requests",
            "Rate limit reached for requests per min (RPM) on the stand-in: Limit 10000, \
             Used 10000, Requested 1. Please try again in 50ms.",
        )
        .code("rate_limit_exceeded");
        error.headers = vec![
            ("retry-after-ms", "50".to_owned()),
            ("retry-after", "1".to_owned()),
            ("x-ratelimit-limit-requests", "10000".to_owned()),
            ("x-ratelimit-remaining-requests", "0".to_owned()),
            ("x-ratelimit-reset-requests", "50ms".to_owned()),
            ("x-ratelimit-limit-tokens", "30000000".to_owned()),
            ("x-ratelimit-remaining-tokens", "30000000".to_owned()),
            ("x-ratelimit-reset-tokens", "0s".to_owned()),
        ];
        error
    }

    /// 429 `insufficient_quota`: the account is out of credit; retrying cannot help.
    pub(crate) fn insufficient_quota() -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "insufficient_quota",
            "You exceeded your current quota, please check your plan and billing details.",
        )
        .code("insufficient_quota")
    }

    /// The error an injected `status=N` fault answers with.
    pub(crate) fn for_status(status: u16) -> Self {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let injected = format!("Injected by the stand-in (status={status}).");
        match code.as_u16() {
            429 => Self::rate_limited(),
            401 => Self::invalid_api_key(Some("injected")),
            403 => Self::new(
                code,
                "invalid_request_error",
                format!("Permission denied. {injected}"),
            )
            .code("permission_denied"),
            404 => Self::new(
                code,
                "invalid_request_error",
                format!("Not found. {injected}"),
            ),
            500 => Self::new(
                code,
                "server_error",
                "The server had an error while processing your request. Sorry about that!",
            ),
            503 => Self::new(
                code,
                "server_error",
                "The engine is currently overloaded, please try again later.",
            ),
            501 | 502 | 504..=599 => Self::new(code, "server_error", injected),
            _ => Self::new(code, "invalid_request_error", injected),
        }
    }

    /// Sets `param`.
    pub(crate) fn param(mut self, param: &str) -> Self {
        self.param = Some(param.to_owned());
        self
    }

    /// Sets `code`.
    pub(crate) fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }
}

/// Parses a JSON request body into `T`; a body that is not JSON, or JSON of the wrong shape,
/// comes back as OpenAI's 400.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|err| {
        if err.is_data() {
            ApiError::invalid_request(format!("Invalid request body: {err}."))
        } else {
            ApiError::malformed_json()
        }
    })
}

/// Checks an integer parameter against its range, with OpenAI's wording and codes.
pub(crate) fn check_range(param: &str, value: i64, min: i64, max: i64) -> Result<(), ApiError> {
    if value < min {
        return Err(ApiError::invalid_request(format!(
            "Invalid '{param}': integer below minimum value. Expected a value >= {min}, but got {value} instead."
        ))
        .param(param)
        .code("integer_below_min_value"));
    }
    if value > max {
        return Err(ApiError::invalid_request(format!(
            "Invalid '{param}': integer above maximum value. Expected a value <= {max}, but got {value} instead."
        ))
        .param(param)
        .code("integer_above_max_value"));
    }
    Ok(())
}

/// Masks a key the way OpenAI echoes it: first 3 and last 4 characters.
fn mask(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 8 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 7))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        });
        let mut response = Response::new(Body::from(body.to_string()));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keys_like_openai() {
        assert_eq!(mask("sk-test-1234567890"), "sk-***********7890");
        assert_eq!(mask("short"), "*****");
    }
}
