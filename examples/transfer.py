#!/usr/bin/env python
"""The paper's data-efficiency result in miniature: few-shot transfer of the demo GLIP to shapes it has never seen.

    python examples/pretrain.py --output_dir out/demo       # the demo model (`make demo`), once
    python examples/transfer.py --model out/demo            # or `--train_demo` to train it first (`make transfer`)

The demo model was pre-trained on the shapes world (circle / square / triangle in four colours). The novel task is a
world of the same generator with shapes the demo never saw (`NOVEL_SHAPE_NAMES`: star, diamond, cross; categories
"red star", ..., 12 in all), generated into its own folder (`--novel_dir`) with a COCO json training pool and a
validation split. The script reports

1. zero-shot AP50 of the demo model on the novel validation split (prompt: the category names, as for any GLIP);
2. AP50 after fine-tuning on k = 1 / 3 / 5 / 10 shots per category (the official few-shot sampling,
   `sample_few_shot_coco`, seed s) in the paper's three modes (`apply_tuning_mode`: `full`, `prompt_tuning` with
   the official zero-initialised prompt offsets, `linear_probe` with the official parameter list), and of the same
   architecture trained from scratch (random init, `scratch`) on the same shots; every run has the same number of
   optimizer steps, for each seed of `--seeds`.

The model is loaded once and copied per run; the runs go to `--num_workers` forked processes (default 2, one per
core, one torch thread each; every run is seeded, so the results do not depend on the worker count). Training uses
the library's stream, transform (detection prompts with the official negative sampling, multi-scale resize, flip)
and collator; evaluation is `transformers_glip.evaluation.coco.evaluate_coco` (pycocotools through the processor's
grounded post-processing, as inference).

Optimizers: the official parameter groups (`tuning_parameter_groups`: BERT at its own LR, biases at 2x LR without
weight decay) and the warmup multi-step schedule of `examples/pretrain.py` (x0.1 at 67% and 89% of the steps).
Each run has only `--max_train_steps` (100) steps instead of the official thousands, so `full` and `linear_probe`
use 10x the official LRs: 1e-3, BERT 1e-4 (official 1e-4 / 1e-5). Measured on 10 shots, seed 1, 100 steps (AP50):
full 1e-4: 0.428, 1e-3: 0.447, 3e-3: 0.399; linear probe 1e-3: 0.429, 1e-2: 0.415. `prompt_tuning` keeps the
official LR 0.05 and weight decay 0.25 (LR 0.2: 0.411, 0.05: 0.413). `scratch` uses the demo's from-scratch recipe
(LR 1e-3 for the whole model, BERT included, weight decay 1e-4, as `examples/pretrain.py` trains the demo).

Writes to `--output_dir` (default `out/transfer`):
* `summary.json`: `{"zero_shot_ap50": x, "runs": [{"mode", "shots", "seed", "ap50"}, ...]}`;
* `details.json`: the settings, the few-shot image counts and seconds of every run, the machine, the wall time;
* `summary.md` (also printed): mean ± standard deviation over seeds per mode and shot count;
* `ap50_vs_shots.png`: AP50 against shots, one line per mode, mean ± standard deviation shaded;
* `few_shot/shots{k}_seed{s}.json`: the sampled training subsets.
"""

import argparse
import copy
import functools
import importlib.util
import json
import math
import multiprocessing
import os
import platform
import queue
import statistics
import time
import traceback
from types import SimpleNamespace

import torch
from accelerate.utils import set_seed
from transformers.utils import logging as transformers_logging

from transformers_glip import GLIPForGrounding  # (the import registers GLIP)
from transformers_glip.data import (
    GLIPTrainingCollator,
    GLIPTrainingStream,
    GLIPTrainingTransform,
    coco_detection_source,
    generate_synthetic_shapes,
)
from transformers_glip.data.synthetic_shapes import novel_shapes_config
from transformers_glip.evaluation.coco import evaluate_coco
from transformers_glip.finetuning_glip import (
    TUNING_DEFAULTS,
    apply_tuning_mode,
    sample_few_shot_coco,
    tuning_parameter_groups,
)
from transformers_glip.processing_glip import GLIPProcessor

EXAMPLES_DIR = os.path.dirname(os.path.abspath(__file__))
MODES = ("full", "prompt_tuning", "linear_probe", "scratch")
MODE_LABELS = {
    "full": "full fine-tuning",
    "prompt_tuning": "prompt tuning",
    "linear_probe": "linear probe",
    "scratch": "from scratch",
}
# Optimizer settings of the from-scratch baseline: the demo's pre-training recipe (`DEMO_DEFAULTS` of pretrain.py).
SCRATCH_DEFAULTS = {"learning_rate": 1e-3, "text_learning_rate": 1e-3, "weight_decay": 1e-4, "bias_lr_factor": 1.0}


@functools.cache
def load_pretrain_example():
    """`examples/pretrain.py` as a module (`main` trains the demo model, `build_lr_scheduler` is reused)."""
    path = os.path.join(EXAMPLES_DIR, "pretrain.py")
    specification = importlib.util.spec_from_file_location("pretrain_example", path)
    module = importlib.util.module_from_spec(specification)
    specification.loader.exec_module(module)
    return module


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="out/demo", help="The pre-trained demo model folder (`make demo`).")
    parser.add_argument(
        "--train_demo",
        action="store_true",
        help="When --model holds no model, run the demo pre-training (examples/pretrain.py) into it first.",
    )
    parser.add_argument("--output_dir", default="out/transfer")
    parser.add_argument("--novel_dir", default="out/novel_shapes", help="Where the novel-task world is generated.")
    parser.add_argument("--novel_seed", type=int, default=0, help="World seed (images use 1000 + this).")
    parser.add_argument("--num_train", type=int, default=300, help="Training pool of the novel task (images).")
    parser.add_argument("--num_validation", type=int, default=100, help="Validation images of the novel task.")
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 3, 5, 10], help="Images per category.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="Few-shot sampling + training seeds.")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--max_train_steps", type=int, default=100, help="Optimizer steps of EVERY run.")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--warmup_steps", type=int, default=5)
    parser.add_argument("--full_learning_rate", type=float, default=1e-3, help="Official: 1e-4 (BERT 1e-5).")
    parser.add_argument("--full_text_learning_rate", type=float, default=1e-4)
    parser.add_argument("--linear_probe_learning_rate", type=float, default=1e-3, help="Official: 1e-4.")
    parser.add_argument(
        "--prompt_tuning_learning_rate",
        type=float,
        default=TUNING_DEFAULTS["prompt_tuning"]["learning_rate"],
        help="Official: 0.05 (weight decay 0.25).",
    )
    parser.add_argument("--scratch_learning_rate", type=float, default=SCRATCH_DEFAULTS["learning_rate"])
    parser.add_argument(
        "--num_threads", type=int, default=1, help="torch threads (1: fastest for the tiny model; 0: torch's default)."
    )
    parser.add_argument("--eval_batch_size", type=int, default=8)
    parser.add_argument(
        "--num_workers",
        type=int,
        default=2,
        help="Runs in parallel, one forked process each with --num_threads threads (2 for 2 cores; 1: in-process).",
    )
    args = parser.parse_args(argv)
    positive = ("num_train", "num_validation", "max_train_steps", "batch_size", "eval_batch_size", "num_workers")
    for name in positive:
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}.")
    if min(args.shots) < 1:
        parser.error(f"--shots must all be >= 1 (images per category), got {args.shots}.")
    if min(args.seeds) < 1:
        parser.error(
            f"--seeds must all be >= 1 (seed 0 means 'no shuffle' in the official sampling), got {args.seeds}."
        )
    if args.warmup_steps < 0 or args.num_threads < 0:
        parser.error("--warmup_steps and --num_threads must be >= 0.")
    for name in ("full", "full_text", "linear_probe", "prompt_tuning", "scratch"):
        value = getattr(args, f"{name}_learning_rate")
        if not math.isfinite(value) or value <= 0:
            parser.error(f"--{name}_learning_rate must be a finite number > 0, got {value}.")
    args.shots = sorted(dict.fromkeys(args.shots))
    args.seeds = list(dict.fromkeys(args.seeds))
    args.modes = [mode for mode in MODES if mode in args.modes]
    return args


def optimizer_settings(args, mode: str) -> dict:
    """LR, BERT LR, weight decay and bias LR factor of one mode (see `parse_args` for the official values)."""
    if mode == "scratch":
        return {**SCRATCH_DEFAULTS, "learning_rate": args.scratch_learning_rate}
    settings = dict(TUNING_DEFAULTS[mode])
    if mode == "full":
        settings.update(learning_rate=args.full_learning_rate, text_learning_rate=args.full_text_learning_rate)
    elif mode == "linear_probe":
        settings["learning_rate"] = args.linear_probe_learning_rate
    else:
        settings["learning_rate"] = args.prompt_tuning_learning_rate
    return settings


def ensure_demo_model(args) -> None:
    """The demo model must be in `args.model`; with `--train_demo` it is trained there first (examples/pretrain.py)."""
    if os.path.isfile(os.path.join(args.model, "config.json")):
        return
    if not args.train_demo:
        raise SystemExit(
            f"No pre-trained model in {args.model}. Train the demo model first with `make demo` (or "
            f"`python examples/pretrain.py --output_dir {args.model}`), or pass --train_demo to train it now."
        )
    print(f"No model in {args.model}: training the demo model first (examples/pretrain.py).", flush=True)
    load_pretrain_example().main(["--output_dir", args.model])


def build_novel_task(args) -> dict:
    """Generate (or reuse) the novel-task world; returns the paths of its training pool and validation split."""
    config = novel_shapes_config(seed=args.novel_seed, num_train=args.num_train, num_validation=args.num_validation)
    generate_synthetic_shapes(args.novel_dir, config)
    return {
        "train_annotation_file": os.path.join(args.novel_dir, "train", "coco.json"),
        "train_image_dir": os.path.join(args.novel_dir, "train"),
        "eval_annotation_file": os.path.join(args.novel_dir, "validation", "coco.json"),
        "eval_image_dir": os.path.join(args.novel_dir, "validation"),
    }


def train_run(model, processor, train_file: str, image_dir: str, mode: str, seed: int, args) -> list[float]:
    """Train `model` in place for `args.max_train_steps` steps on the COCO json `train_file` in one mode
    (`scratch` trains every parameter); returns the loss of every step."""
    trainable_mode = "full" if mode == "scratch" else mode
    apply_tuning_mode(model, trainable_mode)
    settings = optimizer_settings(args, mode)
    groups = tuning_parameter_groups(
        model,
        settings["learning_rate"],
        settings["weight_decay"],
        settings["text_learning_rate"],
        settings["bias_lr_factor"],
    )
    # (foreach=False as in pretrain.py: the result does not depend on the optimizer's kernel choice.)
    optimizer = torch.optim.AdamW(
        [{key: value for key, value in group.items() if key != "name"} for group in groups], foreach=False
    )
    schedule = SimpleNamespace(
        max_train_steps=args.max_train_steps,
        warmup_steps=args.warmup_steps,
        warmup_factor=0.001,
        lr_milestones=[0.67, 0.89],
        lr_gamma=0.1,
    )
    lr_scheduler = load_pretrain_example().build_lr_scheduler(optimizer, schedule)
    max_length = processor.max_text_length
    transform = GLIPTrainingTransform(processor.tokenizer, processor.image_processor, max_length=max_length)
    stream = GLIPTrainingStream(
        [coco_detection_source(train_file, image_dir, num_shards=1)], transform, seed=seed, shuffle_buffer_size=100
    )
    dataloader = torch.utils.data.DataLoader(
        stream,
        batch_size=args.batch_size,
        collate_fn=GLIPTrainingCollator(size_divisibility=processor.image_processor.size_divisibility),
    )
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    model.train()  # the frozen modules of the mode stay in eval mode (apply_tuning_mode)
    losses = []
    batches = iter(dataloader)
    for _ in range(args.max_train_steps):
        batch = next(batches)
        outputs = model(
            pixel_values=batch["pixel_values"],
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
        )
        outputs.loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad()
        lr_scheduler.step()
        losses.append(float(outputs.loss.detach()))
    model.eval()
    return losses


def summarize(zero_shot_ap50: float, runs: list[dict], modes: list[str], shots: list[int]) -> str:
    """The markdown table: one row per mode, one column per shot count, `mean ± std` AP50 over seeds."""
    lines = [
        f"Zero-shot AP50 of the pre-trained model: {zero_shot_ap50:.3f}",
        "",
        "| AP50 (mean ± std over seeds) | " + " | ".join(f"{k}-shot" for k in shots) + " |",
        "|---|" + "---:|" * len(shots),
    ]
    for mode in modes:
        cells = []
        for k in shots:
            values = [run["ap50"] for run in runs if run["mode"] == mode and run["shots"] == k]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.3f} ± {spread:.3f}" if values else "–")
        lines.append(f"| {MODE_LABELS[mode]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_ap50_vs_shots(zero_shot_ap50: float, runs: list[dict], modes: list[str], shots: list[int], path: str):
    """AP50 against shots (log axis), one line per mode (mean over seeds), mean ± std shaded, zero-shot dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    for index, mode in enumerate(modes):
        points, means, lows, highs = [], [], [], []
        for k in shots:
            values = [run["ap50"] for run in runs if run["mode"] == mode and run["shots"] == k]
            if not values:
                continue
            mean = statistics.mean(values)
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            points.append(k)
            means.append(mean)
            lows.append(max(0.0, mean - spread))
            highs.append(min(1.0, mean + spread))
        color = f"C{index}"
        axis.plot(points, means, marker="o", color=color, label=MODE_LABELS[mode])
        axis.fill_between(points, lows, highs, color=color, alpha=0.18, linewidth=0)
    axis.axhline(zero_shot_ap50, color="grey", linestyle="--", linewidth=1, label="zero-shot (pre-trained)")
    axis.set_xscale("log")
    axis.set_xticks(shots)
    axis.set_xticklabels([str(k) for k in shots])
    axis.minorticks_off()
    axis.set_xlabel("shots per category")
    axis.set_ylabel("novel-task validation AP50")
    axis.set_ylim(0, 1)
    counts = {}
    for run in runs:
        counts[(run["mode"], run["shots"])] = counts.get((run["mode"], run["shots"]), 0) + 1
    fewest, most = min(counts.values()), max(counts.values())
    seeds = str(fewest) if fewest == most else f"{fewest}-{most}"
    axis.set_title(f"Few-shot transfer to novel shapes (mean ± std over {seeds} seeds)", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv=None) -> dict:
    """Run the whole experiment; returns the summary (also written to `output_dir/summary.json`)."""
    args = parse_args(argv)
    previous_threads = torch.get_num_threads()
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    transformers_logging.disable_progress_bar()  # (one "Loading weights" bar per run otherwise)
    try:
        return run_experiment(args)
    finally:  # (for callers that run main() inside a longer process, e.g. tests)
        torch.set_num_threads(previous_threads)
        transformers_logging.enable_progress_bar()


def execute_run(context: dict, mode: str, shots: int, seed: int) -> dict:
    """One run: copy the pre-trained model (or build the architecture at random, `scratch`), train it on the
    `shots`-shot subset of `seed`, evaluate AP50 on the novel validation split. Returns the run and its details."""
    args, pretrained, processor = context["args"], context["pretrained"], context["processor"]
    run_start, run_cpu_start = time.time(), time.process_time()
    set_seed(seed)
    if mode == "scratch":  # the same architecture, random initialisation (seeded)
        model = GLIPForGrounding(copy.deepcopy(pretrained.config))
    else:
        model = copy.deepcopy(pretrained)
    train_file = context["few_shot_files"][(shots, seed)]
    losses = train_run(model, processor, train_file, context["train_image_dir"], mode, seed, args)
    train_seconds, train_cpu_seconds = time.time() - run_start, time.process_time() - run_cpu_start
    ap50 = evaluate_coco(model, processor, *context["evaluation"], batch_size=args.eval_batch_size)["ap50"]
    return {
        "mode": mode,
        "shots": shots,
        "seed": seed,
        "ap50": ap50,
        "train_images": context["few_shot_images"][(shots, seed)],
        "final_loss": sum(losses[-10:]) / len(losses[-10:]),
        "seconds": round(time.time() - run_start, 1),
        "train_seconds": round(train_seconds, 1),
        "train_cpu_seconds": round(train_cpu_seconds, 1),
        "cpu_seconds": round(time.process_time() - run_cpu_start, 1),
    }


def worker_loop(context: dict, task_queue, result_queue) -> None:
    """A forked worker: runs `(mode, shots, seed)` tasks until it gets `None`; puts each result (or the traceback
    of a failure) on `result_queue`."""
    while (task := task_queue.get()) is not None:
        try:
            result_queue.put(execute_run(context, *task))
        except BaseException:  # reported by the parent, which stops the experiment
            result_queue.put({"error": traceback.format_exc(), "task": task})


def run_all(context: dict, tasks: list[tuple[str, int, int]], num_workers: int, report) -> list[dict]:
    """Every task, in this process (`num_workers` 1) or in `num_workers` forked processes sharing a task queue
    (each run is seeded and single-threaded, so its result does not depend on the worker); `report(result)` is
    called as results arrive."""
    if num_workers == 1:
        results = []
        for task in tasks:
            results.append(execute_run(context, *task))
            report(results[-1])
        return results
    processes = multiprocessing.get_context("fork")
    task_queue, result_queue = processes.Queue(), processes.Queue()
    for task in tasks:
        task_queue.put(task)
    workers = [
        processes.Process(target=worker_loop, args=(context, task_queue, result_queue), daemon=True)
        for _ in range(num_workers)
    ]
    for worker in workers:
        task_queue.put(None)
        worker.start()
    results = []
    try:
        while len(results) < len(tasks):
            try:
                result = result_queue.get(timeout=5)
            except queue.Empty:
                dead = [worker.exitcode for worker in workers if worker.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"A transfer worker process died (exit code {dead[0]}).") from None
                continue
            if "error" in result:
                raise RuntimeError(f"Run {result['task']} failed:\n{result['error']}")
            results.append(result)
            report(result)
    finally:
        for worker in workers:
            if worker.is_alive() and len(results) < len(tasks):
                worker.terminate()
            worker.join()
    return results


def run_experiment(args) -> dict:
    start, cpu_start = time.time(), time.process_time()
    ensure_demo_model(args)
    task = build_novel_task(args)
    os.makedirs(os.path.join(args.output_dir, "few_shot"), exist_ok=True)
    pretrained = GLIPForGrounding.from_pretrained(args.model)
    pretrained.eval()
    processor = GLIPProcessor.from_pretrained(args.model)
    evaluation = (task["eval_annotation_file"], task["eval_image_dir"])

    zero_shot_ap50 = evaluate_coco(pretrained, processor, *evaluation, batch_size=args.eval_batch_size)["ap50"]
    print(f"zero-shot AP50 of {args.model} on the novel task: {zero_shot_ap50:.3f}", flush=True)

    few_shot_files, few_shot_images = {}, {}
    for shots in args.shots:
        for seed in args.seeds:
            train_file = os.path.join(args.output_dir, "few_shot", f"shots{shots}_seed{seed}.json")
            subset = sample_few_shot_coco(task["train_annotation_file"], shots, seed, train_file)
            few_shot_files[(shots, seed)], few_shot_images[(shots, seed)] = train_file, len(subset["images"])
    context = {
        "args": args,
        "pretrained": pretrained,
        "processor": processor,
        "train_image_dir": task["train_image_dir"],
        "evaluation": evaluation,
        "few_shot_files": few_shot_files,
        "few_shot_images": few_shot_images,
    }
    # The most expensive runs (full, scratch) first, so the workers finish together.
    tasks = [
        (mode, shots, seed)
        for shots in reversed(args.shots)
        for seed in args.seeds
        for mode in sorted(args.modes, key=lambda name: name not in ("full", "scratch"))
    ]
    print(
        f"{len(tasks)} runs ({', '.join(args.modes)} x {args.shots} shots x seeds {args.seeds}), "
        f"{args.max_train_steps} steps of {args.batch_size} images each, {args.num_workers} worker process(es)",
        flush=True,
    )

    def report(result: dict) -> None:
        done = report.count = getattr(report, "count", 0) + 1
        print(
            f"[{done:>2}/{len(tasks)}] {result['mode']:<13} {result['shots']:>2}-shot seed {result['seed']}: "
            f"{result['train_images']:>2} images, loss {result['final_loss']:.3f}, AP50 {result['ap50']:.3f} "
            f"({result['seconds']:.0f} s)",
            flush=True,
        )

    details = run_all(context, tasks, args.num_workers, report)
    order = {mode: index for index, mode in enumerate(MODES)}
    details.sort(key=lambda item: (order[item["mode"]], item["shots"], args.seeds.index(item["seed"])))
    runs = [{key: item[key] for key in ("mode", "shots", "seed", "ap50")} for item in details]

    summary = {"zero_shot_ap50": zero_shot_ap50, "runs": runs}
    with open(os.path.join(args.output_dir, "summary.json"), "w") as handle:
        json.dump(summary, handle, indent=2)
    table = summarize(zero_shot_ap50, runs, args.modes, args.shots)
    with open(os.path.join(args.output_dir, "summary.md"), "w") as handle:
        handle.write(table + "\n")
    plot_ap50_vs_shots(
        zero_shot_ap50, runs, args.modes, args.shots, os.path.join(args.output_dir, "ap50_vs_shots.png")
    )
    wall_seconds = time.time() - start
    # CPU seconds of every process (this one + the runs): about the wall time on idle cores (one thread each).
    cpu_seconds = (
        time.process_time() - cpu_start + (sum(item["cpu_seconds"] for item in details) if args.num_workers > 1 else 0)
    )
    settings = {key: value for key, value in vars(args).items() if key != "train_demo"}
    settings["optimizers"] = {mode: optimizer_settings(args, mode) for mode in args.modes}
    with open(os.path.join(args.output_dir, "details.json"), "w") as handle:
        json.dump(
            {
                "settings": settings,
                "machine": {
                    "platform": platform.platform(),
                    "processor": platform.processor(),
                    "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__,
                },
                "wall_seconds": round(wall_seconds, 1),
                "cpu_seconds": round(cpu_seconds, 1),
                "runs": details,
            },
            handle,
            indent=2,
        )
    print(table)
    print(
        f"wall time {wall_seconds / 60:.1f} min ({cpu_seconds / 60:.1f} CPU min in all); results in {args.output_dir}",
        flush=True,
    )
    return summary


if __name__ == "__main__":
    main()
