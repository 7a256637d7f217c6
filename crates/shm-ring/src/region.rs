//! Creating, mapping and unlinking the shared region.
//!
//! The front-end creates one fresh region per worker incarnation (never
//! reused, so no frame of a dead incarnation can be read), sized once with a
//! single `ftruncate` (all macOS allows), mode 0600, and hands its file
//! descriptor to the child. Two backings:
//!
//! * [`Backing::Named`]: `shm_open(O_CREAT | O_EXCL)` under an unguessable
//!   name of at most 31 bytes (macOS's limit). The owner unlinks it as soon as
//!   the worker has attached, and at the latest when it is dropped.
//! * [`Backing::Memfd`] (Linux): an anonymous `memfd`, which has no name to
//!   leak at all.
//!
//! Follows iceoryx2's `posix/shared_memory.rs` discipline: the owner unlinks
//! the segment on drop, attaching never creates.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};
use nix::fcntl::OFlag;
use nix::sys::mman::{shm_open, shm_unlink};
use nix::sys::stat::{Mode, fstat};

use crate::error::{Result, RingError};
use crate::layout::{Fixed, Geometry, HEADER_SIZE, Live, RegionHeader, RingControl, RingId};

/// Longest shared-memory object name macOS accepts, leading `/` included.
pub const MAX_NAME_LEN: usize = 31;
/// Default prefix of named regions.
pub const DEFAULT_PREFIX: &str = "/shmr-";
/// Random hex digits appended to the prefix (80 bits).
const RANDOM_HEX: usize = 20;

/// What backs a region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backing {
    /// A POSIX shared-memory object under `prefix` + 20 random hex digits.
    /// The prefix starts with `/` and is at most 11 bytes long.
    Named {
        /// Name prefix, e.g. `/shmr-`.
        prefix: String,
    },
    /// An anonymous `memfd` (Linux only).
    #[cfg(target_os = "linux")]
    Memfd,
}

/// Environment variable that makes Linux back regions the way macOS does:
/// `named` (POSIX `shm_open`, under [`DEFAULT_PREFIX`]). Unset or `memfd`:
/// a memfd. It lets the transport and fault tests run macOS's path here.
pub const ENV_BACKING: &str = "SHM_RING_BACKING";

// Not derivable on every platform: the default differs by `cfg`.
#[allow(clippy::derivable_impls)]
impl Default for Backing {
    /// macOS: a named region. Linux: a memfd, or a named region when
    /// [`ENV_BACKING`] says `named`.
    fn default() -> Self {
        #[cfg(target_os = "linux")]
        {
            let named = std::env::var(ENV_BACKING).is_ok_and(|v| v == "named");
            if !named {
                return Self::Memfd;
            }
        }
        Self::Named {
            prefix: DEFAULT_PREFIX.to_owned(),
        }
    }
}

/// A mapped region: the mapping plus typed access to its header.
pub(crate) struct Mapping {
    map: MmapRaw,
    geometry: Geometry,
}

impl Mapping {
    fn map(fd: BorrowedFd<'_>, len: usize) -> Result<MmapRaw> {
        MmapOptions::new()
            .len(len)
            .map_raw(fd.as_raw_fd())
            .map_err(|e| RingError::os("mmap", e))
    }

    fn base(&self) -> NonNull<u8> {
        NonNull::new(self.map.as_mut_ptr()).expect("a successful mmap is never null")
    }

    fn header_ptr(&self) -> *mut RegionHeader {
        // The mapping is page-aligned and at least HEADER_SIZE long (checked
        // when it was made), so the header is in bounds and aligned.
        self.base().as_ptr().cast::<RegionHeader>()
    }

    pub(crate) fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The live words of the header.
    pub(crate) fn live(&self) -> &Live {
        // SAFETY: in bounds and aligned (see `header_ptr`); `Live` is made of
        // atomics only, so shared access from both processes is sound, and
        // every bit pattern is a valid value. The reference lives no longer
        // than `self`, which owns the mapping.
        unsafe { &(*self.header_ptr()).live.0 }
    }

    /// The control block of a ring.
    pub(crate) fn control(&self, id: RingId) -> &RingControl {
        // SAFETY: as for `live`: atomics only, in bounds, aligned, and the
        // mapping outlives the reference.
        unsafe { &(*self.header_ptr()).rings[id as usize] }
    }

    /// Pointer to the first data byte of a ring and its capacity.
    pub(crate) fn ring_data(&self, id: RingId) -> (NonNull<u8>, usize) {
        let (offset, capacity) = self.geometry.ring(id);
        // SAFETY: `offset + capacity <= region_size == map.len()` holds for
        // every validated geometry, so the result stays inside the mapping.
        let ptr = unsafe { self.base().add(offset) };
        (ptr, capacity)
    }

    /// A region over memory the caller mapped (the fuzzing harness maps
    /// anonymous memory, private to one process).
    pub(crate) fn from_parts(map: MmapRaw, geometry: Geometry) -> Self {
        assert!(
            map.len() >= geometry.region_size(),
            "the mapping holds the whole region"
        );
        Self { map, geometry }
    }

    /// Maps a fresh region and writes its header.
    fn create(fd: BorrowedFd<'_>, geometry: Geometry) -> Result<Self> {
        let map = Self::map(fd, geometry.region_size())?;
        let mapping = Self { map, geometry };
        // SAFETY: the region was just created (O_EXCL or an anonymous memfd),
        // zero-filled by `ftruncate`, and no other process has it yet, so
        // this plain write races with nobody. `Fixed` is `Copy` and the
        // pointer is in bounds and aligned.
        unsafe { std::ptr::addr_of_mut!((*mapping.header_ptr()).fixed.0).write(geometry.fixed()) };
        Ok(mapping)
    }

    /// Maps a region created by the peer and validates its header.
    pub(crate) fn attach(fd: BorrowedFd<'_>) -> Result<Self> {
        let size = fstat(fd).map_err(|e| RingError::os("fstat", e))?.st_size;
        let size = u64::try_from(size)
            .ok()
            .filter(|&s| s >= HEADER_SIZE as u64)
            .and_then(|s| usize::try_from(s).ok())
            .ok_or_else(|| RingError::Incompatible(format!("region of {size} bytes")))?;
        let map = Self::map(fd, size)?;
        // SAFETY: the mapping is at least HEADER_SIZE bytes and page-aligned.
        // The fixed part is copied out once with a volatile read, so a peer
        // writing it concurrently can only make the copy wrong (then
        // rejected or harmless), never make us read twice.
        let fixed: Fixed = unsafe {
            std::ptr::addr_of!((*map.as_mut_ptr().cast::<RegionHeader>()).fixed.0).read_volatile()
        };
        let geometry = Geometry::from_fixed(&fixed, size as u64)?;
        Ok(Self { map, geometry })
    }
}

// SAFETY: `MmapRaw` is Send + Sync; the only shared state reachable through
// `Mapping` is atomics (`live`, `control`) and raw pointers that `Producer`
// and `Consumer` use under the single-producer/single-consumer contract.
unsafe impl Send for Mapping {}
// SAFETY: see `Send`.
unsafe impl Sync for Mapping {}

/// The front-end's region: the fd to hand to the child, the mapping, and the
/// name to unlink (named backing only).
pub struct OwnedRegion {
    fd: OwnedFd,
    name: Option<CString>,
    pub(crate) mapping: Arc<Mapping>,
}

impl OwnedRegion {
    /// Creates, sizes and maps a fresh region, then writes its header.
    pub fn create(geometry: Geometry, backing: &Backing) -> Result<Self> {
        let (fd, name) = match backing {
            Backing::Named { prefix } => {
                let (fd, name) = create_named(prefix)?;
                (fd, Some(name))
            }
            #[cfg(target_os = "linux")]
            Backing::Memfd => (create_memfd()?, None),
        };
        // From here on `region` unlinks the name if anything fails.
        let size = geometry.region_size();
        let sized = nix::unistd::ftruncate(&fd, size as i64)
            .map_err(|e| RingError::os("ftruncate", e))
            .and_then(|()| Mapping::create(fd.as_fd(), geometry));
        match sized {
            Ok(mapping) => Ok(Self {
                fd,
                name,
                mapping: Arc::new(mapping),
            }),
            Err(e) => {
                if let Some(name) = &name {
                    // Best effort: the error being reported matters more.
                    let _ = shm_unlink(name.as_c_str());
                }
                Err(e)
            }
        }
    }

    /// The region's file descriptor (close-on-exec; see
    /// [`crate::ChildFds`] to pass it to a child).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The name while the region is still linked (named backing only).
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref().and_then(|n| n.to_str().ok())
    }

    /// Validated geometry the region was created with.
    pub fn geometry(&self) -> Geometry {
        self.mapping.geometry()
    }

    /// Removes the name (named backing); mappings and descriptors stay valid.
    /// Idempotent.
    pub fn unlink(&mut self) -> Result<()> {
        match self.name.take() {
            Some(name) => shm_unlink(name.as_c_str()).map_err(|e| RingError::os("shm_unlink", e)),
            None => Ok(()),
        }
    }

    pub(crate) fn try_clone_fd(&self) -> Result<OwnedFd> {
        self.fd
            .try_clone()
            .map_err(|e| RingError::os("dup region fd", e))
    }
}

impl Drop for OwnedRegion {
    fn drop(&mut self) {
        if let Err(e) = self.unlink() {
            tracing::warn!(error = %e, "could not unlink shared-memory region");
        }
    }
}

impl std::fmt::Debug for OwnedRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedRegion")
            .field("fd", &self.fd)
            .field("name", &self.name)
            .field("geometry", &self.geometry())
            .finish()
    }
}

fn random_hex() -> Result<String> {
    let mut bytes = [0u8; RANDOM_HEX / 2];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| RingError::os("read /dev/urandom", e))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Builds a fresh unguessable name under `prefix`.
pub fn random_name(prefix: &str) -> Result<String> {
    if !prefix.starts_with('/') || prefix[1..].contains('/') {
        return Err(RingError::Config(format!(
            "name prefix {prefix:?} must start with '/' and contain no other '/'"
        )));
    }
    if prefix.len() + RANDOM_HEX > MAX_NAME_LEN {
        return Err(RingError::Config(format!(
            "name prefix {prefix:?} is longer than {} bytes",
            MAX_NAME_LEN - RANDOM_HEX
        )));
    }
    Ok(format!("{prefix}{}", random_hex()?))
}

fn create_named(prefix: &str) -> Result<(OwnedFd, CString)> {
    // O_EXCL makes a collision (or a planted object) an error, never a reuse.
    let name = CString::new(random_name(prefix)?)
        .map_err(|_| RingError::Config("name prefix contains NUL".into()))?;
    let fd = shm_open(
        name.as_c_str(),
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR,
        Mode::S_IRUSR | Mode::S_IWUSR,
    )
    .map_err(|e| RingError::os("shm_open", e))?;
    // shm_open sets FD_CLOEXEC on Linux and macOS; make sure regardless, so
    // only the child we choose inherits it.
    crate::fdutil::set_cloexec(fd.as_fd(), true)?;
    Ok((fd, name))
}

#[cfg(target_os = "linux")]
fn create_memfd() -> Result<OwnedFd> {
    use nix::sys::memfd::{MFdFlags, memfd_create};
    let fd = memfd_create(c"shm-ring", MFdFlags::MFD_CLOEXEC)
        .map_err(|e| RingError::os("memfd_create", e))?;
    // A memfd starts with mode 0777; reopening it through /proc/<pid>/fd
    // goes by that mode, so give it the named regions' 0600.
    nix::sys::stat::fchmod(&fd, Mode::S_IRUSR | Mode::S_IWUSR)
        .map_err(|e| RingError::os("fchmod", e))?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(region: &OwnedRegion) -> u32 {
        fstat(region.fd()).expect("fstat").st_mode as u32 & 0o777
    }

    fn geometry() -> Geometry {
        Geometry::from_config(&crate::RegionConfig {
            request_capacity: 4096,
            event_capacity: 4096,
            max_frame: 1024,
            ..crate::RegionConfig::default()
        })
        .expect("valid")
    }

    #[test]
    fn regions_are_readable_and_writable_by_their_owner_only() {
        let named = OwnedRegion::create(
            geometry(),
            &Backing::Named {
                prefix: "/shmr-mode-".into(),
            },
        )
        .expect("named region");
        assert_eq!(mode(&named), 0o600);
        #[cfg(target_os = "linux")]
        {
            let memfd = OwnedRegion::create(geometry(), &Backing::Memfd).expect("memfd region");
            assert_eq!(mode(&memfd), 0o600);
        }
    }

    #[test]
    fn names_carry_80_random_bits_after_the_prefix() {
        let name = random_name(DEFAULT_PREFIX).expect("valid prefix");
        let random = name.strip_prefix(DEFAULT_PREFIX).expect("the prefix");
        assert_eq!(random.len(), RANDOM_HEX);
        assert!(random.bytes().all(|b| b.is_ascii_hexdigit()), "{name}");
        // 1000 names, no repeats (a counter or clock would repeat or be
        // guessable; 80 random bits collide with probability ~2^-61).
        let names: std::collections::HashSet<String> = (0..1000)
            .map(|_| random_name(DEFAULT_PREFIX).expect("valid prefix"))
            .collect();
        assert_eq!(names.len(), 1000);
    }

    #[test]
    fn random_names_fit_the_macos_limit_and_differ() {
        let a = random_name(DEFAULT_PREFIX).expect("valid prefix");
        let b = random_name(DEFAULT_PREFIX).expect("valid prefix");
        assert!(a.len() <= MAX_NAME_LEN, "{a}");
        assert_ne!(a, b);
        assert!(random_name("no-slash").is_err());
        assert!(random_name("/much-too-long-prefix").is_err());
    }
}
