//! The rows of a batch step that follow a grammar: their allowed sets are
//! computed on the CPU (llguidance, [`crate::constraint`]) after the
//! previous step's tokens were read and while the device computes this
//! step's logits, then applied on the device and sampled (see the step
//! order in [`super`]).

use std::time::Instant;

use mlx::Array;
use rayon::iter::{IntoParallelIterator, ParallelIterator};

use super::{InFlight, Scheduler, SeqEnd};
use crate::constraint::{Constraint, ConstraintError};
use crate::error::Result;
use crate::sampler::{Sampled, mask_logits};

/// A step built, its rows under a grammar not yet sampled.
pub(super) struct Built {
    pub(super) ids: Vec<u64>,
    /// One per row; `None` for a row under a grammar.
    pub(super) sampled: Vec<Option<Sampled>>,
    /// `(row, its [1, vocab] logits)` for each row under a grammar.
    pub(super) constrained: Vec<(usize, Array)>,
    /// `[rows]` u32, when no row waits for a mask.
    pub(super) tokens: Option<Array>,
}

impl Scheduler<'_> {
    /// Samples the rows of `built` under a grammar and schedules the
    /// step's tokens. Runs after the previous step's tokens were read and
    /// committed to the grammars, while the device computes `built`'s
    /// logits: each row's allowed set is computed on the CPU (in parallel
    /// when several rows have one), applied to its logits on the device,
    /// and sampled. A row that ended meanwhile, or whose grammar cannot go
    /// on (it ends failed), gets a placeholder token nothing reads.
    pub(super) fn sample_constrained(&mut self, built: Built) -> Result<InFlight> {
        let Built {
            ids,
            mut sampled,
            constrained,
            tokens,
        } = built;
        if let Some(tokens) = tokens {
            let sampled = sampled.into_iter().flatten().collect();
            return Ok(InFlight {
                ids,
                tokens,
                sampled,
            });
        }
        let begin = Instant::now();
        let rows = &mut self.rows;
        let mut live: Vec<(usize, &mut Constraint)> = Vec::with_capacity(constrained.len());
        for (i, row) in rows.iter_mut().enumerate() {
            let wanted = constrained.iter().any(|(j, _)| *j == i);
            if let (true, None, Some(c)) = (wanted, &row.ended, row.req.constraint.as_mut()) {
                live.push((i, c));
            }
        }
        let masks = allowed_sets(live);
        for (i, logits) in constrained {
            let row = &mut self.rows[i];
            let s = match masks.iter().find(|(j, _)| *j == i).map(|(_, m)| m) {
                Some(Ok(allowed)) => {
                    let s = row.req.sampler.sample(&mask_logits(&logits, allowed)?)?;
                    row.input = s.token.clone();
                    row.input_generated = true;
                    s
                }
                Some(Err(e)) => {
                    row.ended = Some(SeqEnd::Failed(e.to_string()));
                    placeholder(logits)?
                }
                None => placeholder(logits)?,
            };
            sampled[i] = Some(s);
        }
        let sampled: Vec<Sampled> = sampled.into_iter().flatten().collect();
        let tokens = step_tokens(sampled.iter())?;
        let mut eval = vec![&tokens];
        for s in &sampled {
            eval.extend(s.arrays().into_iter().skip(1));
        }
        mlx::async_eval(&eval)?;
        self.host.mask += begin.elapsed();
        Ok(InFlight {
            ids,
            tokens,
            sampled,
        })
    }
}

/// A step's tokens as one `[rows]` array (a lone row's as it is).
pub(super) fn step_tokens<'a>(sampled: impl Iterator<Item = &'a Sampled>) -> Result<Array> {
    let tokens: Vec<&Array> = sampled.map(|s| &s.token).collect();
    if let [one] = tokens[..] {
        return Ok(one.clone());
    }
    Ok(mlx::concatenate(&tokens, 0)?)
}

/// A token for a row that takes none this step (it ended while the step
/// was in flight): never read, only there to fill its place in the step.
fn placeholder(logits: Array) -> Result<Sampled> {
    Ok(Sampled {
        token: Array::from_slice(&[0u32], &[1])?,
        logprobs: logits,
        token_logprob: None,
        top: None,
    })
}

/// The allowed sets of the given rows' grammars, computed in parallel on
/// rayon's pool when there are several (the matchers are independent; a
/// mask takes from tens of microseconds to milliseconds).
fn allowed_sets(rows: Vec<(usize, &mut Constraint)>) -> Vec<(usize, MaskResult)> {
    if rows.len() <= 1 {
        return rows.into_iter().map(|(i, c)| (i, c.allowed())).collect();
    }
    rows.into_par_iter()
        .map(|(i, c)| (i, c.allowed()))
        .collect()
}

type MaskResult = std::result::Result<Vec<bool>, ConstraintError>;
