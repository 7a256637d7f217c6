//! A loom model of the ring's index protocol and its wake-up handshake.
//!
//! The real rings live in shared memory, where loom's tracked atomics cannot
//! be placed, so this is a faithful small copy of the protocol in
//! `src/ring.rs` (same orderings, same fences, same wait-word CAS), with
//! fixed-size slots instead of variable frames and a mutex/condvar pair
//! standing in for each direction of the socketpair doorbell. Loom explores
//! the interleavings and weak-memory outcomes: a data race on a slot means
//! an ordering is too weak; a lost wake-up shows as a deadlock (both sides
//! asleep with data or room available).
//!
//! Run: `cargo test -p shm-ring --features loom --release --test loom_model`.
#![cfg(feature = "loom")]

use loom::cell::UnsafeCell;
use loom::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use loom::sync::atomic::{AtomicU32, AtomicU64, fence};
use loom::sync::{Arc, Condvar, Mutex};

const CAP: u64 = 2;

/// One direction of the doorbell: a byte count, drained by the sleeper.
struct Bell {
    bytes: Mutex<u32>,
    cv: Condvar,
}

impl Bell {
    fn new() -> Self {
        Self {
            bytes: Mutex::new(0),
            cv: Condvar::new(),
        }
    }

    fn ring(&self) {
        let mut b = self.bytes.lock().expect("bell lock");
        *b += 1;
        self.cv.notify_one();
    }

    /// Sleeps until at least one byte is there, then drains.
    fn wait_and_drain(&self) {
        let mut b = self.bytes.lock().expect("bell lock");
        while *b == 0 {
            b = self.cv.wait(b).expect("bell wait");
        }
        *b = 0;
    }
}

struct Ring {
    slots: [UnsafeCell<u64>; CAP as usize],
    tail: AtomicU64,
    head: AtomicU64,
    data_waiting: AtomicU32,
    space_waiting: AtomicU32,
    to_consumer: Bell,
    to_producer: Bell,
    /// `false` drops the waker's fence: the negative control.
    waker_fence: bool,
}

impl Ring {
    fn new(waker_fence: bool) -> Self {
        Self {
            slots: [UnsafeCell::new(0), UnsafeCell::new(0)],
            tail: AtomicU64::new(0),
            head: AtomicU64::new(0),
            data_waiting: AtomicU32::new(0),
            space_waiting: AtomicU32::new(0),
            to_consumer: Bell::new(),
            to_producer: Bell::new(),
            waker_fence,
        }
    }
}

fn wake_if_waiting(word: &AtomicU32, bell: &Bell, fenced: bool) {
    // As `Producer::wake_needed` / `Consumer::room_wake_needed`.
    if fenced {
        fence(SeqCst);
    }
    if word.load(Relaxed) == 1 && word.compare_exchange(1, 0, Relaxed, Relaxed).is_ok() {
        bell.ring();
    }
}

fn produce(ring: &Ring, values: u64) {
    let mut tail = 0u64;
    let mut cached_head = 0u64;
    for v in 0..values {
        // Wait for room: refresh head, then announce, fence, re-check, sleep.
        loop {
            if tail - cached_head < CAP {
                break;
            }
            cached_head = ring.head.load(Acquire);
            if tail - cached_head < CAP {
                break;
            }
            ring.space_waiting.store(1, Relaxed);
            fence(SeqCst);
            cached_head = ring.head.load(Acquire);
            if tail - cached_head < CAP {
                ring.space_waiting.store(0, Relaxed);
                break;
            }
            ring.to_producer.wait_and_drain();
            ring.space_waiting.store(0, Relaxed);
        }
        // SAFETY: the slot lies between head + CAP and tail: the consumer
        // released it (Acquire on head above) and will not read it before
        // the Release store of tail below.
        ring.slots[(tail % CAP) as usize].with_mut(|p| unsafe { *p = v });
        tail += 1;
        ring.tail.store(tail, Release);
        wake_if_waiting(&ring.data_waiting, &ring.to_consumer, ring.waker_fence);
    }
}

fn consume(ring: &Ring, values: u64) {
    let mut head = 0u64;
    let mut cached_tail = 0u64;
    for want in 0..values {
        loop {
            if cached_tail == head {
                cached_tail = ring.tail.load(Acquire);
            }
            if cached_tail != head {
                break;
            }
            ring.data_waiting.store(1, Relaxed);
            fence(SeqCst);
            cached_tail = ring.tail.load(Acquire);
            if cached_tail != head {
                ring.data_waiting.store(0, Relaxed);
                break;
            }
            ring.to_consumer.wait_and_drain();
            ring.data_waiting.store(0, Relaxed);
        }
        // SAFETY: the slot was published by the Release store of tail that
        // the Acquire load above observed.
        let got = ring.slots[(head % CAP) as usize].with(|p| unsafe { *p });
        assert_eq!(got, want, "frames arrive in order, never torn");
        head += 1;
        ring.head.store(head, Release);
        wake_if_waiting(&ring.space_waiting, &ring.to_producer, ring.waker_fence);
    }
}

fn check(waker_fence: bool) {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(move || {
        let ring = Arc::new(Ring::new(waker_fence));
        let producer = {
            let ring = ring.clone();
            loom::thread::spawn(move || produce(&ring, 3))
        };
        consume(&ring, 3);
        producer.join().expect("producer");
    });
}

#[test]
fn no_wake_up_is_lost_and_no_slot_is_raced_under_any_interleaving() {
    check(true);
}

#[test]
#[ignore = "run in a child process by the negative-control test"]
fn model_without_the_wakers_fence() {
    if std::env::var_os("LOOM_NEGATIVE_CONTROL").is_some() {
        check(false);
    }
}

#[test]
fn without_the_wakers_fence_the_model_finds_a_lost_wake_up() {
    // The negative control: the model must see the bug the fences prevent
    // (both sides asleep, each having missed the other's store). Loom
    // aborts the process on a deadlock, so the check runs in a child.
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new(exe)
        .args([
            "model_without_the_wakers_fence",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env("LOOM_NEGATIVE_CONTROL", "1")
        .output()
        .expect("run child");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the broken protocol passed the model"
    );
    assert!(stderr.contains("deadlock"), "{stderr}");
}
