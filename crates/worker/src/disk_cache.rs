//! Opening the prompt cache's disk tier of the worker's model
//! ([`engine::prefix_cache::DiskTier`]): its entries live in a folder named
//! by the model's identity, a hash of its configuration and weight files,
//! so that a worker of another checkpoint never reads them.

use std::path::PathBuf;

use engine::loader::LoadedModel;
use engine::prefix_cache::{DiskConfig, DiskTier, ModelIdentity};

use crate::BatchLimits;

/// The disk tier under `disk` (the folder shared by all models, and the
/// bytes this model may keep there), its folder scanned; `None` when off
/// or when it cannot be opened (logged: the worker serves without it).
pub fn open(
    loaded: &LoadedModel,
    limits: &BatchLimits,
    disk: Option<(PathBuf, u64)>,
) -> Option<DiskTier> {
    let (dir, budget) = disk.filter(|(_, bytes)| *bytes > 0)?;
    if limits.prompt_cache_memory == Some(0) {
        tracing::warn!("the prompt cache on disk needs the one in memory, which is off");
        return None;
    }
    let opened = ModelIdentity::of_path(&loaded.path)
        .map_err(|e| e.to_string())
        .and_then(|model| {
            let config = DiskConfig { dir, budget, model };
            DiskTier::open(config, loaded.model.trimmable()).map_err(|e| e.to_string())
        });
    match opened {
        Ok(tier) => Some(tier),
        Err(e) => {
            tracing::warn!("the prompt cache on disk is off: {e}");
            None
        }
    }
}
