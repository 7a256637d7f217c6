//! Shared-memory transport between the front-end and one worker process.
//!
//! One fresh region per worker incarnation holds a `#[repr(C)]` header and
//! two single-producer single-consumer byte rings of framed messages
//! (requests: front-end → worker; events: worker → front-end). Positions are
//! monotonically increasing `u64`s published with Release and read with
//! Acquire; there is no lock of any kind in shared memory, so a process that
//! dies mid-write leaves nothing held and no half frame visible. Wake-ups go
//! through a Unix socketpair doorbell, rung only when the reader announced a
//! sleep, which also reports the peer's death as EOF.
//!
//! * front-end: [`FrontEnd::create`] → [`ChildFds::configure`] → spawn →
//!   [`Connection::open`] (tokio: one writer task, one reader task routing
//!   events by request id through a [`Demux`]).
//! * worker: [`WorkerEndpoint::from_env`] / [`WorkerEndpoint::attach`], then
//!   blocking `recv_timeout` / `push` / `flush` from its engine thread.
//!
//! The design (layout, orderings, wake-up and crash handling) is written up
//! in `docs/transport.md`; the index protocol follows iceoryx2's SPSC index
//! queue.

mod connection;
mod doorbell;
mod error;
mod fdutil;
mod frontend;
#[doc(hidden)]
pub mod fuzzing;
mod layout;
mod region;
mod ring;
mod time;
mod worker;

pub use connection::{
    Closed, Connection, ConnectionOptions, Demux, OutFrame, RequestEvents, Route,
};
pub use doorbell::{Doorbell, Drained};
pub use error::{Result, RingError};
pub use frontend::{ChildFds, ENV_DOORBELL_FD, ENV_REGION_FD, FrontEnd, WorkerStatus};
#[cfg(target_os = "linux")]
pub use frontend::{ENV_PDEATHSIG, die_with_parent};
pub use layout::{
    CACHE_LINE, FRAME_ALIGN, FRAME_HEADER, Geometry, HEADER_SIZE, KIND_PAD, LAYOUT_VERSION, MAGIC,
    MAX_CAPACITY, MIN_CAPACITY, RegionConfig, WorkerState, frame_span,
};
pub use region::{Backing, DEFAULT_PREFIX, ENV_BACKING, MAX_NAME_LEN, OwnedRegion, random_name};
pub use ring::{Consumer, FrameHeader, Producer, Reservation};
pub use time::monotonic_ns;
pub use worker::WorkerEndpoint;
