//! The in-memory store of Responses API responses, for
//! `previous_response_id`, `GET /v1/responses/{id}` (and its input items)
//! and `DELETE /v1/responses/{id}`.
//!
//! A least-recently-used map bounded by a count (`server.responses_store_max`,
//! 0 = nothing is stored), as OpenAI's own store keeps responses for a
//! while and llama-server and Ollama keep none: a daemon restart forgets
//! them all. Each entry keeps the whole conversation up to and including
//! its output, so a follow-up needs one lookup, not a walk up the chain.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use api::responses::{Item, ResponseObject};

/// One stored response.
#[derive(Debug)]
pub struct Stored {
    pub response: ResponseObject,
    /// The request's own `input` items, each with an id.
    pub input: Vec<Item>,
    /// Every item of the conversation: those before the request, its input,
    /// its output.
    pub conversation: Vec<Item>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Bumped on every use; the smallest entry of `order` is the least
    /// recently used.
    tick: u64,
    entries: HashMap<String, (u64, Arc<Stored>)>,
    order: BTreeMap<u64, String>,
}

/// The bounded store; cheap to share.
#[derive(Debug)]
pub struct ResponseStore {
    max: usize,
    inner: Mutex<Inner>,
}

impl ResponseStore {
    /// A store of at most `max` responses (0: stores nothing).
    pub fn new(max: usize) -> ResponseStore {
        ResponseStore {
            max,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Whether responses are kept at all.
    pub fn enabled(&self) -> bool {
        self.max > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `stored` under its response's id, dropping the least recently
    /// used entry when full.
    pub fn insert(&self, stored: Stored) {
        if !self.enabled() {
            return;
        }
        let id = stored.response.id.clone();
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        if let Some((old, _)) = inner.entries.insert(id.clone(), (tick, Arc::new(stored))) {
            inner.order.remove(&old);
        }
        inner.order.insert(tick, id);
        while inner.entries.len() > self.max {
            let Some((_, oldest)) = inner.order.pop_first() else {
                break;
            };
            inner.entries.remove(&oldest);
        }
    }

    /// The stored response, marked as just used.
    pub fn get(&self, id: &str) -> Option<Arc<Stored>> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let (used, stored) = inner.entries.get_mut(id)?;
        let old = std::mem::replace(used, tick);
        let stored = Arc::clone(stored);
        inner.order.remove(&old);
        inner.order.insert(tick, id.to_owned());
        Some(stored)
    }

    /// Forgets a response; false when it was not stored.
    pub fn remove(&self, id: &str) -> bool {
        let mut inner = self.lock();
        match inner.entries.remove(id) {
            Some((tick, _)) => {
                inner.order.remove(&tick);
                true
            }
            None => false,
        }
    }

    /// How many responses are stored.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::responses::{ResponseBuilder, ResponseHead, parse_responses_for};

    fn stored(id: &str) -> Stored {
        let req = parse_responses_for(br#"{"model": "m", "input": "x"}"#, None).expect("valid");
        let head = ResponseHead {
            id: id.to_owned(),
            created_at: 0,
            model: "m".into(),
            instructions: None,
            previous_response_id: None,
            store: true,
        };
        Stored {
            response: ResponseBuilder::new(head, &req.echo, |p| p.to_owned()).into_response(),
            input: req.input.clone(),
            conversation: req.input,
        }
    }

    #[test]
    fn the_least_recently_used_response_goes_first() {
        let store = ResponseStore::new(2);
        store.insert(stored("a"));
        store.insert(stored("b"));
        assert!(store.get("a").is_some());
        store.insert(stored("c"));
        assert_eq!(store.len(), 2);
        assert!(store.get("b").is_none());
        assert!(store.get("a").is_some() && store.get("c").is_some());
        assert!(store.remove("a"));
        assert!(!store.remove("a"));
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn a_store_of_zero_keeps_nothing() {
        let store = ResponseStore::new(0);
        store.insert(stored("a"));
        assert!(!store.enabled());
        assert!(store.get("a").is_none());
    }
}
