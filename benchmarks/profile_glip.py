"""Where GLIP-T's CPU time goes: one `detect` call split by part of the model, and the heaviest operators.

Random weights (seed 0), one random-noise image, the first `--labels` COCO names, `--threads` threads, one warm-up
call, then one timed call with a forward hook pair on each part (inclusive wall time, summed over the head's blocks)
and one call under `torch.profiler` for the operator table (self CPU time). The fast path by default,
`--official-mode` for the exact official computation.

    python benchmarks/profile_glip.py [--height 800 --width 1333] [--labels 10] [--threads 2] [--official-mode]
        [--json]

Parts: the Swin backbone, the FPN, BERT, and in the dynamic head the vision-language fusion, the head's BERT layers
(`text_layer`), DyConv (of which the modulated deformable convolutions are a part) and the rest of the head (the
offset convolutions of the last DyConv, the box / centerness / token-score outputs); "outside the forward" is
pre- and post-processing in `detect` (resize, normalisation, tokenisation, box decoding, NMS).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

from benchmark_glip_latency import COCO_NAMES  # the same 80 labels as the latency benchmark (this folder)

__all__ = ["main"]

TOKENIZER_DIR = Path(__file__).resolve().parents[1] / "examples" / "assets" / "bert-base-uncased-tokenizer"


class PartTimer:
    """Inclusive wall time of modules, summed per part name, through forward pre-hooks and hooks."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self.calls = defaultdict(int)
        self.handles = []
        self.enabled = False

    def watch(self, part: str, module) -> None:
        starts = []

        def before(module, inputs):
            if self.enabled:
                starts.append(time.perf_counter())

        def after(module, inputs, outputs):
            if self.enabled and starts:
                self.seconds[part] += time.perf_counter() - starts.pop()
                self.calls[part] += 1

        self.handles.append(module.register_forward_pre_hook(before))
        self.handles.append(module.register_forward_hook(after))


def build(args):
    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoTokenizer

    from transformers_glip import GLIPConfig, GLIPForGrounding
    from transformers_glip.image_processing_glip import GLIPImageProcessor
    from transformers_glip.modeling_glip import GLIPModulatedDeformConv
    from transformers_glip.processing_glip import GLIPProcessor

    torch.manual_seed(0)
    model = GLIPForGrounding(GLIPConfig.glip_t()).eval()
    model.config.pre_nms_score_threshold = 0.0  # random weights score below the official 0.05
    processor = GLIPProcessor(
        image_processor=GLIPImageProcessor(
            min_size=min(args.height, args.width), max_size=max(args.height, args.width)
        ),
        tokenizer=AutoTokenizer.from_pretrained(TOKENIZER_DIR),
    )
    pixels = np.random.RandomState(0).randint(0, 256, size=(args.height, args.width, 3), dtype=np.uint8)
    timer = PartTimer()
    glip = model.model
    timer.watch("model forward", model)
    timer.watch("Swin backbone", glip.backbone)
    timer.watch("FPN", glip.feature_pyramid)
    timer.watch("BERT", glip.text_model)
    timer.watch("dynamic head", glip.head)
    for block in glip.head.blocks:
        if block.fusion is not None:
            timer.watch("head: fusion", block.fusion)
        if block.text_layer is not None:
            timer.watch("head: BERT layers", block.text_layer)
        timer.watch("head: DyConv", block.dyconv)
    for module in glip.head.modules():
        if isinstance(module, GLIPModulatedDeformConv):
            timer.watch("head: DyConv: deformable convs", module)
    return model, processor, Image.fromarray(pixels), timer


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1333)
    parser.add_argument("--labels", type=int, default=10, help="the first N COCO names (1-80)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--official-mode", action="store_true", help="profile official mode instead of the fast path")
    parser.add_argument("--top", type=int, default=12, help="operators in the operator table")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)
    if not 1 <= args.labels <= len(COCO_NAMES):
        parser.error(f"--labels must be between 1 and {len(COCO_NAMES)}, got {args.labels}")
    if args.height < 32 or args.width < 32:
        parser.error(f"--height and --width must be >= 32, got {args.height}x{args.width}")

    import torch

    from transformers_glip import detect

    torch.set_num_threads(args.threads)
    model, processor, image, timer = build(args)
    labels = COCO_NAMES[: args.labels]

    def call():
        return detect(model, processor, image, labels, threshold=None, official_mode=args.official_mode)

    with torch.inference_mode():
        call()  # warm-up
        timer.enabled = True
        start = time.perf_counter()
        call()
        total = time.perf_counter() - start
        timer.enabled = False
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
            call()

    seconds = dict(timer.seconds)
    head = seconds["dynamic head"]
    head_parts = ("head: fusion", "head: BERT layers", "head: DyConv")
    rows = [
        ("Swin backbone", seconds["Swin backbone"]),
        ("FPN", seconds["FPN"]),
        ("BERT", seconds["BERT"]),
        *((part, seconds.get(part, 0.0)) for part in head_parts),
        ("head: DyConv: deformable convs", seconds.get("head: DyConv: deformable convs", 0.0)),
        ("head: rest (offsets, outputs)", head - sum(seconds.get(part, 0.0) for part in head_parts)),
        ("outside the forward (pre/post)", total - seconds["model forward"]),
    ]
    mode = "official mode" if args.official_mode else "fast path"
    print(f"GLIP-T {mode}, {args.height}x{args.width}, {args.labels} labels, {args.threads} threads: {total:.2f} s")
    print("| part | s | % of the call |\n|---|---|---|")
    for part, value in rows:
        print(f"| {part} | {value:.2f} | {100 * value / total:.1f} |")
    events = sorted(profile.key_averages(), key=lambda event: -event.self_cpu_time_total)[: args.top]
    profiled_total = sum(event.self_cpu_time_total for event in profile.key_averages())
    print("\n| operator | calls | self s | % of self time |\n|---|---|---|---|")
    operators = []
    for event in events:
        share = 100 * event.self_cpu_time_total / profiled_total
        print(f"| {event.key} | {event.count} | {event.self_cpu_time_total / 1e6:.2f} | {share:.1f} |")
        operators.append({"name": event.key, "calls": event.count, "self_s": event.self_cpu_time_total / 1e6})
    summary = {
        "mode": mode,
        "image_hw": [args.height, args.width],
        "labels": args.labels,
        "threads": args.threads,
        "total_s": total,
        "parts_s": dict(rows),
        "operators": operators,
    }
    if args.json:
        print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
