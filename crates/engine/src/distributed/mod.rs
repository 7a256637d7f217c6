//! A model split over the ranks of an MLX [`Group`] (`mlx::distributed`):
//! tensor parallel as mlx-lm's `shard` methods split a model
//! (`mlx_lm/models/llama.py`, `mlx/nn/layers/distributed.py`), pipeline
//! parallel as mlx-lm's `pipeline` (`mlx_lm/models/deepseek_v3.py`).
//!
//! - **Tensor**: every rank holds every layer, with a `1/size` share of
//!   each attention's heads (the rows of `q/k/v_proj`, the columns of
//!   `o_proj`) and of each MLP's intermediate features (rows of
//!   `gate/up_proj`, columns of `down_proj`; for a Mixture of Experts,
//!   every expert's); the partial outputs of `o_proj` and `down_proj` are
//!   summed over the group (`all_sum`) before the residual. A row-parallel
//!   bias is kept on rank 0 only, so the sum adds it once.
//! - **Pipeline**: each rank holds a contiguous run of layers. The last
//!   rank runs the first layers and sends its activations to the rank
//!   below, rank 0 runs the final layers, and its hidden states reach every
//!   rank through an `all_gather` (so all ranks compute the same logits).
//!
//! Every rank must run the same forward passes in the same order. Rank 0
//! drives generation through the engine's ordinary decode loop: its model
//! is wrapped in [`lead::Lead`], which, before each forward pass, sends
//! the pass's shape and position (a sum with zeros from the other ranks)
//! and then its token ids to the group. The other ranks run
//! [`follow`]: they take each pass's inputs from those sums, run the same
//! forward pass into caches of their own, and stop when rank 0 sends
//! [`finish`]. A group of one rank never gets here: the single-process
//! path has no collective.

mod lead;
mod split;

use std::ops::Range;

use mlx::distributed::Group;

pub(crate) use lead::Lead;
pub use lead::{finish, follow};
pub(crate) use split::prepare;

/// How a model is split across the ranks of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parallel {
    /// Heads and intermediate features split, partial outputs summed.
    Tensor,
    /// Layers split, activations passed from rank to rank.
    Pipeline,
}

impl Parallel {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Parallel::Tensor => "tensor",
            Parallel::Pipeline => "pipeline",
        }
    }
}

impl std::str::FromStr for Parallel {
    type Err = String;

    fn from_str(s: &str) -> Result<Parallel, String> {
        match s {
            "tensor" => Ok(Parallel::Tensor),
            "pipeline" => Ok(Parallel::Pipeline),
            other => Err(format!(
                "unknown parallelism {other:?} (tensor or pipeline)"
            )),
        }
    }
}

/// This rank's part of a split model: the group and the way it splits.
#[derive(Debug, Clone)]
pub struct Shard {
    pub group: Group,
    pub parallel: Parallel,
}

impl Shard {
    pub fn rank(&self) -> i32 {
        self.group.rank()
    }

    pub fn size(&self) -> i32 {
        self.group.size()
    }

    /// The group to sum row-parallel outputs over (tensor parallel only).
    pub fn reduce(&self) -> Option<&Group> {
        (self.parallel == Parallel::Tensor).then_some(&self.group)
    }

    /// The layers of `total` this rank holds: all of them for tensor
    /// parallel; for pipeline parallel a contiguous run, the last rank
    /// holding the first layers (mlx-lm's order). The runs differ by at
    /// most one layer, the higher ranks taking the extra ones.
    pub fn layers(&self, total: usize) -> Range<usize> {
        match self.parallel {
            Parallel::Tensor => 0..total,
            Parallel::Pipeline => pipeline_layers(total, self.rank(), self.size()),
        }
    }
}

/// Rank `rank`'s run of `total` layers over `size` ranks (see
/// [`Shard::layers`]).
fn pipeline_layers(total: usize, rank: i32, size: i32) -> Range<usize> {
    let (rank, size) = (rank.max(0) as usize, size.max(1) as usize);
    let (base, extra) = (total / size, total % size);
    // Rank r holds `base` layers, one more when it is among the `extra`
    // highest ranks; ranks above it run before it.
    let count = |r: usize| base + usize::from(r >= size - extra);
    let start: usize = (rank + 1..size).map(count).sum();
    start..start + count(rank)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_layers_cover_the_model_once_last_rank_first() {
        for total in 1..12 {
            for size in 1..5 {
                let runs: Vec<Range<usize>> =
                    (0..size).map(|r| pipeline_layers(total, r, size)).collect();
                let mut next = 0;
                for run in runs.iter().rev() {
                    assert_eq!(run.start, next, "{total} layers over {size}: {runs:?}");
                    next = run.end;
                }
                assert_eq!(next, total);
                let lens: Vec<usize> = runs.iter().map(|r| r.len()).collect();
                let (lo, hi) = (lens.iter().min().unwrap(), lens.iter().max().unwrap());
                assert!(hi - lo <= 1, "{lens:?}");
            }
        }
        assert_eq!(pipeline_layers(4, 0, 2), 2..4);
        assert_eq!(pipeline_layers(4, 1, 2), 0..2);
        assert_eq!(pipeline_layers(5, 1, 2), 0..3);
    }

    #[test]
    fn parallel_names_round_trip() {
        for p in [Parallel::Tensor, Parallel::Pipeline] {
            assert_eq!(p.name().parse::<Parallel>().unwrap(), p);
        }
        assert!("data".parse::<Parallel>().is_err());
    }
}
