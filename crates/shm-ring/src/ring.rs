//! Single-producer single-consumer byte rings of framed messages.
//!
//! Modeled on iceoryx2's SPSC index queue (`lock-free/src/spsc/index_queue.rs`):
//! positions are monotonically increasing `u64` byte counts, indexed modulo a
//! power-of-two capacity, and each side caches the other's position so the
//! shared line is only touched when the cached value runs out.
//!
//! Frame: `len u32 | kind u16 | flags u16 | request id u64 | payload`, little
//! endian, starting on an 8-byte boundary and never straddling the end of the
//! buffer: when it would, the producer writes a PAD frame (kind 0, `len` = the
//! bytes left to the end, only its first 8 bytes meaningful) and starts the
//! frame at offset 0.
//!
//! Memory orderings (the "pairs with" of every atomic access):
//!
//! * producer `tail.store(Release)` after copying a frame ⟷ consumer
//!   `tail.load(Acquire)` before reading it: the frame's bytes happen-before
//!   the consumer's reads.
//! * consumer `head.store(Release)` after copying a frame out ⟷ producer
//!   `head.load(Acquire)` before reusing the bytes: the consumer's reads
//!   happen-before the producer's overwrite.
//! * sleeping (Dekker pattern, both sides `fence(SeqCst)`): the sleeper stores
//!   its wait word = 1, fences, re-reads the other index; the waker publishes
//!   its index, fences, reads the wait word. Of two SeqCst fences one comes
//!   first, so either the sleeper sees the new index or the waker sees the
//!   wait word, and a wake-up is never lost. The waker swaps the word 1 → 0
//!   with a CAS, so each sleep costs at most one doorbell write.
//!
//! Nothing the peer writes is trusted: every index it publishes is checked
//! against `head ≤ tail ≤ head + capacity` and 8-byte alignment, and every
//! frame header against the geometry, before use. A violation is a
//! [`RingError::Corrupt`]: the caller treats the peer as crashed.

use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};

use crate::error::{Result, RingError};
use crate::layout::{FRAME_ALIGN, FRAME_HEADER, KIND_PAD, RingControl, RingId, frame_span};
use crate::region::Mapping;

/// The header of one frame, as read from or written to a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// Payload length in bytes.
    pub len: u32,
    /// Message kind (`1..=max_kind`; 0 is reserved for padding).
    pub kind: u16,
    /// Free for the application protocol (e.g. a MORE flag).
    pub flags: u16,
    /// Request the frame belongs to (0: none in particular).
    pub request_id: u64,
}

impl FrameHeader {
    fn encode(&self) -> [u8; FRAME_HEADER] {
        let mut out = [0u8; FRAME_HEADER];
        out[0..4].copy_from_slice(&self.len.to_le_bytes());
        out[4..6].copy_from_slice(&self.kind.to_le_bytes());
        out[6..8].copy_from_slice(&self.flags.to_le_bytes());
        out[8..16].copy_from_slice(&self.request_id.to_le_bytes());
        out
    }

    fn decode(raw: &[u8; FRAME_HEADER]) -> Self {
        let [l0, l1, l2, l3, k0, k1, f0, f1, r @ ..] = *raw;
        Self {
            len: u32::from_le_bytes([l0, l1, l2, l3]),
            kind: u16::from_le_bytes([k0, k1]),
            flags: u16::from_le_bytes([f0, f1]),
            request_id: u64::from_le_bytes(r),
        }
    }
}

/// The parts of a ring both ends need.
struct RingRef {
    /// Keeps the mapping alive as long as the pointers below are used.
    mapping: Arc<Mapping>,
    id: RingId,
    data: NonNull<u8>,
    capacity: u64,
    max_frame: usize,
    max_kind: u16,
}

impl RingRef {
    fn new(mapping: Arc<Mapping>, id: RingId) -> Self {
        let (data, capacity) = mapping.ring_data(id);
        let g = mapping.geometry();
        Self {
            id,
            data,
            capacity: capacity as u64,
            max_frame: g.max_frame,
            max_kind: g.max_kind,
            mapping,
        }
    }

    fn control(&self) -> &RingControl {
        self.mapping.control(self.id)
    }

    fn index(&self, pos: u64) -> usize {
        // Capacity is a power of two ≤ 1 GiB: the result fits in usize.
        (pos & (self.capacity - 1)) as usize
    }

    /// Copies `src` into the ring at `idx`.
    ///
    /// # Safety
    /// `idx + src.len() <= capacity`, and the bytes are owned by the caller
    /// (the producer between `tail` and `head + capacity`).
    unsafe fn write(&self, idx: usize, src: &[u8]) {
        debug_assert!(idx + src.len() <= self.capacity as usize);
        // SAFETY: the caller guarantees the range is inside the ring's data
        // and not being read by the consumer; `src` is private memory, so the
        // ranges do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.data.as_ptr().add(idx), src.len())
        };
    }

    /// Copies ring bytes at `idx` into `dst`.
    ///
    /// # Safety
    /// `idx + dst.len() <= capacity`, and the bytes were published to the
    /// caller (the consumer between `head` and `tail`).
    unsafe fn read(&self, idx: usize, dst: &mut [u8]) {
        debug_assert!(idx + dst.len() <= self.capacity as usize);
        // SAFETY: the caller guarantees the range is inside the ring's data
        // and was published by the producer (it will not be rewritten before
        // our `head` store); `dst` is private memory.
        unsafe {
            std::ptr::copy_nonoverlapping(self.data.as_ptr().add(idx), dst.as_mut_ptr(), dst.len())
        };
    }

    fn check_kind_and_len(&self, kind: u16, len: usize) -> Result<()> {
        if kind == KIND_PAD || kind > self.max_kind {
            return Err(RingError::BadKind(kind));
        }
        if len > self.max_frame {
            return Err(RingError::FrameTooLarge {
                len,
                max: self.max_frame,
            });
        }
        Ok(())
    }
}

// SAFETY: the raw pointer targets the shared mapping kept alive by the Arc;
// a `Producer` / `Consumer` is the unique owner of its end of the ring (they
// are created once per endpoint and are not `Clone`), so moving one to
// another thread cannot create a second producer or consumer.
unsafe impl Send for RingRef {}

/// Writing end of a ring.
pub struct Producer {
    ring: RingRef,
    /// Our tail: bytes published so far. Only we write the shared copy.
    tail: u64,
    /// Last head read from the consumer.
    cached_head: u64,
}

impl Producer {
    pub(crate) fn new(mapping: Arc<Mapping>, id: RingId) -> Self {
        let ring = RingRef::new(mapping, id);
        // Relaxed: the ring is fresh (zeroed) or we are its only writer; the
        // value only seeds our private copies.
        let tail = ring.control().tail.0.load(Ordering::Relaxed);
        Self {
            cached_head: tail,
            tail,
            ring,
        }
    }

    /// Largest payload a frame may carry.
    pub fn max_frame(&self) -> usize {
        self.ring.max_frame
    }

    /// Refreshes the cached head and checks the consumer's claim.
    fn refresh_head(&mut self) -> Result<()> {
        // Acquire pairs with the consumer's Release store of head: its reads
        // of the bytes before `head` happen-before our overwriting them.
        let head = self.ring.control().head.0.load(Ordering::Acquire);
        if head < self.cached_head || head > self.tail || head % FRAME_ALIGN as u64 != 0 {
            return Err(RingError::corrupt(format!(
                "{:?} ring: consumer head {head} outside [{}, {}]",
                self.ring.id, self.cached_head, self.tail
            )));
        }
        self.cached_head = head;
        Ok(())
    }

    /// Bytes a frame of `len` payload bytes needs at the current tail,
    /// padding included, and whether it needs padding first.
    fn needed(&self, len: usize) -> (u64, bool) {
        let span = frame_span(len) as u64;
        let to_end = self.ring.capacity - self.ring.index(self.tail) as u64;
        if to_end < span {
            (to_end + span, true)
        } else {
            (span, false)
        }
    }

    fn has_room(&self, needed: u64) -> bool {
        self.ring.capacity - (self.tail - self.cached_head) >= needed
    }

    /// Whether a frame of `len` bytes would fit now (refreshing the head).
    pub fn has_room_for(&mut self, len: usize) -> Result<bool> {
        let (needed, _) = self.needed(len);
        if !self.has_room(needed) {
            self.refresh_head()?;
        }
        Ok(self.has_room(needed))
    }

    /// Reserves room for a frame of `len` payload bytes, or returns `None`
    /// when the ring is too full. The frame becomes visible to the consumer
    /// only when the reservation is committed; dropping it publishes nothing.
    pub fn reserve(
        &mut self,
        kind: u16,
        flags: u16,
        request_id: u64,
        len: usize,
    ) -> Result<Option<Reservation<'_>>> {
        self.ring.check_kind_and_len(kind, len)?;
        let (needed, pad) = self.needed(len);
        if !self.has_room(needed) {
            self.refresh_head()?;
            if !self.has_room(needed) {
                return Ok(None);
            }
        }
        let mut start = self.tail;
        if pad {
            let idx = self.ring.index(start);
            let to_end = self.ring.capacity as usize - idx;
            let pad_header = FrameHeader {
                len: to_end as u32,
                kind: KIND_PAD,
                flags: 0,
                request_id: 0,
            }
            .encode();
            // A PAD frame may be only 8 bytes long: write just the part that
            // fits (its len/kind/flags word is all that is ever read).
            let n = to_end.min(FRAME_HEADER);
            // SAFETY: `idx + n <= capacity`, and the bytes lie in
            // [tail, tail + needed) which `has_room` showed to be free.
            unsafe { self.ring.write(idx, &pad_header[..n]) };
            start += to_end as u64;
        }
        let header = FrameHeader {
            len: len as u32,
            kind,
            flags,
            request_id,
        };
        let idx = self.ring.index(start);
        // SAFETY: `start` is 0 modulo capacity when padded, else the frame
        // fits before the end (`to_end >= span`); either way the header and
        // payload lie inside the free range checked above.
        unsafe { self.ring.write(idx, &header.encode()) };
        Ok(Some(Reservation {
            producer: self,
            payload_idx: idx + FRAME_HEADER,
            len,
            written: 0,
            end: start + frame_span(len) as u64,
        }))
    }

    /// Publishes one frame made of the concatenation of `parts`, or returns
    /// `false` if there is no room for it now.
    pub fn try_push(
        &mut self,
        kind: u16,
        flags: u16,
        request_id: u64,
        parts: &[&[u8]],
    ) -> Result<bool> {
        let len = parts.iter().map(|p| p.len()).sum();
        match self.reserve(kind, flags, request_id, len)? {
            Some(mut r) => {
                for part in parts {
                    r.put(part)?;
                }
                r.commit()?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// After publishing: whether the consumer was asleep and must be woken
    /// (ring its doorbell exactly when this returns `true`).
    pub fn wake_needed(&self) -> bool {
        // SeqCst fence: orders our tail store before the load of the wait
        // word; pairs with the consumer's fence in `Consumer::prepare_sleep`.
        fence(Ordering::SeqCst);
        let waiting = &self.ring.control().data_waiting.0;
        // Relaxed load then CAS: only the one that swaps 1 → 0 rings; the
        // doorbell write itself carries no data, so no stronger order is
        // needed (the index was already published with Release).
        waiting.load(Ordering::Relaxed) == 1
            && waiting
                .compare_exchange(1, 0, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Before sleeping for room: announces the wait, then re-checks. Returns
    /// `true` if a frame of `len` bytes now fits (the wait is withdrawn);
    /// `false` means sleep on the doorbell, then call this again.
    pub fn prepare_wait_for_room(&mut self, len: usize) -> Result<bool> {
        let waiting = &self.ring.control().space_waiting.0;
        // Relaxed: ordered by the fence below.
        waiting.store(1, Ordering::Relaxed);
        // SeqCst fence: pairs with the consumer's fence in `room_wake_needed`
        // (Dekker): either we see its new head or it sees our flag.
        fence(Ordering::SeqCst);
        if self.has_room_for(len)? {
            // Relaxed: withdrawing the flag only risks one spurious doorbell.
            self.ring
                .control()
                .space_waiting
                .0
                .store(0, Ordering::Relaxed);
            return Ok(true);
        }
        Ok(false)
    }

    /// Bytes published and not yet consumed, as last observed.
    pub fn pending_bytes(&self) -> u64 {
        self.tail - self.cached_head
    }
}

/// A frame being written in place; see [`Producer::reserve`].
pub struct Reservation<'a> {
    producer: &'a mut Producer,
    payload_idx: usize,
    len: usize,
    written: usize,
    end: u64,
}

impl Reservation<'_> {
    /// Appends payload bytes.
    pub fn put(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.len() > self.len - self.written {
            return Err(RingError::FrameTooLarge {
                len: self.written + bytes.len(),
                max: self.len,
            });
        }
        // SAFETY: the payload range [payload_idx, payload_idx + len) was
        // reserved inside the free part of the ring and before its end.
        unsafe {
            self.producer
                .ring
                .write(self.payload_idx + self.written, bytes)
        };
        self.written += bytes.len();
        Ok(())
    }

    /// Payload bytes still to write.
    pub fn remaining(&self) -> usize {
        self.len - self.written
    }

    /// Publishes the frame. Fails if the payload was not fully written.
    pub fn commit(self) -> Result<()> {
        if self.written != self.len {
            return Err(RingError::Config(format!(
                "committing a frame with {} of {} payload bytes written",
                self.written, self.len
            )));
        }
        let p = self.producer;
        p.tail = self.end;
        // Release pairs with the consumer's Acquire load of tail: the frame's
        // (and any PAD's) bytes happen-before the consumer reads them.
        p.ring.control().tail.0.store(p.tail, Ordering::Release);
        Ok(())
    }
}

/// Reading end of a ring.
pub struct Consumer {
    ring: RingRef,
    /// Our head: bytes consumed so far. Only we write the shared copy.
    head: u64,
    /// Last tail read from the producer.
    cached_tail: u64,
    /// Bytes consumed since the last check for a producer waiting for room.
    since_room_check: u64,
}

impl Consumer {
    pub(crate) fn new(mapping: Arc<Mapping>, id: RingId) -> Self {
        let ring = RingRef::new(mapping, id);
        // Relaxed: only seeds our private copies (we are the only writer).
        let head = ring.control().head.0.load(Ordering::Relaxed);
        Self {
            cached_tail: head,
            head,
            since_room_check: 0,
            ring,
        }
    }

    fn refresh_tail(&mut self) -> Result<()> {
        // Acquire pairs with the producer's Release store of tail: the bytes
        // of every frame before `tail` are visible once we see it.
        let tail = self.ring.control().tail.0.load(Ordering::Acquire);
        if tail < self.cached_tail
            || tail - self.head > self.ring.capacity
            || tail % FRAME_ALIGN as u64 != 0
        {
            return Err(RingError::corrupt(format!(
                "{:?} ring: producer tail {tail} outside [{}, {}]",
                self.ring.id,
                self.cached_tail,
                self.head + self.ring.capacity
            )));
        }
        self.cached_tail = tail;
        Ok(())
    }

    /// Whether a frame is ready (refreshing the tail if needed).
    pub fn has_data(&mut self) -> Result<bool> {
        if self.head == self.cached_tail {
            self.refresh_tail()?;
        }
        Ok(self.head != self.cached_tail)
    }

    fn advance(&mut self, bytes: u64) {
        self.head += bytes;
        self.since_room_check += bytes;
        // Release pairs with the producer's Acquire load of head: our copy
        // of the bytes happens-before the producer overwrites them.
        self.ring
            .control()
            .head
            .0
            .store(self.head, Ordering::Release);
    }

    /// Takes the next frame, copying its payload into `buf` (cleared
    /// first). `None` when the ring is empty.
    pub fn try_pop(&mut self, buf: &mut Vec<u8>) -> Result<Option<FrameHeader>> {
        loop {
            if !self.has_data()? {
                return Ok(None);
            }
            let avail = self.cached_tail - self.head;
            let idx = self.ring.index(self.head);
            let to_end = self.ring.capacity as usize - idx;
            let mut raw = [0u8; FRAME_HEADER];
            let first = FRAME_HEADER.min(to_end).min(avail as usize);
            // SAFETY: `idx + first <= capacity` and the bytes lie in
            // [head, tail), published to us.
            unsafe { self.ring.read(idx, &mut raw[..first]) };
            let header = FrameHeader::decode(&raw);
            if header.kind == KIND_PAD {
                if header.len as usize != to_end || to_end as u64 > avail {
                    return Err(RingError::corrupt(format!(
                        "{:?} ring: PAD of {} bytes at offset {idx} (to end {to_end}, published {avail})",
                        self.ring.id, header.len
                    )));
                }
                self.advance(to_end as u64);
                continue;
            }
            let span = frame_span(header.len as usize);
            if first < FRAME_HEADER
                || header.kind > self.ring.max_kind
                || header.len as usize > self.ring.max_frame
                || span > to_end
                || span as u64 > avail
            {
                return Err(RingError::corrupt(format!(
                    "{:?} ring: bad frame {header:?} at offset {idx} (to end {to_end}, published {avail})",
                    self.ring.id
                )));
            }
            buf.clear();
            buf.resize(header.len as usize, 0);
            // SAFETY: `idx + span <= capacity` and `span <= avail`: the
            // payload is inside the published range.
            unsafe { self.ring.read(idx + FRAME_HEADER, buf) };
            self.advance(span as u64);
            return Ok(Some(header));
        }
    }

    /// Whether the producer is waiting for room and must be woken (ring its
    /// doorbell exactly when this returns `true`). Cheap unless a quarter of
    /// the ring was consumed since the last check or `force` is set (pass
    /// `force` when the ring was just found empty or before sleeping).
    pub fn room_wake_needed(&mut self, force: bool) -> bool {
        if !force && self.since_room_check < self.ring.capacity / 4 {
            return false;
        }
        if self.since_room_check == 0 {
            return false;
        }
        self.since_room_check = 0;
        // SeqCst fence: orders our head store before the load of the wait
        // word; pairs with the producer's fence in `prepare_wait_for_room`.
        fence(Ordering::SeqCst);
        let waiting = &self.ring.control().space_waiting.0;
        // Relaxed: only the CAS winner rings; see `Producer::wake_needed`.
        waiting.load(Ordering::Relaxed) == 1
            && waiting
                .compare_exchange(1, 0, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Before sleeping for data: announces the sleep, then re-checks.
    /// Returns `true` if the ring is still empty (go to sleep on the
    /// doorbell; the producer will ring it), `false` if data arrived (the
    /// announcement is withdrawn).
    pub fn prepare_sleep(&mut self) -> Result<bool> {
        let waiting = &self.ring.control().data_waiting.0;
        // Relaxed: ordered by the fence below.
        waiting.store(1, Ordering::Relaxed);
        // SeqCst fence: pairs with the producer's fence in `wake_needed`
        // (Dekker): either we see its new tail or it sees our flag.
        fence(Ordering::SeqCst);
        if self.has_data()? {
            self.cancel_sleep();
            return Ok(false);
        }
        Ok(true)
    }

    /// Withdraws a sleep announcement (after waking up for any reason).
    pub fn cancel_sleep(&self) {
        // Relaxed: a stale 1 only costs the producer one spurious doorbell.
        self.ring
            .control()
            .data_waiting
            .0
            .store(0, Ordering::Relaxed);
    }
}
