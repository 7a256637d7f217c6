//! Accepting connections under limits, in place of `axum::serve` (which
//! sets neither limit: hyper's header timeout needs a timer it does not
//! give it).
//!
//! * At most `max_connections` connections are open at once; the next
//!   clients wait in the kernel's accept backlog until one closes.
//! * A client gets `read_timeout` to send a request's headers, so a
//!   connection that trickles its headers (slowloris) or sits idle between
//!   keep-alive requests is closed, and its slot freed, after that long.
//!   The body has the same time of its own (see `handlers::json_body`).
//!
//! Shutdown stops accepting, lets requests in flight finish and closes idle
//! connections, as `axum::serve`'s graceful shutdown does.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::HttpConfig;

/// Serves `app` on `listener` under the limits of `config` until
/// `shutdown` completes, then waits for the open connections to finish.
pub fn serve(
    listener: TcpListener,
    app: Router,
    config: &HttpConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = std::io::Result<()>> + Send + 'static {
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.read_timeout);
    async move {
        let graceful = GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let slot = tokio::select! {
                slot = Arc::clone(&slots).acquire_owned() => {
                    slot.expect("the connection semaphore is never closed")
                }
                () = &mut shutdown => break,
            };
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        accept_failed(e).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            // Every SSE event is a small write: without TCP_NODELAY, Nagle's
            // algorithm holds one back until the client's delayed ACK (40 ms
            // on Linux) on a kept-alive connection.
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "setting TCP_NODELAY failed");
            }
            let service = TowerToHyperService::new(app.clone());
            let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "connection closed with an error");
                }
                drop(slot);
            });
        }
        drop(listener);
        graceful.shutdown().await;
        Ok(())
    }
}

/// A failed accept: a connection reset before it was accepted is the
/// client's business; anything else (out of file descriptors) is waited out.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %e, "accepting a connection failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
