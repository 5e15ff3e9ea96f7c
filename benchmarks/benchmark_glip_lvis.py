"""An LVIS-size vocabulary on CPU: official mode's sequential 40-name chunks vs the fast path, in one run.

LVIS has 1203 category names; they do not fit in one 256-token prompt, so the official chunked evaluation
(`TEST.CHUNKED_EVALUATION: 40`) runs 31 prompts of 40 names, one forward after another. This benchmark generates 1203
distinct names deterministically (every "adjective noun" pair of two fixed word lists, no download; about 3 tokens per
name with its separator, so a chunk is ~122 tokens as with the LVIS names) and times two configurations of
`transformers_glip.detect` on one random-noise image, each in its own subprocess so that the peak resident memory is
per configuration:

* `official_mode`: `detect(..., official_mode=True)`: every chunk padded to 256 tokens, the fusion in the official
  operation order, one chunk per forward, one after another (the official chunked evaluation);
* `fast_path`: `detect`'s default: the chunks batched through the model, at most `--max-prompts-per-forward` (4) per
  forward (bounded memory), each forward cut to its longest prompt, the factorised fusion.

GLIP-T with random weights (the same in every process: seed 0), `threshold=None` (each chunk keeps the official top
100) with `config.pre_nms_score_threshold = 0` (random weights score below the official 0.05), and the official
plain concatenation of the chunks (`merge_mode="concatenate"`), so that every chunk's detections are compared. Medians
of `--runs` calls (after a warm-up call with `--warmup`). The same run checks that the fast path's detections equal
official mode's (same labels; score and box differences printed).

    python benchmarks/benchmark_glip_lvis.py [--height 480 --width 800] [--names 1203] [--threads 2] [--runs 1]
        [--warmup] [--max-prompts-per-forward 8] [--quick] [--json]

`--quick` (a smoke test, well under 2 minutes; timings say little): a 160x256 image and 120 names (3 chunks).
`--json` prints one JSON object as the last line (`lvis_speedup` = official-mode median / fast-path median,
`same_detections`, the medians, peak RSS and their ratio).
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

__all__ = ["ADJECTIVES", "NOUNS", "LVIS_SIZE", "main", "vocabulary"]

BENCHMARKS_DIR = Path(__file__).resolve().parent
TOKENIZER_DIR = BENCHMARKS_DIR.parent / "examples" / "assets" / "bert-base-uncased-tokenizer"
LVIS_SIZE = 1203
OFFICIAL_CHUNK_SIZE = 40  # `TEST.CHUNKED_EVALUATION` of the official LVIS configs
CONFIGURATIONS = ("official_mode", "fast_path")
ADJECTIVES = [
    "red", "blue", "green", "black", "white", "brown", "yellow", "orange", "pink", "purple",
    "gray", "golden", "silver", "small", "large", "little", "long", "short", "tall", "old",
    "new", "young", "hot", "cold", "wet", "dry", "soft", "hard", "heavy", "dark",
    "bright", "round", "flat", "wooden", "metal", "plastic", "glass", "paper", "stone", "empty",
]  # fmt: skip
NOUNS = [
    "cup", "chair", "table", "bottle", "box", "bag", "hat", "shoe", "ball", "book", "lamp", "door", "window", "car",
    "boat", "bird", "dog", "cat", "horse", "fish", "tree", "flower", "plate", "bowl", "spoon", "knife", "phone",
    "clock", "bed", "bench", "kite",
]  # fmt: skip


def vocabulary(size: int = LVIS_SIZE) -> list[str]:
    """`size` distinct names, the first of every "adjective noun" pair in a fixed order (at most 1240)."""
    names = [f"{adjective} {noun}" for adjective in ADJECTIVES for noun in NOUNS]
    if not 1 <= size <= len(names):
        raise ValueError(f"the vocabulary has between 1 and {len(names)} names, got {size}")
    return names[:size]


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _measure(name: str, args: argparse.Namespace) -> dict:
    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoTokenizer

    from transformers_glip import GLIPConfig, GLIPForGrounding, detect
    from transformers_glip.image_processing_glip import GLIPImageProcessor
    from transformers_glip.processing_glip import GLIPProcessor

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = GLIPForGrounding(GLIPConfig.glip_t()).eval()  # the default config: the fast path's fusion
    model.config.pre_nms_score_threshold = 0.0  # random weights score below 0.05: keep the top 100 per chunk
    weight_checksum = float(sum(parameter.double().sum() for parameter in model.parameters()))
    processor = GLIPProcessor(
        image_processor=GLIPImageProcessor(
            min_size=min(args.height, args.width), max_size=max(args.height, args.width)
        ),
        tokenizer=AutoTokenizer.from_pretrained(TOKENIZER_DIR),
        chunk_size=OFFICIAL_CHUNK_SIZE,
    )
    pixels = np.random.RandomState(0).randint(0, 256, size=(args.height, args.width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    names = vocabulary(args.names)
    options = {"threshold": None, "merge_mode": "concatenate"}
    if name == "official_mode":
        options["official_mode"] = True
    else:
        options["max_prompts_per_forward"] = args.max_prompts_per_forward

    forwards = []
    handle = model.register_forward_pre_hook(
        lambda module, positional, keywords: forwards.append(tuple(keywords["input_ids"].shape)), with_kwargs=True
    )
    timings, result, warmup_s = [], None, None
    with torch.inference_mode():
        if args.warmup:
            start = time.perf_counter()
            detect(model, processor, image, names, **options)
            warmup_s = time.perf_counter() - start
        for _ in range(args.runs):
            forwards.clear()
            start = time.perf_counter()
            result = detect(model, processor, image, names, **options)[0]
            timings.append(time.perf_counter() - start)
    handle.remove()
    return {
        "median_s": statistics.median(timings),
        "timings_s": timings,
        "warmup_s": warmup_s,
        "forward_shapes": forwards,  # (prompts, tokens) of each forward of the last call
        "weight_checksum": weight_checksum,
        "detections": {key: result[key].tolist() for key in ("boxes", "scores", "labels")},
        "peak_rss_mib": _peak_rss_mib(),
    }


def _run_worker(name: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", name, "--names", str(args.names), "--runs", str(args.runs)]
    command += ["--threads", str(args.threads), "--height", str(args.height), "--width", str(args.width)]
    command += ["--max-prompts-per-forward", str(args.max_prompts_per_forward)]
    if args.warmup:
        command.append("--warmup")
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"worker {name} failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=800)
    parser.add_argument("--names", type=int, default=LVIS_SIZE, help=f"vocabulary size (default {LVIS_SIZE})")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--warmup", action="store_true", help="one untimed call before the timed ones")
    parser.add_argument(
        "--max-prompts-per-forward", type=int, default=4, help="the fast path's memory bound (detect's default)"
    )
    parser.add_argument("--quick", action="store_true", help="160x256 image, 120 names, 1 run")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--worker", choices=CONFIGURATIONS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be >= 1, got {args.runs}")
    if args.max_prompts_per_forward < 1:
        parser.error(f"--max-prompts-per-forward must be >= 1, got {args.max_prompts_per_forward}")
    if not 1 <= args.names <= len(ADJECTIVES) * len(NOUNS):
        parser.error(f"--names must be between 1 and {len(ADJECTIVES) * len(NOUNS)}, got {args.names}")

    if args.worker:
        print(json.dumps(_measure(args.worker, args)))
        return

    if args.quick:
        args.height, args.width, args.names, args.runs, args.warmup = 160, 256, 120, 1, False
    sys.path.insert(0, str(BENCHMARKS_DIR))
    from benchmark_glip_latency import compare_detections

    num_chunks = -(-args.names // OFFICIAL_CHUNK_SIZE)
    print(
        f"image {args.height}x{args.width}, {args.names} names in {num_chunks} chunks of {OFFICIAL_CHUNK_SIZE}, "
        f"{args.threads} threads, {args.runs} runs{' after a warm-up' if args.warmup else ''}, fast path at most "
        f"{args.max_prompts_per_forward} prompts per forward, {platform.processor() or platform.machine()}"
    )
    results = {name: _run_worker(name, args) for name in CONFIGURATIONS}
    for name, result in results.items():
        shapes = result["forward_shapes"]
        print(
            f"{name:>13}: {len(shapes)} forwards of (prompts, tokens) {sorted(set(map(tuple, shapes)))}, median "
            f"{result['median_s']:.2f} s over {[round(value, 2) for value in result['timings_s']]}, peak RSS "
            f"{result['peak_rss_mib']:.0f} MiB"
        )
    official, fast = results["official_mode"], results["fast_path"]
    comparison = compare_detections(official["detections"], fast["detections"])
    comparison["same_weights"] = official["weight_checksum"] == fast["weight_checksum"]
    comparison["same_detections"] = comparison["same_detections"] and comparison["same_weights"]
    speedup = official["median_s"] / fast["median_s"]
    memory_ratio = fast["peak_rss_mib"] / official["peak_rss_mib"]
    print(f"LVIS speed-up (official mode / fast path): {speedup:.2f}x; peak RSS fast / official {memory_ratio:.2f}x")
    print(
        f"same detections {comparison['same_detections']} ({comparison['num_candidate']} fast vs "
        f"{comparison['num_reference']} official, max |score diff| {comparison['max_score_difference']:.2e}, max "
        f"|box diff| {comparison['max_box_difference']:.2e} px, same weights {comparison['same_weights']})"
    )
    if args.json:
        summary = {
            "lvis_speedup": speedup,
            "same_detections": comparison["same_detections"],
            "median_s": {name: result["median_s"] for name, result in results.items()},
            "peak_rss_mib": {name: result["peak_rss_mib"] for name, result in results.items()},
            "memory_ratio_fast_to_official_mode": memory_ratio,
            "forwards": {name: len(result["forward_shapes"]) for name, result in results.items()},
            **{key: value for key, value in comparison.items() if key != "same_detections"},
            "names": args.names,
            "chunk_size": OFFICIAL_CHUNK_SIZE,
            "max_prompts_per_forward": args.max_prompts_per_forward,
            "image_hw": [args.height, args.width],
            "threads": args.threads,
            "runs": args.runs,
            "warmup": args.warmup,
            "quick": args.quick,
            "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
