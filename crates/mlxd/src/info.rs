//! `mlxd info`: what MLX this binary runs on, and a check that it computes
//! correctly there.

use std::time::Instant;

use anyhow::{Context, ensure};
use mlx::{Array, Dtype, random};

/// Prints the platform and runs the smoke computation.
pub fn run() -> anyhow::Result<()> {
    let device = mlx::device::default_device().context("asking MLX for its default device")?;
    let name = device.name().unwrap_or_else(|_| "unknown".into());
    println!("mlxd {}", env!("CARGO_PKG_VERSION"));
    println!("MLX {} ({} backend)", mlx::version(), mlx::backend());
    println!("device: {device} ({name})");

    let start = Instant::now();
    let error = quantized_matmul_error().context("running the smoke computation")?;
    let elapsed = start.elapsed();
    // GPUs multiply f32 matrices with TF32 (10-bit mantissa) inputs, the
    // quantized kernel does not: they agree to about 1e-3 there, exactly on
    // the CPU.
    let tolerance = if device.kind == mlx::DeviceKind::Cpu {
        1e-4
    } else {
        1e-2
    };
    ensure!(
        error < tolerance,
        "4-bit quantized matmul differs from its dequantized matmul by {error:e} (tolerance {tolerance:e})"
    );
    let mem = mlx::memory::stats();
    println!(
        "check: 4-bit quantized matmul [8x512]·[512x256]ᵀ matches the dequantized matmul \
         (max relative difference {error:.1e}) in {:.1} ms, peak memory {:.1} MiB",
        elapsed.as_secs_f64() * 1e3,
        mem.peak as f64 / (1 << 20) as f64
    );
    Ok(())
}

/// Largest difference between `x @ quantize(w)ᵀ` and `x @ dequantize(quantize(w))ᵀ`
/// relative to the largest output.
fn quantized_matmul_error() -> mlx::Result<f32> {
    let key = random::key(0)?;
    let keys = random::split(&key, 2)?;
    let k = |i| keys.slice_axis(0, i, i + 1)?.squeeze(0);
    let w = random::normal(&[256, 512], Dtype::F32, Some(&k(0)?))?;
    let x = random::normal(&[8, 512], Dtype::F32, Some(&k(1)?))?;
    let q = mlx::quantize(&w, 64, 4)?;
    let fast = q.matmul(&x, true)?;
    let plain = x.matmul(&q.dequantize()?.t()?)?;
    let diff = fast.subtract(&plain)?.abs()?.max(&[], false)?;
    let scale = plain.abs()?.max(&[], false)?;
    let ratio: Array = diff.divide(&scale)?;
    ratio.item::<f32>()
}
