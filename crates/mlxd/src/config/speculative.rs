//! Speculative decoding by configuration: `speculative`, `draft_model`,
//! `num_draft_tokens` and `spec_max_batch` in `[models]` and in a model's
//! overrides, resolved per model into the worker's command line
//! (`engine::speculative` has the rule).

use std::path::PathBuf;

use serde::Deserialize;

use super::{ModelOverrides, ModelsConfig};

/// Where draft tokens come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum SpeculativeMode {
    /// No speculative decoding.
    Off,
    /// n-gram matches in the prompt and the output so far.
    PromptLookup,
    /// A small model of the same vocabulary (`draft_model`).
    DraftModel,
}

impl SpeculativeMode {
    /// Its name in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            SpeculativeMode::Off => "off",
            SpeculativeMode::PromptLookup => "prompt_lookup",
            SpeculativeMode::DraftModel => "draft_model",
        }
    }
}

/// How one model speculates, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecChoice {
    /// The draft model (a name or a path); `None`: prompt lookup.
    pub draft_model: Option<String>,
    pub num_draft_tokens: usize,
    pub max_batch: usize,
}

/// The four keys of one table (`[models]` or an override).
fn keys(mode: Option<SpeculativeMode>, draft: Option<&String>) -> Option<SpeculativeMode> {
    mode.or(draft.map(|_| SpeculativeMode::DraftModel))
}

impl ModelsConfig {
    /// How model `name` speculates: its overrides over `[models]` (setting
    /// `draft_model` alone means `speculative = "draft_model"`); `None` when
    /// off. An error names a draft mode without a draft model.
    pub fn speculative_for(&self, name: &str) -> Result<Option<SpecChoice>, String> {
        let o = self.overrides.get(name).cloned().unwrap_or_default();
        self.resolve(&o)
    }

    /// How a model without overrides speculates.
    pub fn speculative_default(&self) -> Result<Option<SpecChoice>, String> {
        self.resolve(&ModelOverrides::default())
    }

    fn resolve(&self, o: &ModelOverrides) -> Result<Option<SpecChoice>, String> {
        let mode = keys(o.speculative, o.draft_model.as_ref())
            .or(keys(self.speculative, self.draft_model.as_ref()))
            .unwrap_or(SpeculativeMode::Off);
        let draft_model = o.draft_model.clone().or(self.draft_model.clone());
        let num_draft_tokens = o
            .num_draft_tokens
            .or(self.num_draft_tokens)
            .unwrap_or(engine::speculative::DEFAULT_DRAFT_TOKENS);
        let max_batch = o
            .spec_max_batch
            .or(self.spec_max_batch)
            .unwrap_or(engine::speculative::DEFAULT_MAX_BATCH);
        if !(1..=engine::speculative::MAX_DRAFT_TOKENS).contains(&num_draft_tokens) {
            return Err(format!(
                "num_draft_tokens must be 1 to {}",
                engine::speculative::MAX_DRAFT_TOKENS
            ));
        }
        if max_batch == 0 {
            return Err("spec_max_batch must be at least 1".into());
        }
        Ok(match mode {
            SpeculativeMode::Off => None,
            SpeculativeMode::PromptLookup => Some(SpecChoice {
                draft_model: None,
                num_draft_tokens,
                max_batch,
            }),
            SpeculativeMode::DraftModel => match draft_model {
                Some(draft) => Some(SpecChoice {
                    draft_model: Some(draft),
                    num_draft_tokens,
                    max_batch,
                }),
                None => {
                    return Err(
                        "speculative = \"draft_model\" needs draft_model (a model name or path)"
                            .into(),
                    );
                }
            },
        })
    }

    /// Checks the speculative keys of `[models]` and of every override.
    pub fn check_speculative(&self) -> Result<(), (String, String)> {
        self.resolve(&ModelOverrides::default())
            .map_err(|e| ("models.speculative".to_string(), e))?;
        for (name, o) in &self.overrides {
            self.resolve(o)
                .map_err(|e| (format!("models.overrides.{name}"), e))?;
        }
        Ok(())
    }
}

/// The worker's command-line arguments for `choice`, the draft model's
/// name resolved to its path by `locate` (else taken as a path).
pub fn worker_args(
    choice: Option<&SpecChoice>,
    locate: impl Fn(&str) -> Option<PathBuf>,
) -> Vec<String> {
    let Some(c) = choice else {
        return Vec::new();
    };
    let mut args = match &c.draft_model {
        Some(name) => {
            let path = locate(name).unwrap_or_else(|| super::expand_home(&PathBuf::from(name)));
            vec!["--draft-model".to_string(), path.display().to_string()]
        }
        None => vec!["--prompt-lookup".to_string()],
    };
    args.extend([
        "--num-draft-tokens".to_string(),
        c.num_draft_tokens.to_string(),
        "--spec-max-batch".to_string(),
        c.max_batch.to_string(),
    ]);
    args
}
