//! Image inputs for vision-language models (Qwen2.5-VL), the side that
//! needs no MLX, so the front-end can run it: decoding and preprocessing
//! images into the vision tower's patches ([`preprocess`], with Pillow's
//! bicubic resampling in [`resample`]), and the prompt's side
//! ([`prompt`]): the image placeholder expanded into one token per merged
//! patch, and the 3D rotary positions (M-RoPE) of a prompt with images;
//! [`prepare_prompt`] does the lot for a prompt and its encoded images.
//!
//! The model side (the vision tower, the language model with M-RoPE, a
//! prefill with images) is `model::qwen2_5_vl` and `Model::prefill_images`.
//! One sequence at a time: batching sequences with images is not done yet.

pub mod preprocess;
pub mod prompt;
pub mod resample;

pub use preprocess::{
    DEFAULT_MAX_DECODED_PIXELS, ImageInput, ImageProcessorConfig, RgbImage, decode_image,
    preprocess, smart_resize,
};
pub use prompt::{ImageTokens, MropePositions, expand_image_placeholders, mrope_positions};

use crate::error::Result;

/// A prompt with its images, ready for the model: the token ids with each
/// image placeholder expanded, and each image's patches.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagePrompt {
    pub tokens: Vec<u32>,
    pub images: Vec<ImageInput>,
}

/// Decodes (each at most `max_decoded_pixels`) and preprocesses the encoded
/// `images`, and expands the `image_token` placeholders of `ids` (one per
/// image, in order) into one token per merged patch.
pub fn prepare_prompt(
    ids: &[u32],
    images: &[&[u8]],
    config: &ImageProcessorConfig,
    image_token: u32,
    max_decoded_pixels: u64,
) -> Result<ImagePrompt> {
    let images = images
        .iter()
        .map(|bytes| preprocess(&decode_image(bytes, max_decoded_pixels)?, config))
        .collect::<Result<Vec<_>>>()?;
    let counts: Vec<usize> = images.iter().map(|i| i.tokens(config.merge_size)).collect();
    Ok(ImagePrompt {
        tokens: expand_image_placeholders(ids, image_token, &counts)?,
        images,
    })
}
