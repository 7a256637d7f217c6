//! A row's account: the tokens read for it and its report when it ends.

use std::time::Instant;

use super::{Row, SeqEnd, SeqReport, SeqRequest};
use crate::constraint::Progress;
use crate::sampler::SampledToken;
use crate::speculative::SpecCounts;

impl Row {
    /// Adds a token read for this row, and ends the row if the token ends
    /// it (a stop token, the grammar complete or failing, `max_tokens`).
    pub(super) fn take(&mut self, token: &SampledToken, now: Instant) {
        self.generated += 1;
        self.ids.push(token.token);
        self.first_token_at.get_or_insert(now);
        self.last_token_at = Some(now);
        let stop = self.req.stop_ids.contains(&token.token);
        let grammar = match self.req.constraint.as_mut() {
            Some(c) if !stop => c.commit(token.token),
            _ => Ok(Progress::Continue),
        };
        let end = match grammar {
            _ if stop => Some(SeqEnd::Stop),
            Err(e) => Some(SeqEnd::Failed(e.to_string())),
            Ok(Progress::Done) => Some(SeqEnd::Stop),
            _ if self.generated >= self.req.max_tokens => Some(SeqEnd::Length),
            _ => None,
        };
        if end.is_some() {
            self.ended = end;
        }
    }

    pub(super) fn report(&self, end: SeqEnd) -> SeqReport {
        SeqReport {
            id: self.req.id,
            end,
            prompt_tokens: self.req.prompt.len(),
            cached_tokens: self.cached,
            generated: self.generated,
            admitted_at: Some(self.admitted_at),
            first_token_at: self.first_token_at,
            last_token_at: self.last_token_at,
            speculative: self.spec.counts,
        }
    }
}

/// The report of a sequence that ended before generating.
pub(super) fn unstarted(
    req: &SeqRequest,
    end: SeqEnd,
    cached: usize,
    admitted_at: Option<Instant>,
) -> SeqReport {
    SeqReport {
        id: req.id,
        end,
        prompt_tokens: req.prompt.len(),
        cached_tokens: cached,
        generated: 0,
        admitted_at,
        first_token_at: None,
        last_token_at: None,
        speculative: SpecCounts::default(),
    }
}
