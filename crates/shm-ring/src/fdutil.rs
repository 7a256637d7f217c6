//! Small descriptor helpers shared by the region and the doorbell.

use std::os::fd::BorrowedFd;

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};

use crate::error::{Result, RingError};

/// Sets or clears `FD_CLOEXEC`.
pub(crate) fn set_cloexec(fd: BorrowedFd<'_>, on: bool) -> Result<()> {
    let flags = fcntl(fd, FcntlArg::F_GETFD).map_err(|e| RingError::os("fcntl(F_GETFD)", e))?;
    let mut flags = FdFlag::from_bits_retain(flags);
    flags.set(FdFlag::FD_CLOEXEC, on);
    fcntl(fd, FcntlArg::F_SETFD(flags)).map_err(|e| RingError::os("fcntl(F_SETFD)", e))?;
    Ok(())
}

/// Sets `O_NONBLOCK`.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> Result<()> {
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| RingError::os("fcntl(F_GETFL)", e))?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(|e| RingError::os("fcntl(F_SETFL)", e))?;
    Ok(())
}
