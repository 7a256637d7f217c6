//! MLX's distributed layer (`mlx::core::distributed`): a [`Group`] of
//! processes that run one model together, and the collectives over it
//! (sums, gathers, point-to-point sends). The backend is MLX's own: `ring`
//! (TCP between neighbours, any platform), `jaccl` (RDMA over
//! Thunderbolt between Macs), `mpi` or `nccl` (NVIDIA GPUs); which
//! processes form the group comes from the backend's environment (for the
//! ring, `MLX_HOSTFILE`, a JSON file of each rank's `ip:port` list, and
//! `MLX_RANK`), as `mlx.launch` writes it.
//!
//! Collectives are graph nodes like any other operation: they run, and
//! wait for every peer, when a graph holding them is evaluated, so every
//! rank must build and evaluate the same collectives in the same order.
//! A peer that dies makes the pending collective fail with MLX's error (the
//! ring reports "connection to a peer was lost"); joining a ring whose
//! peers never come up blocks inside MLX, so callers that must not hang
//! join on a thread of their own and give up after a timeout.

use std::ffi::CString;
use std::ptr::NonNull;

use crate::array::call_array;
use crate::error::{MlxError, Result, check};
use crate::{Array, Dtype, ffi};

/// A group of processes that communicate, as MLX's `distributed::Group`.
pub struct Group {
    raw: NonNull<ffi::mlxs_group>,
}

// SAFETY: the handle is a heap-allocated `distributed::Group`, a shared
// pointer to the backend's communicator, which MLX uses from whichever
// thread builds the collective; the handle itself is never mutated.
unsafe impl Send for Group {}
// SAFETY: as above: the shim only reads the group (rank, size) or hands a
// copy of its shared pointer to an operation.
unsafe impl Sync for Group {}

impl Clone for Group {
    fn clone(&self) -> Group {
        // SAFETY: `raw` is a live group handle; the clone is a new handle
        // sharing the same communicator.
        let raw = unsafe { ffi::mlxs_group_clone(self.raw.as_ptr()) };
        Group {
            raw: NonNull::new(raw).expect("cloning a live group handle allocates a new one"),
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: `raw` was allocated by the shim and is released once.
        unsafe { ffi::mlxs_group_free(self.raw.as_ptr()) }
    }
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Group(rank {} of {})", self.rank(), self.size())
    }
}

/// Whether `backend` (`ring`, `jaccl`, `mpi`, `nccl`, or `any`) is built
/// into this MLX.
pub fn is_available(backend: &str) -> Result<bool> {
    let name = c_name(backend)?;
    let mut out = false;
    // SAFETY: `name` is a live NUL-terminated string and `out` a live bool.
    check(unsafe { ffi::mlxs_dist_is_available(name.as_ptr(), &mut out) })?;
    Ok(out)
}

/// Joins the group `backend` describes in this process's environment.
/// With `strict`, a group that cannot be formed is an error; without, the
/// process gets a group of one. Blocks until every peer has connected.
pub fn init(backend: &str, strict: bool) -> Result<Group> {
    let name = c_name(backend)?;
    let mut out: *mut ffi::mlxs_group = std::ptr::null_mut();
    // SAFETY: `name` is a live NUL-terminated string; on success the shim
    // writes one new, owned group handle to `out`.
    check(unsafe { ffi::mlxs_dist_init(name.as_ptr(), strict, &mut out) })?;
    NonNull::new(out)
        .map(|raw| Group { raw })
        .ok_or_else(|| MlxError::Mlx("the shim returned no group".into()))
}

fn c_name(backend: &str) -> Result<CString> {
    CString::new(backend)
        .map_err(|_| MlxError::InvalidArgument(format!("backend name {backend:?} holds a NUL")))
}

impl Group {
    fn ptr(&self) -> *const ffi::mlxs_group {
        self.raw.as_ptr()
    }

    /// This process's rank, 0 to `size() - 1`.
    pub fn rank(&self) -> i32 {
        // SAFETY: `raw` is a live group handle.
        unsafe { ffi::mlxs_group_rank(self.ptr()) }
    }

    /// The number of processes in the group.
    pub fn size(&self) -> i32 {
        // SAFETY: `raw` is a live group handle.
        unsafe { ffi::mlxs_group_size(self.ptr()) }
    }

    /// The element-wise sum of `x` over every rank (each rank passes an
    /// array of the same shape and dtype, and gets the sum).
    pub fn all_sum(&self, x: &Array) -> Result<Array> {
        call_array!(mlxs_dist_all_sum(x.as_ptr(), self.ptr()))
    }

    /// The element-wise maximum of `x` over every rank.
    pub fn all_max(&self, x: &Array) -> Result<Array> {
        call_array!(mlxs_dist_all_max(x.as_ptr(), self.ptr()))
    }

    /// Every rank's `x` concatenated along the first axis, rank 0 first.
    pub fn all_gather(&self, x: &Array) -> Result<Array> {
        call_array!(mlxs_dist_all_gather(x.as_ptr(), self.ptr()))
    }

    /// Sends `x` to rank `dst`; the send happens when the returned array
    /// is evaluated (keep it in the graph).
    pub fn send(&self, x: &Array, dst: i32) -> Result<Array> {
        self.check_peer(dst)?;
        call_array!(mlxs_dist_send(x.as_ptr(), dst, self.ptr()))
    }

    /// The array of `shape` and `dtype` rank `src` sends.
    pub fn recv(&self, shape: &[i32], dtype: Dtype, src: i32) -> Result<Array> {
        self.check_peer(src)?;
        call_array!(mlxs_dist_recv(
            shape.as_ptr(),
            shape.len(),
            dtype as i32,
            src,
            self.ptr()
        ))
    }

    /// The array rank `src` sends, of `like`'s shape and dtype.
    pub fn recv_like(&self, like: &Array, src: i32) -> Result<Array> {
        self.check_peer(src)?;
        call_array!(mlxs_dist_recv_like(like.as_ptr(), src, self.ptr()))
    }

    /// Returns once every rank has reached it (MLX has no barrier of its
    /// own: this evaluates a sum of one scalar over the group).
    pub fn barrier(&self) -> Result<()> {
        let one = Array::from_slice(&[1.0f32], &[1])?;
        self.all_sum(&one)?.eval()
    }

    fn check_peer(&self, peer: i32) -> Result<()> {
        if peer < 0 || peer >= self.size() || peer == self.rank() {
            return Err(MlxError::InvalidArgument(format!(
                "rank {peer} is not a peer of rank {} in a group of {}",
                self.rank(),
                self.size()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_of_one_sums_and_gathers_to_its_own_input() {
        // Without a backend's environment a non-strict init gives a group
        // of one, whose collectives are the identity.
        let group = init("any", false).expect("a group of one always forms");
        assert_eq!((group.rank(), group.size()), (0, 1));
        let x = Array::from_slice(&[1.0f32, 2.0, 3.0], &[3]).unwrap();
        assert_eq!(
            group.all_sum(&x).unwrap().to_vec::<f32>().unwrap(),
            [1.0, 2.0, 3.0]
        );
        assert_eq!(group.all_gather(&x).unwrap().shape(), [3]);
        assert!(group.send(&x, 0).is_err(), "a rank cannot send to itself");
        group.barrier().unwrap();
        assert!(format!("{group:?}").contains("rank 0 of 1"));
    }
}
