//! Optional bearer keys (`Authorization: Bearer <key>`), compared in
//! constant time against every configured key. On Anthropic's routes
//! (`/v1/messages...`) the key may come as `x-api-key` instead, as
//! Anthropic's clients send it, and a refusal is Anthropic's error body.

use std::sync::Arc;

use api::ApiError;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::HttpError;

/// Lets the request through when no keys are configured or its key is one
/// of them; else 401.
pub async fn require_key(
    State(keys): State<Arc<Vec<String>>>,
    request: Request,
    next: Next,
) -> Response {
    if keys.is_empty() {
        return next.run(request).await;
    }
    let anthropic = super::anthropic::is_route(request.uri().path());
    let refuse = |e: ApiError| {
        if anthropic {
            super::anthropic::error_response(&e)
        } else {
            HttpError(e).into_response()
        }
    };
    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let x_api_key = headers
        .get("x-api-key")
        .filter(|_| anthropic)
        .and_then(|v| v.to_str().ok());
    let Some(given) = bearer.or(x_api_key).map(str::trim) else {
        return refuse(ApiError::MissingApiKey);
    };
    if key_matches(given, &keys, |a, b| a.ct_eq(b)) {
        next.run(request).await
    } else {
        refuse(ApiError::InvalidApiKey)
    }
}

/// Whether `given` is one of `keys`. Every key is compared, with no early
/// exit, and each comparison (`eq`: `subtle`'s, in constant time for equal
/// lengths) looks at every byte, so the time taken says nothing about how
/// much of a key was right, nor which key matched; only a key's length can
/// show.
fn key_matches(
    given: &str,
    keys: &[String],
    mut eq: impl FnMut(&[u8], &[u8]) -> subtle::Choice,
) -> bool {
    let mut matched = subtle::Choice::from(0);
    for key in keys {
        matched |= eq(given.as_bytes(), key.as_bytes());
    }
    bool::from(matched)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(given: &str, keys: &[&str]) -> bool {
        let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        key_matches(given, &keys, |a, b| a.ct_eq(b))
    }

    #[test]
    fn only_a_whole_configured_key_matches() {
        let keys = ["sk-first-0123456789", "sk-second-abcdef"];
        assert!(matches("sk-first-0123456789", &keys));
        assert!(matches("sk-second-abcdef", &keys));
        for wrong in [
            "",
            "sk-first-012345678",
            "sk-first-0123456789x",
            "SK-FIRST-0123456789",
            "sk-first-0123456788",
            "sk-second-abcdefsk-first-0123456789",
        ] {
            assert!(!matches(wrong, &keys), "{wrong:?} matched");
        }
        assert!(!matches("anything", &[]));
    }

    #[test]
    fn every_key_is_compared_even_after_a_match() {
        let keys: Vec<String> = ["a-key", "b-key", "c-key"].map(String::from).to_vec();
        let mut compared = Vec::new();
        let found = key_matches("a-key", &keys, |given, key| {
            compared.push(key.to_vec());
            given.ct_eq(key)
        });
        assert!(found);
        assert_eq!(
            compared,
            [b"a-key".to_vec(), b"b-key".to_vec(), b"c-key".to_vec()]
        );
    }
}
