//! The token embedding and the output head of a language model, as
//! mlx-lm's families hold them (`embed_tokens`, and `lm_head` or the
//! embedding's transpose when `tie_word_embeddings`), dense or quantized.

use mlx::Array;

use super::config::ModelConfig;
use super::nn::{Linear, Matrix};
use super::weights::Weights;
use crate::error::Result;

/// Token ids in, logits out.
pub struct TokenIo {
    embed_tokens: Matrix,
    /// `None`: tied to the embedding.
    lm_head: Option<Linear>,
}

impl TokenIo {
    /// Loads `{prefix}.embed_tokens` and, unless `tied`, the head `head`
    /// (`lm_head`; a tied checkpoint's head tensors are dropped, as
    /// mlx-lm's `sanitize` does).
    pub fn load(
        w: &mut Weights,
        config: &ModelConfig,
        prefix: &str,
        head: &str,
        tied: bool,
    ) -> Result<Self> {
        if tied {
            let dotted = format!("{head}.");
            w.discard(|name| name.starts_with(&dotted));
        }
        let name = format!("{prefix}.embed_tokens");
        let embed_tokens = Matrix::load(w, &name, config)?;
        let shape = [config.vocab_size, config.hidden_size];
        embed_tokens.check_shape(&name, shape[0], shape[1])?;
        let lm_head = if tied {
            None
        } else {
            Some(Linear::load_shaped(w, head, config, false, shape)?)
        };
        Ok(TokenIo {
            embed_tokens,
            lm_head,
        })
    }

    /// Embeddings `[..ids, hidden]` of token ids.
    pub fn embed(&self, tokens: &Array) -> Result<Array> {
        self.embed_tokens.rows(tokens)
    }

    /// Output logits `[.., vocab]` of hidden states.
    pub fn logits(&self, hidden: &Array) -> Result<Array> {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => self.embed_tokens.matmul_t(hidden),
        }
    }

    /// The embedding and the output head's matrices.
    pub fn matrices_mut(&mut self) -> Vec<&mut Matrix> {
        let mut out = vec![&mut self.embed_tokens];
        if let Some(head) = &mut self.lm_head {
            out.push(&mut head.weight);
        }
        out
    }
}
