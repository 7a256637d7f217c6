//! The front-end's async side: requests written into the ring by the
//! sending task itself when nothing is queued ahead of them (no task hop on
//! a request's path), otherwise by one writer task fed by an in-process
//! mpsc, which waits for room; one reader task routing events by request id
//! to per-request channels; and a "worker died" signal.
//!
//! The reader drains the event ring, hands each frame to a [`Demux`] (the
//! application protocol decides which request(s) a frame is for: one token
//! frame may carry every active sequence of a decode step), and forwards
//! the pieces. When the ring is empty it announces its sleep and awaits the
//! doorbell through tokio's `AsyncFd` (with a timeout backstop; it never
//! spins). Doorbell EOF, a ring violation or a demux error closes the
//! connection: every open request receives the reason, then its channel
//! ends. The layering follows text-generation-inference's router: callers
//! hold a cheap handle, tasks own the state.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::doorbell::Doorbell;
use crate::error::{Result, RingError};
use crate::frontend::{FrontEnd, WorkerStatus};
use crate::layout::{Geometry, KIND_PAD};
use crate::region::OwnedRegion;
use crate::ring::{Consumer, FrameHeader, Producer};

/// One piece of a decoded frame, addressed to a request.
#[derive(Debug)]
pub struct Route<E> {
    /// Request the event belongs to; 0 sends it to the control channel
    /// (worker-wide events: ready, stats, heartbeats, worker errors).
    pub request_id: u64,
    /// The event.
    pub event: E,
    /// The request ends with this event; its route is removed.
    pub last: bool,
}

/// Splits incoming frames into per-request events. Implemented by the layer
/// that knows the application protocol. An `Err` is treated as a worker
/// crash (the frame came from a misbehaving peer).
pub trait Demux: Send + 'static {
    /// Event type delivered to request channels.
    type Event: Send + 'static;

    /// Decodes one frame, calling `emit` for each event it carries.
    fn demux(
        &mut self,
        header: &FrameHeader,
        payload: &[u8],
        emit: &mut dyn FnMut(Route<Self::Event>),
    ) -> std::result::Result<(), String>;
}

/// A frame to send to the worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutFrame {
    /// Message kind (`1..=max_kind`).
    pub kind: u16,
    /// Protocol flags.
    pub flags: u16,
    /// Request id (0: none).
    pub request_id: u64,
    /// Encoded payload.
    pub payload: Vec<u8>,
}

/// Why a connection closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Closed {
    /// The worker closed its doorbell end: it exited or crashed.
    WorkerGone,
    /// The worker broke the ring or protocol rules; treated as a crash.
    Corrupt(String),
    /// An operating-system error on the doorbell.
    Io(String),
    /// The front-end dropped the connection.
    Dropped,
}

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WorkerGone => f.write_str("worker exited"),
            Self::Corrupt(why) => write!(f, "worker violated the protocol: {why}"),
            Self::Io(why) => write!(f, "doorbell error: {why}"),
            Self::Dropped => f.write_str("connection dropped by the front-end"),
        }
    }
}

impl From<RingError> for Closed {
    fn from(e: RingError) -> Self {
        match e {
            RingError::PeerGone => Self::WorkerGone,
            RingError::Corrupt(why) => Self::Corrupt(why),
            other => Self::Io(other.to_string()),
        }
    }
}

/// Tuning of a connection.
#[derive(Clone, Debug)]
pub struct ConnectionOptions {
    /// Frames the writer queue holds before `send` waits.
    pub queue_depth: usize,
    /// Longest sleep before the reader or a writer waiting for room looks at
    /// the rings on its own (a backstop; normally the doorbell wakes them).
    pub backstop: Duration,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        Self {
            queue_depth: 1024,
            backstop: Duration::from_millis(100),
        }
    }
}

struct RouteTx<E> {
    /// Distinguishes successive registrations of one request id.
    token: u64,
    tx: mpsc::UnboundedSender<std::result::Result<E, Closed>>,
}

struct Shared<E> {
    routes: Mutex<HashMap<u64, RouteTx<E>>>,
    next_token: std::sync::atomic::AtomicU64,
    closed: watch::Sender<Option<Closed>>,
    /// Pinged by the reader on every doorbell wake-up, for a writer
    /// waiting for room in the request ring.
    room: Notify,
    region: Mutex<OwnedRegion>,
    requests: Mutex<Outgoing>,
}

/// The request ring's producing side, shared by senders and the writer
/// task. The lock is held for a frame's copy at most, never across an
/// `.await`.
struct Outgoing {
    producer: Producer,
    /// Batches handed to the writer task and not yet all written. While
    /// any is, senders queue behind them instead of writing, so that a
    /// request's frames never overtake each other.
    queued: usize,
}

impl Outgoing {
    /// Publishes `frame`, or returns `false` when the ring has no room now.
    fn try_write(&mut self, frame: &OutFrame) -> Result<bool> {
        let parts = [frame.payload.as_slice()];
        self.producer
            .try_push(frame.kind, frame.flags, frame.request_id, &parts)
    }
}

impl<E> Shared<E> {
    fn routes(&self) -> MutexGuard<'_, HashMap<u64, RouteTx<E>>> {
        // A panic while holding the lock cannot leave the map inconsistent
        // (single inserts and removes), so keep going with it.
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn closed_reason(&self) -> Option<Closed> {
        self.closed.borrow().clone()
    }

    fn outgoing(&self) -> MutexGuard<'_, Outgoing> {
        // A panic under the lock leaves at worst a frame unpublished (the
        // ring's indices move only on commit), so keep going with it.
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes as many of `frames` as fit into the request ring now, when no
    /// batch is queued ahead of them, and wakes the worker if it sleeps;
    /// what is left (all, a tail or nothing) goes to the writer task
    /// through `slot`, counted as queued under the same lock.
    fn write_now(
        &self,
        mut frames: Vec<OutFrame>,
        bell: &Doorbell,
        slot: mpsc::Permit<'_, Vec<OutFrame>>,
    ) -> std::result::Result<(), Closed> {
        let mut out = self.outgoing();
        if out.queued == 0 {
            let mut written = 0;
            for frame in &frames {
                if !out.try_write(frame)? {
                    break;
                }
                written += 1;
            }
            if written > 0 && out.producer.wake_needed() {
                match bell.ring() {
                    // The reader reports a dead worker, after delivering
                    // every frame it published.
                    Ok(()) | Err(RingError::PeerGone) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            frames.drain(..written);
        }
        if !frames.is_empty() {
            out.queued += 1;
            slot.send(frames);
        }
        Ok(())
    }

    /// Closes the connection once: tells every open request why.
    fn close(&self, reason: Closed) {
        let first = self.closed.send_if_modified(|slot| {
            if slot.is_none() {
                *slot = Some(reason.clone());
                true
            } else {
                false
            }
        });
        if first {
            tracing::debug!(%reason, "transport closed");
            for (_, route) in self.routes().drain() {
                let _ = route.tx.send(Err(reason.clone()));
            }
            self.room.notify_waiters();
        }
    }
}

/// The front-end's handle on one worker's transport.
pub struct Connection<E: Send + 'static> {
    shared: Arc<Shared<E>>,
    bell: Arc<AsyncFd<Doorbell>>,
    outgoing: mpsc::Sender<Vec<OutFrame>>,
    status: WorkerStatus,
    geometry: Geometry,
    tasks: [JoinHandle<()>; 2],
}

/// Events of one request, in order; ends after its last event or with
/// `Err(Closed)` when the worker dies. Dropping it stops routing.
pub struct RequestEvents<E: Send + 'static> {
    request_id: u64,
    token: u64,
    rx: mpsc::UnboundedReceiver<std::result::Result<E, Closed>>,
    shared: Arc<Shared<E>>,
}

impl<E: Send + 'static> RequestEvents<E> {
    /// The next event; `None` once the request has ended.
    pub async fn recv(&mut self) -> Option<std::result::Result<E, Closed>> {
        self.rx.recv().await
    }

    /// The request this stream belongs to.
    pub fn request_id(&self) -> u64 {
        self.request_id
    }
}

impl<E: Send + 'static> Drop for RequestEvents<E> {
    fn drop(&mut self) {
        let mut routes = self.shared.routes();
        if let Entry::Occupied(slot) = routes.entry(self.request_id) {
            // Only remove our own route, not one re-registered under the id.
            if slot.get().token == self.token {
                slot.remove();
            }
        }
    }
}

impl<E: Send + 'static> Connection<E> {
    /// Starts the reader and writer tasks on the current tokio runtime.
    /// Returns the handle and the control channel (events with request id
    /// 0: handshake replies, stats, worker-wide errors).
    pub fn open<D>(
        front: FrontEnd,
        demux: D,
        options: ConnectionOptions,
    ) -> Result<(Self, mpsc::UnboundedReceiver<E>)>
    where
        D: Demux<Event = E>,
    {
        let status = front.status();
        let geometry = front.region.geometry();
        let FrontEnd {
            region,
            requests,
            events,
            bell,
        } = front;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(RingError::Config(
                "Connection::open needs a tokio runtime".into(),
            ));
        }
        // SAFETY: `Doorbell` owns its descriptor (an `OwnedFd` it never
        // replaces), so the fd stays open and the same for the whole life of
        // the `AsyncFd`, which owns the doorbell.
        let bell = unsafe { AsyncFd::register_with_interest(bell, Interest::READABLE) }
            .map_err(|e| RingError::os("AsyncFd", std::io::Error::from(e)))?;
        let bell = Arc::new(bell);
        let shared = Arc::new(Shared {
            routes: Mutex::new(HashMap::new()),
            next_token: std::sync::atomic::AtomicU64::new(1),
            closed: watch::Sender::new(None),
            room: Notify::new(),
            region: Mutex::new(region),
            requests: Mutex::new(Outgoing {
                producer: requests,
                queued: 0,
            }),
        });
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (out_tx, out_rx) = mpsc::channel(options.queue_depth.max(1));
        let reader = Reader {
            events,
            bell: bell.clone(),
            shared: shared.clone(),
            demux,
            control: control_tx,
            backstop: options.backstop,
            unlinked: false,
        };
        let writer = Writer {
            bell: bell.clone(),
            shared: shared.clone(),
            backstop: options.backstop,
        };
        let tasks = [tokio::spawn(reader.run()), tokio::spawn(writer.run(out_rx))];
        Ok((
            Self {
                shared,
                bell,
                outgoing: out_tx,
                status,
                geometry,
                tasks,
            },
            control_rx,
        ))
    }

    /// Opens a route for `request_id` (do it before sending the request).
    pub fn register(&self, request_id: u64) -> Result<RequestEvents<E>> {
        if let Some(reason) = self.shared.closed_reason() {
            return Err(RingError::Closed(reason.to_string()));
        }
        if request_id == 0 {
            return Err(RingError::Config("request id 0 is reserved".into()));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        // Relaxed: a unique counter, ordering nothing else.
        let token = self
            .shared
            .next_token
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match self.shared.routes().entry(request_id) {
            Entry::Occupied(_) => {
                return Err(RingError::Config(format!(
                    "request id {request_id} is already in flight"
                )));
            }
            Entry::Vacant(slot) => {
                slot.insert(RouteTx { token, tx });
            }
        }
        Ok(RequestEvents {
            request_id,
            token,
            rx,
            shared: self.shared.clone(),
        })
    }

    fn check(&self, frame: &OutFrame) -> Result<()> {
        if frame.kind == KIND_PAD || frame.kind > self.geometry.max_kind {
            return Err(RingError::BadKind(frame.kind));
        }
        if frame.payload.len() > self.geometry.max_frame {
            return Err(RingError::FrameTooLarge {
                len: frame.payload.len(),
                max: self.geometry.max_frame,
            });
        }
        Ok(())
    }

    /// Sends one frame (see [`Connection::send_all`]).
    pub async fn send(&self, frame: OutFrame) -> Result<()> {
        self.send_all(vec![frame]).await
    }

    /// Sends frames that must arrive in this order (e.g. the chunks of one
    /// long prompt; other callers' frames may come between them): written
    /// into the ring now when nothing is queued ahead of them and they fit,
    /// else (what does not fit) queued for the writer task, which waits for
    /// room. Frames of one caller arrive in the order sent. Cancelling the
    /// future sends nothing or everything.
    pub async fn send_all(&self, frames: Vec<OutFrame>) -> Result<()> {
        for frame in &frames {
            self.check(frame)?;
        }
        if let Some(reason) = self.shared.closed_reason() {
            return Err(RingError::Closed(reason.to_string()));
        }
        // A place in the writer's queue first: once some frames are in the
        // ring the rest must follow, so nothing after this may wait (and
        // be cancelled).
        let slot = self.outgoing.reserve().await.map_err(|_| {
            RingError::Closed(
                self.shared
                    .closed_reason()
                    .map_or_else(|| "writer stopped".to_owned(), |r| r.to_string()),
            )
        })?;
        self.shared
            .write_now(frames, self.bell.get_ref(), slot)
            .map_err(|reason| {
                self.shared.close(reason.clone());
                RingError::Closed(reason.to_string())
            })
    }

    /// Why the connection closed, if it has.
    pub fn closed_reason(&self) -> Option<Closed> {
        self.shared.closed_reason()
    }

    /// Resolves when the connection closes (the worker died or broke the
    /// rules), with the reason.
    pub async fn closed(&self) -> Closed {
        let mut rx = self.shared.closed.subscribe();
        loop {
            if let Some(reason) = rx.borrow_and_update().clone() {
                return reason;
            }
            if rx.changed().await.is_err() {
                // The sender lives in `shared`, which we hold: unreachable
                // in practice; report it as the worker being gone.
                return Closed::WorkerGone;
            }
        }
    }

    /// The worker's live words (pid, state, heartbeat age).
    pub fn status(&self) -> &WorkerStatus {
        &self.status
    }

    /// The region's geometry.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The region's name while it is still linked (named backing).
    pub fn region_name(&self) -> Option<String> {
        self.region().name().map(str::to_owned)
    }

    /// Unlinks the region's name now (it is also unlinked when the worker
    /// publishes its first frame, and when the connection is dropped).
    pub fn unlink_region(&self) -> Result<()> {
        self.region().unlink()
    }

    fn region(&self) -> MutexGuard<'_, OwnedRegion> {
        self.shared
            .region
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl<E: Send + 'static> Drop for Connection<E> {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        // Streams still held elsewhere end instead of waiting forever.
        self.shared.close(Closed::Dropped);
    }
}

struct Reader<D: Demux> {
    events: Consumer,
    bell: Arc<AsyncFd<Doorbell>>,
    shared: Arc<Shared<D::Event>>,
    demux: D,
    control: mpsc::UnboundedSender<D::Event>,
    backstop: Duration,
    unlinked: bool,
}

impl<D: Demux> Reader<D> {
    async fn run(mut self) {
        if let Err(reason) = self.pump().await {
            self.shared.close(reason);
        }
    }

    /// Runs until the connection closes; returns why.
    async fn pump(&mut self) -> std::result::Result<(), Closed> {
        let mut buf = Vec::with_capacity(4096);
        let mut eof = false;
        loop {
            let mut drained = 0usize;
            while let Some(header) = self.events.try_pop(&mut buf)? {
                self.dispatch(&header, &buf)?;
                drained += 1;
                if self.events.room_wake_needed(false) {
                    self.ring_worker(&mut eof);
                }
                if drained % 256 == 0 {
                    // Be a good neighbour to other tasks on a busy stream.
                    tokio::task::yield_now().await;
                }
            }
            if self.events.room_wake_needed(true) {
                self.ring_worker(&mut eof);
            }
            if drained > 0 && !self.unlinked {
                // The worker has mapped the region: the name can go.
                self.unlinked = true;
                let unlinked = self
                    .shared
                    .region
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .unlink();
                if let Err(e) = unlinked {
                    tracing::warn!(error = %e, "could not unlink region");
                }
            }
            if eof {
                // Every frame published before the worker died is delivered.
                return Err(Closed::WorkerGone);
            }
            if !self.events.prepare_sleep()? {
                continue;
            }
            let woke = tokio::time::timeout(self.backstop, self.bell.readable()).await;
            self.events.cancel_sleep();
            if let Ok(ready) = woke {
                let mut guard = ready.map_err(|e| Closed::Io(e.to_string()))?;
                let got = guard.get_inner().drain()?;
                if got.eof {
                    eof = true;
                } else {
                    guard.clear_ready();
                }
            }
            self.shared.room.notify_one();
        }
    }

    fn ring_worker(&self, eof: &mut bool) {
        if let Err(RingError::PeerGone) = self.bell.get_ref().ring() {
            *eof = true;
        }
    }

    fn dispatch(
        &mut self,
        header: &FrameHeader,
        payload: &[u8],
    ) -> std::result::Result<(), Closed> {
        let mut routes = self.shared.routes();
        let control = &self.control;
        self.demux
            .demux(header, payload, &mut |route: Route<D::Event>| {
                if route.request_id == 0 {
                    let _ = control.send(route.event);
                    return;
                }
                if let Entry::Occupied(slot) = routes.entry(route.request_id) {
                    // A dropped receiver only means nobody listens anymore.
                    let _ = slot.get().tx.send(Ok(route.event));
                    if route.last {
                        slot.remove();
                    }
                }
            })
            .map_err(Closed::Corrupt)
    }
}

struct Writer<E> {
    bell: Arc<AsyncFd<Doorbell>>,
    shared: Arc<Shared<E>>,
    backstop: Duration,
}

impl<E: Send + 'static> Writer<E> {
    async fn run(mut self, mut rx: mpsc::Receiver<Vec<OutFrame>>) {
        match self.pump(&mut rx).await {
            // The reader reports a dead worker, after delivering every
            // frame it published; closing here could drop some of them.
            Ok(()) | Err(Closed::WorkerGone) => {}
            Err(reason) => self.shared.close(reason),
        }
    }

    async fn pump(
        &mut self,
        rx: &mut mpsc::Receiver<Vec<OutFrame>>,
    ) -> std::result::Result<(), Closed> {
        let mut closed = self.shared.closed.subscribe();
        while let Some(batch) = rx.recv().await {
            self.write(batch, &mut closed).await?;
            // Coalesce whatever else is queued under one wake-up.
            while let Ok(batch) = rx.try_recv() {
                self.write(batch, &mut closed).await?;
            }
            self.wake_worker(&self.shared.outgoing())?;
        }
        Ok(())
    }

    fn wake_worker(&self, out: &Outgoing) -> std::result::Result<(), Closed> {
        if out.producer.wake_needed() {
            self.bell.get_ref().ring()?;
        }
        Ok(())
    }

    /// Writes one queued batch, waiting for room as needed; then senders
    /// may write directly again (once no other batch is queued).
    async fn write(
        &mut self,
        batch: Vec<OutFrame>,
        closed: &mut watch::Receiver<Option<Closed>>,
    ) -> std::result::Result<(), Closed> {
        for frame in batch {
            loop {
                if let Some(reason) = closed.borrow().clone() {
                    return Err(reason);
                }
                {
                    let mut out = self.shared.outgoing();
                    if out.try_write(&frame)? {
                        break;
                    }
                    // Full: let the worker see what is there, then wait for
                    // room (the lock is released before waiting).
                    self.wake_worker(&out)?;
                    if out.producer.prepare_wait_for_room(frame.payload.len())? {
                        continue;
                    }
                }
                tokio::select! {
                    () = self.shared.room.notified() => {}
                    _ = closed.changed() => {}
                    () = tokio::time::sleep(self.backstop) => {}
                }
            }
        }
        self.shared.outgoing().queued -= 1;
        Ok(())
    }
}
