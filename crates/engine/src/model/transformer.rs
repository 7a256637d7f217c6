//! The decoder-only transformer shared by the supported families, computed
//! exactly as mlx-lm's `llama.py`, `qwen2.py` and `qwen3.py` do: pre-norm
//! blocks of grouped-query attention with RoPE and a SwiGLU MLP, a final
//! RMSNorm, and an output projection that is its own matrix or the
//! embedding's transpose. What differs between families (biases, q/k
//! norms) is a `Family` value chosen by `model_type`; tensors are named as in
//! the Hugging Face checkpoints (`model.layers.N.self_attn.q_proj.weight`).

use mlx::fast::{AttentionMask, Rope, scaled_dot_product_attention};
use mlx::{Array, Dtype};

use super::batch_cache::BatchKvCache;
use super::cache::KvCache;
use super::config::ModelConfig;
use super::nn::{Linear, LinearGroup, Matrix, Mlp, RmsNorm, rope_from_config};
use super::weights::Weights;
use crate::error::{EngineError, Result};

/// What one family's layers have beyond the common design.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    /// Biases on the q, k and v projections.
    pub qkv_bias: bool,
    /// A bias on the output projection.
    pub o_bias: bool,
    /// Biases on the MLP projections.
    pub mlp_bias: bool,
    /// RMSNorm of each head of q and k before RoPE (Qwen3).
    pub qk_norm: bool,
}

/// Where a layer's cache appends new positions.
pub trait LayerCache {
    /// Appends keys/values `[B, H, L, D]`; returns all cached, them included.
    fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<(Array, Array)>;
}

impl LayerCache for KvCache {
    fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<(Array, Array)> {
        KvCache::update_and_fetch(self, keys, values)
    }
}

impl LayerCache for BatchKvCache {
    fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<(Array, Array)> {
        BatchKvCache::update_and_fetch(self, keys, values)
    }
}

/// The positions of the new tokens.
#[derive(Debug, Clone, Copy)]
pub enum Positions<'a> {
    /// One sequence, continuing at `offset` (its cache's length).
    Sequence { offset: i32 },
    /// A batch of rows: row `b`'s first new token is at position
    /// `offsets[b]` (int32 `[B]`), and it attends to the columns where
    /// `mask` (bool, `[B, 1, new tokens, columns]`, broadcast) is true; no
    /// mask (one new token per row only): all of them.
    Rows {
        offsets: &'a Array,
        mask: Option<&'a Array>,
    },
}

/// The query and key heads of a step, before RoPE.
enum QueryKeys {
    /// `[B, Hq + Hkv, L, D]`: the query heads, then the key heads.
    Joint(Array),
    Split(Array, Array),
}

struct Attention {
    /// q, k and v: one product when they are stored alike.
    qkv: LinearGroup,
    o_proj: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    n_heads: i32,
    n_kv_heads: i32,
    scale: f32,
    rope: Rope,
}

impl Attention {
    fn load(w: &mut Weights, prefix: &str, config: &ModelConfig, family: Family) -> Result<Self> {
        let p = |name: &str| format!("{prefix}.{name}");
        let norm = |w: &mut Weights, name: &str| -> Result<Option<RmsNorm>> {
            if family.qk_norm {
                Ok(Some(RmsNorm::load(w, &p(name), config.rms_norm_eps)?))
            } else {
                Ok(None)
            }
        };
        let qkv = ["q_proj", "k_proj", "v_proj"]
            .iter()
            .map(|name| Linear::load(w, &p(name), config, family.qkv_bias))
            .collect::<Result<Vec<_>>>()?;
        Ok(Attention {
            qkv: LinearGroup::new(qkv)?,
            o_proj: Linear::load(w, &p("o_proj"), config, family.o_bias)?,
            q_norm: norm(w, "q_norm")?,
            k_norm: norm(w, "k_norm")?,
            n_heads: config.num_attention_heads,
            n_kv_heads: config.num_kv_heads(),
            scale: (config.head_dim() as f64).powf(-0.5) as f32,
            rope: rope_from_config(config)?,
        })
    }

    /// `[B, L, H*D]` as heads `[B, H, L, D]`. With one position, the two
    /// share a memory layout and one reshape does.
    fn heads(x: &Array, b: i32, l: i32, n: i32) -> Result<Array> {
        Ok(if l == 1 {
            x.reshape(&[b, n, 1, -1])?
        } else {
            x.reshape(&[b, l, n, -1])?.transpose(&[0, 2, 1, 3])?
        })
    }

    /// q, k and v of `x` (`[B, L, hidden]`) as heads `[B, H, L, D]`, q and k
    /// normalized per head when the family does. A fused projection's
    /// output is split along the head axis: every head at once, in a few
    /// views instead of three reshapes and three transposes; without
    /// per-head norms q and k stay one array, for one RoPE.
    fn project(&self, x: &Array, norm: &RmsNorm, b: i32, l: i32) -> Result<(QueryKeys, Array)> {
        let (hq, hkv) = (self.n_heads, self.n_kv_heads);
        let (q, k, v) = match self.qkv.forward_joined_normed(x, norm)? {
            Some(joined) => {
                let all = Self::heads(&joined, b, l, hq + 2 * hkv)?;
                let v = all.slice_axis(1, hq + hkv, hq + 2 * hkv)?;
                if self.q_norm.is_none() && self.k_norm.is_none() {
                    return Ok((QueryKeys::Joint(all.slice_axis(1, 0, hq + hkv)?), v));
                }
                (
                    all.slice_axis(1, 0, hq)?,
                    all.slice_axis(1, hq, hq + hkv)?,
                    v,
                )
            }
            None => {
                let x = norm.forward(x)?;
                let [q, k, v]: [Array; 3] = self.qkv.forward(&x)?.try_into().map_err(|_| {
                    EngineError::Weights("the attention's q/k/v group lost a part".into())
                })?;
                (
                    Self::heads(&q, b, l, hq)?,
                    Self::heads(&k, b, l, hkv)?,
                    Self::heads(&v, b, l, hkv)?,
                )
            }
        };
        let norm = |x: Array, norm: Option<&RmsNorm>| match norm {
            Some(norm) => norm.forward(&x),
            None => Ok(x),
        };
        Ok((
            QueryKeys::Split(
                norm(q, self.q_norm.as_ref())?,
                norm(k, self.k_norm.as_ref())?,
            ),
            v,
        ))
    }

    /// `residual` plus the attention of `norm(x)`.
    fn forward_add(
        &self,
        x: &Array,
        norm: &RmsNorm,
        residual: &Array,
        cache: &mut impl LayerCache,
        at: Positions,
    ) -> Result<Array> {
        let shape = x.shape();
        let (b, l) = (shape[0], shape[1]);
        let (qk, v) = self.project(x, norm, b, l)?;
        let mask = match at {
            // One new position attends to everything cached; several
            // attend causally, aligned to the end of the cache.
            Positions::Sequence { .. } if l > 1 => AttentionMask::Causal,
            Positions::Sequence { .. } => AttentionMask::None,
            Positions::Rows { mask: None, .. } if l != 1 => {
                return Err(EngineError::InvalidRequest(format!(
                    "a batch step of {l} tokens per row needs its mask"
                )));
            }
            Positions::Rows { mask, .. } => mask.map_or(AttentionMask::None, AttentionMask::Array),
        };
        let rope = |x: &Array| match at {
            Positions::Sequence { offset } => self.rope.apply(x, offset),
            Positions::Rows { offsets, .. } => self.rope.apply_rows(x, offsets),
        };
        let (q, k) = match qk {
            QueryKeys::Joint(qk) => {
                let qk = rope(&qk)?;
                let hq = self.n_heads;
                (
                    qk.slice_axis(1, 0, hq)?,
                    qk.slice_axis(1, hq, hq + self.n_kv_heads)?,
                )
            }
            QueryKeys::Split(q, k) => (rope(&q)?, rope(&k)?),
        };
        let (k, v) = cache.update_and_fetch(&k, &v)?;
        let out = scaled_dot_product_attention(&q, &k, &v, self.scale, mask)?;
        // Heads back to `[B, L, H*D]` (one reshape for one position).
        let out = if l == 1 {
            out.reshape(&[b, 1, -1])?
        } else {
            out.transpose(&[0, 2, 1, 3])?.reshape(&[b, l, -1])?
        };
        self.o_proj.forward_add(&out, residual)
    }
}

struct Block {
    self_attn: Attention,
    mlp: Mlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
}

impl Block {
    fn load(w: &mut Weights, prefix: &str, config: &ModelConfig, family: Family) -> Result<Self> {
        let p = |name: &str| format!("{prefix}.{name}");
        let eps = config.rms_norm_eps;
        Ok(Block {
            self_attn: Attention::load(w, &p("self_attn"), config, family)?,
            mlp: Mlp::load(w, &p("mlp"), config, family.mlp_bias)?,
            input_layernorm: RmsNorm::load(w, &p("input_layernorm"), eps)?,
            post_attention_layernorm: RmsNorm::load(w, &p("post_attention_layernorm"), eps)?,
        })
    }

    fn forward(&self, x: &Array, cache: &mut impl LayerCache, at: Positions) -> Result<Array> {
        let h = self
            .self_attn
            .forward_add(x, &self.input_layernorm, x, cache, at)?;
        self.mlp
            .forward_normed_add(&h, &self.post_attention_layernorm, &h)
    }
}

/// A loaded decoder model.
pub struct Transformer {
    embed_tokens: Matrix,
    layers: Vec<Block>,
    norm: RmsNorm,
    /// `None`: tied to the embedding.
    lm_head: Option<Linear>,
}

impl Transformer {
    /// Builds the model from `weights`, taking every tensor it needs; the
    /// caller checks that none are left over.
    pub fn load(w: &mut Weights, config: &ModelConfig, family: Family) -> Result<Transformer> {
        let tied = config.tie_word_embeddings();
        if tied {
            w.discard(|name| name.starts_with("lm_head."));
        }
        w.discard(|name| name.ends_with("self_attn.rotary_emb.inv_freq"));
        let embed_tokens = Matrix::load(w, "model.embed_tokens", config)?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| Block::load(w, &format!("model.layers.{i}"), config, family))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::load(w, "model.norm", config.rms_norm_eps)?;
        let lm_head = if tied {
            None
        } else {
            Some(Linear::load(w, "lm_head", config, false)?)
        };
        Ok(Transformer {
            embed_tokens,
            layers,
            norm,
            lm_head,
        })
    }

    /// Every weight matrix (projections, embedding, output head).
    pub fn matrices_mut(&mut self) -> Vec<&mut Matrix> {
        let mut out = vec![&mut self.embed_tokens];
        for layer in &mut self.layers {
            let a = &mut layer.self_attn;
            let m = &mut layer.mlp;
            out.extend(a.qkv.matrices_mut());
            out.push(&mut a.o_proj.weight);
            out.extend(m.gate_up.matrices_mut());
            out.push(&mut m.down_proj.weight);
        }
        if let Some(head) = &mut self.lm_head {
            out.push(&mut head.weight);
        }
        out
    }

    /// Number of layers (and of caches `forward` needs).
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The hidden states after the final norm, `[B, L, hidden]`, for token
    /// ids `[B, L]`, appending the new positions to `caches` (one per layer).
    pub fn hidden(&self, tokens: &Array, caches: &mut [KvCache]) -> Result<Array> {
        let offset = caches.first().map_or(0, KvCache::offset);
        self.hidden_at(tokens, caches, Positions::Sequence { offset })
    }

    /// The hidden states after the final norm for token ids `[B, L]` at
    /// positions `at`, appending to `caches` (one per layer).
    pub fn hidden_at<C: LayerCache>(
        &self,
        tokens: &Array,
        caches: &mut [C],
        at: Positions,
    ) -> Result<Array> {
        if caches.len() != self.layers.len() {
            return Err(EngineError::InvalidRequest(format!(
                "{} caches for {} layers",
                caches.len(),
                self.layers.len()
            )));
        }
        let mut h = self.embed_tokens.rows(tokens)?;
        for (layer, cache) in self.layers.iter().zip(caches.iter_mut()) {
            h = layer.forward(&h, cache, at)?;
        }
        self.norm.forward(&h)
    }

    /// Output logits `[.., vocab]` of hidden states.
    pub fn logits(&self, hidden: &Array) -> Result<Array> {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => self.embed_tokens.matmul_t(hidden),
        }
    }

    /// Logits `[B, L, vocab]` for token ids `[B, L]`.
    pub fn forward(&self, tokens: &Array, caches: &mut [KvCache]) -> Result<Array> {
        self.logits(&self.hidden(tokens, caches)?)
    }

    /// The dtype activations and the KV cache take (that of the norms).
    pub fn dtype(&self) -> Dtype {
        self.norm.weight.dtype()
    }
}
