//! The front-end's end of a region before it goes async: creation, the
//! descriptors handed to the child, and the header's live words.
//!
//! Set-up sequence for a supervisor:
//!
//! 1. [`FrontEnd::create`] makes a fresh region and doorbell pair and returns
//!    the [`ChildFds`] to give the worker.
//! 2. [`ChildFds::configure`] on the worker's `Command` (clears close-on-exec
//!    in the child only and names the descriptors in its environment), spawn,
//!    then drop the `ChildFds` so the child holds the only copy of its end
//!    (that is what makes the doorbell read EOF when the child dies).
//! 3. [`crate::Connection::open`] starts the reader and writer tasks.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::doorbell::Doorbell;
use crate::error::Result;
use crate::layout::{Geometry, RegionConfig, RingId, WorkerState};
use crate::region::{Backing, Mapping, OwnedRegion};
use crate::ring::{Consumer, Producer};
use crate::time::monotonic_ns;

/// Environment variable naming the region descriptor in the child.
pub const ENV_REGION_FD: &str = "SHM_RING_REGION_FD";
/// Environment variable naming the doorbell descriptor in the child.
pub const ENV_DOORBELL_FD: &str = "SHM_RING_DOORBELL_FD";

/// The front-end's end of a fresh region.
pub struct FrontEnd {
    pub(crate) region: OwnedRegion,
    pub(crate) requests: Producer,
    pub(crate) events: Consumer,
    pub(crate) bell: Doorbell,
}

impl FrontEnd {
    /// Creates a region for one worker incarnation plus its doorbell pair.
    pub fn create(config: &RegionConfig, backing: &Backing) -> Result<(Self, ChildFds)> {
        let geometry = Geometry::from_config(config)?;
        let region = OwnedRegion::create(geometry, backing)?;
        let (bell, child_bell) = Doorbell::pair()?;
        let child = ChildFds {
            region: region.try_clone_fd()?,
            doorbell: child_bell.into_fd(),
        };
        let requests = Producer::new(region.mapping.clone(), RingId::Requests);
        let events = Consumer::new(region.mapping.clone(), RingId::Events);
        Ok((
            Self {
                region,
                requests,
                events,
                bell,
            },
            child,
        ))
    }

    /// The region (its name, fd, geometry; `unlink`).
    pub fn region(&self) -> &OwnedRegion {
        &self.region
    }

    /// Mutable access to the region, e.g. to unlink it early.
    pub fn region_mut(&mut self) -> &mut OwnedRegion {
        &mut self.region
    }

    /// The parts, for callers that drive the rings themselves (synchronous
    /// front-ends, benchmarks): region, request producer, event consumer and
    /// the front-end's doorbell end.
    pub fn into_parts(self) -> (OwnedRegion, Producer, Consumer, Doorbell) {
        (self.region, self.requests, self.events, self.bell)
    }

    /// Live words of the header, readable at any time.
    pub fn status(&self) -> WorkerStatus {
        WorkerStatus(self.region.mapping.clone())
    }
}

/// Reads the worker's live words in the header (pid, state, heartbeat).
/// Written by the worker, so informative only: nothing here is trusted for
/// memory safety.
#[derive(Clone)]
pub struct WorkerStatus(pub(crate) Arc<Mapping>);

impl WorkerStatus {
    /// The pid the worker wrote at attach, if it has attached.
    pub fn worker_pid(&self) -> Option<u32> {
        // Relaxed: an informational word, not guarding any other data.
        let pid = self
            .0
            .live()
            .worker_pid
            .load(std::sync::atomic::Ordering::Relaxed);
        (pid != 0).then_some(pid)
    }

    /// The state the worker last published (`None` if the word is garbage).
    pub fn state(&self) -> Option<WorkerState> {
        // Relaxed: informational, as above.
        WorkerState::from_word(
            self.0
                .live()
                .state
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Time since the worker's last heartbeat (`None` before the first).
    pub fn heartbeat_age(&self) -> Option<Duration> {
        // Relaxed: informational, as above.
        let stamp = self
            .0
            .live()
            .heartbeat_ns
            .load(std::sync::atomic::Ordering::Relaxed);
        (stamp != 0).then(|| Duration::from_nanos(monotonic_ns().saturating_sub(stamp)))
    }
}

/// Descriptors for the worker: the region and the worker's doorbell end.
/// Both are close-on-exec in this process; [`ChildFds::configure`] makes the
/// chosen child, and only it, inherit them. Drop this after spawning.
#[derive(Debug)]
pub struct ChildFds {
    region: OwnedFd,
    doorbell: OwnedFd,
}

impl ChildFds {
    /// Region descriptor number (the same number in the child).
    pub fn region_fd(&self) -> RawFd {
        self.region.as_raw_fd()
    }

    /// Doorbell descriptor number (the same number in the child).
    pub fn doorbell_fd(&self) -> RawFd {
        self.doorbell.as_raw_fd()
    }

    /// Makes `cmd`'s child inherit both descriptors (close-on-exec cleared
    /// between fork and exec, in the child only) and names them in the
    /// child's environment ([`ENV_REGION_FD`], [`ENV_DOORBELL_FD`]).
    pub fn configure(&self, cmd: &mut Command) {
        use std::os::unix::process::CommandExt;
        let fds = [self.region_fd(), self.doorbell_fd()];
        cmd.env(ENV_REGION_FD, fds[0].to_string());
        cmd.env(ENV_DOORBELL_FD, fds[1].to_string());
        let hook = move || -> std::io::Result<()> {
            for fd in fds {
                // SAFETY: `fd` is open in the parent for as long as `self`
                // lives, which the caller keeps until `spawn` returns; the
                // forked child has the same table. fcntl is async-signal-safe
                // and nothing here allocates.
                let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                nix::fcntl::fcntl(
                    fd,
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                )?;
            }
            Ok(())
        };
        // SAFETY: the hook only calls fcntl (async-signal-safe) on
        // descriptors that exist in the child; see above.
        unsafe { cmd.pre_exec(hook) };
    }

    /// Takes both descriptors, for a worker in this same process (tests,
    /// benchmarks): `(region, doorbell)`.
    pub fn into_owned(self) -> (OwnedFd, OwnedFd) {
        (self.region, self.doorbell)
    }
}

/// Environment variable that turns [`die_with_parent`] off when `off`, so
/// that a worker on Linux relies on what it has on macOS alone: the
/// doorbell's EOF and its parent pid.
#[cfg(target_os = "linux")]
pub const ENV_PDEATHSIG: &str = "SHM_RING_PDEATHSIG";

/// Asks the kernel to SIGKILL `cmd`'s child when the parent thread exits
/// (Linux `PR_SET_PDEATHSIG`), unless [`ENV_PDEATHSIG`] is `off`. Note:
/// "parent" is the *thread* that spawned it, so spawn from a thread that
/// lives as long as the daemon.
#[cfg(target_os = "linux")]
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    if std::env::var(ENV_PDEATHSIG).is_ok_and(|v| v == "off") {
        return;
    }
    let hook = || -> std::io::Result<()> {
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
        Ok(())
    };
    // SAFETY: prctl is async-signal-safe and touches no parent state.
    unsafe { cmd.pre_exec(hook) };
}

impl std::fmt::Debug for FrontEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontEnd")
            .field("region", &self.region)
            .field("bell", &self.bell)
            .finish()
    }
}
