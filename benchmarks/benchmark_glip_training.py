"""Training speed on CPU: the demo's steps/s, one GLIP-T-sized training step, and 2-process scaling, in one run.

* `demo`: `examples/pretrain.py` with the demo recipe (`DEMO_DEFAULTS`: tiny config, batch 4, 1 thread, a data
  worker) for `--demo-steps` steps, as `make demo` runs it; the steps/s its summary reports (training loop only).
* `one_process` / `two_processes`: the same recipe with the data loaded in the training process (no worker), in one
  process, then in two (`torchrun --nproc_per_node 2`, gloo DDP, 1 thread each): images/s of the two against the
  one is the data-parallel scaling (`scaling_two_processes`).
* `glip_t_step`: one optimizer step of GLIP-T (random weights, seed 0) on one `--height`x`--width` image with 5 boxes
  and a 10-label prompt: forward with the loss, backward, AdamW; median of `--runs` steps after one warm-up step,
  `--threads` threads.

    python benchmarks/benchmark_glip_training.py [--demo-steps 300] [--height 512 --width 864] [--threads 2]
        [--runs 2] [--skip-glip-t] [--quick] [--json]

`--quick` (a smoke test, timings meaningless): 20 demo steps and a 128x192 GLIP-T step. `--json` prints one JSON
object as the last line (`demo_steps_per_second`, `scaling_two_processes`, `glip_t_step_seconds`, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmark_glip_latency import COCO_NAMES  # (this folder: run as `python benchmarks/...`)

__all__ = ["main"]

REPOSITORY = Path(__file__).resolve().parents[1]
PRETRAIN = REPOSITORY / "examples" / "pretrain.py"
TOKENIZER_DIR = REPOSITORY / "examples" / "assets" / "bert-base-uncased-tokenizer"
LABELS = COCO_NAMES[:10]  # the latency benchmark's 10-label prompt


def run_pretrain(output_dir: Path, steps: int, processes: int, workers: int) -> dict:
    """One `pretrain.py` run with the demo recipe; returns its `summary.json`."""
    arguments = [str(PRETRAIN), "--output_dir", str(output_dir), "--max_train_steps", str(steps)]
    arguments += ["--eval_steps", "0", "--warmup_steps", str(min(50, steps // 4))]
    arguments += ["--dataloader_num_workers", str(workers), "--synthetic_dir", str(output_dir.parent / "world")]
    if processes == 1:
        command = [sys.executable, *arguments]
    else:
        torchrun = Path(sys.executable).with_name("torchrun")
        command = [str(torchrun), "--nproc_per_node", str(processes), "--master_port", "29547", *arguments]
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    completed = subprocess.run(command, capture_output=True, text=True, env=environment, stdin=subprocess.DEVNULL)
    if completed.returncode != 0:
        raise RuntimeError(f"pretrain.py ({processes} process(es)) failed:\n{completed.stderr[-4000:]}")
    with open(output_dir / "summary.json") as handle:
        return json.load(handle)


def glip_t_step_seconds(height: int, width: int, threads: int, runs: int) -> dict:
    """Median wall time of one GLIP-T optimizer step (forward + loss, backward, AdamW) on one image."""
    import torch
    from transformers import AutoTokenizer

    from transformers_glip import GLIPConfig, GLIPForGrounding

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = GLIPForGrounding(GLIPConfig.glip_t()).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    text = tokenizer([". ".join(LABELS) + "."], return_tensors="pt")
    sequence_length = text["input_ids"].shape[-1]
    boxes = torch.tensor([[40.0, 40.0, 200.0, 160.0], [10, 60, 90, 300], [220, 20, 400, 240], [300, 200, 500, 460],
                          [100, 300, 260, 500]])  # fmt: skip
    boxes = boxes * torch.tensor([width / 864, height / 512, width / 864, height / 512])  # (5, 4) xyxy
    positive_map = torch.zeros(len(boxes), sequence_length)
    for index in range(len(boxes)):
        positive_map[index, 1 + 2 * index] = 1.0  # (5, sequence_length): box i -> the first token of label i
    labels = [{"boxes": boxes, "positive_map": positive_map}]
    pixel_values = torch.randn(1, 3, height, width)
    image_sizes = torch.tensor([[height, width]])

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = model(pixel_values, **text, image_sizes=image_sizes, labels=labels).loss
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    step()  # warm-up
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        timings.append(time.perf_counter() - start)
    return {"median_s": statistics.median(timings), "timings_s": timings, "parameters_m": model.num_parameters() / 1e6}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-steps", type=int, default=300)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=864)
    parser.add_argument("--threads", type=int, default=2, help="threads of the GLIP-T step")
    parser.add_argument("--runs", type=int, default=2, help="timed GLIP-T steps (after one warm-up step)")
    parser.add_argument("--skip-glip-t", action="store_true", help="only the demo and the scaling")
    parser.add_argument("--quick", action="store_true", help="20 demo steps, a 128x192 GLIP-T step")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)
    if args.quick:
        args.demo_steps, args.height, args.width, args.runs = 20, 128, 192, 1
    if args.demo_steps < 8:
        parser.error(f"--demo-steps must be >= 8, got {args.demo_steps}")
    if args.runs < 1 or args.height < 64 or args.width < 64:
        parser.error("--runs must be >= 1 and --height / --width >= 64")

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, demo {args.demo_steps} steps")
    results = {}
    with tempfile.TemporaryDirectory(prefix="glip-training-benchmark-") as temporary:
        for name, processes, workers in (("demo", 1, 1), ("one_process", 1, 0), ("two_processes", 2, 0)):
            summary = run_pretrain(Path(temporary) / name, args.demo_steps, processes, workers)
            images_per_second = summary["steps_per_second"] * 4 * processes  # demo batch: 4 images per process
            results[name] = {"steps_per_second": summary["steps_per_second"], "images_per_second": images_per_second}
            print(
                f"{name:>14}: {processes} process(es), data workers {workers}: {summary['steps_per_second']:.2f} "
                f"steps/s, {images_per_second:.1f} images/s",
                flush=True,
            )
    scaling = results["two_processes"]["images_per_second"] / results["one_process"]["images_per_second"]
    print(f"2-process scaling (images/s, 2 processes / 1, no data worker): {scaling:.2f}x")
    summary = {
        "demo_steps_per_second": results["demo"]["steps_per_second"],
        "scaling_two_processes": scaling,
        "per_configuration": results,
        "cpus": os.cpu_count(),
        "quick": args.quick,
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if not args.skip_glip_t:
        step = glip_t_step_seconds(args.height, args.width, args.threads, args.runs)
        print(
            f"GLIP-T ({step['parameters_m']:.0f}M parameters) training step, 1 image {args.height}x{args.width}, "
            f"{args.threads} threads: median {step['median_s']:.2f} s over {[round(t, 2) for t in step['timings_s']]}"
        )
        summary.update(glip_t_step_seconds=step["median_s"], glip_t_image_hw=[args.height, args.width])
    if args.json:
        print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
