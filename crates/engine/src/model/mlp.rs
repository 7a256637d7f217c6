//! The gated feed-forward block (SwiGLU), as mlx-lm's `MLP` classes in
//! `llama.py` / `qwen3.py` compute it: `down(silu(gate(x)) * up(x))` (or
//! with the tanh-approximated GELU in place of SiLU, Gemma's), with
//! gate and up as one product when they are stored alike, and the norm
//! before it and the residual after it in the products' kernels where the
//! backend has them.

use super::config::ModelConfig;
use super::nn::{Linear, LinearGroup, Matrix, RmsNorm};
use super::weights::Weights;
use crate::error::{EngineError, Result};
use mlx::Array;

/// The gated feed-forward block: `down(silu(gate(x)) * up(x))`, with
/// gate and up as one product when they are stored alike.
#[derive(Debug, Clone)]
pub struct Mlp {
    pub gate_up: LinearGroup,
    pub down_proj: Linear,
    pub activation: Activation,
}

/// The activation of the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `silu` (SwiGLU).
    Silu,
    /// GELU's tanh approximation (`nn.gelu_approx`, GeGLU).
    GeluApprox,
}

impl Mlp {
    /// Loads `{prefix}.{gate,up,down}_proj` of `config`'s sizes.
    pub fn load(w: &mut Weights, prefix: &str, config: &ModelConfig, bias: bool) -> Result<Mlp> {
        Mlp::load_sized(w, prefix, config, bias, config.intermediate_size)
    }

    /// Loads an MLP of `hidden` intermediate features (a shared expert's
    /// may differ from the config's `intermediate_size`).
    pub fn load_sized(
        w: &mut Weights,
        prefix: &str,
        config: &ModelConfig,
        bias: bool,
        hidden: i32,
    ) -> Result<Mlp> {
        let p = |name: &str| format!("{prefix}.{name}");
        let dim = config.hidden_size;
        let gate = Linear::load_shaped(w, &p("gate_proj"), config, bias, [hidden, dim])?;
        let up = Linear::load_shaped(w, &p("up_proj"), config, bias, [hidden, dim])?;
        Ok(Mlp {
            gate_up: LinearGroup::new(vec![gate, up])?,
            down_proj: Linear::load_shaped(w, &p("down_proj"), config, bias, [dim, hidden])?,
            activation: Activation::Silu,
        })
    }

    /// `forward(norm(x)) + residual`, with the norm, the activation and the
    /// residual in the products' kernels where they can be.
    pub fn forward_normed_add(&self, x: &Array, norm: &RmsNorm, residual: &Array) -> Result<Array> {
        let fused = match self.activation {
            Activation::Silu => self.gate_up.swiglu_normed(x, norm)?,
            Activation::GeluApprox => None,
        };
        let act = match fused {
            Some(act) => act,
            None => self.activation(&norm.forward(x)?)?,
        };
        self.down_proj.forward_add(&act, residual)
    }

    /// The weight matrices.
    pub fn matrices_mut(&mut self) -> Vec<&mut Matrix> {
        let mut out: Vec<&mut Matrix> = self.gate_up.matrices_mut().collect();
        out.push(&mut self.down_proj.weight);
        out
    }

    /// `down(silu(gate(x)) * up(x))`.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        self.down_proj.forward(&self.activation(x)?)
    }

    /// `silu(gate(x)) * up(x)` (or the GELU of the gate).
    fn activation(&self, x: &Array) -> Result<Array> {
        let [gate, up]: [Array; 2] = self
            .gate_up
            .forward(x)?
            .try_into()
            .map_err(|_| EngineError::Weights("the MLP's gate/up group lost a part".into()))?;
        Ok(match self.activation {
            // One compiled kernel for silu(gate) * up, as mlx-lm's `swiglu`.
            Activation::Silu => mlx::fast::swiglu(&gate, &up)?,
            Activation::GeluApprox => gate.gelu_approx()?.multiply(&up)?,
        })
    }
}
