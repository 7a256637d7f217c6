//! Reading the configuration: the file, the environment and the flags
//! merged over the defaults, with where each value came from.

use std::path::Path;

use anyhow::Context;

use super::*;

/// Reads the configuration: the file (`args.config`, else the default path
/// when it exists), then the environment and flags already parsed into
/// `args`, over the defaults and the automatic values for this machine.
pub fn load(args: &ConfigArgs) -> anyhow::Result<(Config, Provenance)> {
    let machine = Machine {
        total_memory: total_memory()?,
    };
    load_for(args, machine)
}

/// [`load`] for a given machine (tests choose the memory size).
pub fn load_for(args: &ConfigArgs, machine: Machine) -> anyhow::Result<(Config, Provenance)> {
    let mut provenance = Provenance::default();
    let path = match &args.config {
        Some(path) => Some(path.clone()),
        None => Some(default_config_path()).filter(|p| p.exists()),
    };
    let file = match &path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading configuration file {}", path.display()))?;
            parse_file(&text, path)?
        }
        None => FileLayer::default(),
    };
    provenance.file = path.clone();
    let file_source = Source::File(path.unwrap_or_default());

    let mut config = Config::defaults(&home_dir(), machine);
    let auto = Auto::for_memory(machine.total_memory);
    let auto_why = format!(
        "{} of memory, tier {}",
        gib(machine.total_memory),
        auto.tier
    );
    provenance.set("models.keep_alive", Source::Auto(auto_why.clone()));
    provenance.set("models.memory_budget", Source::Auto(auto_why));
    // The hub cache's default follows huggingface_hub's variables.
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE").filter(|d| !d.is_empty()) {
        config.models.hf_cache = PathBuf::from(dir);
        provenance.set("models.hf_cache", Source::Env("HF_HUB_CACHE".into()));
    } else if let Some(home) = std::env::var_os("HF_HOME").filter(|d| !d.is_empty()) {
        config.models.hf_cache = PathBuf::from(home).join("hub");
        provenance.set("models.hf_cache", Source::Env("HF_HOME".into()));
    }

    let mut m = Merger {
        args,
        file_source: &file_source,
        provenance: &mut provenance,
    };
    // One line per key: flag/env layer, file layer, target, conversion.
    // Arg ids are the field names, as clap derives them.
    macro_rules! pick {
        ($section:ident . $field:ident, $convert:expr) => {
            m.pick(
                concat!(stringify!($section), ".", stringify!($field)),
                stringify!($field),
                &args.$section.$field,
                &file.$section.$field,
                &mut config.$section.$field,
                $convert,
            )
        };
    }
    fn same<T>(v: T) -> T {
        v
    }
    pick!(server.host, same);
    pick!(server.port, same);
    pick!(server.admin_port, same);
    pick!(server.admin_host, same);
    pick!(server.admin, same);
    pick!(server.api_keys, same);
    pick!(server.admin_api_keys, same);
    pick!(server.public_metrics, same);
    pick!(server.cors_origins, same);
    pick!(server.max_body_bytes, |v: ByteSize| v.0);
    pick!(server.request_timeout, |v: HumanDuration| v.0);
    pick!(server.queue_depth, same);
    pick!(server.max_connections, same);
    pick!(server.read_timeout, |v: HumanDuration| v.0);
    pick!(server.responses_store_max, same);
    pick!(models.dir, same);
    pick!(models.hf_cache, same);
    pick!(models.default, Some);
    pick!(models.preload, same);
    pick!(models.keep_alive, same);
    pick!(models.context_length, Some);
    pick!(models.memory_budget, same);
    pick!(models.max_batch, same);
    pick!(models.max_replays, same);
    pick!(models.speculative, Some);
    pick!(models.draft_model, Some);
    pick!(models.num_draft_tokens, Some);
    pick!(models.spec_max_batch, Some);
    pick!(models.kv_memory, |v: ByteSize| Some(v.0));
    pick!(models.prompt_cache, |v: ByteSize| Some(v.0));
    pick!(models.prompt_cache_dir, same);
    pick!(models.prompt_cache_disk, |v: ByteSize| v.0);
    pick!(models.kv_bits, Some);
    pick!(models.kv_group_size, Some);
    pick!(log.level, same);
    pick!(log.format, same);
    let fm = &file.models;
    for (name, target) in &fm.aliases {
        provenance.set(format!("models.aliases.{name}"), file_source.clone());
        config.models.aliases.insert(name.clone(), target.clone());
    }
    for (name, overrides) in &fm.overrides {
        provenance.set(format!("models.overrides.{name}"), file_source.clone());
        config
            .models
            .overrides
            .insert(name.clone(), overrides.clone());
    }
    config.models.memory_budget_bytes = config.models.memory_budget.bytes(machine.total_memory);
    config.models.dir = expand_home(&config.models.dir);
    config.models.hf_cache = expand_home(&config.models.hf_cache);
    config.models.prompt_cache_dir = expand_home(&config.models.prompt_cache_dir);
    validate::validate(&config, &provenance)?;
    Ok((config, provenance))
}

/// Applies one key's layers in order of precedence.
struct Merger<'a> {
    args: &'a ConfigArgs,
    file_source: &'a Source,
    provenance: &'a mut Provenance,
}

impl Merger<'_> {
    #[allow(clippy::too_many_arguments)]
    fn pick<T: Clone, U>(
        &mut self,
        key: &str,
        arg_id: &str,
        flag_or_env: &Option<T>,
        file: &Option<T>,
        target: &mut U,
        convert: impl Fn(T) -> U,
    ) {
        if let Some(v) = flag_or_env {
            *target = convert(v.clone());
            self.provenance.set(key, self.args.source_of(arg_id));
        } else if let Some(v) = file {
            *target = convert(v.clone());
            self.provenance.set(key, self.file_source.clone());
        }
    }
}

/// Parses the file, naming the key and line of the first error.
fn parse_file(text: &str, path: &Path) -> anyhow::Result<FileLayer> {
    let located = |e: &toml::de::Error, key: Option<String>| {
        let line = e
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        let at = match line {
            Some(line) => format!("{}:{line}", path.display()),
            None => path.display().to_string(),
        };
        match key.filter(|k| !k.is_empty() && k != ".") {
            Some(key) => anyhow::anyhow!(
                "invalid configuration at {at}: key `{key}`: {}",
                e.message()
            ),
            None => anyhow::anyhow!("invalid configuration at {at}: {}", e.message()),
        }
    };
    let deserializer = toml::de::Deserializer::parse(text).map_err(|e| located(&e, None))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        // serde_path_to_error's path names unknown keys too (`log.fromat`).
        let key = e.path().to_string();
        let inner = e.into_inner();
        located(&inner, Some(key))
    })
}
