//! The sparse Mixture-of-Experts block, as mlx-lm's families compute it: a
//! router (`gate`, a linear layer to one logit per expert) picks each
//! token's top-k experts with `argpartition`, their weights come from a
//! softmax or a sigmoid of the logits, the experts run as one
//! [`SwitchGlu`], and their outputs are summed by weight; an optional
//! shared expert (a plain MLP every token takes, scaled by the sigmoid of
//! its own one-output gate) is added. The routing variants follow
//! `qwen3_moe.py` / `qwen3_next.py` (softmax, then top-k, optionally
//! renormalized: `norm_topk_prob`), `mixtral.py` (top-k of the logits, then
//! a softmax over those k) and `glm4_moe.py`'s `group_expert_select`
//! (sigmoid scores with a selection bias, optional expert groups and a
//! scaling factor). Which layers are sparse follows `decoder_sparse_step`
//! and `mlp_only_layers` (see [`is_sparse_layer`]).

use mlx::{Array, Dtype};

use super::config::ModelConfig;
use super::mlp::Mlp;
use super::nn::{Linear, Matrix, RmsNorm};
use super::switch_layers::{SwitchActivation, SwitchGlu};
use super::weights::Weights;
use crate::error::{EngineError, Result};

/// How the router's logits become each token's experts and weights.
#[derive(Debug, Clone)]
pub enum Routing {
    /// Softmax over all experts, the k most probable, their probabilities
    /// renormalized to sum to one when `norm_topk_prob` (Qwen3-MoE,
    /// Qwen3-Next, Qwen3.5-MoE).
    SoftmaxTopK { norm_topk_prob: bool },
    /// The k largest logits, then a softmax over those k (Mixtral).
    TopKSoftmax,
    /// Sigmoid scores (GLM-4-MoE, DeepSeek-V3's `noaux_tc`).
    Sigmoid(SigmoidRouting),
}

/// Sigmoid routing: experts are chosen by `sigmoid(logit) + bias`, within
/// the best `topk_group` of `n_group` groups (each group scored by its two
/// best experts), and weighted by their sigmoid, renormalized when
/// `norm_topk_prob` and k > 1, times `scaling`.
#[derive(Debug, Clone)]
pub struct SigmoidRouting {
    /// `e_score_correction_bias` `[E]`, added for the choice only.
    pub correction_bias: Option<Array>,
    pub n_group: i32,
    pub topk_group: i32,
    pub norm_topk_prob: bool,
    /// `routed_scaling_factor`.
    pub scaling: f32,
}

/// The shape of a sparse block.
#[derive(Debug, Clone)]
pub struct MoeSpec {
    pub num_experts: i32,
    /// Experts per token.
    pub top_k: i32,
    /// Width of each expert's hidden layer.
    pub expert_hidden: i32,
    pub routing: Routing,
    /// How the router and experts are stored and combine.
    pub experts: Experts,
    pub shared_expert: Shared,
}

impl MoeSpec {
    /// GLM-4-MoE's and DeepSeek-V3's block: `routing` over `num_experts`
    /// standard experts of `expert_hidden` features each, `top_k` per token,
    /// and `shared_experts` of the same width taken by every token as one
    /// plain MLP.
    pub fn sigmoid(
        (num_experts, top_k, expert_hidden): (i32, i32, i32),
        shared_experts: Option<i32>,
        routing: SigmoidRouting,
    ) -> MoeSpec {
        MoeSpec {
            num_experts,
            top_k,
            expert_hidden,
            routing: Routing::Sigmoid(routing),
            experts: Experts::Standard,
            shared_expert: match shared_experts {
                Some(n) => Shared::Plain {
                    hidden: expert_hidden * n,
                },
                None => Shared::None,
            },
        }
    }
}

/// The router and experts of a sparse block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Experts {
    /// The router `{prefix}.gate` without a bias; experts
    /// `{prefix}.switch_mlp` without biases, SwiGLU.
    Standard,
    /// gpt-oss's: the router `{prefix}.router` with a bias; experts
    /// `{prefix}.experts` with biases and its clipped activation.
    GptOss { alpha: f32, limit: f32 },
}

/// Whether a sparse block has a shared expert (`{prefix}.shared_expert`,
/// a SwiGLU MLP of `hidden` intermediate features), and whether its output
/// is scaled by `sigmoid(shared_expert_gate(x))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shared {
    None,
    Plain { hidden: i32 },
    Gated { hidden: i32 },
}

/// The shared expert every token takes, and its gate.
struct SharedExpert {
    mlp: Mlp,
    gate: Option<Linear>,
}

/// A sparse Mixture-of-Experts feed-forward block.
pub struct SparseMoe {
    /// The router: `[E, dim]`.
    gate: Linear,
    routing: Routing,
    top_k: i32,
    switch_mlp: SwitchGlu,
    shared: Option<SharedExpert>,
}

/// A layer's feed-forward block: a dense SwiGLU MLP or a sparse one.
pub enum FeedForward {
    Dense(Mlp),
    Sparse(Box<SparseMoe>),
}

impl FeedForward {
    /// `residual + block(norm(x))`, fused where the dense MLP's kernels
    /// allow.
    pub fn forward_normed_add(&self, x: &Array, norm: &RmsNorm, residual: &Array) -> Result<Array> {
        match self {
            FeedForward::Dense(mlp) => mlp.forward_normed_add(x, norm, residual),
            FeedForward::Sparse(moe) => moe.forward_normed_add(x, norm, residual),
        }
    }

    /// `block(norm(x))`, without the residual (tensor parallelism sums it
    /// over the ranks first).
    pub fn forward_normed(&self, x: &Array, norm: &RmsNorm) -> Result<Array> {
        let x = norm.forward(x)?;
        match self {
            FeedForward::Dense(mlp) => mlp.forward(&x),
            FeedForward::Sparse(moe) => moe.forward(&x),
        }
    }

    /// The block's weight matrices.
    pub fn matrices_mut(&mut self) -> Vec<&mut Matrix> {
        match self {
            FeedForward::Dense(mlp) => mlp.matrices_mut(),
            FeedForward::Sparse(moe) => moe.matrices_mut(),
        }
    }
}

/// Whether layer `layer` is sparse: not listed in `mlp_only_layers`, and
/// every `decoder_sparse_step`-th layer counting from one (mlx-lm's
/// `qwen3_moe`); a model without experts has none.
pub fn is_sparse_layer(layer: i32, num_experts: i32, sparse_step: i32, mlp_only: &[i32]) -> bool {
    !mlp_only.contains(&layer)
        && num_experts > 0
        && sparse_step > 0
        && (layer + 1) % sparse_step == 0
}

impl SparseMoe {
    /// Loads the router `{prefix}.gate`, the experts `{prefix}.switch_mlp`
    /// and, when `spec` has one, `{prefix}.shared_expert` (+
    /// `{prefix}.shared_expert_gate`).
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        config: &ModelConfig,
        spec: &MoeSpec,
    ) -> Result<SparseMoe> {
        let p = |name: &str| format!("{prefix}.{name}");
        let MoeSpec {
            num_experts, top_k, ..
        } = *spec;
        if !(1..=num_experts).contains(&top_k) {
            return Err(EngineError::Config(format!(
                "num_experts_per_tok is {top_k}, must be 1 to num_experts ({num_experts})"
            )));
        }
        if let Routing::Sigmoid(s) = &spec.routing
            && (s.n_group < 1
                || num_experts % s.n_group != 0
                || !(1..=s.n_group).contains(&s.topk_group))
        {
            return Err(EngineError::Config(format!(
                "{num_experts} experts in {} groups, {} of them chosen",
                s.n_group, s.topk_group
            )));
        }
        let dim = config.hidden_size;
        let (gate, switch_mlp) = match spec.experts {
            Experts::Standard => (
                Linear::load_shaped(w, &p("gate"), config, false, [num_experts, dim])?,
                SwitchGlu::load(
                    w,
                    &p("switch_mlp"),
                    config,
                    num_experts,
                    dim,
                    spec.expert_hidden,
                )?,
            ),
            Experts::GptOss { alpha, limit } => (
                Linear::load_shaped(w, &p("router"), config, true, [num_experts, dim])?,
                SwitchGlu::load_biased(
                    w,
                    &p("experts"),
                    config,
                    [num_experts, dim, spec.expert_hidden],
                    SwitchActivation::SwigluOai { alpha, limit },
                )?,
            ),
        };
        let shared = match spec.shared_expert {
            Shared::None => None,
            Shared::Plain { hidden } | Shared::Gated { hidden } => Some(SharedExpert {
                mlp: Mlp::load_sized(w, &p("shared_expert"), config, false, hidden)?,
                gate: if matches!(spec.shared_expert, Shared::Gated { .. }) {
                    let name = p("shared_expert_gate");
                    Some(Linear::load_shaped(w, &name, config, false, [1, dim])?)
                } else {
                    None
                },
            }),
        };
        Ok(SparseMoe {
            gate,
            routing: spec.routing.clone(),
            top_k,
            switch_mlp,
            shared,
        })
    }

    /// Each token's experts (`[..., k]`, uint32) and their weights
    /// (`[..., k]`) for hidden states `x` `[..., dim]`.
    pub fn route(&self, x: &Array) -> Result<(Array, Array)> {
        self.routing.route(&self.gate.forward(x)?, self.top_k)
    }

    /// The block's output for hidden states `x` `[..., dim]`.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        let (inds, scores) = self.route(x)?;
        let y = self.switch_mlp.forward(x, &inds)?;
        let dtype = y.dtype();
        let mut y = y
            .multiply(&scores.expand_dims(-1)?)?
            .sum(&[-2], false)?
            .astype(dtype)?;
        if let Some(shared) = &self.shared {
            let mut s = shared.mlp.forward(x)?;
            if let Some(gate) = &shared.gate {
                s = gate.forward(x)?.sigmoid()?.multiply(&s)?;
            }
            y = y.add(&s)?;
        }
        Ok(y)
    }

    /// `residual + forward(norm(x))`.
    pub fn forward_normed_add(&self, x: &Array, norm: &RmsNorm, residual: &Array) -> Result<Array> {
        Ok(residual.add(&self.forward(&norm.forward(x)?)?)?)
    }

    /// Every weight matrix: the router, the expert stacks, the shared
    /// expert and its gate.
    pub fn matrices_mut(&mut self) -> Vec<&mut Matrix> {
        let mut out = vec![&mut self.gate.weight];
        out.extend(self.switch_mlp.matrices_mut());
        if let Some(shared) = &mut self.shared {
            out.extend(shared.mlp.matrices_mut());
            if let Some(gate) = &mut shared.gate {
                out.push(&mut gate.weight);
            }
        }
        out
    }
}

impl Routing {
    /// Each token's `k` experts (`[..., k]`, uint32) and their weights
    /// (`[..., k]`) from the router's logits `[..., E]`, computed with the
    /// operations mlx-lm uses, in its order.
    pub fn route(&self, logits: &Array, k: i32) -> Result<(Array, Array)> {
        let axis = logits.ndim() as i32 - 1;
        let experts = logits.dim(-1)?;
        if !(1..=experts).contains(&k) {
            return Err(EngineError::InvalidRequest(format!(
                "{k} experts per token of {experts}"
            )));
        }
        // The last k of a partition around the k-th largest.
        let largest = |scores: &Array| -> Result<Array> {
            Ok(scores
                .argpartition(-k, -1)?
                .slice_axis(axis, experts - k, experts)?)
        };
        // The first k of a partition of `-scores` around its k-th smallest.
        let smallest_of_negated = |scores: &Array| -> Result<Array> {
            Ok(scores
                .negative()?
                .argpartition(k - 1, -1)?
                .slice_axis(axis, 0, k)?)
        };
        Ok(match self {
            Routing::SoftmaxTopK { norm_topk_prob } => {
                let probs = logits.softmax(-1, true)?;
                let inds = largest(&probs)?;
                let mut scores = probs.take_along_axis(&inds, -1)?;
                if *norm_topk_prob {
                    scores = scores.divide(&scores.sum(&[-1], true)?)?;
                }
                (inds, scores)
            }
            Routing::TopKSoftmax => {
                let inds = smallest_of_negated(logits)?;
                let scores = logits.take_along_axis(&inds, -1)?.softmax(-1, true)?;
                (inds, scores)
            }
            Routing::Sigmoid(s) => {
                let probs = logits.astype(Dtype::F32)?.sigmoid()?;
                let mut choice = match &s.correction_bias {
                    Some(bias) => probs.add(bias)?,
                    None => probs.clone(),
                };
                if s.n_group > 1 {
                    choice = drop_weak_groups(&choice, s.n_group, s.topk_group)?;
                }
                let inds = smallest_of_negated(&choice)?;
                let mut scores = probs.take_along_axis(&inds, -1)?;
                if k > 1 && s.norm_topk_prob {
                    scores = scores.divide(&scores.sum(&[-1], true)?)?;
                }
                let scaled = scores.multiply(&Array::scalar(s.scaling)?)?;
                (inds, scaled)
            }
        })
    }
}

/// `choice` `[..., E]` with the experts of all but the `keep` best of
/// `n_group` groups set to zero, a group scored by the sum of its two best
/// experts (`group_expert_select` in mlx-lm's `glm4_moe.py`).
fn drop_weak_groups(choice: &Array, n_group: i32, keep: i32) -> Result<Array> {
    let shape = choice.shape();
    let mut grouped = shape.clone();
    let experts = grouped.pop().unwrap_or(0);
    grouped.extend([n_group, experts / n_group]);
    let scores = choice.reshape(&grouped)?;
    let group_scores = scores.topk(2, -1)?.sum(&[-1], true)?;
    let drop = n_group - keep;
    if drop == 0 {
        return Ok(choice.clone());
    }
    let axis = group_scores.ndim() as i32 - 2;
    let weakest = group_scores
        .argpartition(drop - 1, -2)?
        .slice_axis(axis, 0, drop)?;
    let zero = Array::scalar(0.0f32)?.astype(scores.dtype())?;
    Ok(scores
        .put_along_axis(&weakest, &zero, -2)?
        .reshape(&shape)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_layers_follow_the_step_and_the_dense_list() {
        let sparse = |step, only: &[i32]| -> Vec<i32> {
            (0..6)
                .filter(|&l| is_sparse_layer(l, 8, step, only))
                .collect()
        };
        assert_eq!(sparse(1, &[]), [0, 1, 2, 3, 4, 5]);
        assert_eq!(sparse(2, &[]), [1, 3, 5]);
        assert_eq!(sparse(1, &[0, 4]), [1, 2, 3, 5]);
        assert_eq!(sparse(2, &[3]), [1, 5]);
        assert!(!is_sparse_layer(1, 0, 1, &[]));
    }

    /// Each row's experts and weights as (expert, weight), by expert.
    fn routed(routing: &Routing, logits: &[f32], experts: i32, k: i32) -> Vec<Vec<(u32, f32)>> {
        let rows = logits.len() as i32 / experts;
        let x = Array::from_slice(logits, &[rows, experts]).unwrap();
        let (inds, scores) = routing.route(&x, k).unwrap();
        assert_eq!(inds.shape(), vec![rows, k]);
        let inds = inds.to_vec::<u32>().unwrap();
        let scores = scores.to_vec::<f32>().unwrap();
        inds.chunks(k as usize)
            .zip(scores.chunks(k as usize))
            .map(|(i, s)| {
                let mut row: Vec<(u32, f32)> = i.iter().copied().zip(s.iter().copied()).collect();
                row.sort_by_key(|(e, _)| *e);
                row
            })
            .collect()
    }

    fn assert_routed(got: &[Vec<(u32, f32)>], want: &[Vec<(u32, f32)>]) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            let experts = |r: &[(u32, f32)]| r.iter().map(|(e, _)| *e).collect::<Vec<_>>();
            assert_eq!(experts(g), experts(w), "{got:?} vs {want:?}");
            for ((_, a), (_, b)) in g.iter().zip(w) {
                assert!((a - b).abs() < 1e-6, "{got:?} vs {want:?}");
            }
        }
    }

    const LOGITS: [f32; 10] = [1.0, 3.0, -2.0, 2.5, 0.0, 0.5, -1.0, 0.25, 4.0, 0.75];

    #[test]
    fn softmax_routing_weights_the_most_probable_experts() {
        let exp: Vec<f32> = LOGITS.iter().map(|v| v.exp()).collect();
        let total = |r: usize| exp[r * 5..r * 5 + 5].iter().sum::<f32>();
        let p = |r: usize, e: usize| exp[r * 5 + e] / total(r);
        let plain = Routing::SoftmaxTopK {
            norm_topk_prob: false,
        };
        let want = vec![
            vec![(1, p(0, 1)), (3, p(0, 3))],
            vec![(3, p(1, 3)), (4, p(1, 4))],
        ];
        assert_routed(&routed(&plain, &LOGITS, 5, 2), &want);
        let normed = Routing::SoftmaxTopK {
            norm_topk_prob: true,
        };
        let renorm = |row: &[(u32, f32)]| {
            let sum: f32 = row.iter().map(|(_, w)| w).sum();
            row.iter().map(|&(e, w)| (e, w / sum)).collect::<Vec<_>>()
        };
        let want_normed: Vec<_> = want.iter().map(|r| renorm(r)).collect();
        assert_routed(&routed(&normed, &LOGITS, 5, 2), &want_normed);
        // One expert: its probability, or 1 renormalized.
        assert_routed(
            &routed(&normed, &LOGITS, 5, 1),
            &[vec![(1, 1.0)], vec![(3, 1.0)]],
        );
        assert_routed(
            &routed(&plain, &LOGITS, 5, 1),
            &[vec![(1, p(0, 1))], vec![(3, p(1, 3))]],
        );
    }

    #[test]
    fn mixtral_routing_takes_a_softmax_over_the_chosen_logits() {
        let soft = |a: f32, b: f32, c: f32| {
            let t = a.exp() + b.exp() + c.exp();
            [a.exp() / t, b.exp() / t, c.exp() / t]
        };
        let [a, b, c] = soft(1.0, 3.0, 2.5);
        let [d, e, f] = soft(0.5, 4.0, 0.75);
        assert_routed(
            &routed(&Routing::TopKSoftmax, &LOGITS, 5, 3),
            &[vec![(0, a), (1, b), (3, c)], vec![(0, d), (3, e), (4, f)]],
        );
    }

    #[test]
    fn sigmoid_routing_chooses_with_the_bias_and_weights_without_it() {
        let sigmoid = |v: f32| 1.0 / (1.0 + (-v).exp());
        // The bias moves expert 2 of row 0 (logit -2) above expert 3 (2.5).
        let bias = Array::from_slice(&[0.0f32, 0.0, 2.0, 0.0, 0.0], &[5]).unwrap();
        let routing = Routing::Sigmoid(SigmoidRouting {
            correction_bias: Some(bias),
            n_group: 1,
            topk_group: 1,
            norm_topk_prob: true,
            scaling: 2.5,
        });
        let weights = |r: usize, experts: [usize; 2]| {
            let s = experts.map(|e| sigmoid(LOGITS[r * 5 + e]));
            let sum = s[0] + s[1];
            vec![
                (experts[0] as u32, s[0] / sum * 2.5),
                (experts[1] as u32, s[1] / sum * 2.5),
            ]
        };
        assert_routed(
            &routed(&routing, &LOGITS, 5, 2),
            &[weights(0, [1, 2]), weights(1, [2, 3])],
        );
    }

    #[test]
    fn more_experts_per_token_than_experts_is_an_error() {
        let x = Array::from_slice(&LOGITS, &[2, 5]).unwrap();
        assert!(Routing::TopKSoftmax.route(&x, 6).is_err());
        assert!(Routing::TopKSoftmax.route(&x, 0).is_err());
    }

    #[test]
    fn weak_groups_are_zeroed_before_the_choice() {
        // Two tokens, 6 experts in 3 groups of 2; keep the best 2 groups.
        let choice = Array::from_slice(
            &[
                0.9f32, 0.1, 0.5, 0.5, 0.2, 0.3, // groups 1.0, 1.0, 0.5: drop group 2
                0.1, 0.1, 0.8, 0.7, 0.6, 0.6, // groups 0.2, 1.5, 1.2: drop group 0
            ],
            &[2, 6],
        )
        .unwrap();
        let got = drop_weak_groups(&choice, 3, 2).unwrap();
        assert_eq!(
            got.to_vec::<f32>().unwrap(),
            [0.9, 0.1, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.8, 0.7, 0.6, 0.6]
        );
        let kept = drop_weak_groups(&choice, 3, 3).unwrap();
        assert_eq!(
            kept.to_vec::<f32>().unwrap(),
            choice.to_vec::<f32>().unwrap()
        );
    }
}
