//! The ring's frame decoder under hostile bytes: the entry point of the
//! `ring_frames` fuzz target (`fuzz/`) and of the corpus test
//! (`tests/fuzz_corpus.rs`), which replays every corpus file through it.
//!
//! The input plays a malicious producer. It scribbles bytes anywhere in the
//! event ring of an in-memory region and publishes any tail it likes, while
//! [`Consumer::try_pop`] reads. The consumer must never panic and never read
//! outside the ring, and every frame it accepts must be one a producer could
//! have written: a kind in `1..=max_kind`, at most `max_frame` bytes, a
//! payload equal to the bytes published at the frame's place, a head that
//! never passes the highest tail published, and the same header and
//! payload after being pushed through a real producer into a clean ring. After an error the
//! consumer is abandoned, as the front-end abandons a corrupt worker.
//!
//! Input layout: 2 bytes choose where the positions start (so frames land
//! anywhere, near the end of the buffer included), then operations, each one
//! byte followed by its operands:
//!
//! * `0 off:u16 n:u8 bytes[n]`: write bytes into the ring at `off`
//!   (wrapping);
//! * `1 delta:u16`: publish tail + delta (any value, unaligned included);
//! * `2`: pop one frame;
//! * `3 tail:u64`: publish an arbitrary tail.
//!
//! The remaining frames are popped at the end.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use memmap2::{MmapOptions, MmapRaw};

use crate::layout::{FRAME_HEADER, Geometry, RegionConfig, RingId, frame_span};
use crate::region::Mapping;
use crate::ring::{Consumer, FrameHeader, Producer};

/// Capacity of the fuzzed ring: small, so positions wrap often.
pub const CAPACITY: usize = 4096;
/// Largest payload the fuzzed ring accepts.
pub const MAX_FRAME: usize = 1024;
/// Largest kind the fuzzed ring accepts.
pub const MAX_KIND: u16 = 100;
/// Pops at most this many frames per input (bounds the time of one run).
const MAX_POPS: usize = 4096;

/// One in-memory region (no file descriptor, no process).
fn region() -> Arc<Mapping> {
    let geometry = Geometry::from_config(&RegionConfig {
        request_capacity: CAPACITY,
        event_capacity: CAPACITY,
        max_frame: MAX_FRAME,
        max_kind: MAX_KIND,
        protocol_version: 1,
        generation: 1,
    })
    .expect("the fuzzing geometry is valid");
    let map = MmapOptions::new()
        .len(geometry.region_size())
        .map_anon()
        .expect("an anonymous mapping of a few KiB");
    Arc::new(Mapping::from_parts(MmapRaw::from(map), geometry))
}

/// Reads the input's operands, yielding zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn bytes(&mut self, n: usize) -> &[u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn le<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let b = self.bytes(N);
        out[..b.len()].copy_from_slice(b);
        out
    }
}

/// The hostile producer's side: the ring's bytes, its control words, and a
/// private copy of what it wrote.
struct Scribbler {
    mapping: Arc<Mapping>,
    shadow: Vec<u8>,
    published: u64,
    /// The highest tail ever published: the consumer may read up to it
    /// (a tail moved back afterwards cannot take back what was published).
    high_water: u64,
}

impl Scribbler {
    fn write(&mut self, off: usize, bytes: &[u8]) {
        let (data, capacity) = self.mapping.ring_data(RingId::Events);
        for (i, &b) in bytes.iter().enumerate() {
            let idx = (off + i) % capacity;
            self.shadow[idx] = b;
            // SAFETY: `idx < capacity`, inside the ring's data; this thread
            // is the only one touching the mapping.
            unsafe { data.as_ptr().add(idx).write(b) };
        }
    }

    fn publish(&mut self, tail: u64) {
        self.published = tail;
        self.high_water = self.high_water.max(tail);
        // Release, as a real producer publishes.
        self.mapping
            .control(RingId::Events)
            .tail
            .0
            .store(tail, Ordering::Release);
    }

    fn head(&self) -> u64 {
        self.mapping
            .control(RingId::Events)
            .head
            .0
            .load(Ordering::Acquire)
    }
}

/// Runs one fuzz input; panics when an invariant breaks. Returns the number
/// of frames the consumer accepted.
pub fn ring_frames(data: &[u8]) -> usize {
    let mapping = region();
    let mut input = Input(data);
    let start = u64::from(u16::from_le_bytes(input.le::<2>())) * 8;
    {
        let control = mapping.control(RingId::Events);
        // Relaxed: nothing else runs yet; the consumer seeds from these.
        control.head.0.store(start, Ordering::Relaxed);
        control.tail.0.store(start, Ordering::Relaxed);
    }
    let mut hostile = Scribbler {
        shadow: vec![0; CAPACITY],
        mapping: Arc::clone(&mapping),
        published: start,
        high_water: start,
    };
    let mut reader = Reader {
        consumer: Consumer::new(Arc::clone(&mapping), RingId::Events),
        roundtrip: Roundtrip::new(),
        buf: Vec::new(),
        pops: 0,
        frames: 0,
    };
    while let Some(op) = input.u8() {
        match op % 4 {
            0 => {
                let off = usize::from(u16::from_le_bytes(input.le::<2>()));
                let n = usize::from(input.u8().unwrap_or(0));
                let bytes = input.bytes(n).to_vec();
                hostile.write(off, &bytes);
            }
            1 => {
                let delta = u64::from(u16::from_le_bytes(input.le::<2>()));
                hostile.publish(hostile.published.wrapping_add(delta));
            }
            2 => {
                if reader.pop(&hostile) == Popped::Stop {
                    return reader.frames;
                }
            }
            _ => hostile.publish(u64::from_le_bytes(input.le::<8>())),
        }
    }
    while reader.pop(&hostile) == Popped::Frame {}
    reader.frames
}

#[derive(PartialEq)]
enum Popped {
    Frame,
    Empty,
    /// The ring was found corrupt (the front-end would treat the peer as
    /// crashed and stop reading), or the pop budget is spent.
    Stop,
}

/// The consumer under test and the checks of what it returns.
struct Reader {
    consumer: Consumer,
    roundtrip: Roundtrip,
    buf: Vec<u8>,
    pops: usize,
    frames: usize,
}

impl Reader {
    fn pop(&mut self, hostile: &Scribbler) -> Popped {
        self.pops += 1;
        if self.pops > MAX_POPS {
            return Popped::Stop;
        }
        match self.consumer.try_pop(&mut self.buf) {
            Ok(Some(h)) => {
                check_frame(hostile, &h, &self.buf);
                self.roundtrip.frame(&h, &self.buf);
                self.frames += 1;
                Popped::Frame
            }
            Ok(None) => Popped::Empty,
            Err(_) => Popped::Stop,
        }
    }
}

/// Checks a popped frame against what the hostile producer published.
fn check_frame(hostile: &Scribbler, h: &FrameHeader, payload: &[u8]) {
    assert!((1..=MAX_KIND).contains(&h.kind), "kind {} accepted", h.kind);
    assert!(h.len as usize <= MAX_FRAME, "length {} accepted", h.len);
    assert_eq!(
        payload.len(),
        h.len as usize,
        "payload of the header's length"
    );
    let head = hostile.head();
    assert!(
        head <= hostile.high_water,
        "head {head} passed every published tail (at most {})",
        hostile.high_water
    );
    // The frame ends at the new head and never straddles the buffer's end.
    let span = frame_span(payload.len()) as u64;
    let start = (head - span) as usize % CAPACITY;
    assert!(start + span as usize <= CAPACITY, "frame straddles the end");
    let at = start + FRAME_HEADER;
    assert_eq!(
        payload,
        &hostile.shadow[at..at + payload.len()],
        "payload differs from the published bytes"
    );
}

/// Pushes accepted frames through a real producer into a clean ring.
struct Roundtrip {
    producer: Producer,
    consumer: Consumer,
    buf: Vec<u8>,
}

impl Roundtrip {
    fn new() -> Self {
        let mapping = region();
        Self {
            producer: Producer::new(Arc::clone(&mapping), RingId::Requests),
            consumer: Consumer::new(mapping, RingId::Requests),
            buf: Vec::new(),
        }
    }

    fn frame(&mut self, h: &FrameHeader, payload: &[u8]) {
        let pushed = self
            .producer
            .try_push(h.kind, h.flags, h.request_id, &[payload])
            .expect("an accepted frame is a valid frame");
        assert!(pushed, "an empty clean ring has room for any valid frame");
        let back = self
            .consumer
            .try_pop(&mut self.buf)
            .expect("a clean ring is never corrupt")
            .expect("the frame just pushed");
        assert_eq!(&back, h, "header changed in a clean round trip");
        assert_eq!(self.buf, payload, "payload changed in a clean round trip");
    }
}

/// Inputs a well-behaved producer would give (one or more whole frames,
/// padding at the end of the buffer included): the seeds of the corpus.
/// Each seed comes with the number of frames it publishes.
pub fn seeds() -> Vec<(String, Vec<u8>, usize)> {
    let frames: &[&[(u16, usize)]] = &[
        &[(1, 0)],
        &[(1, 5)],
        &[(7, 64), (8, 3)],
        &[(MAX_KIND, MAX_FRAME)],
        &[(2, 100), (3, 200), (4, 300), (5, 1)],
    ];
    let mut seeds = Vec::new();
    for (i, frames) in frames.iter().enumerate() {
        for (j, start_slot) in [0u16, 500, 510].into_iter().enumerate() {
            seeds.push((
                format!("{i}-{j}"),
                encode_frames(start_slot, frames),
                frames.len(),
            ));
        }
    }
    seeds
}

/// The operations that publish `frames` as a real producer lays them out.
fn encode_frames(start_slot: u16, frames: &[(u16, usize)]) -> Vec<u8> {
    let mut out = start_slot.to_le_bytes().to_vec();
    let mut pos = usize::from(start_slot) * 8;
    for (n, &(kind, len)) in frames.iter().enumerate() {
        let span = frame_span(len);
        let mut published = span;
        let to_end = CAPACITY - pos % CAPACITY;
        if to_end < span {
            // A PAD frame: kind 0, len = bytes to the end.
            let mut pad = (to_end as u32).to_le_bytes().to_vec();
            pad.extend_from_slice(&[0; 4]);
            push_write(&mut out, pos % CAPACITY, &pad[..pad.len().min(to_end)]);
            pos += to_end;
            published += to_end;
        }
        let mut frame = Vec::with_capacity(FRAME_HEADER + len);
        frame.extend_from_slice(&(len as u32).to_le_bytes());
        frame.extend_from_slice(&kind.to_le_bytes());
        frame.extend_from_slice(&(n as u16).to_le_bytes());
        frame.extend_from_slice(&(n as u64 + 1).to_le_bytes());
        frame.extend((0..len).map(|i| (i * 7 + n) as u8));
        push_write(&mut out, pos % CAPACITY, &frame);
        pos += span;
        out.push(1);
        out.extend_from_slice(&(published as u16).to_le_bytes());
        out.push(2);
    }
    out
}

/// Write operations of at most 255 bytes each.
fn push_write(out: &mut Vec<u8>, off: usize, bytes: &[u8]) {
    for (i, chunk) in bytes.chunks(255).enumerate() {
        out.push(0);
        out.extend_from_slice(&((off + i * 255) as u16).to_le_bytes());
        out.push(chunk.len() as u8);
        out.extend_from_slice(chunk);
    }
}
