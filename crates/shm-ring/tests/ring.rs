//! Single-process tests of the ring: capacity, wrap-around, a model check
//! against `VecDeque`, a million frames across two threads, and rejection
//! of corrupted indices, frames and headers.

mod common;

use std::collections::VecDeque;
use std::time::Duration;

use common::*;
use proptest::prelude::*;
use shm_ring::{
    Backing, FRAME_HEADER, FrontEnd, HEADER_SIZE, KIND_PAD, RingError, WorkerEndpoint, frame_span,
};

const CAP: usize = 4096;

#[test]
fn push_works_until_full_then_again_after_a_pop() {
    let mut p = pair(&small_config(CAP, 1024), &Backing::default());
    let body = [7u8; 64];
    let mut pushed = 0;
    while p.requests.try_push(1, 0, pushed, &[&body]).expect("push") {
        pushed += 1;
    }
    assert_eq!(
        pushed as usize,
        CAP / frame_span(64),
        "frames of 80 bytes in 4096"
    );
    let mut buf = Vec::new();
    let h = p.worker.try_recv(&mut buf).expect("pop").expect("a frame");
    assert_eq!((h.request_id, buf.as_slice()), (0, &body[..]));
    // 80 bytes free at the start, 16 at the end: fits with a PAD frame.
    assert!(p.requests.try_push(1, 0, pushed, &[&body]).expect("push"));
    assert!(
        !p.requests
            .try_push(1, 0, pushed + 1, &[&body])
            .expect("push")
    );
    for want in 1..=pushed {
        let h = p.worker.try_recv(&mut buf).expect("pop").expect("a frame");
        assert_eq!(h.request_id, want);
    }
    assert!(p.worker.try_recv(&mut buf).expect("pop").is_none());
}

#[test]
fn wrap_around_with_pad_frames_preserves_every_frame() {
    let mut p = pair(&small_config(CAP, 1024), &Backing::default());
    let mut buf = Vec::new();
    // Sizes chosen so frames keep landing near the end of the buffer,
    // including an 8-byte gap (a PAD of header size less than 16).
    let sizes = [
        1000usize,
        1000,
        1000,
        1000 - 8,
        1000,
        24,
        1000,
        500,
        3,
        0,
        1024,
    ];
    let mut sent = 0u64;
    let mut received = 0u64;
    for round in 0..200 {
        let len = sizes[round % sizes.len()];
        while !p
            .requests
            .try_push(2, 5, sent, &[&payload(sent, len)])
            .expect("push")
        {
            let h = p
                .worker
                .try_recv(&mut buf)
                .expect("pop")
                .expect("full ring");
            assert_eq!(h.request_id, received);
            assert_eq!(buf, payload(received, h.len as usize));
            received += 1;
        }
        sent += 1;
    }
    while let Some(h) = p.worker.try_recv(&mut buf).expect("pop") {
        assert_eq!((h.kind, h.flags, h.request_id), (2, 5, received));
        assert_eq!(buf, payload(received, h.len as usize));
        received += 1;
    }
    assert_eq!(received, sent);
    assert!(
        read_u64(&p.raw, REQ_TAIL) > 20 * CAP as u64,
        "wrapped many times"
    );
}

#[derive(Clone, Debug)]
enum Op {
    Push(usize),
    Pop,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(
        prop_oneof![
            3 => (0usize..=1024).prop_map(Op::Push),
            2 => Just(Op::Pop),
        ],
        1..400,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn variable_sized_frames_behave_like_a_vecdeque(ops in ops()) {
        let mut p = pair(&small_config(CAP, 1024), &Backing::default());
        let mut model: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
        // Byte positions as the specification defines them.
        let (mut tail, mut head_frames) = (0u64, VecDeque::<u64>::new());
        let mut head = 0u64;
        let mut buf = Vec::new();
        for (seq, op) in ops.into_iter().enumerate() {
            match op {
                Op::Push(len) => {
                    let span = frame_span(len) as u64;
                    let to_end = CAP as u64 - tail % CAP as u64;
                    let pad = if to_end < span { to_end } else { 0 };
                    let fits = CAP as u64 - (tail - head) >= pad + span;
                    let data = payload(seq as u64, len);
                    let pushed = p.requests.try_push(3, 0, seq as u64, &[&data]).expect("push");
                    prop_assert_eq!(pushed, fits);
                    if pushed {
                        tail += pad + span;
                        head_frames.push_back(tail);
                        model.push_back((seq as u64, data));
                    }
                }
                Op::Pop => {
                    let got = p.worker.try_recv(&mut buf).expect("pop");
                    match model.pop_front() {
                        Some((id, data)) => {
                            let h = got.expect("model has a frame");
                            prop_assert_eq!(h.request_id, id);
                            prop_assert_eq!(&buf, &data);
                            head = head_frames.pop_front().expect("position");
                        }
                        None => prop_assert!(got.is_none()),
                    }
                }
            }
        }
    }
}

#[test]
fn one_million_frames_cross_two_threads_in_order() {
    const N: u64 = 1_000_000;
    let p = pair(&small_config(64 * 1024, 1024), &Backing::default());
    let Pair {
        mut events,
        bell,
        mut worker,
        region,
        ..
    } = p;
    let producer = std::thread::spawn(move || {
        for seq in 0..N {
            let len = (seq % 61) as usize;
            worker
                .push(1, 0, seq, &[&seq.to_le_bytes(), &[seq as u8; 64][..len]])
                .expect("push");
            if seq % 32 == 31 {
                worker.flush().expect("flush");
            }
        }
        worker.flush().expect("flush");
        // Dropping the worker closes its doorbell end: the reader sees EOF
        // after the last frame.
    });
    let mut buf = Vec::new();
    let mut eof = false;
    let mut next = 0u64;
    while let Some(h) = recv_blocking(&mut events, &bell, &mut buf, &mut eof).expect("recv") {
        assert_eq!(h.request_id, next);
        assert_eq!(buf[..8], next.to_le_bytes());
        assert_eq!(buf.len(), 8 + (next % 61) as usize);
        next += 1;
    }
    producer.join().expect("producer thread");
    assert_eq!(next, N);
    drop(region);
}

#[test]
fn a_producer_waiting_for_room_is_woken_by_the_consumer() {
    let p = pair(&small_config(CAP, 1024), &Backing::default());
    let Pair {
        mut events,
        bell,
        mut worker,
        ..
    } = p;
    // The worker fills the event ring and blocks; the front-end drains it
    // after a pause; the worker must resume well before any backstop would
    // matter (it would still finish, only slower, without the wake-up).
    let writer = std::thread::spawn(move || {
        for seq in 0..200u64 {
            worker.push(1, 0, seq, &[&[0u8; 500]]).expect("push");
        }
        worker.flush().expect("flush");
    });
    std::thread::sleep(Duration::from_millis(50));
    let mut buf = Vec::new();
    let mut eof = false;
    let mut n = 0u64;
    while let Some(h) = recv_blocking(&mut events, &bell, &mut buf, &mut eof).expect("recv") {
        assert_eq!(h.request_id, n);
        n += 1;
    }
    writer.join().expect("writer thread");
    assert_eq!(n, 200);
}

#[test]
fn a_published_tail_beyond_the_capacity_is_rejected() {
    let mut p = pair(&small_config(CAP, 1024), &Backing::default());
    let mut buf = Vec::new();
    write_u64(&p.raw, EV_TAIL, CAP as u64 + 8);
    assert!(matches!(
        p.events.try_pop(&mut buf),
        Err(RingError::Corrupt(_))
    ));
    // Misaligned, and moving backwards, are rejected too.
    let mut p = pair(&small_config(CAP, 1024), &Backing::default());
    write_u64(&p.raw, EV_TAIL, 12);
    assert!(matches!(
        p.events.try_pop(&mut buf),
        Err(RingError::Corrupt(_))
    ));
}

#[test]
fn a_consumer_head_beyond_the_tail_is_rejected() {
    let mut p = pair(&small_config(CAP, 1024), &Backing::default());
    let body = [0u8; 1000];
    for i in 0..4 {
        assert!(p.requests.try_push(1, 0, i, &[&body]).expect("push"));
    }
    // The ring is full; the producer must re-read head, and finds garbage.
    write_u64(&p.raw, REQ_HEAD, 1 << 40);
    assert!(matches!(
        p.requests.try_push(1, 0, 9, &[&body]),
        Err(RingError::Corrupt(_))
    ));
}

/// Publishes a hand-made frame header on the event ring at offset 0.
fn forge_event(p: &Pair, header: [u8; FRAME_HEADER], published: u64) {
    let events_data = HEADER_SIZE + CAP;
    write_bytes(&p.raw, events_data, &header);
    write_u64(&p.raw, EV_TAIL, published);
}

fn header(len: u32, kind: u16) -> [u8; FRAME_HEADER] {
    let mut h = [0u8; FRAME_HEADER];
    h[0..4].copy_from_slice(&len.to_le_bytes());
    h[4..6].copy_from_slice(&kind.to_le_bytes());
    h
}

#[test]
fn corrupted_frames_are_rejected_never_read() {
    let cases = [
        ("oversized", header(1025, 1), 2048),
        ("unknown kind", header(8, 101), 24),
        ("beyond the published tail", header(64, 1), 24),
        ("PAD not reaching the end", header(64, KIND_PAD), 64),
        ("header cut by the tail", header(0, 1), 8),
    ];
    for (what, h, published) in cases {
        let mut p = pair(&small_config(CAP, 1024), &Backing::default());
        forge_event(&p, h, published);
        let mut buf = Vec::new();
        let got = p.events.try_pop(&mut buf);
        assert!(matches!(got, Err(RingError::Corrupt(_))), "{what}: {got:?}");
    }
}

#[test]
fn a_corrupted_region_header_is_rejected_at_attach() {
    let config = small_config(CAP, 1024);
    for (offset, value) in [(0usize, 0u64), (8, 99), (32, 12345)] {
        let (front, child) = FrontEnd::create(&config, &Backing::default()).expect("create");
        let (region_fd, bell_fd) = child.into_owned();
        let raw = memmap2::MmapOptions::new()
            .len(HEADER_SIZE)
            .map_raw(&std::fs::File::from(region_fd.try_clone().expect("dup")))
            .expect("map");
        // magic; layout version (+ protocol version); max frame and kind.
        write_u64(&raw, offset, value);
        let got = WorkerEndpoint::attach(region_fd, bell_fd);
        assert!(
            matches!(got, Err(RingError::Incompatible(_))),
            "offset {offset}: {got:?}"
        );
        drop(front);
    }
}

#[test]
fn frames_with_reserved_kinds_or_oversized_payloads_are_refused_at_push() {
    let mut p = pair(&small_config(CAP, 1024), &Backing::default());
    assert!(matches!(
        p.requests.try_push(KIND_PAD, 0, 0, &[]),
        Err(RingError::BadKind(0))
    ));
    assert!(matches!(
        p.requests.try_push(101, 0, 0, &[]),
        Err(RingError::BadKind(101))
    ));
    assert!(matches!(
        p.requests.try_push(1, 0, 0, &[&[0u8; 1025]]),
        Err(RingError::FrameTooLarge { .. })
    ));
}

#[test]
fn an_uncommitted_reservation_publishes_nothing() {
    let mut p = pair(&small_config(CAP, 1024), &Backing::default());
    {
        let mut r = p
            .requests
            .reserve(1, 0, 1, 100)
            .expect("reserve")
            .expect("room");
        r.put(&[1u8; 50]).expect("put");
        assert!(r.put(&[1u8; 51]).is_err(), "writing past the frame");
        // Dropped here without commit.
    }
    let mut buf = Vec::new();
    assert!(p.worker.try_recv(&mut buf).expect("pop").is_none());
    let r = p
        .requests
        .reserve(1, 0, 2, 10)
        .expect("reserve")
        .expect("room");
    assert!(r.commit().is_err(), "committing an unwritten payload");
    assert!(p.requests.try_push(1, 0, 3, &[b"ok"]).expect("push"));
    let h = p.worker.try_recv(&mut buf).expect("pop").expect("frame");
    assert_eq!((h.request_id, buf.as_slice()), (3, &b"ok"[..]));
}

#[test]
fn named_regions_are_unlinked_and_memfd_regions_leave_no_name() {
    let prefix = "/shmrt-nm-";
    let before = shm_entries(prefix);
    assert!(before.is_empty(), "leftovers: {before:?}");
    let p = pair(&small_config(CAP, 1024), &named(prefix));
    let name = p.region.name().expect("named").to_owned();
    assert!(name.len() <= shm_ring::MAX_NAME_LEN);
    // Linux shows POSIX shared memory under /dev/shm; macOS has no such view.
    #[cfg(target_os = "linux")]
    {
        assert_eq!(shm_entries(prefix).len(), 1);
        let mode = std::fs::metadata(format!("/dev/shm{name}"))
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .expect("stat");
        assert_eq!(mode, 0o600);
    }
    drop(p);
    assert!(shm_entries(prefix).is_empty());
    #[cfg(target_os = "linux")]
    {
        let all = shm_entries("");
        let p = pair(&small_config(CAP, 1024), &Backing::Memfd);
        assert!(p.region.name().is_none());
        assert_eq!(shm_entries("").len(), all.len());
    }
}

#[test]
fn sleeping_sides_never_lose_a_wake_up() {
    // Both sides sleep before every message, with backstops far longer than
    // the test may take: a lost wake-up (the race between announcing a sleep
    // and publishing) would stall a round trip for seconds and fail it.
    let p = pair(&small_config(CAP, 1024), &Backing::default());
    let Pair {
        mut requests,
        mut events,
        bell,
        mut worker,
        ..
    } = p;
    const ROUNDS: u64 = 10_000;
    let echo = std::thread::spawn(move || {
        let mut buf = Vec::new();
        for _ in 0..ROUNDS {
            let h = worker
                .recv_timeout(&mut buf, Duration::from_secs(30))
                .expect("recv")
                .expect("a wake-up was lost on the worker side");
            worker.send(1, 0, h.request_id, &buf).expect("echo");
        }
    });
    let mut buf = Vec::new();
    for i in 0..ROUNDS {
        assert!(
            requests
                .try_push(1, 0, i, &[&i.to_le_bytes()])
                .expect("push")
        );
        if requests.wake_needed() {
            bell.ring().expect("ring");
        }
        let start = std::time::Instant::now();
        let h = loop {
            if let Some(h) = events.try_pop(&mut buf).expect("pop") {
                break h;
            }
            if !events.prepare_sleep().expect("sleep") {
                continue;
            }
            bell.wait(Duration::from_secs(30)).expect("wait");
            events.cancel_sleep();
            assert!(!bell.drain().expect("drain").eof, "worker gone");
        };
        assert_eq!(h.request_id, i);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "round {i} stalled: a wake-up was lost"
        );
    }
    echo.join().expect("echo thread");
}
