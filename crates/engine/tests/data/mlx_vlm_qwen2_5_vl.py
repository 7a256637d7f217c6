"""A tiny random Qwen2.5-VL checkpoint and mlx-vlm's outputs on it.

usage: mlx_vlm_qwen2_5_vl.py OUT_DIR

OUT_DIR/model/ holds the checkpoint in the Hugging Face layout (`visual.*`,
`model.*`, `lm_head.weight`, the patch embedding as a PyTorch Conv3d weight)
with its config.json and preprocessor_config.json; mlx-vlm loads it through
its own sanitizing. OUT_DIR/model_mlx/ holds the same weights as mlx-vlm
names and lays them out, with a nested text_config; OUT_DIR/model_q4/ the
same quantized by mlx-vlm (4-bit groups of 32, the head 8-bit, the vision
tower dense). OUT_DIR/images/ holds the test images (PNG, plus one
JPEG and one WebP), and
  reference.safetensors  per image NAME: "pixel_values.NAME" and "grid.NAME"
                         from mlx-vlm's image processor, "vision.NAME" the
                         vision tower's output for it alone; "vision.pair"
                         for two images in one call; "logits.CASE" for
                         each prompt of reference.json
  reference.json         the prompts (token ids, images by name) and their
                         24 greedy tokens
Token ids are used directly (no tokenizer): the image placeholder is
expanded as the processor expands it, one image token per merged patch.
"""

import json
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten
from PIL import Image

from mlx_vlm.models.cache import make_prompt_cache
from mlx_vlm.models.qwen2_5_vl import Model, ModelConfig, TextConfig, VisionConfig
from mlx_vlm.models.qwen3_vl.processing_qwen3_vl import (
    Qwen3VLImageProcessor,
    _qwen_vl_image_kwargs,
)
from mlx_vlm.quant_utils import quantize_model
from mlx_vlm.utils import load_image, load_model

GREEDY_TOKENS = 24
IMAGE, VISION_START, VISION_END = 250, 248, 249

CONFIG = {
    "model_type": "qwen2_5_vl",
    "architectures": ["Qwen2_5_VLForConditionalGeneration"],
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-6,
    "vocab_size": 256,
    "max_position_embeddings": 2048,
    "rope_theta": 1000000.0,
    # head_dim 16: 8 rotated pairs, 2 for time, 3 for height, 3 for width.
    "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
    "tie_word_embeddings": False,
    "image_token_id": IMAGE,
    "video_token_id": 251,
    "vision_start_token_id": VISION_START,
    "vision_end_token_id": VISION_END,
    "vision_token_id": 252,
    "eos_token_id": 255,
    "vision_config": {
        "model_type": "qwen2_5_vl",
        "depth": 4,
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_heads": 2,
        "out_hidden_size": 64,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        # Windows of 2 x 2 merged patches; blocks 1 and 3 see the whole image.
        "window_size": 56,
        "fullatt_block_indexes": [1, 3],
        "in_channels": 3,
    },
}

PREPROCESSOR = {
    "image_processor_type": "Qwen2VLImageProcessor",
    "min_pixels": 3136,
    "max_pixels": 12544,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "rescale_factor": 0.00392156862745098,
    "do_rescale": True,
    "do_normalize": True,
    "do_convert_rgb": True,
    "do_resize": True,
    "resample": 3,
}


def images(rng):
    """name -> PIL image: sizes that round, shrink, grow and stretch."""
    y, x = np.mgrid[0:60, 0:80]
    gradient = np.stack([x * 3, y * 4, (x + y) * 2], axis=-1).clip(0, 255).astype(np.uint8)
    out = {
        "gradient": Image.fromarray(gradient),  # 80x60: rounded to 84x56
        "noise": Image.fromarray(rng.integers(0, 256, (100, 150, 3), dtype=np.uint8)),  # over max_pixels
        "tiny": Image.fromarray(rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)),  # under min_pixels
        "wide": Image.fromarray(rng.integers(0, 256, (20, 300, 3), dtype=np.uint8)),
        "exact": Image.fromarray(rng.integers(0, 256, (56, 56, 3), dtype=np.uint8)),  # no resize
        "rgba": Image.fromarray(rng.integers(0, 256, (45, 70, 4), dtype=np.uint8), "RGBA"),
        "grey": Image.fromarray(rng.integers(0, 256, (64, 33), dtype=np.uint8), "L"),
        "rotated": Image.fromarray(rng.integers(0, 256, (30, 90, 3), dtype=np.uint8)),
    }
    return out


def main():
    out = Path(sys.argv[1])
    model_dir, image_dir = out / "model", out / "images"
    model_dir.mkdir(parents=True, exist_ok=True)
    image_dir.mkdir(parents=True, exist_ok=True)
    mx.random.seed(7)
    rng = np.random.default_rng(7)

    # A random model, its norms perturbed so they count, saved as Hugging
    # Face names it.
    config = ModelConfig.from_dict(json.loads(json.dumps(CONFIG)))
    config.vision_config = VisionConfig.from_dict(config.vision_config)
    config.text_config = TextConfig.from_dict(config.text_config)
    model = Model(config)
    weights = {}
    for name, value in tree_flatten(model.parameters()):
        if "norm" in name or "ln_q" in name:
            value = 1.0 + 0.2 * mx.random.normal(value.shape)
        elif value.ndim == 1:
            value = 0.1 * mx.random.normal(value.shape)
        if name == "vision_tower.patch_embed.proj.weight":
            value = value.transpose(0, 4, 1, 2, 3)  # MLX [O, T, P, P, C] -> PyTorch [O, C, T, P, P]
        hf = (
            name.replace("vision_tower.", "visual.", 1)
            .replace("language_model.model.", "model.", 1)
            .replace("language_model.lm_head", "lm_head", 1)
        )
        weights[hf] = value.astype(mx.float32)
    mx.save_safetensors(str(model_dir / "model.safetensors"), weights, metadata={"format": "mlx"})
    (model_dir / "config.json").write_text(json.dumps(CONFIG, indent=2))
    (model_dir / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2))

    model = load_model(model_dir)
    # The same weights as mlx-vlm names and lays them out (`vision_tower.*`,
    # `language_model.*`, the Conv3d as MLX's [O, T, P, P, C]), with a
    # nested text_config as mlx-vlm writes configs.
    mlx_dir = out / "model_mlx"
    mlx_dir.mkdir(exist_ok=True)
    mx.save_safetensors(
        str(mlx_dir / "model.safetensors"),
        dict(tree_flatten(model.parameters())),
        metadata={"format": "mlx"},
    )
    nested = {k: v for k, v in CONFIG.items() if k not in ("vision_config",)}
    nested_config = {
        "model_type": "qwen2_5_vl",
        "text_config": {**nested, "model_type": "qwen2_5_vl"},
        "vision_config": CONFIG["vision_config"],
        "image_token_id": IMAGE,
        "video_token_id": 251,
        "vision_start_token_id": VISION_START,
        "eos_token_id": 255,
    }
    (mlx_dir / "config.json").write_text(json.dumps(nested_config, indent=2))
    (mlx_dir / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2))
    processor = Qwen3VLImageProcessor(**_qwen_vl_image_kwargs(str(model_dir), default_patch_size=14))

    tensors = {}
    inputs = {}
    for name, image in images(rng).items():
        path = image_dir / f"{name}.png"
        if name == "rotated":
            # Stored on its side, with the EXIF orientation (6: turn 90°
            # clockwise) that makes it upright.
            exif = Image.Exif()
            exif[0x0112] = 6
            image.save(path, exif=exif)
        else:
            image.save(path)
        # As mlx-vlm reads an image: EXIF orientation, then RGB.
        features = processor([load_image(str(path))])
        pv = mx.array(features["pixel_values"])
        grid = mx.array(features["image_grid_thw"])
        inputs[name] = (pv, grid)
        tensors[f"pixel_values.{name}"] = pv
        tensors[f"grid.{name}"] = grid.astype(mx.int32)
        tensors[f"vision.{name}"] = model.vision_tower(pv, grid)
    rgb = images(rng)["gradient"]
    rgb.save(image_dir / "gradient.jpg", quality=90)
    rgb.save(image_dir / "gradient.webp", lossless=True)

    pair = ("gradient", "wide")
    pv = mx.concatenate([inputs[n][0] for n in pair])
    grid = mx.concatenate([inputs[n][1] for n in pair])
    tensors["vision.pair"] = model.vision_tower(pv, grid)

    def tokens_of(name):
        t, h, w = inputs[name][1][0].tolist()
        return [VISION_START] + [IMAGE] * (t * h * w // 4) + [VISION_END]

    cases = {
        "one_image": (["noise"], [5, 6, 7] + tokens_of("noise") + [20, 21, 22, 23]),
        "two_images": (
            ["gradient", "wide"],
            [9] + tokens_of("gradient") + [30, 31] + tokens_of("wide") + [40, 41, 42],
        ),
        "text_only": ([], [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3]),
    }
    reference = {"cases": {}, "image_token_id": IMAGE}

    def run(model, names, ids):
        # The language model keeps the last prompt's positions between
        # calls; a prompt without images would reuse them (as a new
        # request to a loaded mlx-vlm model would not).
        model.language_model._position_ids = None
        model.language_model._rope_deltas = None
        cache = make_prompt_cache(model.language_model)
        kwargs = {}
        if names:
            kwargs["pixel_values"] = mx.concatenate([inputs[n][0] for n in names])
            kwargs["image_grid_thw"] = mx.concatenate([inputs[n][1] for n in names])
        logits = model(mx.array([ids]), cache=cache, **kwargs).logits
        token = mx.argmax(logits[0, -1]).item()
        greedy = []
        for _ in range(GREEDY_TOKENS):
            greedy.append(token)
            step = model(mx.array([[token]]), cache=cache).logits
            token = mx.argmax(step[0, -1]).item()
        return logits, greedy

    for case, (names, ids) in cases.items():
        logits, greedy = run(model, names, ids)
        tensors[f"logits.{case}"] = logits
        reference["cases"][case] = {"images": names, "prompt": ids, "greedy": greedy}

    # Quantized as mlx-vlm converts: 4-bit groups of 32, the output head at
    # 8 bits (a per-layer override under mlx-vlm's module path), the vision
    # tower left dense.
    def predicate(path, module):
        if "vision_tower" in path:
            return False
        if path.endswith("lm_head"):
            return {"group_size": 32, "bits": 8}
        return True

    quantized, q_config = quantize_model(model, dict(CONFIG), 32, 4, quant_predicate=predicate)
    q_dir = out / "model_q4"
    q_dir.mkdir(exist_ok=True)
    mx.save_safetensors(
        str(q_dir / "model.safetensors"),
        dict(tree_flatten(quantized.parameters())),
        metadata={"format": "mlx"},
    )
    (q_dir / "config.json").write_text(json.dumps(q_config, indent=2))
    (q_dir / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2))
    names, ids = cases["one_image"]
    logits, greedy = run(load_model(q_dir), names, ids)
    tensors["logits.one_image_q4"] = logits
    reference["cases"]["one_image_q4"] = {"images": names, "prompt": ids, "greedy": greedy}

    mx.save_safetensors(str(out / "reference.safetensors"), tensors)
    (out / "reference.json").write_text(json.dumps(reference, indent=1))


if __name__ == "__main__":
    main()
