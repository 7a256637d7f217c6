//! `mlxd ls`: the models on disk, as a table (Ollama's `ollama ls`), with
//! each model's format, quantization and size.

use std::path::PathBuf;

use clap::Args;

use crate::config::{self, ConfigArgs};
use crate::models::{self, ModelEntry};

/// Arguments of `mlxd ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Configuration file (default: ~/.config/mlxd/mlxd.toml, when present):
    /// where the models directory, hub cache and aliases are set.
    #[arg(long, env = "MLXD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

/// Runs `mlxd ls`.
pub fn run(args: LsArgs) -> anyhow::Result<()> {
    let (config, _) = config::load(&ConfigArgs::from_env(args.config)?)?;
    let entries = models::discover(&config.models);
    print!("{}", table(&entries));
    if entries.is_empty() {
        eprintln!(
            "no models in {} or {} (`mlxd pull org/name` downloads one)",
            config.models.hf_cache.display(),
            config.models.dir.display()
        );
    }
    Ok(())
}

/// `1.2 GB`-style sizes (decimal units, as Ollama prints them).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit + 1 < UNITS.len() {
        size /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{size:.1} {}", UNITS[unit])
    }
}

/// The table: a header and one row per model, columns padded to fit.
pub fn table(entries: &[ModelEntry]) -> String {
    let mut rows = vec![[
        "NAME".to_string(),
        "FORMAT".to_string(),
        "QUANT".to_string(),
        "SIZE".to_string(),
        "PATH".to_string(),
    ]];
    for e in entries {
        rows.push([
            e.name.clone(),
            e.format.to_string(),
            e.quantization.clone(),
            human_size(e.size_bytes),
            e.path.display().to_string(),
        ]);
    }
    let mut widths = [0usize; 5];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::ModelFormat;

    #[test]
    fn sizes_read_like_ollamas() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1_234_567), "1.2 MB");
        assert_eq!(human_size(4_700_000_000), "4.7 GB");
    }

    #[test]
    fn columns_line_up() {
        let entries = [ModelEntry {
            name: "org/a-long-model-name".into(),
            path: "/m/a".into(),
            format: ModelFormat::Gguf,
            quantization: "Q4_1".into(),
            size_bytes: 2_000_000,
        }];
        let text = table(&entries);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].find("FORMAT"), lines[1].find("gguf"));
        assert_eq!(lines[0].find("PATH"), lines[1].find("/m/a"));
    }
}
