//! Qwen2.5-VL's vision tower, as mlx-vlm's `qwen2_5_vl/vision.py` computes
//! it: patches (flattened `C × T × P × P` pixel blocks) embedded by a
//! linear map (the checkpoint's Conv3d of stride equal to its kernel),
//! blocks of RMSNorm, attention with 2D rotary embeddings (each patch's
//! row and column) and a SwiGLU MLP, most of them attending within windows
//! of merged patches and the blocks the config names over the whole
//! image, then the merger: RMSNorm, each `merge × merge` block of patches
//! concatenated, and a GELU MLP into the language model's width.
//!
//! The patches are reordered window by window before the blocks (so each
//! window is one contiguous run) and the merger's output back to the
//! image's order, as the reference does; attention runs per window (per
//! image in the full blocks), one product each.

use mlx::fast::{AttentionMask, scaled_dot_product_attention};
use mlx::{Array, Dtype};
use serde::Deserialize;

use super::config::ModelConfig;
use super::mlp::{Activation, Mlp};
use super::nn::{Linear, LinearGroup, Matrix, RmsNorm};
use super::weights::Weights;
use crate::error::{EngineError, Result};

/// `vision_config`, with mlx-vlm's defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct VisionArgs {
    #[serde(default = "d_depth")]
    pub depth: i32,
    #[serde(default = "d_hidden")]
    pub hidden_size: i32,
    #[serde(default = "d_intermediate")]
    pub intermediate_size: i32,
    #[serde(default = "d_out")]
    pub out_hidden_size: i32,
    #[serde(default = "d_heads")]
    pub num_heads: i32,
    #[serde(default = "d_patch")]
    pub patch_size: i32,
    #[serde(default = "d_two")]
    pub spatial_merge_size: i32,
    #[serde(default = "d_two")]
    pub temporal_patch_size: i32,
    #[serde(default = "d_window")]
    pub window_size: i32,
    #[serde(default = "d_full")]
    pub fullatt_block_indexes: Vec<i32>,
    #[serde(default = "d_channels")]
    pub in_channels: i32,
}

fn d_depth() -> i32 {
    32
}
fn d_hidden() -> i32 {
    1280
}
fn d_intermediate() -> i32 {
    3420
}
fn d_out() -> i32 {
    1536
}
fn d_heads() -> i32 {
    16
}
fn d_patch() -> i32 {
    14
}
fn d_two() -> i32 {
    2
}
fn d_window() -> i32 {
    112
}
fn d_full() -> Vec<i32> {
    vec![7, 15, 23, 31]
}
fn d_channels() -> i32 {
    3
}

/// Norms of the tower (mlx-vlm's `eps=1e-6`).
const EPS: f32 = 1e-6;

struct Block {
    norm1: RmsNorm,
    norm2: RmsNorm,
    qkv: Linear,
    proj: Linear,
    mlp: Mlp,
}

/// A loaded vision tower.
pub struct VisionTower {
    args: VisionArgs,
    /// The patch embedding as `[hidden, C·T·P·P]`, in the pixel values'
    /// order.
    patch_embed: Array,
    blocks: Vec<Block>,
    ln_q: RmsNorm,
    merger_fc1: Linear,
    merger_fc2: Linear,
    /// The `head_dim / 4` rotation speeds of each axis (θ 10,000); the
    /// angle table of positions up to the largest grid side is made per
    /// call from them.
    inv_freq: Array,
}

/// Where each patch goes: the windows of one call.
struct Layout {
    /// Patch order inside the blocks (window by window).
    order: Vec<i32>,
    /// The merger's output rows back in the image order.
    inverse: Vec<i32>,
    /// Patch counts of each window, and of each image frame.
    windows: Vec<i32>,
    frames: Vec<i32>,
    /// Each patch's (row, column), in the image order.
    positions: Vec<i32>,
}

impl VisionTower {
    /// Loads `{prefix}.patch_embed`, `.blocks.N`, `.merger`.
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        config: &ModelConfig,
        args: VisionArgs,
        text_hidden: i32,
    ) -> Result<VisionTower> {
        let bad = |why: String| Err(EngineError::Config(format!("vision_config: {why}")));
        let (d, heads, m) = (args.hidden_size, args.num_heads, args.spatial_merge_size);
        if heads <= 0 || d % heads != 0 || (d / heads) % 4 != 0 {
            return bad(format!(
                "hidden_size {d} over {heads} heads is no head size divisible by 4"
            ));
        }
        if m <= 0 || args.patch_size <= 0 || args.temporal_patch_size <= 0 {
            return bad("sizes must be positive".into());
        }
        if args.window_size / m / args.patch_size <= 0 {
            return bad(format!(
                "window_size {} is smaller than one merged patch",
                args.window_size
            ));
        }
        if args.out_hidden_size != text_hidden {
            return bad(format!(
                "out_hidden_size {} differs from the language model's hidden_size {text_hidden}",
                args.out_hidden_size
            ));
        }
        let p = |name: &str| format!("{prefix}.{name}");
        let (c, t, ps) = (args.in_channels, args.temporal_patch_size, args.patch_size);
        let name = p("patch_embed.proj.weight");
        let conv = w.take(&name)?;
        // PyTorch's Conv3d layout [O, C, T, P, P] is the pixel values'
        // order already; MLX's [O, T, P, P, C] (an mlx-vlm checkpoint) is
        // turned back to it.
        let patch_embed = if conv.shape() == [d, c, t, ps, ps] {
            conv.reshape(&[d, -1])?
        } else if conv.shape() == [d, t, ps, ps, c] {
            conv.transpose(&[0, 4, 1, 2, 3])?.reshape(&[d, -1])?
        } else {
            return Err(EngineError::Weights(format!(
                "tensor {name} has shape {:?}, expected [{d}, {c}, {t}, {ps}, {ps}]",
                conv.shape()
            )));
        };
        let hidden = args.intermediate_size;
        let blocks = (0..args.depth)
            .map(|i| {
                let b = |name: &str| p(&format!("blocks.{i}.{name}"));
                let linear = |w: &mut Weights, name: &str, shape| {
                    Linear::load_shaped(w, &b(name), config, true, shape)
                };
                Ok(Block {
                    norm1: RmsNorm::load_shaped(w, &b("norm1"), EPS, d)?,
                    norm2: RmsNorm::load_shaped(w, &b("norm2"), EPS, d)?,
                    qkv: linear(w, "attn.qkv", [3 * d, d])?,
                    proj: linear(w, "attn.proj", [d, d])?,
                    mlp: Mlp {
                        gate_up: LinearGroup::new(vec![
                            linear(w, "mlp.gate_proj", [hidden, d])?,
                            linear(w, "mlp.up_proj", [hidden, d])?,
                        ])?,
                        down_proj: linear(w, "mlp.down_proj", [d, hidden])?,
                        activation: Activation::Silu,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let merged = d * m * m;
        let dim = (d / heads / 2) as f32;
        let exponents =
            mlx::arange(0.0, f64::from(dim), 2.0, Dtype::F32)?.divide(&Array::scalar(dim)?)?;
        let inv_freq =
            Array::scalar(1.0f32)?.divide(&Array::scalar(10_000.0f32)?.power(&exponents)?)?;
        Ok(VisionTower {
            patch_embed,
            blocks,
            ln_q: RmsNorm::load_shaped(w, &p("merger.ln_q"), EPS, d)?,
            merger_fc1: Linear::load_shaped(w, &p("merger.mlp.0"), config, true, [merged, merged])?,
            merger_fc2: Linear::load_shaped(
                w,
                &p("merger.mlp.2"),
                config,
                true,
                [args.out_hidden_size, merged],
            )?,
            inv_freq,
            args,
        })
    }

    /// The weight matrices.
    pub fn matrices_mut(&mut self) -> Vec<&mut Matrix> {
        let mut out = Vec::new();
        for b in &mut self.blocks {
            out.push(&mut b.qkv.weight);
            out.push(&mut b.proj.weight);
            out.extend(b.mlp.matrices_mut());
        }
        out.push(&mut self.merger_fc1.weight);
        out.push(&mut self.merger_fc2.weight);
        out
    }

    /// Values per patch the tower takes.
    pub fn patch_width(&self) -> i32 {
        let a = &self.args;
        a.in_channels * a.temporal_patch_size * a.patch_size * a.patch_size
    }

    /// Patches merged into one token per side.
    pub fn merge_size(&self) -> i32 {
        self.args.spatial_merge_size
    }

    /// The windows, orders and positions of images of `grids`, as
    /// mlx-vlm's `get_window_index` and `rot_pos_emb` make them.
    fn layout(&self, grids: &[[i32; 3]]) -> Result<Layout> {
        let m = self.args.spatial_merge_size;
        let unit = m * m;
        let win = self.args.window_size / m / self.args.patch_size;
        let mut merged_order = Vec::new();
        let mut windows = Vec::new();
        let mut frames = Vec::new();
        let mut positions = Vec::new();
        let mut base = 0;
        for &[t, h, w] in grids {
            if t <= 0 || h <= 0 || w <= 0 || h % m != 0 || w % m != 0 {
                return Err(EngineError::InvalidRequest(format!(
                    "image grid {t}×{h}×{w} is not whole merged patches of {m}"
                )));
            }
            let (lh, lw) = (h / m, w / m);
            for ti in 0..t {
                frames.push(h * w);
                for wy in 0..(lh + win - 1) / win {
                    for wx in 0..(lw + win - 1) / win {
                        let mut count = 0;
                        for y in wy * win..((wy + 1) * win).min(lh) {
                            for x in wx * win..((wx + 1) * win).min(lw) {
                                merged_order.push(base + ti * lh * lw + y * lw + x);
                                count += 1;
                            }
                        }
                        windows.push(count * unit);
                    }
                }
                // Patches in the image order are merge block by merge block.
                for by in 0..lh {
                    for bx in 0..lw {
                        for my in 0..m {
                            for mx in 0..m {
                                positions.extend([by * m + my, bx * m + mx]);
                            }
                        }
                    }
                }
            }
            base += t * lh * lw;
        }
        let order = merged_order
            .iter()
            .flat_map(|&i| (0..unit).map(move |u| i * unit + u))
            .collect();
        let mut inverse = vec![0; merged_order.len()];
        for (at, &i) in merged_order.iter().enumerate() {
            inverse[i as usize] = at as i32;
        }
        Ok(Layout {
            order,
            inverse,
            windows,
            frames,
            positions,
        })
    }

    /// Embeddings `[merged patches, out_hidden_size]` of the patches
    /// `pixel_values` (`[patches, C·T·P·P]`) of images of `grids`
    /// (`[t, h, w]` each, in patches), in the images' order.
    pub fn forward(&self, pixel_values: &Array, grids: &[[i32; 3]]) -> Result<Array> {
        let layout = self.layout(grids)?;
        let patches = layout.order.len() as i32;
        let width = self.patch_width();
        if pixel_values.shape() != [patches, width] {
            return Err(EngineError::InvalidRequest(format!(
                "pixel values of shape {:?} for {patches} patches of {width} values",
                pixel_values.shape()
            )));
        }
        let dtype = self.patch_embed.dtype();
        let x = pixel_values.astype(dtype)?.matmul(&self.patch_embed.t()?)?;
        let order = Array::from_slice(&layout.order, &[patches])?;
        let mut x = x.take(&order, 0)?;

        // Rotary angles of each patch's row and column, window-ordered.
        let longest = grids.iter().map(|g| g[1].max(g[2])).max().unwrap_or(1);
        let seq = mlx::arange(0.0, f64::from(longest), 1.0, Dtype::F32)?;
        let table = seq
            .reshape(&[-1, 1])?
            .multiply(&self.inv_freq.reshape(&[1, -1])?)?;
        let pos = Array::from_slice(&layout.positions, &[patches, 2])?;
        let angles = table
            .take(&pos, 0)?
            .reshape(&[patches, -1])?
            .take(&order, 0)?;
        let angles = mlx::concatenate(&[&angles, &angles], -1)?.expand_dims(1)?;
        let (cos, sin) = (angles.cos()?.astype(dtype)?, angles.sin()?.astype(dtype)?);

        let split = |sizes: &[i32]| -> Vec<i32> {
            let mut at = 0;
            let mut cuts = Vec::new();
            for &s in &sizes[..sizes.len().saturating_sub(1)] {
                at += s;
                cuts.push(at);
            }
            cuts
        };
        let window_cuts = split(&layout.windows);
        let frame_cuts = split(&layout.frames);
        for (i, block) in self.blocks.iter().enumerate() {
            let full = self.args.fullatt_block_indexes.contains(&(i as i32));
            let cuts = if full { &frame_cuts } else { &window_cuts };
            let attn = self.attention(block, &block.norm1.forward(&x)?, &cos, &sin, cuts)?;
            x = x.add(&attn)?;
            x = block.mlp.forward_normed_add(&x, &block.norm2, &x)?;
        }
        let unit = self.args.spatial_merge_size * self.args.spatial_merge_size;
        let merged = self.ln_q.forward(&x)?.reshape(&[patches / unit, -1])?;
        let merged = self.merger_fc1.forward(&merged)?.gelu()?;
        let merged = self.merger_fc2.forward(&merged)?;
        let inverse = Array::from_slice(&layout.inverse, &[patches / unit])?;
        Ok(merged.take(&inverse, 0)?)
    }

    /// One block's attention of `x` (`[S, D]`, normed), each run between
    /// `cuts` attending only within itself.
    fn attention(
        &self,
        block: &Block,
        x: &Array,
        cos: &Array,
        sin: &Array,
        cuts: &[i32],
    ) -> Result<Array> {
        let s = x.dim(0)?;
        let heads = self.args.num_heads;
        let qkv = block.qkv.forward(x)?.reshape(&[s, 3, heads, -1])?;
        let part = |i: i32| -> Result<Array> { Ok(qkv.slice_axis(1, i, i + 1)?.squeeze(1)?) };
        let rotate = |t: &Array| -> Result<Array> {
            let half = t.dim(-1)? / 2;
            let (a, b) = (t.slice_axis(2, 0, half)?, t.slice_axis(2, half, 2 * half)?);
            let turned = mlx::concatenate(&[&b.negative()?, &a], -1)?;
            let out = t.multiply(cos)?.add(&turned.multiply(sin)?)?;
            Ok(out.transpose(&[1, 0, 2])?.expand_dims(0)?)
        };
        let (q, k) = (rotate(&part(0)?)?, rotate(&part(1)?)?);
        let v = part(2)?.transpose(&[1, 0, 2])?.expand_dims(0)?;
        let scale = (f64::from(self.args.hidden_size / heads)).powf(-0.5) as f32;
        let (qs, ks, vs) = (q.split(cuts, 2)?, k.split(cuts, 2)?, v.split(cuts, 2)?);
        let outs = qs
            .iter()
            .zip(&ks)
            .zip(&vs)
            .map(|((q, k), v)| scaled_dot_product_attention(q, k, v, scale, AttentionMask::None))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let refs: Vec<&Array> = outs.iter().collect();
        let out = mlx::concatenate(&refs, 2)?
            .transpose(&[0, 2, 1, 3])?
            .reshape(&[s, -1])?;
        block.proj.forward(&out)
    }
}
