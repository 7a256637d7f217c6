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
        kv_bits: None,
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

/// Every event of a generation until it ends: token ids, the `Done`, and
/// the error that ended it, if one did.
async fn drain(generation: &mut Generation) -> (Vec<u32>, Option<protocol::Done>, Option<String>) {
    let (mut tokens, mut done, mut error) = (Vec::new(), None, None);
    while let Some(event) = generation.next().await {
        match event {
            Ok(WorkerEvent::Token(t)) => tokens.push(t.token_id),
            Ok(WorkerEvent::Done(d)) => done = Some(d),
            Ok(WorkerEvent::Error { message, .. }) => error = Some(message),
            Ok(WorkerEvent::Embedding(e)) => error = Some(format!("an embedding: {e:?}")),
            Err(gone) => error = Some(gone.0),
        }
    }
    (tokens, done, error)
}

fn scripted(script: Vec<u32>) -> Arc<FakeLauncher> {
    let launcher = Arc::new(FakeLauncher::default());
    *launcher.script.lock().unwrap() = Some(script);
    launcher
}

#[tokio::test(start_paused = true)]
async fn a_crash_mid_stream_is_replayed_on_a_fresh_worker_without_a_gap() {
    let launcher = scripted(vec![11, 12, 13, 14, 15, 16]);
    let sup = start(&launcher, SupervisorConfig::default());
    let lease = sup.acquire(spec("a", 1), None).await.unwrap();
    let params = SamplingParams {
        temperature: 0.7,
        max_tokens: 6,
        ..SamplingParams::default()
    };
    let mut generation = lease.generate(vec![1, 2], params).await.unwrap();
    let mut tokens = Vec::new();
    for _ in 0..2 {
        match generation.next().await {
            Some(Ok(WorkerEvent::Token(t))) => tokens.push(t.token_id),
            other => panic!("expected a token, got {other:?}"),
        }
    }
    let crashed_at = Instant::now();
    launcher.workers.lock().unwrap()[0].crash("killed by SIGKILL");
    let (rest, done, error) = drain(&mut generation).await;
    assert_eq!(error, None);
    tokens.extend(rest);
    assert_eq!(tokens, [11, 12, 13, 14, 15, 16], "no gap, no repeat");
    let done = done.unwrap();
    assert_eq!((done.prompt_tokens, done.completion_tokens), (2, 6));
    assert_eq!(generation.replays(), 1);
    assert!(
        crashed_at.elapsed() < Duration::from_millis(100),
        "the first crash restarts at once: {:?}",
        crashed_at.elapsed()
    );
    // The second worker got the continuation, with the seed the front-end
    // chose for the unseeded request.
    let workers = launcher.workers.lock().unwrap().clone();
    assert_eq!(workers.len(), 2);
    let first = workers[0].params.lock().unwrap()[0].clone();
    let second = workers[1].params.lock().unwrap()[0].clone();
    assert!(first.seed.is_some(), "a sampled request gets a seed");
    assert_eq!(second.seed, first.seed);
    assert_eq!((second.generated, second.max_tokens), (2, 4));
    drop(generation);
    settle().await;
    let status = sup.status().await;
    assert_eq!((status[0].restarts, status[0].in_flight), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_request_whose_last_token_arrived_before_the_crash_just_ends() {
    let launcher = scripted(vec![5, 6]);
    let sup = start(&launcher, SupervisorConfig::default());
    let lease = sup.acquire(spec("a", 1), None).await.unwrap();
    let params = SamplingParams {
        max_tokens: 2,
        temperature: 0.0,
        ..SamplingParams::default()
    };
    let mut generation = lease.generate(vec![1], params).await.unwrap();
    for _ in 0..2 {
        assert!(matches!(
            generation.next().await,
            Some(Ok(WorkerEvent::Token(_)))
        ));
    }
    launcher.workers.lock().unwrap()[0].crash("killed by SIGKILL");
    let (rest, done, error) = drain(&mut generation).await;
    assert!(rest.is_empty() && error.is_none());
    let done = done.unwrap();
    assert_eq!(done.finish_reason, protocol::FinishReason::Length);
    assert_eq!(done.completion_tokens, 2);
}

#[tokio::test(start_paused = true)]
async fn a_request_at_two_crashes_in_a_row_ends_alone_and_the_others_complete() {
    let launcher = Arc::new(FakeLauncher {
        poison: Some(99),
        ..FakeLauncher::default()
    });
    *launcher.script.lock().unwrap() = Some((20..30).collect());
    let sup = start(&launcher, SupervisorConfig::default());
    let params = SamplingParams {
        max_tokens: 10,
        temperature: 0.0,
        ..SamplingParams::default()
    };
    let mut innocent = Vec::new();
    for prompt in [vec![1], vec![2]] {
        let lease = sup.acquire(spec("a", 1), None).await.unwrap();
        let mut g = lease.generate(prompt, params.clone()).await.unwrap();
        assert!(matches!(g.next().await, Some(Ok(WorkerEvent::Token(_)))));
        innocent.push(g);
    }
    let lease = sup.acquire(spec("a", 1), None).await.unwrap();
    let mut poison = lease.generate(vec![3, 99], params.clone()).await.unwrap();
    let (a, b) = innocent.split_at_mut(1);
    let (a, b, p) = tokio::join!(drain(&mut a[0]), drain(&mut b[0]), drain(&mut poison));
    for (got, n) in [(a, 9), (b, 9)] {
        assert_eq!(got.2, None, "an innocent request completes");
        assert_eq!(got.0, (21..30).collect::<Vec<_>>()[..n]);
        assert_eq!(got.1.unwrap().completion_tokens, 10);
    }
    let error = p.2.expect("the poison request ends with an error");
    assert!(error.contains("SIGABRT"), "{error}");
    assert!(error.contains("2 worker crashes in a row"), "{error}");
    assert!(p.0.is_empty());
    // Two crashes, not five: the model stays usable.
    assert_ne!(state_of(&sup, "a").await, "failed");
}

#[tokio::test(start_paused = true)]
async fn a_request_is_replayed_at_most_max_replays_times() {
    let launcher = scripted((1..=8).collect());
    let config = SupervisorConfig {
        max_replays: 1,
        ..SupervisorConfig::default()
    };
    let sup = start(&launcher, config);
    let lease = sup.acquire(spec("a", 1), None).await.unwrap();
    let params = SamplingParams {
        max_tokens: 8,
        temperature: 0.0,
        ..SamplingParams::default()
    };
    let mut generation = lease.generate(vec![1], params).await.unwrap();
    for i in 0..2 {
        // A token after each crash: not the same request's crashes in a row.
        assert!(matches!(
            generation.next().await,
            Some(Ok(WorkerEvent::Token(_)))
        ));
        launcher.workers.lock().unwrap()[i].crash("killed by SIGSEGV");
        settle().await;
    }
    let (_, done, error) = drain(&mut generation).await;
    assert!(done.is_none());
    let error = error.unwrap();
    assert!(error.contains("resubmitted 1 times"), "{error}");
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
async fn a_load_fits_what_the_machine_has_free_evicting_idle_models_first() {
    use engine::memory::{FreeMemory, SYSTEM_RESERVE};
    let launcher = Arc::new(FakeLauncher::default());
    // No budget to speak of; the machine has the reserve and 2 MiB free.
    let config = SupervisorConfig {
        free_memory: FreeMemory::Fixed(SYSTEM_RESERVE + (2 << 20)),
        ..SupervisorConfig::default()
    };
    let sup = start(&launcher, config);
    drop(sup.acquire(spec("a", 1 << 20), None).await.unwrap());
    settle().await;
    // Fits beside "a" only once "a" (idle) is unloaded: its 1 MiB counts
    // as freed.
    drop(sup.acquire(spec("b", 3 << 20), None).await.unwrap());
    settle().await;
    assert_ne!(state_of(&sup, "a").await, "ready");
    assert_eq!(state_of(&sup, "b").await, "ready");
    // Larger than what is free even after unloading "b" (which is busy
    // here, so it stays): refused, naming the free memory.
    let _busy = sup.acquire(spec("b", 3 << 20), None).await.unwrap();
    let err = sup.acquire(spec("c", 8 << 20), None).await.err().unwrap();
    assert!(
        matches!(
            err,
            SupervisorError::InsufficientFreeMemory {
                need: 8,
                free: 514,
                reserve: 512,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("514 MB free"), "{err}");
    assert_eq!(state_of(&sup, "b").await, "ready");
}

#[tokio::test(start_paused = true)]
async fn restarts_back_off_and_repeated_crashes_mark_the_model_failed() {
    let launcher = Arc::new(FakeLauncher::default());
    let config = SupervisorConfig {
        max_crashes: 4,
        ..SupervisorConfig::default()
    };
    let sup = start(&launcher, config);
    let mut gaps = Vec::new();
    for i in 0..4 {
        let before = Instant::now();
        let lease = sup.acquire(spec("a", 1), None).await.unwrap();
        gaps.push(before.elapsed());
        drop(lease);
        launcher.workers.lock().unwrap()[i].crash("killed by SIGKILL");
        settle().await;
    }
    // The first crash restarts at once, repeated ones back off.
    assert!(gaps[0] < Duration::from_millis(10));
    assert!(gaps[1] < Duration::from_millis(10), "{gaps:?}");
    assert!(gaps[2] >= Duration::from_secs(1), "{gaps:?}");
    assert!(gaps[3] >= Duration::from_secs(2), "{gaps:?}");
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

#[tokio::test(start_paused = true)]
async fn an_embedding_dropped_before_its_end_is_cancelled_in_the_worker() {
    let launcher = Arc::new(FakeLauncher::default());
    let sup = Supervisor::start(
        Arc::clone(&launcher) as Arc<dyn Launcher>,
        SupervisorConfig::default(),
    );
    let lease = sup.acquire(spec("m", 1), None).await.unwrap();
    let got = lease
        .embed(vec![vec![1, 2], vec![3]], protocol::Pooling::Last, false)
        .await
        .unwrap();
    assert_eq!(
        got.vectors,
        vec![vec![1.0, 2.0, 1.0, 2.0], vec![1.0, 1.0, 3.0, 3.0]]
    );
    assert_eq!(got.prompt_tokens, 3);
    let lease = sup.acquire(spec("m", 1), None).await.unwrap();
    let task = tokio::spawn(lease.embed(vec![vec![4]], protocol::Pooling::Mean, true));
    tokio::task::yield_now().await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let worker = Arc::clone(&launcher.workers.lock().unwrap()[0]);
    assert_eq!(
        worker.cancelled.lock().unwrap().len(),
        1,
        "the worker was told"
    );
}
