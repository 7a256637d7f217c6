//! Ollama's embedding routes (`docs/api.md` of Ollama): `POST /api/embed`
//! (`input` a string or strings, vectors L2-normalized, `truncate` on by
//! default, `dimensions`, `keep_alive`) and the legacy `POST
//! /api/embeddings` (one `prompt`, its vector not normalized, an empty
//! prompt answered with an empty vector), on the same path as
//! `/v1/embeddings` ([`super::embeddings::embed`]); errors in Ollama's
//! shape, `{"error": "message"}`, with the status the error table gives.

use api::ApiError;
use api::embeddings::{OllamaEmbedResponse, OllamaLegacyResponse};
use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::embeddings::embed;
use super::handlers::json_body;

/// An error as Ollama writes it.
fn ollama_error(e: ApiError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
}

pub async fn embed_route(State(state): State<AppState>, request: Request) -> Response {
    let started = std::time::Instant::now();
    let result = async {
        let body = json_body(&state, request).await?;
        let req = api::embeddings::parse_ollama_embed(&body)?;
        let embedded = embed(&state, &req).await?;
        let embeddings = api::embeddings::shape(embedded.vectors, req.dimensions, true)?;
        let body = OllamaEmbedResponse {
            model: req.model,
            embeddings,
            total_duration: started.elapsed().as_nanos() as u64,
            load_duration: embedded.load.as_nanos() as u64,
            prompt_eval_count: embedded.prompt_tokens,
        };
        Ok::<_, ApiError>(Json(body).into_response())
    }
    .await;
    let response = result.unwrap_or_else(ollama_error);
    state
        .metrics
        .count_request("/api/embed", response.status().as_u16());
    response
}

pub async fn embeddings_route(State(state): State<AppState>, request: Request) -> Response {
    let result = async {
        let body = json_body(&state, request).await?;
        let req = api::embeddings::parse_ollama_legacy(&body)?;
        if req.inputs.is_empty() {
            // Ollama answers an empty prompt with an empty vector, after
            // checking the model exists.
            state.models.get(&req.model).await?;
            return Ok(Json(OllamaLegacyResponse {
                embedding: Vec::new(),
            })
            .into_response());
        }
        let mut embedded = embed(&state, &req).await?;
        let embedding = embedded.vectors.pop().unwrap_or_default();
        Ok::<_, ApiError>(Json(OllamaLegacyResponse { embedding }).into_response())
    }
    .await;
    let response = result.unwrap_or_else(ollama_error);
    state
        .metrics
        .count_request("/api/embeddings", response.status().as_u16());
    response
}
