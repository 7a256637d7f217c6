//! Images into the vision tower's input, as mlx-vlm's Qwen2.5-VL processor
//! makes it (its numpy `Qwen3VLImageProcessor`, a port of transformers'
//! `Qwen2VLImageProcessor` without torch): decode, apply the EXIF
//! orientation, convert to RGB, resize to the nearest size of whole merged
//! patches within the pixel budget ([`smart_resize`]) with Pillow's
//! bicubic filter on the 8-bit pixels, rescale and normalize in f32 by the
//! checkpoint's mean and deviation, and cut into flattened patches
//! (`pixel_values`) with their grid (`image_grid_thw`).
//!
//! PNG and lossless WebP decode to the bytes Pillow gives; JPEG decoders
//! differ in their inverse DCT and chroma upsampling, so a JPEG's pixels
//! may differ from Pillow's (libjpeg's) by a step or two.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};
use serde::Deserialize;

use super::resample::resize_bicubic_rgb;
use crate::error::{EngineError, Result};

/// Decoded pixels an image may have at most unless the caller says
/// otherwise: 64 megapixels (a 8192 × 8192 picture), about 256 MB of RGBA
/// while decoding. Checked from the header, before decoding.
pub const DEFAULT_MAX_DECODED_PIXELS: u64 = 64 << 20;

/// `preprocessor_config.json`: the settings the processor is built from.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageProcessorConfig {
    /// The pixel budget of a resized image (`min_pixels`, else
    /// `size.shortest_edge`, else 56²; `max_pixels`, else
    /// `size.longest_edge`, else 28² × 1280), as mlx-vlm reads them.
    #[serde(default)]
    pub min_pixels: Option<u64>,
    #[serde(default)]
    pub max_pixels: Option<u64>,
    #[serde(default = "default_patch_size")]
    pub patch_size: usize,
    #[serde(default = "default_temporal_patch_size")]
    pub temporal_patch_size: usize,
    #[serde(default = "default_merge_size")]
    pub merge_size: usize,
    #[serde(default = "default_mean")]
    pub image_mean: [f32; 3],
    #[serde(default = "default_std")]
    pub image_std: [f32; 3],
    #[serde(default = "default_rescale")]
    pub rescale_factor: f32,
    /// transformers writes the pixel budget as `size` too.
    #[serde(default)]
    size: Option<SizeBudget>,
    #[serde(default = "yes")]
    do_resize: bool,
    #[serde(default = "yes")]
    do_rescale: bool,
    #[serde(default = "yes")]
    do_normalize: bool,
    #[serde(default = "yes")]
    do_convert_rgb: bool,
    /// A resampling filter other than Pillow's bicubic (3) is refused.
    #[serde(default = "default_resample")]
    resample: u32,
}

#[derive(Debug, Clone, Deserialize)]
struct SizeBudget {
    #[serde(default)]
    shortest_edge: Option<u64>,
    #[serde(default)]
    longest_edge: Option<u64>,
}

fn default_patch_size() -> usize {
    14
}
fn default_temporal_patch_size() -> usize {
    2
}
fn default_merge_size() -> usize {
    2
}
fn default_mean() -> [f32; 3] {
    [0.5; 3]
}
fn default_std() -> [f32; 3] {
    [0.5; 3]
}
fn default_rescale() -> f32 {
    1.0 / 255.0
}
fn default_resample() -> u32 {
    3
}
fn yes() -> bool {
    true
}

impl ImageProcessorConfig {
    /// Parses `preprocessor_config.json` text and checks what this
    /// processor honours: a setting it would not follow is refused by name.
    pub fn from_json(text: &str) -> Result<ImageProcessorConfig> {
        let mut c: ImageProcessorConfig = serde_json::from_str(text)
            .map_err(|e| EngineError::Config(format!("preprocessor_config.json: {e}")))?;
        if let Some(size) = c.size.take() {
            // `min_pixels` / `max_pixels` win over `size`, as mlx-vlm reads them.
            c.min_pixels = c.min_pixels.or(size.shortest_edge);
            c.max_pixels = c.max_pixels.or(size.longest_edge);
        }
        c.min_pixels = Some(c.min_pixels.unwrap_or(56 * 56));
        c.max_pixels = Some(c.max_pixels.unwrap_or(28 * 28 * 1280));
        let refuse = |what: &str| {
            Err(EngineError::Config(format!(
                "preprocessor_config.json: {what} is not supported"
            )))
        };
        if !(c.do_resize && c.do_rescale && c.do_normalize && c.do_convert_rgb) {
            return refuse("turning off do_resize, do_rescale, do_normalize or do_convert_rgb");
        }
        if c.resample != 3 {
            return refuse(&format!("resample {} (only bicubic, 3)", c.resample));
        }
        if c.patch_size == 0 || c.merge_size == 0 || c.temporal_patch_size == 0 {
            return refuse("a patch_size, merge_size or temporal_patch_size of 0");
        }
        if c.min_pixels() > c.max_pixels() {
            return refuse("min_pixels above max_pixels");
        }
        Ok(c)
    }

    /// Reads `preprocessor_config.json` of a model directory.
    pub fn load_dir(dir: &Path) -> Result<ImageProcessorConfig> {
        let path = dir.join("preprocessor_config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| EngineError::io(&path, e))?;
        ImageProcessorConfig::from_json(&text)
    }

    /// The fewest pixels of a resized image.
    pub fn min_pixels(&self) -> u64 {
        self.min_pixels.unwrap_or(56 * 56)
    }

    /// The most pixels of a resized image.
    pub fn max_pixels(&self) -> u64 {
        self.max_pixels.unwrap_or(28 * 28 * 1280)
    }

    /// The side every resized dimension is a multiple of.
    pub fn factor(&self) -> usize {
        self.patch_size * self.merge_size
    }
}

/// An RGB image, 8 bits per channel, rows top to bottom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    /// `height × width × 3` bytes.
    pub pixels: Vec<u8>,
}

/// Decodes a PNG, JPEG or WebP image into RGB (an alpha channel dropped,
/// grey expanded, 16-bit samples reduced, as Pillow's `convert("RGB")`
/// does for these). The format is read from the bytes; the pixel count
/// from the header is checked against `max_pixels` before anything is
/// decoded, so a small file claiming a huge picture costs nothing.
pub fn decode_image(bytes: &[u8], max_pixels: u64) -> Result<RgbImage> {
    let bad = |why: String| EngineError::InvalidRequest(format!("image: {why}"));
    let open = || {
        ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| bad(format!("cannot read it: {e}")))
    };
    let reader = open()?;
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP) => {}
        Some(other) => {
            return Err(bad(format!(
                "format {other:?} is not supported (PNG, JPEG or WebP)"
            )));
        }
        None => {
            return Err(bad(
                "unknown format (the bytes are not a PNG, JPEG or WebP image)".into(),
            ));
        }
    }
    let (width, height) = open()?
        .into_dimensions()
        .map_err(|e| bad(format!("corrupt header: {e}")))?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(bad(format!(
            "{width}×{height} is {pixels} pixels decoded, above the limit of {max_pixels}"
        )));
    }
    if pixels == 0 {
        return Err(bad(format!("{width}×{height} has no pixels")));
    }
    let mut reader = reader;
    let mut limits = Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    // RGBA at 16 bits per channel, the largest a decoder here produces.
    limits.max_alloc = Some(pixels.saturating_mul(8).saturating_add(1 << 20));
    reader.limits(limits);
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| bad(format!("cannot decode it: {e}")))?;
    // mlx-vlm's `load_image` turns the picture upright first
    // (`ImageOps.exif_transpose`).
    let orientation = decoder
        .orientation()
        .map_err(|e| bad(format!("corrupt orientation: {e}")))?;
    let mut decoded =
        DynamicImage::from_decoder(decoder).map_err(|e| bad(format!("cannot decode it: {e}")))?;
    decoded.apply_orientation(orientation);
    let rgb = decoded.into_rgb8();
    Ok(RgbImage {
        width: rgb.width() as usize,
        height: rgb.height() as usize,
        pixels: rgb.into_raw(),
    })
}

/// Qwen2-VL's `smart_resize`: the height and width, multiples of `factor`,
/// closest to the image's (Python's `round`, halves to even) with the
/// pixel count kept within `[min_pixels, max_pixels]` and the aspect ratio
/// nearly kept; an image more than 200 times as long as it is wide (or the
/// reverse) is refused, as the processor refuses it.
pub fn smart_resize(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: u64,
    max_pixels: u64,
) -> Result<(usize, usize)> {
    let (h, w, f) = (height as f64, width as f64, factor as f64);
    if h.max(w) / h.min(w) > 200.0 {
        return Err(EngineError::InvalidRequest(format!(
            "image: an aspect ratio of {width}×{height} is above 200"
        )));
    }
    let mut h_bar = (h / f).round_ties_even() * f;
    let mut w_bar = (w / f).round_ties_even() * f;
    if h_bar * w_bar > max_pixels as f64 {
        let beta = ((h * w) / max_pixels as f64).sqrt();
        h_bar = f.max((h / beta / f).floor() * f);
        w_bar = f.max((w / beta / f).floor() * f);
    } else if h_bar * w_bar < min_pixels as f64 {
        let beta = (min_pixels as f64 / (h * w)).sqrt();
        h_bar = (h * beta / f).ceil() * f;
        w_bar = (w * beta / f).ceil() * f;
    }
    Ok((h_bar as usize, w_bar as usize))
}

/// One image's input to the vision tower: `[patches, C × T × P × P]`
/// values and its `[t, h, w]` grid in patches.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInput {
    pub pixel_values: Vec<f32>,
    pub grid_thw: [usize; 3],
    /// Values per patch (`3 × temporal_patch_size × patch_size²`).
    pub patch_width: usize,
}

impl ImageInput {
    /// Patches of the grid.
    pub fn patches(&self) -> usize {
        self.grid_thw.iter().product()
    }

    /// Tokens the image stands for in the prompt: one per merged patch.
    pub fn tokens(&self, merge_size: usize) -> usize {
        self.patches() / (merge_size * merge_size)
    }
}

/// Resizes, rescales, normalizes and patchifies one decoded image.
pub fn preprocess(image: &RgbImage, config: &ImageProcessorConfig) -> Result<ImageInput> {
    if image.width == 0 || image.height == 0 || image.pixels.len() != image.width * image.height * 3
    {
        return Err(EngineError::InvalidRequest(format!(
            "image: {} bytes for {}×{} RGB pixels",
            image.pixels.len(),
            image.width,
            image.height
        )));
    }
    let (h, w) = smart_resize(
        image.height,
        image.width,
        config.factor(),
        config.min_pixels(),
        config.max_pixels(),
    )?;
    if h == 0 || w == 0 {
        return Err(EngineError::InvalidRequest(format!(
            "image: {}×{} resizes to nothing within min_pixels {}",
            image.width,
            image.height,
            config.min_pixels()
        )));
    }
    let resized = if (w, h) == (image.width, image.height) {
        image.pixels.clone()
    } else {
        resize_bicubic_rgb(&image.pixels, (image.width, image.height), (w, h))
    };
    // Rescale and normalize in f32, as the processor's numpy steps do
    // (NumPy 2 keeps a Python float factor at the array's f32).
    let mut planes = vec![0f32; 3 * h * w];
    for c in 0..3 {
        let (mean, std) = (config.image_mean[c], config.image_std[c]);
        for i in 0..h * w {
            let v = f32::from(resized[i * 3 + c]) * config.rescale_factor;
            planes[c * h * w + i] = (v - mean) / std;
        }
    }
    let (p, m, t) = (
        config.patch_size,
        config.merge_size,
        config.temporal_patch_size,
    );
    let (gh, gw) = (h / p, w / p);
    let patch_width = 3 * t * p * p;
    let mut out = Vec::with_capacity(gh * gw * patch_width);
    // The processor's reshape to [t, T, C, gh/m, m, P, gw/m, m, P] and
    // transpose to (t, gh/m, gw/m, m, m, C, T, P, P): the patches of each
    // merge block together, the frames of one image copies of it.
    for bh in 0..gh / m {
        for bw in 0..gw / m {
            for mh in 0..m {
                for mw in 0..m {
                    let (row0, col0) = ((bh * m + mh) * p, (bw * m + mw) * p);
                    for c in 0..3 {
                        for _ in 0..t {
                            for y in 0..p {
                                let start = c * h * w + (row0 + y) * w + col0;
                                out.extend_from_slice(&planes[start..start + p]);
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(ImageInput {
        pixel_values: out,
        grid_thw: [1, gh, gw],
        patch_width,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smart_resize_rounds_and_keeps_the_budget() {
        assert_eq!(
            smart_resize(100, 100, 28, 56 * 56, 28 * 28 * 1280).unwrap(),
            (112, 112)
        );
        // Halves round to even, as Python's round does: 42 / 28 = 1.5 → 2,
        // 70 / 28 = 2.5 → 2.
        assert_eq!(smart_resize(42, 70, 28, 1, 1 << 30).unwrap(), (56, 56));
        // Too small: scaled up to the minimum.
        let (h, w) = smart_resize(10, 20, 28, 56 * 56, 1 << 30).unwrap();
        assert!(h * w >= 56 * 56 && h % 28 == 0 && w % 28 == 0);
        // Too large: scaled down within the maximum.
        let (h, w) = smart_resize(4000, 3000, 28, 1, 28 * 28 * 64).unwrap();
        assert!(h * w <= 28 * 28 * 64, "{h}×{w}");
        assert!(smart_resize(10, 2010, 28, 1, 1 << 30).is_err());
    }

    #[test]
    fn inconsistent_or_vanishing_images_are_refused() {
        let config = ImageProcessorConfig::from_json(r#"{"min_pixels": 0}"#).unwrap();
        let thin = RgbImage {
            width: 200,
            height: 10,
            pixels: vec![0; 200 * 10 * 3],
        };
        let err = preprocess(&thin, &config).unwrap_err();
        assert!(err.to_string().contains("resizes to nothing"), "{err}");
        let short = RgbImage {
            width: 4,
            height: 4,
            pixels: vec![0; 5],
        };
        assert!(preprocess(&short, &config).is_err());
    }

    #[test]
    fn the_legacy_pixel_budget_wins_over_size() {
        let c = ImageProcessorConfig::from_json(
            r#"{"min_pixels": 1, "max_pixels": 2, "size": {"shortest_edge": 3136, "longest_edge": 12845056}}"#,
        )
        .unwrap();
        assert_eq!((c.min_pixels(), c.max_pixels()), (1, 2));
        let c = ImageProcessorConfig::from_json(
            r#"{"size": {"shortest_edge": 3136, "longest_edge": 12845056}}"#,
        )
        .unwrap();
        assert_eq!((c.min_pixels(), c.max_pixels()), (3136, 12_845_056));
        let err = ImageProcessorConfig::from_json(r#"{"resample": 2}"#).unwrap_err();
        assert!(err.to_string().contains("resample"), "{err}");
        let err = ImageProcessorConfig::from_json(r#"{"do_normalize": false}"#).unwrap_err();
        assert!(err.to_string().contains("do_normalize"), "{err}");
    }
}
