//! The admin API (its own listener; the reference server's surface):
//! `GET /admin/status`, `POST /admin/load`, `POST /admin/unload`,
//! `GET /admin/health`; and `GET /admin/timings`, the last requests' stage
//! timelines (see [`super::metrics::Timeline`]) with p50/p99 per stage.

use std::time::Duration;

use api::ApiError;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::generate::{keep_alive, supervisor_error};
use super::{AppState, HttpError};
use crate::supervisor::{KeepAlive, ModelStatus};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/status", get(status))
        .route("/admin/health", get(health))
        .route("/admin/load", post(load))
        .route("/admin/unload", post(unload))
        .route("/admin/timings", get(timings))
}

fn keep_alive_json(k: KeepAlive) -> serde_json::Value {
    match k {
        KeepAlive::Forever => json!(-1),
        KeepAlive::For(d) => json!(d.as_secs_f64()),
    }
}

fn model_json(m: &ModelStatus) -> serde_json::Value {
    json!({
        "model": m.id,
        "path": m.path,
        "state": m.state,
        "pid": m.info.as_ref().and_then(|i| i.pid),
        "context_length": m.info.as_ref().map(|i| i.context_length),
        "memory_bytes": m.memory_bytes(),
        "live": m.live.as_ref().map(|l| json!({
            "active_memory_bytes": l.active_memory,
            "peak_memory_bytes": l.peak_memory,
            "cache_memory_bytes": l.cache_memory,
            "active_sequences": l.active_sequences,
            "queued": l.queue_depth,
            "age_seconds": l.at.elapsed().as_secs_f64(),
        })),
        "load_seconds": m.info.as_ref().map(|i| i.load_time.as_secs_f64()),
        "estimate_bytes": m.estimate_bytes,
        "in_flight": m.in_flight,
        "idle_seconds": m.idle_for.map(|d| d.as_secs_f64()),
        "keep_alive_seconds": keep_alive_json(m.keep_alive),
        "restarts": m.restarts,
        "failure": m.failure,
    })
}

async fn status(State(state): State<AppState>) -> Response {
    let models = state.supervisor.status().await;
    let body = json!({
        "daemon": {
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "uptime_seconds": state.started.elapsed().as_secs_f64(),
            "queued_requests": state.queued(),
        },
        "workers": models.iter().map(model_json).collect::<Vec<_>>(),
        "config": state.config_summary,
    });
    axum::Json(body).into_response()
}

async fn health(State(state): State<AppState>) -> Response {
    let models = state.supervisor.status().await;
    let ready = models.iter().filter(|m| m.state == "ready").count();
    let failed: Vec<_> = models
        .iter()
        .filter(|m| m.failure.is_some())
        .map(|m| &m.id)
        .collect();
    axum::Json(json!({"status": "ok", "ready_workers": ready, "failed_models": failed}))
        .into_response()
}

/// `GET /admin/timings?last=N&prefix=P`: the last `N` timelines (default:
/// all kept) of requests whose `x-request-id` starts with `P`.
#[derive(Deserialize)]
struct TimingsQuery {
    last: Option<usize>,
    prefix: Option<String>,
}

async fn timings(State(state): State<AppState>, Query(query): Query<TimingsQuery>) -> Response {
    let timings = &state.metrics.timings;
    let mut recent = timings.recent(timings.capacity());
    if let Some(prefix) = &query.prefix {
        recent.retain(|t| t.request_id.starts_with(prefix.as_str()));
    }
    if let Some(last) = query.last {
        recent.drain(..recent.len().saturating_sub(last));
    }
    let stages: serde_json::Map<String, serde_json::Value> = super::metrics::summarize(&recent)
        .into_iter()
        .map(|(name, s)| (name.to_owned(), json!(s)))
        .collect();
    let requests: Vec<serde_json::Value> = recent
        .iter()
        .map(|t| {
            let mut v = json!(t);
            v["stages"] = json!(t.stages());
            v
        })
        .collect();
    axum::Json(json!({
        "clock": "CLOCK_MONOTONIC ns; 0 = not reached or not reported",
        "capacity": timings.capacity(),
        "count": recent.len(),
        "stages": stages,
        "requests": requests,
    }))
    .into_response()
}

#[derive(Deserialize)]
struct LoadRequest {
    model: String,
    #[serde(default)]
    keep_alive: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct UnloadRequest {
    model: String,
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid("model", e.to_string()))
}

async fn load(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    let result = async {
        let req: LoadRequest = parse(&body)?;
        let keep = match req.keep_alive {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => {
                Some(api::KeepAlive::parse(&s).map_err(|e| ApiError::invalid("keep_alive", e))?)
            }
            Some(serde_json::Value::Number(n)) => Some(
                api::KeepAlive::from_seconds(n.as_f64().unwrap_or(0.0))
                    .map_err(|e| ApiError::invalid("keep_alive", e))?,
            ),
            Some(_) => {
                return Err(ApiError::invalid(
                    "keep_alive",
                    "expected seconds or a duration",
                ));
            }
        };
        let model = state.models.get(&req.model).await?;
        let info = state
            .supervisor
            .load(model.spec(), keep.map(keep_alive))
            .await
            .map_err(|e| supervisor_error(&req.model, e))?;
        Ok(json!({
            "model": req.model,
            "status": "loaded",
            "pid": info.pid,
            "context_length": info.context_length,
            "load_seconds": info.load_time.as_secs_f64(),
        }))
    }
    .await;
    match result {
        Ok(body) => axum::Json(body).into_response(),
        Err(e) => HttpError(e).into_response(),
    }
}

async fn unload(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    let req: UnloadRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return HttpError(e).into_response(),
    };
    let unloaded = state.supervisor.unload(&req.model).await;
    // Give a worker that stops at once a moment, so the status that
    // follows shows it gone.
    tokio::time::sleep(Duration::from_millis(10)).await;
    axum::Json(json!({"model": req.model, "unloaded": unloaded})).into_response()
}
