//! A burst of sequences that would not fit MLX's memory limit together
//! queues instead of running out of memory: the scheduler admits a row only
//! while its KV on the memory MLX holds stays under nine tenths of the
//! limit. (A test binary of its own: the limit is process-wide.)
#![allow(clippy::unwrap_used)]

use engine::batch::{BatchConfig, Scheduler, SeqEvent, SeqRequest};
use engine::model::synthetic::Preset;
use engine::{Sampler, SamplingParams};

#[test]
fn a_burst_over_the_memory_limit_waits_and_completes() {
    let model = Preset::find("tiny-f32").unwrap().build(7).unwrap();
    let vocab = model.config.vocab_size as usize;
    let n = 40;
    let prompts: Vec<Vec<u32>> = (0..8u32)
        .map(|i| (0..60).map(|j| (j * 7 + i * 13) % 256).collect())
        .collect();
    let run = |s: &mut Scheduler| {
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
    };
    let submit_all = |s: &mut Scheduler| {
        for (i, p) in prompts.iter().enumerate() {
            s.submit(SeqRequest {
                id: i as u64,
                prompt: p.clone(),
                sampler: Sampler::new(SamplingParams::greedy(), vocab, p).unwrap(),
                max_tokens: n,
                stop_ids: Vec::new(),
                constraint: None,
            })
            .unwrap();
        }
    };
    // Unconstrained, all eight run together.
    let mut s = Scheduler::new(&model, BatchConfig::default());
    submit_all(&mut s);
    let (tokens, widest) = run(&mut s);
    assert_eq!(tokens, vec![n; prompts.len()]);
    assert_eq!(widest, prompts.len());
    drop(s);
    mlx::memory::clear_cache();

    // Room for about three rows' KV above what is held now.
    let row_kv = (60 + n) * model.kv_bytes_per_position();
    let held = mlx::memory::stats().active;
    let limit = (held + 3 * row_kv) * 10 / 9;
    let previous = mlx::memory::set_memory_limit(limit).unwrap();
    let mut s = Scheduler::new(&model, BatchConfig::default());
    submit_all(&mut s);
    let (tokens, widest) = run(&mut s);
    mlx::memory::set_memory_limit(previous).unwrap();
    assert_eq!(tokens, vec![n; prompts.len()], "every sequence completes");
    assert!(
        widest < prompts.len(),
        "the burst waited for memory ({widest} rows at once)"
    );
}
