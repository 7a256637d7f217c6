//! The doorbell: one end of a Unix stream `socketpair` per process.
//!
//! A single byte means "look at your rings again"; bytes are coalesced by the
//! wait words in the ring control blocks, so a busy stream rings nothing.
//! The same socket tells liveness: when the peer process dies, the kernel
//! closes its end and ours reads EOF, with no timeout involved.
//! The front-end waits on it through tokio's `AsyncFd`; the worker with
//! `poll(2)`.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, send, socketpair};

use crate::error::{Result, RingError};
use crate::fdutil::{set_cloexec, set_nonblocking};

/// What draining the doorbell found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drained {
    /// Bytes (wake-ups) read.
    pub rings: usize,
    /// The peer closed its end: it is gone.
    pub eof: bool,
}

/// One end of the doorbell socketpair, non-blocking and close-on-exec.
#[derive(Debug)]
pub struct Doorbell {
    fd: OwnedFd,
}

impl Doorbell {
    /// A connected pair: `(front-end end, worker end)`.
    pub fn pair() -> Result<(Self, Self)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::empty(),
        )
        .map_err(|e| RingError::os("socketpair", e))?;
        // Set with fcntl rather than SOCK_CLOEXEC so the same code runs on
        // macOS, whose socketpair takes no such flags.
        for fd in [&a, &b] {
            set_cloexec(fd.as_fd(), true)?;
            set_nonblocking(fd.as_fd())?;
            #[cfg(target_vendor = "apple")]
            set_no_sigpipe(fd.as_fd())?;
        }
        Ok((Self { fd: a }, Self { fd: b }))
    }

    /// Wraps an inherited descriptor (the worker's end), making it
    /// non-blocking and close-on-exec.
    pub fn from_fd(fd: OwnedFd) -> Result<Self> {
        set_cloexec(fd.as_fd(), true)?;
        set_nonblocking(fd.as_fd())?;
        Ok(Self { fd })
    }

    /// Wakes the peer. A full socket buffer already holds plenty of
    /// wake-ups, so it counts as success; a closed peer is
    /// [`RingError::PeerGone`].
    pub fn ring(&self) -> Result<()> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let flags = MsgFlags::MSG_DONTWAIT;
        loop {
            match send(self.fd.as_raw_fd(), &[1u8], flags) {
                Ok(_) | Err(Errno::EAGAIN) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN) => {
                    return Err(RingError::PeerGone);
                }
                Err(e) => return Err(RingError::os("doorbell send", e)),
            }
        }
    }

    /// Reads every pending wake-up without blocking.
    pub fn drain(&self) -> Result<Drained> {
        let mut buf = [0u8; 64];
        let mut out = Drained {
            rings: 0,
            eof: false,
        };
        loop {
            match nix::unistd::read(self.fd.as_fd(), &mut buf) {
                Ok(0) => {
                    out.eof = true;
                    return Ok(out);
                }
                Ok(n) => {
                    out.rings += n;
                    // A short read emptied the socket: skip the read that
                    // would only return EAGAIN (one syscall per wake-up
                    // saved). A byte arriving now raises a new readiness
                    // event, so nothing is missed.
                    if n < buf.len() {
                        return Ok(out);
                    }
                }
                Err(Errno::EAGAIN) => return Ok(out),
                Err(Errno::EINTR) => continue,
                Err(Errno::ECONNRESET) => {
                    out.eof = true;
                    return Ok(out);
                }
                Err(e) => return Err(RingError::os("doorbell read", e)),
            }
        }
    }

    /// Blocks until the doorbell is readable (a wake-up or EOF) or the
    /// timeout passes. Returns whether it became readable.
    pub fn wait(&self, timeout: Duration) -> Result<bool> {
        let ms = timeout.as_millis().clamp(0, i32::MAX as u128) as i32;
        // Round sub-millisecond timeouts up so a short wait still sleeps.
        let ms = if ms == 0 && !timeout.is_zero() { 1 } else { ms };
        let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        loop {
            match poll(&mut fds, timeout) {
                Ok(0) => return Ok(false),
                Ok(_) => return Ok(true),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(RingError::os("poll", e)),
            }
        }
    }

    /// The raw descriptor (to pass to a child or register with a reactor).
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub(crate) fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

/// macOS has no `MSG_NOSIGNAL`: ask the socket itself not to raise SIGPIPE
/// when the peer is gone (we report `PeerGone` instead).
#[cfg(target_vendor = "apple")]
fn set_no_sigpipe(fd: BorrowedFd<'_>) -> Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `fd` is an open socket; the option value points to a live
    // c_int whose size is passed alongside.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NOSIGPIPE,
            std::ptr::from_ref(&on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(RingError::os(
            "setsockopt(SO_NOSIGPIPE)",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

impl AsFd for Doorbell {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Doorbell {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_wakes_the_peer_and_a_closed_peer_reads_eof() {
        let (a, b) = Doorbell::pair().expect("socketpair");
        assert!(!b.wait(Duration::from_millis(1)).expect("poll"));
        a.ring().expect("ring");
        a.ring().expect("ring");
        assert!(b.wait(Duration::from_secs(5)).expect("poll"));
        assert_eq!(
            b.drain().expect("drain"),
            Drained {
                rings: 2,
                eof: false
            }
        );
        drop(a);
        assert!(b.wait(Duration::from_secs(5)).expect("poll"));
        assert!(b.drain().expect("drain").eof);
        assert!(matches!(b.ring(), Err(RingError::PeerGone)));
    }
}
