//! `POST /v1/embeddings` (OpenAI's shape) and what it shares with Ollama's
//! embedding routes ([`super::ollama_embed`]): resolve the model, tokenize
//! the inputs (special tokens as the tokenizer adds them, as
//! sentence-transformers does), admit the request to the model's queue,
//! lease its worker, check each input against its context (a 400 naming
//! the input, or truncation for Ollama), run the embedding in the worker
//! and apply `dimensions`.
//!
//! Pooling per model: the configuration's `pooling` for it, else a
//! sentence-transformers layout's `1_Pooling/config.json` (`cls`, `mean` or
//! `lasttoken`), else the last token (decoder embedding models such as
//! Qwen3-Embedding). Every model embeds: its hidden states after the final
//! norm, whatever the checkpoint was trained for.

use std::sync::Arc;
use std::time::{Duration, Instant};

use api::ApiError;
use api::embeddings::{EmbedInput, EmbedRequest, EmbeddingList, Overflow};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use protocol::Pooling;

use super::catalog::FrontModel;
use super::generate::{admit, keep_alive, supervisor_error};
use super::handlers::json_body;
use super::{AppState, HttpError};
use crate::supervisor::EmbedError;

/// Input text (bytes) up to which tokenizing runs on the request's task.
const INLINE_BYTES: usize = 4096;

/// The vectors of a request, as both APIs answer them.
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: u32,
    /// Spent waiting for the worker (its load included).
    pub load: Duration,
}

pub async fn openai(State(state): State<AppState>, request: Request) -> Response {
    let result = async {
        let body = json_body(&state, request).await?;
        let default_model = state.models.catalog().default_model();
        let req = api::embeddings::parse_openai(&body, default_model.as_deref())?;
        let embedded = embed(&state, &req).await?;
        let vectors = api::embeddings::shape(embedded.vectors, req.dimensions, req.normalize)?;
        let list = EmbeddingList::new(
            req.model.clone(),
            vectors,
            req.encoding_format,
            embedded.prompt_tokens,
        );
        Ok::<_, ApiError>(axum::Json(list).into_response())
    }
    .await;
    let response = result.unwrap_or_else(|e| HttpError(e).into_response());
    state
        .metrics
        .count_request("/v1/embeddings", response.status().as_u16());
    response
}

/// Runs an embedding request of either API: the vectors in input order,
/// before `dimensions`.
pub async fn embed(state: &AppState, req: &EmbedRequest) -> Result<Embedded, ApiError> {
    let arrived = Instant::now();
    let model = state.models.get(&req.model).await?;
    let mut inputs = tokenize(&model, req.inputs.clone()).await?;
    let _ticket = admit(state, &model.id)?;
    let lease = state
        .supervisor
        .acquire(model.spec(), req.keep_alive.map(keep_alive))
        .await
        .map_err(|e| supervisor_error(&model.id, e))?;
    let load = arrived.elapsed();
    let info = lease.info();
    let (context, vocab) = (info.context_length as usize, info.vocab_size);
    for (i, input) in inputs.iter_mut().enumerate() {
        let param = || input_param(i, req.inputs.len());
        let ids_given = matches!(req.inputs[i], EmbedInput::Tokens(_));
        if let Some(bad) = input.iter().find(|&&t| ids_given && t >= vocab) {
            let why = format!("token id {bad} is outside the vocabulary of {vocab}");
            return Err(ApiError::invalid(param(), why));
        }
        if input.len() > context {
            if req.overflow == Overflow::Truncate {
                input.truncate(context);
                continue;
            }
            let why = format!(
                "the input has {} tokens; the model's context holds {context}",
                input.len()
            );
            return Err(ApiError::invalid(param(), why));
        }
    }
    let pooling = pooling(state, &model);
    // Past the deadline the request is dropped, which cancels it in the
    // worker.
    let timeout = state
        .config
        .request_timeout
        .saturating_sub(arrived.elapsed());
    let result = tokio::time::timeout(timeout, lease.embed(inputs, pooling, req.normalize))
        .await
        .map_err(|_| ApiError::Timeout {
            seconds: state.config.request_timeout.as_secs(),
        })?;
    let embedded = result.map_err(|e| match e {
        EmbedError::Invalid(message) => ApiError::invalid("input", message),
        EmbedError::Failed(message) => ApiError::Internal { message },
        EmbedError::Gone(reason) => ApiError::WorkerCrashed {
            model: model.id.clone(),
            reason,
        },
    })?;
    state.metrics.count_tokens(embedded.prompt_tokens, 0);
    tracing::info!(
        model = %model.id,
        inputs = embedded.vectors.len(),
        prompt_tokens = embedded.prompt_tokens,
        total_ms = arrived.elapsed().as_millis() as u64,
        "embedding"
    );
    Ok(Embedded {
        vectors: embedded.vectors,
        prompt_tokens: embedded.prompt_tokens,
        load,
    })
}

/// `input`, or `input[i]` when there are several.
fn input_param(i: usize, count: usize) -> String {
    if count == 1 {
        "input".into()
    } else {
        format!("input[{i}]")
    }
}

/// Token ids of every input; long texts are tokenized in the blocking pool.
async fn tokenize(
    model: &Arc<FrontModel>,
    inputs: Vec<EmbedInput>,
) -> Result<Vec<Vec<u32>>, ApiError> {
    let bytes: usize = inputs
        .iter()
        .map(|i| match i {
            EmbedInput::Text(t) => t.len(),
            EmbedInput::Tokens(ids) => ids.len(),
        })
        .sum();
    let tokenizer = Arc::clone(&model.tokenizer);
    let run = move || {
        let count = inputs.len();
        inputs
            .into_iter()
            .enumerate()
            .map(|(i, input)| match input {
                EmbedInput::Tokens(ids) => Ok(ids),
                EmbedInput::Text(text) => tokenizer
                    .encode(&text, true)
                    .map_err(|e| ApiError::invalid(input_param(i, count), e.to_string())),
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let ids = if bytes <= INLINE_BYTES {
        run()?
    } else {
        tokio::task::spawn_blocking(run)
            .await
            .map_err(|e| ApiError::Internal {
                message: format!("tokenizing: {e}"),
            })??
    };
    if let Some(i) = ids.iter().position(Vec::is_empty) {
        let why = "the input has no tokens once tokenized";
        return Err(ApiError::invalid(input_param(i, ids.len()), why));
    }
    Ok(ids)
}

/// The model's pooling: configured, else its sentence-transformers
/// layout's, else the last token.
fn pooling(state: &AppState, model: &FrontModel) -> Pooling {
    state
        .models
        .catalog()
        .pooling(&model.id)
        .or_else(|| pooling_of(&model.path))
        .unwrap_or_default()
}

/// The pooling a sentence-transformers `1_Pooling/config.json` names, if
/// the model has one (`pooling_mode_cls_token`, `_mean_tokens`,
/// `_lasttoken`; other modes are not served and fall back to the default,
/// with a warning).
pub fn pooling_of(path: &std::path::Path) -> Option<Pooling> {
    let file = path.join("1_Pooling").join("config.json");
    let text = std::fs::read_to_string(&file).ok()?;
    let config: serde_json::Value = match serde_json::from_str(&text) {
        Ok(config) => config,
        Err(e) => {
            tracing::warn!("{}: {e}", file.display());
            return None;
        }
    };
    let on = |key: &str| config.get(key).and_then(serde_json::Value::as_bool) == Some(true);
    let found = [
        ("pooling_mode_cls_token", Pooling::Cls),
        ("pooling_mode_mean_tokens", Pooling::Mean),
        ("pooling_mode_lasttoken", Pooling::Last),
    ]
    .into_iter()
    .find(|(key, _)| on(key))
    .map(|(_, p)| p);
    if found.is_none() {
        tracing::warn!(
            "{}: no pooling mode this server runs (cls, mean, lasttoken); pooling the last token",
            file.display()
        );
    }
    found
}
