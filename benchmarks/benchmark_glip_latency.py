"""CPU latency and peak memory of GLIP-T: official mode vs the fast path vs HF Grounding DINO-tiny, in one run.

Random weights (the same in every process: seed 0), one random-noise image, the first 10 and all 80 COCO names as
labels. Three configurations per label count, each in its own subprocess so that the peak resident memory is per
configuration:

* `glip_official`: the project's *official mode*, `detect(..., official_mode=True)`, the exact official
  computation: the prompt padded to 256 tokens and the fusion in the official operation order;
* `glip_fast`: the fast path, `detect`'s default: the prompt cut to its real tokens and the factorised fusion (the
  default `config.fusion_implementation`);
* `grounding_dino`: HF `GroundingDinoForObjectDetection` with the Grounding DINO-tiny architecture (Swin-T, BERT).

GLIP is timed through `transformers_glip.detect` (pre-processing, forward and post-processing, `threshold=None`:
the official top 100, with `config.pre_nms_score_threshold = 0` because random weights score below the official
0.05); Grounding DINO through its forward alone (its pre- and post-processing are not counted).
Medians of `--runs` calls after one warm-up call. The same run checks that the fast path's detections equal official
mode's: same labels, and the score and box differences are printed.

    python benchmarks/benchmark_glip_latency.py [--runs 3] [--threads 2] [--height 800 --width 1333]
        [--labels 10,80] [--quick] [--json]

`--quick` (a smoke test, timings meaningless): a 256x384 image, 10 labels, one call and no warm-up. `--json` prints
one JSON object as the last line (`ratio_fast_to_grounding_dino`, `ratio_fast_to_official_mode`, `same_detections`
at the smallest label count, and every figure per label count under `per_label_count`).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["COCO_NAMES", "compare_detections", "main"]

TOKENIZER_DIR = Path(__file__).resolve().parents[1] / "examples" / "assets" / "bert-base-uncased-tokenizer"
COCO_NAMES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant",
    "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard",
    "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli",
    "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "dining table", "toilet",
    "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
]  # fmt: skip
CONFIGURATIONS = ("glip_official", "glip_fast", "grounding_dino")
SCORE_TOLERANCE = 1e-4
BOX_TOLERANCE = 1e-2  # pixels


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _noise_image(height: int, width: int):
    import numpy as np
    from PIL import Image

    pixels = np.random.RandomState(0).randint(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _time_calls(call, runs: int, warmup: bool) -> dict:
    import torch

    with torch.inference_mode():
        warmup_s = None
        if warmup:
            start = time.perf_counter()
            call()
            warmup_s = time.perf_counter() - start
        timings, result = [], None
        for _ in range(runs):
            start = time.perf_counter()
            result = call()
            timings.append(time.perf_counter() - start)
    return {"warmup_s": warmup_s, "timings_s": timings, "median_s": statistics.median(timings), "result": result}


def _measure_glip(name: str, labels: list[str], height: int, width: int, runs: int, warmup: bool) -> dict:
    import torch
    from transformers import AutoTokenizer

    from transformers_glip import GLIPConfig, GLIPForGrounding, detect
    from transformers_glip.image_processing_glip import GLIPImageProcessor
    from transformers_glip.processing_glip import GLIPProcessor

    official = name == "glip_official"
    torch.manual_seed(0)
    model = GLIPForGrounding(GLIPConfig.glip_t()).eval()  # the default config: the fast path's fusion
    # Random weights score below the official 0.05 pre-NMS threshold: 0 keeps the top 100 to compare.
    model.config.pre_nms_score_threshold = 0.0
    weight_checksum = float(sum(parameter.double().sum() for parameter in model.parameters()))
    processor = GLIPProcessor(
        # The image keeps its size (800x1333 is the official test size).
        image_processor=GLIPImageProcessor(min_size=min(height, width), max_size=max(height, width)),
        tokenizer=AutoTokenizer.from_pretrained(TOKENIZER_DIR),
    )
    image = _noise_image(height, width)
    text_length = int(processor(images=image, text=[labels], return_tensors="pt")["attention_mask"].sum())
    timing = _time_calls(
        lambda: detect(model, processor, image, labels, threshold=None, official_mode=official)[0],
        runs,
        warmup,
    )
    detections = timing.pop("result")
    return {
        **timing,
        "text_length": 256 if official else text_length,
        "weight_checksum": weight_checksum,
        "detections": {key: detections[key].tolist() for key in ("boxes", "scores", "labels")},
        "peak_rss_mib": _peak_rss_mib(),
    }


def _measure_grounding_dino(labels: list[str], height: int, width: int, runs: int, warmup: bool) -> dict:
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
    text = tokenizer(". ".join(labels) + ".", return_tensors="pt")
    pixel_values = torch.randn(1, 3, height, width)
    pixel_mask = torch.ones(1, height, width, dtype=torch.long)
    model_inputs = {"pixel_values": pixel_values, "pixel_mask": pixel_mask, **text}
    timing = _time_calls(lambda: model(**model_inputs), runs, warmup)
    timing.pop("result")
    return {**timing, "text_length": int(text["input_ids"].shape[-1]), "peak_rss_mib": _peak_rss_mib()}


def compare_detections(reference: dict, candidate: dict) -> dict:
    """Match every `reference` detection to a distinct `candidate` one with the same label (closest box first).

    Args:
        reference, candidate: `{"boxes": [[x0, y0, x1, y1], ...], "scores": [...], "labels": [...]}`.

    Returns:
        `{"same_detections", "num_reference", "num_candidate", "max_score_difference", "max_box_difference"}`;
        `same_detections` is true when there are detections, the counts agree and every match is within 1e-4 in
        score and 0.01 px in box.
    """
    import torch

    reference_boxes = torch.tensor(reference["boxes"], dtype=torch.float64).reshape(-1, 4)
    candidate_boxes = torch.tensor(candidate["boxes"], dtype=torch.float64).reshape(-1, 4)
    reference_scores = torch.tensor(reference["scores"], dtype=torch.float64)
    candidate_scores = torch.tensor(candidate["scores"], dtype=torch.float64)
    used = torch.zeros(len(candidate_scores), dtype=torch.bool)
    max_score_difference, max_box_difference, all_matched = 0.0, 0.0, True
    for index, label in enumerate(reference["labels"]):
        candidates = torch.tensor([other == label for other in candidate["labels"]], dtype=torch.bool) & ~used
        if not candidates.any():
            all_matched = False
            continue
        box_difference = (candidate_boxes - reference_boxes[index]).abs().amax(dim=-1)  # (num_candidate,)
        box_difference = box_difference.masked_fill(~candidates, float("inf"))
        box_difference = box_difference + (candidate_scores - reference_scores[index]).abs()  # closest box + score
        match = int(torch.argmin(box_difference))
        used[match] = True
        max_score_difference = max(
            max_score_difference, float((candidate_scores[match] - reference_scores[index]).abs())
        )
        max_box_difference = max(
            max_box_difference, float((candidate_boxes[match] - reference_boxes[index]).abs().max())
        )
    same = (
        all_matched
        and len(reference_scores) > 0
        and len(reference_scores) == len(candidate_scores)
        and max_score_difference <= SCORE_TOLERANCE
        and max_box_difference <= BOX_TOLERANCE
    )
    return {
        "same_detections": bool(same),
        "num_reference": len(reference_scores),
        "num_candidate": len(candidate_scores),
        "max_score_difference": max_score_difference,
        "max_box_difference": max_box_difference,
    }


def _worker(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    labels = COCO_NAMES[: args.num_labels]
    warmup = not args.no_warmup
    if args.worker == "grounding_dino":
        return _measure_grounding_dino(labels, args.height, args.width, args.runs, warmup)
    return _measure_glip(args.worker, labels, args.height, args.width, args.runs, warmup)


def _run_worker(name: str, num_labels: int, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", name, "--num-labels", str(num_labels)]
    command += ["--runs", str(args.runs), "--threads", str(args.threads)]
    command += ["--height", str(args.height), "--width", str(args.width)]
    if args.no_warmup:
        command.append("--no-warmup")
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"worker {name} ({num_labels} labels) failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _parse_label_counts(text: str) -> list[int]:
    counts = [int(value) for value in text.split(",") if value.strip()]
    if not counts or any(not 1 <= count <= len(COCO_NAMES) for count in counts):
        raise argparse.ArgumentTypeError(f"--labels needs counts between 1 and {len(COCO_NAMES)}, got {text!r}")
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1333)
    parser.add_argument("--labels", type=_parse_label_counts, default=None, help="label counts, default 10,80")
    parser.add_argument("--quick", action="store_true", help="256x384 image, 10 labels, 1 call, no warm-up")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--worker", choices=CONFIGURATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--num-labels", type=int, default=10, help=argparse.SUPPRESS)
    parser.add_argument("--no-warmup", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be >= 1, got {args.runs}")

    if args.worker:
        print(json.dumps(_worker(args)))
        return

    if args.quick:
        args.height, args.width, args.runs, args.no_warmup = 256, 384, 1, True
        label_counts = args.labels or [10]
    else:
        label_counts = args.labels or [10, 80]
    print(
        f"image {args.height}x{args.width}, labels {label_counts}, {args.threads} threads, {args.runs} runs"
        f"{'' if args.no_warmup else ' after a warm-up'}, {platform.processor() or platform.machine()}"
    )
    per_label_count = {}
    for num_labels in label_counts:
        results = {name: _run_worker(name, num_labels, args) for name in CONFIGURATIONS}
        for name, result in results.items():
            warmup = "" if result["warmup_s"] is None else f", warm-up {result['warmup_s']:.2f} s"
            print(
                f"{num_labels:>3} labels {name:>15}: {result['text_length']:>3} text tokens{warmup}, median "
                f"{result['median_s']:.2f} s over {[round(value, 2) for value in result['timings_s']]}, peak RSS "
                f"{result['peak_rss_mib']:.0f} MiB"
            )
        official, fast, dino = results["glip_official"], results["glip_fast"], results["grounding_dino"]
        comparison = compare_detections(official["detections"], fast["detections"])
        comparison["same_weights"] = official["weight_checksum"] == fast["weight_checksum"]
        comparison["same_detections"] = comparison["same_detections"] and comparison["same_weights"]
        figures = {
            "median_s": {name: result["median_s"] for name, result in results.items()},
            "peak_rss_mib": {name: result["peak_rss_mib"] for name, result in results.items()},
            "text_length": {name: result["text_length"] for name, result in results.items()},
            "ratio_fast_to_grounding_dino": fast["median_s"] / dino["median_s"],
            "ratio_fast_to_official_mode": fast["median_s"] / official["median_s"],
            "ratio_official_mode_to_grounding_dino": official["median_s"] / dino["median_s"],
            "memory_ratio_fast_to_grounding_dino": fast["peak_rss_mib"] / dino["peak_rss_mib"],
            "memory_ratio_fast_to_official_mode": fast["peak_rss_mib"] / official["peak_rss_mib"],
            **comparison,
        }
        per_label_count[num_labels] = figures
        print(
            f"{num_labels:>3} labels: fast / Grounding DINO-tiny {figures['ratio_fast_to_grounding_dino']:.2f}x, "
            f"fast / official mode {figures['ratio_fast_to_official_mode']:.2f}x, official mode / Grounding DINO-tiny "
            f"{figures['ratio_official_mode_to_grounding_dino']:.2f}x; peak memory fast / DINO "
            f"{figures['memory_ratio_fast_to_grounding_dino']:.2f}x, fast / official "
            f"{figures['memory_ratio_fast_to_official_mode']:.2f}x"
        )
        print(
            f"{num_labels:>3} labels: same detections {comparison['same_detections']} "
            f"({comparison['num_candidate']} fast vs {comparison['num_reference']} official, max |score diff| "
            f"{comparison['max_score_difference']:.2e}, max |box diff| {comparison['max_box_difference']:.2e} px, "
            f"same weights {comparison['same_weights']})"
        )
    if args.json:
        first = per_label_count[label_counts[0]]
        summary = {
            "ratio_fast_to_grounding_dino": first["ratio_fast_to_grounding_dino"],
            "ratio_fast_to_official_mode": first["ratio_fast_to_official_mode"],
            "same_detections": all(figures["same_detections"] for figures in per_label_count.values()),
            "label_count": label_counts[0],
            "image_hw": [args.height, args.width],
            "threads": args.threads,
            "runs": args.runs,
            "quick": args.quick,
            "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "per_label_count": {str(count): figures for count, figures in per_label_count.items()},
        }
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
