//! The HTTP API: OpenAI-compatible routes on the main listener, the admin
//! API on its own listener, Prometheus metrics, optional bearer keys, CORS,
//! request ids. Handlers turn requests into `api` types and leave the work
//! to [`generate`] and the supervisor; every error leaves as OpenAI's JSON
//! error body with its status.

pub mod admin;
mod anthropic;
#[cfg(test)]
mod anthropic_tests;
mod auth;
pub mod catalog;
mod connections;
#[cfg(test)]
mod embed_tests;
mod embeddings;
mod generate;
mod handlers;
pub mod metrics;
mod ollama;
mod ollama_embed;
mod ollama_models;
#[cfg(test)]
mod ollama_tests;
mod reply;
mod response_store;
#[cfg(test)]
mod response_tests;
mod responses;
mod structured;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tool_tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use api::ApiError;
use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

use crate::supervisor::Supervisor;
use catalog::{FrontModels, ModelCatalog};
pub use connections::serve;

/// Limits and access settings of the HTTP API.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Bearer keys accepted on the main API (empty: no authentication).
    pub api_keys: Vec<String>,
    /// Bearer keys accepted on the admin API (empty: no authentication).
    pub admin_api_keys: Vec<String>,
    /// `/metrics` without a key even when `api_keys` are set (for a
    /// scraper); by default it takes them like the rest of the API.
    pub public_metrics: bool,
    /// Origins allowed by CORS (empty: none; `*`: any).
    pub cors_origins: Vec<String>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Longest a request may take end to end.
    pub request_timeout: Duration,
    /// Requests per model admitted at once (waiting or running).
    pub queue_depth: usize,
    /// Connections open at once per listener; more wait to be accepted.
    pub max_connections: usize,
    /// Longest a client may take to send a request's headers (or to start
    /// its next request on a kept-alive connection), and then its body.
    pub read_timeout: Duration,
    /// Responses kept for `previous_response_id` and `GET /v1/responses/{id}`
    /// (least recently used go first; 0: none are kept).
    pub responses_store_max: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            api_keys: Vec::new(),
            admin_api_keys: Vec::new(),
            public_metrics: false,
            cors_origins: Vec::new(),
            max_body_bytes: 16 << 20,
            request_timeout: Duration::from_secs(600),
            queue_depth: 64,
            max_connections: 512,
            read_timeout: Duration::from_secs(30),
            responses_store_max: 1024,
        }
    }
}

/// What every handler shares.
pub struct Shared {
    pub supervisor: Supervisor,
    pub models: FrontModels,
    pub config: HttpConfig,
    pub metrics: Arc<metrics::Metrics>,
    /// Stored Responses API responses.
    responses: response_store::ResponseStore,
    queues: Mutex<HashMap<String, Arc<AtomicUsize>>>,
    started: Instant,
    draining: AtomicBool,
    /// The effective configuration, shown by the admin status.
    config_summary: serde_json::Value,
}

/// The handlers' state: a cheap handle to [`Shared`].
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn new(
        supervisor: Supervisor,
        catalog: Arc<dyn ModelCatalog>,
        config: HttpConfig,
        config_summary: serde_json::Value,
    ) -> AppState {
        AppState(Arc::new(Shared {
            supervisor,
            models: FrontModels::new(catalog),
            responses: response_store::ResponseStore::new(config.responses_store_max),
            config,
            metrics: Arc::new(metrics::Metrics::new()),
            queues: Mutex::new(HashMap::new()),
            started: Instant::now(),
            draining: AtomicBool::new(false),
            config_summary,
        }))
    }

    /// The admission counter of a model's queue.
    fn queue_counter(&self, model: &str) -> Arc<AtomicUsize> {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(queues.entry(model.to_owned()).or_default())
    }

    /// Requests admitted over all models.
    fn queued(&self) -> usize {
        let queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        queues.values().map(|c| c.load(Ordering::Acquire)).sum()
    }

    /// Marks the server as shutting down (`/ready` turns 503).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

/// An `ApiError` as an HTTP response.
pub struct HttpError(pub ApiError);

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        HttpError(e)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            self.0.body_json(),
        )
            .into_response();
        if let Some(secs) = self.0.retry_after()
            && let Ok(value) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// Request ids: 128 random bits in hex, unless the client sent one.
#[derive(Clone, Copy, Default)]
struct RandomId;

impl MakeRequestId for RandomId {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        let id: u128 = rand::random();
        HeaderValue::from_str(&format!("{id:032x}"))
            .ok()
            .map(RequestId::new)
    }
}

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request ids, a span per request, CORS.
fn common_layers(router: Router, cors_origins: &[String]) -> Router {
    let router = router
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                let id = req
                    .headers()
                    .get(&REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("request", id = %id, method = %req.method(), path = %req.uri().path())
            }),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), RandomId));
    if cors_origins.is_empty() {
        return router;
    }
    let origins = if cors_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            cors_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        )
    };
    router.layer(
        CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                // What Anthropic's clients send from a browser.
                HeaderName::from_static("x-api-key"),
                HeaderName::from_static("anthropic-version"),
                HeaderName::from_static("anthropic-beta"),
                HeaderName::from_static("anthropic-dangerous-direct-browser-access"),
            ]),
    )
}

/// A `text/event-stream` response of the events `body` yields.
fn sse_response<S>(body: S) -> Response
where
    S: futures::Stream<Item = Result<bytes::Bytes, std::convert::Infallible>> + Send + 'static,
{
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}

/// The main API router.
pub fn router(state: AppState) -> Router {
    let keys = Arc::new(state.config.api_keys.clone());
    let cors = state.config.cors_origins.clone();
    // `/metrics` names the models and their traffic: behind the keys unless
    // opened for a scraper (llama-server keys it the same way).
    let (keyed, open) = if state.config.public_metrics {
        (
            handlers::routes(),
            handlers::open_routes().merge(handlers::metrics_routes()),
        )
    } else {
        (
            handlers::routes().merge(handlers::metrics_routes()),
            handlers::open_routes(),
        )
    };
    let router = keyed
        .layer(axum::middleware::from_fn_with_state(
            keys,
            auth::require_key,
        ))
        .merge(open)
        .fallback(handlers::unknown_route)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(axum::middleware::from_fn(ollama::ollama_errors))
        .with_state(state);
    common_layers(router, &cors)
}

/// The admin API router.
pub fn admin_router(state: AppState) -> Router {
    let keys = Arc::new(state.config.admin_api_keys.clone());
    let cors = state.config.cors_origins.clone();
    let router = admin::routes()
        .layer(axum::middleware::from_fn_with_state(
            keys,
            auth::require_key,
        ))
        .fallback(handlers::unknown_route)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .with_state(state);
    common_layers(router, &cors)
}
