//! Optional bearer keys (`Authorization: Bearer <key>`), compared in
//! constant time against every configured key.

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
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(given) = given else {
        return HttpError(ApiError::MissingApiKey).into_response();
    };
    // Compare against every key (no early exit) so timing reveals nothing.
    let mut matched = subtle::Choice::from(0);
    for key in keys.iter() {
        matched |= given.as_bytes().ct_eq(key.as_bytes());
    }
    if bool::from(matched) {
        next.run(request).await
    } else {
        HttpError(ApiError::InvalidApiKey).into_response()
    }
}
