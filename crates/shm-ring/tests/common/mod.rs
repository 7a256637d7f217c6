//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use memmap2::{MmapOptions, MmapRaw};
use shm_ring::{
    Backing, Consumer, Doorbell, FrameHeader, FrontEnd, OwnedRegion, Producer, RegionConfig,
    RingError, WorkerEndpoint,
};

/// Entries of /dev/shm whose name starts with `prefix` (without the '/').
pub fn shm_entries(prefix: &str) -> Vec<String> {
    let prefix = prefix.trim_start_matches('/');
    match std::fs::read_dir("/dev/shm") {
        Ok(dir) => dir
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(prefix))
            .collect(),
        Err(_) => Vec::new(),
    }
}

pub fn named(prefix: &str) -> Backing {
    Backing::Named {
        prefix: prefix.to_owned(),
    }
}

pub fn small_config(capacity: usize, max_frame: usize) -> RegionConfig {
    RegionConfig {
        request_capacity: capacity,
        event_capacity: capacity,
        max_frame,
        max_kind: 100,
        protocol_version: 1,
        generation: 1,
    }
}

/// Both ends in this process: the front-end's parts, the worker, and a
/// second mapping of the region for tests that scribble on it.
pub struct Pair {
    pub region: OwnedRegion,
    pub requests: Producer,
    pub events: Consumer,
    pub bell: Doorbell,
    pub worker: WorkerEndpoint,
    pub raw: MmapRaw,
}

pub fn pair(config: &RegionConfig, backing: &Backing) -> Pair {
    let (front, child) = FrontEnd::create(config, backing).expect("create region");
    let (region_fd, bell_fd): (OwnedFd, OwnedFd) = child.into_owned();
    let raw = MmapOptions::new()
        .len(config.request_capacity + config.event_capacity + shm_ring::HEADER_SIZE)
        .map_raw(&std::fs::File::from(
            region_fd.as_fd().try_clone_to_owned().expect("dup"),
        ))
        .expect("map");
    let worker = WorkerEndpoint::attach(region_fd, bell_fd).expect("attach");
    let (region, requests, events, bell) = front.into_parts();
    Pair {
        region,
        requests,
        events,
        bell,
        worker,
        raw,
    }
}

/// Offsets of the control words (see `layout.rs`: fixed line, live line,
/// then per ring tail, head, data_waiting, space_waiting lines).
pub const REQ_TAIL: usize = 256;
pub const REQ_HEAD: usize = 384;
pub const EV_TAIL: usize = 768;
pub const EV_HEAD: usize = 896;

pub fn write_u64(raw: &MmapRaw, offset: usize, v: u64) {
    assert!(offset + 8 <= raw.len());
    // SAFETY: in bounds (checked above) and 8-byte aligned for the control
    // words; the test owns both ends, so nothing races with this write.
    unsafe { raw.as_mut_ptr().add(offset).cast::<u64>().write_volatile(v) };
}

pub fn read_u64(raw: &MmapRaw, offset: usize) -> u64 {
    assert!(offset + 8 <= raw.len());
    // SAFETY: in bounds and aligned, as above.
    unsafe { raw.as_mut_ptr().add(offset).cast::<u64>().read_volatile() }
}

pub fn write_bytes(raw: &MmapRaw, offset: usize, bytes: &[u8]) {
    assert!(offset + bytes.len() <= raw.len());
    // SAFETY: in bounds (checked above); single-threaded test.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), raw.as_mut_ptr().add(offset), bytes.len())
    };
}

/// A synchronous front-end reader over the raw parts: waits for frames on
/// the doorbell like the async reader does.
pub fn recv_blocking(
    events: &mut Consumer,
    bell: &Doorbell,
    buf: &mut Vec<u8>,
    eof: &mut bool,
) -> Result<Option<FrameHeader>, RingError> {
    loop {
        if let Some(h) = events.try_pop(buf)? {
            if events.room_wake_needed(false) {
                let _ = bell.ring();
            }
            return Ok(Some(h));
        }
        if events.room_wake_needed(true) {
            let _ = bell.ring();
        }
        if *eof {
            return Ok(None);
        }
        if !events.prepare_sleep()? {
            continue;
        }
        bell.wait(Duration::from_millis(100))?;
        events.cancel_sleep();
        if bell.drain()?.eof {
            *eof = true;
        }
    }
}

/// Deterministic payload for frame `seq` of `len` bytes.
pub fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seq as usize).wrapping_mul(31).wrapping_add(i) as u8)
        .collect()
}

/// Routes raw frames by their header's request id; flag bit 0 ends a
/// request's stream.
pub struct RawDemux;

pub const LAST: u16 = 1;

impl shm_ring::Demux for RawDemux {
    type Event = (FrameHeader, Vec<u8>);

    fn demux(
        &mut self,
        header: &FrameHeader,
        payload: &[u8],
        emit: &mut dyn FnMut(shm_ring::Route<Self::Event>),
    ) -> Result<(), String> {
        if header.kind == 99 {
            return Err("kind 99 is treated as a protocol violation".into());
        }
        emit(shm_ring::Route {
            request_id: header.request_id,
            event: (*header, payload.to_vec()),
            last: header.flags & LAST != 0,
        });
        Ok(())
    }
}

/// The glue a supervisor writes: decode protocol events and route their
/// pieces (one token frame feeds every request of the step).
pub struct ProtocolDemux;

impl shm_ring::Demux for ProtocolDemux {
    type Event = protocol::Delivery;

    fn demux(
        &mut self,
        header: &FrameHeader,
        payload: &[u8],
        emit: &mut dyn FnMut(shm_ring::Route<Self::Event>),
    ) -> Result<(), String> {
        let meta = protocol::FrameMeta {
            kind: header.kind,
            flags: header.flags,
            request_id: header.request_id,
        };
        let event = protocol::Event::decode(meta, payload).map_err(|e| e.to_string())?;
        event.deliver(|request_id, event, last| {
            emit(shm_ring::Route {
                request_id,
                event,
                last,
            })
        });
        Ok(())
    }
}
