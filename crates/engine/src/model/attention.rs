//! Grouped-query attention with RoPE, in the variants mlx-lm's families
//! use (`llama.py`, `qwen2.py`, `qwen3.py`, `qwen3_next.py`): biases on
//! the q/k/v and output projections or not, an RMSNorm of each head of q
//! and k before RoPE (Qwen3), rotary over part of each head (partial
//! rotary), and an output gate read from the second half of each query
//! head (`o_proj(out * sigmoid(gate))`, Qwen3-Next), a sliding window
//! (each query sees its last `window` positions: the mask narrowed over the
//! full cache, which keeps every position) and a softmax scale of the
//! family's own (Gemma's `query_pre_attn_scalar`) and attention sinks
//! (gpt-oss: a learned logit per head in every softmax). q, k and v run as one
//! product when stored alike; tensors are named as in the Hugging Face
//! checkpoints (`{prefix}.q_proj.weight`).

use mlx::fast::{AttentionMask, Rope, attention_with_sinks, scaled_dot_product_attention};
use mlx::{Array, Dtype};

use super::base::{LayerCache, Positions};
use super::config::ModelConfig;
use super::kv_quant::{KvArray, quantized_attention};
use super::nn::{Linear, LinearGroup, Matrix, RmsNorm};
use super::weights::Weights;
use crate::error::{EngineError, Result};

/// What an attention layer has, beyond its head counts.
#[derive(Debug, Clone)]
pub struct AttentionSpec {
    pub n_heads: i32,
    pub n_kv_heads: i32,
    pub head_dim: i32,
    /// Biases on the q, k and v projections.
    pub qkv_bias: bool,
    /// A bias on the output projection.
    pub o_bias: bool,
    /// RMSNorm of each head of q and k before RoPE, with this epsilon.
    pub qk_norm: Option<f32>,
    /// An output gate in the second half of each query head.
    pub output_gate: bool,
    pub rope: Rope,
    /// A sliding window: each query sees only the last this many
    /// positions, itself included (`None`: every earlier position).
    pub window: Option<i32>,
    /// The softmax scale, when not `head_dim^-0.5`.
    pub scale: Option<f32>,
    /// Learned attention sinks, one logit per query head (`{prefix}.sinks`,
    /// gpt-oss).
    pub sinks: bool,
}

impl AttentionSpec {
    /// The heads of `config` with no biases, norms or gate.
    pub fn plain(config: &ModelConfig, rope: Rope) -> AttentionSpec {
        AttentionSpec {
            n_heads: config.num_attention_heads,
            n_kv_heads: config.num_kv_heads(),
            head_dim: config.head_dim(),
            qkv_bias: false,
            o_bias: false,
            qk_norm: None,
            output_gate: false,
            rope,
            window: None,
            scale: None,
            sinks: false,
        }
    }
}

/// `mask` (of `l` queries, the last `l` of `k` key columns) narrowed to a
/// sliding window: query `i` also needs `(k - l + i) - c < window` to see
/// column `c`, as mlx-lm's `create_causal_mask(window_size=...)` and its
/// rotating cache give. The rows of a batch end at the same column, so the
/// window is one band for all of them. `None` when the window hides
/// nothing (`k <= window`).
fn sliding(mask: AttentionMask, l: i32, k: i32, window: i32) -> Result<Option<Array>> {
    if k <= window {
        return Ok(None);
    }
    let columns = mlx::arange(0.0, f64::from(k), 1.0, Dtype::I32)?;
    let keys = columns.reshape(&[1, k])?;
    let queries = columns.slice_axis(0, k - l, k)?.reshape(&[l, 1])?;
    let distance = queries.subtract(&keys)?;
    let band = distance.less(&Array::scalar(window)?)?;
    Ok(Some(match mask {
        AttentionMask::None => band,
        AttentionMask::Causal => band.logical_and(&distance.greater_equal(&Array::scalar(0)?)?)?,
        AttentionMask::Array(m) => m.logical_and(&band)?,
    }))
}

/// The query and key heads of a step, before RoPE.
enum QueryKeys {
    /// `[B, Hq + Hkv, L, D]`: the query heads, then the key heads.
    Joint(Array),
    Split(Array, Array),
}

/// An attention layer.
pub struct Attention {
    /// q, k and v: one product when they are stored alike.
    qkv: LinearGroup,
    o_proj: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    n_heads: i32,
    n_kv_heads: i32,
    head_dim: i32,
    output_gate: bool,
    scale: f32,
    rope: Rope,
    window: Option<i32>,
    sinks: Option<Array>,
}

impl Attention {
    /// Loads `{prefix}.{q,k,v,o}_proj` (and `q_norm`/`k_norm`).
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        config: &ModelConfig,
        spec: &AttentionSpec,
    ) -> Result<Self> {
        let p = |name: &str| format!("{prefix}.{name}");
        let norm = |w: &mut Weights, name: &str| -> Result<Option<RmsNorm>> {
            match spec.qk_norm {
                Some(eps) => Ok(Some(RmsNorm::load_shaped(w, &p(name), eps, spec.head_dim)?)),
                None => Ok(None),
            }
        };
        let hidden = config.hidden_size;
        let q_width = spec.n_heads * spec.head_dim * if spec.output_gate { 2 } else { 1 };
        let kv_width = spec.n_kv_heads * spec.head_dim;
        let qkv = [
            ("q_proj", q_width),
            ("k_proj", kv_width),
            ("v_proj", kv_width),
        ]
        .iter()
        .map(|&(name, out)| Linear::load_shaped(w, &p(name), config, spec.qkv_bias, [out, hidden]))
        .collect::<Result<Vec<_>>>()?;
        let o_shape = [hidden, spec.n_heads * spec.head_dim];
        Ok(Attention {
            qkv: LinearGroup::new(qkv)?,
            o_proj: Linear::load_shaped(w, &p("o_proj"), config, spec.o_bias, o_shape)?,
            q_norm: norm(w, "q_norm")?,
            k_norm: norm(w, "k_norm")?,
            n_heads: spec.n_heads,
            n_kv_heads: spec.n_kv_heads,
            head_dim: spec.head_dim,
            output_gate: spec.output_gate,
            scale: spec
                .scale
                .unwrap_or((spec.head_dim as f64).powf(-0.5) as f32),
            rope: spec.rope.clone(),
            window: spec.window,
            sinks: if spec.sinks {
                Some(w.take_shaped(&p("sinks"), &[spec.n_heads])?)
            } else {
                None
            },
        })
    }

    /// Whether it attends over every earlier position without sinks, as a
    /// quantized KV cache needs (see [`super::kv_quant`]).
    pub fn kv_quantizable(&self) -> bool {
        self.window.is_none() && self.sinks.is_none()
    }

    /// The weight matrices.
    pub fn matrices_mut(&mut self) -> Vec<&mut Matrix> {
        let mut out: Vec<&mut Matrix> = self.qkv.matrices_mut().collect();
        out.push(&mut self.o_proj.weight);
        out
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
    fn project(
        &self,
        x: &Array,
        norm: &RmsNorm,
        b: i32,
        l: i32,
    ) -> Result<(QueryKeys, Array, Option<Array>)> {
        let (hq, hkv) = (self.n_heads, self.n_kv_heads);
        let mut gate = None;
        let joined = if self.output_gate {
            None
        } else {
            self.qkv.forward_joined_normed(x, norm)?
        };
        let (q, k, v) = match joined {
            Some(joined) => {
                let all = Self::heads(&joined, b, l, hq + 2 * hkv)?;
                let v = all.slice_axis(1, hq + hkv, hq + 2 * hkv)?;
                if self.q_norm.is_none() && self.k_norm.is_none() {
                    return Ok((QueryKeys::Joint(all.slice_axis(1, 0, hq + hkv)?), v, None));
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
                let q = if self.output_gate {
                    // Each query head is followed by its gate: [B, L, H, 2D].
                    let d = self.head_dim;
                    let both = q.reshape(&[b, l, hq, 2 * d])?;
                    gate = Some(both.slice_axis(3, d, 2 * d)?.reshape(&[b, l, hq * d])?);
                    let q = both.slice_axis(3, 0, d)?;
                    if l == 1 {
                        q.reshape(&[b, hq, 1, d])?
                    } else {
                        q.transpose(&[0, 2, 1, 3])?
                    }
                } else {
                    Self::heads(&q, b, l, hq)?
                };
                (q, Self::heads(&k, b, l, hkv)?, Self::heads(&v, b, l, hkv)?)
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
            gate,
        ))
    }

    /// `residual` plus the attention of `norm(x)`.
    pub fn forward_add(
        &self,
        x: &Array,
        norm: &RmsNorm,
        residual: &Array,
        cache: &mut dyn LayerCache,
        at: Positions,
    ) -> Result<Array> {
        let heads = self.attend(x, norm, cache, at)?;
        self.o_proj.forward_add(&heads, residual)
    }

    /// The attention of `norm(x)`, without a residual (for blocks that
    /// normalize it before adding, as Gemma's do).
    pub fn forward(
        &self,
        x: &Array,
        norm: &RmsNorm,
        cache: &mut dyn LayerCache,
        at: Positions,
    ) -> Result<Array> {
        self.o_proj.forward(&self.attend(x, norm, cache, at)?)
    }

    /// The heads' outputs `[B, L, H*D]` (gated), before `o_proj`.
    fn attend(
        &self,
        x: &Array,
        norm: &RmsNorm,
        cache: &mut dyn LayerCache,
        at: Positions,
    ) -> Result<Array> {
        let shape = x.shape();
        let (b, l) = (shape[0], shape[1]);
        let (qk, v, gate) = self.project(x, norm, b, l)?;
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
        let out = match cache.update_and_fetch(&k, &v)? {
            (KvArray::Full(k), KvArray::Full(v)) => {
                let windowed = match self.window {
                    Some(window) => sliding(mask, l, k.dim(2)?, window)?,
                    None => None,
                };
                let mask = windowed.as_ref().map_or(mask, AttentionMask::Array);
                match &self.sinks {
                    Some(sinks) => attention_with_sinks(&q, &k, &v, self.scale, mask, sinks)?,
                    None => scaled_dot_product_attention(&q, &k, &v, self.scale, mask)?,
                }
            }
            (KvArray::Quantized(k), KvArray::Quantized(v)) if self.kv_quantizable() => {
                quantized_attention(&q, &k, &v, self.scale, mask)?
            }
            _ => {
                return Err(EngineError::InvalidRequest(
                    "an attention layer with a sliding window or sinks was given a \
                     quantized KV cache, or keys and values stored unlike"
                        .into(),
                ));
            }
        };
        // Heads back to `[B, L, H*D]` (one reshape for one position).
        let out = if l == 1 {
            out.reshape(&[b, 1, -1])?
        } else {
            out.transpose(&[0, 2, 1, 3])?.reshape(&[b, l, -1])?
        };
        Ok(match gate {
            Some(gate) => out.multiply(&gate.sigmoid()?)?,
            None => out,
        })
    }
}
