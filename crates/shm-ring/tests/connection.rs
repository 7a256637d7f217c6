//! The async front-end side against a worker thread in the same process:
//! routing by request id, back-pressure, and closing on worker death or a
//! protocol violation.

mod common;

use std::time::Duration;

use common::*;
use shm_ring::{
    Backing, Closed, Connection, ConnectionOptions, FrontEnd, OutFrame, RingError, WorkerEndpoint,
};

fn start(capacity: usize) -> (FrontEnd, WorkerEndpoint) {
    let (front, fds) =
        FrontEnd::create(&small_config(capacity, 1024), &Backing::default()).expect("create");
    let (region, bell) = fds.into_owned();
    (front, WorkerEndpoint::attach(region, bell).expect("attach"))
}

async fn next<T>(rx: &mut shm_ring::RequestEvents<T>) -> Option<Result<T, Closed>>
where
    T: Send + 'static,
{
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("event in time")
}

#[tokio::test]
async fn events_are_routed_to_the_request_they_name() {
    let (front, mut worker) = start(8192);
    let (conn, _control) =
        Connection::open(front, RawDemux, ConnectionOptions::default()).expect("open");
    let ids: Vec<u64> = (1..=20).collect();
    let mut streams: Vec<_> = ids
        .iter()
        .map(|&id| conn.register(id).expect("register"))
        .collect();
    assert!(
        conn.register(3).is_err(),
        "an id in flight cannot be reused"
    );
    assert_eq!(conn.status().state(), Some(shm_ring::WorkerState::Attached));
    assert_eq!(conn.status().worker_pid(), Some(std::process::id()));
    assert!(conn.status().heartbeat_age().is_some());
    let producer = std::thread::spawn(move || {
        // Interleave 50 events per request, the last one flagged.
        for step in 0..50u64 {
            for id in 1..=20u64 {
                let flags = if step == 49 { LAST } else { 0 };
                worker
                    .push(1, flags, id, &[&step.to_le_bytes()])
                    .expect("push");
            }
            worker.flush().expect("flush");
        }
        worker
    });
    for stream in &mut streams {
        for step in 0..50u64 {
            let (h, body) = next(stream).await.expect("open").expect("event");
            assert_eq!(h.request_id, stream.request_id());
            assert_eq!(body, step.to_le_bytes());
        }
        assert!(
            next(stream).await.is_none(),
            "the last event ends the stream"
        );
    }
    // The ids are free again once their streams ended.
    let again = conn.register(3).expect("re-register");
    drop(again);
    let worker = producer.join().expect("producer");
    drop(worker);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), conn.closed())
            .await
            .expect("closed"),
        Closed::WorkerGone
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_waits_for_room_and_keeps_frames_in_order() {
    let (front, mut worker) = start(4096);
    let (conn, _control) =
        Connection::open(front, RawDemux, ConnectionOptions::default()).expect("open");
    const N: u64 = 2000;
    let consumer = std::thread::spawn(move || {
        let mut buf = Vec::new();
        for seq in 0..N {
            let h = loop {
                if let Some(h) = worker
                    .recv_timeout(&mut buf, Duration::from_secs(10))
                    .expect("recv")
                {
                    break h;
                }
            };
            assert_eq!(h.request_id, seq + 1);
            assert_eq!(buf, payload(seq, 1000));
            if seq % 500 == 0 {
                // Let the ring fill up so the writer has to wait for room.
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });
    for seq in 0..N {
        conn.send(OutFrame {
            kind: 1,
            flags: 0,
            request_id: seq + 1,
            payload: payload(seq, 1000),
        })
        .await
        .expect("send");
    }
    tokio::task::spawn_blocking(move || consumer.join().expect("consumer"))
        .await
        .expect("join");
}

#[tokio::test(flavor = "current_thread")]
async fn a_frame_that_fits_is_written_by_the_sending_task_itself() {
    let (front, mut worker) = start(4096);
    let (conn, _control) =
        Connection::open(front, RawDemux, ConnectionOptions::default()).expect("open");
    conn.send(OutFrame {
        kind: 1,
        flags: 0,
        request_id: 7,
        payload: payload(7, 100),
    })
    .await
    .expect("send");
    // This runtime has one thread and the test holds it without yielding,
    // so no other task (the writer's) has run: the frame is in the ring
    // only if `send` wrote it.
    let mut buf = Vec::new();
    let header = worker
        .recv_timeout(&mut buf, Duration::from_millis(500))
        .expect("recv")
        .expect("the frame, written without the writer task");
    assert_eq!(header.request_id, 7);
    assert_eq!(buf, payload(7, 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_senders_keep_their_own_order_through_a_full_ring() {
    // Senders write directly while the ring has room and queue behind the
    // writer task once it fills; each sender's frames stay in order.
    let (front, mut worker) = start(4096);
    let (conn, _control) =
        Connection::open(front, RawDemux, ConnectionOptions::default()).expect("open");
    let conn = std::sync::Arc::new(conn);
    const SENDERS: u64 = 8;
    const FRAMES: u64 = 300;
    let consumer = std::thread::spawn(move || {
        let mut next = [0u64; SENDERS as usize];
        let mut buf = Vec::new();
        for n in 0..SENDERS * FRAMES {
            let h = loop {
                if let Some(h) = worker
                    .recv_timeout(&mut buf, Duration::from_secs(10))
                    .expect("recv")
                {
                    break h;
                }
            };
            let (sender, seq) = ((h.request_id - 1) / FRAMES, (h.request_id - 1) % FRAMES);
            assert_eq!(seq, next[sender as usize], "sender {sender} out of order");
            assert_eq!(buf, payload(h.request_id, 300));
            next[sender as usize] += 1;
            if n % 400 == 0 {
                // Let the ring fill up so that senders must queue.
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    });
    let tasks: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let conn = conn.clone();
            tokio::spawn(async move {
                for seq in 0..FRAMES {
                    let id = sender * FRAMES + seq + 1;
                    conn.send(OutFrame {
                        kind: 1,
                        flags: 0,
                        request_id: id,
                        payload: payload(id, 300),
                    })
                    .await
                    .expect("send");
                    if seq % 50 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("sender");
    }
    tokio::task::spawn_blocking(move || consumer.join().expect("consumer"))
        .await
        .expect("join");
}

#[tokio::test]
async fn a_frame_the_demux_rejects_closes_the_connection_and_fails_open_requests() {
    let (front, mut worker) = start(8192);
    let (conn, _control) =
        Connection::open(front, RawDemux, ConnectionOptions::default()).expect("open");
    let mut stream = conn.register(5).expect("register");
    worker.send(1, 0, 5, b"fine").expect("send");
    worker.send(99, 0, 5, b"violation").expect("send");
    let (_, body) = next(&mut stream).await.expect("open").expect("first event");
    assert_eq!(body, b"fine");
    match next(&mut stream).await {
        Some(Err(Closed::Corrupt(why))) => assert!(why.contains("violation"), "{why}"),
        other => panic!("expected a corrupt close, got {other:?}"),
    }
    assert!(next(&mut stream).await.is_none());
    assert!(matches!(conn.closed().await, Closed::Corrupt(_)));
    assert!(matches!(conn.register(6), Err(RingError::Closed(_))));
}

#[tokio::test]
async fn a_dropped_request_stream_stops_only_its_own_routing() {
    let (front, mut worker) = start(8192);
    let (conn, mut control) =
        Connection::open(front, RawDemux, ConnectionOptions::default()).expect("open");
    let gone = conn.register(1).expect("register");
    let mut kept = conn.register(2).expect("register");
    drop(gone);
    worker.send(1, 0, 1, b"nobody listens").expect("send");
    worker.send(1, 0, 0, b"worker-wide").expect("send");
    worker.send(1, 0, 2, b"for two").expect("send");
    let (_, body) = next(&mut kept).await.expect("open").expect("event");
    assert_eq!(body, b"for two");
    let (_, body) = tokio::time::timeout(Duration::from_secs(10), control.recv())
        .await
        .expect("in time")
        .expect("control event");
    assert_eq!(body, b"worker-wide");
    assert!(conn.closed_reason().is_none());
}

#[tokio::test]
async fn frames_the_region_cannot_carry_are_refused_before_queueing() {
    let (front, _worker) = start(8192);
    let (conn, _control) =
        Connection::open(front, RawDemux, ConnectionOptions::default()).expect("open");
    let too_big = OutFrame {
        kind: 1,
        flags: 0,
        request_id: 1,
        payload: vec![0; 1025],
    };
    assert!(matches!(
        conn.send(too_big).await,
        Err(RingError::FrameTooLarge { .. })
    ));
    let pad = OutFrame {
        kind: 0,
        flags: 0,
        request_id: 1,
        payload: vec![],
    };
    assert!(matches!(conn.send(pad).await, Err(RingError::BadKind(0))));
}

#[test]
fn opening_a_connection_outside_a_runtime_is_an_error() {
    let (front, _worker) = start(8192);
    assert!(matches!(
        Connection::open(front, RawDemux, ConnectionOptions::default()),
        Err(RingError::Config(_))
    ));
}

#[tokio::test]
async fn dropping_the_connection_ends_streams_still_held() {
    let (front, _worker) = start(8192);
    let (conn, _control) =
        Connection::open(front, RawDemux, ConnectionOptions::default()).expect("open");
    let mut stream = conn.register(1).expect("register");
    drop(conn);
    assert!(matches!(
        next(&mut stream).await,
        Some(Err(Closed::Dropped))
    ));
    assert!(next(&mut stream).await.is_none());
}
