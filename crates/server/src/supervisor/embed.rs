//! Embedding requests through a lease: the inputs go to the worker in one
//! `Embed` request and its vectors come back in order.
//!
//! **Crashes.** An embedding request is not replayed: it has no partial
//! output to continue, and resubmitting it whole would hide a request that
//! crashes workers behind the replay logic's probation gate for nothing a
//! client cannot do itself. A worker that dies while it holds one ends it
//! with [`EmbedError::Gone`] (the HTTP layer's `worker_crashed`, naming the
//! signal and the worker's last lines), and the supervisor starts the next
//! worker as for any crash.

use std::sync::Arc;

use futures::StreamExt;
use protocol::{Embed, EmbeddingCollector, ErrorCode, FinishReason, Pooling};

use super::{EventStream, Lease, Worker, WorkerEvent};

/// An embedding request's vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// One per input, in order.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens of every input.
    pub prompt_tokens: u32,
}

/// Why an embedding request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmbedError {
    /// The worker refused the request (an input too long or empty).
    #[error("{0}")]
    Invalid(String),
    /// The worker failed running it.
    #[error("{0}")]
    Failed(String),
    /// The worker died while it held the request.
    #[error("{0}")]
    Gone(String),
}

/// Cancels the request in the worker if dropped before its `Done`, holding
/// the lease until the cancel is sent.
struct Pending {
    worker: Arc<dyn Worker>,
    request_id: u64,
    lease: Option<Lease>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let Some(lease) = self.lease.take() else {
            return;
        };
        let (worker, id) = (Arc::clone(&self.worker), self.request_id);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                worker.cancel(id).await;
                drop(lease);
            });
        }
    }
}

impl Lease {
    /// Embeds `inputs` (token ids) with `pooling`, normalized to unit length
    /// when `normalize`; the lease is held until the vectors are in.
    pub async fn embed(
        self,
        inputs: Vec<Vec<u32>>,
        pooling: Pooling,
        normalize: bool,
    ) -> Result<Embeddings, EmbedError> {
        let request_id = self.supervisor.request_id();
        let count = inputs.len();
        let worker = Arc::clone(&self.worker);
        let request = Embed {
            request_id,
            inputs,
            pooling,
            normalize,
        };
        let mut pending = Pending {
            worker: Arc::clone(&worker),
            request_id,
            lease: Some(self),
        };
        let stream = worker
            .embed(request)
            .await
            .map_err(|gone| EmbedError::Gone(gone.0))?;
        let result = collect(stream, count).await;
        // Done (or the worker gone) came: nothing to cancel.
        pending.lease = None;
        result
    }
}

/// Reads a request's events up to its `Done`.
async fn collect(mut stream: EventStream, count: usize) -> Result<Embeddings, EmbedError> {
    let mut collector = EmbeddingCollector::new(count);
    let mut error = None;
    while let Some(event) = stream.next().await {
        match event.map_err(|gone| EmbedError::Gone(gone.0))? {
            WorkerEvent::Embedding(e) => collector
                .push(e)
                .map_err(|e| EmbedError::Failed(format!("the worker's answer: {e}")))?,
            WorkerEvent::Error { code, message } => {
                error = Some(match code {
                    ErrorCode::InvalidRequest | ErrorCode::ContextOverflow => {
                        EmbedError::Invalid(message)
                    }
                    _ => EmbedError::Failed(message),
                });
            }
            WorkerEvent::Done(done) => {
                if let Some(e) = error {
                    return Err(e);
                }
                if done.finish_reason != FinishReason::Stop {
                    let why = format!("the request ended early ({:?})", done.finish_reason);
                    return Err(EmbedError::Failed(why));
                }
                let vectors = collector
                    .finish()
                    .map_err(|e| EmbedError::Failed(format!("the worker's answer: {e}")))?;
                return Ok(Embeddings {
                    vectors,
                    prompt_tokens: done.prompt_tokens,
                });
            }
            WorkerEvent::Token(_) => {
                return Err(EmbedError::Failed(
                    "the worker sent a token for an embedding request".into(),
                ));
            }
        }
    }
    Err(EmbedError::Gone("the worker's stream ended early".into()))
}
