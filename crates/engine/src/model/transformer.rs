//! The standard decoder-only transformer, computed as mlx-lm's `llama.py`,
//! `qwen2.py` and `qwen3.py` compute it: pre-norm blocks of attention
//! ([`Attention`], in the variant an [`AttentionSpec`] gives) and a
//! SwiGLU [`Mlp`] (or, in the layers a Mixture-of-Experts family makes
//! sparse, a [`FeedForward::Sparse`] block: see [`Transformer::load_with`]),
//! a final RMSNorm, and the [`TokenIo`] embedding and head. A family whose
//! layers are of this shape builds it from its arguments (see `llama.rs`,
//! `qwen3_moe.rs`); tensors are named as in the Hugging Face
//! checkpoints (`model.layers.N.self_attn.q_proj.weight`).
//!
//! Split across ranks (`ModelConfig::shard`, see `crate::distributed`), a
//! block sums its attention's and feed-forward's partial outputs over the
//! group before each residual (tensor parallel), or the model holds a run
//! of layers and passes activations between ranks (pipeline parallel).

use mlx::distributed::Group;
use mlx::{Array, Dtype};

use super::attention::{Attention, AttentionSpec};
use super::base::{CacheKind, Caches, LanguageModel, Positions, check_caches};
use super::config::ModelConfig;
use super::embedding::TokenIo;
use super::mlp::Mlp;
use super::moe::FeedForward;
use super::nn::{Matrix, RmsNorm};
use super::weights::Weights;
use crate::distributed::{Parallel, Shard};
use crate::error::Result;

/// The shape of every block of a standard decoder.
#[derive(Debug, Clone)]
pub struct DecoderSpec {
    pub attention: AttentionSpec,
    /// Biases on the MLP projections.
    pub mlp_bias: bool,
    /// The output head is the embedding's transpose.
    pub tied: bool,
    /// Per layer, the sliding window of its attention (`None`, or a layer
    /// past the end: the attention's own, normally none).
    pub layer_windows: Vec<Option<i32>>,
}

impl DecoderSpec {
    /// Layer `layer`'s attention.
    fn attention(&self, layer: i32) -> AttentionSpec {
        let window = usize::try_from(layer)
            .ok()
            .and_then(|i| self.layer_windows.get(i).copied().flatten());
        AttentionSpec {
            window: window.or(self.attention.window),
            ..self.attention.clone()
        }
    }
}

/// Builds layer `i`'s feed-forward block from the tensors under the
/// layer's prefix (`model.layers.{i}`).
pub type FeedForwardLoader<'a> = dyn Fn(&mut Weights, i32, &str) -> Result<FeedForward> + 'a;

/// A pre-norm block: attention, then the MLP, each added to the residual.
struct Block {
    self_attn: Attention,
    mlp: FeedForward,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
}

impl Block {
    fn load(
        w: &mut Weights,
        prefix: &str,
        config: &ModelConfig,
        spec: &DecoderSpec,
        (layer, mlp): (i32, &FeedForwardLoader),
    ) -> Result<Self> {
        let p = |name: &str| format!("{prefix}.{name}");
        let (eps, dim) = (config.rms_norm_eps, config.hidden_size);
        Ok(Block {
            self_attn: Attention::load(w, &p("self_attn"), config, &spec.attention(layer))?,
            mlp: mlp(w, layer, prefix)?,
            input_layernorm: RmsNorm::load_shaped(w, &p("input_layernorm"), eps, dim)?,
            post_attention_layernorm: RmsNorm::load_shaped(
                w,
                &p("post_attention_layernorm"),
                eps,
                dim,
            )?,
        })
    }

    fn forward(
        &self,
        x: &Array,
        cache: &mut dyn super::base::LayerCache,
        at: Positions,
        reduce: Option<&Group>,
    ) -> Result<Array> {
        if let Some(group) = reduce {
            // Tensor parallel: each part is this rank's share of heads or
            // features; their sum is the whole block's output.
            let attn = self
                .self_attn
                .forward(x, &self.input_layernorm, cache, at)?;
            let h = x.add(&group.all_sum(&attn)?)?;
            let mlp = self
                .mlp
                .forward_normed(&h, &self.post_attention_layernorm)?;
            return Ok(h.add(&group.all_sum(&mlp)?)?);
        }
        let h = self
            .self_attn
            .forward_add(x, &self.input_layernorm, x, cache, at)?;
        self.mlp
            .forward_normed_add(&h, &self.post_attention_layernorm, &h)
    }
}

/// A loaded standard decoder.
pub struct Transformer {
    io: TokenIo,
    /// The layers this process holds (all, unless pipeline parallel).
    layers: Vec<Block>,
    norm: RmsNorm,
    shard: Option<Shard>,
}

impl Transformer {
    /// Builds the model from `weights`, taking every tensor it needs; the
    /// caller checks that none are left over.
    pub fn load(w: &mut Weights, config: &ModelConfig, spec: &DecoderSpec) -> Result<Transformer> {
        Transformer::load_with(w, config, spec, &|w, _, prefix| {
            let mlp = Mlp::load(w, &format!("{prefix}.mlp"), config, spec.mlp_bias)?;
            Ok(FeedForward::Dense(mlp))
        })
    }

    /// As [`Transformer::load`], with each layer's feed-forward block built
    /// by `mlp` (a Mixture-of-Experts family's sparse or dense blocks).
    pub fn load_with(
        w: &mut Weights,
        config: &ModelConfig,
        spec: &DecoderSpec,
        mlp: &FeedForwardLoader,
    ) -> Result<Transformer> {
        let io = TokenIo::load(w, config, "model", "lm_head", spec.tied)?;
        let total = config.num_hidden_layers.max(0) as usize;
        let held = config.shard.as_ref().map_or(0..total, |s| s.layers(total));
        let layers = held
            .map(|i| {
                let i = i as i32;
                Block::load(w, &format!("model.layers.{i}"), config, spec, (i, mlp))
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::load_shaped(w, "model.norm", config.rms_norm_eps, config.hidden_size)?;
        Ok(Transformer {
            io,
            layers,
            norm,
            shard: config.shard.clone(),
        })
    }
}

impl LanguageModel for Transformer {
    fn cache_kinds(&self) -> Vec<CacheKind> {
        vec![CacheKind::Kv; self.layers.len()]
    }

    fn hidden(&self, tokens: &Array, caches: &mut dyn Caches, at: Positions) -> Result<Array> {
        check_caches(caches, self.layers.len())?;
        let mut h = self.io.embed(tokens)?;
        let pipeline = self
            .shard
            .as_ref()
            .filter(|s| s.parallel == Parallel::Pipeline);
        let reduce = self.shard.as_ref().and_then(Shard::reduce);
        // Pipeline parallel, as mlx-lm's `pipeline`: the activations come
        // from the rank above (which ran the earlier layers) ...
        if let Some(s) = pipeline
            && s.rank() < s.size() - 1
        {
            h = s.group.recv_like(&h, s.rank() + 1)?;
        }
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h, caches.layer(i), at, reduce)?;
        }
        // ... go to the rank below, and rank 0's (the last layers') reach
        // every rank, so all compute the same logits.
        if let Some(s) = pipeline {
            let rows = h.dim(0)?;
            if s.rank() != 0 {
                h = s.group.send(&h, s.rank() - 1)?;
            }
            h = s.group.all_gather(&h)?.slice_axis(0, 0, rows)?;
        }
        self.norm.forward(&h)
    }

    fn logits(&self, hidden: &Array) -> Result<Array> {
        self.io.logits(hidden)
    }

    fn matrices_mut(&mut self) -> Vec<&mut Matrix> {
        let mut out = self.io.matrices_mut();
        for layer in &mut self.layers {
            out.extend(layer.self_attn.matrices_mut());
            out.extend(layer.mlp.matrices_mut());
        }
        out
    }

    fn dtype(&self) -> Dtype {
        self.norm.weight.dtype()
    }

    fn kv_quantizable(&self) -> bool {
        self.layers.iter().all(|l| l.self_attn.kv_quantizable())
    }
}
