//! The supervisor with real `mlxd worker` processes and a tiny model:
//! generation, a worker killed mid-stream (its request resubmitted to a
//! fresh worker, or, with replay off, ended with the cause), load failures,
//! two models in two processes; embeddings through a worker (equal to the
//! engine's in-process, next to a running generation; a crash ends them with
//! the cause); a quantized KV cache configured per model (`kv_bits`), which
//! the worker decodes with as the engine does in-process.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use protocol::{FinishReason, SamplingParams};
use server::supervisor::process::ProcessLauncher;
use server::supervisor::{
    Launcher, ModelSpec, Supervisor, SupervisorConfig, SupervisorError, WorkerEvent,
};

fn supervisor() -> Supervisor {
    supervisor_with(SupervisorConfig::default())
}

fn supervisor_with(config: SupervisorConfig) -> Supervisor {
    let launcher = ProcessLauncher::new(mlxd_path(), Duration::from_secs(60)).unwrap();
    Supervisor::start(Arc::new(launcher) as Arc<dyn Launcher>, config)
}

fn spec(id: &str, path: &std::path::Path) -> ModelSpec {
    ModelSpec {
        id: id.into(),
        path: path.to_path_buf(),
        context_length: Some(512),
        kv_bits: None,
        estimate_bytes: 1 << 20,
    }
}

fn params(max_tokens: u32) -> SamplingParams {
    SamplingParams {
        temperature: 0.0,
        max_tokens,
        ignore_eos: true,
        ..SamplingParams::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_generates_the_requested_tokens() {
    let sup = supervisor();
    let lease = sup.acquire(spec("tiny", tiny_model()), None).await.unwrap();
    assert_eq!(lease.info().context_length, 512);
    assert_eq!(lease.info().vocab_size, 49_152);
    let pid = lease.info().pid.unwrap();
    assert!(process_alive(pid));
    let mut generation = lease.generate(vec![1, 2, 3], params(12)).await.unwrap();
    let mut tokens = 0;
    let done = loop {
        match generation.next().await.unwrap().unwrap() {
            WorkerEvent::Token(_) => tokens += 1,
            WorkerEvent::Done(done) => break done,
            WorkerEvent::Error { message, .. } => panic!("{message}"),
            WorkerEvent::Embedding(_) => panic!("an embedding for a generation"),
        }
    };
    assert_eq!(tokens, 12);
    assert_eq!(done.finish_reason, FinishReason::Length);
    assert_eq!((done.prompt_tokens, done.completion_tokens), (3, 12));
    drop(generation);
    sup.shutdown().await;
    assert!(!process_alive(pid), "the worker is gone after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_request_goes_on_on_a_fresh_worker_with_the_same_tokens() {
    let sup = supervisor();
    let sampled = SamplingParams {
        temperature: 0.9,
        seed: Some(5),
        max_tokens: 120,
        ignore_eos: true,
        ..SamplingParams::default()
    };
    let mut want = Vec::new();
    for p in [params(120), sampled] {
        let lease = sup.acquire(spec("tiny", tiny_model()), None).await.unwrap();
        let mut generation = lease.generate(vec![1, 2, 3], p.clone()).await.unwrap();
        let mut tokens = Vec::new();
        while let Some(event) = generation.next().await {
            if let WorkerEvent::Token(t) = event.unwrap() {
                tokens.push(t.token_id);
            }
        }
        want.push((p, tokens));
    }
    for (p, want) in want {
        let lease = sup.acquire(spec("tiny", tiny_model()), None).await.unwrap();
        let pid = lease.info().pid.unwrap();
        let mut generation = lease.generate(vec![1, 2, 3], p).await.unwrap();
        let mut tokens = Vec::new();
        let mut done = None;
        while let Some(event) = generation.next().await {
            match event.unwrap() {
                WorkerEvent::Token(t) => tokens.push(t.token_id),
                WorkerEvent::Done(d) => done = Some(d),
                WorkerEvent::Error { message, .. } => panic!("{message}"),
                WorkerEvent::Embedding(_) => panic!("an embedding for a generation"),
            }
            if tokens.len() == 30 && generation.replays() == 0 {
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                )
                .unwrap();
            }
        }
        assert_eq!(generation.replays(), 1);
        assert_eq!(tokens, want, "no gap, no repeat, the same tokens");
        let done = done.unwrap();
        assert_eq!((done.prompt_tokens, done.completion_tokens), (3, 120));
        assert_ne!(generation.info().pid, Some(pid));
        drop(generation);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!process_alive(pid), "reaped");
    }
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_replay_a_killed_worker_ends_its_stream_with_the_cause_and_is_replaced() {
    let sup = supervisor_with(SupervisorConfig {
        max_replays: 0,
        ..SupervisorConfig::default()
    });
    let lease = sup.acquire(spec("tiny", tiny_model()), None).await.unwrap();
    let pid = lease.info().pid.unwrap();
    let mut generation = lease
        .generate(vec![1, 2, 3], params(100_000))
        .await
        .unwrap();
    for _ in 0..3 {
        assert!(matches!(
            generation.next().await,
            Some(Ok(WorkerEvent::Token(_)))
        ));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let killed = Instant::now();
    let err = loop {
        match generation.next().await {
            Some(Ok(WorkerEvent::Token(_))) => continue,
            Some(Err(gone)) => break gone.0,
            other => panic!("expected the stream to fail, got {other:?}"),
        }
    };
    assert!(
        killed.elapsed() < Duration::from_secs(1),
        "{:?}",
        killed.elapsed()
    );
    assert!(err.contains("SIGKILL"), "{err}");
    drop(generation);
    // Reaped: no zombie left.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!process_alive(pid));
    // The next request gets a fresh worker (at once: a first crash).
    let lease = sup.acquire(spec("tiny", tiny_model()), None).await.unwrap();
    let new_pid = lease.info().pid.unwrap();
    assert_ne!(new_pid, pid);
    let mut generation = lease.generate(vec![4, 5], params(2)).await.unwrap();
    while let Some(event) = generation.next().await {
        event.unwrap();
    }
    drop(generation);
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_failures_come_back_with_the_workers_reason() {
    let sup = supervisor();
    let dir = tempfile::tempdir().unwrap();

    let missing = dir.path().join("missing");
    let err = sup
        .acquire(spec("missing", &missing), None)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, SupervisorError::LoadFailed { .. }), "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");

    let unsupported = dir.path().join("gpt2");
    std::fs::create_dir(&unsupported).unwrap();
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors",
    ] {
        std::fs::copy(tiny_model().join(f), unsupported.join(f)).unwrap();
    }
    let config = std::fs::read_to_string(tiny_model().join("config.json")).unwrap();
    std::fs::write(
        unsupported.join("config.json"),
        config.replace("\"llama\"", "\"gpt2\""),
    )
    .unwrap();
    let err = sup
        .acquire(spec("gpt2", &unsupported), None)
        .await
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("\"gpt2\" is not supported"),
        "{err}"
    );

    let corrupt = dir.path().join("corrupt");
    std::fs::create_dir(&corrupt).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json", "config.json"] {
        std::fs::copy(tiny_model().join(f), corrupt.join(f)).unwrap();
    }
    std::fs::write(
        corrupt.join("model.safetensors"),
        b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":1}",
    )
    .unwrap();
    let err = sup
        .acquire(spec("corrupt", &corrupt), None)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, SupervisorError::LoadFailed { .. }), "{err}");

    // The supervisor still serves a good model.
    let lease = sup.acquire(spec("tiny", tiny_model()), None).await.unwrap();
    drop(lease);
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_models_run_in_two_processes_and_unload_independently() {
    let sup = supervisor();
    let a = sup.acquire(spec("a", tiny_model()), None).await.unwrap();
    let b = sup.acquire(spec("b", tiny_model()), None).await.unwrap();
    let (pid_a, pid_b) = (a.info().pid.unwrap(), b.info().pid.unwrap());
    assert_ne!(pid_a, pid_b);
    drop(a);
    assert!(sup.unload("a").await);
    let deadline = Instant::now() + Duration::from_secs(5);
    while process_alive(pid_a) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!process_alive(pid_a), "model a's worker is gone");
    let mut generation = b.generate(vec![1], params(3)).await.unwrap();
    let mut events = 0;
    while let Some(event) = generation.next().await {
        event.unwrap();
        events += 1;
    }
    assert_eq!(events, 4, "three tokens and Done from model b");
    drop(generation);
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_worker_is_killed_by_its_heartbeat_and_replaced() {
    let launcher = ProcessLauncher::new(mlxd_path(), Duration::from_secs(60))
        .unwrap()
        .with_heartbeat_timeout(Duration::from_secs(2));
    // Replay off, so the request ends with the reason the worker was
    // killed (with replay it goes on, as a killed worker's does).
    let sup = Supervisor::start(
        Arc::new(launcher) as Arc<dyn Launcher>,
        SupervisorConfig {
            max_replays: 0,
            ..SupervisorConfig::default()
        },
    );
    let lease = sup.acquire(spec("tiny", tiny_model()), None).await.unwrap();
    let pid = lease.info().pid.unwrap();
    let mut generation = lease
        .generate(vec![1, 2, 3], params(100_000))
        .await
        .unwrap();
    assert!(matches!(
        generation.next().await,
        Some(Ok(WorkerEvent::Token(_)))
    ));
    // Stopped, not dead: no exit, no doorbell EOF; only the heartbeat tells.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let stopped = Instant::now();
    let err = loop {
        match tokio::time::timeout(Duration::from_secs(30), generation.next()).await {
            Ok(Some(Ok(WorkerEvent::Token(_)))) => continue,
            Ok(Some(Err(gone))) => break gone.0,
            other => panic!("expected the stream to fail, got {other:?}"),
        }
    };
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "{:?}",
        stopped.elapsed()
    );
    assert!(
        err.contains("hung") && err.contains("no heartbeat"),
        "{err}"
    );
    drop(generation);
    let lease = sup.acquire(spec("tiny", tiny_model()), None).await.unwrap();
    assert_ne!(lease.info().pid.unwrap(), pid);
    drop(lease);
    sup.shutdown().await;
    assert!(!process_alive(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_embeds_beside_a_generation_as_the_engine_does_in_process() {
    let sup = supervisor();
    let inputs: Vec<Vec<u32>> = vec![vec![5], (1..40).collect(), (7..300).collect()];
    let model = engine::Model::load_dir(tiny_model()).unwrap();
    let want = engine::embed::EmbedJob::new(inputs.clone(), engine::embed::Pooling::Mean, true)
        .unwrap()
        .run(&model)
        .unwrap();
    let lease = sup.acquire(spec("tiny", tiny_model()), None).await.unwrap();
    let mut generation = lease.generate(vec![1, 2, 3], params(200)).await.unwrap();
    generation.next().await.unwrap().unwrap();
    let lease = sup.acquire(spec("tiny", tiny_model()), None).await.unwrap();
    let got = lease
        .embed(inputs, protocol::Pooling::Mean, true)
        .await
        .unwrap();
    assert_eq!(got.prompt_tokens, 1 + 39 + 293);
    assert_eq!(
        got.vectors, want,
        "bit for bit: the same chunks, the same graph"
    );
    let mut tokens = 1;
    while let Some(event) = generation.next().await {
        if let WorkerEvent::Token(_) = event.unwrap() {
            tokens += 1;
        }
    }
    assert_eq!(tokens, 200, "the generation ran on beside the embedding");
    // An input longer than the context is refused by the worker.
    let lease = sup.acquire(spec("tiny", tiny_model()), None).await.unwrap();
    let err = lease
        .embed(vec![vec![1; 600]], protocol::Pooling::Last, true)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, server::supervisor::EmbedError::Invalid(m) if m.contains("exceeds 512")),
        "{err:?}"
    );
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_crash_ends_an_embedding_with_the_cause_and_the_next_one_runs() {
    let sup = supervisor();
    let lease = sup.acquire(spec("tiny", tiny_model()), None).await.unwrap();
    let pid = lease.info().pid.unwrap();
    let mut poisoned = vec![9, 9];
    poisoned.extend(worker::FAULT_TRIGGER);
    let err = lease
        .embed(vec![vec![3, 4], poisoned], protocol::Pooling::Last, true)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, server::supervisor::EmbedError::Gone(m) if m.contains("SIGABRT")),
        "{err:?}"
    );
    let lease = sup.acquire(spec("tiny", tiny_model()), None).await.unwrap();
    assert_ne!(lease.info().pid, Some(pid));
    let got = lease
        .embed(vec![vec![3, 4]], protocol::Pooling::Last, true)
        .await
        .unwrap();
    assert_eq!(got.vectors.len(), 1);
    sup.shutdown().await;
}

/// The tiny model read as 2 query heads and 1 KV head of 32 dims (the same
/// tensors), so that groups of 32 fit its heads.
fn wide_heads_model(dir: &std::path::Path) -> std::path::PathBuf {
    let wide = dir.join("wide");
    std::fs::create_dir(&wide).unwrap();
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors",
    ] {
        std::fs::copy(tiny_model().join(f), wide.join(f)).unwrap();
    }
    let text = std::fs::read_to_string(tiny_model().join("config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&text).unwrap();
    config["num_attention_heads"] = 2.into();
    config["num_key_value_heads"] = 1.into();
    std::fs::write(wide.join("config.json"), config.to_string()).unwrap();
    wide
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_given_kv_bits_decodes_as_the_engine_does_with_that_quantized_cache() {
    let dir = tempfile::tempdir().unwrap();
    let wide = wide_heads_model(dir.path());
    let prompt: Vec<u32> = (1..40).map(|i| i * 37 % 1000).collect();
    let n = 16;
    // The engine in this process: the greedy tokens and their logprobs.
    let mut model = engine::Model::load_dir(&wide).unwrap();
    let mut greedy = |bits: Option<i32>| -> Vec<(u32, f32)> {
        let quant = bits.map(|b| engine::model::KvQuant::new(b, 32, 0).unwrap());
        model.set_kv_quant(quant).unwrap();
        let params = engine::SamplingParams {
            logprobs: true,
            ..engine::SamplingParams::greedy()
        };
        let sampler = engine::Sampler::new(params, 49_152, &prompt).unwrap();
        let options = engine::generate::GenerateOptions {
            max_tokens: n,
            ..engine::generate::GenerateOptions::default()
        };
        engine::generate::Generator::new(&model, &prompt, sampler, options)
            .unwrap()
            .map(|t| {
                let t = t.unwrap();
                (t.token, t.logprobs.unwrap().logprob)
            })
            .collect()
    };
    let (want, full) = (greedy(Some(4)), greedy(None));
    let gap = |a: &[(u32, f32)], b: &[(u32, f32)]| {
        a.iter()
            .zip(b)
            .fold(0f32, |m, (x, y)| m.max((x.1 - y.1).abs()))
    };
    // The quantization shows in the logprobs.
    assert!(gap(&want, &full) > 1e-3, "{}", gap(&want, &full));

    let sup = supervisor();
    let kv_bits = |group_size| ModelSpec {
        kv_bits: Some(server::supervisor::KvBits {
            bits: 4,
            group_size,
        }),
        ..spec("wide", &wide)
    };
    let lease = sup.acquire(kv_bits(32), None).await.unwrap();
    let params = SamplingParams {
        logprobs: true,
        ..params(n as u32)
    };
    let mut generation = lease.generate(prompt, params).await.unwrap();
    let mut got = Vec::new();
    while let Some(event) = generation.next().await {
        match event.unwrap() {
            WorkerEvent::Token(t) => got.push((t.token_id, t.logprob.unwrap())),
            WorkerEvent::Done(_) => break,
            WorkerEvent::Error { message, .. } => panic!("{message}"),
            WorkerEvent::Embedding(_) => panic!("an embedding for a generation"),
        }
    }
    let ids = |v: &[(u32, f32)]| v.iter().map(|t| t.0).collect::<Vec<_>>();
    assert_eq!(ids(&got), ids(&want));
    assert!(gap(&got, &want) < 1e-4, "{}", gap(&got, &want));
    drop(generation);
    sup.shutdown().await;

    // A group size the heads do not divide: the load fails with the reason.
    let sup = supervisor();
    let err = sup.acquire(kv_bits(64), None).await.err().unwrap();
    assert!(matches!(err, SupervisorError::LoadFailed { .. }), "{err}");
    assert!(err.to_string().contains("kv_group_size 64"), "{err}");
    sup.shutdown().await;
}
