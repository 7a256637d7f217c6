//! `mlxd`: the daemon's command line.

mod info;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// An OpenAI-compatible LLM inference daemon on MLX.
#[derive(Debug, Parser)]
#[command(name = "mlxd")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the MLX version, backend and device, and check that MLX computes
    /// correctly on it (a 4-bit quantized matmul against its dequantized twin).
    Info,
}

/// `mlxd 0.1.0 (MLX 0.32.4, CUDA backend)`: what `--version` prints.
fn version_line() -> String {
    format!(
        "{} (MLX {}, {} backend)",
        env!("CARGO_PKG_VERSION"),
        mlx::version(),
        mlx::backend()
    )
}

fn main() -> anyhow::Result<()> {
    let matches = Cli::command().version(version_line()).get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    match cli.command {
        Command::Info => info::run(),
    }
}
