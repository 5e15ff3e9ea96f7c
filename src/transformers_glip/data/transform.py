"""The training transform: validate a common-schema record, turn detection labels into a grounding prompt, augment.

[`GLIPTrainingTransform`] applies, per record:

1. validation: a reader error (`record["error"]`), unreadable image (missing / corrupt file, http error or timeout of
   an image URL), annotated size != decoded size, malformed / outside box, span outside the caption, unknown
   category -> the record is skipped and counted in a `SkippedRecordCounter` (`transformers_glip.data.stream`); an
   empty box (official `clip_to_image(remove_empty=True)`) is dropped and counted, the image kept;
2. detection records become grounding prompts with the official negative-class sampling
   ([`detection_to_grounding`], spec §3.7);
3. multi-scale resize (short side drawn from the image processor's `train_min_sizes`, long side <= `max_size`) and
   horizontal flip with the "+1" box convention (captions unchanged, spec §2.3), BGR x 255 normalisation -- the
   pixels go through `GLIPImageProcessor.preprocess`, so training and inference share one resize/normalise path;
   the boxes follow with `transformers_glip.box_geometry_glip`;
4. tokenisation to `max_length` and binary positive maps (`prompts_glip.create_positive_map`).

Per-sample randomness (scale, flip, negatives) comes from the `random.Random` the stream passes in, so a resumed run
draws exactly what an uninterrupted one does.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from PIL import Image

from ..box_geometry_glip import LEGACY_PIXEL_OFFSET, flip_boxes, nonempty_box_mask, resize_boxes
from ..image_processing_glip import GLIPImageProcessor
from ..prompts_glip import DETECTION_PROMPT_SEPARATOR, clean_label_name, create_positive_map
from .records import IMAGE_ERRORS, RECORD_SKIP_REASONS, GroundingSource, load_record_image

if TYPE_CHECKING:
    from .stream import SkippedRecordCounter

__all__ = ["BACKGROUND_CATEGORY", "GLIPTrainingTransform", "detection_to_grounding"]

# `__background__` is index 0 of the official `ind_to_class`; it may be sampled as a negative (spec §3.7).
BACKGROUND_CATEGORY = "__background__"


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


class _RecordError(Exception):
    """A record is corrupt/unusable; `reason` is one of `RECORD_SKIP_REASONS`, `detail` says what was wrong."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


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
        image_timeout: Seconds to wait for an `http(s)://` image (per network operation); an http error or a
            timeout skips the record as `unreadable_image`.

    Raises:
        TypeError / ValueError: an argument of the wrong type or out of range (checked once, here).
    """

    tokenizer: object
    image_processor: GLIPImageProcessor = field(default_factory=GLIPImageProcessor)
    max_length: int = 256
    num_negatives: int = 85
    full_negative_probability: float = 0.5
    include_background_negative: bool = True
    separator: str = DETECTION_PROMPT_SEPARATOR
    box_tolerance: float = 1.0
    image_timeout: float = 10.0
    token_counts: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        if not getattr(self.tokenizer, "is_fast", False):
            raise TypeError(
                f"tokenizer must be a fast tokenizer (character offsets build the positive map), got "
                f"{type(self.tokenizer).__name__}; load it with AutoTokenizer.from_pretrained(...)."
            )
        if not isinstance(self.image_processor, GLIPImageProcessor):
            raise TypeError(
                f"image_processor must be a GLIPImageProcessor, got {type(self.image_processor).__name__}."
            )
        checks = (
            ("max_length", self.max_length, isinstance(self.max_length, int) and self.max_length >= 3, ">= 3"),
            (
                "num_negatives",
                self.num_negatives,
                isinstance(self.num_negatives, int) and self.num_negatives >= 0,
                ">= 0",
            ),
            (
                "full_negative_probability",
                self.full_negative_probability,
                _is_real(self.full_negative_probability) and 0.0 <= self.full_negative_probability <= 1.0,
                "in [0, 1]",
            ),
            ("box_tolerance", self.box_tolerance, _is_real(self.box_tolerance) and self.box_tolerance >= 0, ">= 0"),
            ("image_timeout", self.image_timeout, _is_real(self.image_timeout) and self.image_timeout > 0, "> 0"),
        )
        for name, value, valid, expected in checks:
            if isinstance(value, bool) or not valid:
                raise ValueError(f"{name} must be {expected}, got {value!r}.")
        if not isinstance(self.separator, str) or not self.separator:
            raise ValueError(f"separator must be a non-empty string, got {self.separator!r}.")

    def token_count(self, text: str) -> int:
        """Number of word pieces of `text` without special tokens (cached per text)."""
        if text not in self.token_counts:
            self.token_counts[text] = len(self.tokenizer.tokenize(text))
        return self.token_counts[text]

    def __call__(
        self, record: dict, source: GroundingSource, rng: random.Random, counter: SkippedRecordCounter
    ) -> dict | None:
        """Returns the sample (see `GLIPTrainingCollator`) or `None` when the record is skipped (counted)."""
        counter.records_seen += 1
        try:
            return self._transform(record, source, rng, counter)
        except _RecordError as error:
            counter.skip(error.reason, record.get("sample_id", "?"), error.detail)
            return None

    # -- steps
    def _transform(self, record, source, rng, counter) -> dict:
        if record.get("error"):
            reason, _, detail = record["error"].partition(": ")
            raise _RecordError(reason if reason in RECORD_SKIP_REASONS else "parse_error", detail)
        image = self._decode(record)
        width, height = image.size
        if (record["width"] > 0 and record["width"] != width) or (record["height"] > 0 and record["height"] != height):
            raise _RecordError(
                "image_size_mismatch", f"annotated {record['width']}x{record['height']}, decoded {width}x{height}"
            )
        boxes = self._validate_boxes(record["boxes"], width, height)
        scores = list(record.get("scores") or [1.0] * len(boxes))
        if len(scores) != len(boxes):
            raise _RecordError("invalid_box", f"{len(scores)} scores for {len(boxes)} boxes")
        # Official `clip_to_image(remove_empty=True)`: an empty box (x2 <= x1 or y2 <= y1, e.g. a COCO box under one
        # pixel wide) is dropped and counted; the image and its other boxes are kept.
        nonempty = nonempty_box_mask(boxes)
        counter.drop_boxes("empty_box", int((~nonempty).sum()))
        nonempty_indices = torch.nonzero(nonempty).flatten().tolist()

        if record["task"] == "detection":
            vocabulary = source.vocabulary or []
            labels = list(record["labels"])
            if len(labels) != len(boxes):
                raise _RecordError("unknown_category", f"{len(labels)} labels for {len(boxes)} boxes")
            unknown = sorted({label for label in labels if label not in vocabulary})
            if unknown:
                raise _RecordError("unknown_category", f"{unknown} not in the source's vocabulary")
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
                raise _RecordError("span_outside_caption", f"{len(spans)} span lists for {len(boxes)} boxes")
            for entry in spans:
                if not entry or any(not 0 <= begin < end <= len(caption) for begin, end in entry):
                    raise _RecordError("span_outside_caption", f"span {entry} in a caption of {len(caption)} chars")
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

    def _decode(self, record: dict) -> Image.Image:
        try:
            image, _ = load_record_image(record, timeout=self.image_timeout)
        except IMAGE_ERRORS as error:  # e.g. "HTTP Error 404: Not Found", "timed out", a missing file
            path = (record.get("image") or {}).get("path") or "image bytes"
            raise _RecordError("unreadable_image", f"{path}: {error}") from error
        return image.convert("RGB")

    def _validate_boxes(self, raw_boxes, width: int, height: int) -> torch.Tensor:
        if len(raw_boxes) == 0:
            return torch.zeros((0, 4), dtype=torch.float32)
        if any(len(box) != 4 for box in raw_boxes):
            raise _RecordError("invalid_box", "a box without 4 numbers")
        boxes = torch.tensor([[float(value) for value in box] for box in raw_boxes], dtype=torch.float32)
        if not bool(torch.isfinite(boxes).all()):
            raise _RecordError("invalid_box", "a box with a non-finite number")
        tolerance = self.box_tolerance
        max_x, max_y = width - LEGACY_PIXEL_OFFSET, height - LEGACY_PIXEL_OFFSET
        inside = (
            (boxes[:, 0] >= -tolerance)
            & (boxes[:, 1] >= -tolerance)
            & (boxes[:, 2] <= max_x + tolerance)
            & (boxes[:, 3] <= max_y + tolerance)
        )
        if not bool(inside.all()):
            outside = boxes[~inside][0].tolist()
            raise _RecordError("box_outside_image", f"box {outside} in a {width}x{height} image")
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


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
