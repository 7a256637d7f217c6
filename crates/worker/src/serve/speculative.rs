//! Speculative decoding in the worker (`engine::speculative`): the options
//! the supervisor passes on the command line, the draft model loaded beside
//! the model, and the scheduler they give.
//!
//! A model with recurrent (linear-attention) layers cannot take back the
//! positions of rejected draft tokens, so it runs without speculation, with
//! a warning in the log; a draft model that cannot serve (recurrent layers,
//! another vocabulary) fails the load with the reason.

use std::path::PathBuf;

use engine::batch::{BatchConfig, Scheduler};
use engine::speculative::{Drafter, Speculation};
use engine::{EngineError, Model};

use super::Server;

/// How a worker speculates, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecOptions {
    /// The draft model's file or directory; `None`: prompt lookup.
    pub draft_model: Option<PathBuf>,
    /// Draft tokens per step at most.
    pub num_draft_tokens: usize,
    /// Speculate only while at most this many sequences decode together.
    pub max_batch: usize,
}

/// Speculation a server runs with: its options and the draft model.
pub(super) struct Speculating {
    options: SpecOptions,
    draft: Option<Model>,
}

impl Speculating {
    fn speculation(&self) -> Speculation<'_> {
        Speculation {
            drafter: match &self.draft {
                Some(model) => Drafter::Model(model),
                None => Drafter::PromptLookup,
            },
            num_draft_tokens: self.options.num_draft_tokens,
            max_batch: self.options.max_batch,
        }
    }
}

impl Server {
    /// Speculates as `options` say, with `draft` (loaded from
    /// `options.draft_model`) as the drafter when given. A model that
    /// cannot roll back its caches runs without speculation (logged); a
    /// draft model that does not fit the model is an error.
    pub fn with_speculation(
        mut self,
        options: SpecOptions,
        draft: Option<Model>,
    ) -> Result<Server, EngineError> {
        let spec = Speculating { options, draft };
        if !self.loaded.model.trimmable() {
            tracing::warn!(
                model_type = %self.loaded.model.config.model_type,
                "speculative decoding is off for this model: its recurrent (linear-attention) \
                 layers cannot roll back rejected draft tokens"
            );
            return Ok(self);
        }
        spec.speculation().check(&self.loaded.model)?;
        tracing::info!(
            drafter = match &spec.options.draft_model {
                Some(path) => path.display().to_string(),
                None => "prompt lookup".to_string(),
            },
            num_draft_tokens = spec.options.num_draft_tokens,
            max_batch = spec.options.max_batch,
            "speculative decoding"
        );
        self.spec = Some(spec);
        Ok(self)
    }
}

/// The scheduler of `model`, speculating when `spec` says so.
pub(super) fn scheduler<'m>(
    model: &'m Model,
    batch: BatchConfig,
    spec: Option<&'m Speculating>,
) -> Scheduler<'m> {
    let Some(spec) = spec else {
        return Scheduler::new(model, batch);
    };
    match Scheduler::new(model, batch).with_speculation(spec.speculation()) {
        Ok(scheduler) => scheduler,
        Err(e) => {
            // Checked when the speculation was set up: not reached.
            tracing::warn!("speculative decoding is off: {e}");
            Scheduler::new(model, batch)
        }
    }
}
