//! The `#[repr(C)]` layout of a region and its validated geometry.
//!
//! A region is one shared mapping:
//!
//! ```text
//! offset 0            HEADER_SIZE            + request capacity      + event capacity
//! | header (page 0)    | request ring data      | event ring data       |
//! ```
//!
//! Page 0 holds an immutable part (magic, versions, generation, geometry),
//! written once by the creator before the worker is spawned, then live words
//! (worker pid, state, heartbeat) and the control block of each ring, every
//! index and wait word on its own 128-byte line (Apple Silicon's cache line;
//! two 64-byte lines on x86-64) so the two processes never false-share.
//! As in iceoryx2's shared-memory structures, everything here is `#[repr(C)]`
//! and positions are monotonically increasing `u64`s.
//!
//! The front-end never reads the immutable part back: it keeps its own copy
//! ([`Geometry`]), so a worker that scribbles over the header cannot steer
//! the front-end's reads. The worker validates the header once, at attach.

use std::sync::atomic::{AtomicU32, AtomicU64};

use crate::error::{Result, RingError};

/// `b"SHMRING1"` read as a little-endian `u64`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMRING1");
/// Version of this layout (header, control block and frame format).
pub const LAYOUT_VERSION: u32 = 1;
/// Cache-line size the control block is padded to (Apple Silicon: 128 bytes).
pub const CACHE_LINE: usize = 128;
/// Bytes reserved for the header: one 16 KiB page (Apple Silicon's page size,
/// four pages on x86-64), so ring data starts page-aligned everywhere.
pub const HEADER_SIZE: usize = 16 * 1024;
/// Bytes of a frame header: `len u32 | kind u16 | flags u16 | request id u64`.
pub const FRAME_HEADER: usize = 16;
/// Every frame starts on a multiple of this.
pub const FRAME_ALIGN: usize = 8;
/// Kind of the padding frame written when a frame would straddle the end.
pub const KIND_PAD: u16 = 0;
/// Smallest ring capacity accepted.
pub const MIN_CAPACITY: usize = 4 * 1024;
/// Largest ring capacity accepted (1 GiB).
pub const MAX_CAPACITY: usize = 1 << 30;

/// Bytes a frame with `payload` bytes occupies in the ring.
pub const fn frame_span(payload: usize) -> usize {
    (FRAME_HEADER + payload + FRAME_ALIGN - 1) & !(FRAME_ALIGN - 1)
}

/// A value alone on its own cache line.
#[repr(C, align(128))]
pub(crate) struct Line<T>(pub T);

/// Live state of the worker, as published in the header.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerState {
    /// The front-end created the region; no worker has attached yet.
    Created = 0,
    /// A worker mapped the region and validated the header.
    Attached = 1,
    /// The worker is shutting down cleanly.
    Closing = 2,
}

impl WorkerState {
    /// Decodes a state word; unknown values yield `None`.
    pub fn from_word(word: u32) -> Option<Self> {
        match word {
            0 => Some(Self::Created),
            1 => Some(Self::Attached),
            2 => Some(Self::Closing),
            _ => None,
        }
    }
}

/// Control block of one SPSC ring: each word on its own line.
#[repr(C)]
pub(crate) struct RingControl {
    /// Producer position: bytes ever published. Written by the producer only.
    pub tail: Line<AtomicU64>,
    /// Consumer position: bytes ever consumed. Written by the consumer only.
    pub head: Line<AtomicU64>,
    /// 1 while the consumer sleeps (or is about to) waiting for data.
    pub data_waiting: Line<AtomicU32>,
    /// 1 while the producer sleeps (or is about to) waiting for room.
    pub space_waiting: Line<AtomicU32>,
}

/// Where one ring's bytes live.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct RingDesc {
    pub offset: u64,
    pub capacity: u64,
}

/// Immutable part of the header, written once by the creator.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fixed {
    pub magic: u64,
    pub layout_version: u32,
    pub protocol_version: u32,
    pub generation: u64,
    pub region_size: u64,
    pub max_frame: u32,
    pub max_kind: u16,
    pub reserved: u16,
    /// `[requests (front-end → worker), events (worker → front-end)]`.
    pub rings: [RingDesc; 2],
}

/// Words either side updates while the worker lives.
#[repr(C)]
pub(crate) struct Live {
    pub worker_pid: AtomicU32,
    pub state: AtomicU32,
    /// `CLOCK_MONOTONIC` nanoseconds of the worker's last heartbeat.
    pub heartbeat_ns: AtomicU64,
}

/// The whole header, at offset 0 of the region.
#[repr(C)]
pub(crate) struct RegionHeader {
    pub fixed: Line<Fixed>,
    pub live: Line<Live>,
    /// `[requests, events]`.
    pub rings: [RingControl; 2],
}

const _: () = assert!(std::mem::size_of::<RegionHeader>() <= HEADER_SIZE);
const _: () = assert!(std::mem::size_of::<Line<AtomicU64>>() == CACHE_LINE);
const _: () = assert!(std::mem::size_of::<RingControl>() == 4 * CACHE_LINE);

/// Which ring of a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingId {
    /// Front-end → worker.
    Requests = 0,
    /// Worker → front-end.
    Events = 1,
}

/// What a region is made of, as asked by the creator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionConfig {
    /// Bytes of the request ring (power of two).
    pub request_capacity: usize,
    /// Bytes of the event ring (power of two).
    pub event_capacity: usize,
    /// Largest payload of one frame, in bytes.
    pub max_frame: usize,
    /// Frame kinds `1..=max_kind` are accepted; `0` is the ring's padding.
    pub max_kind: u16,
    /// Version of the application protocol carried (opaque to the ring).
    pub protocol_version: u32,
    /// Incarnation number of the worker this region serves.
    pub generation: u64,
}

impl Default for RegionConfig {
    fn default() -> Self {
        Self {
            request_capacity: 1 << 20,
            event_capacity: 1 << 20,
            max_frame: 64 * 1024,
            max_kind: u16::MAX,
            protocol_version: 0,
            generation: 0,
        }
    }
}

/// Validated geometry of a region, kept privately by each side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Bytes of the request ring.
    pub request_capacity: usize,
    /// Bytes of the event ring.
    pub event_capacity: usize,
    /// Largest payload of one frame.
    pub max_frame: usize,
    /// Largest accepted frame kind.
    pub max_kind: u16,
    /// Application protocol version written by the creator.
    pub protocol_version: u32,
    /// Worker incarnation written by the creator.
    pub generation: u64,
}

impl Geometry {
    /// Checks a configuration and derives the geometry.
    pub fn from_config(config: &RegionConfig) -> Result<Self> {
        let geometry = Self {
            request_capacity: config.request_capacity,
            event_capacity: config.event_capacity,
            max_frame: config.max_frame,
            max_kind: config.max_kind,
            protocol_version: config.protocol_version,
            generation: config.generation,
        };
        geometry.check().map_err(RingError::Config)?;
        Ok(geometry)
    }

    fn check(&self) -> std::result::Result<(), String> {
        for (name, cap) in [
            ("request", self.request_capacity),
            ("event", self.event_capacity),
        ] {
            if !cap.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&cap) {
                return Err(format!(
                    "{name} capacity {cap} is not a power of two in {MIN_CAPACITY}..={MAX_CAPACITY}"
                ));
            }
            // A frame plus the padding before it must fit in an empty ring.
            if frame_span(self.max_frame) > cap / 2 {
                return Err(format!(
                    "max frame {} does not fit twice in the {name} ring of {cap} bytes",
                    self.max_frame
                ));
            }
        }
        if self.max_frame > u32::MAX as usize {
            return Err("max frame exceeds u32".into());
        }
        if self.max_kind == KIND_PAD {
            return Err("max kind must be at least 1".into());
        }
        Ok(())
    }

    /// Total bytes of the region.
    pub fn region_size(&self) -> usize {
        HEADER_SIZE + self.request_capacity + self.event_capacity
    }

    /// Byte offset and capacity of a ring.
    pub(crate) fn ring(&self, id: RingId) -> (usize, usize) {
        match id {
            RingId::Requests => (HEADER_SIZE, self.request_capacity),
            RingId::Events => (HEADER_SIZE + self.request_capacity, self.event_capacity),
        }
    }

    /// The header's immutable part for this geometry.
    pub(crate) fn fixed(&self) -> Fixed {
        let desc = |id| {
            let (offset, capacity) = self.ring(id);
            RingDesc {
                offset: offset as u64,
                capacity: capacity as u64,
            }
        };
        Fixed {
            magic: MAGIC,
            layout_version: LAYOUT_VERSION,
            protocol_version: self.protocol_version,
            generation: self.generation,
            region_size: self.region_size() as u64,
            max_frame: self.max_frame as u32,
            max_kind: self.max_kind,
            reserved: 0,
            rings: [desc(RingId::Requests), desc(RingId::Events)],
        }
    }

    /// Validates a header read from an untrusted region of `actual_size` bytes.
    pub(crate) fn from_fixed(fixed: &Fixed, actual_size: u64) -> Result<Self> {
        let bad = |what: String| Err(RingError::Incompatible(what));
        if fixed.magic != MAGIC {
            return bad(format!("bad magic {:#018x}", fixed.magic));
        }
        if fixed.layout_version != LAYOUT_VERSION {
            return bad(format!(
                "layout version {} (this build speaks {LAYOUT_VERSION})",
                fixed.layout_version
            ));
        }
        let to_usize = |v: u64| usize::try_from(v).map_err(|_| ());
        let (Ok(request_capacity), Ok(event_capacity)) = (
            to_usize(fixed.rings[0].capacity),
            to_usize(fixed.rings[1].capacity),
        ) else {
            return bad("ring capacity overflows usize".into());
        };
        let geometry = Self {
            request_capacity,
            event_capacity,
            max_frame: fixed.max_frame as usize,
            max_kind: fixed.max_kind,
            protocol_version: fixed.protocol_version,
            generation: fixed.generation,
        };
        if let Err(why) = geometry.check() {
            return bad(why);
        }
        if fixed.region_size != geometry.region_size() as u64 || fixed.region_size != actual_size {
            return bad(format!(
                "region size {} in header, {} expected from the rings, {actual_size} mapped",
                fixed.region_size,
                geometry.region_size()
            ));
        }
        for id in [RingId::Requests, RingId::Events] {
            let (offset, _) = geometry.ring(id);
            if fixed.rings[id as usize].offset != offset as u64 {
                return bad(format!("{id:?} ring at an unexpected offset"));
            }
        }
        Ok(geometry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_span_rounds_up_to_eight_bytes() {
        assert_eq!(frame_span(0), 16);
        assert_eq!(frame_span(1), 24);
        assert_eq!(frame_span(8), 24);
        assert_eq!(frame_span(9), 32);
    }

    #[test]
    fn default_config_is_valid_and_round_trips_through_the_header() {
        let g = Geometry::from_config(&RegionConfig::default()).expect("default is valid");
        let fixed = g.fixed();
        assert_eq!(
            Geometry::from_fixed(&fixed, g.region_size() as u64).expect("valid"),
            g
        );
    }

    #[test]
    fn configs_with_impossible_geometry_are_refused() {
        let base = RegionConfig::default();
        for bad in [
            RegionConfig {
                request_capacity: 3000,
                ..base.clone()
            },
            RegionConfig {
                event_capacity: 1 << 31,
                ..base.clone()
            },
            RegionConfig {
                max_frame: 1 << 19,
                ..base.clone()
            },
            RegionConfig {
                max_kind: 0,
                ..base.clone()
            },
        ] {
            assert!(Geometry::from_config(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn corrupted_headers_are_rejected() {
        let g = Geometry::from_config(&RegionConfig::default()).expect("valid");
        let size = g.region_size() as u64;
        let mut cases = Vec::new();
        let mut f = g.fixed();
        f.magic ^= 1;
        cases.push(f);
        let mut f = g.fixed();
        f.layout_version += 1;
        cases.push(f);
        let mut f = g.fixed();
        f.rings[0].capacity = 12345;
        cases.push(f);
        let mut f = g.fixed();
        f.rings[1].offset += 8;
        cases.push(f);
        let mut f = g.fixed();
        f.region_size += 4096;
        cases.push(f);
        let mut f = g.fixed();
        f.max_frame = u32::MAX;
        cases.push(f);
        for f in cases {
            assert!(
                matches!(
                    Geometry::from_fixed(&f, size),
                    Err(RingError::Incompatible(_))
                ),
                "{f:?}"
            );
        }
        assert!(Geometry::from_fixed(&g.fixed(), size - 4096).is_err());
    }
}
