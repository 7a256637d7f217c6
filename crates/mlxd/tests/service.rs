//! `mlxd service`: the generated systemd unit passes `systemd-analyze
//! verify`, the generated launchd plist parses, carries only launchd.plist(5)
//! keys with their types and those launchd needs, and round-trips (no Mac
//! here to load it), and `--no-start` installs and
//! `uninstall --dry-run` changes nothing.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn in_home(home: &Path) -> Command {
    let mut cmd = common::mlxd();
    cmd.env("HOME", home).env_remove("XDG_CONFIG_HOME");
    cmd
}

fn ok(out: Output) -> (String, String) {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "status {}: {stderr}", out.status);
    (String::from_utf8(out.stdout).unwrap(), stderr)
}

fn exe() -> String {
    common::mlxd_path()
        .canonicalize()
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let analyze = Command::new("systemd-analyze").arg("--version").output();
    assert!(
        analyze.is_ok_and(|o| o.status.success()),
        "systemd-analyze is missing: install Debian's systemd package (scripts/test.sh does)"
    );
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("my config/mlxd.toml");
    let (unit, stderr) = ok(in_home(home.path())
        .args([
            "service",
            "install",
            "--dry-run",
            "--manager",
            "systemd",
            "--config",
        ])
        .arg(&config)
        .output()
        .unwrap());
    let unit_path = home.path().join(".config/systemd/user/mlxd.service");
    assert!(
        stderr.contains(&format!("would write {}", unit_path.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains("would run: systemctl --user enable --now mlxd.service"),
        "{stderr}"
    );
    assert!(
        !unit_path.exists(),
        "--dry-run wrote {}",
        unit_path.display()
    );

    let exec = unit.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
    assert_eq!(
        exec,
        format!(
            "ExecStart={} serve --config \"{}\"",
            exe(),
            config.display()
        )
    );
    assert!(unit.contains("\nRestart=on-failure\n"), "{unit}");
    assert!(unit.contains("\nWantedBy=default.target\n"), "{unit}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mlxd.service");
    std::fs::write(&file, &unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&file)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{report}\n{unit}"
    );
    // Warnings about this unit (not about the host's units) count too.
    assert!(
        !report.lines().any(|l| l.contains("mlxd.service")),
        "systemd-analyze complains:\n{report}"
    );
}

#[test]
fn the_launchd_plist_parses_and_has_the_expected_keys() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("mlxd.toml");
    let (text, stderr) = ok(in_home(home.path())
        .args(["service", "install", "--dry-run", "--manager", "launchd"])
        .args(["--label", "dev.mlxd.test", "--config"])
        .arg(&config)
        .output()
        .unwrap());
    let plist_path = home.path().join("Library/LaunchAgents/dev.mlxd.test.plist");
    assert!(
        stderr.contains(&format!("would write {}", plist_path.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains("would run: launchctl bootstrap gui/"),
        "{stderr}"
    );

    let value = plist::Value::from_reader_xml(text.as_bytes()).unwrap();
    let dict = value.as_dictionary().unwrap();
    assert_eq!(dict["Label"].as_string(), Some("dev.mlxd.test"));
    let args: Vec<&str> = dict["ProgramArguments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_string().unwrap())
        .collect();
    let config = config.display().to_string();
    assert_eq!(args, [exe().as_str(), "serve", "--config", config.as_str()]);
    assert_eq!(dict["KeepAlive"].as_boolean(), Some(true));
    assert_eq!(dict["RunAtLoad"].as_boolean(), Some(true));
    let logs = home.path().join("Library/Logs/mlxd");
    for key in ["StandardOutPath", "StandardErrorPath"] {
        let path = Path::new(dict[key].as_string().unwrap());
        assert_eq!(path.parent(), Some(logs.as_path()), "{key}");
    }
}

/// A value's type as launchd.plist(5) names them.
fn kind(v: &plist::Value) -> &'static str {
    match v {
        plist::Value::String(_) => "string",
        plist::Value::Boolean(_) => "boolean",
        plist::Value::Integer(_) => "integer",
        plist::Value::Array(_) => "array",
        plist::Value::Dictionary(_) => "dictionary",
        _ => "other",
    }
}

/// The keys of launchd.plist(5) a user agent may carry, with their types
/// (`KeepAlive` may also be a dictionary of conditions).
const LAUNCHD_KEYS: &[(&str, &[&str])] = &[
    ("Label", &["string"]),
    ("Disabled", &["boolean"]),
    ("Program", &["string"]),
    ("ProgramArguments", &["array"]),
    ("EnvironmentVariables", &["dictionary"]),
    ("WorkingDirectory", &["string"]),
    ("KeepAlive", &["boolean", "dictionary"]),
    ("RunAtLoad", &["boolean"]),
    ("ProcessType", &["string"]),
    ("StandardInPath", &["string"]),
    ("StandardOutPath", &["string"]),
    ("StandardErrorPath", &["string"]),
    ("ThrottleInterval", &["integer"]),
    ("ExitTimeOut", &["integer"]),
    ("Nice", &["integer"]),
    ("Umask", &["integer"]),
    ("LimitLoadToSessionType", &["string", "array"]),
];

#[test]
fn the_launchd_plist_has_launchds_keys_and_round_trips() {
    let home = tempfile::tempdir().unwrap();
    let hub = home.path().join("external drive/hub");
    let install = |extra: &[&str]| {
        let mut cmd = in_home(home.path());
        cmd.env("HF_HUB_CACHE", &hub)
            .env_remove("HF_HOME")
            .args(["service", "install", "--manager", "launchd"])
            .args(extra);
        ok(cmd.output().unwrap())
    };
    let (text, _) = install(&["--dry-run"]);
    // Parsed as `plutil -lint` would: XML property list 1.0, a dictionary.
    let value = plist::Value::from_reader_xml(text.as_bytes()).unwrap();
    let dict = value.as_dictionary().unwrap();
    for (key, v) in dict {
        let types = LAUNCHD_KEYS
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, t)| *t)
            .unwrap_or_else(|| panic!("{key} is not a launchd.plist key"));
        assert!(types.contains(&kind(v)), "{key} is a {}", kind(v));
    }
    for key in [
        "Label",
        "ProgramArguments",
        "KeepAlive",
        "RunAtLoad",
        "StandardOutPath",
        "StandardErrorPath",
        "EnvironmentVariables",
        "ProcessType",
    ] {
        assert!(dict.contains_key(key), "{key} missing:\n{text}");
    }
    let process_type = dict["ProcessType"].as_string().unwrap();
    assert!(
        ["Background", "Standard", "Adaptive", "Interactive"].contains(&process_type),
        "{process_type}"
    );
    assert!(
        dict["ProgramArguments"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a.as_string().is_some())
    );
    // The installing shell's hub cache reaches the agent, and nothing else.
    let env = dict["EnvironmentVariables"].as_dictionary().unwrap();
    assert_eq!(env.len(), 1, "{env:?}");
    assert_eq!(
        env["HF_HUB_CACHE"].as_string(),
        Some(hub.display().to_string().as_str())
    );
    // Round trip: written out by the plist crate and read back, the same.
    let mut written = Vec::new();
    value.to_writer_xml(&mut written).unwrap();
    assert_eq!(plist::Value::from_reader_xml(&written[..]).unwrap(), value);
    // What --dry-run prints is what install writes.
    install(&["--no-start"]);
    let path = home
        .path()
        .join("Library/LaunchAgents/dev.mlxd.serve.plist");
    let installed =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(installed, text);
    assert_eq!(plist::Value::from_file(&path).unwrap(), value);
}

#[test]
fn install_without_start_writes_the_unit_and_the_example_config() {
    let home = tempfile::tempdir().unwrap();
    ok(in_home(home.path())
        .args(["service", "install", "--no-start", "--manager", "systemd"])
        .output()
        .unwrap());
    let unit = home.path().join(".config/systemd/user/mlxd.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    let config = home.path().join(".config/mlxd/mlxd.toml");
    assert!(
        text.contains(&format!("serve --config {}", config.display())),
        "{text}"
    );
    // The service must find a configuration file: the example, which parses.
    assert!(config.is_file());
    ok(in_home(home.path())
        .args(["config", "show", "--config"])
        .arg(&config)
        .output()
        .unwrap());

    let (status, _) = ok(in_home(home.path())
        .args(["service", "status", "--dry-run", "--manager", "systemd"])
        .output()
        .unwrap());
    assert!(status.is_empty());
    let (_, stderr) = ok(in_home(home.path())
        .args(["service", "uninstall", "--dry-run", "--manager", "systemd"])
        .output()
        .unwrap());
    assert!(
        stderr.contains(&format!("would remove {}", unit.display())),
        "{stderr}"
    );
    assert!(unit.exists(), "--dry-run removed the unit");
}
