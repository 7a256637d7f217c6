//! The registry of model families: `config.json`'s `model_type` (or, for
//! a multimodal-style config, its `text_config.model_type`) to the
//! [`Family`] that parses the family's arguments, renames or drops
//! checkpoint tensors (`sanitize`) and builds the model, as mlx-lm's
//! `get_model_classes` (`mlx_lm/utils.py`) maps a `model_type` to a module
//! of `mlx_lm/models/`.
//!
//! Adding a family is one file under `model/` implementing [`Family`] and
//! one line in [`FAMILIES`].

use serde::de::DeserializeOwned;

use super::base::{CacheKind, LanguageModel};
use super::config::ModelConfig;
use super::weights::Weights;
use super::{
    deepseek_v3, gemma3_text, glm4_moe, gpt_oss, llama, mistral, mixtral, phi3, qwen2, qwen2_5_vl,
    qwen3, qwen3_5, qwen3_5_moe, qwen3_moe, qwen3_next,
};
use crate::error::{EngineError, Result};

/// A family of models, as one file of mlx-lm's `mlx_lm/models/`.
pub trait Family {
    /// The `model_type`s it loads.
    const MODEL_TYPES: &'static [&'static str];

    /// Its arguments (mlx-lm's `ModelArgs`, with its defaults), parsed with
    /// serde from the (text) config's JSON.
    type Args: DeserializeOwned;

    /// Whether its model can be split across ranks (tensor and pipeline
    /// parallel: the standard decoder's blocks, see `crate::distributed`).
    const SPLITS: bool = false;

    /// Renames and drops checkpoint tensors as mlx-lm's `sanitize` does,
    /// before the model takes them.
    fn sanitize(args: &Self::Args, config: &ModelConfig, weights: &mut Weights) -> Result<()>;

    /// The cache each layer needs, from the config alone (for memory
    /// estimates before a load); every layer attention unless the family
    /// says otherwise. The built model's `cache_kinds` must agree.
    fn cache_kinds(args: &Self::Args, config: &ModelConfig) -> Result<Vec<CacheKind>> {
        let _ = args;
        Ok(vec![
            CacheKind::Kv;
            config.num_hidden_layers.max(0) as usize
        ])
    }

    /// Values one attention layer caches per position: keys and values of
    /// every KV head unless the family caches something else (DeepSeek-V3's
    /// compressed latent and shared rotary key).
    fn kv_width(args: &Self::Args, config: &ModelConfig) -> i32 {
        let _ = args;
        2 * config.num_kv_heads() * config.head_dim()
    }

    /// Builds the model, taking every tensor it needs from `weights` (what
    /// is left over is an error the caller reports).
    fn build(
        args: Self::Args,
        config: &ModelConfig,
        weights: &mut Weights,
    ) -> Result<Box<dyn LanguageModel>>;
}

/// A registered family.
pub struct Entry {
    pub model_types: &'static [&'static str],
    splits: bool,
    load: fn(&ModelConfig, &mut Weights) -> Result<Box<dyn LanguageModel>>,
    kinds: fn(&ModelConfig) -> Result<Vec<CacheKind>>,
    width: fn(&ModelConfig) -> Result<i32>,
}

impl Entry {
    /// Parses the family's arguments, sanitizes `weights` and builds.
    pub fn load(
        &self,
        config: &ModelConfig,
        weights: &mut Weights,
    ) -> Result<Box<dyn LanguageModel>> {
        (self.load)(config, weights)
    }

    /// The cache kind of each layer of a model of `config`.
    pub fn cache_kinds(&self, config: &ModelConfig) -> Result<Vec<CacheKind>> {
        (self.kinds)(config)
    }
}

fn width<F: Family>(config: &ModelConfig) -> Result<i32> {
    Ok(F::kv_width(&config.args()?, config))
}

fn kinds<F: Family>(config: &ModelConfig) -> Result<Vec<CacheKind>> {
    F::cache_kinds(&config.args()?, config)
}

fn load<F: Family>(config: &ModelConfig, weights: &mut Weights) -> Result<Box<dyn LanguageModel>> {
    let args: F::Args = config.args()?;
    F::sanitize(&args, config, weights)?;
    let Some(shard) = &config.shard else {
        return F::build(args, config, weights);
    };
    if !F::SPLITS {
        return Err(EngineError::Config(format!(
            "{}: this family cannot be split across ranks (split families: {})",
            config.model_type,
            split_model_types().join(", ")
        )));
    }
    let local = crate::distributed::prepare(config, shard, weights)?;
    crate::loader::materialize(weights, &mut |_, _| {})?;
    F::build(local.args()?, &local, weights)
}

/// The `model_type`s whose models can be split across ranks.
pub fn split_model_types() -> Vec<&'static str> {
    FAMILIES
        .iter()
        .filter(|f| f.splits)
        .flat_map(|f| f.model_types.iter().copied())
        .collect()
}

/// The registry entry of family `F`.
pub const fn entry<F: Family>() -> Entry {
    Entry {
        model_types: F::MODEL_TYPES,
        splits: F::SPLITS,
        load: load::<F>,
        kinds: kinds::<F>,
        width: width::<F>,
    }
}

/// Every family this engine runs.
pub const FAMILIES: &[Entry] = &[
    entry::<llama::Llama>(),
    entry::<mistral::Mistral>(),
    entry::<qwen2::Qwen2>(),
    entry::<qwen2_5_vl::Qwen2_5Vl>(),
    entry::<qwen3::Qwen3>(),
    entry::<qwen3_next::Qwen3Next>(),
    entry::<qwen3_5::Qwen3_5>(),
    entry::<qwen3_5_moe::Qwen3_5Moe>(),
    entry::<qwen3_moe::Qwen3Moe>(),
    entry::<mixtral::Mixtral>(),
    entry::<phi3::Phi3>(),
    entry::<glm4_moe::Glm4Moe>(),
    entry::<gemma3_text::Gemma3Text>(),
    entry::<gpt_oss::GptOss>(),
    entry::<deepseek_v3::DeepseekV3>(),
];

/// The `model_type`s this engine runs.
pub fn supported_model_types() -> Vec<&'static str> {
    FAMILIES
        .iter()
        .flat_map(|f| f.model_types.iter().copied())
        .collect()
}

/// The family of a config: by `model_type`, else by
/// `text_config.model_type`.
pub fn find(config: &ModelConfig) -> Result<&'static Entry> {
    let by = |t: &str| FAMILIES.iter().find(|f| f.model_types.contains(&t));
    by(&config.model_type)
        .or_else(|| config.text_model_type.as_deref().and_then(by))
        .ok_or_else(|| {
            let nested = config
                .text_model_type
                .as_ref()
                .map(|t| format!(" (text_config.model_type {t:?})"))
                .unwrap_or_default();
            EngineError::Config(format!(
                "model_type {:?}{nested} is not supported (supported: {})",
                config.model_type,
                supported_model_types().join(", ")
            ))
        })
}

/// The cache kind of each layer of the model `config` describes, without
/// loading it (what memory estimates count: KV per position for the
/// attention layers, a fixed state for the others).
pub fn cache_kinds(config: &ModelConfig) -> Result<Vec<CacheKind>> {
    find(config)?.cache_kinds(config)
}

/// Values each attention layer of the model `config` describes caches per
/// position (see [`Family::kv_width`]).
pub fn kv_width(config: &ModelConfig) -> Result<i32> {
    (find(config)?.width)(config)
}
