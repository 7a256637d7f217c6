//! Keeping the ranks of a split model in step: rank 0's model announces
//! each forward pass to the group ([`Lead`]); the other ranks run
//! [`follow`] until rank 0 calls [`finish`].
//!
//! Each pass costs two collectives before the model's own, each evaluated
//! at once: a sum of a four-number header (what to do, batch, tokens,
//! position), then a sum of the token ids (rank 0's ids plus the others'
//! zeros). Rank 0 therefore waits for each step's token before building
//! the next pass (no overlap of steps across a split model).

use mlx::distributed::Group;
use mlx::{Array, Dtype};

use crate::error::{EngineError, Result};
use crate::model::nn::Matrix;
use crate::model::{CacheKind, Caches, LanguageModel, Model, Positions};

/// Header word 0: run one forward pass.
const STEP: i32 = 1;
/// Header word 0: generation is over; followers return.
const STOP: i32 = 2;

/// Sums `header` over the group and reads it.
fn exchange(group: &Group, header: [i32; 4]) -> Result<[i32; 4]> {
    let sum = group.all_sum(&Array::from_slice(&header, &[4])?)?;
    let v = sum.to_vec::<i32>()?;
    v.try_into()
        .map_err(|_| EngineError::InvalidRequest("a step header is four numbers".into()))
}

/// Rank 0's model: announces every forward pass to the group, then runs
/// it with the token ids summed over the group (its own).
pub(crate) struct Lead {
    inner: Box<dyn LanguageModel>,
    group: Group,
}

impl Lead {
    pub(crate) fn new(inner: Box<dyn LanguageModel>, group: Group) -> Lead {
        Lead { inner, group }
    }
}

impl LanguageModel for Lead {
    fn cache_kinds(&self) -> Vec<CacheKind> {
        self.inner.cache_kinds()
    }

    fn hidden(&self, tokens: &Array, caches: &mut dyn Caches, at: Positions) -> Result<Array> {
        let Positions::Sequence { offset } = at else {
            return Err(EngineError::InvalidRequest(
                "a model split across ranks runs one sequence at a time (mlxd run); batched \
                 decoding is not supported"
                    .into(),
            ));
        };
        let &[b, l] = tokens.shape().as_slice() else {
            return Err(EngineError::InvalidRequest(format!(
                "token ids of shape {:?}, [batch, tokens] expected",
                tokens.shape()
            )));
        };
        exchange(&self.group, [STEP, b, l, offset])?;
        let tokens = self.group.all_sum(&tokens.astype(Dtype::I32)?)?;
        // Evaluated before the pass is built: a pipeline stage's `recv`
        // does not depend on the token ids, and MLX could otherwise order it
        // before this sum on one rank and after it on another.
        tokens.eval()?;
        let hidden = self.inner.hidden(&tokens, caches, at)?;
        // The whole pass runs now, whatever part of it the caller reads: a
        // prefill chunk that only fills the caches would otherwise skip the
        // pass's last collectives, which the other ranks run.
        mlx::async_eval(&[&hidden])?;
        Ok(hidden)
    }

    fn logits(&self, hidden: &Array) -> Result<Array> {
        self.inner.logits(hidden)
    }

    fn matrices_mut(&mut self) -> Vec<&mut Matrix> {
        self.inner.matrices_mut()
    }

    fn dtype(&self) -> Dtype {
        self.inner.dtype()
    }

    fn kv_quantizable(&self) -> bool {
        self.inner.kv_quantizable()
    }
}

/// Runs a non-zero rank: every forward pass rank 0 announces, into this
/// rank's own caches, until rank 0 calls [`finish`]. A pass at position 0
/// starts new caches. Returns the number of passes run; fails when a peer
/// is lost (MLX's error) or the announced position is not where this
/// rank's caches are.
pub fn follow(model: &Model, group: &Group) -> Result<u64> {
    let mut caches = model.new_cache();
    let mut passes = 0;
    loop {
        let [what, b, l, offset] = exchange(group, [0; 4])?;
        match what {
            STOP => return Ok(passes),
            STEP => {}
            other => {
                return Err(EngineError::InvalidRequest(format!(
                    "rank 0 sent an unknown step {other}"
                )));
            }
        }
        if offset == 0 {
            caches = model.new_cache();
        }
        let held = caches.first().map_or(0, crate::model::Cache::offset);
        if held != offset {
            return Err(EngineError::InvalidRequest(format!(
                "rank {} holds {held} positions, rank 0 runs a pass at {offset}",
                group.rank()
            )));
        }
        let tokens = group.all_sum(&mlx::zeros(&[b, l], Dtype::I32)?)?;
        tokens.eval()?;
        let hidden = model.hidden_states(&tokens, &mut caches)?;
        mlx::eval(&[&hidden])?;
        passes += 1;
    }
}

/// Ends the followers' loops (rank 0, after its last pass).
pub fn finish(group: &Group) -> Result<()> {
    exchange(group, [STOP, 0, 0, 0])?;
    Ok(())
}
