//! Qwen2.5-VL (`qwen2_5_vl`): mlx-vlm's `qwen2_5_vl` model. The language
//! model is Qwen2's decoder (biases on q, k and v) with multimodal rotary
//! embeddings (M-RoPE): each rotated pair of a head takes its position from
//! one of three axes (time, height, width; `mrope_section` pairs each, in
//! that order). Text has the same position on all three, which is plain
//! RoPE, so text-only prompts and decode steps use the ordinary rotary
//! kernel, shifted by the prompt's position delta after images; a prompt
//! with images is prefilled with explicit per-token angles, its image
//! tokens' embeddings replaced by the vision tower's output
//! ([`qwen2_5_vl_vision`](super::qwen2_5_vl_vision)).
//!
//! Tensors are taken in the Hugging Face layout (`visual.*`, `model.*`,
//! `lm_head`); an mlx-vlm checkpoint's names (`vision_tower.*`,
//! `language_model.*`) and transformers 5's (`model.visual.*`,
//! `model.language_model.*`) are renamed to it.

use mlx::fast::{AttentionMask, Rope, scaled_dot_product_attention};
use mlx::{Array, Dtype};
use serde::Deserialize;

use super::base::{CacheKind, Caches, LanguageModel, LayerCache, Positions, check_caches};
use super::config::ModelConfig;
use super::embedding::TokenIo;
use super::mlp::Mlp;
use super::multimodal::VisionLanguage;
use super::nn::{Linear, LinearGroup, Matrix, RmsNorm};
use super::qwen2_5_vl_vision::{VisionArgs, VisionTower};
use super::registry::Family;
use super::weights::Weights;
use crate::error::{EngineError, Result};
use crate::vision::ImageTokens;

/// The `qwen2_5_vl` family.
pub struct Qwen2_5Vl;

/// `rope_scaling` of a Qwen2.5-VL config.
#[derive(Debug, Clone, Deserialize)]
pub struct MropeScaling {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    rope_type: Option<String>,
    #[serde(default)]
    mrope_section: Option<Vec<i32>>,
}

/// mlx-vlm's `TextConfig` and `ModelConfig` beyond the common config.
#[derive(Debug, Clone, Deserialize)]
pub struct Qwen2_5VlArgs {
    #[serde(default)]
    rope_theta: Option<f32>,
    #[serde(default)]
    rope_scaling: Option<MropeScaling>,
    vision_config: VisionArgs,
    #[serde(default = "d_image")]
    image_token_id: u32,
    #[serde(default = "d_video")]
    video_token_id: u32,
    #[serde(default = "d_start")]
    vision_start_token_id: u32,
}

fn d_image() -> u32 {
    151_655
}
fn d_video() -> u32 {
    151_656
}
fn d_start() -> u32 {
    151_652
}

impl Qwen2_5VlArgs {
    /// The pairs of each axis (time, height, width), as mlx-vlm checks
    /// them: a scaling must be `mrope` (or `default`) and name its
    /// sections; none gives `[24, 20, 20]`.
    fn mrope_section(&self) -> Result<Vec<i32>> {
        let Some(s) = &self.rope_scaling else {
            return Ok(vec![24, 20, 20]);
        };
        let kind = s.kind.as_deref().or(s.rope_type.as_deref());
        match (kind, &s.mrope_section) {
            (Some("mrope" | "default"), Some(section)) if !section.is_empty() => {
                Ok(section.clone())
            }
            _ => Err(EngineError::Config(
                "qwen2_5_vl: rope_scaling must be of type mrope (or default) with an mrope_section"
                    .into(),
            )),
        }
    }
}

/// Renames an mlx-vlm or transformers 5 tensor name (or module path) to
/// the Hugging Face layout this family reads.
fn hf_name(name: &str) -> Option<String> {
    const RENAMES: [(&str, &str); 5] = [
        ("vision_tower", "visual"),
        ("language_model.model", "model"),
        ("language_model.lm_head", "lm_head"),
        ("model.visual", "visual"),
        ("model.language_model", "model"),
    ];
    RENAMES.iter().find_map(|(from, to)| {
        let rest = name.strip_prefix(from)?;
        (rest.is_empty() || rest.starts_with('.')).then(|| format!("{to}{rest}"))
    })
}

impl Family for Qwen2_5Vl {
    const MODEL_TYPES: &'static [&'static str] = &["qwen2_5_vl"];
    type Args = Qwen2_5VlArgs;

    fn sanitize(_: &Qwen2_5VlArgs, _: &ModelConfig, weights: &mut Weights) -> Result<()> {
        weights.rename(hf_name)?;
        weights
            .discard(|name| name.contains("position_ids") || name.contains("rotary_emb.inv_freq"));
        Ok(())
    }

    fn build(
        args: Qwen2_5VlArgs,
        config: &ModelConfig,
        weights: &mut Weights,
    ) -> Result<Box<dyn LanguageModel>> {
        // Per-layer quantization is keyed by the checkpoint's module paths,
        // renamed as its tensors were.
        let mut config = config.clone();
        if let Some(q) = config.quantization.as_mut() {
            q.rename_layers(hf_name);
        }
        Ok(Box::new(Qwen2_5VlModel::load(args, &config, weights)?))
    }
}

/// One decoder layer's attention.
struct Attention {
    qkv: LinearGroup,
    o_proj: Linear,
    n_heads: i32,
    n_kv_heads: i32,
    scale: f32,
}

/// How the layers rotate the new tokens' queries and keys.
#[derive(Clone, Copy)]
enum Rotation<'a> {
    /// Plain RoPE at `at` (text: one position on every axis; after a
    /// prompt with images the caller shifts the offset by its delta).
    At(Positions<'a>),
    /// M-RoPE: explicit `cos` and `sin`, `[1, 1, L, head_dim]`.
    Angles { cos: &'a Array, sin: &'a Array },
}

struct Layer {
    attn: Attention,
    mlp: Mlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
}

/// A loaded Qwen2.5-VL model.
pub struct Qwen2_5VlModel {
    io: TokenIo,
    layers: Vec<Layer>,
    norm: RmsNorm,
    vision: VisionTower,
    rope: Rope,
    /// `[head_dim / 2]` rotation speeds, and the axis each pair reads.
    inv_freq: Array,
    axis_of_pair: Array,
    tokens: ImageTokens,
}

impl Qwen2_5VlModel {
    fn load(args: Qwen2_5VlArgs, config: &ModelConfig, w: &mut Weights) -> Result<Self> {
        let tied = config.tie_word_embeddings_or(true);
        let io = TokenIo::load(w, config, "model", "lm_head", tied)?;
        let (dim, heads) = (config.hidden_size, config.num_attention_heads);
        let kv_heads = config.num_kv_heads();
        if heads <= 0 || dim % heads != 0 || kv_heads <= 0 || heads % kv_heads != 0 {
            return Err(EngineError::Config(format!(
                "qwen2_5_vl: {heads} heads ({kv_heads} KV) do not divide hidden_size {dim}"
            )));
        }
        let head_dim = dim / heads;
        let eps = config.rms_norm_eps;
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let p = |name: &str| format!("model.layers.{i}.{name}");
                let proj = |w: &mut Weights, name: &str, out, bias| {
                    Linear::load_shaped(w, &p(&format!("self_attn.{name}")), config, bias, out)
                };
                Ok(Layer {
                    attn: Attention {
                        qkv: LinearGroup::new(vec![
                            proj(w, "q_proj", [heads * head_dim, dim], true)?,
                            proj(w, "k_proj", [kv_heads * head_dim, dim], true)?,
                            proj(w, "v_proj", [kv_heads * head_dim, dim], true)?,
                        ])?,
                        o_proj: proj(w, "o_proj", [dim, heads * head_dim], false)?,
                        n_heads: heads,
                        n_kv_heads: kv_heads,
                        scale: (f64::from(head_dim)).powf(-0.5) as f32,
                    },
                    mlp: Mlp::load(w, &p("mlp"), config, false)?,
                    input_layernorm: RmsNorm::load_shaped(w, &p("input_layernorm"), eps, dim)?,
                    post_attention_layernorm: RmsNorm::load_shaped(
                        w,
                        &p("post_attention_layernorm"),
                        eps,
                        dim,
                    )?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::load_shaped(w, "model.norm", eps, dim)?;
        let section = args.mrope_section()?;
        let vision = VisionTower::load(w, "visual", config, args.vision_config.clone(), dim)?;
        let base = args.rope_theta.unwrap_or(1_000_000.0);
        let pairs = head_dim / 2;
        // mlx-vlm's `compute_inv_freq` and chunked selector: pairs past the
        // sections read the time axis.
        let exponents = mlx::arange(0.0, f64::from(head_dim), 2.0, Dtype::F32)?
            .divide(&Array::scalar(head_dim as f32)?)?;
        let inv_freq = Array::scalar(1.0f32)?.divide(&Array::scalar(base)?.power(&exponents)?)?;
        let mut axes = vec![0i32; pairs as usize];
        let mut offset = section[0].max(0);
        for (axis, &len) in section.iter().enumerate().skip(1) {
            for i in offset..(offset + len).min(pairs) {
                axes[i as usize] = axis.min(2) as i32;
            }
            offset += len;
        }
        Ok(Qwen2_5VlModel {
            io,
            layers,
            norm,
            vision,
            rope: Rope {
                dims: head_dim,
                traditional: false,
                base,
                scale: 1.0,
                freqs: None,
                mscale: 1.0,
                dynamic: None,
            },
            inv_freq,
            axis_of_pair: Array::from_slice(&axes, &[pairs])?,
            tokens: ImageTokens {
                image: args.image_token_id,
                video: args.video_token_id,
                vision_start: args.vision_start_token_id,
            },
        })
    }

    /// The layers over embeddings `h` (`[B, L, hidden]`), rotated as `rot`.
    fn layers(&self, mut h: Array, caches: &mut dyn Caches, rot: Rotation) -> Result<Array> {
        check_caches(caches, self.layers.len())?;
        for (i, layer) in self.layers.iter().enumerate() {
            let x = layer.input_layernorm.forward(&h)?;
            let a = layer.attn.forward(&x, caches.layer(i), rot, &self.rope)?;
            h = h.add(&a)?;
            h = layer
                .mlp
                .forward_normed_add(&h, &layer.post_attention_layernorm, &h)?;
        }
        self.norm.forward(&h)
    }
}

/// `[-x2, x1]` of the halves of the last axis.
fn rotate_half(x: &Array) -> Result<Array> {
    let d = x.dim(-1)?;
    let axis = x.ndim() as i32 - 1;
    let (a, b) = (x.slice_axis(axis, 0, d / 2)?, x.slice_axis(axis, d / 2, d)?);
    Ok(mlx::concatenate(&[&b.negative()?, &a], axis)?)
}

impl Attention {
    fn forward(
        &self,
        x: &Array,
        cache: &mut dyn LayerCache,
        rot: Rotation,
        rope: &Rope,
    ) -> Result<Array> {
        let shape = x.shape();
        let (b, l) = (shape[0], shape[1]);
        let [q, k, v]: [Array; 3] =
            self.qkv.forward(x)?.try_into().map_err(|_| {
                EngineError::Weights("the attention's q/k/v group lost a part".into())
            })?;
        let heads = |t: &Array, n: i32| -> Result<Array> {
            Ok(t.reshape(&[b, l, n, -1])?.transpose(&[0, 2, 1, 3])?)
        };
        let (q, k, v) = (
            heads(&q, self.n_heads)?,
            heads(&k, self.n_kv_heads)?,
            heads(&v, self.n_kv_heads)?,
        );
        let (q, k, mask) = match rot {
            Rotation::At(Positions::Sequence { offset }) => (
                rope.apply(&q, offset)?,
                rope.apply(&k, offset)?,
                if l > 1 {
                    AttentionMask::Causal
                } else {
                    AttentionMask::None
                },
            ),
            Rotation::At(Positions::Rows { mask: None, .. }) if l != 1 => {
                return Err(EngineError::InvalidRequest(format!(
                    "a batch step of {l} tokens per row needs its mask"
                )));
            }
            Rotation::At(Positions::Rows { offsets, mask, .. }) => (
                rope.apply_rows(&q, offsets)?,
                rope.apply_rows(&k, offsets)?,
                mask.map_or(AttentionMask::None, AttentionMask::Array),
            ),
            Rotation::Angles { cos, sin } => {
                let turn = |t: &Array| -> Result<Array> {
                    Ok(t.multiply(cos)?.add(&rotate_half(t)?.multiply(sin)?)?)
                };
                let mask = if l > 1 {
                    AttentionMask::Causal
                } else {
                    AttentionMask::None
                };
                (turn(&q)?, turn(&k)?, mask)
            }
        };
        // Never quantized (`kv_quantizable` says no).
        let (k, v) = cache.update_and_fetch(&k, &v)?;
        let (k, v) = (k.to_full()?, v.to_full()?);
        let out = scaled_dot_product_attention(&q, &k, &v, self.scale, mask)?;
        let out = out.transpose(&[0, 2, 1, 3])?.reshape(&[b, l, -1])?;
        self.o_proj.forward(&out)
    }
}

impl LanguageModel for Qwen2_5VlModel {
    fn cache_kinds(&self) -> Vec<CacheKind> {
        vec![CacheKind::Kv; self.layers.len()]
    }

    fn hidden(&self, tokens: &Array, caches: &mut dyn Caches, at: Positions) -> Result<Array> {
        self.layers(self.io.embed(tokens)?, caches, Rotation::At(at))
    }

    fn logits(&self, hidden: &Array) -> Result<Array> {
        self.io.logits(hidden)
    }

    fn matrices_mut(&mut self) -> Vec<&mut Matrix> {
        let mut out = self.io.matrices_mut();
        for layer in &mut self.layers {
            out.extend(layer.attn.qkv.matrices_mut());
            out.push(&mut layer.attn.o_proj.weight);
            out.extend(layer.mlp.matrices_mut());
        }
        out.extend(self.vision.matrices_mut());
        out
    }

    fn dtype(&self) -> Dtype {
        self.norm.weight.dtype()
    }

    /// Its attention (M-RoPE positions) reads the cache at full precision.
    fn kv_quantizable(&self) -> bool {
        false
    }

    fn vision(&self) -> Option<&dyn VisionLanguage> {
        Some(self)
    }
}

impl VisionLanguage for Qwen2_5VlModel {
    fn image_tokens(&self) -> ImageTokens {
        self.tokens
    }

    fn merge_size(&self) -> usize {
        self.vision.merge_size() as usize
    }

    fn patch_width(&self) -> usize {
        self.vision.patch_width() as usize
    }

    fn encode_images(&self, pixel_values: &Array, grids: &[[i32; 3]]) -> Result<Array> {
        self.vision.forward(pixel_values, grids)
    }

    fn embed(&self, tokens: &Array) -> Result<Array> {
        self.io.embed(tokens)
    }

    fn hidden_mrope(
        &self,
        embeds: &Array,
        caches: &mut dyn Caches,
        axes: &[Vec<i32>; 3],
    ) -> Result<Array> {
        let l = axes[0].len() as i32;
        let flat: Vec<i32> = axes.iter().flatten().copied().collect();
        let positions = Array::from_slice(&flat, &[3, l])?;
        // mlx-vlm's `_selected_mrope_freqs`: each pair's position from its
        // axis, times its speed, in f32.
        let angles = positions
            .take(&self.axis_of_pair, 0)?
            .transpose(&[1, 0])?
            .astype(Dtype::F32)?
            .multiply(&self.inv_freq)?;
        let angles = mlx::concatenate(&[&angles, &angles], -1)?.reshape(&[1, 1, l, -1])?;
        let dtype = self.dtype();
        let (cos, sin) = (angles.cos()?.astype(dtype)?, angles.sin()?.astype(dtype)?);
        self.layers(
            embeds.clone(),
            caches,
            Rotation::Angles {
                cos: &cos,
                sin: &sin,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::hf_name;

    #[test]
    fn mlx_vlm_and_transformers_names_become_hugging_face_names() {
        let cases = [
            (
                "vision_tower.blocks.0.attn.qkv.weight",
                Some("visual.blocks.0.attn.qkv.weight"),
            ),
            (
                "language_model.model.norm.weight",
                Some("model.norm.weight"),
            ),
            ("language_model.lm_head", Some("lm_head")),
            (
                "model.language_model.layers.1.mlp",
                Some("model.layers.1.mlp"),
            ),
            (
                "model.visual.merger.ln_q.weight",
                Some("visual.merger.ln_q.weight"),
            ),
            ("model.layers.0.self_attn.q_proj.weight", None),
            ("vision_towers.x", None),
        ];
        for (from, to) in cases {
            assert_eq!(hf_name(from).as_deref(), to, "{from}");
        }
    }
}
