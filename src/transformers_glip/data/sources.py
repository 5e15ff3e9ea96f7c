"""Training-data readers: each turns one data format into a [`GroundingSource`] streaming common-schema records.

Readers: [`coco_detection_source`] (COCO json + image folder), [`mdetr_grounding_source`] (MDETR/GoldG json with
`tokens_positive`), [`odvg_source`] (ODVG jsonl, detection or grounding), [`pseudo_label_source`] (GLIP
pseudo-label jsonl, boxes kept above a score threshold), [`synthetic_shapes_source`] (the generated world of
`transformers_glip.data.synthetic_shapes`). The record schema is in `transformers_glip.data.records`.

Each reader checks its arguments once (files and folders exist, the file's structure is that of its format) and
raises `ValueError` / `FileNotFoundError` naming the file and the fix. A single record that cannot be used -- a
field of the wrong type (`"width": "64"`, `"category_id": "x"`, `"bbox": ["a", 1, 2, 3]`), a missing key -- never
stops training and is never coerced: the record carries an `error` (`"<reason>: <detail>"`) and the transform skips
and counts it under that reason. Image paths may be `http(s)://` URLs (the transform fetches them with a timeout).
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Iterator, Sequence

import torch

from ..box_geometry_glip import xywh_to_xyxy
from .records import GroundingSource, empty_record, grounding_record_features, image_reference, record_error
from .synthetic_shapes import read_synthetic_metadata, synthetic_features

__all__ = [
    "SYNTHETIC_LABEL_FIELDS",
    "coco_detection_source",
    "mdetr_grounding_source",
    "odvg_source",
    "pseudo_label_source",
    "synthetic_shapes_source",
]

# Label of a synthetic box per detection granularity: the record field holding it.
SYNTHETIC_LABEL_FIELDS = {"combination": "categories", "color": "colors", "shape": "shapes"}


# ----------------------------------------------------------------------------------------------- argument checks


def _existing_file(path, argument: str) -> str:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{argument}={path!r} is not a file; pass the path of an existing annotation file.")
    return os.path.abspath(path)


def _existing_dir(path, argument: str) -> str | None:
    if path is None:
        return None
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"{argument}={path!r} is not a folder; pass the folder the image paths are relative to."
        )
    return path


def _positive_int(value, argument: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{argument} must be an integer >= 1, got {value!r}.")
    return value


def _source_name(value) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(
            f"name must be a non-empty string (the source's name in sample ids and ratios), got {value!r}."
        )
    return value


# ----------------------------------------------------------------------------------------------- field parsing


# Errors a parser may still meet on unexpected json values (e.g. an integer too large for a float): the record is
# then a parse error, never a crash of the stream.
_PARSER_ERRORS = (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError)


class _InvalidRecord(Exception):
    """One record cannot be used: `reason` (one of `RECORD_SKIP_REASONS`) and a human-readable detail."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _is_number(value) -> bool:
    """A json number (bool is not one, nor a numeric string: `"64"` is refused, not coerced)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_integer(value) -> bool:
    return _is_number(value) and math.isfinite(value) and float(value).is_integer()


def _image_size(value, field: str) -> int:
    """An annotated width/height: a positive integer, or -1 when absent (`None`, 0 and -1 mean "not annotated")."""
    if value is None:
        return -1
    if not _is_integer(value) or (value < 1 and value not in (0, -1)):
        raise _InvalidRecord("invalid_field", f"{field} must be a positive integer, got {value!r}")
    return int(value) if value >= 1 else -1


def _box(values, convert_xywh: bool, field: str) -> list[float]:
    """The 4 numbers of one box (xyxy; COCO xywh converted with the "+1" rule)."""
    if not isinstance(values, (list, tuple)) or len(values) != 4 or not all(_is_number(value) for value in values):
        raise _InvalidRecord("invalid_box", f"{field} must be 4 numbers, got {values!r}")
    numbers = [float(value) for value in values]
    return xywh_to_xyxy(torch.tensor(numbers, dtype=torch.float64)).tolist() if convert_xywh else numbers


def _spans(values, field: str) -> list[list[int]]:
    """`[[begin, end], ...]` character spans (integers; checked against the caption by the transform)."""
    if values is None:
        return []
    if not isinstance(values, (list, tuple)):
        raise _InvalidRecord("invalid_field", f"{field} must be a list of [begin, end] spans, got {values!r}")
    spans = []
    for span in values:
        if not isinstance(span, (list, tuple)) or len(span) != 2 or not all(_is_integer(value) for value in span):
            raise _InvalidRecord("invalid_field", f"{field} must hold [begin, end] integer spans, got {span!r}")
        spans.append([int(span[0]), int(span[1])])
    return spans


def _string(value, field: str, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if value is None:
        raise _InvalidRecord("parse_error", f"{field} is missing")
    if not isinstance(value, str):
        raise _InvalidRecord("invalid_field", f"{field} must be a string, got {value!r}")
    return value


def _list(value, field: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _InvalidRecord("invalid_field", f"{field} must be a list, got {type(value).__name__}")
    return value


def _object(value, field: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _InvalidRecord("invalid_field", f"{field} must be an object, got {type(value).__name__}")
    return value


# ----------------------------------------------------------------------------------------------- COCO / MDETR json


def _coco_structure(data, annotation_file: str) -> tuple[list, list, list]:
    """The `images`, `annotations` and `categories` lists of a COCO-style json, or a `ValueError` naming the file."""
    if not isinstance(data, dict):
        raise ValueError(f"{annotation_file} must hold a COCO json object with 'images', got {type(data).__name__}.")
    parts = []
    for key in ("images", "annotations", "categories"):
        value = data.get(key, [])
        if not isinstance(value, list):
            raise ValueError(f"{annotation_file}: '{key}' must be a list, got {type(value).__name__}.")
        for index, entry in enumerate(value):
            if not isinstance(entry, dict):
                raise ValueError(f"{annotation_file}: {key}[{index}] must be an object, got {entry!r}.")
        parts.append(value)
    images, annotations, categories = parts
    if not images:
        raise ValueError(f"{annotation_file} lists no images; check that it is the right annotation file.")
    seen = set()
    for index, category in enumerate(categories):
        category_id, name = category.get("id"), category.get("name")
        if isinstance(category_id, bool) or not isinstance(category_id, int) or not isinstance(name, str):
            raise ValueError(
                f"{annotation_file}: categories[{index}] needs an integer 'id' and a string 'name', got {category!r}."
            )
        if category_id in seen:
            raise ValueError(f"{annotation_file}: category id {category_id} appears twice in 'categories'.")
        seen.add(category_id)
    return images, annotations, categories


def _coco_record(image: dict, annotations: list, category_names: dict, image_dir, name: str, grounding: bool) -> dict:
    record = empty_record(f"{name}:{image.get('id')}", name, "grounding" if grounding else "detection")
    record["image"] = image_reference(image_dir, _string(image.get("file_name"), "file_name"))
    record["width"] = _image_size(image.get("width"), "width")
    record["height"] = _image_size(image.get("height"), "height")
    if grounding:
        record["caption"] = _string(image.get("caption"), "caption", required=False)
    for annotation in annotations:
        annotation_id = annotation.get("id")
        crowd = annotation.get("iscrowd", 0)
        if not (crowd is None or (_is_number(crowd) and crowd in (0, 1))):
            raise _InvalidRecord(
                "invalid_field", f"iscrowd of annotation {annotation_id} must be 0 or 1, got {crowd!r}"
            )
        if crowd:
            continue  # crowd regions are not trained on (official COCO/MDETR loaders drop them)
        record["boxes"].append(_box(annotation.get("bbox"), True, f"bbox of annotation {annotation_id}"))
        record["scores"].append(1.0)
        if grounding:
            spans = _spans(annotation.get("tokens_positive"), f"tokens_positive of annotation {annotation_id}")
            record["tokens_positive"].append(spans)
        else:
            category_id = annotation.get("category_id")
            if isinstance(category_id, bool) or not isinstance(category_id, int):
                raise _InvalidRecord(
                    "invalid_field",
                    f"category_id of annotation {annotation_id} must be an integer, got {category_id!r}",
                )
            record["labels"].append(category_names.get(category_id, ""))  # unknown ids: `unknown_category`
    return record


@functools.lru_cache(maxsize=8)
def _load_coco_style_records(
    annotation_file: str, modification_time: float, image_dir: str | None, name: str, grounding: bool
) -> tuple[list[dict], list[str]]:
    """Parse a COCO-style json once per process (cached): common-schema records and the category vocabulary."""
    try:
        with open(annotation_file, encoding="utf-8") as handle:
            data = json.load(handle)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{annotation_file} is not valid json ({error}); pass a COCO-style annotation file."
        ) from error
    images, annotations, categories = _coco_structure(data, annotation_file)
    categories = sorted(categories, key=lambda category: category["id"])
    category_names = {category["id"]: category["name"] for category in categories}
    annotations_per_image: dict = {}
    for annotation in annotations:
        image_id = annotation.get("image_id")
        if isinstance(image_id, (str, int)):  # unhashable ids match no image
            annotations_per_image.setdefault(image_id, []).append(annotation)
    records = []
    for image in images:
        image_id = image.get("id")
        try:
            if isinstance(image_id, bool) or not isinstance(image_id, (str, int)):
                raise _InvalidRecord("invalid_field", f"image id must be an integer or a string, got {image_id!r}")
            annotations_of_image = annotations_per_image.get(image_id, [])
            record = _coco_record(image, annotations_of_image, category_names, image_dir, name, grounding)
        except _InvalidRecord as error:
            record = record_error(empty_record(f"{name}:{image_id}", name, "detection"), error.reason, error.detail)
        except _PARSER_ERRORS as error:
            record = record_error(empty_record(f"{name}:{image_id}", name, "detection"), "parse_error", repr(error))
        records.append(record)
    return records, [category["name"] for category in categories]


def _generate_coco_style(annotation_file, image_dir, name, grounding, shard_indices, num_shards):
    records, _ = _load_coco_style_records(
        annotation_file, os.path.getmtime(annotation_file), image_dir, name, grounding
    )
    for shard_index in shard_indices:
        yield from records[shard_index::num_shards]


def _coco_style_source(annotation_file, image_dir, name, grounding, num_shards) -> GroundingSource:
    from datasets import IterableDataset

    annotation_file = _existing_file(annotation_file, "annotation_file")
    image_dir = _existing_dir(image_dir, "image_dir")
    name = _source_name(name)
    num_shards = _positive_int(num_shards, "num_shards")
    records, vocabulary = _load_coco_style_records(
        annotation_file, os.path.getmtime(annotation_file), image_dir, name, grounding
    )
    num_shards = min(num_shards, len(records))
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
    processes can each take whole shards. A `file_name` that is an `http(s)://` URL is fetched, not joined to
    `image_dir`.

    Raises:
        FileNotFoundError: `annotation_file` or `image_dir` does not exist.
        ValueError: the file is not a COCO-style json (no image list, a category without integer id / string name).
    """
    return _coco_style_source(annotation_file, image_dir, name, False, num_shards)


def mdetr_grounding_source(
    annotation_file: str | os.PathLike, image_dir: str | os.PathLike, name: str = "goldg", num_shards: int = 16
) -> GroundingSource:
    """MDETR / GoldG grounding json (`final_mixed_train_no_coco.json`, `final_flickr_separateGT_*.json`).

    Each image entry holds one `caption`; each annotation a `bbox` (xywh) and `tokens_positive`
    (`[[begin, end], ...]`, end exclusive) into that caption. Raises like [`coco_detection_source`].
    """
    return _coco_style_source(annotation_file, image_dir, name, True, num_shards)


# ----------------------------------------------------------------------------------------------- jsonl formats


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
                try:
                    data = json.loads(line)
                except ValueError as error:  # also UnicodeDecodeError
                    raise _InvalidRecord("parse_error", f"not json ({error})") from error
                if not isinstance(data, dict):
                    raise _InvalidRecord("parse_error", "a jsonl line must be a json object")
                record = parser(data, sample_id, name, image_dir, **parser_options)
            except _InvalidRecord as error:
                record = empty_record(sample_id, name, parser_options.get("task", "grounding"))
                record_error(record, error.reason, error.detail)
            except _PARSER_ERRORS as error:
                record = empty_record(sample_id, name, parser_options.get("task", "grounding"))
                record_error(record, "parse_error", repr(error))
            yield record


def _existing_files(files, argument: str) -> list[str]:
    files = [files] if isinstance(files, (str, os.PathLike)) else list(files)
    if not files:
        raise ValueError(f"{argument} is empty; pass one or more jsonl files.")
    return [_existing_file(path, argument) for path in files]


def _jsonl_source(files, image_dir, name, parser_name, parser_options, shards_per_file) -> object:
    from datasets import IterableDataset

    return IterableDataset.from_generator(
        _generate_jsonl,
        features=grounding_record_features(),
        gen_kwargs={
            "byte_ranges": _jsonl_byte_ranges(files, shards_per_file),
            "image_dir": image_dir,
            "name": name,
            "parser_name": parser_name,
            "parser_options": parser_options,
        },
    )


def _parse_odvg(data: dict, sample_id: str, name: str, image_dir: str | None, task: str, label_map: dict) -> dict:
    record = empty_record(sample_id, name, task)
    record["image"] = image_reference(image_dir, _string(data.get("filename"), "filename"))
    record["width"] = _image_size(data.get("width"), "width")
    record["height"] = _image_size(data.get("height"), "height")
    if task == "detection":
        instances = _list(_object(data.get("detection"), "detection").get("instances"), "detection.instances")
        for index, instance in enumerate(instances):
            instance = _object(instance, f"detection.instances[{index}]")
            record["boxes"].append(_box(instance.get("bbox"), False, f"bbox of instance {index}"))
            label = instance.get("category")
            if label is None:
                number = instance.get("label")
                if not _is_integer(number):
                    raise _InvalidRecord(
                        "invalid_field", f"label of instance {index} must be an integer, got {number!r}"
                    )
                label = label_map.get(str(int(number)), "")  # unknown labels: `unknown_category`
            record["labels"].append(_string(label, f"category of instance {index}"))
            record["scores"].append(1.0)
    else:
        grounding = _object(data.get("grounding"), "grounding")
        record["caption"] = _string(grounding.get("caption"), "grounding.caption", required=False)
        for index, region in enumerate(_list(grounding.get("regions"), "grounding.regions")):
            region = _object(region, f"grounding.regions[{index}]")
            region_boxes = region.get("bbox", [])
            if isinstance(region_boxes, list) and region_boxes and not isinstance(region_boxes[0], (list, tuple)):
                region_boxes = [region_boxes]
            spans = _spans(region.get("tokens_positive"), f"tokens_positive of region {index}")
            for box in _list(region_boxes, f"bbox of region {index}"):
                record["boxes"].append(_box(box, False, f"bbox of region {index}"))
                record["tokens_positive"].append(spans)
                record["scores"].append(1.0)
    return record


def _parse_pseudo_label(data: dict, sample_id: str, name: str, image_dir: str | None, task: str) -> dict:
    record = empty_record(sample_id, name, "grounding")
    file_name = data.get("file_name", data.get("filename", data.get("image")))
    record["image"] = image_reference(image_dir, _string(file_name, "file_name"))
    record["width"] = _image_size(data.get("img_w", data.get("width")), "img_w")
    record["height"] = _image_size(data.get("img_h", data.get("height")), "img_h")
    record["caption"] = _string(data.get("caption"), "caption")
    boxes = _list(data.get("bboxes"), "bboxes")
    scores = _list(data.get("scores"), "scores")
    spans = _list(data.get("tokens_positive"), "tokens_positive")
    if len(boxes) != len(scores) or len(boxes) != len(spans):
        raise _InvalidRecord(
            "invalid_field", "bboxes, scores and tokens_positive must have one entry each per box (or entity)"
        )
    nested = bool(boxes) and isinstance(boxes[0], (list, tuple)) and bool(boxes[0])
    nested = nested and isinstance(boxes[0][0], (list, tuple))
    for index, (entity_boxes, entity_scores, entity_spans) in enumerate(zip(boxes, scores, spans)):
        if not nested:  # v1: one box per entry
            entity_boxes, entity_scores = [entity_boxes], [entity_scores]
        if not isinstance(entity_boxes, list) or not isinstance(entity_scores, list):
            raise _InvalidRecord("invalid_field", f"bboxes[{index}] / scores[{index}] must be lists of one entity")
        if len(entity_boxes) != len(entity_scores):
            raise _InvalidRecord("invalid_field", f"bboxes[{index}] and scores[{index}] differ in length")
        parsed_spans = _spans(entity_spans, f"tokens_positive[{index}]")
        for box, score in zip(entity_boxes, entity_scores):
            if not _is_number(score):
                raise _InvalidRecord("invalid_field", f"scores of entity {index} must be numbers, got {score!r}")
            record["boxes"].append(_box(box, False, f"bboxes[{index}]"))
            record["scores"].append(float(score))
            record["tokens_positive"].append(parsed_spans)
    return record


_JSONL_PARSERS = {"odvg": _parse_odvg, "pseudo_label": _parse_pseudo_label}


def _read_label_map(label_map_file) -> dict[str, str]:
    label_map_file = _existing_file(label_map_file, "label_map_file")
    try:
        with open(label_map_file, encoding="utf-8") as handle:
            data = json.load(handle)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"label_map_file {label_map_file} is not valid json ({error}).") from error
    if not isinstance(data, dict) or not data:
        raise ValueError(f"label_map_file {label_map_file} must be a non-empty json object {{'0': 'person', ...}}.")
    for key, value in data.items():
        if not key.lstrip("-").isdigit() or not isinstance(value, str):
            raise ValueError(
                f"label_map_file {label_map_file}: entry {key!r}: {value!r} must map an integer label (as a string "
                "key) to a category name."
            )
    return dict(data)


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

    Raises:
        FileNotFoundError: a file, `image_dir` or `label_map_file` does not exist.
        ValueError: an unknown `task`, a malformed `label_map_file`, `shards_per_file < 1`.
    """
    if task not in ("detection", "grounding"):
        raise ValueError(f"task must be 'detection' or 'grounding', got {task!r}.")
    files = _existing_files(files, "files")
    image_dir = _existing_dir(image_dir, "image_dir")
    name = _source_name(name)
    shards_per_file = _positive_int(shards_per_file, "shards_per_file")
    label_map = {} if label_map_file is None else _read_label_map(label_map_file)
    dataset = _jsonl_source(files, image_dir, name, "odvg", {"task": task, "label_map": label_map}, shards_per_file)
    vocabulary = None
    if task == "detection":
        if label_map:
            vocabulary = [label_map[key] for key in sorted(label_map, key=int)]
        else:
            vocabulary = _scan_odvg_categories(files)
    return GroundingSource(name=name, dataset=dataset, vocabulary=vocabulary)


def _scan_odvg_categories(files: list[str]) -> list[str]:
    labels: dict[str, int] = {}
    for path in files:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    instances = json.loads(line).get("detection", {}).get("instances", [])
                except (ValueError, AttributeError):
                    continue  # the reader counts the line as a parse error
                for instance in instances if isinstance(instances, list) else []:
                    if not isinstance(instance, dict) or not isinstance(instance.get("category"), str):
                        continue
                    label = instance.get("label")
                    labels.setdefault(instance["category"], int(label) if _is_integer(label) else 1 << 30)
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

    Raises:
        FileNotFoundError: a file or `image_dir` does not exist.
        ValueError: `score_threshold` outside `[0, 1]`, `shards_per_file < 1`.
    """
    if not _is_number(score_threshold) or not 0.0 <= score_threshold <= 1.0:
        raise ValueError(f"score_threshold must be a number in [0, 1], got {score_threshold!r}.")
    files = _existing_files(files, "files")
    image_dir = _existing_dir(image_dir, "image_dir")
    name = _source_name(name)
    shards_per_file = _positive_int(shards_per_file, "shards_per_file")
    dataset = _jsonl_source(files, image_dir, name, "pseudo_label", {"task": "grounding"}, shards_per_file)
    return GroundingSource(name=name, dataset=dataset, score_threshold=float(score_threshold))


# ----------------------------------------------------------------------------------------------- synthetic world


def _normalize_synthetic(record: dict, name: str, task: str, split_dir: str, granularity: str) -> dict:
    normalized = empty_record(f"{name}:{record['image_id']}", name, task)
    normalized["image"] = image_reference(split_dir, record["image"])
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
    """The synthetic shapes world written by `transformers_glip.data.synthetic_shapes.generate_synthetic_shapes`,
    streamed from its jsonl shards with `load_dataset("json", streaming=True)`.

    `task="grounding"` uses the captions and phrase spans. `task="detection"` uses one category per box, at the
    given `granularity`: `"combination"` (`"red circle"`; vocabulary: the split's colour-shape combinations),
    `"color"` (`"red"`) or `"shape"` (`"circle"`) -- like detection datasets with different label spaces, which
    GLIP mixes in pre-training.
    """
    from datasets import load_dataset

    if task not in ("detection", "grounding"):
        raise ValueError(f"task must be 'detection' or 'grounding', got {task!r}.")
    if granularity not in SYNTHETIC_LABEL_FIELDS:
        raise ValueError(f"granularity must be one of {sorted(SYNTHETIC_LABEL_FIELDS)}, got {granularity!r}.")
    data_dir = os.path.abspath(os.fspath(data_dir))
    if not os.path.isfile(os.path.join(data_dir, "metadata.json")):
        raise FileNotFoundError(
            f"{data_dir} holds no generated shapes world (no metadata.json); create one with "
            "`transformers_glip.data.synthetic_shapes.generate_synthetic_shapes`."
        )
    metadata = read_synthetic_metadata(data_dir)
    if split not in metadata["splits"]:
        raise ValueError(f"split must be one of {sorted(metadata['splits'])}, got {split!r}.")
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
