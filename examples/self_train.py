#!/usr/bin/env python
"""GLIP's self-training claim in miniature: a teacher trained on a few labelled images pseudo-labels many
image-caption pairs, and a student trained on both beats it.

    make self-train            # = python examples/self_train.py --output_dir out/self_train

1. World (`transformers_glip.data.synthetic_shapes`): a SMALL labelled split (boxes + label prompts + grounding
   captions; two colour-shape combinations never appear in it), a LARGE caption-only split stored like web data
   (webdataset tars in the img2dataset layout: png + caption, NO boxes; every combination appears, the never-seen
   ones included) and the held-out validation split (all combinations, COCO json with `held_out` flags).
2. Teacher, per seed: `examples/pretrain.py` (in this process) on the labelled split, the demo recipe
   (`tiny_config`, `DEMO_DEFAULTS`, detection + grounding views 50/50), `--steps` optimizer steps.
3. Pseudo labels: `transformers_glip.data.pseudo_labeling.pseudo_label_stream` over
   `image_caption_source(caption tars)`: caption -> noun phrases (offline extractor) -> teacher grounding of those
   phrases -> filters (score > `--pseudo_label_threshold`, class-agnostic NMS, minimum box side) -> pseudo-label
   shards (teacher and thresholds in each shard's sidecar).
4. Student, per seed: `examples/pretrain.py` FROM SCRATCH on labelled + pseudo-labelled data (`--dataset
   synthetic_detection ... synthetic_grounding ... pseudo_label PSEUDO_DIR --dataset_ratios`), with the same
   budget as the teacher: the same number of optimizer steps, batch size, schedule and model (so the student sees
   the same number of images; `--student_init teacher` continues from the teacher's weights instead, which gives
   the student twice the teacher's steps in all). The pseudo-label scores are used as the official loader does:
   boxes with `score > threshold` are kept (`CAPTION_CONF`), unweighted.
5. Both are evaluated on the validation split (pycocotools AP50 through the grounded post-processing): all
   combinations, and the combinations the labelled split never shows ("never-seen"). The pseudo labels are also
   scored against the caption split's hidden boxes (precision / recall), which tells why a student wins or loses.

Outputs in `--output_dir`: `summary.json` (`{"runs": [{"seed", "teacher_ap50", "student_ap50",
"teacher_never_seen_ap50", "student_never_seen_ap50"}, ...]}`), `details.json` (timings, pseudo-label counts and
quality, every metric), `pseudo_labels.png` (ground truth next to the pseudo labels of the first seed's teacher), the
teacher / student folders per seed (`seed_S/teacher`, `seed_S/student`, `seed_S/pseudo_labels`), and a printed table.
"""

import argparse
import json
import logging
import os
import shutil
import sys
import time

import torch
from accelerate.state import AcceleratorState

from transformers_glip import GLIPForGrounding, GLIPProcessor
from transformers_glip.box_geometry_glip import legacy_box_iou
from transformers_glip.data.pseudo_labeling import PseudoLabelFilters, pseudo_label_shard_files, pseudo_label_stream
from transformers_glip.data.streaming import image_caption_source
from transformers_glip.data.synthetic_shapes import (
    CAPTION_SPLIT_GROUND_TRUTH,
    COLOR_VALUES,
    SHAPE_NAMES,
    SyntheticShapesConfig,
    generate_caption_only_split,
    generate_synthetic_shapes,
)
from transformers_glip.visualization_glip import draw_detection_grid, draw_detection_tile

EXAMPLES_DIR = os.path.dirname(os.path.abspath(__file__))
if EXAMPLES_DIR not in sys.path:
    sys.path.insert(0, EXAMPLES_DIR)
import pretrain  # noqa: E402  (examples/pretrain.py: the training script this one drives)

logger = logging.getLogger(__name__)

SUMMARY_KEYS = ("seed", "teacher_ap50", "student_ap50", "teacher_never_seen_ap50", "student_never_seen_ap50")
# A pseudo box counts as correct when it names the combination of a ground-truth box it overlaps this much.
MATCH_IOU = 0.5


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="out/self_train")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Training seeds (one run each).")
    parser.add_argument("--world_seed", type=int, default=0, help="Seed of the generated world (shared by runs).")
    parser.add_argument("--num_labelled", type=int, default=200, help="Images of the SMALL labelled split.")
    parser.add_argument("--num_captions", type=int, default=2000, help="Images of the LARGE caption-only split.")
    parser.add_argument("--num_validation", type=int, default=200, help="Held-out evaluation images.")
    parser.add_argument("--caption_shards", type=int, default=4, help="Webdataset tar shards of the captions.")
    parser.add_argument("--steps", type=int, default=500, help="Optimizer steps of the student (and the control).")
    parser.add_argument(
        "--teacher_steps", type=int, help="Optimizer steps of the teacher (default: --steps, the same budget)."
    )
    parser.add_argument(
        "--pseudo_label_ratio",
        type=float,
        default=0.5,
        help="Share of the student's samples drawn from the pseudo labels (the rest: the labelled split's "
        "detection and grounding views, half each).",
    )
    parser.add_argument(
        "--pseudo_label_threshold",
        type=float,
        default=0.35,
        help="Keep teacher boxes with score > this (official CAPTION_CONF; 0.5 in the GLIP-L config, see README).",
    )
    parser.add_argument("--nms_threshold", type=float, default=0.5, help="Class-agnostic NMS IoU (None: 0).")
    parser.add_argument("--min_box_size", type=float, default=8.0, help="Minimum pseudo box side in pixels.")
    parser.add_argument("--max_boxes", type=int, default=None, help="At most this many pseudo boxes per image.")
    parser.add_argument(
        "--student_init",
        choices=["scratch", "teacher"],
        default="scratch",
        help="'scratch' (the paper's student; same steps as the teacher) or 'teacher' (continue its weights; then a "
        "control with the same total budget is trained too: the teacher continued on the labelled split alone).",
    )
    parser.add_argument("--label_batch_size", type=int, default=8, help="Images per teacher forward.")
    # Overrides of the demo recipe (`pretrain.DEMO_DEFAULTS`), for tiny test runs.
    parser.add_argument("--per_device_train_batch_size", type=int)
    parser.add_argument("--warmup_steps", type=int)
    parser.add_argument("--min_size", type=int)
    parser.add_argument("--max_size", type=int)
    parser.add_argument("--train_min_sizes", type=int, nargs="+")
    parser.add_argument("--num_threads", type=int)
    parser.add_argument("--dataloader_num_workers", type=int, choices=[0, 1])
    parser.add_argument("--image_sizes", type=int, nargs=2, metavar=("MIN", "MAX"), help="World image sides.")
    parser.add_argument("--shape_sizes", nargs="+", help="World shape sizes (small medium large).")
    parser.add_argument("--num_pictures", type=int, default=6, help="Caption images in pseudo_labels.png.")
    args = parser.parse_args(argv)
    if args.teacher_steps is None:
        args.teacher_steps = args.steps
    checks = {
        "steps": 1,
        "teacher_steps": 1,
        "num_labelled": 1,
        "num_captions": 1,
        "num_validation": 1,
        "caption_shards": 1,
    }
    for name, minimum in checks.items():
        if getattr(args, name) < minimum:
            parser.error(f"--{name} must be >= {minimum}, got {getattr(args, name)}.")
    if args.caption_shards > args.num_captions:
        parser.error(f"--caption_shards ({args.caption_shards}) must be <= --num_captions ({args.num_captions}).")
    if not 0.0 < args.pseudo_label_ratio < 1.0:
        parser.error(f"--pseudo_label_ratio must be in (0, 1), got {args.pseudo_label_ratio}.")
    if not 0.0 <= args.pseudo_label_threshold < 1.0:
        parser.error(f"--pseudo_label_threshold must be in [0, 1), got {args.pseudo_label_threshold}.")
    if len(set(args.seeds)) != len(args.seeds) or min(args.seeds) < 0:
        parser.error(f"--seeds must be distinct integers >= 0, got {args.seeds}.")
    if args.nms_threshold is not None and not 0.0 <= args.nms_threshold <= 1.0:
        parser.error(f"--nms_threshold must be in [0, 1] (0: off), got {args.nms_threshold}.")
    return args


# ----------------------------------------------------------------------------------------------- world


def world_config(args) -> SyntheticShapesConfig:
    """The labelled world: `num_labelled` training images without the held-out combinations, all of them in
    validation (the demo world's vocabulary and held-out pair)."""
    extra = {}
    if args.image_sizes is not None:
        extra["min_image_size"], extra["max_image_size"] = args.image_sizes
    if args.shape_sizes is not None:
        extra["sizes"] = tuple(args.shape_sizes)
    return SyntheticShapesConfig(
        seed=args.world_seed,
        num_train=args.num_labelled,
        num_validation=args.num_validation,
        num_train_shards=min(4, args.num_labelled),
        **extra,
    )


def build_world(args) -> tuple[str, str, dict]:
    """Generate (or reuse) the labelled world and the caption-only split; returns their folders and the labelled
    world's metadata."""
    config = world_config(args)
    world_dir = os.path.join(args.output_dir, "world", "labelled")
    caption_dir = os.path.join(args.output_dir, "world", "captions")
    try:  # reused when it exists with the same settings; regenerated when the settings changed
        metadata = generate_synthetic_shapes(world_dir, config)
    except FileExistsError:
        metadata = generate_synthetic_shapes(world_dir, config, overwrite=True)
    try:
        generate_caption_only_split(caption_dir, config, args.num_captions, args.caption_shards)
    except FileExistsError:
        generate_caption_only_split(caption_dir, config, args.num_captions, args.caption_shards, overwrite=True)
    return world_dir, caption_dir, metadata


def read_hidden_ground_truth(caption_dir: str) -> dict[str, dict]:
    """The caption split's boxes (never shown to the student), by webdataset key."""
    with open(os.path.join(caption_dir, CAPTION_SPLIT_GROUND_TRUTH)) as handle:
        return {record["key"]: record for record in map(json.loads, handle)}


# ----------------------------------------------------------------------------------------------- training


def pretrain_arguments(
    args, output_dir: str, datasets: list[list[str]], ratios: list[float], seed: int, steps: int
) -> list:
    """`examples/pretrain.py` arguments: the demo recipe (`DEMO_DEFAULTS`) with this run's data, steps and seed."""
    recipe = dict(pretrain.DEMO_DEFAULTS)
    for key in (
        "per_device_train_batch_size",
        "warmup_steps",
        "min_size",
        "max_size",
        "train_min_sizes",
        "num_threads",
        "dataloader_num_workers",
    ):
        if getattr(args, key) is not None:
            recipe[key] = getattr(args, key)
    recipe["max_train_steps"] = steps
    recipe["eval_steps"] = 0  # only the final evaluation
    recipe["warmup_steps"] = min(recipe["warmup_steps"], max(steps // 4, 0))
    argv = ["--output_dir", output_dir, "--seed", str(seed)]
    for key, value in recipe.items():
        argv += [f"--{key}", *(str(item) for item in value)] if isinstance(value, list) else [f"--{key}", str(value)]
    for spec in datasets:
        argv += ["--dataset", *spec]
    argv += ["--dataset_ratios", *(str(ratio) for ratio in ratios)]
    argv += ["--pseudo_label_score_threshold", str(args.pseudo_label_threshold)]
    return argv


def run_pretrain(argv: list[str]) -> dict:
    """Run `examples/pretrain.py` in this process and return its `summary.json`."""
    try:
        pretrain.main(argv)
    finally:
        # The next run builds a new Accelerator; the state singleton must not carry this run's settings over.
        AcceleratorState._reset_state(reset_partial_state=True)
    output_dir = argv[argv.index("--output_dir") + 1]
    with open(os.path.join(output_dir, "summary.json")) as handle:
        return json.load(handle)


# ----------------------------------------------------------------------------------------------- pseudo labels


def make_pseudo_labels(args, teacher_dir: str, caption_dir: str, pseudo_dir: str) -> dict:
    """Pseudo-label the caption split with the teacher through the library function."""
    model = GLIPForGrounding.from_pretrained(teacher_dir).eval()
    processor = GLIPProcessor.from_pretrained(teacher_dir)
    filters = PseudoLabelFilters(
        score_threshold=args.pseudo_label_threshold,
        nms_threshold=args.nms_threshold or None,
        min_box_size=args.min_box_size,
        max_boxes=args.max_boxes,
    )
    source = image_caption_source(os.path.join(caption_dir, "*.tar"), name="captions")
    threads = torch.get_num_threads()
    if args.num_threads or pretrain.DEMO_DEFAULTS["num_threads"]:
        torch.set_num_threads(args.num_threads or pretrain.DEMO_DEFAULTS["num_threads"])
    try:
        with torch.inference_mode():
            return pseudo_label_stream(
                model,
                processor,
                source,
                pseudo_dir,
                filters=filters,
                batch_size=args.label_batch_size,
                shard_size=max(1, args.num_captions // args.caption_shards),
                teacher_name=teacher_dir,
                progress=False,
            )
    finally:
        torch.set_num_threads(threads)


def phrase_category(phrase: str) -> str | None:
    """`"a small red circle"` -> `"red circle"`; `None` for a phrase without a colour and a shape (`"the left"`)."""
    words = phrase.lower().split()
    colors = [word for word in words if word in COLOR_VALUES]
    shapes = [word for word in words if word in SHAPE_NAMES]
    return f"{colors[0]} {shapes[0]}" if len(colors) == 1 and len(shapes) == 1 else None


def read_pseudo_rows(pseudo_dir: str) -> list[dict]:
    rows = []
    for path in pseudo_label_shard_files(pseudo_dir):
        with open(path) as handle:
            rows.extend(json.loads(line) for line in handle if line.strip())
    return rows


def row_key(row: dict) -> str:
    """The webdataset key of a pseudo-label row (`sample_id` = `"captions:<tar>:<key>"`)."""
    return row["sample_id"].rsplit(":", 1)[-1]


def pseudo_label_quality(rows: list[dict], hidden: dict[str, dict], never_seen: set[str]) -> dict:
    """Pseudo boxes against the hidden boxes of the caption split.

    A pseudo box is correct when its phrase names the colour-shape combination of a ground-truth box (not yet
    matched, greedy by score) with IoU >= 0.5. Recall counts the ground-truth boxes the caption MENTIONS (the others
    are background for that caption, as in grounding data). `never_seen_*`: the same on the combinations the
    labelled split never shows. `non_object_boxes`: boxes on phrases naming no combination ("the left").
    """
    counts = {key: 0 for key in ("boxes", "correct", "mentioned", "found", "non_object_boxes")}
    counts.update({f"never_seen_{key}": 0 for key in ("boxes", "correct", "mentioned", "found")})
    rows_by_key = {row_key(row): row for row in rows}
    for key, truth in hidden.items():
        mentioned = [index for index, spans in enumerate(truth["tokens_positive"]) if spans]
        counts["mentioned"] += len(mentioned)
        counts["never_seen_mentioned"] += sum(truth["categories"][index] in never_seen for index in mentioned)
        row = rows_by_key.get(key)
        if row is None:
            continue
        truth_boxes = torch.tensor(truth["boxes"], dtype=torch.float64).reshape(-1, 4)  # (objects, 4) xyxy
        pseudo_boxes = torch.tensor(row["bboxes"], dtype=torch.float64).reshape(-1, 4)  # (pseudo boxes, 4) xyxy
        overlaps = legacy_box_iou(pseudo_boxes, truth_boxes)  # (pseudo boxes, objects)
        matched: set[int] = set()
        for index in sorted(range(len(row["bboxes"])), key=lambda position: -row["scores"][position]):
            category = phrase_category(row["phrases"][index])
            counts["boxes"] += 1
            counts["never_seen_boxes"] += category in never_seen
            if category is None:
                counts["non_object_boxes"] += 1
                continue
            candidates = [
                target
                for target in range(len(truth["boxes"]))
                if target not in matched
                and truth["categories"][target] == category
                and float(overlaps[index, target]) >= MATCH_IOU
            ]
            if candidates:
                matched.add(max(candidates, key=lambda target: float(overlaps[index, target])))
                counts["correct"] += 1
                counts["never_seen_correct"] += category in never_seen
        found = [target for target in matched if target in mentioned]
        counts["found"] += len(found)
        counts["never_seen_found"] += sum(truth["categories"][target] in never_seen for target in found)
    quality = dict(counts)
    quality["images_with_labels"] = len(rows)
    for prefix in ("", "never_seen_"):
        boxes, mentioned = counts[f"{prefix}boxes"], counts[f"{prefix}mentioned"]
        quality[f"{prefix}precision"] = counts[f"{prefix}correct"] / boxes if boxes else None
        quality[f"{prefix}recall"] = counts[f"{prefix}found"] / mentioned if mentioned else None
    return quality


def draw_pseudo_labels(
    rows: list[dict], hidden: dict[str, dict], pseudo_dir: str, never_seen: set[str], path: str, count: int
) -> None:
    """`count` caption images, each as two tiles: the hidden ground truth of the objects the caption mentions
    (white boxes, combination names) and the teacher's pseudo labels (colour, phrase and score)."""
    from PIL import Image

    def has_never_seen(row: dict) -> bool:
        return any(phrase_category(phrase) in never_seen for phrase in row["phrases"])

    ordered = sorted(rows, key=lambda row: row_key(row))
    chosen = [row for row in ordered if has_never_seen(row)][: (count + 1) // 2]
    chosen += [row for row in ordered if row not in chosen][: count - len(chosen)]
    tiles = []
    for row in chosen:
        truth = hidden[row_key(row)]
        image = Image.open(os.path.join(pseudo_dir, row["file_name"])).convert("RGB")
        mentioned = [index for index, spans in enumerate(truth["tokens_positive"]) if spans]
        truth_detections = [
            {"box": _pipeline_box(truth["boxes"][index]), "label": truth["categories"][index], "score": 1.0}
            for index in mentioned
        ]
        pseudo_detections = [
            {"box": _pipeline_box(box), "label": phrase, "score": score}
            for box, phrase, score in zip(row["bboxes"], row["phrases"], row["scores"])
        ]
        novel = sorted({truth["categories"][index] for index in mentioned} & never_seen)
        color = (200, 0, 0) if novel else (0, 0, 0)
        caption = truth["caption"] if len(truth["caption"]) <= 48 else truth["caption"][:45] + "..."
        tiles.append(draw_detection_tile(image, truth_detections, title=f"truth: {caption}", title_color=color))
        coco_boxes = [_coco_box(truth["boxes"][index]) for index in mentioned]
        title = f"pseudo labels ({len(pseudo_detections)})" + (f" never-seen: {', '.join(novel)}" if novel else "")
        tiles.append(draw_detection_tile(image, pseudo_detections, coco_boxes, title=title, title_color=color))
    footer = (
        "left: hidden ground truth of the objects the caption mentions; right: the teacher's pseudo labels "
        "(phrase, score) over the ground truth in white"
    )
    draw_detection_grid(tiles, columns=2, footer=footer).save(path)


def _pipeline_box(box: list[float]) -> dict:
    return dict(zip(("xmin", "ymin", "xmax", "ymax"), box))


def _coco_box(box: list[float]) -> list[float]:
    return [box[0], box[1], box[2] - box[0] + 1, box[3] - box[1] + 1]


# ----------------------------------------------------------------------------------------------- the experiment


def run_seed(args, seed: int, world_dir: str, caption_dir: str, hidden: dict, never_seen: set[str]) -> dict:
    """Teacher, pseudo labels and student of one seed; returns every figure of the run."""
    seed_dir = os.path.join(args.output_dir, f"seed_{seed}")
    teacher_dir, student_dir = os.path.join(seed_dir, "teacher"), os.path.join(seed_dir, "student")
    control_dir = os.path.join(seed_dir, "control")
    pseudo_dir = os.path.join(seed_dir, "pseudo_labels")
    labelled = [["synthetic_detection", world_dir], ["synthetic_grounding", world_dir]]
    labelled_ratios = [ratio for _, ratio in pretrain.DEMO_SOURCES]
    evaluation = [
        "--eval_annotation_file",
        os.path.join(world_dir, "validation", "coco.json"),
        "--eval_image_dir",
        os.path.join(world_dir, "validation"),
    ]
    timings = {}
    start = time.time()
    teacher_arguments = pretrain_arguments(args, teacher_dir, labelled, labelled_ratios, seed, args.teacher_steps)
    teacher = run_pretrain(teacher_arguments + evaluation)
    timings["teacher_seconds"] = time.time() - start

    start = time.time()
    if os.path.isdir(pseudo_dir):
        shutil.rmtree(pseudo_dir)  # a new teacher: labels of an earlier run would be refused (other weights)
    labelling = make_pseudo_labels(args, teacher_dir, caption_dir, pseudo_dir)
    timings["pseudo_label_seconds"] = time.time() - start
    rows = read_pseudo_rows(pseudo_dir)
    quality = pseudo_label_quality(rows, hidden, never_seen)

    start = time.time()
    share = args.pseudo_label_ratio
    student_ratios = [ratio * (1 - share) / sum(labelled_ratios) for ratio in labelled_ratios] + [share]
    student_arguments = pretrain_arguments(
        args, student_dir, labelled + [["pseudo_label", pseudo_dir]], student_ratios, seed, args.steps
    )
    if args.student_init == "teacher":
        student_arguments += ["--model_name_or_path", teacher_dir]
    student = run_pretrain(student_arguments + evaluation) if rows else None
    timings["student_seconds"] = time.time() - start

    control = None
    if args.student_init == "teacher":
        # The student then has twice the teacher's steps; the fair comparison is the teacher continued for the same
        # steps on the labelled split alone (same recipe, seed and data order of the labelled sources).
        start = time.time()
        control_arguments = pretrain_arguments(args, control_dir, labelled, labelled_ratios, seed, args.steps)
        control = run_pretrain(control_arguments + ["--model_name_or_path", teacher_dir] + evaluation)
        timings["control_seconds"] = time.time() - start
    return {
        "seed": seed,
        "teacher": {key: teacher.get(key) for key in ("ap50", "ap50_held_out", "ap50_seen", "ap", "steps")},
        "student": None
        if student is None
        else {key: student.get(key) for key in ("ap50", "ap50_held_out", "ap50_seen", "ap", "steps")},
        "control": None
        if control is None
        else {key: control.get(key) for key in ("ap50", "ap50_held_out", "ap50_seen", "ap", "steps")},
        "labelling": labelling,
        "pseudo_label_quality": quality,
        "timings": timings,
        "rows": rows,
    }


def format_table(results: list[dict]) -> str:
    """Teacher vs student per seed and the mean, with the pseudo labels' precision and recall (and the same-budget
    control's AP50 when the student continued from the teacher)."""

    def number(value) -> str:
        return "  -  " if value is None else f"{value:.3f}"

    with_control = any(result["control"] is not None for result in results)
    names = ["teacher AP50", "student AP50", "teacher never-seen AP50", "student never-seen AP50"]
    if with_control:
        names += ["control AP50", "control never-seen AP50"]
    quality_names = ["pseudo boxes", "precision", "recall", "never-seen precision", "never-seen recall"]
    header = "| seed | " + " | ".join(names + quality_names) + " |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    columns = []
    for result in results:
        quality = result["pseudo_label_quality"]
        student, control = result["student"] or {}, result["control"] or {}
        values = [
            result["teacher"]["ap50"],
            student.get("ap50"),
            result["teacher"]["ap50_held_out"],
            student.get("ap50_held_out"),
        ]
        if with_control:
            values += [control.get("ap50"), control.get("ap50_held_out")]
        columns.append(values)
        lines.append(
            f"| {result['seed']} | "
            + " | ".join(number(value) for value in values)
            + f" | {quality['boxes']} | {number(quality['precision'])} | {number(quality['recall'])} | "
            f"{number(quality['never_seen_precision'])} | {number(quality['never_seen_recall'])} |"
        )
    means = []
    for index in range(len(names)):
        values = [column[index] for column in columns if column[index] is not None]
        means.append(sum(values) / len(values) if values else None)
    lines.append("| mean | " + " | ".join(number(value) for value in means) + " |" + " |" * len(quality_names))
    return "\n".join(lines)


def write_results(args, results: list[dict], world_seconds: float, start: float) -> dict:
    """`summary.json` (the fixed schema) and `details.json` of the seeds done so far (rewritten after each seed, so
    an interrupted run keeps its finished seeds)."""
    summary = {
        "runs": [
            {
                "seed": result["seed"],
                "teacher_ap50": result["teacher"]["ap50"],
                "student_ap50": (result["student"] or {}).get("ap50"),
                "teacher_never_seen_ap50": result["teacher"]["ap50_held_out"],
                "student_never_seen_ap50": (result["student"] or {}).get("ap50_held_out"),
                **(
                    {}
                    if result["control"] is None
                    else {
                        "control_ap50": result["control"]["ap50"],
                        "control_never_seen_ap50": result["control"]["ap50_held_out"],
                    }
                ),
            }
            for result in results
        ]
    }
    with open(os.path.join(args.output_dir, "summary.json"), "w") as handle:
        json.dump(summary, handle, indent=2)
    details = {
        "arguments": vars(args),
        "world_seconds": world_seconds,
        "total_minutes": (time.time() - start) / 60,
        "runs": [{key: value for key, value in result.items() if key != "rows"} for result in results],
    }
    with open(os.path.join(args.output_dir, "details.json"), "w") as handle:
        json.dump(details, handle, indent=2)
    return summary


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    os.makedirs(args.output_dir, exist_ok=True)
    start = time.time()
    world_dir, caption_dir, metadata = build_world(args)
    hidden = read_hidden_ground_truth(caption_dir)
    never_seen = set(metadata["held_out_categories"])
    world_seconds = time.time() - start
    results = []
    for seed in args.seeds:
        results.append(run_seed(args, seed, world_dir, caption_dir, hidden, never_seen))
        logger.info(f"seed {seed}: {json.dumps({key: results[-1][key] for key in ('teacher', 'student')})}")
        summary = write_results(args, results, world_seconds, start)
        if len(results) == 1 and results[0]["rows"]:
            draw_pseudo_labels(
                results[0]["rows"],
                hidden,
                os.path.join(args.output_dir, f"seed_{seed}", "pseudo_labels"),
                never_seen,
                os.path.join(args.output_dir, "pseudo_labels.png"),
                args.num_pictures,
            )
        print(format_table(results), flush=True)
    total_minutes = (time.time() - start) / 60
    print(
        f"{len(results)} seeds, teacher {args.teacher_steps} steps, student {args.steps} steps (student init: "
        f"{args.student_init}), "
        f"{args.num_labelled} labelled + {args.num_captions} caption-only images, pseudo labels with score > "
        f"{args.pseudo_label_threshold}; {total_minutes:.1f} min wall in all.",
        flush=True,
    )
    return summary


if __name__ == "__main__":
    main()
