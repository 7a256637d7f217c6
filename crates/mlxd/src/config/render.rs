//! `mlxd config show`: the effective configuration as TOML that could be
//! read back, every value followed by a comment saying where it came from.
//! API keys are not printed, only how many there are.

use std::fmt::Write as _;

use super::{ByteSize, Config, HumanDuration, ModelOverrides, Provenance};

/// A TOML value: a string, number, boolean or array, quoted as TOML wants.
fn value<T: Into<toml::Value>>(v: T) -> String {
    v.into().to_string()
}

fn strings(items: &[String]) -> String {
    value(toml::Value::Array(
        items
            .iter()
            .map(|s| toml::Value::String(s.clone()))
            .collect(),
    ))
}

fn hidden(keys: &[String]) -> String {
    value(toml::Value::Array(
        keys.iter()
            .map(|_| toml::Value::String("<hidden>".to_string()))
            .collect(),
    ))
}

struct Out<'a> {
    text: String,
    provenance: &'a Provenance,
}

impl Out<'_> {
    fn line(&mut self, section: &str, key: &str, rendered: String) {
        let source = self.provenance.source(&format!("{section}.{key}"));
        let entry = format!("{key} = {rendered}");
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "{entry:<40} # {source}");
    }

    fn commented(&mut self, section: &str, key: &str, what: &str) {
        let source = self.provenance.source(&format!("{section}.{key}"));
        let entry = format!("# {key} = <unset>");
        let _ = writeln!(self.text, "{entry:<40} # {source}: {what}");
    }

    fn header(&mut self, header: &str) {
        let _ = writeln!(self.text, "\n[{header}]");
    }
}

/// Renders `config` with each value's source, in a fixed order.
pub fn render(config: &Config, provenance: &Provenance) -> String {
    let mut out = Out {
        text: String::new(),
        provenance,
    };
    let file = match &provenance.file {
        Some(path) => path.display().to_string(),
        None => "none".to_string(),
    };
    let _ = writeln!(out.text, "# configuration file: {file}");
    let _ = writeln!(out.text, "# machine {}", summary(config, provenance));

    let s = &config.server;
    out.header("server");
    out.line("server", "host", value(s.host.as_str()));
    out.line("server", "port", value(i64::from(s.port)));
    out.line("server", "admin_port", value(i64::from(s.admin_port)));
    out.line("server", "admin_host", value(s.admin_host.as_str()));
    out.line("server", "admin", value(s.admin));
    out.line("server", "api_keys", hidden(&s.api_keys));
    out.line("server", "admin_api_keys", hidden(&s.admin_api_keys));
    out.line("server", "public_metrics", value(s.public_metrics));
    out.line("server", "cors_origins", strings(&s.cors_origins));
    out.line(
        "server",
        "max_body_bytes",
        value(ByteSize(s.max_body_bytes).to_string()),
    );
    out.line(
        "server",
        "request_timeout",
        value(HumanDuration(s.request_timeout).to_string()),
    );
    out.line("server", "queue_depth", s.queue_depth.to_string());
    out.line("server", "max_connections", s.max_connections.to_string());
    out.line(
        "server",
        "read_timeout",
        value(HumanDuration(s.read_timeout).to_string()),
    );
    out.line(
        "server",
        "responses_store_max",
        s.responses_store_max.to_string(),
    );

    let m = &config.models;
    out.header("models");
    out.line("models", "dir", value(m.dir.display().to_string()));
    out.line(
        "models",
        "hf_cache",
        value(m.hf_cache.display().to_string()),
    );
    match &m.default {
        Some(name) => out.line("models", "default", value(name.as_str())),
        None => out.commented("models", "default", "the built-in model"),
    }
    out.line("models", "preload", strings(&m.preload));
    out.line("models", "keep_alive", keep_alive(m.keep_alive));
    match m.context_length {
        Some(n) => out.line("models", "context_length", value(i64::from(n))),
        None => out.commented("models", "context_length", "each model's own"),
    }
    let budget = match m.memory_budget {
        super::MemoryBudget::Fraction(f) => value(f),
        super::MemoryBudget::Bytes(b) => value(ByteSize(b).to_string()),
    };
    out.line("models", "memory_budget", budget);
    let _ = writeln!(
        out.text,
        "{:<40} # = {} on this machine",
        "",
        super::gib(m.memory_budget_bytes)
    );
    out.line("models", "max_batch", m.max_batch.to_string());
    out.line("models", "max_replays", m.max_replays.to_string());
    match m.speculative {
        Some(mode) => out.line("models", "speculative", value(mode.name())),
        None => out.commented("models", "speculative", "off"),
    }
    match &m.draft_model {
        Some(draft) => out.line("models", "draft_model", value(draft.as_str())),
        None => out.commented("models", "draft_model", "none"),
    }
    let or_default = |v: Option<usize>, d: usize| v.unwrap_or(d).to_string();
    let n = or_default(
        m.num_draft_tokens,
        engine::speculative::DEFAULT_DRAFT_TOKENS,
    );
    out.line("models", "num_draft_tokens", n);
    let n = or_default(m.spec_max_batch, engine::speculative::DEFAULT_MAX_BATCH);
    out.line("models", "spec_max_batch", n);
    match m.kv_memory {
        Some(b) => out.line("models", "kv_memory", value(ByteSize(b).to_string())),
        None => out.commented("models", "kv_memory", "a quarter of memory_budget"),
    }
    match m.prompt_cache {
        Some(b) => out.line("models", "prompt_cache", value(ByteSize(b).to_string())),
        None => out.commented("models", "prompt_cache", "a quarter of kv_memory"),
    }
    out.line(
        "models",
        "prompt_cache_dir",
        value(m.prompt_cache_dir.display().to_string()),
    );
    let on_disk = match m.prompt_cache_disk {
        0 => "0".to_string(),
        b => value(ByteSize(b).to_string()),
    };
    out.line("models", "prompt_cache_disk", on_disk);
    match m.kv_bits {
        Some(b) => out.line("models", "kv_bits", value(i64::from(b))),
        None => out.commented("models", "kv_bits", "full precision"),
    }
    match m.kv_group_size {
        Some(g) => out.line("models", "kv_group_size", value(i64::from(g))),
        None => out.commented(
            "models",
            "kv_group_size",
            &super::DEFAULT_KV_GROUP_SIZE.to_string(),
        ),
    }

    if !m.aliases.is_empty() {
        out.header("models.aliases");
        for (name, target) in &m.aliases {
            out.line("models.aliases", &toml_key(name), value(target.as_str()));
        }
    }
    for (name, o) in &m.overrides {
        let key = toml_key(name);
        let source = provenance.source(&format!("models.overrides.{name}"));
        let _ = writeln!(out.text, "\n[models.overrides.{key}] # {source}");
        write_overrides(&mut out.text, o);
    }

    out.header("log");
    out.line("log", "level", value(config.log.level.as_str()));
    out.line("log", "format", value(config.log.format.to_string()));
    out.text
}

fn write_overrides(text: &mut String, o: &ModelOverrides) {
    let mut put = |key: &str, v: Option<String>| {
        if let Some(v) = v {
            let _ = writeln!(text, "{key} = {v}");
        }
    };
    put(
        "context_length",
        o.context_length.map(|v| value(i64::from(v))),
    );
    put("keep_alive", o.keep_alive.map(keep_alive));
    put("temperature", o.temperature.map(float));
    put("top_p", o.top_p.map(float));
    put("top_k", o.top_k.map(|v| value(i64::from(v))));
    put("min_p", o.min_p.map(float));
    put("repetition_penalty", o.repetition_penalty.map(float));
    put("max_tokens", o.max_tokens.map(|v| value(i64::from(v))));
    put("pooling", o.pooling.map(|p| value(p.name())));
    put(
        "prompt_cache_disk",
        o.prompt_cache_disk.map(|b| value(b.to_string())),
    );
    put("speculative", o.speculative.map(|m| value(m.name())));
    put("draft_model", o.draft_model.as_deref().map(value));
    let count = |v: Option<usize>| v.map(|v| value(v as i64));
    put("num_draft_tokens", count(o.num_draft_tokens));
    put("spec_max_batch", count(o.spec_max_batch));
    put("kv_bits", o.kv_bits.map(|v| value(i64::from(v))));
    put(
        "kv_group_size",
        o.kv_group_size.map(|v| value(i64::from(v))),
    );
}

/// An f32 as written (`0.7`, not its f64 widening `0.699999988`).
fn float(v: f32) -> String {
    let text = v.to_string();
    if text.contains(['.', 'e', 'n', 'i']) {
        text
    } else {
        format!("{text}.0")
    }
}

fn keep_alive(k: super::KeepAlive) -> String {
    match k {
        super::KeepAlive::Forever => "-1".to_string(),
        super::KeepAlive::Unload => "0".to_string(),
        super::KeepAlive::For(_) => value(k.to_string()),
    }
}

/// A bare TOML key when it can be one, else a quoted one.
fn toml_key(name: &str) -> String {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        name.to_string()
    } else {
        value(name)
    }
}

/// One line for the daemon's start-up log (and `config show`'s header): the machine's memory tier and
/// the keep-alive and memory budget in force, each with its source.
pub fn summary(config: &Config, provenance: &Provenance) -> String {
    let auto = super::Auto::for_memory(config.machine.total_memory);
    format!(
        "memory {} (tier {}); keep_alive {} ({}); memory budget {} = {} ({})",
        super::gib(config.machine.total_memory),
        auto.tier,
        config.models.keep_alive,
        provenance.source("models.keep_alive"),
        config.models.memory_budget,
        super::gib(config.models.memory_budget_bytes),
        provenance.source("models.memory_budget"),
    )
}
