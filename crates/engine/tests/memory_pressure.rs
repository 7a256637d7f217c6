//! A burst of sequences that would not fit MLX's memory limit together, or
//! the memory the machine has free, queues instead of running out of
//! memory: the scheduler admits a row only while its KV on the memory MLX
//! holds stays under nine tenths of the limit, and leaves the system its
//! reserve of what is free. (A test binary of its own: the limit is
//! process-wide; the tests run one after the other.)
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;

use engine::batch::{BatchConfig, Scheduler, SeqEvent, SeqRequest};
use engine::memory::{FreeMemory, SYSTEM_RESERVE};
use engine::model::synthetic::Preset;
use engine::{Sampler, SamplingParams};

/// One test at a time: both read what MLX holds.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const N: usize = 40;

fn prompts() -> Vec<Vec<u32>> {
    (0..8u32)
        .map(|i| (0..60).map(|j| (j * 7 + i * 13) % 256).collect())
        .collect()
}

/// Submits the eight prompts and runs them: the tokens each got and the
/// most rows that ran at once.
fn burst(model: &engine::Model, config: BatchConfig) -> (Vec<usize>, usize) {
    let vocab = model.config.vocab_size as usize;
    let prompts = prompts();
    let mut s = Scheduler::new(model, config);
    for (i, p) in prompts.iter().enumerate() {
        s.submit(SeqRequest {
            id: i as u64,
            prompt: p.clone(),
            sampler: Sampler::new(SamplingParams::greedy(), vocab, p).unwrap(),
            max_tokens: N,
            stop_ids: Vec::new(),
            constraint: None,
        })
        .unwrap();
    }
    let mut tokens = vec![0usize; prompts.len()];
    let mut widest = 0;
    while s.is_busy() {
        for event in s.step().unwrap() {
            match event {
                SeqEvent::Token { id, .. } => tokens[id as usize] += 1,
                SeqEvent::Done(report) => {
                    assert!(report.end == engine::batch::SeqEnd::Length, "{report:?}");
                }
            }
        }
        widest = widest.max(s.active());
    }
    (tokens, widest)
}

#[test]
fn a_burst_over_the_memory_limit_waits_and_completes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let model = Preset::find("tiny-f32").unwrap().build(7).unwrap();
    // Unconstrained, all eight run together.
    let (tokens, widest) = burst(&model, BatchConfig::default());
    assert_eq!(tokens, vec![N; 8]);
    assert_eq!(widest, 8);
    mlx::memory::clear_cache();

    // Room for about three rows' KV above what is held now.
    let row_kv = (60 + N) * model.kv_bytes_per_position();
    let held = mlx::memory::stats().active;
    let limit = (held + 3 * row_kv) * 10 / 9;
    let previous = mlx::memory::set_memory_limit(limit).unwrap();
    let (tokens, widest) = burst(&model, BatchConfig::default());
    mlx::memory::set_memory_limit(previous).unwrap();
    assert_eq!(tokens, vec![N; 8], "every sequence completes");
    assert!(
        widest < 8,
        "the burst waited for memory ({widest} rows at once)"
    );
}

#[test]
fn a_burst_over_the_memory_the_machine_has_free_waits_and_completes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let model = Preset::find("tiny-f32").unwrap().build(7).unwrap();
    mlx::memory::clear_cache();
    // A machine with the system's reserve and about three rows' KV free
    // besides what MLX holds now; MLX's own limit far above.
    let row_kv = (60 + N) * model.kv_bytes_per_position();
    let held = mlx::memory::stats().active as u64;
    let config = BatchConfig {
        free_memory: FreeMemory::BeforeMlx(held + SYSTEM_RESERVE + 3 * row_kv as u64),
        ..BatchConfig::default()
    };
    let (tokens, widest) = burst(&model, config);
    assert_eq!(tokens, vec![N; 8], "every sequence completes");
    assert!(
        widest < 8,
        "the burst waited for memory ({widest} rows at once)"
    );
    assert!(widest >= 2, "rows that fit ran together ({widest})");
}
