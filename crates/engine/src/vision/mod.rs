//! Image inputs for vision-language models (Qwen2.5-VL), the side that
//! needs no MLX, so the front-end can run it: decoding and preprocessing
//! images into the vision tower's patches ([`preprocess`], with Pillow's
//! bicubic resampling in [`resample`]), and the prompt's side
//! ([`prompt`]): the image placeholder expanded into one token per merged
//! patch, and the 3D rotary positions (M-RoPE) of a prompt with images.
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
