"""Streaming training data for GLIP: readers, mixing, od -> grounding prompts, augmentation, collation, resume.

Every reader turns one data format into a 🤗 `datasets.IterableDataset` with the same record schema
([`grounding_record_features`]):

| field | meaning |
|---|---|
| `sample_id` | stable, unique id (`"<source>:<id or byte offset>"`) |
| `source`, `task` | source name; `"detection"` (category per box) or `"grounding"` (caption + spans per box) |
| `image` | `{"bytes", "path"}` (not decoded; decoding happens in the transform, where failures are counted) |
| `width`, `height` | annotated image size (`-1` when the format has none); checked against the decoded image |
| `boxes` | xyxy in original image pixels, inclusive "+1" convention (COCO `xywh` -> `x2 = x + w - 1`) |
| `labels` | detection: category name per box |
| `caption`, `tokens_positive` | grounding: the caption and per box its `[begin, end)` character spans |
| `scores` | per box confidence (1.0 for human labels; pseudo labels keep the teacher's score) |
| `error` | non-empty when the reader could not parse the record (the transform skips and counts it) |

Readers: [`coco_detection_source`] (COCO json + image folder), [`mdetr_grounding_source`] (MDETR/GoldG json with
`tokens_positive`), [`odvg_source`] (ODVG jsonl, detection or grounding), [`pseudo_label_source`] (GLIP
pseudo-label jsonl, boxes kept above a score threshold), [`synthetic_shapes_source`] (the generated world of
`synthetic_shapes_glip.py`).

[`GLIPTrainingStream`] mixes sources with ratios (`datasets.interleave_datasets`, seeded), shuffles with a buffer,
splits the stream across processes with `datasets.distributed.split_dataset_by_node` (so the DataLoader must NOT
also be sharded by Accelerate: don't pass it to `accelerator.prepare`, or use `dispatch_batches=False` without
`split_dataset_by_node` -- never both), and applies [`GLIPTrainingTransform`]:

1. validation: unreadable image, annotated size != decoded size, malformed / outside box, span
   outside the caption, unknown category -> the record is skipped and counted in a [`SkippedRecordCounter`]; an
   empty box (official `clip_to_image(remove_empty=True)`) is dropped and counted, the image kept;
2. detection records become grounding prompts with the official negative-class sampling
   ([`detection_to_grounding`], spec §3.7);
3. multi-scale resize (short side drawn from the image processor's `train_min_sizes`, long side <= `max_size`) and
   horizontal flip with the "+1" box convention (captions unchanged, spec §2.3), BGR x 255 normalisation -- the
   pixels go through `GLIPImageProcessor.preprocess`, so training and inference share one resize/normalise path;
4. tokenisation to `max_length` and binary positive maps (`processing_glip.create_positive_map`).

[`GLIPTrainingCollator`] pads images to a multiple of 32 and returns `pixel_values`, `input_ids`,
`attention_mask`, `labels` (list of `{"boxes", "positive_map"}` in network-input pixels), `image_sizes`,
`sample_ids` and `stream_state`.

Exact resume: the stream position is `(epoch, records consumed in that epoch)` on each process. Every sample
carries the position right after it, so a training loop stores the `stream_state` of the last batch it trained on
and a new stream restores it with `load_state_dict`; iteration then re-opens the same deterministic stream (fixed
seeds) and skips the consumed records without decoding them. Per-sample randomness (scale, flip, negatives)
comes from a generator seeded by `(seed, epoch, position, sample_id)`, so a resumed run sees exactly the samples,
prompts and augmentations of an uninterrupted one. (`datasets`' own `state_dict()` is not used: it loses the
shuffle buffer on resume.) Exactness holds for `DataLoader(num_workers=0 or 1)`; with more workers each worker
would own part of the stream, which the single position cannot describe, so the stream refuses to run there.
"""

from __future__ import annotations

import copy
import functools
import io
import itertools
import json
import math
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image

from .box_geometry_glip import (
    LEGACY_PIXEL_OFFSET,
    flip_boxes,
    nonempty_box_mask,
    padded_size,
    resize_boxes,
    xywh_to_xyxy,
)
from .image_processing_glip import GLIPImageProcessor
from .processing_glip import DETECTION_PROMPT_SEPARATOR, clean_label_name, create_positive_map

__all__ = [
    "BOX_DROP_REASONS",
    "GLIPTrainingCollator",
    "GLIPTrainingStream",
    "GLIPTrainingTransform",
    "GroundingSource",
    "RECORD_SKIP_REASONS",
    "SkippedRecordCounter",
    "coco_detection_source",
    "detection_to_grounding",
    "grounding_record_features",
    "mdetr_grounding_source",
    "odvg_source",
    "pseudo_label_source",
    "synthetic_shapes_source",
]

# `__background__` is index 0 of the official `ind_to_class`; it may be sampled as a negative (spec §3.7).
BACKGROUND_CATEGORY = "__background__"

# Reasons a whole record is skipped (a corrupt or unusable record) ...
RECORD_SKIP_REASONS = (
    "parse_error",
    "unreadable_image",
    "image_size_mismatch",
    "invalid_box",
    "box_outside_image",
    "span_outside_caption",
    "unknown_category",
    "no_boxes",
)
# ... and reasons single boxes are dropped from an otherwise valid record (filters, not corruption).
BOX_DROP_REASONS = ("empty_box", "low_score", "prompt_overflow", "truncated_phrase")


def grounding_record_features():
    """🤗 datasets `Features` of the common record schema every reader produces (see the module docstring)."""
    from datasets import Features, List, Value
    from datasets import Image as ImageFeature

    return Features(
        {
            "sample_id": Value("string"),
            "source": Value("string"),
            "task": Value("string"),
            "image": ImageFeature(decode=False),
            "width": Value("int32"),
            "height": Value("int32"),
            "boxes": List(List(Value("float32"))),
            "labels": List(Value("string")),
            "caption": Value("string"),
            "tokens_positive": List(List(List(Value("int64")))),
            "scores": List(Value("float32")),
            "error": Value("string"),
        }
    )


@dataclass
class GroundingSource:
    """One training source: a stream of common-schema records plus what the transform needs to know about it.

    Args:
        name: Source name (the `source` field of its records; also the key of mixing ratios).
        dataset: `datasets.IterableDataset` with [`grounding_record_features`].
        vocabulary: Detection sources: all category names, in label order (negatives are sampled from it).
        score_threshold: Keep only boxes whose score is strictly above this (pseudo labels); `None` keeps all.
    """

    name: str
    dataset: object
    vocabulary: list[str] | None = None
    score_threshold: float | None = None


# ----------------------------------------------------------------------------------------------- counters


class SkippedRecordCounter:
    """Counts records skipped as corrupt/unusable and boxes dropped by filters, with a few example ids per reason.

    The counts travel inside every sample's `stream_state`, so they survive resumes and are available in the main
    process even when a DataLoader worker runs the stream. `summary()` gives a one-line report for logs.
    """

    max_examples = 5

    def __init__(self):
        self.records_seen = 0
        self.skipped: dict[str, int] = {}
        self.dropped_boxes: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}

    def skip(self, reason: str, sample_id: str) -> None:
        """Count one skipped record."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < self.max_examples:
            examples.append(sample_id)

    def drop_boxes(self, reason: str, count: int) -> None:
        """Count `count` boxes dropped from a kept record."""
        if count > 0:
            self.dropped_boxes[reason] = self.dropped_boxes.get(reason, 0) + count

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def state_dict(self) -> dict:
        return copy.deepcopy(
            {
                "records_seen": self.records_seen,
                "skipped": self.skipped,
                "dropped_boxes": self.dropped_boxes,
                "examples": self.examples,
            }
        )

    def load_state_dict(self, state: dict) -> None:
        state = copy.deepcopy(state)
        self.records_seen = int(state["records_seen"])
        self.skipped = dict(state["skipped"])
        self.dropped_boxes = dict(state["dropped_boxes"])
        self.examples = {reason: list(ids) for reason, ids in state.get("examples", {}).items()}

    @classmethod
    def from_state_dict(cls, state: dict) -> SkippedRecordCounter:
        counter = cls()
        counter.load_state_dict(state)
        return counter

    def summary(self) -> str:
        skipped = ", ".join(f"{reason}={count}" for reason, count in sorted(self.skipped.items())) or "none"
        dropped = ", ".join(f"{reason}={count}" for reason, count in sorted(self.dropped_boxes.items())) or "none"
        return f"records seen {self.records_seen}, skipped {self.num_skipped} ({skipped}); boxes dropped: {dropped}"


# ----------------------------------------------------------------------------------------------- od -> grounding


def detection_to_grounding(
    box_labels: Sequence[str],
    vocabulary: Sequence[str],
    rng: random.Random,
    token_count,
    max_length: int = 256,
    num_negatives: int = 85,
    full_negative_probability: float = 0.5,
    include_background: bool = True,
    separator: str = DETECTION_PROMPT_SEPARATOR,
) -> tuple[str, list[list[list[int]] | None]]:
    """Turn the category labels of one detection image into a grounding prompt (spec §3.7).

    Follows `coco_dt.py` + `od_to_grounding.py::{check_for_positive_overflow,
    convert_object_detection_to_grounding_optimized_for_od}` with `CONTROL_PROB = (0, 0, 0.5, 0)`:

    1. positive categories are shuffled and kept while the running token count of `"name. "` stays within the
       budget `max_length - 2` (254 for 256 tokens); the final count, including the first overflowing name, is the
       positive caption length;
    2. `full = min(num_negatives, len(candidates))` where the candidates are all vocabulary entries plus
       `__background__`; with probability `full_negative_probability` sample `full` of them, otherwise a uniform
       number in `[1, full]`; positives among the sampled are discarded;
    3. negatives are shuffled and kept while `budget - positive length - sum(tokens of "name. ")` stays > 0;
    4. negatives + kept positives are shuffled and joined with `separator`; each box gets the span of its cleaned
       category name.

    Args:
        box_labels: Category name of every box.
        vocabulary: All category names of the source.
        rng: The sample's random generator (python `random.Random`).
        token_count: `callable(text) -> int`, the number of word pieces of `text` without special tokens.

    Returns:
        `(caption, spans)` with `spans[i] = [[begin, end]]` for box `i`, or `None` when its category did not fit
        the token budget (that box must be dropped).
    """
    budget = max_length - 2
    positive_names = list(dict.fromkeys(box_labels))
    rng.shuffle(positive_names)
    kept_positives: list[str] = []
    positive_length = 0
    for name in positive_names:
        positive_length += token_count(clean_label_name(name) + ". ")
        if positive_length > budget:
            break
        kept_positives.append(name)

    candidates = list(vocabulary) + ([BACKGROUND_CATEGORY] if include_background else [])
    full_negative = min(num_negatives, len(candidates))
    if rng.random() < full_negative_probability:
        sample_size = full_negative
    else:
        sample_size = rng.randint(1, max(1, full_negative))
    sample_size = min(sample_size, len(candidates))
    positive_set = set(positive_names)
    negatives = [name for name in rng.sample(candidates, sample_size) if name not in positive_set]
    negatives = list(dict.fromkeys(negatives))
    rng.shuffle(negatives)
    remaining = budget - positive_length
    kept_negatives = []
    for name in negatives:
        remaining -= token_count(clean_label_name(name) + ". ")
        if remaining <= 0:
            break
        kept_negatives.append(name)

    entries = kept_negatives + kept_positives
    rng.shuffle(entries)
    caption = ""
    name_spans: dict[str, list[int]] = {}
    for index, name in enumerate(entries):
        begin = len(caption)
        caption += clean_label_name(name)
        name_spans[name] = [begin, len(caption)]
        if index != len(entries) - 1:
            caption += separator
    # Negatives never contain a positive name, so a box label in the caption is a kept positive.
    return caption, [[list(name_spans[label])] if label in name_spans else None for label in box_labels]


# ----------------------------------------------------------------------------------------------- readers


def _image_reference(image_dir: str | None, file_name: str) -> dict:
    path = file_name if image_dir is None else os.path.join(image_dir, file_name)
    return {"bytes": None, "path": path}


def _as_box(values, convert_xywh: bool) -> list[float]:
    """Numbers of one box, or four NaNs when the annotation is malformed (the transform counts it)."""
    try:
        numbers = [float(value) for value in values]
    except (TypeError, ValueError):
        return [math.nan] * 4
    if len(numbers) != 4:
        return [math.nan] * 4
    return xywh_to_xyxy(torch.tensor(numbers, dtype=torch.float64)).tolist() if convert_xywh else numbers


def _empty_record(sample_id: str, source: str, task: str) -> dict:
    return {
        "sample_id": sample_id,
        "source": source,
        "task": task,
        "image": {"bytes": None, "path": ""},  # datasets cannot encode an image with neither bytes nor path
        "width": -1,
        "height": -1,
        "boxes": [],
        "labels": [],
        "caption": "",
        "tokens_positive": [],
        "scores": [],
        "error": "",
    }


def _parse_spans(spans) -> list[list[int]]:
    """`[[begin, end], ...]` as ints; a malformed entry becomes `[-1, -1]` (counted as a span outside the caption)."""
    parsed = []
    for span in spans or []:
        try:
            begin, end = span
            parsed.append([int(begin), int(end)])
        except (TypeError, ValueError):
            parsed.append([-1, -1])
    return parsed


@functools.lru_cache(maxsize=8)
def _load_coco_style_records(
    annotation_file: str, modification_time: float, image_dir: str | None, name: str, grounding: bool
) -> tuple[list[dict], list[str]]:
    """Parse a COCO-style json once per process (cached): common-schema records and the category vocabulary."""
    with open(annotation_file, encoding="utf-8") as handle:
        data = json.load(handle)
    categories = sorted(data.get("categories", []), key=lambda category: category["id"])
    category_names = {category["id"]: category["name"] for category in categories}
    annotations_per_image: dict = {}
    for annotation in data.get("annotations", []):
        annotations_per_image.setdefault(annotation.get("image_id"), []).append(annotation)
    records = []
    for image in data.get("images", []):
        record = _empty_record(f"{name}:{image.get('id')}", name, "grounding" if grounding else "detection")
        record["image"] = _image_reference(image_dir, str(image.get("file_name", "")))
        record["width"] = int(image.get("width", -1) or -1)
        record["height"] = int(image.get("height", -1) or -1)
        if grounding:
            record["caption"] = str(image.get("caption", ""))
        for annotation in annotations_per_image.get(image.get("id"), []):
            if annotation.get("iscrowd", 0):
                continue  # crowd regions are not trained on (official COCO/MDETR loaders drop them)
            record["boxes"].append(_as_box(annotation.get("bbox"), convert_xywh=True))
            record["scores"].append(1.0)
            if grounding:
                record["tokens_positive"].append(_parse_spans(annotation.get("tokens_positive")))
            else:
                record["labels"].append(category_names.get(annotation.get("category_id"), ""))
        records.append(record)
    return records, [category_names[key] for key in sorted(category_names)]


def _generate_coco_style(annotation_file, image_dir, name, grounding, shard_indices, num_shards):
    records, _ = _load_coco_style_records(
        annotation_file, os.path.getmtime(annotation_file), image_dir, name, grounding
    )
    for shard_index in shard_indices:
        yield from records[shard_index::num_shards]


def _coco_style_source(annotation_file, image_dir, name, grounding, num_shards) -> GroundingSource:
    from datasets import IterableDataset

    annotation_file = os.path.abspath(annotation_file)
    records, vocabulary = _load_coco_style_records(
        annotation_file, os.path.getmtime(annotation_file), image_dir, name, grounding
    )
    num_shards = max(1, min(num_shards, len(records)))
    dataset = IterableDataset.from_generator(
        _generate_coco_style,
        features=grounding_record_features(),
        gen_kwargs={
            "annotation_file": annotation_file,
            "image_dir": image_dir,
            "name": name,
            "grounding": grounding,
            "shard_indices": list(range(num_shards)),
            "num_shards": num_shards,
        },
    )
    return GroundingSource(name=name, dataset=dataset, vocabulary=None if grounding else vocabulary)


def coco_detection_source(
    annotation_file: str | os.PathLike, image_dir: str | os.PathLike, name: str = "coco", num_shards: int = 16
) -> GroundingSource:
    """COCO detection json (`images`, `annotations` with `bbox` xywh and `category_id`, `categories`) + image folder.

    Boxes become inclusive xyxy (`x2 = x + w - 1`); crowd annotations are dropped; the vocabulary is the category
    names ordered by category id (remove a Roboflow-style background category from the json beforehand). The
    json is parsed once per process and cached; records are split into `num_shards` interleaved shards so
    processes can each take whole shards.
    """
    return _coco_style_source(os.fspath(annotation_file), os.fspath(image_dir), name, False, num_shards)


def mdetr_grounding_source(
    annotation_file: str | os.PathLike, image_dir: str | os.PathLike, name: str = "goldg", num_shards: int = 16
) -> GroundingSource:
    """MDETR / GoldG grounding json (`final_mixed_train_no_coco.json`, `final_flickr_separateGT_*.json`).

    Each image entry holds one `caption`; each annotation a `bbox` (xywh) and `tokens_positive`
    (`[[begin, end], ...]`, end exclusive) into that caption.
    """
    return _coco_style_source(os.fspath(annotation_file), os.fspath(image_dir), name, True, num_shards)


def _jsonl_byte_ranges(files: Sequence[str], shards_per_file: int) -> list[list]:
    ranges = []
    for file_index, path in enumerate(files):
        size = os.path.getsize(path)
        count = max(1, min(shards_per_file, size // 4096 + 1))
        boundaries = [size * index // count for index in range(count + 1)]
        ranges.extend([file_index, path, boundaries[index], boundaries[index + 1]] for index in range(count))
    return ranges


def _iterate_jsonl_lines(path: str, begin: int, end: int) -> Iterator[tuple[int, bytes]]:
    """Lines that START in `[begin, end)`: every line of the file belongs to exactly one byte range."""
    with open(path, "rb") as handle:
        if begin > 0:
            handle.seek(begin - 1)
            handle.readline()  # finish the line running through `begin - 1` (just "\n" if one ends there)
        while True:
            offset = handle.tell()
            if offset >= end:
                return
            line = handle.readline()
            if not line:
                return
            if line.strip():
                yield offset, line


def _generate_jsonl(byte_ranges, image_dir, name, parser_name, parser_options):
    parser = _JSONL_PARSERS[parser_name]
    for file_index, path, begin, end in byte_ranges:
        for offset, line in _iterate_jsonl_lines(path, begin, end):
            sample_id = f"{name}:{file_index}:{offset}"
            try:
                data = json.loads(line)
                if not isinstance(data, dict):
                    raise ValueError("a jsonl record must be an object")
                record = parser(data, sample_id, name, image_dir, **parser_options)
            except (ValueError, TypeError, KeyError, AttributeError, IndexError) as error:
                record = _empty_record(sample_id, name, parser_options.get("task", "grounding"))
                record["error"] = f"parse_error: {type(error).__name__}"
            yield record


def _jsonl_source(files, image_dir, name, parser_name, parser_options, shards_per_file) -> object:
    from datasets import IterableDataset

    files = [files] if isinstance(files, (str, os.PathLike)) else files
    files = [os.path.abspath(os.fspath(path)) for path in files]
    return IterableDataset.from_generator(
        _generate_jsonl,
        features=grounding_record_features(),
        gen_kwargs={
            "byte_ranges": _jsonl_byte_ranges(files, shards_per_file),
            "image_dir": None if image_dir is None else os.fspath(image_dir),
            "name": name,
            "parser_name": parser_name,
            "parser_options": parser_options,
        },
    )


def _parse_odvg(data: dict, sample_id: str, name: str, image_dir: str | None, task: str, label_map: dict) -> dict:
    record = _empty_record(sample_id, name, task)
    record["image"] = _image_reference(image_dir, str(data["filename"]))
    record["width"] = int(data.get("width", -1) or -1)
    record["height"] = int(data.get("height", -1) or -1)
    if task == "detection":
        for instance in data.get("detection", {}).get("instances", []):
            record["boxes"].append(_as_box(instance.get("bbox"), convert_xywh=False))
            label = instance.get("category")
            if label is None:
                label = label_map.get(str(instance.get("label")), "")
            record["labels"].append(str(label))
            record["scores"].append(1.0)
    else:
        grounding = data.get("grounding", {})
        record["caption"] = str(grounding.get("caption", ""))
        for region in grounding.get("regions", []):
            region_boxes = region.get("bbox", [])
            if region_boxes and not isinstance(region_boxes[0], (list, tuple)):
                region_boxes = [region_boxes]
            spans = _parse_spans(region.get("tokens_positive"))
            for box in region_boxes:
                record["boxes"].append(_as_box(box, convert_xywh=False))
                record["tokens_positive"].append(spans)
                record["scores"].append(1.0)
    return record


def _parse_pseudo_label(data: dict, sample_id: str, name: str, image_dir: str | None, task: str) -> dict:
    record = _empty_record(sample_id, name, "grounding")
    file_name = data.get("file_name", data.get("filename", data.get("image")))
    if file_name is None:
        raise KeyError("file_name")
    record["image"] = _image_reference(image_dir, str(file_name))
    record["width"] = int(data.get("img_w", data.get("width", -1)) or -1)
    record["height"] = int(data.get("img_h", data.get("height", -1)) or -1)
    record["caption"] = str(data["caption"])
    boxes, scores, spans = data.get("bboxes", []), data.get("scores", []), data.get("tokens_positive", [])
    if len(boxes) != len(scores) or len(boxes) != len(spans):
        raise ValueError("bboxes, scores and tokens_positive must have one entry each per box (or entity)")
    nested = bool(boxes) and isinstance(boxes[0], (list, tuple)) and bool(boxes[0])
    nested = nested and isinstance(boxes[0][0], (list, tuple))
    for entity_boxes, entity_scores, entity_spans in zip(boxes, scores, spans):
        if not nested:  # v1: one box per entry
            entity_boxes, entity_scores = [entity_boxes], [entity_scores]
        parsed_spans = _parse_spans(entity_spans)
        for box, score in zip(entity_boxes, entity_scores):
            record["boxes"].append(_as_box(box, convert_xywh=False))
            record["scores"].append(float(score))
            record["tokens_positive"].append(parsed_spans)
    return record


_JSONL_PARSERS = {"odvg": _parse_odvg, "pseudo_label": _parse_pseudo_label}


def odvg_source(
    files: str | os.PathLike | Sequence[str | os.PathLike],
    image_dir: str | os.PathLike | None,
    task: str = "detection",
    label_map_file: str | os.PathLike | None = None,
    name: str = "odvg",
    shards_per_file: int = 16,
) -> GroundingSource:
    """ODVG jsonl (Open-GroundingDino / MM-Grounding-DINO), one image per line.

    Detection lines: `{"filename", "height", "width", "detection": {"instances": [{"bbox": [x1, y1, x2, y2],
    "label": int, "category": str}]}}`; grounding lines: `{..., "grounding": {"caption", "regions": [{"bbox":
    box or [box, ...], "phrase", "tokens_positive": [[begin, end]]}]}}`. Boxes are xyxy already. The detection
    vocabulary is `label_map_file` (`{"0": "person", ...}`, ordered by label) or, without it, the categories found
    in the files (one extra pass over the text, no images). Files are streamed in byte ranges
    (`shards_per_file` shards per file), so nothing is loaded in memory.
    """
    if task not in ("detection", "grounding"):
        raise ValueError(f"task must be 'detection' or 'grounding', got {task!r}.")
    label_map: dict = {}
    if label_map_file is not None:
        with open(label_map_file, encoding="utf-8") as handle:
            label_map = {str(key): str(value) for key, value in json.load(handle).items()}
    dataset = _jsonl_source(files, image_dir, name, "odvg", {"task": task, "label_map": label_map}, shards_per_file)
    vocabulary = None
    if task == "detection":
        if label_map:
            vocabulary = [label_map[key] for key in sorted(label_map, key=int)]
        else:
            vocabulary = _scan_odvg_categories(files)
    return GroundingSource(name=name, dataset=dataset, vocabulary=vocabulary)


def _scan_odvg_categories(files) -> list[str]:
    files = [files] if isinstance(files, (str, os.PathLike)) else files
    labels: dict[str, int] = {}
    for path in files:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    instances = json.loads(line).get("detection", {}).get("instances", [])
                except (ValueError, AttributeError):
                    continue
                for instance in instances if isinstance(instances, list) else []:
                    if isinstance(instance, dict) and instance.get("category") is not None:
                        labels.setdefault(str(instance["category"]), int(instance.get("label", 1 << 30)))
    return sorted(labels, key=lambda label: (labels[label], label))


def pseudo_label_source(
    files: str | os.PathLike | Sequence[str | os.PathLike],
    image_dir: str | os.PathLike | None,
    score_threshold: float = 0.5,
    name: str = "pseudo",
    shards_per_file: int = 16,
) -> GroundingSource:
    """GLIP pseudo-label jsonl (the PseudoData / CaptionTSV row, spec §11.2), one image per line.

    Line: `{"file_name", "caption", "bboxes": [[x1, y1, x2, y2], ...], "scores": [...], "tokens_positive":
    [[[begin, end], ...] per box], "img_w", "img_h"}` (format v1), or format v2 where `bboxes`/`scores` hold one
    list per entity and `tokens_positive` one span list per entity (every box inherits its entity's spans). Boxes
    with `score > score_threshold` are kept (`CAPTION_CONF`, 0.5 in the GLIP-L config); a record left without
    boxes is skipped (`CAPTION_MIN_BOX` = 1). Both are counted.
    """
    dataset = _jsonl_source(files, image_dir, name, "pseudo_label", {"task": "grounding"}, shards_per_file)
    return GroundingSource(name=name, dataset=dataset, score_threshold=score_threshold)


# Label of a synthetic box per detection granularity: the record field holding it.
SYNTHETIC_LABEL_FIELDS = {"combination": "categories", "color": "colors", "shape": "shapes"}


def _normalize_synthetic(record: dict, name: str, task: str, split_dir: str, granularity: str) -> dict:
    normalized = _empty_record(f"{name}:{record['image_id']}", name, task)
    normalized["image"] = _image_reference(split_dir, record["image"])
    normalized["width"] = record["width"]
    normalized["height"] = record["height"]
    if task == "detection":
        normalized["boxes"] = record["boxes"]
        normalized["labels"] = record[SYNTHETIC_LABEL_FIELDS[granularity]]
    else:  # only the objects the caption mentions are annotated
        mentioned = [index for index, spans in enumerate(record["tokens_positive"]) if spans]
        normalized["boxes"] = [record["boxes"][index] for index in mentioned]
        normalized["caption"] = record["caption"]
        normalized["tokens_positive"] = [record["tokens_positive"][index] for index in mentioned]
    normalized["scores"] = [1.0] * len(normalized["boxes"])
    return normalized


def synthetic_shapes_source(
    data_dir: str | os.PathLike,
    split: str = "train",
    task: str = "detection",
    name: str | None = None,
    granularity: str = "combination",
) -> GroundingSource:
    """The synthetic shapes world written by `synthetic_shapes_glip.generate_synthetic_shapes`, streamed from its
    jsonl shards with `load_dataset("json", streaming=True)`.

    `task="grounding"` uses the captions and phrase spans. `task="detection"` uses one category per box, at the
    given `granularity`: `"combination"` (`"red circle"`; vocabulary: the split's colour-shape combinations),
    `"color"` (`"red"`) or `"shape"` (`"circle"`) -- like detection datasets with different label spaces, which
    GLIP mixes in pre-training.
    """
    from datasets import load_dataset

    from .synthetic_shapes_glip import read_synthetic_metadata, synthetic_features

    if task not in ("detection", "grounding"):
        raise ValueError(f"task must be 'detection' or 'grounding', got {task!r}.")
    if granularity not in SYNTHETIC_LABEL_FIELDS:
        raise ValueError(f"granularity must be one of {sorted(SYNTHETIC_LABEL_FIELDS)}, got {granularity!r}.")
    data_dir = os.path.abspath(os.fspath(data_dir))
    metadata = read_synthetic_metadata(data_dir)
    if name is None:
        name = (
            f"synthetic_{task}" if task == "grounding" or granularity == "combination" else f"synthetic_{granularity}"
        )
    files = [os.path.join(data_dir, file_name) for file_name in metadata["splits"][split]["files"]]
    raw = load_dataset("json", data_files={split: files}, split=split, streaming=True, features=synthetic_features())
    dataset = raw.map(
        _normalize_synthetic,
        fn_kwargs={
            "name": name,
            "task": task,
            "split_dir": os.path.join(data_dir, split),
            "granularity": granularity,
        },
        remove_columns=list(raw.features),
        features=grounding_record_features(),
    )
    if task == "grounding":
        vocabulary = None
    elif granularity == "combination":
        vocabulary = list(metadata["train_categories"] if split == "train" else metadata["categories"])
    else:
        vocabulary = list(metadata["config"][f"{granularity}s"])
    return GroundingSource(name=name, dataset=dataset, vocabulary=vocabulary)


# ----------------------------------------------------------------------------------------------- transform


class _RecordError(Exception):
    """A record is corrupt/unusable; `reason` is one of `RECORD_SKIP_REASONS`."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class GLIPTrainingTransform:
    """Validate one common-schema record and turn it into a training sample (see the module docstring).

    Args:
        tokenizer: A fast tokenizer (offsets needed for the positive map), e.g. `BertTokenizer` of transformers 5.
        image_processor: The [`GLIPImageProcessor`] whose training settings are used: short sides drawn uniformly
            per sample from `train_min_sizes` (`AUGMENT.MULT_MIN_SIZE_TRAIN`), long side capped at `max_size`,
            horizontal flip with `horizontal_flip_probability`, BGR mean/std. Defaults to the official settings.
        max_length: Token length prompts are padded/truncated to (256 official; the model does not assume it).
        num_negatives: Negative categories sampled for detection prompts (`DATASETS.RANDOM_SAMPLE_NEG`).
        full_negative_probability: Probability of using all of them (`DATASETS.CONTROL_PROB[2]`).
        include_background_negative: Whether `__background__` can be sampled as a negative (official: yes).
        separator: Joins detection prompt entries (`DATASETS.SEPARATION_TOKENS`).
        box_tolerance: Boxes may exceed the image by this many pixels (then they are clamped); beyond, the record
            is corrupt.
    """

    tokenizer: object
    image_processor: GLIPImageProcessor = field(default_factory=GLIPImageProcessor)
    max_length: int = 256
    num_negatives: int = 85
    full_negative_probability: float = 0.5
    include_background_negative: bool = True
    separator: str = DETECTION_PROMPT_SEPARATOR
    box_tolerance: float = 1.0
    _token_counts: dict = field(default_factory=dict, repr=False)

    def token_count(self, text: str) -> int:
        """Number of word pieces of `text` without special tokens (cached per text)."""
        if text not in self._token_counts:
            self._token_counts[text] = len(self.tokenizer.tokenize(text))
        return self._token_counts[text]

    def __call__(
        self, record: dict, source: GroundingSource, rng: random.Random, counter: SkippedRecordCounter
    ) -> dict | None:
        """Returns the sample (see [`GLIPTrainingCollator`]) or `None` when the record is skipped (counted)."""
        counter.records_seen += 1
        try:
            return self._transform(record, source, rng, counter)
        except _RecordError as error:
            counter.skip(error.reason, record.get("sample_id", "?"))
            return None

    # -- steps
    def _transform(self, record, source, rng, counter) -> dict:
        if record.get("error"):
            raise _RecordError("parse_error")
        image = self._decode(record)
        width, height = image.size
        if (record["width"] > 0 and record["width"] != width) or (record["height"] > 0 and record["height"] != height):
            raise _RecordError("image_size_mismatch")
        boxes = self._validate_boxes(record["boxes"], width, height)
        scores = list(record.get("scores") or [1.0] * len(boxes))
        if len(scores) != len(boxes):
            raise _RecordError("invalid_box")
        # Official `clip_to_image(remove_empty=True)`: an empty box (x2 <= x1 or y2 <= y1, e.g. a COCO box under one
        # pixel wide) is dropped and counted; the image and its other boxes are kept.
        nonempty = nonempty_box_mask(boxes)
        counter.drop_boxes("empty_box", int((~nonempty).sum()))
        nonempty_indices = torch.nonzero(nonempty).flatten().tolist()

        if record["task"] == "detection":
            vocabulary = source.vocabulary or []
            labels = list(record["labels"])
            if len(labels) != len(boxes) or any(label not in vocabulary for label in labels):
                raise _RecordError("unknown_category")
            boxes, labels = boxes[nonempty], [labels[index] for index in nonempty_indices]
            scores = [scores[index] for index in nonempty_indices]
            keep = self._score_filter(scores, source, counter)
            boxes, labels = boxes[keep], [labels[index] for index in keep.tolist()]
            if len(labels) == 0:
                raise _RecordError("no_boxes")
            caption, spans = detection_to_grounding(
                labels,
                vocabulary,
                rng,
                self.token_count,
                max_length=self.max_length,
                num_negatives=self.num_negatives,
                full_negative_probability=self.full_negative_probability,
                include_background=self.include_background_negative,
                separator=self.separator,
            )
            fitted = [index for index, span in enumerate(spans) if span is not None]
            counter.drop_boxes("prompt_overflow", len(spans) - len(fitted))
            boxes, spans = boxes[fitted], [spans[index] for index in fitted]
        else:
            caption = record["caption"]
            spans = [list(map(list, entry)) for entry in record["tokens_positive"]]
            if len(spans) != len(boxes):
                raise _RecordError("span_outside_caption")
            for entry in spans:
                if not entry or any(not 0 <= begin < end <= len(caption) for begin, end in entry):
                    raise _RecordError("span_outside_caption")
            boxes, spans = boxes[nonempty], [spans[index] for index in nonempty_indices]
            scores = [scores[index] for index in nonempty_indices]
            keep = self._score_filter(scores, source, counter)
            boxes, spans = boxes[keep], [spans[index] for index in keep.tolist()]
        if len(spans) == 0:
            raise _RecordError("no_boxes")

        pixel_values, image_size, boxes, flipped = self._augment(image, boxes, rng)
        encoding = self.tokenizer(
            caption,
            max_length=self.max_length,
            padding="max_length",
            truncation=True,
            return_tensors="pt",
        )
        spans_per_box = [[tuple(span) for span in entry] for entry in spans]
        positive_map = create_positive_map(encoding, spans_per_box, self.max_length)  # (boxes, max_length)
        mapped = positive_map.sum(dim=1) > 0
        counter.drop_boxes("truncated_phrase", int((~mapped).sum()))
        if not bool(mapped.any()):
            raise _RecordError("no_boxes")
        return {
            "sample_id": record["sample_id"],
            "source": record["source"],
            "caption": caption,
            "pixel_values": pixel_values,
            "input_ids": encoding["input_ids"][0],
            "attention_mask": encoding["attention_mask"][0],
            "boxes": boxes[mapped],
            "positive_map": positive_map[mapped],
            "image_size": image_size,
            "original_size": (height, width),
            "flipped": flipped,
        }

    @staticmethod
    def _decode(record: dict) -> Image.Image:
        reference = record["image"] or {}
        try:
            if reference.get("bytes"):
                image = Image.open(io.BytesIO(reference["bytes"]))
            elif reference.get("path"):
                image = Image.open(reference["path"])
            else:
                raise OSError("no image bytes or path")
            image.load()
            return image.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            raise _RecordError("unreadable_image") from error

    def _validate_boxes(self, raw_boxes, width: int, height: int) -> torch.Tensor:
        if len(raw_boxes) == 0:
            return torch.zeros((0, 4), dtype=torch.float32)
        if any(len(box) != 4 for box in raw_boxes):
            raise _RecordError("invalid_box")
        boxes = torch.tensor([[float(value) for value in box] for box in raw_boxes], dtype=torch.float32)
        if not bool(torch.isfinite(boxes).all()):
            raise _RecordError("invalid_box")
        tolerance = self.box_tolerance
        max_x, max_y = width - LEGACY_PIXEL_OFFSET, height - LEGACY_PIXEL_OFFSET
        inside = (
            (boxes[:, 0] >= -tolerance)
            & (boxes[:, 1] >= -tolerance)
            & (boxes[:, 2] <= max_x + tolerance)
            & (boxes[:, 3] <= max_y + tolerance)
        )
        if not bool(inside.all()):
            raise _RecordError("box_outside_image")
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, max_x)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, max_y)
        return boxes

    @staticmethod
    def _score_filter(scores, source: GroundingSource, counter: SkippedRecordCounter) -> torch.Tensor:
        if source.score_threshold is None:
            return torch.arange(len(scores))
        keep = torch.tensor([score > source.score_threshold for score in scores], dtype=torch.bool)
        counter.drop_boxes("low_score", int((~keep).sum()))
        return torch.nonzero(keep).flatten()

    def _augment(self, image: Image.Image, boxes: torch.Tensor, rng: random.Random):
        """Resize (random short side) then horizontal flip, official order (`build_transforms(is_train=True)`), and
        normalise. The pixels go through `GLIPImageProcessor.preprocess` with the short side and flip decided here
        (from the sample's generator, for exact resumes); the boxes follow with `resize_boxes` / `flip_boxes`."""
        processor = self.image_processor
        min_size = processor.train_min_sizes[rng.randrange(len(processor.train_min_sizes))]
        flipped = rng.random() < processor.horizontal_flip_probability
        features = processor.preprocess(
            image,
            do_train_augmentation=True,
            train_min_sizes=[min_size],
            horizontal_flip_probability=1.0 if flipped else 0.0,
            size_divisibility=0,
        )
        new_height, new_width = (int(value) for value in features["image_sizes"][0])
        boxes = resize_boxes(boxes, (image.height, image.width), (new_height, new_width))
        if flipped:
            boxes = flip_boxes(boxes, new_width)
        pixel_values = features["pixel_values"][0, :, :new_height, :new_width]  # (3, height, width)
        return pixel_values, (new_height, new_width), boxes, flipped


# ----------------------------------------------------------------------------------------------- stream


class GLIPTrainingStream(torch.utils.data.IterableDataset):
    """An endless (or `max_epochs`-long) stream of training samples from one or more sources.

    Args:
        sources: The [`GroundingSource`]s to mix.
        transform: The [`GLIPTrainingTransform`].
        probabilities: Mixing ratios (one per source, normalised); `None` alternates sources.
        seed: Seeds the source choice, the shuffle and every sample's augmentation/negative sampling.
        shuffle_buffer_size: Size of the 🤗 datasets shuffle buffer (0 disables shuffling, also of shard order).
        rank / world_size: This process and the number of processes; the stream is split with
            `datasets.distributed.split_dataset_by_node` (whole shards per process when the shard count divides
            `world_size`, otherwise every `world_size`-th record).
        max_epochs: Stop after this many passes (`None`: endless, epochs advance automatically).
        stopping_strategy: `interleave_datasets` strategy; `"all_exhausted"` ends an epoch once every source has
            been seen completely (smaller sources are oversampled).
    """

    def __init__(
        self,
        sources: Sequence[GroundingSource],
        transform: GLIPTrainingTransform,
        probabilities: Sequence[float] | None = None,
        seed: int = 0,
        shuffle_buffer_size: int = 1000,
        rank: int = 0,
        world_size: int = 1,
        max_epochs: int | None = None,
        stopping_strategy: str = "all_exhausted",
    ):
        from datasets import interleave_datasets
        from datasets.distributed import split_dataset_by_node

        super().__init__()
        if not sources:
            raise ValueError("Need at least one source.")
        names = [source.name for source in sources]
        if len(set(names)) != len(names):
            raise ValueError(f"Source names must be unique, got {names}.")
        if probabilities is not None:
            if len(probabilities) != len(sources) or any(value < 0 for value in probabilities):
                raise ValueError(f"Need one non-negative ratio per source, got {probabilities} for {names}.")
            total = float(sum(probabilities))
            probabilities = [value / total for value in probabilities]
        self.sources = {source.name: source for source in sources}
        self.transform = transform
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.max_epochs = max_epochs
        datasets = [source.dataset for source in sources]
        if len(datasets) == 1:
            dataset = datasets[0]
        else:
            dataset = interleave_datasets(
                datasets, probabilities=probabilities, seed=seed, stopping_strategy=stopping_strategy
            )
        if shuffle_buffer_size > 0:
            dataset = dataset.shuffle(seed=seed, buffer_size=shuffle_buffer_size)
        if world_size > 1:
            dataset = split_dataset_by_node(dataset, rank=rank, world_size=world_size)
        self.dataset = dataset
        self.epoch = 0
        self.records_consumed = 0
        self.counter = SkippedRecordCounter()

    def set_epoch(self, epoch: int) -> None:
        """Start (the next iteration) at the beginning of `epoch`; the shuffle order depends on the epoch."""
        self.epoch = epoch
        self.records_consumed = 0

    def state_dict(self) -> dict:
        """Position of this process: `{"epoch", "records_consumed", "counter", "seed", "rank", "world_size"}`."""
        return {
            "epoch": self.epoch,
            "records_consumed": self.records_consumed,
            "counter": self.counter.state_dict(),
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue right after the position in `state` (usually the `stream_state` of the last trained batch)."""
        for key in ("seed", "rank", "world_size"):
            if state.get(key, getattr(self, key)) != getattr(self, key):
                raise ValueError(
                    f"Cannot resume a stream with {key}={state[key]} as {key}={getattr(self, key)}: the record order "
                    "would differ."
                )
        self.epoch = int(state["epoch"])
        self.records_consumed = int(state["records_consumed"])
        self.counter.load_state_dict(state["counter"])

    def __iter__(self) -> Iterator[dict]:
        worker = torch.utils.data.get_worker_info()
        if worker is not None and worker.num_workers > 1:
            raise RuntimeError(
                "GLIPTrainingStream keeps one exact stream position, so it runs in the main process or in a single "
                f"DataLoader worker (num_workers <= 1); got num_workers={worker.num_workers}."
            )
        epoch, skip = self.epoch, self.records_consumed
        while self.max_epochs is None or epoch < self.max_epochs:
            self.dataset.set_epoch(epoch)
            position = skip
            for record in itertools.islice(iter(self.dataset), skip, None):
                position += 1
                rng = random.Random(f"{self.seed}:{self.rank}:{epoch}:{position}:{record['sample_id']}")
                sample = self.transform(record, self.sources[record["source"]], rng, self.counter)
                self.epoch, self.records_consumed = epoch, position
                if sample is not None:
                    sample["stream_state"] = self.state_dict()
                    yield sample
            if position == 0:
                raise RuntimeError(f"The training stream is empty on process {self.rank} (epoch {epoch}).")
            epoch, skip = epoch + 1, 0
            self.epoch, self.records_consumed = epoch, 0


# ----------------------------------------------------------------------------------------------- collator


@dataclass
class GLIPTrainingCollator:
    """Batch samples of [`GLIPTrainingTransform`] for `GLIPForGrounding`.

    Returns a dict with
    * `pixel_values`: `(batch, 3, height, width)`, zero-padded bottom/right to a multiple of `size_divisibility`;
    * `input_ids`, `attention_mask`: `(batch, max_length)`;
    * `labels`: list (one per image) of `{"boxes": (n, 4) xyxy network-input pixels, "positive_map":
      (n, max_length) binary float}`;
    * `image_sizes`: `(batch, 2)` unpadded `(height, width)` of every image;
    * `sample_ids`: list of str; `stream_state`: the stream position after the last sample (for checkpoints).
    """

    size_divisibility: int = 32

    def __call__(self, samples: list[dict]) -> dict:
        max_height = max(sample["pixel_values"].shape[1] for sample in samples)
        max_width = max(sample["pixel_values"].shape[2] for sample in samples)
        padded_height, padded_width = padded_size(max_height, max_width, self.size_divisibility)
        pixel_values = torch.zeros((len(samples), 3, padded_height, padded_width), dtype=torch.float32)
        for index, sample in enumerate(samples):
            _, height, width = sample["pixel_values"].shape
            pixel_values[index, :, :height, :width] = sample["pixel_values"]
        return {
            "pixel_values": pixel_values,
            "input_ids": torch.stack([sample["input_ids"] for sample in samples]),
            "attention_mask": torch.stack([sample["attention_mask"] for sample in samples]),
            "labels": [{"boxes": sample["boxes"], "positive_map": sample["positive_map"]} for sample in samples],
            "image_sizes": torch.tensor([sample["image_size"] for sample in samples], dtype=torch.long),
            "sample_ids": [sample["sample_id"] for sample in samples],
            "stream_state": samples[-1].get("stream_state"),
        }
