//! Bicubic resizing of 8-bit RGB images exactly as Pillow's
//! `Image.resize(size, Image.BICUBIC)` computes it (`libImaging/Resample.c`),
//! which the reference image processor calls: a separable filter
//! (horizontal pass, then vertical), each output sample a weighted sum of
//! the input samples under the filter's support (widened by the scale when
//! shrinking, so every input pixel counts), with the weights normalized in
//! double precision and then rounded to 22-bit fixed point, the sums kept
//! in 32-bit integers and each pass's result rounded and clipped to 8 bits.
//! Doing the same integer arithmetic gives the same bytes, not just close
//! ones.

/// Fractional bits of the fixed-point weights (`PRECISION_BITS`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// The bicubic kernel with `a = -0.5` (`bicubic_filter`), support 2.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// The taps of one pass: for output sample `i`, the first input sample
/// `bounds[i].0`, how many follow (`bounds[i].1`), and their fixed-point
/// weights at `weights[i * taps..]`.
struct Taps {
    taps: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

/// `precompute_coeffs` then `normalize_coeffs_8bpc` for `input` samples
/// resized to `output` (the whole extent: Pillow's default box).
fn taps(input: usize, output: usize) -> Taps {
    const SUPPORT: f64 = 2.0;
    let scale = input as f64 / output as f64;
    let filter_scale = scale.max(1.0);
    let support = SUPPORT * filter_scale;
    let taps = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(output);
    let mut weights = vec![0i32; output * taps];
    let mut k = vec![0f64; taps];
    for i in 0..output {
        let center = (i as f64 + 0.5) * scale;
        let ss = 1.0 / filter_scale;
        // C's `(int)` truncates toward zero; clamped at 0 right after, so
        // a negative value's rounding does not matter.
        let min = ((center - support + 0.5) as i64).max(0) as usize;
        let max = ((center + support + 0.5) as i64).min(input as i64) as usize;
        let count = max.saturating_sub(min);
        let mut total = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(count) {
            let w = bicubic((x as f64 + min as f64 - center + 0.5) * ss);
            *kx = w;
            total += w;
        }
        for kx in k.iter_mut().take(count) {
            if total != 0.0 {
                *kx /= total;
            }
        }
        let row = &mut weights[i * taps..(i + 1) * taps];
        for (x, w) in row.iter_mut().enumerate() {
            let v = if x < count { k[x] } else { 0.0 };
            let fixed = v * f64::from(1u32 << PRECISION_BITS);
            *w = if v < 0.0 {
                (-0.5 + fixed) as i32
            } else {
                (0.5 + fixed) as i32
            };
        }
        bounds.push((min, count));
    }
    Taps {
        taps,
        bounds,
        weights,
    }
}

/// A fixed-point sum back to 8 bits (`clip8`).
fn clip8(v: i32) -> u8 {
    if v >= (1 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// One pass over interleaved RGB rows: `lines` lines of `count` samples
/// each, `stride` bytes apart between samples along the resized axis and
/// `line_step` bytes between lines, into `out` laid out likewise with
/// `out_stride` / `out_line_step`.
struct Pass {
    lines: usize,
    stride: usize,
    line_step: usize,
    out_stride: usize,
    out_line_step: usize,
}

fn run_pass(src: &[u8], out: &mut [u8], taps: &Taps, p: &Pass) {
    for line in 0..p.lines {
        for (i, &(min, count)) in taps.bounds.iter().enumerate() {
            let k = &taps.weights[i * taps.taps..i * taps.taps + count];
            for c in 0..3 {
                let mut sum: i32 = 1 << (PRECISION_BITS - 1);
                for (x, &w) in k.iter().enumerate() {
                    let at = line * p.line_step + (min + x) * p.stride + c;
                    sum = sum.wrapping_add(i32::from(src[at]).wrapping_mul(w));
                }
                out[line * p.out_line_step + i * p.out_stride + c] = clip8(sum);
            }
        }
    }
}

/// Resizes an interleaved RGB image `width × height` to `out_w × out_h`
/// with Pillow's bicubic filter. Sizes must be nonzero; an unchanged size
/// returns the pixels as they are (Pillow copies).
pub fn resize_bicubic_rgb(
    pixels: &[u8],
    (width, height): (usize, usize),
    (out_w, out_h): (usize, usize),
) -> Vec<u8> {
    let mut current = pixels.to_vec();
    let mut w = width;
    if out_w != width {
        let taps = taps(width, out_w);
        let mut next = vec![0u8; out_w * height * 3];
        run_pass(
            &current,
            &mut next,
            &taps,
            &Pass {
                lines: height,
                stride: 3,
                line_step: w * 3,
                out_stride: 3,
                out_line_step: out_w * 3,
            },
        );
        current = next;
        w = out_w;
    }
    if out_h != height {
        let taps = taps(height, out_h);
        let mut next = vec![0u8; w * out_h * 3];
        run_pass(
            &current,
            &mut next,
            &taps,
            &Pass {
                lines: w,
                stride: w * 3,
                line_step: 3,
                out_stride: w * 3,
                out_line_step: 3,
            },
        );
        current = next;
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_of_each_output_sample_sum_to_one_in_fixed_point() {
        for (input, output) in [(10, 3), (3, 10), (224, 56), (57, 84)] {
            let t = taps(input, output);
            for (i, &(min, count)) in t.bounds.iter().enumerate() {
                assert!(min + count <= input);
                let sum: i64 = t.weights[i * t.taps..i * t.taps + count]
                    .iter()
                    .map(|&w| i64::from(w))
                    .sum();
                assert!((sum - (1 << PRECISION_BITS)).abs() <= count as i64, "{sum}");
            }
        }
    }

    #[test]
    fn a_flat_image_stays_flat() {
        let pixels = vec![77u8; 9 * 5 * 3];
        let out = resize_bicubic_rgb(&pixels, (9, 5), (4, 12));
        assert_eq!(out.len(), 4 * 12 * 3);
        assert!(out.iter().all(|&v| v == 77));
    }
}
