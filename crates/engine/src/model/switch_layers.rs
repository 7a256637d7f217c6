//! The experts of a Mixture-of-Experts layer, as mlx-lm's
//! `mlx_lm/models/switch_layers.py` computes them: every expert's
//! projection is one matrix of a stack `[E, out, in]` (dense, or
//! affine-quantized with per-layer parameters), and a token's rows are
//! multiplied by the matrices of the experts it was routed to with MLX's
//! gathered products (`gather_mm` / `gather_qmm`), without gathering the
//! weights. With many rows (a prefill) the rows are first sorted by
//! expert, so each expert's matrix is read once for all its rows, and put
//! back in order afterwards, as mlx-lm does at 64 or more routed rows.
//!
//! Stacks load by their Hugging Face names after sanitizing, e.g.
//! `model.layers.N.mlp.switch_mlp.gate_proj.weight` (`.scales`, `.biases`
//! when quantized).

use mlx::{Array, Gather, QuantizedWeight};

use super::config::ModelConfig;
use super::nn::Matrix;
use super::weights::Weights;
use crate::error::{EngineError, Result};

/// Routed rows from which the rows are sorted by expert (mlx-lm's
/// `indices.size >= 64`).
const SORT_FROM: usize = 64;

/// One projection of every expert: `y = x W[e]ᵀ (+ b[e])` for the expert
/// `e` a row is routed to (mlx-lm's `SwitchLinear` /
/// `QuantizedSwitchLinear`).
#[derive(Debug, Clone)]
pub struct SwitchLinear {
    /// `[E, out, in]`.
    weight: Matrix,
    /// `[E, out]` (gpt-oss's experts).
    bias: Option<Array>,
}

impl SwitchLinear {
    /// Loads `{prefix}.weight` (+ `.scales` / `.biases` when quantized) and
    /// checks it is `[experts, out, in]`.
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        config: &ModelConfig,
        shape: [i32; 3],
    ) -> Result<SwitchLinear> {
        let weight = Matrix::load(w, prefix, config)?;
        let layer = SwitchLinear { weight, bias: None };
        let got = layer.shape()?;
        if got != shape {
            return Err(EngineError::Weights(format!(
                "{prefix}.weight is [experts, out, in] = {got:?}, expected {shape:?}"
            )));
        }
        Ok(layer)
    }

    /// As [`SwitchLinear::load`], with the bias `{prefix}.bias` `[E, out]`.
    pub fn load_biased(
        w: &mut Weights,
        prefix: &str,
        config: &ModelConfig,
        shape: [i32; 3],
    ) -> Result<SwitchLinear> {
        let mut layer = SwitchLinear::load(w, prefix, config, shape)?;
        layer.bias = Some(w.take_shaped(&format!("{prefix}.bias"), &shape[..2])?);
        Ok(layer)
    }

    /// `[experts, out, in]` of the (dequantized) stack.
    pub fn shape(&self) -> Result<[i32; 3]> {
        let (w, bits) = match &self.weight {
            Matrix::Dense(w) => (w, 32),
            Matrix::Quantized(q) => (&q.weight, q.bits),
        };
        let s = w.shape();
        let [e, out, packed] = s[..] else {
            return Err(EngineError::Weights(format!(
                "an expert stack has 3 dimensions, this one {s:?}"
            )));
        };
        Ok([e, out, packed * 32 / bits])
    }

    /// `x[i] @ W[indices[i]]ᵀ`: `x` `[..., 1, in]` against `indices`
    /// broadcast with its batch dimensions, giving `[..indices, 1, out]`;
    /// `sorted` when the indices ascend.
    pub fn forward(&self, x: &Array, indices: &Array, sorted: bool) -> Result<Array> {
        let gather = Gather {
            lhs: None,
            rhs: Some(indices),
            sorted,
        };
        let y = match &self.weight {
            Matrix::Dense(w) => mlx::gather_mm(x, &w.swapaxes(-1, -2)?, gather)?,
            Matrix::Quantized(q) => q.gather_matmul(x, gather, true)?,
        };
        Ok(match &self.bias {
            // Each row's expert's bias, `[..indices, 1, out]`.
            Some(b) => y.add(&b.take(indices, 0)?.expand_dims(-2)?)?,
            None => y,
        })
    }

    /// The stack's storage.
    pub fn matrix_mut(&mut self) -> &mut Matrix {
        &mut self.weight
    }

    /// One layer of `a`'s and `b`'s output rows side by side, when they
    /// are stored alike (dense of one dtype, or quantized with the same
    /// parameters): each output is computed from the same numbers.
    fn concat_outputs(a: &SwitchLinear, b: &SwitchLinear) -> Result<Option<SwitchLinear>> {
        if a.bias.is_some() || b.bias.is_some() {
            return Ok(None);
        }
        let cat = |x: &Array, y: &Array| mlx::concatenate(&[x, y], 1);
        let weight = match (&a.weight, &b.weight) {
            (Matrix::Dense(x), Matrix::Dense(y)) if x.dtype() == y.dtype() => {
                Matrix::Dense(cat(x, y)?)
            }
            (Matrix::Quantized(x), Matrix::Quantized(y)) if x.stored_like(y) => {
                let biases = match (&x.biases, &y.biases) {
                    (Some(xb), Some(yb)) => Some(cat(xb, yb)?),
                    _ => None,
                };
                Matrix::Quantized(QuantizedWeight {
                    weight: cat(&x.weight, &y.weight)?,
                    scales: cat(&x.scales, &y.scales)?,
                    biases,
                    ..x.clone()
                })
            }
            _ => return Ok(None),
        };
        mlx::eval(&weight.arrays())?;
        Ok(Some(SwitchLinear { weight, bias: None }))
    }
}

/// The gate and up projections of the experts: one gathered product over
/// a stack of both when they are stored alike (half the products of a
/// step), else two.
#[derive(Debug, Clone)]
enum GateUp {
    /// `[E, 2 * hidden, in]`: the gate's rows, then the up projection's.
    Joined { layer: SwitchLinear, hidden: i32 },
    Separate {
        gate: SwitchLinear,
        up: SwitchLinear,
    },
}

/// The experts' gated feed-forward block: `down(silu(gate(x)) * up(x))`
/// per routed expert (mlx-lm's `SwitchGLU`), or with gpt-oss's gate.
#[derive(Debug, Clone)]
pub struct SwitchGlu {
    gate_up: GateUp,
    down_proj: SwitchLinear,
    activation: SwitchActivation,
}

/// How a routed expert's gate and up projections combine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SwitchActivation {
    /// `silu(gate) * up`.
    Swiglu,
    /// gpt-oss's (mlx-lm's `swiglu_oai`): the gate clipped from above at
    /// `limit`, the up projection to `[-limit, limit]`, then
    /// `(up + 1) * gate * sigmoid(alpha * gate)`.
    SwigluOai { alpha: f32, limit: f32 },
}

impl SwitchGlu {
    /// Loads `{prefix}.{gate,up,down}_proj` for `experts` experts of width
    /// `hidden` over a model of width `dim`.
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        config: &ModelConfig,
        experts: i32,
        dim: i32,
        hidden: i32,
    ) -> Result<SwitchGlu> {
        let p = |name: &str| format!("{prefix}.{name}");
        let gate = SwitchLinear::load(w, &p("gate_proj"), config, [experts, hidden, dim])?;
        let up = SwitchLinear::load(w, &p("up_proj"), config, [experts, hidden, dim])?;
        let down_proj = SwitchLinear::load(w, &p("down_proj"), config, [experts, dim, hidden])?;
        SwitchGlu::new(gate, up, down_proj, hidden, SwitchActivation::Swiglu)
    }

    /// gpt-oss's experts: biased projections and its activation.
    pub fn load_biased(
        w: &mut Weights,
        prefix: &str,
        config: &ModelConfig,
        [experts, dim, hidden]: [i32; 3],
        activation: SwitchActivation,
    ) -> Result<SwitchGlu> {
        let p = |name: &str| format!("{prefix}.{name}");
        let gate = SwitchLinear::load_biased(w, &p("gate_proj"), config, [experts, hidden, dim])?;
        let up = SwitchLinear::load_biased(w, &p("up_proj"), config, [experts, hidden, dim])?;
        let down_proj =
            SwitchLinear::load_biased(w, &p("down_proj"), config, [experts, dim, hidden])?;
        SwitchGlu::new(gate, up, down_proj, hidden, activation)
    }

    fn new(
        gate: SwitchLinear,
        up: SwitchLinear,
        down_proj: SwitchLinear,
        hidden: i32,
        activation: SwitchActivation,
    ) -> Result<SwitchGlu> {
        let gate_up = match SwitchLinear::concat_outputs(&gate, &up)? {
            Some(layer) => GateUp::Joined { layer, hidden },
            None => GateUp::Separate { gate, up },
        };
        Ok(SwitchGlu {
            gate_up,
            down_proj,
            activation,
        })
    }

    /// The output of each of a token's experts: `x` `[..., dim]` and
    /// `indices` `[..., k]` (uint32) give `[..., k, dim]`.
    pub fn forward(&self, x: &Array, indices: &Array) -> Result<Array> {
        // `[..., 1, 1, dim]`: one row per token, broadcast over its experts.
        let x = x.expand_dims(-2)?.expand_dims(-3)?;
        if indices.size() < SORT_FROM {
            let y = self.experts(&x, indices, false)?;
            return Ok(y.squeeze(-2)?);
        }
        // Sorted by expert: row `i` of the sorted order is token
        // `order[i] / k` for expert `indices.flat[order[i]]`.
        let shape = indices.shape();
        let k = *shape
            .last()
            .ok_or_else(|| EngineError::InvalidRequest("expert indices without an axis".into()))?;
        let flat = indices.reshape(&[-1])?;
        let order = flat.argsort(0)?;
        let inv_order = order.argsort(0)?;
        let dim = x.dim(-1)?;
        let rows = x.reshape(&[-1, 1, dim])?;
        let token = order.floor_divide(&Array::scalar(k as u32)?)?;
        let y = self.experts(&rows.take(&token, 0)?, &flat.take(&order, 0)?, true)?;
        // Back to the routing's order: `[..indices, 1, dim]`.
        let y = y.take(&inv_order, 0)?;
        let mut unsorted = shape;
        unsorted.extend([1, dim]);
        Ok(y.reshape(&unsorted)?.squeeze(-2)?)
    }

    /// The experts' products for rows `x` `[.., 1, dim]` routed by `idx`.
    fn experts(&self, x: &Array, idx: &Array, sorted: bool) -> Result<Array> {
        let (gate, up) = match &self.gate_up {
            GateUp::Joined { layer, hidden } => {
                let both = layer.forward(x, idx, sorted)?;
                let axis = both.ndim() as i32 - 1;
                (
                    both.slice_axis(axis, 0, *hidden)?,
                    both.slice_axis(axis, *hidden, 2 * hidden)?,
                )
            }
            GateUp::Separate { gate, up } => {
                (gate.forward(x, idx, sorted)?, up.forward(x, idx, sorted)?)
            }
        };
        let act = match self.activation {
            SwitchActivation::Swiglu => mlx::fast::swiglu(&gate, &up)?,
            SwitchActivation::SwigluOai { alpha, limit } => {
                let lim = gate.scalar_like(limit)?;
                let gate = gate.minimum(&lim)?;
                let up = up.clip(Some(&lim.negative()?), Some(&lim))?;
                let glu = gate.multiply(&gate.multiply(&gate.scalar_like(alpha)?)?.sigmoid()?)?;
                up.add(&up.scalar_like(1.0)?)?.multiply(&glu)?
            }
        };
        self.down_proj.forward(&act, idx, sorted)
    }

    /// The expert stacks (one for gate and up when joined).
    pub fn matrices_mut(&mut self) -> Vec<&mut Matrix> {
        let mut out = match &mut self.gate_up {
            GateUp::Joined { layer, .. } => vec![layer.matrix_mut()],
            GateUp::Separate { gate, up } => vec![gate.matrix_mut(), up.matrix_mut()],
        };
        out.push(self.down_proj.matrix_mut());
        out
    }
}

/// Stacks a checkpoint's per-expert tensors into the stacks the experts
/// load: `{from}.{e}.{name}.{part}` for `e` in `0..experts` becomes
/// `{to}.{stacked}.{part}`, for each `(name, stacked)` pair and each of
/// `weight`, `scales`, `biases` the checkpoint has for expert 0 (mlx-lm's
/// `sanitize` of `qwen3_moe.py`, `mixtral.py`). Nothing happens when
/// expert 0 of the first pair is absent (the checkpoint is stacked
/// already); a missing expert is an error naming its tensor.
pub fn stack_experts(
    w: &mut Weights,
    from: &str,
    to: &str,
    names: &[(&str, &str)],
    experts: i32,
) -> Result<()> {
    for (name, stacked) in names {
        for part in ["weight", "scales", "biases"] {
            if !w.contains(&format!("{from}.0.{name}.{part}")) {
                continue;
            }
            let each = (0..experts)
                .map(|e| w.take(&format!("{from}.{e}.{name}.{part}")))
                .collect::<Result<Vec<_>>>()?;
            let refs: Vec<&Array> = each.iter().collect();
            w.insert(format!("{to}.{stacked}.{part}"), mlx::stack(&refs, 0)?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use mlx::Dtype;

    use super::*;

    const E: i32 = 5;
    const DIM: i32 = 64;
    const HIDDEN: i32 = 32;

    fn normal(shape: &[i32], seed: u64) -> Array {
        let key = mlx::random::key(seed).unwrap();
        mlx::random::normal(shape, Dtype::F32, Some(&key)).unwrap()
    }

    fn config() -> ModelConfig {
        ModelConfig::from_json(
            r#"{"model_type": "qwen3_moe", "hidden_size": 64, "num_hidden_layers": 1,
                "intermediate_size": 128, "num_attention_heads": 4, "rms_norm_eps": 1e-6,
                "vocab_size": 10, "quantization": {"group_size": 32, "bits": 4}}"#,
        )
        .unwrap()
    }

    /// The three stacks, `[E, out, in]`, as (gate, up, down).
    fn stacks() -> [Array; 3] {
        [
            normal(&[E, HIDDEN, DIM], 1),
            normal(&[E, HIDDEN, DIM], 2),
            normal(&[E, DIM, HIDDEN], 3),
        ]
    }

    /// Tensors named as a checkpoint's, quantized where `quantized` says.
    fn weights(stacks: &[Array; 3], quantized: [bool; 3]) -> Weights {
        let mut tensors = HashMap::new();
        for ((name, w), q) in ["gate_proj", "up_proj", "down_proj"]
            .iter()
            .zip(stacks)
            .zip(quantized)
        {
            let p = format!("experts.{name}");
            if q {
                let qw = mlx::quantize(w, 32, 4).unwrap();
                tensors.insert(format!("{p}.weight"), qw.weight);
                tensors.insert(format!("{p}.scales"), qw.scales);
                tensors.insert(format!("{p}.biases"), qw.biases.unwrap());
            } else {
                tensors.insert(format!("{p}.weight"), w.clone());
            }
        }
        Weights::new(tensors)
    }

    /// What the stacks hold as loaded (dequantized where quantized).
    fn effective(stacks: &[Array; 3], quantized: [bool; 3]) -> Vec<Array> {
        stacks
            .iter()
            .zip(quantized)
            .map(|(w, q)| {
                if q {
                    mlx::quantize(w, 32, 4).unwrap().dequantize().unwrap()
                } else {
                    w.clone()
                }
            })
            .collect()
    }

    /// Token by token, expert by expert, with plain products:
    /// `down[e] (silu(gate[e] x) * up[e] x)`, `[tokens, k, dim]`.
    fn reference(x: &Array, idx: &[u32], k: usize, w: &[Array]) -> Vec<f32> {
        let mut out = Vec::new();
        for (i, &e) in idx.iter().enumerate() {
            let row = x.slice_axis(0, (i / k) as i32, (i / k) as i32 + 1).unwrap();
            let e = Array::from_slice(&[e], &[1]).unwrap();
            let m = |w: &Array| w.take(&e, 0).unwrap().squeeze(0).unwrap().t().unwrap();
            let gate = row.matmul(&m(&w[0])).unwrap();
            let up = row.matmul(&m(&w[1])).unwrap();
            let act = gate.silu().unwrap().multiply(&up).unwrap();
            out.extend(act.matmul(&m(&w[2])).unwrap().to_vec::<f32>().unwrap());
        }
        out
    }

    fn check(quantized: [bool; 3], joined: bool) {
        let stacks = stacks();
        let mut w = weights(&stacks, quantized);
        let glu = SwitchGlu::load(&mut w, "experts", &config(), E, DIM, HIDDEN).unwrap();
        w.finish().unwrap();
        assert_eq!(matches!(glu.gate_up, GateUp::Joined { .. }), joined);
        let want_w = effective(&stacks, quantized);
        // 3 tokens x 2 experts run as they come; 40 x 2 sorted by expert.
        for (tokens, seed) in [(3, 10), (40, 11)] {
            let k = 2;
            let idx: Vec<u32> = (0..tokens * k)
                .map(|i| ((i * 7 + i / 3) % E as usize) as u32)
                .collect();
            // Two distinct experts per token.
            let idx: Vec<u32> = idx
                .chunks(2)
                .flat_map(|c| {
                    [
                        c[0],
                        if c[1] == c[0] {
                            (c[0] + 1) % E as u32
                        } else {
                            c[1]
                        },
                    ]
                })
                .collect();
            let x = normal(&[tokens as i32, DIM], seed);
            let inds = Array::from_slice(&idx, &[1, tokens as i32, k as i32]).unwrap();
            let got = glu
                .forward(&x.reshape(&[1, tokens as i32, DIM]).unwrap(), &inds)
                .unwrap();
            assert_eq!(got.shape(), vec![1, tokens as i32, k as i32, DIM]);
            let got = got.to_vec::<f32>().unwrap();
            let want = reference(&x, &idx, k, &want_w);
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = got
                .iter()
                .zip(&want)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(worst / scale < 1e-5, "{tokens} tokens: {worst} of {scale}");
        }
    }

    #[test]
    fn dense_experts_match_per_token_products_sorted_or_not() {
        check([false; 3], true);
    }

    #[test]
    fn quantized_experts_match_their_dequantized_stacks() {
        check([true; 3], true);
    }

    #[test]
    fn experts_stored_differently_run_as_separate_products() {
        check([true, false, true], false);
    }

    #[test]
    fn densified_stacks_count_and_compute_as_the_quantized_ones() {
        // What the CPU backend does with a quantized f32 model at load.
        let stacks = stacks();
        let mut w = weights(&stacks, [true; 3]);
        let mut glu = SwitchGlu::load(&mut w, "experts", &config(), E, DIM, HIDDEN).unwrap();
        let x = normal(&[1, 4, DIM], 12);
        let inds = Array::from_slice(&[0u32, 4, 1, 2, 3, 0, 2, 1], &[1, 4, 2]).unwrap();
        let want = glu.forward(&x, &inds).unwrap().to_vec::<f32>().unwrap();
        let bytes: usize = glu
            .matrices_mut()
            .iter()
            .map(|m| m.dense_bytes(Dtype::F32).unwrap())
            .sum();
        assert_eq!(bytes, 3 * (E * HIDDEN * DIM) as usize * 4);
        for m in glu.matrices_mut() {
            m.densify(Dtype::F32).unwrap();
            assert!(matches!(m, Matrix::Dense(_)));
        }
        let got = glu.forward(&x, &inds).unwrap().to_vec::<f32>().unwrap();
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst / scale < 1e-5, "{worst} of {scale}");
    }

    #[test]
    fn a_stack_of_the_wrong_shape_is_refused_by_name() {
        let stacks = stacks();
        let mut w = weights(&stacks, [false; 3]);
        let err = SwitchGlu::load(&mut w, "experts", &config(), E + 1, DIM, HIDDEN)
            .unwrap_err()
            .to_string();
        assert!(err.contains("experts.gate_proj.weight"), "{err}");
        assert!(err.contains("[5, 32, 64]"), "{err}");
    }

    #[test]
    fn per_expert_tensors_are_stacked_and_a_missing_one_is_named() {
        let mut tensors = HashMap::new();
        for e in 0..3u32 {
            for (name, rows) in [("w1", 4), ("w2", 6)] {
                let v = vec![e as f32; rows * 2];
                let a = Array::from_slice(&v, &[rows as i32, 2]).unwrap();
                tensors.insert(format!("moe.experts.{e}.{name}.weight"), a);
            }
        }
        let mut w = Weights::new(tensors);
        let names = [("w1", "gate_proj"), ("w2", "down_proj")];
        stack_experts(&mut w, "moe.experts", "moe.switch_mlp", &names, 3).unwrap();
        let gate = w.take("moe.switch_mlp.gate_proj.weight").unwrap();
        assert_eq!(gate.shape(), vec![3, 4, 2]);
        let values = gate.to_vec::<f32>().unwrap();
        assert_eq!(values[..8], [0.0; 8]);
        assert_eq!(values[16..], [2.0; 8]);
        assert_eq!(
            w.take("moe.switch_mlp.down_proj.weight").unwrap().shape(),
            vec![3, 6, 2]
        );
        w.finish().unwrap();

        let mut tensors = HashMap::new();
        let a = Array::from_slice(&[1.0f32; 4], &[2, 2]).unwrap();
        tensors.insert("moe.experts.0.w1.weight".to_string(), a.clone());
        tensors.insert("moe.experts.2.w1.weight".to_string(), a);
        let mut w = Weights::new(tensors);
        let err = stack_experts(&mut w, "moe.experts", "moe.switch_mlp", &names, 3)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing tensor moe.experts.1.w1.weight"),
            "{err}"
        );
    }
}
