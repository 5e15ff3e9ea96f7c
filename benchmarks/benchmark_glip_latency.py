"""CPU latency and peak memory of a GLIP-T-sized model next to HF Grounding DINO-tiny (random weights, same input).

Prints the median of several forwards (after a warm-up) at an 800x1333 image with a 10-label prompt, the peak
resident memory of each model's measurement (in its own subprocess, so the figures don't mix), and the ratios.
GLIP is measured twice: with the prompt padded to 256 tokens (what the processor and the official code feed) and
cut to its real tokens (what `transformers_glip.detect` and the pipeline feed: the padding is masked, so the results
are the same up to float rounding).

    python benchmarks/benchmark_glip_latency.py [--runs 3] [--threads 2] [--height 800 --width 1333]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["main"]

TOKENIZER_DIR = Path(__file__).resolve().parents[1] / "examples" / "assets" / "bert-base-uncased-tokenizer"
LABELS = ["person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light"]


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _measure_glip(height: int, width: int, runs: int, trim_text_padding: bool = False) -> dict:
    import torch
    from PIL import Image
    from transformers import AutoTokenizer

    from transformers_glip import GLIPConfig, GLIPForGrounding
    from transformers_glip.image_processing_glip import GLIPImageProcessor
    from transformers_glip.processing_glip import GLIPProcessor

    torch.manual_seed(0)
    model = GLIPForGrounding(GLIPConfig.glip_t()).eval()
    processor = GLIPProcessor(
        # The image keeps its size (800x1333 is the official test size; other --height/--width are not resized).
        image_processor=GLIPImageProcessor(min_size=min(height, width), max_size=max(height, width)),
        tokenizer=AutoTokenizer.from_pretrained(TOKENIZER_DIR),
    )
    image = Image.new("RGB", (width, height), (120, 90, 60))
    inputs = processor(images=image, text=[LABELS], return_tensors="pt")
    model_inputs = {key: inputs[key] for key in ("pixel_values", "input_ids", "attention_mask")}
    if trim_text_padding:
        length = int(inputs["attention_mask"].sum())
        model_inputs["input_ids"] = model_inputs["input_ids"][:, :length]  # (1, length)
        model_inputs["attention_mask"] = model_inputs["attention_mask"][:, :length]  # (1, length)
    result = _time_forward(lambda: model(**model_inputs), runs, tuple(model_inputs["pixel_values"].shape))
    result["text_length"] = model_inputs["input_ids"].shape[-1]
    return result


def _measure_grounding_dino(height: int, width: int, runs: int) -> dict:
    import torch
    from transformers import (
        AutoTokenizer,
        BertConfig,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        SwinConfig,
    )

    torch.manual_seed(0)
    backbone_config = SwinConfig(
        embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7, out_indices=[2, 3, 4]
    )
    config = GroundingDinoConfig(backbone_config=backbone_config, text_config=BertConfig())
    model = GroundingDinoForObjectDetection(config).eval()
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    text = tokenizer(". ".join(LABELS) + ".", return_tensors="pt")
    padded_height, padded_width = height, width
    pixel_values = torch.randn(1, 3, padded_height, padded_width)
    pixel_mask = torch.ones(1, padded_height, padded_width, dtype=torch.long)
    model_inputs = {"pixel_values": pixel_values, "pixel_mask": pixel_mask, **text}
    return _time_forward(lambda: model(**model_inputs), runs, tuple(pixel_values.shape))


WORKERS = {
    "glip": _measure_glip,
    "glip_trimmed_prompt": lambda height, width, runs: _measure_glip(height, width, runs, trim_text_padding=True),
    "grounding_dino": _measure_grounding_dino,
}


def _time_forward(forward, runs: int, input_shape: tuple) -> dict:
    import torch

    with torch.inference_mode():
        start = time.perf_counter()
        forward()
        warmup = time.perf_counter() - start
        timings = []
        for _ in range(runs):
            start = time.perf_counter()
            forward()
            timings.append(time.perf_counter() - start)
    return {
        "input_shape": list(input_shape),
        "warmup_s": warmup,
        "timings_s": timings,
        "median_s": statistics.median(timings),
        "peak_rss_mib": _peak_rss_mib(),
    }


def _run_worker(name: str, args: argparse.Namespace) -> dict:
    command = [
        sys.executable,
        __file__,
        "--worker",
        name,
        "--runs",
        str(args.runs),
        "--threads",
        str(args.threads),
        "--height",
        str(args.height),
        "--width",
        str(args.width),
    ]
    completed = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1333)
    parser.add_argument("--worker", choices=list(WORKERS), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(WORKERS[args.worker](args.height, args.width, args.runs)))
        return

    print(f"image {args.height}x{args.width}, {len(LABELS)}-label prompt, {args.threads} threads, {args.runs} runs")
    results = {}
    for name in WORKERS:
        results[name] = _run_worker(name, args)
        result = results[name]
        text = f", {result['text_length']} text tokens" if "text_length" in result else ""
        print(
            f"{name:>19}: input {result['input_shape']}{text}, warm-up {result['warmup_s']:.2f} s, median "
            f"{result['median_s']:.2f} s over {[round(value, 2) for value in result['timings_s']]}, peak RSS "
            f"{result['peak_rss_mib']:.0f} MiB"
        )
    dino = results["grounding_dino"]
    for name in ("glip", "glip_trimmed_prompt"):
        print(
            f"ratio {name} / Grounding DINO-tiny: latency {results[name]['median_s'] / dino['median_s']:.2f}x, "
            f"peak memory {results[name]['peak_rss_mib'] / dino['peak_rss_mib']:.2f}x"
        )


if __name__ == "__main__":
    main()
