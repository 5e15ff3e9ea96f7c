"""The common record schema every training-data reader produces, and the reasons a record or a box is left out.

| field | meaning |
|---|---|
| `sample_id` | stable, unique id (`"<source>:<id or byte offset>"`) |
| `source`, `task` | source name; `"detection"` (category per box) or `"grounding"` (caption + spans per box) |
| `image` | `{"bytes", "path"}`, not decoded (the transform decodes, counting failures); a file or `http(s)://` URL |
| `width`, `height` | annotated image size (`-1` when the format has none); checked against the decoded image |
| `boxes` | xyxy in original image pixels, inclusive "+1" convention (COCO `xywh` -> `x2 = x + w - 1`) |
| `labels` | detection: category name per box |
| `caption`, `tokens_positive` | grounding: the caption and per box its `[begin, end)` character spans |
| `scores` | per box confidence (1.0 for human labels; pseudo labels keep the teacher's score) |
| `error` | `"<reason>: <detail>"` when the reader could not use the record (a [`RECORD_SKIP_REASONS`] entry) |
"""

from __future__ import annotations

import http.client
import io
import os
import urllib.request
from dataclasses import dataclass

from PIL import Image

__all__ = [
    "IMAGE_ERRORS",
    "load_record_image",
    "BOX_DROP_REASONS",
    "GroundingSource",
    "RECORD_SKIP_REASONS",
    "empty_record",
    "grounding_record_features",
    "image_reference",
    "is_url",
    "record_error",
]

# Reasons a whole record is skipped (a corrupt or unusable record) ...
RECORD_SKIP_REASONS = (
    "parse_error",  # not a json object, a required key missing
    "invalid_field",  # a field of the wrong type, e.g. `"width": "64"`, `"category_id": "x"`, a span `["a", 3]`
    "unreadable_image",  # missing / corrupt file, an http error or timeout of an image URL
    "image_size_mismatch",
    "invalid_box",  # not 4 numbers (`"bbox": ["a", 1, 2, 3]`), or not finite
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


def is_url(path: str) -> bool:
    """Whether an image reference is an `http://` or `https://` URL (fetched by the transform, with a timeout)."""
    return path.startswith(("http://", "https://"))


def image_reference(image_dir: str | None, file_name: str) -> dict:
    """The `image` field of a record: `file_name` under `image_dir` (URLs and absolute paths are kept as given)."""
    if image_dir is None or is_url(file_name) or os.path.isabs(file_name):
        return {"bytes": None, "path": file_name}
    return {"bytes": None, "path": os.path.join(image_dir, file_name)}


def empty_record(sample_id: str, source: str, task: str) -> dict:
    """A record of the common schema with no image, boxes or caption (readers fill it in)."""
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


def record_error(record: dict, reason: str, detail: str) -> dict:
    """Mark `record` as unusable: its `error` becomes `"<reason>: <detail>"` (the transform skips and counts it)."""
    record["error"] = f"{reason}: {detail}"
    return record


# What opening a record's image can raise: http errors (404, ...), refused connections, timeouts and missing files
# (`OSError`), a cut-off response (`HTTPException`), a malformed URL or bytes that are no image.
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, http.client.HTTPException, Image.DecompressionBombError)


def load_record_image(record: dict, timeout: float | None = None) -> tuple[Image.Image, bytes | None]:
    """Open the image of a record: its `bytes`, else its `path`, a file or an http(s) URL fetched within `timeout`
    seconds. Returns the loaded (not yet converted) image and the raw bytes (None when read from a file).

    Raises:
        One of `IMAGE_ERRORS` (e.g. `urllib.error.HTTPError` "HTTP Error 404", a timeout, a missing file, bytes that
        are no image); the callers count the record as `unreadable_image`.
    """
    reference = record.get("image") or {}
    data, path = reference.get("bytes"), reference.get("path") or ""
    if not data and is_url(path):
        with urllib.request.urlopen(path, timeout=timeout) as response:
            data = response.read()
    if data:
        image = Image.open(io.BytesIO(data))
    elif path:
        image = Image.open(path)
    else:
        raise OSError("the record has no image bytes or path")
    image.load()
    return image, data
