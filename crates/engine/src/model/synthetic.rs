//! Random-weight models in the shapes of real ones, built in memory, so a
//! machine can be measured without downloading anything. The tensors go
//! through the same strict loader as a real checkpoint; their values are
//! random (packed 4-bit codes, small scales), so the outputs are noise but
//! the work per token is exactly that of the real model. Mixture-of-Experts
//! shapes (Qwen3-MoE, Mixtral) carry every expert, stacked as mlx-lm
//! stores them (`switch_mlp`), so a step routes and reads as the real
//! model's does (which experts, being random, differs). Gemma 3 shapes
//! carry its sandwich norms and q/k norms; gpt-oss shapes its biases,
//! sinks and biased experts, the experts in `mxfp4` beside 8-bit affine
//! layers, as mlx-community publishes it.

use std::collections::HashMap;

use mlx::{Array, Dtype, random};
use serde_json::json;

use super::{Model, ModelConfig, Weights};
use crate::error::{EngineError, Result};

/// A model shape.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    pub name: &'static str,
    model_type: &'static str,
    hidden: i32,
    layers: i32,
    intermediate: i32,
    heads: i32,
    kv_heads: i32,
    /// `hidden / heads` when `None`.
    head_dim: Option<i32>,
    vocab: i32,
    tied: bool,
    rope_theta: f32,
    /// `(group_size, bits)`, or dense.
    quant: Option<(i32, i32)>,
    dtype: Dtype,
    /// The experts of every layer, for a Mixture-of-Experts family.
    experts: Option<Experts>,
}

/// The experts of a Mixture-of-Experts preset.
#[derive(Debug, Clone, Copy)]
pub struct Experts {
    pub count: i32,
    /// Experts per token.
    pub top_k: i32,
    /// Width of each expert's hidden layer.
    pub hidden: i32,
}

const fn qwen25(
    name: &'static str,
    dims: (i32, i32, i32, i32, i32),
    vocab: i32,
    tied: bool,
) -> Preset {
    let (hidden, layers, intermediate, heads, kv_heads) = dims;
    Preset {
        name,
        model_type: "qwen2",
        hidden,
        layers,
        intermediate,
        heads,
        kv_heads,
        head_dim: None,
        vocab,
        tied,
        rope_theta: 1_000_000.0,
        quant: Some((64, 4)),
        dtype: Dtype::Bf16,
        experts: None,
    }
}

/// The shapes `--synthetic` accepts (Qwen2.5 and Qwen3-30B-A3B as
/// published by mlx-community at 4 bits, group 64, bf16 scales; the
/// router is 4-bit here too).
pub const PRESETS: [Preset; 14] = [
    qwen25("qwen2.5-0.5b-4bit", (896, 24, 4864, 14, 2), 151_936, true),
    qwen25("qwen2.5-1.5b-4bit", (1536, 28, 8960, 12, 2), 151_936, true),
    qwen25("qwen2.5-3b-4bit", (2048, 36, 11008, 16, 2), 151_936, true),
    qwen25("qwen2.5-7b-4bit", (3584, 28, 18944, 28, 4), 152_064, false),
    qwen25("qwen2.5-14b-4bit", (5120, 48, 13824, 40, 8), 152_064, false),
    Preset {
        name: "smollm2-135m-4bit",
        model_type: "llama",
        hidden: 576,
        layers: 30,
        intermediate: 1536,
        heads: 9,
        kv_heads: 3,
        head_dim: None,
        vocab: 49_152,
        tied: true,
        rope_theta: 100_000.0,
        quant: Some((32, 4)),
        dtype: Dtype::F16,
        experts: None,
    },
    Preset {
        name: "tiny-f32",
        model_type: "llama",
        hidden: 64,
        layers: 2,
        intermediate: 128,
        heads: 4,
        kv_heads: 2,
        head_dim: None,
        vocab: 256,
        tied: false,
        rope_theta: 10_000.0,
        quant: None,
        dtype: Dtype::F32,
        experts: None,
    },
    // Qwen3-30B-A3B (and Qwen3-Coder-30B-A3B): 128 experts of 768, 8 per
    // token, heads of 128.
    Preset {
        name: "qwen3-30b-a3b-4bit",
        model_type: "qwen3_moe",
        hidden: 2048,
        layers: 48,
        intermediate: 6144,
        heads: 32,
        kv_heads: 4,
        head_dim: Some(128),
        vocab: 151_936,
        tied: false,
        rope_theta: 1_000_000.0,
        quant: Some((64, 4)),
        dtype: Dtype::Bf16,
        experts: Some(Experts {
            count: 128,
            top_k: 8,
            hidden: 768,
        }),
    },
    // Gemma-3-12B (text): heads of 256, windows of 1024 in five layers of
    // six, tied head, 4-bit.
    Preset {
        name: "gemma-3-12b-4bit",
        model_type: "gemma3_text",
        hidden: 3840,
        layers: 48,
        intermediate: 15360,
        heads: 16,
        kv_heads: 8,
        head_dim: Some(256),
        vocab: 262_208,
        tied: true,
        rope_theta: 1_000_000.0,
        quant: Some((64, 4)),
        dtype: Dtype::Bf16,
        experts: None,
    },
    Preset {
        name: "tiny-gemma3-f32",
        model_type: "gemma3_text",
        hidden: 64,
        // One global layer after five local ones (mlx-lm needs the first).
        layers: 6,
        intermediate: 128,
        heads: 4,
        kv_heads: 2,
        head_dim: Some(16),
        vocab: 256,
        tied: true,
        rope_theta: 1_000_000.0,
        quant: None,
        dtype: Dtype::F32,
        experts: None,
    },
    // gpt-oss-20b: 32 experts of 2880, 4 per token, in mxfp4 beside 8-bit
    // affine layers (mlx-community's MXFP4-Q8).
    Preset {
        name: "gpt-oss-20b-mxfp4",
        model_type: "gpt_oss",
        hidden: 2880,
        layers: 24,
        intermediate: 2880,
        heads: 64,
        kv_heads: 8,
        head_dim: Some(64),
        vocab: 201_088,
        tied: false,
        rope_theta: 150_000.0,
        quant: Some((64, 8)),
        dtype: Dtype::Bf16,
        experts: Some(Experts {
            count: 32,
            top_k: 4,
            hidden: 2880,
        }),
    },
    Preset {
        name: "tiny-gpt-oss-mxfp4",
        model_type: "gpt_oss",
        hidden: 64,
        layers: 2,
        intermediate: 64,
        heads: 4,
        kv_heads: 2,
        head_dim: Some(16),
        vocab: 256,
        tied: false,
        rope_theta: 150_000.0,
        quant: Some((32, 8)),
        dtype: Dtype::F32,
        experts: Some(Experts {
            count: 4,
            top_k: 2,
            hidden: 64,
        }),
    },
    Preset {
        name: "tiny-moe-f32",
        model_type: "qwen3_moe",
        hidden: 64,
        layers: 2,
        intermediate: 128,
        heads: 4,
        kv_heads: 2,
        head_dim: None,
        vocab: 256,
        tied: false,
        rope_theta: 1_000_000.0,
        quant: None,
        dtype: Dtype::F32,
        experts: Some(Experts {
            count: 6,
            top_k: 2,
            hidden: 32,
        }),
    },
    Preset {
        name: "tiny-mixtral-f32",
        model_type: "mixtral",
        hidden: 64,
        layers: 2,
        intermediate: 32,
        heads: 4,
        kv_heads: 2,
        head_dim: None,
        vocab: 256,
        tied: false,
        rope_theta: 1_000_000.0,
        quant: None,
        dtype: Dtype::F32,
        experts: Some(Experts {
            count: 5,
            top_k: 2,
            hidden: 32,
        }),
    },
];

impl Preset {
    /// The preset called `name`.
    pub fn find(name: &str) -> Result<Preset> {
        PRESETS
            .iter()
            .find(|p| p.name == name)
            .copied()
            .ok_or_else(|| {
                let names: Vec<_> = PRESETS.iter().map(|p| p.name).collect();
                EngineError::Config(format!(
                    "unknown synthetic model {name:?} (known: {})",
                    names.join(", ")
                ))
            })
    }

    /// The same shape with another vocabulary size (to match a tokenizer).
    pub fn with_vocab(self, vocab: i32) -> Preset {
        Preset { vocab, ..self }
    }

    fn config_json(&self) -> serde_json::Value {
        let mut config = json!({
            "model_type": self.model_type,
            "hidden_size": self.hidden,
            "num_hidden_layers": self.layers,
            "intermediate_size": self.intermediate,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "rms_norm_eps": 1e-6,
            "vocab_size": self.vocab,
            "rope_theta": self.rope_theta,
            "tie_word_embeddings": self.tied,
            "max_position_embeddings": 32768,
        });
        if let Some((group_size, bits)) = self.quant {
            config["quantization"] = json!({"group_size": group_size, "bits": bits});
        }
        if matches!(self.model_type, "qwen3_moe" | "gemma3_text" | "gpt_oss") {
            config["head_dim"] = json!(self.head_dim());
        }
        match self.model_type {
            "gemma3_text" => {
                config["query_pre_attn_scalar"] = json!(self.head_dim());
                config["sliding_window"] = json!(if self.hidden > 64 { 1024 } else { 8 });
                config["sliding_window_pattern"] = json!(6);
                config["rope_local_base_freq"] = json!(10_000.0);
                config["rope_scaling"] = json!({"rope_type": "linear", "factor": 8.0});
            }
            "gpt_oss" => {
                if let Some(e) = self.experts {
                    config["num_local_experts"] = json!(e.count);
                    config["num_experts_per_tok"] = json!(e.top_k);
                }
                config["sliding_window"] = json!(128);
                config["rope_scaling"] = json!({
                    "rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0,
                    "beta_slow": 1.0, "original_max_position_embeddings": 4096,
                });
                // The experts in mxfp4, every other layer at the default.
                for i in 0..self.layers {
                    for proj in ["gate_proj", "up_proj", "down_proj"] {
                        config["quantization"][format!("model.layers.{i}.mlp.experts.{proj}")] =
                            json!({"group_size": 32, "bits": 4, "mode": "mxfp4"});
                    }
                }
            }
            _ => {}
        }
        if let Some(e) = self.experts.filter(|_| self.model_type != "gpt_oss") {
            let moe = if self.model_type == "mixtral" {
                json!({"num_local_experts": e.count, "num_experts_per_tok": e.top_k})
            } else {
                json!({
                    "num_experts": e.count,
                    "num_experts_per_tok": e.top_k,
                    "moe_intermediate_size": e.hidden,
                    "decoder_sparse_step": 1,
                    "mlp_only_layers": [],
                    "norm_topk_prob": true,
                })
            };
            if let (Some(config), Some(moe)) = (config.as_object_mut(), moe.as_object()) {
                config.extend(moe.clone());
            }
        }
        config
    }

    fn head_dim(&self) -> i32 {
        self.head_dim.unwrap_or(self.hidden / self.heads)
    }

    fn config(&self) -> Result<ModelConfig> {
        ModelConfig::from_json(&self.config_json().to_string())
    }

    /// Builds the model with random weights drawn from `seed`.
    pub fn build(&self, seed: u64) -> Result<Model> {
        let config = self.config()?;
        Model::from_weights(config, Weights::new(self.tensors(seed)?))
    }

    /// Writes the model as an MLX checkpoint (`config.json`,
    /// `model.safetensors`) into `dir`.
    pub fn save(&self, dir: &std::path::Path, seed: u64) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
        let tensors = self.tensors(seed)?;
        mlx::io::save_safetensors(
            dir.join("model.safetensors"),
            tensors.iter().map(|(k, v)| (k.as_str(), v)),
            [("format", "mlx")],
        )?;
        let path = dir.join("config.json");
        let text = serde_json::to_string_pretty(&self.config_json())
            .map_err(|e| EngineError::Config(e.to_string()))?;
        std::fs::write(&path, text + "\n").map_err(|e| EngineError::io(&path, e))
    }

    /// The random tensors, evaluated, under Hugging Face names.
    fn tensors(&self, seed: u64) -> Result<HashMap<String, Array>> {
        let mut tg = TensorGen {
            key: random::key(seed)?,
            preset: *self,
            tensors: HashMap::new(),
        };
        let hd = self.head_dim();
        tg.matrix("model.embed_tokens", self.vocab, self.hidden)?;
        for i in 0..self.layers {
            let p = |name: &str| format!("model.layers.{i}.{name}");
            tg.matrix(&p("self_attn.q_proj"), self.heads * hd, self.hidden)?;
            tg.matrix(&p("self_attn.k_proj"), self.kv_heads * hd, self.hidden)?;
            tg.matrix(&p("self_attn.v_proj"), self.kv_heads * hd, self.hidden)?;
            tg.matrix(&p("self_attn.o_proj"), self.hidden, self.heads * hd)?;
            if self.model_type == "qwen2" {
                tg.vector(&p("self_attn.q_proj.bias"), self.heads * hd, 0.0)?;
                tg.vector(&p("self_attn.k_proj.bias"), self.kv_heads * hd, 0.0)?;
                tg.vector(&p("self_attn.v_proj.bias"), self.kv_heads * hd, 0.0)?;
            }
            if self.model_type == "qwen3_moe" {
                tg.vector(&p("self_attn.q_norm.weight"), hd, 1.0)?;
                tg.vector(&p("self_attn.k_norm.weight"), hd, 1.0)?;
            }
            if self.model_type == "gemma3_text" {
                // Gemma's norms multiply by (1 + w).
                tg.vector(&p("self_attn.q_norm.weight"), hd, 0.0)?;
                tg.vector(&p("self_attn.k_norm.weight"), hd, 0.0)?;
                tg.vector(&p("pre_feedforward_layernorm.weight"), self.hidden, 0.0)?;
                tg.vector(&p("post_feedforward_layernorm.weight"), self.hidden, 0.0)?;
            }
            if self.model_type == "gpt_oss" {
                for (proj, len) in [
                    ("q_proj", self.heads * hd),
                    ("k_proj", self.kv_heads * hd),
                    ("v_proj", self.kv_heads * hd),
                    ("o_proj", self.hidden),
                ] {
                    tg.vector(&p(&format!("self_attn.{proj}.bias")), len, 0.0)?;
                }
                tg.vector(&p("self_attn.sinks"), self.heads, 0.0)?;
            }
            match self.experts {
                Some(e) if self.model_type == "gpt_oss" => {
                    let (n, h, d) = (e.count, e.hidden, self.hidden);
                    tg.matrix(&p("mlp.router"), n, d)?;
                    tg.vector(&p("mlp.router.bias"), n, 0.0)?;
                    for (proj, rows, cols) in
                        [("gate_proj", h, d), ("up_proj", h, d), ("down_proj", d, h)]
                    {
                        let name = p(&format!("mlp.experts.{proj}"));
                        tg.mxfp4_stack(&name, n, rows, cols)?;
                        tg.shaped_dense(&format!("{name}.bias"), &[n], rows)?;
                    }
                }
                Some(e) => {
                    let block = if self.model_type == "mixtral" {
                        "block_sparse_moe"
                    } else {
                        "mlp"
                    };
                    let (n, h, d) = (e.count, e.hidden, self.hidden);
                    tg.matrix(&p(&format!("{block}.gate")), n, d)?;
                    let stack = |name: &str| p(&format!("{block}.switch_mlp.{name}"));
                    tg.stack(&stack("gate_proj"), n, h, d)?;
                    tg.stack(&stack("up_proj"), n, h, d)?;
                    tg.stack(&stack("down_proj"), n, d, h)?;
                }
                None => {
                    tg.matrix(&p("mlp.gate_proj"), self.intermediate, self.hidden)?;
                    tg.matrix(&p("mlp.up_proj"), self.intermediate, self.hidden)?;
                    tg.matrix(&p("mlp.down_proj"), self.hidden, self.intermediate)?;
                }
            }
            let norm_center = if self.model_type == "gemma3_text" {
                0.0
            } else {
                1.0
            };
            tg.vector(&p("input_layernorm.weight"), self.hidden, norm_center)?;
            tg.vector(
                &p("post_attention_layernorm.weight"),
                self.hidden,
                norm_center,
            )?;
        }
        let norm_center = if self.model_type == "gemma3_text" {
            0.0
        } else {
            1.0
        };
        tg.vector("model.norm.weight", self.hidden, norm_center)?;
        if !self.tied {
            tg.matrix("lm_head", self.vocab, self.hidden)?;
        }
        let tensors: Vec<&Array> = tg.tensors.values().collect();
        mlx::eval(&tensors)?;
        Ok(tg.tensors)
    }
}

struct TensorGen {
    key: Array,
    preset: Preset,
    tensors: HashMap<String, Array>,
}

impl TensorGen {
    fn next_key(&mut self) -> Result<Array> {
        let keys = random::split(&self.key, 2)?;
        self.key = keys.slice_axis(0, 0, 1)?.squeeze(0)?;
        Ok(keys.slice_axis(0, 1, 2)?.squeeze(0)?)
    }

    fn normal(&mut self, shape: &[i32], scale: f32) -> Result<Array> {
        let key = self.next_key()?;
        let x = random::normal(shape, Dtype::F32, Some(&key))?;
        Ok(x.multiply(&Array::scalar(scale)?)?
            .astype(self.preset.dtype)?)
    }

    /// `{name}.weight` `[rows, cols]`, packed with scales and biases when
    /// the preset is quantized.
    fn matrix(&mut self, name: &str, rows: i32, cols: i32) -> Result<()> {
        self.shaped(name, &[rows], cols)
    }

    /// A stack of `n` matrices `[n, rows, cols]` (a layer's experts).
    fn stack(&mut self, name: &str, n: i32, rows: i32, cols: i32) -> Result<()> {
        self.shaped(name, &[n, rows], cols)
    }

    /// `{name}.weight` `[..lead, cols]`, quantized along `cols` when the
    /// preset is.
    fn shaped(&mut self, name: &str, lead: &[i32], cols: i32) -> Result<()> {
        let shape = |last: i32| {
            let mut s = lead.to_vec();
            s.push(last);
            s
        };
        let Some((group, bits)) = self.preset.quant else {
            let w = self.normal(&shape(cols), 0.02)?;
            self.tensors.insert(format!("{name}.weight"), w);
            return Ok(());
        };
        let key = self.next_key()?;
        let codes = random::uniform(&shape(cols * bits / 32), Dtype::F32, Some(&key))?
            .multiply(&Array::scalar(u32::MAX as f32)?)?
            .astype(Dtype::U32)?;
        let groups = cols / group;
        let scales = self.normal(&shape(groups), 0.002)?.abs()?;
        let biases = self.normal(&shape(groups), 0.01)?;
        self.tensors.insert(format!("{name}.weight"), codes);
        self.tensors.insert(format!("{name}.scales"), scales);
        self.tensors.insert(format!("{name}.biases"), biases);
        Ok(())
    }

    /// `[..lead, cols]` dense, small values (a stack of biases).
    fn shaped_dense(&mut self, name: &str, lead: &[i32], cols: i32) -> Result<()> {
        let mut shape = lead.to_vec();
        shape.push(cols);
        let v = self.normal(&shape, 0.01)?;
        self.tensors.insert(name.to_owned(), v);
        Ok(())
    }

    /// A stack of `n` matrices `[n, rows, cols]` in mxfp4: random 4-bit
    /// float codes and power-of-two scales near 2^-5.
    fn mxfp4_stack(&mut self, name: &str, n: i32, rows: i32, cols: i32) -> Result<()> {
        let key = self.next_key()?;
        let codes = random::uniform(&[n, rows, cols / 8], Dtype::F32, Some(&key))?
            .multiply(&Array::scalar(u32::MAX as f32)?)?
            .astype(Dtype::U32)?;
        let key = self.next_key()?;
        // E8M0 exponents 120 to 124: scales of 2^-7 to 2^-3.
        let scales = random::uniform(&[n, rows, cols / 32], Dtype::F32, Some(&key))?
            .multiply(&Array::scalar(5.0)?)?
            .add(&Array::scalar(120.0)?)?
            .astype(Dtype::U8)?;
        self.tensors.insert(format!("{name}.weight"), codes);
        self.tensors.insert(format!("{name}.scales"), scales);
        Ok(())
    }

    fn vector(&mut self, name: &str, len: i32, center: f32) -> Result<()> {
        let v = self
            .normal(&[len], 0.01)?
            .add(&Array::scalar(center)?.astype(self.preset.dtype)?)?;
        self.tensors.insert(name.to_owned(), v);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tiny_preset_builds_and_runs() {
        let model = Preset::find("tiny-f32").unwrap().build(0).unwrap();
        let ids = Array::from_slice(&[1u32, 2, 3], &[1, 3]).unwrap();
        let logits = model.forward(&ids, &mut model.new_cache()).unwrap();
        assert_eq!(logits.shape(), vec![1, 3, 256]);
        assert!(
            logits
                .to_vec::<f32>()
                .unwrap()
                .iter()
                .all(|v| v.is_finite())
        );
    }

    #[test]
    fn unknown_presets_list_the_known_ones() {
        let err = Preset::find("gpt-5").unwrap_err().to_string();
        assert!(err.contains("qwen2.5-7b-4bit"), "{err}");
    }

    #[test]
    fn a_saved_preset_loads_back_through_the_strict_loader() {
        let dir = tempfile::tempdir().unwrap();
        let preset = Preset::find("tiny-f32").unwrap().with_vocab(300);
        preset.save(dir.path(), 3).unwrap();
        let model = Model::load_dir(dir.path()).unwrap();
        assert_eq!(model.config.vocab_size, 300);
        let direct = preset.build(3).unwrap();
        let ids = Array::from_slice(&[5u32, 7], &[1, 2]).unwrap();
        let a = model.forward(&ids, &mut model.new_cache()).unwrap();
        let b = direct.forward(&ids, &mut direct.new_cache()).unwrap();
        assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    }

    #[test]
    fn mixture_of_experts_presets_load_back_and_run() {
        for name in ["tiny-moe-f32", "tiny-mixtral-f32"] {
            let dir = tempfile::tempdir().unwrap();
            let preset = Preset::find(name).unwrap();
            preset.save(dir.path(), 5).unwrap();
            let model = Model::load_dir(dir.path()).unwrap();
            let direct = preset.build(5).unwrap();
            let ids = Array::from_slice(&[5u32, 7, 9], &[1, 3]).unwrap();
            let a = model.forward(&ids, &mut model.new_cache()).unwrap();
            let b = direct.forward(&ids, &mut direct.new_cache()).unwrap();
            assert_eq!(a.shape(), vec![1, 3, 256], "{name}");
            assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
        }
        // Qwen3-30B-A3B's layer shapes (heads of 128 over a 2048 model,
        // 4-bit experts of 768 under bf16 activations, 8 per token), one
        // layer of 10 experts.
        let real = Preset::find("qwen3-30b-a3b-4bit").unwrap();
        let small = Preset {
            layers: 1,
            vocab: 512,
            experts: Some(Experts {
                count: 10,
                ..real.experts.unwrap()
            }),
            ..real
        };
        let model = small.build(1).unwrap();
        let ids = Array::from_slice(&[1u32, 2, 3], &[1, 3]).unwrap();
        let logits = model.forward(&ids, &mut model.new_cache()).unwrap();
        assert_eq!(logits.shape(), vec![1, 3, 512]);
        let values = logits.astype(Dtype::F32).unwrap().to_vec::<f32>().unwrap();
        assert!(values.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn gemma_and_gpt_oss_presets_run_in_their_real_layer_shapes() {
        // One layer of each real shape (gpt-oss with 4 of its experts),
        // a small vocabulary.
        for name in ["gemma-3-12b-4bit", "gpt-oss-20b-mxfp4"] {
            let real = Preset::find(name).unwrap();
            let small = Preset {
                layers: 1,
                vocab: 512,
                experts: real.experts.map(|e| Experts { count: 4, ..e }),
                ..real
            };
            let model = small.build(2).unwrap();
            let ids = Array::from_slice(&[1u32, 2, 3], &[1, 3]).unwrap();
            let logits = model.forward(&ids, &mut model.new_cache()).unwrap();
            assert_eq!(logits.shape(), vec![1, 3, 512], "{name}");
            let values = logits.astype(Dtype::F32).unwrap().to_vec::<f32>().unwrap();
            assert!(values.iter().all(|v| v.is_finite()), "{name}");
        }
    }

    #[test]
    fn every_preset_config_is_valid() {
        for p in PRESETS {
            p.config().unwrap();
        }
    }
}
