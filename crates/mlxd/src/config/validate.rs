//! Checks of the merged configuration that hold across keys, each error
//! naming the keys and where their values came from; among them the rule
//! that keeps the admin API off the network without a key.

use std::net::IpAddr;

use anyhow::bail;

use super::{Config, Provenance};

/// Checks that hold across keys, naming the keys and where they came from.
pub(super) fn validate(config: &Config, provenance: &Provenance) -> anyhow::Result<()> {
    let s = &config.server;
    let whence = |key: &str| format!("`{key}` ({})", provenance.source(key));
    if s.admin && s.port == s.admin_port {
        bail!(
            "invalid configuration: {} and {} are both {}: the admin API needs its own port \
             (or set server.admin = false)",
            whence("server.port"),
            whence("server.admin_port"),
            s.port
        );
    }
    if s.admin {
        let host = s.admin_host.trim_start_matches('[').trim_end_matches(']');
        let Ok(ip) = host.parse::<IpAddr>() else {
            bail!(
                "invalid configuration: {} is not an IP address: {host}",
                whence("server.admin_host")
            );
        };
        if !ip.is_loopback() && s.admin_api_keys.is_empty() {
            bail!(
                "invalid configuration: the admin API (load, unload, status with paths and \
                 configuration) would listen on {ip} ({}) with no key, open to the network: \
                 give it a key with --admin-api-key KEY (server.admin_api_keys, \
                 MLXD_ADMIN_API_KEYS), or keep it on loopback (leave out --admin-host; \
                 it need not follow --host), or turn it off with --admin false",
                whence("server.admin_host")
            );
        }
    }
    if s.queue_depth == 0 {
        bail!(
            "invalid configuration: {} must be at least 1",
            whence("server.queue_depth")
        );
    }
    if s.max_connections == 0 {
        bail!(
            "invalid configuration: {} must be at least 1",
            whence("server.max_connections")
        );
    }
    if s.read_timeout.is_zero() {
        bail!(
            "invalid configuration: {} must be more than 0",
            whence("server.read_timeout")
        );
    }
    if s.request_timeout.is_zero() {
        bail!(
            "invalid configuration: {} must be more than 0",
            whence("server.request_timeout")
        );
    }
    if config.models.max_batch == 0 {
        bail!(
            "invalid configuration: {} must be at least 1",
            whence("models.max_batch")
        );
    }
    if config.models.context_length == Some(0) {
        bail!(
            "invalid configuration: {} must be more than 0",
            whence("models.context_length")
        );
    }
    let on_disk = config.models.prompt_cache_disk > 0
        || config
            .models
            .overrides
            .values()
            .any(|o| o.prompt_cache_disk.is_some_and(|b| b.0 > 0));
    if on_disk && config.models.prompt_cache == Some(0) {
        bail!(
            "invalid configuration: the prompt cache on disk ({}) takes its entries from \
             the one in memory, which {} turns off",
            whence("models.prompt_cache_disk"),
            whence("models.prompt_cache")
        );
    }
    // The disk tier stores full-precision KV only.
    let m = &config.models;
    let disk_of = |name: Option<&str>| {
        name.and_then(|n| m.overrides.get(n))
            .and_then(|o| o.prompt_cache_disk)
            .map_or(m.prompt_cache_disk, |b| b.0)
    };
    let both = std::iter::once(None)
        .chain(m.overrides.keys().map(|n| Some(n.as_str())))
        .find(|name| disk_of(*name) > 0 && m.kv_bits_for(name.unwrap_or("")).is_some());
    if let Some(name) = both {
        let (disk, bits) = match name {
            Some(n) if m.overrides.contains_key(n) => (
                format!("models.overrides.{n}.prompt_cache_disk"),
                format!("models.overrides.{n}.kv_bits"),
            ),
            _ => ("models.prompt_cache_disk".into(), "models.kv_bits".into()),
        };
        bail!(
            "invalid configuration: the prompt cache on disk ({} or {}) keeps full-precision \
             KV and cannot be used with a quantized KV cache ({} or {})",
            whence(&disk),
            whence("models.prompt_cache_disk"),
            whence(&bits),
            whence("models.kv_bits")
        );
    }
    if let Err((table, e)) = config.models.check_speculative() {
        bail!("invalid configuration: {}: {e}", whence(&table));
    }
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&config.log.level) {
        bail!("invalid configuration: {}: {e}", whence("log.level"));
    }
    for (name, target) in &config.models.aliases {
        if target.trim().is_empty() {
            bail!(
                "invalid configuration: {} is empty",
                whence(&format!("models.aliases.{name}"))
            );
        }
    }
    check_kv(
        config.models.kv_bits,
        config.models.kv_group_size,
        &whence("models.kv_bits"),
        &whence("models.kv_group_size"),
    )?;
    for (name, o) in &config.models.overrides {
        let key = format!("models.overrides.{name}");
        check_kv(
            o.kv_bits,
            o.kv_group_size,
            &format!("`{key}.kv_bits` ({})", provenance.source(&key)),
            &format!("`{key}.kv_group_size` ({})", provenance.source(&key)),
        )?;
        let bad = |what: &str| anyhow::anyhow!("invalid configuration: {}: {what}", whence(&key));
        if o.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
            return Err(bad("temperature must be in [0, 2]"));
        }
        if o.top_p.is_some_and(|p| !(p > 0.0 && p <= 1.0)) {
            return Err(bad("top_p must be in (0, 1]"));
        }
        if o.min_p.is_some_and(|p| !(0.0..=1.0).contains(&p)) {
            return Err(bad("min_p must be in [0, 1]"));
        }
        if o.repetition_penalty.is_some_and(|p| p <= 0.0) {
            return Err(bad("repetition_penalty must be more than 0"));
        }
        if o.context_length == Some(0) || o.max_tokens == Some(0) {
            return Err(bad("context_length and max_tokens must be more than 0"));
        }
    }
    Ok(())
}

/// A quantized KV cache's `kv_bits` (4 or 8) and `kv_group_size` (32, 64
/// or 128), each named by `bits_key` and `group_key` when refused.
fn check_kv(
    bits: Option<u32>,
    group: Option<u32>,
    bits_key: &str,
    group_key: &str,
) -> anyhow::Result<()> {
    if let Some(b) = bits
        && b != 4
        && b != 8
    {
        bail!("invalid configuration: {bits_key} must be 4 or 8, not {b}");
    }
    if let Some(g) = group
        && ![32, 64, 128].contains(&g)
    {
        bail!("invalid configuration: {group_key} must be 32, 64 or 128, not {g}");
    }
    Ok(())
}
