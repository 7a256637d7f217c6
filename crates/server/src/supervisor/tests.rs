//! The supervisor's policies against an in-memory fake worker: shared
//! loads, load failures, crashes, eviction, keep-alive, back-off.

use protocol::SamplingParams;

use tokio::time::Instant;

use super::fake::{FakeLauncher, Plan};
use super::*;

fn spec(id: &str, bytes: u64) -> ModelSpec {
    ModelSpec {
        id: id.into(),
        path: format!("/models/{id}").into(),
        context_length: None,
        estimate_bytes: bytes,
    }
}

fn start(launcher: &Arc<FakeLauncher>, config: SupervisorConfig) -> Supervisor {
    Supervisor::start(Arc::clone(launcher) as Arc<dyn Launcher>, config)
}

async fn state_of(sup: &Supervisor, id: &str) -> &'static str {
    sup.status()
        .await
        .into_iter()
        .find(|s| s.id == id)
        .map_or("unknown", |s| s.state)
}

/// Lets the actor and spawned tasks run.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn concurrent_first_requests_share_one_load() {
    let launcher = Arc::new(FakeLauncher {
        load_delay: Duration::from_millis(100),
        ..Default::default()
    });
    let sup = start(&launcher, SupervisorConfig::default());
    let acquires = (0..5).map(|_| sup.acquire(spec("a", 1), None));
    let leases = futures::future::join_all(acquires).await;
    assert!(leases.iter().all(Result::is_ok));
    assert_eq!(launcher.launches.load(Ordering::SeqCst), 1);
    let status = sup.status().await;
    assert_eq!(status[0].in_flight, 5);
    drop(leases);
    settle().await;
    assert_eq!(sup.status().await[0].in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_load_reaches_every_waiting_request_with_its_reason() {
    let launcher = Arc::new(FakeLauncher {
        load_delay: Duration::from_millis(50),
        ..Default::default()
    });
    launcher
        .plans
        .lock()
        .unwrap()
        .push_back(Plan::Fail("model_type \"gpt2\" is not supported"));
    let sup = start(&launcher, SupervisorConfig::default());
    let results = futures::future::join(
        sup.acquire(spec("a", 1), None),
        sup.acquire(spec("a", 1), None),
    )
    .await;
    for r in [results.0, results.1] {
        let err = r.err().unwrap();
        assert!(
            err.to_string().contains("\"gpt2\" is not supported"),
            "{err}"
        );
    }
    assert_eq!(state_of(&sup, "a").await, "idle");
    // The next request tries again (after the back-off).
    let before = Instant::now();
    sup.acquire(spec("a", 1), None).await.unwrap();
    assert!(before.elapsed() >= Duration::from_secs(1));
    assert_eq!(launcher.launches.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_crash_during_generation_ends_the_stream_and_the_next_request_restarts() {
    let launcher = Arc::new(FakeLauncher::default());
    let sup = start(&launcher, SupervisorConfig::default());
    let lease = sup.acquire(spec("a", 1), None).await.unwrap();
    let mut generation = lease
        .generate(vec![1, 2], SamplingParams::default())
        .await
        .unwrap();
    assert!(matches!(
        generation.next().await,
        Some(Ok(WorkerEvent::Token(_)))
    ));
    launcher.workers.lock().unwrap()[0].crash("killed by SIGSEGV");
    assert!(matches!(generation.next().await, Some(Err(WorkerGone(_)))));
    assert!(generation.next().await.is_none());
    drop(generation);
    settle().await;
    assert_eq!(state_of(&sup, "a").await, "idle");
    let again = sup.acquire(spec("a", 1), None).await.unwrap();
    assert_eq!(again.info().pid, Some(2), "a fresh incarnation");
    assert_eq!(sup.status().await[0].restarts, 1);
}

#[tokio::test(start_paused = true)]
async fn idle_models_are_evicted_least_recently_used_first() {
    let launcher = Arc::new(FakeLauncher::default());
    let config = SupervisorConfig {
        memory_budget: 2,
        ..SupervisorConfig::default()
    };
    let sup = start(&launcher, config);
    // Each release reaches the actor before the clock moves on.
    drop(sup.acquire(spec("a", 1), None).await.unwrap());
    settle().await;
    tokio::time::advance(Duration::from_secs(1)).await;
    drop(sup.acquire(spec("b", 1), None).await.unwrap());
    settle().await;
    tokio::time::advance(Duration::from_secs(1)).await;
    drop(sup.acquire(spec("a", 1), None).await.unwrap()); // a is now the most recent
    settle().await;
    let _c = sup.acquire(spec("c", 1), None).await.unwrap();
    settle().await;
    assert_eq!(state_of(&sup, "a").await, "ready");
    assert_ne!(state_of(&sup, "b").await, "ready");
    assert_eq!(state_of(&sup, "c").await, "ready");
}

#[tokio::test(start_paused = true)]
async fn busy_models_are_never_evicted_and_the_request_is_refused() {
    let launcher = Arc::new(FakeLauncher::default());
    let config = SupervisorConfig {
        memory_budget: 1 << 20,
        ..SupervisorConfig::default()
    };
    let sup = start(&launcher, config);
    let _busy = sup.acquire(spec("a", 1 << 20), None).await.unwrap();
    let err = sup.acquire(spec("b", 1 << 20), None).await.err().unwrap();
    assert!(
        matches!(err, SupervisorError::InsufficientMemory { .. }),
        "{err}"
    );
    assert_eq!(state_of(&sup, "a").await, "ready");
}

#[tokio::test(start_paused = true)]
async fn restarts_back_off_and_repeated_crashes_mark_the_model_failed() {
    let launcher = Arc::new(FakeLauncher::default());
    let config = SupervisorConfig {
        max_crashes: 3,
        ..SupervisorConfig::default()
    };
    let sup = start(&launcher, config);
    let mut gaps = Vec::new();
    for i in 0..3 {
        let before = Instant::now();
        let lease = sup.acquire(spec("a", 1), None).await.unwrap();
        gaps.push(before.elapsed());
        drop(lease);
        launcher.workers.lock().unwrap()[i].crash("killed by SIGKILL");
        settle().await;
    }
    assert!(gaps[0] < Duration::from_millis(10));
    assert!(gaps[1] >= Duration::from_secs(1), "{gaps:?}");
    assert!(gaps[2] >= Duration::from_secs(2), "{gaps:?}");
    let err = sup.acquire(spec("a", 1), None).await.err().unwrap();
    assert!(matches!(err, SupervisorError::ModelFailed { .. }), "{err}");
    assert!(err.to_string().contains("SIGKILL"), "{err}");
    assert_eq!(state_of(&sup, "a").await, "failed");
    // An explicit load clears the mark.
    sup.load(spec("a", 1), None).await.unwrap();
    assert_eq!(state_of(&sup, "a").await, "ready");
}

#[tokio::test(start_paused = true)]
async fn keep_alive_unloads_idle_models_and_zero_unloads_after_the_request() {
    let launcher = Arc::new(FakeLauncher::default());
    let config = SupervisorConfig {
        keep_alive: KeepAlive::For(Duration::from_secs(60)),
        ..SupervisorConfig::default()
    };
    let sup = start(&launcher, config);
    drop(sup.acquire(spec("a", 1), None).await.unwrap());
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(state_of(&sup, "a").await, "ready");
    tokio::time::sleep(Duration::from_secs(31)).await;
    settle().await;
    assert_eq!(state_of(&sup, "a").await, "idle");
    assert!(launcher.workers.lock().unwrap()[0].is_stopped());

    let lease = sup
        .acquire(spec("b", 1), Some(KeepAlive::For(Duration::ZERO)))
        .await
        .unwrap();
    settle().await;
    assert_eq!(state_of(&sup, "b").await, "ready");
    drop(lease);
    settle().await;
    assert_eq!(state_of(&sup, "b").await, "idle");

    drop(
        sup.acquire(spec("c", 1), Some(KeepAlive::Forever))
            .await
            .unwrap(),
    );
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(state_of(&sup, "c").await, "ready");
}

#[tokio::test(start_paused = true)]
async fn unloading_waits_for_in_flight_requests() {
    let launcher = Arc::new(FakeLauncher::default());
    let sup = start(&launcher, SupervisorConfig::default());
    let lease = sup.acquire(spec("a", 1), None).await.unwrap();
    assert!(sup.unload("a").await);
    settle().await;
    assert_eq!(state_of(&sup, "a").await, "ready");
    drop(lease);
    settle().await;
    assert_eq!(state_of(&sup, "a").await, "idle");
    assert!(!sup.unload("a").await);
}

#[tokio::test(start_paused = true)]
async fn dropping_an_unfinished_generation_cancels_it_in_the_worker() {
    let launcher = Arc::new(FakeLauncher::default());
    let sup = start(&launcher, SupervisorConfig::default());
    let lease = sup.acquire(spec("a", 1), None).await.unwrap();
    let mut generation = lease
        .generate(vec![1], SamplingParams::default())
        .await
        .unwrap();
    let id = generation.request_id();
    assert!(generation.next().await.is_some());
    drop(generation);
    settle().await;
    let worker = Arc::clone(&launcher.workers.lock().unwrap()[0]);
    assert_eq!(*worker.cancelled.lock().unwrap(), vec![id]);
    // Followed to its Done: the fake ignores the cancel and sends its last
    // two tokens, which are counted as late.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sup.cancel_counts(), (1, 2));
    assert_eq!(sup.status().await[0].in_flight, 0);

    // A finished one is not cancelled.
    let lease = sup.acquire(spec("a", 1), None).await.unwrap();
    let mut generation = lease
        .generate(vec![1], SamplingParams::default())
        .await
        .unwrap();
    while generation.next().await.is_some() {}
    drop(generation);
    settle().await;
    assert_eq!(worker.cancelled.lock().unwrap().len(), 1);
    assert_eq!(worker.submitted.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_every_worker_and_refuses_new_requests() {
    let launcher = Arc::new(FakeLauncher::default());
    let sup = start(&launcher, SupervisorConfig::default());
    drop(sup.acquire(spec("a", 1), None).await.unwrap());
    drop(sup.acquire(spec("b", 1), None).await.unwrap());
    sup.shutdown().await;
    assert!(
        launcher
            .workers
            .lock()
            .unwrap()
            .iter()
            .all(|w| w.is_stopped())
    );
    let err = sup.acquire(spec("a", 1), None).await.err().unwrap();
    assert_eq!(err, SupervisorError::ShuttingDown);
}
