//! The one table from [`ApiError`] to an HTTP status and OpenAI's error body.
//!
//! Follows the OpenAI API reference ("Error codes") and the bodies OpenAI's
//! servers send: `{"error": {"message", "type", "param", "code"}}` with all four
//! keys always present (`param` and `code` may be `null`). The statuses are the
//! ones the official Python SDK maps to its exception classes: 400
//! `BadRequestError`, 401 `AuthenticationError`, 404 `NotFoundError`, 422
//! `UnprocessableEntityError`, 429 `RateLimitError`, 5xx
//! `InternalServerError`. Types are OpenAI's own: `invalid_request_error` for
//! every 4xx the client can fix (401 included, as OpenAI sends it),
//! `requests` with code `rate_limit_exceeded` for 429, `server_error` for 5xx.
//! Codes that OpenAI does not define (`worker_crashed`, ...) are mlxd's and
//! name the cause precisely.
//!
//! A stream that fails after its first chunk ends with one SSE error event
//! ([`ApiError::sse_event`]) instead of a status.

use serde::Serialize;

use crate::request::Endpoint;

/// Everything the HTTP API can answer with instead of a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed or a parameter is out of range; `param`
    /// names the parameter (`temperature`, `messages[1].content[0]`).
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
    },
    /// 400: the prompt plus the tokens to generate do not fit the model's
    /// context (OpenAI's `context_length_exceeded`).
    #[error("{}", context_message(*.max_context, *.prompt_tokens, *.max_tokens, *.endpoint))]
    ContextLengthExceeded {
        endpoint: Endpoint,
        max_context: u32,
        prompt_tokens: u32,
        max_tokens: Option<u32>,
    },
    /// 401: authentication is configured and the request carries no key.
    #[error(
        "You didn't provide an API key. You need to provide your API key in an \
         Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
    )]
    MissingApiKey,
    /// 401: the request's key is not one of the configured keys.
    #[error("Incorrect API key provided.")]
    InvalidApiKey,
    /// 404: no model of that name is configured or can be found.
    #[error("The model `{model}` does not exist or you do not have access to it.")]
    ModelNotFound { model: String },
    /// 404: no route matches the path.
    #[error("Invalid URL ({method} {path})")]
    UnknownRoute { method: String, path: String },
    /// 405: the path exists but not for this method.
    #[error("Method {method} is not allowed for {path}")]
    MethodNotAllowed { method: String, path: String },
    /// 413: the body is larger than the configured limit.
    #[error("Request body is too large: the limit is {limit_bytes} bytes")]
    PayloadTooLarge { limit_bytes: u64 },
    /// 408: the body did not arrive within the configured time.
    #[error("The request body did not arrive within {seconds} s")]
    BodyTimeout { seconds: u64 },
    /// 415: the body is not declared as JSON.
    #[error("{}", media_type_message(.content_type.as_deref()))]
    UnsupportedMediaType { content_type: Option<String> },
    /// 422: the request is well-formed but this model cannot serve it (its
    /// chat template rejected the conversation, for example).
    #[error("{message}")]
    Unprocessable {
        message: String,
        param: Option<String>,
    },
    /// 429: the model's queue is full; retry after `retry_after_secs`.
    #[error("Too many requests are waiting for model `{model}`; retry in {retry_after_secs} s")]
    QueueFull {
        model: String,
        retry_after_secs: u64,
    },
    /// 500: a bug or an unexpected failure in the server.
    #[error("The server had an error while processing your request: {message}")]
    Internal { message: String },
    /// 503: the model's worker failed to load it; `reason` carries the
    /// worker's own words (its last stderr lines).
    #[error("Model `{model}` failed to load: {reason}")]
    ModelLoadFailed { model: String, reason: String },
    /// 503: the model's worker died while serving the request.
    #[error("The worker serving model `{model}` stopped: {reason}")]
    WorkerCrashed { model: String, reason: String },
    /// 503: the server cannot take the request now (memory admission,
    /// shutdown); retry after `retry_after_secs` when known.
    #[error("The server is overloaded: {message}")]
    Unavailable {
        message: String,
        retry_after_secs: Option<u64>,
    },
    /// 504: the request did not finish within the configured time.
    #[error("The request timed out after {seconds} s")]
    Timeout { seconds: u64 },
    /// 404: no stored response has this id (`/v1/responses/{id}`).
    #[error("Response with id '{id}' not found.")]
    ResponseNotFound { id: String },
    /// 404: `previous_response_id` names no stored response.
    #[error("Previous response with id '{id}' not found.")]
    PreviousResponseNotFound { id: String },
    /// 501: the route exists in the API mlxd follows, but mlxd does not
    /// do what it asks (Ollama's model management, for one).
    #[error("{message}")]
    NotImplemented { message: String },
}

/// The JSON body of an error: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

/// The object inside [`ErrorBody`]; every key is always written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorObject {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

const INVALID: &str = "invalid_request_error";
const SERVER: &str = "server_error";

impl ApiError {
    /// A 400 naming `param`.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::InvalidRequest {
            message: message.into(),
            param: Some(param.into()),
        }
    }

    /// The table: HTTP status, OpenAI `type` and `code` of each variant.
    fn table(&self) -> (u16, &'static str, Option<&'static str>) {
        use ApiError::*;
        match self {
            InvalidRequest { .. } => (400, INVALID, None),
            ContextLengthExceeded { .. } => (400, INVALID, Some("context_length_exceeded")),
            MissingApiKey => (401, INVALID, None),
            InvalidApiKey => (401, INVALID, Some("invalid_api_key")),
            ModelNotFound { .. } => (404, INVALID, Some("model_not_found")),
            UnknownRoute { .. } => (404, INVALID, None),
            MethodNotAllowed { .. } => (405, INVALID, Some("method_not_allowed")),
            BodyTimeout { .. } => (408, INVALID, Some("request_timeout")),
            PayloadTooLarge { .. } => (413, INVALID, Some("request_too_large")),
            UnsupportedMediaType { .. } => (415, INVALID, Some("unsupported_media_type")),
            Unprocessable { .. } => (422, INVALID, None),
            QueueFull { .. } => (429, "requests", Some("rate_limit_exceeded")),
            Internal { .. } => (500, SERVER, None),
            ModelLoadFailed { .. } => (503, SERVER, Some("model_load_failed")),
            WorkerCrashed { .. } => (503, SERVER, Some("worker_crashed")),
            Unavailable { .. } => (503, SERVER, Some("overloaded")),
            Timeout { .. } => (504, SERVER, Some("timeout")),
            ResponseNotFound { .. } => (404, INVALID, None),
            PreviousResponseNotFound { .. } => (404, INVALID, Some("previous_response_not_found")),
            NotImplemented { .. } => (501, INVALID, Some("not_implemented")),
        }
    }

    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        self.table().0
    }

    /// The parameter the error is about, if any.
    pub fn param(&self) -> Option<&str> {
        match self {
            ApiError::InvalidRequest { param, .. } | ApiError::Unprocessable { param, .. } => {
                param.as_deref()
            }
            ApiError::ContextLengthExceeded { endpoint, .. } => Some(endpoint.prompt_param()),
            ApiError::ModelNotFound { .. } => Some("model"),
            ApiError::PreviousResponseNotFound { .. } => Some("previous_response_id"),
            _ => None,
        }
    }

    /// Seconds for the `Retry-After` header, where the error has one.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::QueueFull {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            ApiError::Unavailable {
                retry_after_secs, ..
            } => *retry_after_secs,
            _ => None,
        }
    }

    /// OpenAI's error body for this error.
    pub fn body(&self) -> ErrorBody {
        let (_, kind, code) = self.table();
        ErrorBody {
            error: ErrorObject {
                message: self.to_string(),
                kind,
                param: self.param().map(str::to_owned),
                code,
            },
        }
    }

    /// The body as JSON text.
    pub fn body_json(&self) -> String {
        let body = self.body();
        serde_json::to_string(&body).unwrap_or_else(|_| fallback_body(&body.error.message))
    }

    /// The SSE event that ends a stream failing after its first chunk:
    /// `data: {"error": {...}}\n\n`.
    pub fn sse_event(&self) -> String {
        format!("data: {}\n\n", self.body_json())
    }
}

/// A body written by hand, for the impossible case of the serializer failing.
fn fallback_body(message: &str) -> String {
    let escaped: String = message
        .chars()
        .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
        .collect();
    format!(
        r#"{{"error":{{"message":"{escaped}","type":"server_error","param":null,"code":null}}}}"#
    )
}

fn context_message(
    max_context: u32,
    prompt_tokens: u32,
    max_tokens: Option<u32>,
    endpoint: Endpoint,
) -> String {
    let what = endpoint.prompt_param();
    match max_tokens {
        Some(generate) => format!(
            "This model's maximum context length is {max_context} tokens. However, you \
             requested {} tokens ({prompt_tokens} in the {what}, {generate} in the completion). \
             Please reduce the length of the {what} or completion.",
            u64::from(prompt_tokens) + u64::from(generate)
        ),
        None => format!(
            "This model's maximum context length is {max_context} tokens. However, your \
             {what} resulted in {prompt_tokens} tokens. Please reduce the length of the {what}."
        ),
    }
}

fn media_type_message(content_type: Option<&str>) -> String {
    match content_type {
        Some(ct) => format!(
            "The request body must be JSON with Content-Type: application/json, got Content-Type: {ct}"
        ),
        None => "The request body must be JSON with Content-Type: application/json, and the \
                 request has no Content-Type"
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_table() {
        assert_eq!(ApiError::invalid("n", "bad").status(), 400);
        assert_eq!(ApiError::InvalidApiKey.status(), 401);
        assert_eq!(ApiError::Timeout { seconds: 3 }.status(), 504);
        assert_eq!(ApiError::BodyTimeout { seconds: 3 }.status(), 408);
        let full = ApiError::QueueFull {
            model: "m".into(),
            retry_after_secs: 2,
        };
        assert_eq!((full.status(), full.retry_after()), (429, Some(2)));
        assert_eq!(ApiError::MissingApiKey.retry_after(), None);
    }

    #[test]
    fn sse_event_is_one_data_line_with_the_body() {
        let event = ApiError::Internal {
            message: "boom".into(),
        }
        .sse_event();
        assert!(event.starts_with("data: {\"error\":{\"message\":"));
        assert!(event.ends_with("}}\n\n"));
        assert_eq!(event.matches('\n').count(), 2);
    }

    #[test]
    fn fallback_body_is_valid_json() {
        let text = fallback_body("a \"quoted\"\nmessage\\");
        let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(value["error"]["message"], "a quotedmessage");
    }
}
