//! `mlxd service install|uninstall|status`: run `mlxd serve` in the
//! background under the system's service manager, as a launchd user agent
//! on macOS (`~/Library/LaunchAgents/<label>.plist`, launchd.plist(5)) or a
//! systemd user unit on Linux (`~/.config/systemd/user/mlxd.service`,
//! systemd.service(5)). The templates are `config/mlxd.plist` and
//! `config/mlxd.service` in the source tree; the service runs this very
//! binary (its absolute path) with `serve --config <file>`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};

use crate::config;

const SYSTEMD_TEMPLATE: &str = include_str!("../../../config/mlxd.service");
const LAUNCHD_TEMPLATE: &str = include_str!("../../../config/mlxd.plist");
const EXAMPLE_CONFIG: &str = include_str!("../../../config/mlxd.toml");

/// The systemd unit's name.
const UNIT: &str = "mlxd.service";

/// `mlxd service ...`.
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Write the service definition and start it (at every login from now
    /// on). Writes the example configuration file first if there is none.
    Install(InstallArgs),
    /// Stop the service and remove its definition (the configuration file
    /// stays).
    Uninstall(ServiceArgs),
    /// Show whether the service is installed and what the service manager
    /// says about it.
    Status(ServiceArgs),
}

/// Arguments of every `mlxd service` command.
#[derive(Debug, Clone, Args)]
pub struct ServiceArgs {
    /// Print what would be written and run, and change nothing. The file's
    /// text goes to stdout, the rest to stderr.
    #[arg(long)]
    dry_run: bool,
    /// The service manager (default: launchd on macOS, systemd elsewhere).
    #[arg(long, value_enum)]
    manager: Option<Manager>,
    /// The launchd label (macOS).
    #[arg(long, default_value = "dev.mlxd.serve")]
    label: String,
}

/// Arguments of `mlxd service install`.
#[derive(Debug, Clone, Args)]
pub struct InstallArgs {
    #[command(flatten)]
    common: ServiceArgs,
    /// The configuration file the service reads (default:
    /// ~/.config/mlxd/mlxd.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Write the definition but neither load nor start it.
    #[arg(long)]
    no_start: bool,
}

/// A service manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Manager {
    /// macOS's launchd (a user agent).
    Launchd,
    /// systemd (a user unit).
    Systemd,
}

impl Manager {
    fn native() -> Manager {
        if cfg!(target_os = "macos") {
            Manager::Launchd
        } else {
            Manager::Systemd
        }
    }
}

/// Runs `mlxd service ...`.
pub fn run(command: ServiceCommand) -> anyhow::Result<()> {
    match command {
        ServiceCommand::Install(args) => install(&args),
        ServiceCommand::Uninstall(args) => uninstall(&args),
        ServiceCommand::Status(args) => status(&args),
    }
}

/// Where the definition goes.
fn definition_path(manager: Manager, label: &str) -> PathBuf {
    let home = config::home_dir();
    match manager {
        Manager::Launchd => home
            .join("Library/LaunchAgents")
            .join(format!("{label}.plist")),
        Manager::Systemd => std::env::var_os("XDG_CONFIG_HOME")
            .filter(|d| !d.is_empty())
            .map_or_else(|| home.join(".config"), PathBuf::from)
            .join("systemd/user")
            .join(UNIT),
    }
}

/// launchd's logs directory.
fn log_dir() -> PathBuf {
    config::home_dir().join("Library/Logs/mlxd")
}

/// The variables a launchd agent gets (launchd passes none of the shell's):
/// where the Hugging Face cache is, when the installing shell says.
const SERVICE_ENVIRONMENT: [&str; 2] = ["HF_HOME", "HF_HUB_CACHE"];

/// [`SERVICE_ENVIRONMENT`] as this process has it.
fn service_environment() -> Vec<(String, String)> {
    SERVICE_ENVIRONMENT
        .iter()
        .filter_map(|&key| {
            let value = std::env::var(key).ok().filter(|v| !v.is_empty())?;
            Some((key.to_owned(), value))
        })
        .collect()
}

/// The definition's text; a launchd agent gets `env` as its variables.
pub fn render(
    manager: Manager,
    exe: &Path,
    config: &Path,
    label: &str,
    env: &[(String, String)],
) -> String {
    let args = [
        exe.to_string_lossy().into_owned(),
        "serve".to_string(),
        "--config".to_string(),
        config.to_string_lossy().into_owned(),
    ];
    match manager {
        Manager::Systemd => {
            let exec: Vec<String> = args.iter().map(|a| systemd_quote(a)).collect();
            SYSTEMD_TEMPLATE.replace("{{EXEC_START}}", &exec.join(" "))
        }
        Manager::Launchd => {
            let program: Vec<String> = args
                .iter()
                .map(|a| format!("\t\t<string>{}</string>", xml_escape(a)))
                .collect();
            let environment: Vec<String> = env
                .iter()
                .map(|(k, v)| {
                    format!(
                        "\t\t<key>{}</key>\n\t\t<string>{}</string>",
                        xml_escape(k),
                        xml_escape(v)
                    )
                })
                .collect();
            LAUNCHD_TEMPLATE
                .replace("{{PROGRAM_ARGUMENTS}}", &program.join("\n"))
                .replace("{{ENVIRONMENT}}", &environment.join("\n"))
                .replace("{{LABEL}}", &xml_escape(label))
                .replace("{{LOG_DIR}}", &xml_escape(&log_dir().to_string_lossy()))
        }
    }
}

/// One word of a systemd command line: `%` and `$` doubled (specifiers and
/// variable expansion), quoted when it holds anything but plain characters.
fn systemd_quote(word: &str) -> String {
    let escaped = word.replace('%', "%%").replace('$', "$$");
    let plain = !escaped.is_empty()
        && escaped
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:=,@%$".contains(c));
    if plain {
        return escaped;
    }
    let mut quoted = String::from("\"");
    for c in escaped.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// The commands that load (or unload) the service.
fn manager_commands(manager: Manager, label: &str, path: &Path, load: bool) -> Vec<Vec<String>> {
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match manager {
        Manager::Systemd if load => vec![
            s(&["systemctl", "--user", "daemon-reload"]),
            s(&["systemctl", "--user", "enable", "--now", UNIT]),
        ],
        Manager::Systemd => vec![
            s(&["systemctl", "--user", "disable", "--now", UNIT]),
            s(&["systemctl", "--user", "daemon-reload"]),
        ],
        Manager::Launchd => {
            // SAFETY: getuid has no preconditions and cannot fail.
            let uid = unsafe { libc::getuid() };
            if load {
                vec![s(&[
                    "launchctl",
                    "bootstrap",
                    &format!("gui/{uid}"),
                    &path.to_string_lossy(),
                ])]
            } else {
                vec![s(&["launchctl", "bootout", &format!("gui/{uid}/{label}")])]
            }
        }
    }
}

fn run_command(argv: &[String]) -> anyhow::Result<()> {
    let (program, args) = argv.split_first().context("empty command")?;
    let status = Command::new(program)
        .args(args)
        .status()
        .with_context(|| format!("running {}", argv.join(" ")))?;
    if !status.success() {
        bail!("`{}` failed ({status})", argv.join(" "));
    }
    Ok(())
}

fn install(args: &InstallArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let manager = common.manager.unwrap_or_else(Manager::native);
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .context("finding the path of this mlxd")?;
    let config_path = match &args.config {
        Some(p) => std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))?,
        None => config::default_config_path(),
    };
    let path = definition_path(manager, &common.label);
    let text = render(
        manager,
        &exe,
        &config_path,
        &common.label,
        &service_environment(),
    );
    let commands = if args.no_start {
        Vec::new()
    } else {
        manager_commands(manager, &common.label, &path, true)
    };
    if common.dry_run {
        if !config_path.exists() {
            eprintln!(
                "would write the example configuration to {}",
                config_path.display()
            );
        }
        eprintln!("would write {}:", path.display());
        print!("{text}");
        for command in &commands {
            eprintln!("would run: {}", command.join(" "));
        }
        return Ok(());
    }
    if manager != Manager::native() && !commands.is_empty() {
        bail!("{manager:?} does not run on this system: use --dry-run or --no-start");
    }
    if !config_path.exists() {
        write_file(&config_path, EXAMPLE_CONFIG)?;
        eprintln!(
            "wrote the example configuration to {}",
            config_path.display()
        );
    }
    if manager == Manager::Launchd {
        std::fs::create_dir_all(log_dir())
            .with_context(|| format!("creating {}", log_dir().display()))?;
        // A loaded older definition must go before the new one loads.
        if path.exists() && !commands.is_empty() {
            for command in manager_commands(manager, &common.label, &path, false) {
                drop(run_command(&command));
            }
        }
    }
    write_file(&path, &text)?;
    eprintln!("wrote {}", path.display());
    for command in &commands {
        run_command(command)?;
    }
    if !commands.is_empty() {
        eprintln!("mlxd is running as a service (`mlxd service status` shows it)");
    }
    Ok(())
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn uninstall(args: &ServiceArgs) -> anyhow::Result<()> {
    let manager = args.manager.unwrap_or_else(Manager::native);
    let path = definition_path(manager, &args.label);
    let commands = manager_commands(manager, &args.label, &path, false);
    if args.dry_run {
        for command in &commands {
            eprintln!("would run: {}", command.join(" "));
        }
        eprintln!("would remove {}", path.display());
        return Ok(());
    }
    if !path.exists() {
        bail!(
            "the service is not installed ({} does not exist)",
            path.display()
        );
    }
    for command in &commands {
        // Stopping fails when it is not running; the file goes regardless.
        if let Err(e) = run_command(command) {
            eprintln!("warning: {e:#}");
        }
    }
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    eprintln!("removed {}", path.display());
    Ok(())
}

fn status(args: &ServiceArgs) -> anyhow::Result<()> {
    let manager = args.manager.unwrap_or_else(Manager::native);
    let path = definition_path(manager, &args.label);
    let query = match manager {
        Manager::Systemd => vec!["systemctl", "--user", "status", "--no-pager", UNIT]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>(),
        Manager::Launchd => {
            // SAFETY: getuid has no preconditions and cannot fail.
            let uid = unsafe { libc::getuid() };
            vec![
                "launchctl".to_string(),
                "print".to_string(),
                format!("gui/{uid}/{}", args.label),
            ]
        }
    };
    if args.dry_run {
        eprintln!("would read {} and run: {}", path.display(), query.join(" "));
        return Ok(());
    }
    if !path.exists() {
        println!("not installed ({} does not exist)", path.display());
        return Ok(());
    }
    println!("installed: {}", path.display());
    // The manager's own report; its exit status says "not running", which
    // is an answer, not an error of this command.
    let (program, rest) = query.split_first().context("empty command")?;
    match Command::new(program).args(rest).status() {
        Ok(_) => Ok(()),
        Err(e) => bail!("running {}: {e}", query.join(" ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_words_are_quoted_only_when_needed() {
        assert_eq!(systemd_quote("/usr/bin/mlxd"), "/usr/bin/mlxd");
        assert_eq!(systemd_quote("/a b/mlxd"), "\"/a b/mlxd\"");
        assert_eq!(systemd_quote("100%"), "100%%");
        assert_eq!(systemd_quote("$HOME"), "$$HOME");
        assert_eq!(systemd_quote("say \"hi\""), "\"say \\\"hi\\\"\"");
    }

    #[test]
    fn plist_text_is_escaped() {
        let text = render(
            Manager::Launchd,
            Path::new("/x/&/mlxd"),
            Path::new("/c<.toml"),
            "l",
            &[("HF_HOME".into(), "/v/a&b".into())],
        );
        assert!(text.contains("<string>/v/a&amp;b</string>"), "{text}");
        assert!(text.contains("<string>/x/&amp;/mlxd</string>"), "{text}");
        assert!(text.contains("<string>/c&lt;.toml</string>"), "{text}");
        assert!(!text.contains("{{"), "{text}");
    }
}
