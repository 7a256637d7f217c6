//! `mlxd run` with speculative decoding: the prompt goes through the batch
//! scheduler with one sequence (the worker's path), speculating with prompt
//! lookup or a draft model, and the figures add the draft tokens proposed
//! and accepted.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use engine::batch::{BatchConfig, Scheduler, SeqEnd, SeqEvent, SeqRequest};
use engine::speculative::{Drafter, Speculation};
use engine::{Model, Sampler, TextStream, Tokenizer};

use super::RunArgs;
use crate::models;

/// Generates and prints as [`super::run`] does, speculating.
pub fn run(
    args: &RunArgs,
    model: &Model,
    tokenizer: &Arc<Tokenizer>,
    prompt: Vec<u32>,
    sampler: Sampler,
) -> anyhow::Result<()> {
    let draft = match &args.draft_model {
        Some(name) => {
            let path = models::resolve(Some(name))?;
            let loaded = engine::loader::load(&path)
                .with_context(|| format!("loading the draft model {}", path.display()))?;
            Some(loaded.model)
        }
        None => None,
    };
    let spec = Speculation {
        drafter: match &draft {
            Some(m) => Drafter::Model(m),
            None => Drafter::PromptLookup,
        },
        num_draft_tokens: args.num_draft_tokens,
        max_batch: 1,
    };
    let config = BatchConfig {
        prefix_cache: 0,
        prefill_step: args.prefill_step,
        ..BatchConfig::default()
    };
    let mut scheduler = Scheduler::new(model, config).with_speculation(spec)?;
    let stop_ids = if args.ignore_eos {
        Vec::new()
    } else {
        tokenizer.eos_token_ids().to_vec()
    };
    let prompt_tokens = prompt.len();
    scheduler.submit(SeqRequest {
        id: 0,
        prompt,
        sampler,
        max_tokens: args.max_tokens,
        stop_ids,
        constraint: None,
    })?;
    let mut text = TextStream::new(Arc::clone(tokenizer), Vec::new(), &[]);
    if args.ignore_eos {
        text.ignore_eos();
    }
    let started = Instant::now();
    let mut out = std::io::stdout().lock();
    let mut report = None;
    while scheduler.is_busy() {
        for event in scheduler.step()? {
            match event {
                SeqEvent::Token { token, .. } => {
                    let step = text.push(token.token)?;
                    out.write_all(step.text.as_bytes())?;
                    out.flush()?;
                    if step.finish.is_some() {
                        scheduler.cancel(0);
                    }
                }
                SeqEvent::Done(done) => report = Some(done),
            }
        }
    }
    out.write_all(text.finish()?.as_bytes())?;
    writeln!(out)?;
    let Some(report) = report else {
        bail!("the sequence never ended");
    };
    if let SeqEnd::Failed(why) = &report.end {
        bail!("generation failed: {why}");
    }
    let seconds = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
        (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64().max(1e-9),
        _ => 1e-9,
    };
    let prefill = seconds(Some(started), report.first_token_at);
    let decode = seconds(report.first_token_at, report.last_token_at);
    let spec = report.speculative;
    eprintln!(
        "prompt: {prompt_tokens} tokens, {:.1} tokens/s | generation: {} tokens, {:.1} tokens/s | \
         draft: {} tokens, {} accepted ({:.0} %) | peak memory: {:.3} GB",
        prompt_tokens as f64 / prefill,
        report.generated,
        report.generated.saturating_sub(1) as f64 / decode,
        spec.drafted,
        spec.accepted,
        100.0 * spec.accepted as f64 / spec.drafted.max(1) as f64,
        mlx::memory::stats().peak as f64 / 1e9
    );
    Ok(())
}
