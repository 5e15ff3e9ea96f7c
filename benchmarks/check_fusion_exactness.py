"""How exact the fast path is (factorised fusion + gathered deformable conv): max |logit difference| to official mode
on every fixture and at full size.

* every official reference fixture (`tests/fixtures/*` and the shared reference folder) with its caption inputs:
  factorised vs official mode, and each against the official code's recorded logits;
* GLIP-T (`GLIPConfig.glip_t()`) with random weights, the fusion biases made random too (the model's init zeroes
  them), one random-noise image of `--height`x`--width` (800x1333 is the official test size), 10 COCO labels:
  factorised vs official mode on the same 256-padded input, and the fast path (prompt cut to its real tokens +
  factorised) vs official mode (256 + official order) on the real tokens.

    python benchmarks/check_fusion_exactness.py [--height 320 --width 480] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

__all__ = ["main"]

REPOSITORY = Path(__file__).resolve().parents[1]
FIXTURE_ROOTS = [REPOSITORY / "tests" / "fixtures", REPOSITORY.parent / "shared" / "fixtures" / "glip_reference"]
TOKENIZER_DIR = REPOSITORY / "examples" / "assets" / "bert-base-uncased-tokenizer"
LEVELS = ["P3", "P4", "P5", "P6", "P7"]
LABELS = ["person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light"]


def _logits_in_both_modes(model, model_inputs: dict) -> dict:
    import torch

    logits = {}
    # "official": official mode's model side (official fusion order, torchvision's deformable conv); "factorised":
    # the fast path's (factorised fusion, gathered deformable conv).
    deformable = {"official": "torchvision", "factorised": "gather"}
    for implementation in ("official", "factorised"):
        model.config.fusion_implementation = implementation
        model.config.deformable_conv_implementation = deformable[implementation]
        with torch.inference_mode():
            logits[implementation] = model(**model_inputs).logits  # (batch, anchors, seq_len)
    return logits


def _fixture_figures() -> dict:
    import PIL.Image
    import torch
    from safetensors.torch import load_file

    from transformers_glip import GLIPForGrounding
    from transformers_glip.conversion import convert_checkpoint
    from transformers_glip.processing_glip import GLIPProcessor

    figures, seen = {}, set()
    for root in FIXTURE_ROOTS:
        if not root.is_dir():
            continue
        for directory in sorted(path for path in root.iterdir() if path.is_dir()):
            required = ("checkpoint.pth", "config.yaml", "outputs.safetensors", "inputs.json")
            if directory.name in seen or not all((directory / name).is_file() for name in required):
                continue
            seen.add(directory.name)
            fallback = FIXTURE_ROOTS[0] / "tiny_a"
            bert = directory / "bert" if (directory / "bert" / "tokenizer.json").is_file() else fallback / "bert"
            with tempfile.TemporaryDirectory() as output_dir:
                convert_checkpoint(
                    checkpoint_path=directory / "checkpoint.pth",
                    output_dir=output_dir,
                    original_config=directory / "config.yaml",
                    text_model=bert,
                )
                model = GLIPForGrounding.from_pretrained(output_dir).eval()
                processor = GLIPProcessor.from_pretrained(output_dir)
            description = json.loads((directory / "inputs.json").read_text())
            image_path = directory / description.get("image", "image.png")
            image = PIL.Image.open(image_path if image_path.is_file() else fallback / "image.png").convert("RGB")
            spans = [[tuple(span) for span in phrase["tokens_positive"]] for phrase in description["phrases"]]
            encoded = processor(
                images=image, text=description["caption"], phrase_spans=spans, official_mode=True, return_tensors="pt"
            )  # padded to 256 as the official inputs
            model_inputs = {key: encoded[key] for key in ("pixel_values", "input_ids", "attention_mask")}
            logits = _logits_in_both_modes(model, model_inputs)
            reference = load_file(directory / "outputs.safetensors")
            official_logits = torch.cat(
                [reference[f"head.dot_product_logits.{level}"] for level in LEVELS], dim=1
            )  # (batch, anchors, seq_len)
            figures[directory.name] = {
                "has_fusion": bool(model.config.early_fusion),
                "max_logit_difference_factorised_to_official_mode": float(
                    (logits["factorised"] - logits["official"]).abs().max()
                ),
                "max_logit_difference_factorised_to_official_code": float(
                    (logits["factorised"] - official_logits).abs().max()
                ),
                "max_logit_difference_official_mode_to_official_code": float(
                    (logits["official"] - official_logits).abs().max()
                ),
            }
    return figures


def _full_size_figures(height: int, width: int) -> dict:
    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoTokenizer

    from transformers_glip import GLIPConfig, GLIPForGrounding
    from transformers_glip.image_processing_glip import GLIPImageProcessor
    from transformers_glip.modeling_glip_fusion import GLIPBiMultiHeadAttention
    from transformers_glip.processing_glip import GLIPProcessor

    torch.manual_seed(0)
    model = GLIPForGrounding(GLIPConfig.glip_t()).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, GLIPBiMultiHeadAttention):
                for projection in module.children():
                    projection.bias.normal_(0.0, 0.02)
    processor = GLIPProcessor(
        image_processor=GLIPImageProcessor(min_size=min(height, width), max_size=max(height, width)),
        tokenizer=AutoTokenizer.from_pretrained(TOKENIZER_DIR),
    )
    pixels = np.random.RandomState(0).randint(0, 256, size=(height, width, 3), dtype=np.uint8)
    inputs = processor(images=Image.fromarray(pixels), text=[LABELS], official_mode=True, return_tensors="pt")
    padded = {key: inputs[key] for key in ("pixel_values", "input_ids", "attention_mask")}
    length = int(inputs["attention_mask"].sum())
    trimmed = {**padded, "input_ids": padded["input_ids"][:, :length]}  # (1, length)
    trimmed["attention_mask"] = padded["attention_mask"][:, :length]  # (1, length)
    logits = _logits_in_both_modes(model, padded)
    model.config.fusion_implementation, model.config.deformable_conv_implementation = "factorised", "gather"
    with torch.inference_mode():
        fast_logits = model(**trimmed).logits  # (1, anchors, length)
    return {
        "image_hw": [height, width],
        "input_shape": list(padded["pixel_values"].shape),
        "text_length": length,
        "logit_magnitude": float(logits["official"][..., :length].abs().max()),
        "max_logit_difference_factorised_to_official_mode_256": float(
            (logits["factorised"] - logits["official"]).abs().max()
        ),
        "max_logit_difference_fast_path_to_official_mode_real_tokens": float(
            (fast_logits - logits["official"][..., :length]).abs().max()
        ),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=320)
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-full-size", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    summary = {"fixtures": _fixture_figures()}
    for name, figures in summary["fixtures"].items():
        print(
            f"fixture {name}: "
            + ", ".join(f"{key} {value:.3e}" for key, value in figures.items() if key != "has_fusion")
        )
    if not args.skip_full_size:
        summary["full_size"] = _full_size_figures(args.height, args.width)
        print("GLIP-T random weights: " + json.dumps(summary["full_size"]))
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    sys.exit(main())
