//! Embeddings: a model's hidden states after its final norm, without the
//! output head, pooled into one vector per input and, by default, scaled to
//! unit L2 norm (sentence-transformers' `Pooling` then `Normalize`
//! modules; Qwen3-Embedding pools the last token of its decoder).
//!
//! Each input runs alone on a fresh cache, in chunks of [`EMBED_CHUNK`]
//! tokens, so a caller can interleave the chunks with other work (the
//! worker runs them between generation steps) and a long input never
//! builds attention scores over its whole length at once. Pooling happens
//! in f32 on the device for each chunk and is summed in f64 on the host.
//! With causal attention (every family here) the first token's state does
//! not depend on the rest, so `cls` runs only the first token.

use mlx::{Array, Dtype};

use crate::error::{EngineError, Result};
use crate::model::{Cache, Model};

/// Tokens of one input run in one forward pass at most.
pub const EMBED_CHUNK: usize = 512;

/// How an input's hidden states become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pooling {
    /// The last token's state (decoder embedding models).
    #[default]
    Last,
    /// The mean of every token's state.
    Mean,
    /// The first token's state.
    Cls,
}

/// One embedding request's inputs, run chunk by chunk.
pub struct EmbedJob {
    inputs: Vec<Vec<u32>>,
    pooling: Pooling,
    normalize: bool,
    /// The input being run.
    next: usize,
    /// Its caches and what it has pooled so far.
    current: Option<Running>,
}

struct Running {
    caches: Vec<Cache>,
    /// Tokens of the input already run.
    done: usize,
    /// The mean's running sum (mean pooling).
    sum: Vec<f64>,
}

/// What one [`EmbedJob::advance`] did.
#[derive(Debug)]
pub struct Advanced {
    /// Tokens run through the model.
    pub tokens: usize,
    /// An input that completed: its index and vector.
    pub vector: Option<(usize, Vec<f32>)>,
}

impl EmbedJob {
    /// A job over `inputs` (token ids, none empty).
    pub fn new(inputs: Vec<Vec<u32>>, pooling: Pooling, normalize: bool) -> Result<EmbedJob> {
        if inputs.is_empty() || inputs.iter().any(Vec::is_empty) {
            return Err(EngineError::InvalidRequest(
                "embedding inputs must be non-empty".into(),
            ));
        }
        Ok(EmbedJob {
            inputs,
            pooling,
            normalize,
            next: 0,
            current: None,
        })
    }

    /// Whether every input has its vector.
    pub fn is_done(&self) -> bool {
        self.next >= self.inputs.len()
    }

    /// Tokens of every input.
    pub fn total_tokens(&self) -> usize {
        self.inputs.iter().map(Vec::len).sum()
    }

    /// Runs the next chunk of the current input (at most [`EMBED_CHUNK`]
    /// tokens) and returns its vector when that was its last chunk.
    pub fn advance(&mut self, model: &Model) -> Result<Advanced> {
        let Some(input) = self.inputs.get(self.next) else {
            return Ok(Advanced {
                tokens: 0,
                vector: None,
            });
        };
        let running = self.current.get_or_insert_with(|| Running {
            caches: model.new_cache(),
            done: 0,
            sum: Vec::new(),
        });
        let end = match self.pooling {
            Pooling::Cls => 1,
            Pooling::Last | Pooling::Mean => (running.done + EMBED_CHUNK).min(input.len()),
        };
        let chunk = &input[running.done..end];
        let ids = Array::from_slice(chunk, &[1, chunk.len() as i32])?;
        let hidden = model.hidden_states(&ids, &mut running.caches)?;
        let last_chunk = end == input.len() || self.pooling == Pooling::Cls;
        let pooled = match self.pooling {
            Pooling::Mean => Some(hidden.sum(&[1], false)?),
            Pooling::Cls => Some(hidden.slice_axis(1, 0, 1)?),
            Pooling::Last if last_chunk => {
                let n = chunk.len() as i32;
                Some(hidden.slice_axis(1, n - 1, n)?)
            }
            Pooling::Last => None,
        };
        let pooled = match pooled {
            Some(p) => {
                let p = p.astype(Dtype::F32)?.reshape(&[-1])?;
                p.eval()?;
                Some(p.to_vec::<f32>()?)
            }
            None => {
                let state: Vec<&Array> = running.caches.iter().flat_map(|c| c.state()).collect();
                mlx::eval(&state)?;
                None
            }
        };
        running.done = end;
        if let (Pooling::Mean, Some(p)) = (self.pooling, &pooled) {
            if running.sum.is_empty() {
                running.sum = vec![0.0; p.len()];
            }
            for (s, v) in running.sum.iter_mut().zip(p) {
                *s += f64::from(*v);
            }
        }
        let tokens = chunk.len();
        if !last_chunk {
            return Ok(Advanced {
                tokens,
                vector: None,
            });
        }
        let index = self.next;
        self.next += 1;
        let running = self.current.take();
        let vector: Vec<f64> = match (self.pooling, pooled) {
            (Pooling::Mean, _) => {
                let n = input.len() as f64;
                running.map_or_else(Vec::new, |r| r.sum.into_iter().map(|s| s / n).collect())
            }
            (_, Some(p)) => p.into_iter().map(f64::from).collect(),
            (_, None) => Vec::new(),
        };
        Ok(Advanced {
            tokens,
            vector: Some((index, finish(vector, self.normalize))),
        })
    }

    /// Runs every remaining chunk; the vectors in input order.
    pub fn run(mut self, model: &Model) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(self.inputs.len());
        while !self.is_done() {
            if let Some((_, v)) = self.advance(model)?.vector {
                out.push(v);
            }
        }
        Ok(out)
    }
}

/// The vector as f32, scaled to unit L2 norm when asked (as PyTorch's
/// `F.normalize`: the norm floored at 1e-12).
fn finish(v: Vec<f64>, normalize: bool) -> Vec<f32> {
    let scale = if normalize {
        1.0 / v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12)
    } else {
        1.0
    };
    v.into_iter().map(|x| (x * scale) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizing_gives_unit_length_and_leaves_zero_alone() {
        let v = finish(vec![3.0, 4.0], true);
        assert_eq!(v, vec![0.6, 0.8]);
        assert_eq!(finish(vec![3.0, 4.0], false), vec![3.0, 4.0]);
        assert_eq!(finish(vec![0.0, 0.0], true), vec![0.0, 0.0]);
    }

    #[test]
    fn empty_inputs_are_refused() {
        assert!(EmbedJob::new(vec![], Pooling::Last, true).is_err());
        assert!(EmbedJob::new(vec![vec![1], vec![]], Pooling::Last, true).is_err());
    }
}
