//! `mlxd`: the daemon's command line.

mod bench;
mod info;
mod models;
mod run;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

/// An OpenAI-compatible LLM inference daemon on MLX.
#[derive(Debug, Parser)]
#[command(name = "mlxd")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate from one prompt in this process and report the speed (the
    /// bare-engine baseline).
    Run(run::RunArgs),
    /// Measure prefill and decode speed.
    Bench(bench::BenchArgs),
    /// Write a GGUF model out as an MLX checkpoint directory (lossless).
    Convert(ConvertArgs),
    /// Show the MLX version, backend and device, and check that MLX computes
    /// correctly on it (a 4-bit quantized matmul against its dequantized twin).
    Info,
}

/// Arguments of `mlxd convert`.
#[derive(Debug, Args)]
struct ConvertArgs {
    /// The GGUF file (Q4_0, Q4_1, Q8_0, F16 or F32 tensors).
    gguf: PathBuf,
    /// The directory to write (created if needed).
    out_dir: PathBuf,
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
        Command::Run(args) => run::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Convert(args) => {
            engine::convert::gguf_to_mlx(&args.gguf, &args.out_dir).with_context(|| {
                format!(
                    "converting {} to {}",
                    args.gguf.display(),
                    args.out_dir.display()
                )
            })?;
            eprintln!("wrote {}", args.out_dir.display());
            Ok(())
        }
        Command::Info => info::run(),
    }
}
