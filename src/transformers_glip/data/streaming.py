"""Training sources streamed with 🤗 datasets: image-caption pairs and 🤗 object-detection datasets.

Web-scale data is stored as sharded files or on the Hub, not as one json. Every function here opens its data with
`datasets.load_dataset(..., streaming=True)` and returns a [`GroundingSource`] whose records have the common schema
of `records.grounding_record_features`, so these sources mix with the json/jsonl readers in
[`GLIPTrainingStream`] (ratios, shuffling, per-process splitting, exact resume).

Where the data comes from (`data` argument, [`load_streaming_dataset`]):

| `data` | opened as |
|---|---|
| a `.parquet` file, a glob, a folder of them, or a list | `load_dataset("parquet", data_files=..., streaming=True)` |
| `.tar` shards (img2dataset / webdataset layout) | `load_dataset("webdataset", data_files=..., streaming=True)` |
| `.json` / `.jsonl` files | `load_dataset("json", data_files=..., streaming=True)` |
| anything else (e.g. `"user/cc3m-wds"`) | a Hub dataset id: `load_dataset(data, split=split, streaming=True)` |

One shard of the stream is one data file (`IterableDataset.num_shards`), so processes split whole files.

Formats:

* [`image_caption_source`]: image-caption pairs, e.g. parquet with an `image` column (the 🤗 `Image` feature's
  `{"bytes", "path"}`, raw bytes, or a path string) and a `caption` column, or webdataset tars in the img2dataset
  layout (`000000001.jpg` + `000000001.txt` and/or `000000001.json` with a `"caption"` key). Records are
  `task="grounding"` with the caption and NO boxes: the training transform skips them (counted as `no_boxes`);
  they are the input of the pseudo-labeller (`data.pseudo_labeling.pseudo_label_stream`), whose output shards are
  read back with `pseudo_label_source`.
* [`detection_dataset_source`]: the 🤗 object-detection schema of the HF detection tutorials (`image`, optional
  `image_id`/`width`/`height`, `objects: {"bbox": [[x, y, w, h], ...], "category": [...]}` where `category` is a
  `ClassLabel`); boxes in COCO `xywh` pixels (or `bbox_format="xyxy"`) become the inclusive xyxy of the common
  schema (`x2 = x + w - 1`), categories their `ClassLabel` names, the vocabulary all names in label order.

Sample ids are stable across runs and processes: `"<name>:<id column value>"` when the data has an id column,
`"<name>:<tar file>:<__key__>"` for webdataset samples, else `"<name>:<shard index>:<row in that shard>"`.
Images stay undecoded (`{"bytes", "path"}`); decoding errors are counted by the transform.
"""

from __future__ import annotations

import glob
import io
import math
import os
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from ..box_geometry_glip import xywh_to_xyxy
from .records import GroundingSource, empty_record, grounding_record_features

__all__ = [
    "DATA_FILE_BUILDERS",
    "detection_dataset_source",
    "image_caption_source",
    "load_streaming_dataset",
]

# File name ending -> 🤗 datasets packaged builder.
DATA_FILE_BUILDERS = {".parquet": "parquet", ".tar": "webdataset", ".json": "json", ".jsonl": "json"}

# Column names tried, in order, when the caller does not name the columns.
IMAGE_COLUMNS = ("image", "jpg", "jpeg", "png", "webp", "img", "image_path", "file_name", "filename")
CAPTION_COLUMNS = ("caption", "txt", "text", "sentence", "alt_text")
ID_COLUMNS = ("image_id", "id", "key")
# Exceptions that mean "this record is malformed" (stored in its `error` field and counted by the transform).
RECORD_ERRORS = (ValueError, TypeError, KeyError, AttributeError, IndexError)


def _data_files(data: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str] | None:
    """The sorted local files `data` names (a file, a folder, a glob or a list), or `None` for a Hub id."""
    if isinstance(data, (list, tuple)):
        if not data:
            raise ValueError("`data` is an empty list of files; pass at least one data file.")
        files = [os.fspath(path) for path in data]
        missing = [path for path in files if not os.path.isfile(path)]
        if missing:
            raise ValueError(f"`data` names files that do not exist: {missing[:3]}.")
        return files
    path = os.fspath(data)
    if os.path.isfile(path):
        return [path]
    if os.path.isdir(path):
        files = sorted(
            os.path.join(root, name)
            for root, _, names in os.walk(path)
            for name in names
            if os.path.splitext(name)[1].lower() in DATA_FILE_BUILDERS
        )
        if not files:
            raise ValueError(f"The folder {path!r} holds no {'/'.join(sorted(DATA_FILE_BUILDERS))} data files.")
        return files
    if glob.has_magic(path):
        files = sorted(glob.glob(path, recursive=True))
        if not files:
            raise ValueError(f"The pattern {path!r} matches no files.")
        return files
    looks_local = path.startswith((".", "/", "~")) or path.count("/") > 1 or os.sep != "/" and os.sep in path
    if looks_local or os.path.splitext(path)[1].lower() in DATA_FILE_BUILDERS:
        raise ValueError(f"{path!r} is neither an existing file or folder nor a Hub dataset id ('owner/name').")
    return None  # a Hub dataset id


def load_streaming_dataset(
    data: str | os.PathLike | Sequence[str | os.PathLike],
    builder: str | None = None,
    split: str = "train",
    **load_dataset_kwargs: Any,
):
    """Open local data files or a Hub dataset id as a streaming 🤗 `datasets.IterableDataset`.

    Args:
        data: A data file, a folder (all `.parquet`/`.tar`/`.json`/`.jsonl` files under it), a glob, a list of
            files, or a Hub dataset id.
        builder: The packaged builder (`"parquet"`, `"webdataset"`, `"json"`, ...); inferred from the file
            endings for local files (they must agree). Ignored for Hub ids (the Hub picks it).
        split: The split to stream (local files are all put in this split).
        load_dataset_kwargs: Passed to `datasets.load_dataset` (e.g. `revision`, `name`, `token`).

    Returns:
        `datasets.IterableDataset`; `num_shards` is the number of data files.
    """
    from datasets import load_dataset

    files = _data_files(data)
    if files is None:
        return load_dataset(os.fspath(data), split=split, streaming=True, **load_dataset_kwargs)
    if builder is None:
        builders = {DATA_FILE_BUILDERS.get(os.path.splitext(path)[1].lower()) for path in files}
        if None in builders:
            unknown = [path for path in files if os.path.splitext(path)[1].lower() not in DATA_FILE_BUILDERS]
            raise ValueError(
                f"Cannot tell the format of {unknown[:3]}; pass `builder` (one of the 🤗 datasets packaged builders, "
                f"e.g. {sorted(set(DATA_FILE_BUILDERS.values()))})."
            )
        if len(builders) > 1:
            raise ValueError(f"`data` mixes formats {sorted(builders)}; make one source per format.")
        builder = builders.pop()
    return load_dataset(builder, data_files={split: files}, split=split, streaming=True, **load_dataset_kwargs)


def _image_reference(value: Any, image_dir: str | None) -> dict:
    """Any stored form of an image (🤗 `Image` dict, bytes, path, PIL image) -> undecoded `{"bytes", "path"}`."""
    if isinstance(value, Image.Image):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return {"bytes": buffer.getvalue(), "path": None}
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": bytes(value), "path": None}
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
    elif isinstance(value, (str, os.PathLike)):
        data, path = None, os.fspath(value)
    else:
        raise TypeError(f"unsupported image value {type(value).__name__}")
    if not data and path and image_dir is not None and not os.path.isabs(path):
        path = os.path.join(image_dir, path)
    if not data and not path:
        raise ValueError("image without bytes or path")
    return {"bytes": data or None, "path": path or None}


def _sample_id(example: dict, name: str, id_column: str | None, shard_index: int, row: int) -> str:
    if id_column is not None and example.get(id_column) is not None:
        return f"{name}:{example[id_column]}"
    if example.get("__key__") is not None:  # webdataset: tar file + key inside it
        return f"{name}:{os.path.basename(str(example.get('__url__', shard_index)))}:{example['__key__']}"
    return f"{name}:{shard_index}:{row}"


def _image_size(example: dict) -> tuple[int, int]:
    width, height = example.get("width"), example.get("height")
    if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
        return width, height
    return -1, -1


def _caption_of(example: dict, caption_column: str) -> str:
    value = example.get(caption_column)
    if isinstance(value, dict):  # webdataset `.json` sidecar (img2dataset writes the caption there too)
        value = value.get("caption")
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if not isinstance(value, str):
        raise TypeError(f"caption column {caption_column!r} holds {type(value).__name__}, not text")
    return value.strip()


def _caption_record(
    example, row, shard_index, name, image_column, caption_column, id_column, image_dir, size_columns
) -> dict:
    record = empty_record(_sample_id(example, name, id_column, shard_index, row), name, "grounding")
    try:
        record["image"] = _image_reference(example.get(image_column), image_dir)
        record["caption"] = _caption_of(example, caption_column)
        if size_columns:
            record["width"], record["height"] = _image_size(example)
    except RECORD_ERRORS as error:
        record["error"] = f"parse_error: {type(error).__name__}: {error}"
    return record


def _box_xyxy(values, bbox_format: str) -> list[float]:
    """One box as inclusive xyxy, or four NaNs when malformed (the transform counts it as `invalid_box`)."""
    try:
        numbers = [float(value) for value in values]
    except (TypeError, ValueError):
        return [math.nan] * 4
    if len(numbers) != 4:
        return [math.nan] * 4
    if bbox_format == "xywh":
        return xywh_to_xyxy(torch.tensor(numbers, dtype=torch.float64)).tolist()
    return numbers


def _object_lists(objects: Any) -> tuple[list, list]:
    """`objects` as `{"bbox": [...], "category": [...]}` (dict of lists) or `[{"bbox", "category"}, ...]`."""
    if isinstance(objects, dict):
        return list(objects.get("bbox") or []), list(objects.get("category") or [])
    if isinstance(objects, list):
        return [item["bbox"] for item in objects], [item["category"] for item in objects]
    raise TypeError(f"objects must be a dict of lists or a list of dicts, got {type(objects).__name__}")


def _detection_record(
    example, row, shard_index, name, image_column, objects_column, id_column, image_dir, vocabulary, bbox_format
) -> dict:
    record = empty_record(_sample_id(example, name, id_column, shard_index, row), name, "detection")
    try:
        record["image"] = _image_reference(example.get(image_column), image_dir)
        record["width"], record["height"] = _image_size(example)
        boxes, categories = _object_lists(example.get(objects_column))
        if len(boxes) != len(categories):
            raise ValueError("objects need one category per bbox")
        for box, category in zip(boxes, categories):
            record["boxes"].append(_box_xyxy(box, bbox_format))
            if isinstance(category, str):
                label = category
            elif isinstance(category, int) and 0 <= category < len(vocabulary):
                label = vocabulary[category]
            else:
                label = ""  # unknown category id: the transform skips and counts the record
            record["labels"].append(label)
            record["scores"].append(1.0)
    except RECORD_ERRORS as error:
        record["error"] = f"parse_error: {type(error).__name__}: {error}"
    return record


def _to_records(raw, convert, fn_kwargs: dict):
    """Map every shard of `raw` to common-schema records with its shard index and the row within the shard (stable
    ids: an `IterableDataset` counts `with_indices` from the start of whatever it iterates, so each shard is mapped
    on its own), then concatenate the shards again (still one shard each, for per-process splitting)."""
    from datasets import concatenate_datasets

    features = grounding_record_features()
    columns = list(raw.column_names or [])
    parts = [
        raw.shard(num_shards=raw.num_shards, index=shard_index).map(
            convert,
            with_indices=True,
            fn_kwargs={"shard_index": shard_index, **fn_kwargs},
            remove_columns=columns,
            features=features,
        )
        for shard_index in range(raw.num_shards)
    ]
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


def _pick_column(columns: list[str], requested: str | None, candidates: Sequence[str], role: str) -> str:
    if requested is not None:
        if requested not in columns:
            raise ValueError(f"`{role}_column` = {requested!r} is not a column of the data (columns: {columns}).")
        return requested
    for candidate in candidates:
        if candidate in columns:
            return candidate
    raise ValueError(
        f"Found no {role} column among {columns} (tried {list(candidates)}); pass `{role}_column` explicitly."
    )


def _undecoded(raw, column: str):
    """Keep 🤗 `Image` columns as `{"bytes", "path"}`: decoding happens (and fails, counted) in the transform."""
    from datasets import Image as ImageFeature

    features = raw.features or {}
    if isinstance(features.get(column), ImageFeature) and features[column].decode:
        return raw.cast_column(column, ImageFeature(decode=False))
    return raw


def _columns_of(raw) -> list[str]:
    columns = raw.column_names
    if columns is None:  # features unknown until read: look at the first example
        columns = list(next(iter(raw.take(1)), {}).keys())
    return list(columns)


def image_caption_source(
    data: str | os.PathLike | Sequence[str | os.PathLike],
    name: str = "captions",
    builder: str | None = None,
    split: str = "train",
    image_column: str | None = None,
    caption_column: str | None = None,
    id_column: str | None = None,
    image_dir: str | os.PathLike | None = None,
    **load_dataset_kwargs: Any,
) -> GroundingSource:
    """Image-caption pairs (parquet shards, webdataset tars, json lines or a Hub id), streamed, without boxes.

    Args:
        data: See [`load_streaming_dataset`].
        name: Source name (records' `source`, sample id prefix, mixing-ratio key).
        builder, split, load_dataset_kwargs: See [`load_streaming_dataset`].
        image_column: Column of the image (🤗 `Image` dict, bytes or path); default: the first of `image`, `jpg`,
            `jpeg`, `png`, `webp`, `img`, `image_path`, `file_name`, `filename` present.
        caption_column: Column of the caption; default: the first of `caption`, `txt`, `text`, `sentence`,
            `alt_text` present, else a webdataset `json` column with a `"caption"` key.
        id_column: Column with a unique id per image (default: `image_id`, `id` or `key` when present; else the
            webdataset key or the row position in its shard).
        image_dir: Folder that relative image paths are relative to.

    Returns:
        [`GroundingSource`] with `task="grounding"` records holding the image and the caption, no boxes (see the
        module docstring).
    """
    raw = load_streaming_dataset(data, builder=builder, split=split, **load_dataset_kwargs)
    columns = _columns_of(raw)
    image_column = _pick_column(columns, image_column, IMAGE_COLUMNS, "image")
    json_fallback = ("json",) if "json" in columns else ()
    caption_column = _pick_column(columns, caption_column, CAPTION_COLUMNS + json_fallback, "caption")
    if id_column is None:
        id_column = next((column for column in ID_COLUMNS if column in columns), None)
    elif id_column not in columns:
        raise ValueError(f"`id_column` = {id_column!r} is not a column of the data (columns: {columns}).")
    raw = _undecoded(raw, image_column)
    dataset = _to_records(
        raw,
        _caption_record,
        {
            "name": name,
            "image_column": image_column,
            "caption_column": caption_column,
            "id_column": id_column,
            "image_dir": None if image_dir is None else os.fspath(image_dir),
            # img2dataset's json `width`/`height` are of the resized image; only trust top-level size columns.
            "size_columns": "width" in columns and "height" in columns,
        },
    )
    return GroundingSource(name=name, dataset=dataset)


def _class_label_names(objects_feature: Any) -> list[str] | None:
    """`ClassLabel` names of the `category` feature inside `objects` (dict of lists or list of dicts), if any."""
    from datasets import ClassLabel

    category = None
    if isinstance(objects_feature, dict):
        category = objects_feature.get("category")
    elif hasattr(objects_feature, "feature") and isinstance(objects_feature.feature, dict):
        category = objects_feature.feature.get("category")
    while category is not None and not isinstance(category, ClassLabel) and hasattr(category, "feature"):
        category = category.feature  # List(ClassLabel) -> ClassLabel
    return list(category.names) if isinstance(category, ClassLabel) else None


def detection_dataset_source(
    data: str | os.PathLike | Sequence[str | os.PathLike],
    name: str = "hf_detection",
    builder: str | None = None,
    split: str = "train",
    categories: Sequence[str] | None = None,
    bbox_format: str = "xywh",
    image_column: str = "image",
    objects_column: str = "objects",
    id_column: str | None = None,
    image_dir: str | os.PathLike | None = None,
    **load_dataset_kwargs: Any,
) -> GroundingSource:
    """A detection dataset in the 🤗 object-detection schema (e.g. `cppe-5`, the HF detection tutorials), streamed.

    Args:
        data: See [`load_streaming_dataset`].
        name: Source name.
        categories: Category names in label order. Default: the `ClassLabel` names of `objects.category`; needed
            when categories are stored as plain ints, or as strings and you want a fixed vocabulary (with strings and
            no list, the data is scanned once for the names).
        bbox_format: `"xywh"` (COCO, absolute pixels: what the 🤗 tutorials use) or `"xyxy"` (absolute pixels).
        image_column, objects_column: Column names (`objects` holds `bbox` and `category`, as a dict of lists or
            a list of dicts).
        id_column: Unique id column (default `image_id` / `id` when present).
        image_dir, builder, split, load_dataset_kwargs: See [`image_caption_source`].

    Returns:
        [`GroundingSource`] with `task="detection"` records and the category vocabulary.
    """
    if bbox_format not in ("xywh", "xyxy"):
        raise ValueError(f"`bbox_format` must be 'xywh' (COCO) or 'xyxy', got {bbox_format!r}.")
    raw = load_streaming_dataset(data, builder=builder, split=split, **load_dataset_kwargs)
    columns = _columns_of(raw)
    for role, column in (("image", image_column), ("objects", objects_column)):
        if column not in columns:
            raise ValueError(f"`{role}_column` = {column!r} is not a column of the data (columns: {columns}).")
    if id_column is None:
        id_column = next((column for column in ID_COLUMNS[:2] if column in columns), None)
    elif id_column not in columns:
        raise ValueError(f"`id_column` = {id_column!r} is not a column of the data (columns: {columns}).")
    vocabulary = list(categories) if categories is not None else None
    if vocabulary is None:
        vocabulary = _class_label_names((raw.features or {}).get(objects_column))
    if vocabulary is None:
        vocabulary = _scan_string_categories(raw, objects_column)
    raw = _undecoded(raw, image_column)
    dataset = _to_records(
        raw,
        _detection_record,
        {
            "name": name,
            "image_column": image_column,
            "objects_column": objects_column,
            "id_column": id_column,
            "image_dir": None if image_dir is None else os.fspath(image_dir),
            "vocabulary": vocabulary,
            "bbox_format": bbox_format,
        },
    )
    return GroundingSource(name=name, dataset=dataset, vocabulary=vocabulary)


def _scan_string_categories(raw, objects_column: str) -> list[str]:
    """Category names found in the data when they are stored as strings (one pass over the objects, no images)."""
    names: dict[str, None] = {}
    for example in raw.select_columns([objects_column]):
        try:
            _, categories = _object_lists(example[objects_column])
        except RECORD_ERRORS:
            continue
        for category in categories:
            if not isinstance(category, str):
                raise ValueError(
                    f"`{objects_column}.category` holds {type(category).__name__} ids without ClassLabel names; pass "
                    "`categories` (the names in label order)."
                )
            names.setdefault(category, None)
    return sorted(names)
