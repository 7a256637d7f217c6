//! Running one sequence whose prompt holds images: the vision tower's
//! embeddings put in place of the prompt's image tokens, the prompt
//! prefilled with its multimodal rotary positions, then decoded with the
//! ordinary cache, each new position shifted by the prompt's delta (as
//! mlx-vlm's Qwen2.5-VL generates). The preprocessing is `crate::vision`.
//!
//! One sequence at a time: the batch scheduler and the prompt cache do not
//! take images yet (a batch row would need its own delta).

use mlx::Array;

use super::base::{Caches, LayerCaches, Positions};
use super::{Cache, Model};
use crate::error::{EngineError, Result};
use crate::vision::{ImageInput, ImageTokens, mrope_positions};

/// What a vision-language family's model does beyond text.
pub trait VisionLanguage {
    /// The tokens marking images in its vocabulary.
    fn image_tokens(&self) -> ImageTokens;

    /// Patches merged into one image token, per side.
    fn merge_size(&self) -> usize;

    /// Values per patch the vision tower takes (`C × T × P × P`).
    fn patch_width(&self) -> usize;

    /// Embeddings `[image tokens, hidden]` of the patches `pixel_values`
    /// (`[patches, patch width]`) of images of `grids` (`[t, h, w]`).
    fn encode_images(&self, pixel_values: &Array, grids: &[[i32; 3]]) -> Result<Array>;

    /// Token embeddings `[..ids, hidden]`.
    fn embed(&self, tokens: &Array) -> Result<Array>;

    /// Hidden states after the final norm for input embeddings `[1, L,
    /// hidden]` at the 3D positions `axes` (time, height, width; `L`
    /// each), appending to `caches`.
    fn hidden_mrope(
        &self,
        embeds: &Array,
        caches: &mut dyn Caches,
        axes: &[Vec<i32>; 3],
    ) -> Result<Array>;
}

/// A prompt prefilled with its images.
pub struct ImagePrefill {
    /// `[1, L, vocab]`.
    pub logits: Array,
    /// What every later position adds to its index (negative when images
    /// took fewer positions than tokens); pass it to
    /// [`Model::forward_shifted`].
    pub rope_delta: i32,
}

impl Model {
    /// The model's image side, when its family takes images.
    pub fn vision(&self) -> Option<&dyn VisionLanguage> {
        self.model.vision()
    }

    fn vision_or_refuse(&self) -> Result<&dyn VisionLanguage> {
        self.model.vision().ok_or_else(|| {
            EngineError::InvalidRequest(format!(
                "model type {} does not take images",
                self.config.model_type
            ))
        })
    }

    /// The vision tower's embeddings `[image tokens, hidden]` of `images`,
    /// in order.
    pub fn encode_images(&self, images: &[ImageInput]) -> Result<Array> {
        let vl = self.vision_or_refuse()?;
        if images.is_empty() {
            return Err(EngineError::InvalidRequest("no images to encode".into()));
        }
        let width = vl.patch_width();
        let mut values = Vec::new();
        let mut grids = Vec::with_capacity(images.len());
        for image in images {
            if image.patch_width != width
                || image.pixel_values.len() != image.patches() * image.patch_width
            {
                return Err(EngineError::InvalidRequest(format!(
                    "an image of patches of {} values for a vision tower of {width}",
                    image.patch_width
                )));
            }
            values.extend_from_slice(&image.pixel_values);
            let g = image.grid_thw;
            grids.push([g[0] as i32, g[1] as i32, g[2] as i32]);
        }
        let patches = (values.len() / width.max(1)) as i32;
        let pixel_values = Array::from_slice(&values, &[patches, width as i32])?;
        vl.encode_images(&pixel_values, &grids)
    }

    /// Prefills `tokens` (image placeholders already expanded: one image
    /// token per merged patch, after a vision-start token) with `images`
    /// into empty `caches`; returns the logits of every position and the
    /// delta later positions take.
    pub fn prefill_images(
        &self,
        tokens: &[u32],
        images: &[ImageInput],
        caches: &mut [Cache],
    ) -> Result<ImagePrefill> {
        let vl = self.vision_or_refuse()?;
        if caches.first().map_or(0, Cache::offset) != 0 {
            return Err(EngineError::InvalidRequest(
                "a prompt with images is prefilled into empty caches".into(),
            ));
        }
        if tokens.is_empty() {
            return Err(EngineError::InvalidRequest("empty prompt".into()));
        }
        let marks = vl.image_tokens();
        let grids: Vec<[usize; 3]> = images.iter().map(|i| i.grid_thw).collect();
        let positions = mrope_positions(tokens, &grids, marks, vl.merge_size())?;
        let l = tokens.len() as i32;
        let ids = Array::from_slice(tokens, &[1, l])?;
        let mut embeds = vl.embed(&ids)?;
        if !images.is_empty() {
            let features = self.encode_images(images)?;
            // Image token k takes row k of the features (mlx-vlm's
            // `merge_input_ids_with_image_features`).
            let mut next = 0i32;
            let rows: Vec<i32> = tokens
                .iter()
                .map(|&t| {
                    if t == marks.image {
                        next += 1;
                        next - 1
                    } else {
                        0
                    }
                })
                .collect();
            let is_image: Vec<bool> = tokens.iter().map(|&t| t == marks.image).collect();
            let gathered = features
                .take(&Array::from_slice(&rows, &[l])?, 0)?
                .expand_dims(0)?;
            let mask = Array::from_slice(&is_image, &[1, l, 1])?;
            embeds = mlx::where_(&mask, &gathered.astype(embeds.dtype())?, &embeds)?;
        }
        let hidden = vl.hidden_mrope(&embeds, &mut LayerCaches(caches), &positions.axes)?;
        Ok(ImagePrefill {
            logits: self.model.logits(&hidden)?,
            rope_delta: positions.delta,
        })
    }

    /// Logits `[1, L, vocab]` for tokens `[1, L]` after a prompt prefilled
    /// with [`Model::prefill_images`]: the ordinary step, its positions
    /// shifted by the prompt's `rope_delta`.
    pub fn forward_shifted(
        &self,
        tokens: &Array,
        caches: &mut [Cache],
        rope_delta: i32,
    ) -> Result<Array> {
        let offset = caches.first().map_or(0, Cache::offset) + rope_delta;
        let hidden = self.model.hidden(
            tokens,
            &mut LayerCaches(caches),
            Positions::Sequence { offset },
        )?;
        self.model.logits(&hidden)
    }
}
