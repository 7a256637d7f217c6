//! The prompt's side of image inputs, as Qwen2.5-VL's processor and
//! mlx-vlm's `get_rope_index` make it: each image placeholder token
//! becomes one image token per merged patch, and every prompt position
//! gets a (time, height, width) rotary position: text runs on from the
//! largest position so far on all three axes, an image's tokens take their
//! place in its grid of merged patches, offset by where the image starts.

use crate::error::{EngineError, Result};

/// The special tokens of a Qwen2.5-VL vocabulary that mark images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageTokens {
    /// `<|image_pad|>`: the placeholder, and each expanded image token.
    pub image: u32,
    /// `<|video_pad|>`: videos are not supported; a vision block holding
    /// one is refused.
    pub video: u32,
    /// `<|vision_start|>`, which precedes every image's tokens.
    pub vision_start: u32,
}

/// Replaces the `i`-th `image` token of `ids` by `counts[i]` of them (the
/// processor's expansion of `<|image_pad|>`); as many placeholders as
/// images are needed.
pub fn expand_image_placeholders(ids: &[u32], image: u32, counts: &[usize]) -> Result<Vec<u32>> {
    let found = ids.iter().filter(|&&t| t == image).count();
    if found != counts.len() {
        return Err(EngineError::InvalidRequest(format!(
            "the prompt has {found} image placeholders for {} images",
            counts.len()
        )));
    }
    let mut out = Vec::with_capacity(ids.len() + counts.iter().sum::<usize>());
    let mut next = counts.iter();
    for &t in ids {
        if t == image {
            let n = next.next().copied().unwrap_or(1);
            out.extend(std::iter::repeat_n(image, n));
        } else {
            out.push(t);
        }
    }
    Ok(out)
}

/// The rotary positions of a prompt: per axis (time, height, width) one
/// position per token, and the delta the positions of later tokens get
/// (`position = index + delta` on every axis).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MropePositions {
    pub axes: [Vec<i32>; 3],
    pub delta: i32,
}

/// mlx-vlm's `get_rope_index` for one sequence with images of `grids`
/// (`[t, h, w]` in patches, each merged `merge × merge` into one token).
/// Each image's tokens must follow a `vision_start` and be exactly as many
/// as its merged grid has cells.
pub fn mrope_positions(
    ids: &[u32],
    grids: &[[usize; 3]],
    tokens: ImageTokens,
    merge: usize,
) -> Result<MropePositions> {
    let bad = |why: String| Err(EngineError::InvalidRequest(why));
    let blocks: Vec<u32> = ids
        .windows(2)
        .filter(|w| w[0] == tokens.vision_start)
        .map(|w| w[1])
        .collect();
    if blocks.contains(&tokens.video) {
        return bad("video inputs are not supported".into());
    }
    let images = blocks.iter().filter(|&&t| t == tokens.image).count();
    if images != grids.len() {
        return bad(format!(
            "the prompt has {images} images after vision_start tokens for {} images given",
            grids.len()
        ));
    }
    let all = ids.iter().filter(|&&t| t == tokens.image).count();
    let expected: usize = grids
        .iter()
        .map(|g| g[0] * (g[1] / merge) * (g[2] / merge))
        .sum();
    if all != expected {
        return bad(format!(
            "the prompt has {all} image tokens for images of {expected} merged patches"
        ));
    }
    let mut axes: [Vec<i32>; 3] = Default::default();
    let mut next = 0i32; // the largest position so far, plus one
    let mut st = 0usize;
    let push_text = |axes: &mut [Vec<i32>; 3], from: i32, len: usize| {
        for axis in axes.iter_mut() {
            axis.extend((0..len as i32).map(|i| from + i));
        }
    };
    for grid in grids {
        let Some(ed) = ids[st..]
            .iter()
            .position(|&t| t == tokens.image)
            .map(|i| st + i)
        else {
            return bad("an image's tokens are missing".into());
        };
        let (t, h, w) = (grid[0], grid[1] / merge, grid[2] / merge);
        let cells = t * h * w;
        if ids.len() < ed + cells || ids[ed..ed + cells].iter().any(|&x| x != tokens.image) {
            return bad(format!(
                "an image of {cells} merged patches needs as many image tokens in a row"
            ));
        }
        let text_len = ed - st;
        push_text(&mut axes, next, text_len);
        let start = next + text_len as i32;
        let mut top = start - 1;
        for ti in 0..t {
            for hi in 0..h {
                for wi in 0..w {
                    let p = [start + ti as i32, start + hi as i32, start + wi as i32];
                    for (axis, v) in axes.iter_mut().zip(p) {
                        axis.push(v);
                        top = top.max(v);
                    }
                }
            }
        }
        next = top + 1;
        st = ed + cells;
    }
    if st < ids.len() {
        let len = ids.len() - st;
        push_text(&mut axes, next, len);
        next += len as i32;
    }
    Ok(MropePositions {
        axes,
        delta: next - ids.len() as i32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKENS: ImageTokens = ImageTokens {
        image: 9,
        video: 8,
        vision_start: 7,
    };

    #[test]
    fn placeholders_expand_in_order() {
        let ids = expand_image_placeholders(&[1, 9, 2, 9], 9, &[2, 3]).unwrap();
        assert_eq!(ids, [1, 9, 9, 2, 9, 9, 9]);
        assert!(expand_image_placeholders(&[1, 9], 9, &[2, 3]).is_err());
    }

    #[test]
    fn an_image_takes_grid_positions_and_text_runs_on_after_it() {
        // Text, then a 2 × 3 merged grid (4 × 6 patches), then text.
        let ids = [1, 7, 9, 9, 9, 9, 9, 9, 2, 3];
        let p = mrope_positions(&ids, &[[1, 4, 6]], TOKENS, 2).unwrap();
        assert_eq!(p.axes[0], [0, 1, 2, 2, 2, 2, 2, 2, 5, 6]);
        assert_eq!(p.axes[1], [0, 1, 2, 2, 2, 3, 3, 3, 5, 6]);
        assert_eq!(p.axes[2], [0, 1, 2, 3, 4, 2, 3, 4, 5, 6]);
        assert_eq!(p.delta, 7 - 10);
    }

    #[test]
    fn text_alone_has_equal_positions_and_no_delta() {
        let p = mrope_positions(&[1, 2, 3], &[], TOKENS, 2).unwrap();
        assert_eq!(p.axes, [vec![0, 1, 2], vec![0, 1, 2], vec![0, 1, 2]]);
        assert_eq!(p.delta, 0);
    }

    #[test]
    fn mismatched_tokens_and_videos_are_refused() {
        assert!(mrope_positions(&[7, 9, 9, 9], &[[1, 4, 6]], TOKENS, 2).is_err());
        assert!(mrope_positions(&[7, 8, 8], &[], TOKENS, 2).is_err());
        assert!(mrope_positions(&[1, 2], &[[1, 2, 2]], TOKENS, 2).is_err());
    }
}
