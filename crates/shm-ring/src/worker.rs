//! The worker's end: blocking, for an engine loop that runs on one OS thread.
//!
//! The worker consumes the request ring and produces the event ring. It
//! waits with `poll(2)` on its doorbell end, with a timeout, so the engine
//! loop can also run periodic work (heartbeats, stats). When the front-end
//! dies the doorbell reads EOF and every call returns
//! [`RingError::PeerGone`] once the published requests are drained. A
//! worker that the front-end spawned also watches its parent pid on every
//! empty [`WorkerEndpoint::try_recv`], so that it notices the front-end's
//! death while busy, when it does not sleep on the doorbell (on Linux the
//! kernel's `PR_SET_PDEATHSIG` kills it anyway; macOS has no such thing).

use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::doorbell::Doorbell;
use crate::error::{Result, RingError};
use crate::frontend::{ENV_DOORBELL_FD, ENV_REGION_FD};
use crate::layout::{Geometry, RingId, WorkerState};
use crate::region::Mapping;
use crate::ring::{Consumer, FrameHeader, Producer, Reservation};
use crate::time::monotonic_ns;

/// How long a sleep waiting for room lasts before re-checking on its own
/// (a backstop: the front-end rings the doorbell when it frees room).
const ROOM_BACKSTOP: Duration = Duration::from_millis(50);

/// The worker's end of a region.
pub struct WorkerEndpoint {
    mapping: Arc<Mapping>,
    requests: Consumer,
    events: Producer,
    bell: Doorbell,
    peer_gone: bool,
    /// The front-end's pid when it is this process's parent (a worker it
    /// spawned): when the parent changes, the front-end is gone. This is
    /// what a busy worker has on macOS, where no `PR_SET_PDEATHSIG` kills
    /// it and it reads the doorbell's EOF only when it sleeps.
    parent: Option<u32>,
}

impl WorkerEndpoint {
    /// Maps the region behind `region`, validates its header, publishes our
    /// pid and the `Attached` state.
    pub fn attach(region: OwnedFd, doorbell: OwnedFd) -> Result<Self> {
        let mapping = Arc::new(Mapping::attach(region.as_fd())?);
        // The mapping keeps the memory alive; the descriptor is not needed.
        drop(region);
        let bell = Doorbell::from_fd(doorbell)?;
        let live = mapping.live();
        // Relaxed: informational words for the front-end's status reads.
        live.worker_pid.store(std::process::id(), Ordering::Relaxed);
        live.heartbeat_ns.store(monotonic_ns(), Ordering::Relaxed);
        live.state
            .store(WorkerState::Attached as u32, Ordering::Relaxed);
        Ok(Self {
            requests: Consumer::new(mapping.clone(), RingId::Requests),
            events: Producer::new(mapping.clone(), RingId::Events),
            mapping,
            bell,
            peer_gone: false,
            parent: None,
        })
    }

    /// Attaches to the descriptors named by [`ENV_REGION_FD`] and
    /// [`ENV_DOORBELL_FD`] (set by [`crate::ChildFds::configure`]).
    ///
    /// # Safety
    /// Call at most once per process, and only in a child configured with
    /// `ChildFds::configure`: the descriptors named in the environment must
    /// be open, inherited, and owned by nothing else in this process.
    pub unsafe fn from_env() -> Result<Self> {
        let fd = |var: &str| -> Result<RawFd> {
            std::env::var(var)
                .ok()
                .and_then(|v| v.parse::<RawFd>().ok())
                .filter(|&fd| fd >= 0)
                .ok_or_else(|| RingError::Config(format!("{var} is not set to a descriptor")))
        };
        let (region, doorbell) = (fd(ENV_REGION_FD)?, fd(ENV_DOORBELL_FD)?);
        // SAFETY: the caller guarantees both descriptors were inherited for
        // us and nothing else owns them; `OwnedFd` becomes their only owner.
        let (region, doorbell) =
            unsafe { (OwnedFd::from_raw_fd(region), OwnedFd::from_raw_fd(doorbell)) };
        let mut endpoint = Self::attach(region, doorbell)?;
        // The front-end configured these descriptors and spawned us.
        endpoint.parent = Some(parent_pid()).filter(|&pid| pid > 1);
        Ok(endpoint)
    }

    /// Whether the front-end that spawned this process has exited (its
    /// child was handed to another parent). One `getppid`, no blocking.
    fn parent_gone(&self) -> bool {
        self.parent.is_some_and(|parent| parent_pid() != parent)
    }

    /// The geometry the front-end created.
    pub fn geometry(&self) -> Geometry {
        self.mapping.geometry()
    }

    /// Records a heartbeat in the header (a relaxed store, no syscall
    /// beyond reading the clock).
    pub fn heartbeat(&self) {
        // Relaxed: informational; the front-end only compares it to its clock.
        self.mapping
            .live()
            .heartbeat_ns
            .store(monotonic_ns(), Ordering::Relaxed);
    }

    /// Publishes the `Closing` state (clean shutdown under way).
    pub fn set_closing(&self) {
        // Relaxed: informational.
        self.mapping
            .live()
            .state
            .store(WorkerState::Closing as u32, Ordering::Relaxed);
    }

    /// The doorbell descriptor (e.g. to poll it together with other fds).
    pub fn doorbell_fd(&self) -> BorrowedFd<'_> {
        self.bell.as_fd()
    }

    fn absorb_doorbell(&mut self) -> Result<()> {
        if self.bell.drain()?.eof {
            self.peer_gone = true;
        }
        Ok(())
    }

    fn ring_peer(&mut self) -> Result<()> {
        match self.bell.ring() {
            Err(RingError::PeerGone) => {
                self.peer_gone = true;
                Err(RingError::PeerGone)
            }
            other => other,
        }
    }

    /// Takes the next request frame if one is published; never blocks.
    /// [`RingError::PeerGone`] when none is and the front-end that spawned
    /// this process has exited.
    pub fn try_recv(&mut self, buf: &mut Vec<u8>) -> Result<Option<FrameHeader>> {
        let frame = self.requests.try_pop(buf)?;
        if frame.is_none() && self.parent_gone() {
            self.peer_gone = true;
            return Err(RingError::PeerGone);
        }
        if self.requests.room_wake_needed(frame.is_none()) {
            self.ring_peer()?;
        }
        Ok(frame)
    }

    /// Takes the next request frame, sleeping up to `timeout` for one.
    /// `Ok(None)` on timeout; [`RingError::PeerGone`] once the front-end is
    /// gone and every frame it published has been taken.
    pub fn recv_timeout(
        &mut self,
        buf: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<Option<FrameHeader>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(frame) = self.try_recv(buf)? {
                return Ok(Some(frame));
            }
            if self.peer_gone {
                return Err(RingError::PeerGone);
            }
            if timeout.is_zero() {
                return Ok(None);
            }
            if !self.requests.prepare_sleep()? {
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let woke = !left.is_zero() && self.bell.wait(left)?;
            self.requests.cancel_sleep();
            if woke {
                self.absorb_doorbell()?;
            } else if Instant::now() >= deadline {
                // One last look: a frame may have landed with the timeout.
                return self.try_recv(buf);
            }
        }
    }

    /// Checks, without blocking, whether the front-end is still there.
    pub fn check_peer(&mut self) -> Result<()> {
        self.absorb_doorbell()?;
        if self.peer_gone {
            return Err(RingError::PeerGone);
        }
        Ok(())
    }

    /// Publishes one event frame made of `parts` without waking the
    /// front-end (call [`WorkerEndpoint::flush`] after a batch), sleeping
    /// while the event ring is full.
    pub fn push(&mut self, kind: u16, flags: u16, request_id: u64, parts: &[&[u8]]) -> Result<()> {
        loop {
            if self.events.try_push(kind, flags, request_id, parts)? {
                return Ok(());
            }
            let len = parts.iter().map(|p| p.len()).sum();
            self.wait_for_room(len)?;
        }
    }

    /// Reserves room for an event frame to encode in place, sleeping while
    /// the ring is full. Nothing is published until the reservation is
    /// committed.
    pub fn reserve(
        &mut self,
        kind: u16,
        flags: u16,
        request_id: u64,
        len: usize,
    ) -> Result<Reservation<'_>> {
        while !self.events.has_room_for(len)? {
            self.wait_for_room(len)?;
        }
        self.events
            .reserve(kind, flags, request_id, len)?
            .ok_or_else(|| RingError::corrupt("room vanished between check and reserve"))
    }

    /// Wakes the front-end if it sleeps (one syscall per sleep, none while
    /// it is busy).
    pub fn flush(&mut self) -> Result<()> {
        if self.events.wake_needed() {
            self.ring_peer()?;
        }
        Ok(())
    }

    /// [`WorkerEndpoint::push`] then [`WorkerEndpoint::flush`].
    pub fn send(&mut self, kind: u16, flags: u16, request_id: u64, payload: &[u8]) -> Result<()> {
        self.push(kind, flags, request_id, &[payload])?;
        self.flush()
    }

    fn wait_for_room(&mut self, len: usize) -> Result<()> {
        // The front-end must see what is already there, or it never frees room.
        self.flush()?;
        while !self.events.prepare_wait_for_room(len)? {
            if self.peer_gone {
                return Err(RingError::PeerGone);
            }
            if self.bell.wait(ROOM_BACKSTOP)? {
                self.absorb_doorbell()?;
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for WorkerEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerEndpoint")
            .field("geometry", &self.mapping.geometry())
            .field("bell", &self.bell)
            .field("peer_gone", &self.peer_gone)
            .finish()
    }
}

/// This process's parent pid.
fn parent_pid() -> u32 {
    nix::unistd::getppid().as_raw().unsigned_abs()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FrontEnd, RegionConfig};

    fn endpoint() -> (FrontEnd, WorkerEndpoint) {
        let config = RegionConfig {
            request_capacity: 4096,
            event_capacity: 4096,
            max_frame: 1024,
            ..RegionConfig::default()
        };
        let (front, child) = FrontEnd::create(&config, &crate::Backing::default()).expect("create");
        let (region, doorbell) = child.into_owned();
        (
            front,
            WorkerEndpoint::attach(region, doorbell).expect("attach"),
        )
    }

    #[test]
    fn a_worker_whose_parent_changed_finds_the_front_end_gone() {
        let mut buf = Vec::new();
        let (_front, mut worker) = endpoint();
        // Attached in-process: no parent to watch.
        assert!(worker.try_recv(&mut buf).expect("recv").is_none());
        // Spawned by its parent, which still lives.
        worker.parent = Some(parent_pid());
        assert!(worker.try_recv(&mut buf).expect("recv").is_none());
        // Reparented: the spawning front-end exited, though the doorbell
        // (held here) shows nothing; a busy worker learns it at once.
        worker.parent = Some(parent_pid() + 1);
        assert!(matches!(
            worker.try_recv(&mut buf),
            Err(RingError::PeerGone)
        ));
        assert!(matches!(
            worker.recv_timeout(&mut buf, Duration::from_secs(5)),
            Err(RingError::PeerGone)
        ));
    }
}
