//! Precedence, automatic values and errors of the configuration.
use super::*;

const GIB: u64 = 1 << 30;

fn machine(gib: u64) -> Machine {
    Machine {
        total_memory: gib * GIB,
    }
}

fn file_args(text: &str) -> (tempfile::TempDir, ConfigArgs) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mlxd.toml");
    std::fs::write(&path, text).unwrap();
    let args = ConfigArgs {
        config: Some(path),
        ..ConfigArgs::default()
    };
    (dir, args)
}

#[test]
fn auto_values_follow_the_memory_tier() {
    assert_eq!(Auto::for_memory(128 * GIB).tier, "≥64 GB");
    // A "64 GB" machine reports slightly less.
    assert_eq!(Auto::for_memory(64 * GIB - 200 * (1 << 20)).tier, "≥64 GB");
    assert_eq!(Auto::for_memory(63 * GIB).tier, "24-63 GB");
    assert_eq!(Auto::for_memory(24 * GIB).tier, "24-63 GB");
    assert_eq!(Auto::for_memory(16 * GIB).tier, "<24 GB");
    let big = Auto::for_memory(192 * GIB);
    let small = Auto::for_memory(8 * GIB);
    assert!(big.memory_fraction > small.memory_fraction);
    assert!(big.keep_alive.idle_timeout() > small.keep_alive.idle_timeout());
}

#[test]
fn flags_beat_files_which_beat_defaults() {
    let (_dir, mut args) = file_args("[server]\nport = 9000\nhost = \"0.0.0.0\"\n");
    args.server.port = Some(9100);
    args.sources
        .insert("port".into(), Source::Env("MLXD_PORT".into()));
    let (config, prov) = load_for(&args, machine(32)).unwrap();
    assert_eq!(config.server.port, 9100);
    assert_eq!(prov.source("server.port"), &Source::Env("MLXD_PORT".into()));
    assert_eq!(config.server.host, "0.0.0.0");
    assert!(matches!(prov.source("server.host"), Source::File(_)));
    assert_eq!(config.server.queue_depth, 64);
    assert_eq!(prov.source("server.queue_depth"), &Source::Default);
    assert!(matches!(prov.source("models.keep_alive"), Source::Auto(_)));
    assert_eq!(
        config.models.memory_budget_bytes,
        (32.0 * 0.65 * GIB as f64) as u64
    );
}

#[test]
fn file_values_replace_auto_ones() {
    let (_dir, args) = file_args("[models]\nmemory_budget = \"20GiB\"\nkeep_alive = -1\n");
    let (config, prov) = load_for(&args, machine(128)).unwrap();
    assert_eq!(config.models.memory_budget_bytes, 20 * GIB);
    assert_eq!(config.models.keep_alive, KeepAlive::Forever);
    assert!(matches!(
        prov.source("models.memory_budget"),
        Source::File(_)
    ));
}

#[test]
fn workers_kv_is_sized_from_the_model_unless_set() {
    let (_dir, args) = file_args("[models]\nmemory_budget = \"20GiB\"\n");
    let (config, _) = load_for(&args, machine(128)).unwrap();
    assert_eq!(
        config.models.worker_kv(),
        WorkerKv::Tokens {
            tokens: 32 * engine::memory::KV_TOKENS_PER_SEQUENCE,
            cap: 5 * GIB
        }
    );
    assert_eq!(config.models.prompt_cache, None);
    let (_dir, args) =
        file_args("[models]\nmemory_budget = \"20GiB\"\nkv_memory = \"2GiB\"\nprompt_cache = 0\n");
    let (config, _) = load_for(&args, machine(128)).unwrap();
    assert_eq!(config.models.worker_kv(), WorkerKv::Bytes(2 * GIB));
    assert_eq!(config.models.prompt_cache, Some(0));
}

#[test]
fn the_admin_api_stays_on_loopback_and_leaves_it_only_with_a_key() {
    // The OpenAI API on every interface takes the admin API nowhere.
    let (_dir, args) = file_args("[server]\nhost = \"0.0.0.0\"\napi_keys = [\"k\"]\n");
    let (config, _) = load_for(&args, machine(32)).unwrap();
    assert_eq!(config.server.admin_host, "127.0.0.1");
    for loopback in ["127.0.0.1", "::1", "[::1]"] {
        let (_dir, args) = file_args(&format!("[server]\nadmin_host = \"{loopback}\"\n"));
        load_for(&args, machine(32)).unwrap();
    }
    for open in ["0.0.0.0", "::", "192.168.1.20"] {
        let (_dir, args) = file_args(&format!("[server]\nadmin_host = \"{open}\"\n"));
        let e = load_for(&args, machine(32)).unwrap_err().to_string();
        assert!(e.contains("--admin-api-key KEY"), "{e}");
        assert!(e.contains("`server.admin_host` (file"), "{e}");
        let (_dir, args) = file_args(&format!(
            "[server]\nadmin_host = \"{open}\"\nadmin_api_keys = [\"a\"]\n"
        ));
        load_for(&args, machine(32)).unwrap();
        let (_dir, args) = file_args(&format!(
            "[server]\nadmin_host = \"{open}\"\nadmin = false\n"
        ));
        load_for(&args, machine(32)).unwrap();
    }
    let (_dir, args) = file_args("[server]\nadmin_host = \"example.com\"\n");
    let e = load_for(&args, machine(32)).unwrap_err().to_string();
    assert!(e.contains("not an IP address"), "{e}");
}

#[test]
fn errors_name_the_key_and_line() {
    let (_dir, args) = file_args("[server]\nhost = \"::1\"\nport = \"high\"\n");
    let err = load_for(&args, machine(32)).unwrap_err().to_string();
    assert!(err.contains("mlxd.toml:3"), "{err}");
    assert!(err.contains("`server.port`"), "{err}");

    let (_dir, args) = file_args("[models]\n\nkeep_alive = \"a while\"\n");
    let err = load_for(&args, machine(32)).unwrap_err().to_string();
    assert!(
        err.contains("mlxd.toml:3") && err.contains("`models.keep_alive`"),
        "{err}"
    );

    let (_dir, args) = file_args("[log]\nlevel = \"info\"\nfromat = \"json\"\n");
    let err = load_for(&args, machine(32)).unwrap_err().to_string();
    assert!(
        err.contains("mlxd.toml:3") && err.contains("`log.fromat`"),
        "{err}"
    );

    let (_dir, args) = file_args("[models.overrides.\"q\"]\ntop_k = 4\ntopp = 1\n");
    let err = load_for(&args, machine(32)).unwrap_err().to_string();
    assert!(
        err.contains(":3") && err.contains("`models.overrides.q.topp`"),
        "{err}"
    );

    let (_dir, args) = file_args("[server\n");
    let err = load_for(&args, machine(32)).unwrap_err().to_string();
    assert!(err.contains("mlxd.toml:1"), "{err}");
}

#[test]
fn cross_key_errors_name_both_keys() {
    let (_dir, args) = file_args("[server]\nport = 8000\nadmin_port = 8000\n");
    let err = load_for(&args, machine(32)).unwrap_err().to_string();
    assert!(
        err.contains("server.port") && err.contains("server.admin_port"),
        "{err}"
    );
    let (_dir, args) = file_args("[server]\nport = 8000\nadmin_port = 8000\nadmin = false\n");
    assert!(load_for(&args, machine(32)).is_ok());
    let (_dir, args) = file_args("[models.overrides.x]\ntemperature = 9.0\n");
    let err = load_for(&args, machine(32)).unwrap_err().to_string();
    assert!(
        err.contains("models.overrides.x") && err.contains("temperature"),
        "{err}"
    );
}

#[test]
fn per_model_overrides_fall_back_to_global_values() {
    let (_dir, args) = file_args(
        "[models]\nkeep_alive = \"5m\"\ncontext_length = 4096\n\
         [models.overrides.big]\nkeep_alive = 0\ncontext_length = 1024\n",
    );
    let (config, _) = load_for(&args, machine(32)).unwrap();
    assert_eq!(config.models.keep_alive_for("big"), KeepAlive::Unload);
    assert_eq!(
        config.models.keep_alive_for("other"),
        KeepAlive::For(Duration::from_secs(300))
    );
    assert_eq!(config.models.context_length_for("big"), Some(1024));
    assert_eq!(config.models.context_length_for("other"), Some(4096));
}

#[test]
fn meminfo_total_is_read_in_bytes() {
    let text = "MemTotal:       131890012 kB\nMemFree:         1000 kB\n";
    assert_eq!(parse_meminfo(text), Some(131_890_012 * 1024));
    assert_eq!(parse_meminfo("nothing"), None);
}

#[test]
fn a_missing_named_file_is_an_error() {
    let args = ConfigArgs {
        config: Some(PathBuf::from("/no/such/mlxd.toml")),
        ..ConfigArgs::default()
    };
    let err = format!("{:#}", load_for(&args, machine(32)).unwrap_err());
    assert!(err.contains("/no/such/mlxd.toml"), "{err}");
}

#[test]
fn a_models_embedding_pooling_is_read_and_a_bad_one_named() {
    let (_dir, args) = file_args("[models.overrides.e5]\npooling = \"mean\"\n");
    let (config, _) = load_for(&args, machine(32)).unwrap();
    assert_eq!(
        config.models.overrides_for("e5").pooling,
        Some(super::EmbedPooling::Mean)
    );
    assert_eq!(config.models.overrides_for("other").pooling, None);
    let (_dir, args) = file_args("[models.overrides.e5]\npooling = \"max\"\n");
    let err = load_for(&args, machine(32)).unwrap_err().to_string();
    assert!(err.contains("pooling") || err.contains("max"), "{err}");
}

#[test]
fn the_prompt_cache_on_disk_is_off_by_default_and_set_per_model() {
    let (_dir, args) = file_args("");
    let (config, _) = load_for(&args, machine(32)).unwrap();
    assert_eq!(config.models.prompt_cache_disk, 0);
    assert!(
        config
            .models
            .prompt_cache_dir
            .ends_with(".cache/mlxd/prompt-cache")
    );
    let (_dir, args) = file_args(
        "[models]\nprompt_cache_dir = \"/var/cache/kv\"\nprompt_cache_disk = \"20GiB\"\n\
         [models.overrides.big]\nprompt_cache_disk = 0\n",
    );
    let (config, _) = load_for(&args, machine(32)).unwrap();
    assert_eq!(
        config.models.prompt_cache_dir,
        PathBuf::from("/var/cache/kv")
    );
    assert_eq!(config.models.prompt_cache_disk, 20 * GIB);
    assert_eq!(
        config.models.overrides_for("big").prompt_cache_disk,
        Some(ByteSize(0))
    );
    let text = render(&config, &Provenance::default());
    assert!(text.contains("prompt_cache_disk = \"20GiB\""), "{text}");
    // Entries on disk come from the memory tier: both or neither.
    let (_dir, args) = file_args("[models]\nprompt_cache = 0\nprompt_cache_disk = \"1GiB\"\n");
    let e = load_for(&args, machine(32)).unwrap_err().to_string();
    assert!(e.contains("models.prompt_cache_disk"), "{e}");
    assert!(e.contains("models.prompt_cache`"), "{e}");
}

#[test]
fn speculative_decoding_is_configured_per_model() {
    let (_dir, args) = file_args(
        "[models]\nspeculative = \"prompt_lookup\"\nnum_draft_tokens = 6\n\
         [models.overrides.big]\ndraft_model = \"small\"\nspec_max_batch = 2\n\
         [models.overrides.hybrid]\nspeculative = \"off\"\n",
    );
    let (config, _) = load_for(&args, machine(32)).unwrap();
    let m = &config.models;
    let lookup = SpecChoice {
        draft_model: None,
        num_draft_tokens: 6,
        max_batch: engine::speculative::DEFAULT_MAX_BATCH,
    };
    assert_eq!(m.speculative_for("other"), Ok(Some(lookup.clone())));
    assert_eq!(m.speculative_default(), Ok(Some(lookup)));
    let big = SpecChoice {
        draft_model: Some("small".into()),
        num_draft_tokens: 6,
        max_batch: 2,
    };
    assert_eq!(m.speculative_for("big"), Ok(Some(big.clone())));
    assert_eq!(m.speculative_for("hybrid"), Ok(None));
    let located = |name: &str| (name == "small").then(|| PathBuf::from("/m/small"));
    assert_eq!(
        speculative_args(Some(&big), located),
        [
            "--draft-model",
            "/m/small",
            "--num-draft-tokens",
            "6",
            "--spec-max-batch",
            "2"
        ]
    );
    assert!(speculative_args(None, located).is_empty());
    // Off by default.
    let (config, _) = load_for(&ConfigArgs::default(), machine(32)).unwrap();
    assert_eq!(config.models.speculative_default(), Ok(None));
}

#[test]
fn bad_speculative_settings_are_refused_with_their_key() {
    for (text, key, what) in [
        (
            "[models]\nspeculative = \"draft_model\"\n",
            "models.speculative",
            "needs draft_model",
        ),
        (
            "[models.overrides.x]\nnum_draft_tokens = 0\n",
            "models.overrides.x",
            "num_draft_tokens must be 1 to 32",
        ),
        (
            "[models]\nspec_max_batch = 0\n",
            "models.speculative",
            "spec_max_batch must be at least 1",
        ),
    ] {
        let (_dir, args) = file_args(text);
        let e = load_for(&args, machine(32)).unwrap_err().to_string();
        assert!(e.contains(key) && e.contains(what), "{text}: {e}");
    }
    let (_dir, args) = file_args("[models]\nspeculative = \"sometimes\"\n");
    let e = load_for(&args, machine(32)).unwrap_err().to_string();
    assert!(e.contains("speculative"), "{e}");
}

#[test]
fn kv_bits_are_read_per_model_and_bad_values_refused_naming_the_key() {
    let (_dir, args) = file_args(
        "[models]\nkv_bits = 8\n\
         [models.overrides.small]\nkv_bits = 4\nkv_group_size = 32\n",
    );
    let (config, _) = load_for(&args, machine(32)).unwrap();
    let kv = |name| {
        config
            .models
            .kv_bits_for(name)
            .map(|k| (k.bits, k.group_size))
    };
    assert_eq!(kv("small"), Some((4, 32)));
    assert_eq!(kv("other"), Some((8, DEFAULT_KV_GROUP_SIZE)));
    let (_dir, args) = file_args("[models]\nmax_batch = 4\n");
    let (config, _) = load_for(&args, machine(32)).unwrap();
    assert_eq!(config.models.kv_bits_for("any"), None);

    for (text, key) in [
        ("[models]\nkv_bits = 3\n", "`models.kv_bits`"),
        ("[models]\nkv_bits = 16\n", "`models.kv_bits`"),
        (
            "[models]\nkv_bits = 8\nkv_group_size = 48\n",
            "`models.kv_group_size`",
        ),
        (
            "[models.overrides.x]\nkv_bits = 2\n",
            "`models.overrides.x.kv_bits`",
        ),
        (
            "[models.overrides.x]\nkv_bits = 4\nkv_group_size = 256\n",
            "`models.overrides.x.kv_group_size`",
        ),
        ("[models]\nkv_bits = \"eight\"\n", "`models.kv_bits`"),
    ] {
        let (_dir, args) = file_args(text);
        let err = load_for(&args, machine(32)).unwrap_err().to_string();
        assert!(err.contains(key), "{text}: {err}");
    }
}

#[test]
fn the_prompt_cache_on_disk_and_a_quantized_kv_cache_are_refused_together() {
    for (text, key) in [
        (
            "[models]\nkv_bits = 8\nprompt_cache_disk = \"1GiB\"\n",
            "`models.kv_bits`",
        ),
        (
            "[models]\nprompt_cache_disk = \"1GiB\"\n[models.overrides.q]\nkv_bits = 4\n",
            "`models.overrides.q.kv_bits`",
        ),
    ] {
        let (_dir, args) = file_args(text);
        let e = load_for(&args, machine(32)).unwrap_err().to_string();
        assert!(
            e.contains(key) && e.contains("prompt_cache_disk"),
            "{text}: {e}"
        );
    }
    // Each on a model of its own is fine.
    let (_dir, args) = file_args(
        "[models]\nprompt_cache_disk = \"1GiB\"\n[models.overrides.q]\nkv_bits = 4\nprompt_cache_disk = 0\n",
    );
    load_for(&args, machine(32)).unwrap();
}
