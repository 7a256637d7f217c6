//! Times 4-bit (or 8-bit) `x @ W.T` products of real model shapes at 1 to
//! 64 rows of activations (a decode step of that many sequences): MLX's
//! own product, the project's kernel where it takes the rows (up to 8; see
//! `shim/qmv.cpp`), and the product as chosen by default. Prints a table
//! (microseconds per product and the weights' read rate of the default)
//! and, with `--json PATH`, writes every figure: the data behind the
//! kernel's row limit.
//!
//! ```sh
//! cargo run --release -p mlx --example qmm_rows -- [--dtype bf16|f16] [--bits 4|8] [--rows 1,2,..] [--reps N] [--json PATH]
//! ```
//!
//! On backends without the project's kernel the three columns time the
//! same MLX product.

use std::time::Instant;

use mlx::{Array, Dtype, QuantizedWeight, quantize};

/// Qwen2.5 products (name, inputs K, outputs N), q/k/v and gate/up fused as
/// the engine fuses them.
const SHAPES: [(&str, i32, i32); 8] = [
    ("0.5B qkv", 896, 1152),
    ("0.5B o", 896, 896),
    ("0.5B gate_up", 896, 9728),
    ("0.5B down", 4864, 896),
    ("7B qkv", 3584, 4608),
    ("7B o", 3584, 3584),
    ("7B gate_up", 3584, 37888),
    ("7B down", 18944, 3584),
];
const GROUP: i32 = 64;
/// The kernel's default row limit (`mlx::set_custom_qmv_max_rows`).
const DEFAULT_MAX_ROWS: i32 = 7;

struct Options {
    dtype: Dtype,
    bits: i32,
    rows: Vec<i32>,
    reps: usize,
    json: Option<String>,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        dtype: Dtype::Bf16,
        bits: 4,
        rows: vec![1, 2, 4, 5, 6, 7, 8, 16, 32, 64],
        reps: 30,
        json: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--dtype" => {
                o.dtype = match value()?.as_str() {
                    "bf16" => Dtype::Bf16,
                    "f16" => Dtype::F16,
                    other => return Err(format!("--dtype {other}: bf16 or f16")),
                }
            }
            "--bits" => o.bits = value()?.parse().map_err(|e| format!("--bits: {e}"))?,
            "--rows" => {
                o.rows = value()?
                    .split(',')
                    .map(|r| r.parse().map_err(|e| format!("--rows: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--reps" => o.reps = value()?.parse().map_err(|e| format!("--reps: {e}"))?,
            "--json" => o.json = Some(value()?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(o)
}

/// Median microseconds of one product: `reps` rounds of 8 independent
/// products evaluated together (so the host's graph work overlaps the GPU's).
fn time_product(q: &QuantizedWeight, x: &Array, reps: usize) -> mlx::Result<f64> {
    const PER_ROUND: usize = 8;
    let round = || -> mlx::Result<()> {
        let outs = (0..PER_ROUND)
            .map(|_| q.matmul(x, true))
            .collect::<mlx::Result<Vec<_>>>()?;
        mlx::eval(&outs.iter().collect::<Vec<_>>())
    };
    for _ in 0..3 {
        round()?;
    }
    let mut samples: Vec<f64> = (0..reps)
        .map(|_| {
            let start = Instant::now();
            round().map(|()| start.elapsed().as_secs_f64() * 1e6 / PER_ROUND as f64)
        })
        .collect::<mlx::Result<_>>()?;
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let o = options()?;
    println!(
        "backend {:?}, MLX {}, {:?} activations, {}-bit weights, group {GROUP}",
        mlx::backend(),
        mlx::version(),
        o.dtype,
        o.bits
    );
    println!(
        "{:<13} {:>4} {:>10} {:>10} {:>10} {:>9} {:>9}",
        "product", "rows", "mlx µs", "kernel µs", "chosen µs", "GB/s", "× mlx"
    );
    let mut records = Vec::new();
    for (i, (name, k, n)) in SHAPES.iter().enumerate() {
        let key = mlx::random::key(i as u64)?;
        let w = mlx::random::normal(&[*n, *k], o.dtype, Some(&key))?;
        let q = quantize(&w, GROUP, o.bits)?;
        mlx::eval(&q.arrays())?;
        let weight_bytes = q.nbytes();
        for &rows in &o.rows {
            let x = mlx::random::normal(&[rows, *k], o.dtype, Some(&key))?;
            mlx::eval(&[&x])?;
            mlx::set_custom_qmv(false)?;
            let theirs = time_product(&q, &x, o.reps)?;
            mlx::set_custom_qmv(true)?;
            let chosen = time_product(&q, &x, o.reps)?;
            mlx::set_custom_qmv_max_rows(8)?;
            let kernel = time_product(&q, &x, o.reps)?;
            mlx::set_custom_qmv_max_rows(DEFAULT_MAX_ROWS)?;
            let rate = weight_bytes as f64 / (chosen * 1e-6) / 1e9;
            println!(
                "{name:<13} {rows:>4} {theirs:>10.1} {kernel:>10.1} {chosen:>10.1} {rate:>9.0} {:>9.2}",
                theirs / chosen
            );
            records.push(format!(
                "{{\"product\":\"{name}\",\"bits\":{},\"k\":{k},\"n\":{n},\"rows\":{rows},\"mlx_us\":{theirs:.2},\
                 \"kernel_us\":{kernel:.2},\"chosen_us\":{chosen:.2},\"weight_bytes\":{weight_bytes}}}",
                o.bits
            ));
        }
    }
    if let Some(path) = o.json {
        std::fs::write(&path, format!("[\n{}\n]\n", records.join(",\n")))?;
    }
    Ok(())
}
