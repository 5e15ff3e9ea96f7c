"""High-level GLIP detection: label lists in, detections in original-image pixels out.

[`detect`] runs [`GLIPForGrounding`] on one or many images, each with its own label list, the way the official
detection evaluation prompts the model (`engine/inference.py::create_queries_and_maps`): ALL labels of an image in
ONE prompt (cleaned names joined by `". "`), official post-processing (`ATSSPostProcessor`, spec §8) with the
model config's values. It adds what the official code leaves to the user:

- **Large vocabularies.** Labels that do not fit in one prompt (`config.max_text_length` tokens, 256; LVIS has 1203
  names) are split into chunks of `processor.chunk_size` names (40, official `TEST.CHUNKED_EVALUATION`). The chunks
  of one image run as ONE forward: the image goes in once and the model computes the Swin backbone and the FPN once,
  sharing them across the chunk prompts (see `GLIPModel.forward`). Each chunk is post-processed officially, then the
  chunks are merged with [`merge_chunk_detections`]: by default (`merge_mode="cross_chunk_nms"`) a detection is
  dropped when a higher-scoring detection of ANOTHER chunk overlaps it (+1 IoU > `config.nms_threshold`); the official
  behaviour, plain concatenation, is `merge_mode="concatenate"`. One chunk gives exactly the single-prompt results.
- **Batching with parity.** The official model has no padding masks: the Swin windows, the FPN, the DyConv
  neighbourhoods and the fusion attention all see the zero padding that `to_image_list` adds at the bottom/right, so
  an image padded to a larger batch size gets different outputs than the same image alone. [`detect`] therefore
  groups images by their padded network-input size (what [`GLIPImageProcessor`] pads each image to on its own:
  resized size rounded up to `size_divisibility`) and batches only images of the same padded size, which then see
  exactly the padding they see alone: batched results equal single-image results (up to float rounding of batched
  kernels, ~1e-6). Text needs no such care: the text padding is masked. An image whose labels need several chunks
  runs alone (its chunks are the batch).
- **Short prompts run faster.** The label chunks are encoded padded to `max_text_length` (256) like the official
  code; because the text padding is masked, [`detect`] drops the padding columns beyond the longest prompt of each
  forward (`trim_text_padding=True`). The results equal the padded run up to float rounding (~1e-6); GLIP-T with a
  10-label prompt at 800x1333 runs about 25% faster on CPU (fewer text tokens in BERT, the fusion and the head).
- **Bounded memory for large vocabularies.** The chunks of one image run in forwards of at most
  `max_prompts_per_forward` prompts (4 by default; the head's activations grow with the prompts of a forward, the
  vision backbone is recomputed per forward, a small part of the cost). The results do not depend on it (up to float
  rounding of batched kernels).

**Fast path and official mode.** By default [`detect`] runs the fast path: trimmed text padding, sub-batched chunks
and the model's `config.fusion_implementation` (`"factorised"` by default) and
`config.deformable_conv_implementation` (`"gather"` by default). `official_mode=True` runs the exact official
computation instead, the one the parity tests pin: prompts padded to `max_text_length`, the fusion in the official
operation order and torchvision's deformable convolution (`fusion_implementation="official"`,
`deformable_conv_implementation="torchvision"` for the call, see [`official_computation`]) and each chunk in a
forward of its own,
one after another, as the official chunked evaluation. Both give the same detections up to float rounding.
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch

from .postprocessing_glip import (
    CHUNK_MERGE_MODES,
    DEFAULT_SCORE_THRESHOLD,
    check_score_threshold,
    find_non_finite_parameters,
    merge_chunk_detections,
)
from .processing_glip import GLIPProcessor
from .prompts_glip import validate_labels

__all__ = [
    "DEFAULT_MAX_PROMPTS_PER_FORWARD",
    "detect",
    "encode_detection_prompts",
    "official_computation",
    "validate_detection_arguments",
]

# Prompts (label chunks of one image) per forward on the fast path: the head's activations grow with them, while
# batching more than a few prompts gains nothing. Measured (GLIP-T, 1203 names = 31 chunks of 121 tokens, 480x800,
# 2 threads, `benchmarks/benchmark_glip_lvis.py --worker fast_path`): 66.7 s / 3006 MiB peak at 4 per forward,
# 70.0 s / 3329 MiB at 6, 72.8 s / 3846 MiB at 8 (with the official fusion, before factorising: 15.2 GiB at 31).
DEFAULT_MAX_PROMPTS_PER_FORWARD = 4


def _is_single_image(image: Any) -> bool:
    if isinstance(image, PIL.Image.Image):
        return True
    if isinstance(image, (np.ndarray, torch.Tensor)):
        return image.ndim in (2, 3)
    return False


def _normalize_requests(images: Any, labels: Any) -> tuple[list[Any], list[list[str]]]:
    """`images` (one image or a list) and `labels` (one list shared by every image, or one list per image) -> one
    image and one validated label list per request."""
    if _is_single_image(images):
        image_list = [images]
    elif isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError("`images` is empty; pass an image or a non-empty list of images.")
        image_list = list(images)
    else:
        raise TypeError(
            "`images` must be an image (PIL.Image.Image, numpy.ndarray, torch.Tensor) or a list of images, got "
            f"{type(images).__name__}."
        )
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence):
        raise TypeError(
            f"`labels` must be a list of label strings (shared by all images) or one such list per image, got "
            f"{type(labels).__name__}."
        )
    if len(labels) > 0 and all(isinstance(item, (list, tuple)) for item in labels):
        if len(labels) != len(image_list):
            raise ValueError(
                f"`labels` holds {len(labels)} label lists for {len(image_list)} images; pass one list per image "
                "(or a single list of strings shared by all images)."
            )
        label_lists = [validate_labels(item, f"labels[{index}]") for index, item in enumerate(labels)]
    else:
        label_lists = [validate_labels(labels, "labels")] * len(image_list)
    return image_list, label_lists


def encode_detection_prompts(
    processor: GLIPProcessor, labels: Sequence[str], chunk_size: int | None = None
) -> dict[str, Any]:
    """The prompt(s) of ONE image's label list: all labels in one prompt when they fit in `processor.max_length`
    tokens (`chunk_size=None`), else chunks of `processor.chunk_size` labels; an explicit `chunk_size` always
    chunks with that size.

    Returns:
        `dict` with `input_ids`, `token_type_ids`, `attention_mask` `(num_prompts, max_length)`, `positive_maps`
        (per prompt `(num_prompt_labels, max_length)`) and `chunk_label_indices` (per prompt, the global index of
        each of its labels).
    """
    if chunk_size is None:
        encoded = processor.encode_label_chunks(labels, chunk_size=max(len(labels), 1))
        if len(encoded["chunk_label_indices"]) > 1:  # they do not fit in one prompt
            encoded = processor.encode_label_chunks(labels)
    else:
        encoded = processor.encode_label_chunks(labels, chunk_size=chunk_size)
    chunk_label_indices = encoded["chunk_label_indices"]
    return {
        "input_ids": encoded["input_ids"],
        "token_type_ids": encoded["token_type_ids"],
        "attention_mask": encoded["attention_mask"],
        "positive_maps": [
            encoded["positive_map"][index, : len(indices)] for index, indices in enumerate(chunk_label_indices)
        ],
        "chunk_label_indices": chunk_label_indices,
    }


def validate_detection_arguments(
    threshold: Any,
    chunk_size: Any,
    batch_size: Any,
    merge_mode: Any,
    max_detections: Any,
    official_mode: Any = False,
    max_prompts_per_forward: Any = None,
) -> None:
    """Checks of the call arguments shared by [`detect`] and the pipeline (`merge_mode` None = the config's)."""
    check_score_threshold(threshold)
    if not isinstance(official_mode, bool):
        raise TypeError(
            f"`official_mode` must be True (the exact official computation) or False (the fast path), got "
            f"{official_mode!r}."
        )
    if max_prompts_per_forward is not None and (
        isinstance(max_prompts_per_forward, bool)
        or not isinstance(max_prompts_per_forward, int)
        or max_prompts_per_forward < 1
    ):
        raise ValueError(
            f"`max_prompts_per_forward` must be a positive int (or None: all chunks of an image in one forward), got "
            f"{max_prompts_per_forward!r}."
        )
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"`chunk_size` must be a positive int or None, got {chunk_size!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}.")
    if merge_mode is not None and merge_mode not in CHUNK_MERGE_MODES:
        raise ValueError(f"`merge_mode` must be one of {CHUNK_MERGE_MODES} or None, got {merge_mode!r}.")
    if max_detections is not None and (
        isinstance(max_detections, bool) or not isinstance(max_detections, int) or max_detections < 1
    ):
        raise ValueError(f"`max_detections` must be a positive int or None, got {max_detections!r}.")


def _resolve_target_sizes(target_sizes: Any, num_images: int) -> list[tuple[float, float]] | None:
    if target_sizes is None:
        return None
    if isinstance(target_sizes, torch.Tensor):
        if target_sizes.ndim != 2 or target_sizes.shape[-1] != 2:
            raise ValueError(
                f"`target_sizes` must have shape (num_images, 2) of (height, width), got {tuple(target_sizes.shape)}."
            )
        target_sizes = target_sizes.tolist()
    if isinstance(target_sizes, (str, bytes)) or not isinstance(target_sizes, Sequence):
        raise TypeError("`target_sizes` must be a tensor of shape (num_images, 2) or a list of (height, width) pairs.")
    if len(target_sizes) != num_images:
        raise ValueError(
            f"`target_sizes` has {len(target_sizes)} entries for {num_images} images; pass one (height, width) per "
            "image."
        )
    pairs = []
    for index, pair in enumerate(target_sizes):
        if (
            isinstance(pair, (str, bytes))
            or not isinstance(pair, Sequence)
            or len(pair) != 2
            or not all(
                isinstance(value, numbers.Real) and not isinstance(value, bool) and value >= 1 for value in pair
            )
        ):
            raise ValueError(f"`target_sizes[{index}]` = {pair!r} is not a (height, width) pair of numbers >= 1.")
        pairs.append((float(pair[0]), float(pair[1])))
    return pairs


def _plan_forwards(
    padded_sizes: list[tuple[int, int]], num_prompts: list[int], batch_size: int, max_prompts_per_forward: int | None
) -> list[tuple[list[int], slice | None]]:
    """The forwards to run, each `(image indices, prompt slice)`: images with one prompt are batched (at most
    `batch_size`) with images of the SAME padded size, in input order (slice `None`: every prompt of each image); the
    prompts (chunks) of an image with several run in forwards of their own, at most `max_prompts_per_forward` prompts
    each (`None`: all in one), slice = the prompts of that forward."""
    forwards: list[tuple[list[int], slice | None]] = []
    open_batches: dict[tuple[int, int], list[int]] = {}
    for index, (padded_size, prompts) in enumerate(zip(padded_sizes, num_prompts)):
        if prompts > 1:
            step = prompts if max_prompts_per_forward is None else max_prompts_per_forward
            forwards.extend(([index], slice(start, start + step)) for start in range(0, prompts, step))
            continue
        batch = open_batches.get(padded_size)
        if batch is None or len(batch) == batch_size:
            batch = []
            open_batches[padded_size] = batch
            forwards.append((batch, None))
        batch.append(index)
    return forwards


@contextlib.contextmanager
def official_computation(model) -> Iterator[None]:
    """Run `model` with the official computation inside the block: the fusion attention in the official operation
    order (`config.fusion_implementation = "official"`) and torchvision's deformable convolution
    (`config.deformable_conv_implementation = "torchvision"`), restoring the config's values afterwards (also on
    error)."""
    previous = model.config.fusion_implementation, model.config.deformable_conv_implementation
    model.config.fusion_implementation, model.config.deformable_conv_implementation = "official", "torchvision"
    try:
        yield
    finally:
        model.config.fusion_implementation, model.config.deformable_conv_implementation = previous


@torch.inference_mode()
def detect(
    model,
    processor: GLIPProcessor,
    images: Any,
    labels: Sequence[str] | Sequence[Sequence[str]],
    threshold: float | None = DEFAULT_SCORE_THRESHOLD,
    chunk_size: int | None = None,
    batch_size: int = 1,
    merge_mode: str | None = None,
    target_sizes: Any = None,
    max_detections: int | None = None,
    trim_text_padding: bool | None = None,
    official_mode: bool = False,
    max_prompts_per_forward: int | None = DEFAULT_MAX_PROMPTS_PER_FORWARD,
) -> list[dict[str, Any]]:
    """Detect the labels of each image with GLIP (official detection prompt and post-processing).

    Args:
        model ([`GLIPForGrounding`]): the model (its device and dtype are used; post-processing values from
            `model.config`: `pre_nms_score_threshold`, `pre_nms_top_n`, `nms_threshold`, `max_detections`).
        processor ([`GLIPProcessor`]): image processor + tokenizer (`max_length`, `chunk_size`).
        images: one image (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor`) or a list of images.
        labels (`list[str]` or `list[list[str]]`): the label names, shared by every image, or one list per image.
            Names go through the official `clean_name` (parentheses and underscores removed) in the prompt; the
            results name them as given.
        threshold (`float`, *optional*, defaults to 0.1): keep detections with `score > threshold` (`None`: keep
            the official top `config.max_detections` per prompt).
        chunk_size (`int`, *optional*): labels per prompt. By default all labels go in one prompt when they fit in
            `processor.max_length` tokens, else in chunks of `processor.chunk_size` (40); an explicit value always
            chunks.
        batch_size (`int`, *optional*, defaults to 1): at most this many images per forward; only images of the
            same padded size are batched together (see the module docstring), so results do not depend on it.
        merge_mode (`str`, *optional*): how the chunks of an image are merged (see [`merge_chunk_detections`]);
            defaults to `model.config.chunk_merge_mode` (`"cross_chunk_nms"`; `"concatenate"` is the official
            chunked evaluation). No effect with one chunk.
        target_sizes (*optional*): `(height, width)` per image of the frame to return the boxes in; defaults to
            each image's original size.
        max_detections (`int`, *optional*): cap on an image's merged detections (default: no cap beyond the
            official `config.max_detections` per prompt).
        trim_text_padding (`bool`, *optional*): run each forward with the prompts cut to the longest one's real
            tokens instead of `processor.max_length` (masked padding: same results up to float rounding, faster);
            `False` feeds the full official padding. Default: `True` on the fast path, `False` in official mode
            (`True` with `official_mode=True` raises).
        official_mode (`bool`, *optional*, defaults to `False`): run the exact official computation (the one the
            parity tests pin): prompts padded to `processor.max_length`, the fusion in the official operation order
            for this call, and each chunk in a forward of its own (`max_prompts_per_forward` is then 1). `False` is
            the fast path. Both give the same detections up to float rounding.
        max_prompts_per_forward (`int`, *optional*, defaults to 4): on the fast path, at most this many chunk
            prompts of one image per forward, which bounds the memory of large vocabularies (the image is encoded
            again for each forward); `None` runs all chunks of an image in one forward. Results do not depend on it
            (up to float rounding of batched kernels). Images with a single prompt are batched by `batch_size`.

    Returns:
        `list[dict]`, one per image in input order: `boxes` `(num_detections, 4)` xyxy float in original-image
        pixels (or `target_sizes`), `scores` `(num_detections,)`, `labels` `(num_detections,)` 0-based indices into
        the image's label list, `text_labels` (the label names); sorted by decreasing score.
    """
    validate_detection_arguments(
        threshold, chunk_size, batch_size, merge_mode, max_detections, official_mode, max_prompts_per_forward
    )
    if trim_text_padding is not None and not isinstance(trim_text_padding, bool):
        raise TypeError(f"`trim_text_padding` must be True, False or None, got {trim_text_padding!r}.")
    if official_mode and trim_text_padding:
        raise ValueError(
            "`trim_text_padding=True` contradicts `official_mode=True` (official mode feeds the full padding); drop "
            "one of them."
        )
    if trim_text_padding is None:
        trim_text_padding = not official_mode
    if official_mode:
        max_prompts_per_forward = 1  # the official chunked evaluation: one chunk after another
    image_list, label_lists = _normalize_requests(images, labels)
    target_size_list = _resolve_target_sizes(target_sizes, len(image_list))
    config = model.config
    merge_mode = config.chunk_merge_mode if merge_mode is None else merge_mode
    parameter = next(model.parameters())
    device, dtype = parameter.device, parameter.dtype

    image_features, prompts = [], []
    for index, (image, image_labels) in enumerate(zip(image_list, label_lists)):
        try:
            features = processor.image_processor(image)
        except (TypeError, ValueError) as error:
            name = "images" if len(image_list) == 1 else f"images[{index}]"
            raise type(error)(f"{name}: {error}") from error
        image_features.append(features)
        prompts.append(encode_detection_prompts(processor, image_labels, chunk_size))
    padded_sizes = [tuple(features["pixel_values"].shape[-2:]) for features in image_features]
    num_prompts = [len(prompt["chunk_label_indices"]) for prompt in prompts]

    results: list[dict[str, Any] | None] = [None] * len(image_list)
    chunk_results: dict[int, list[dict[str, Any]]] = {}  # per image, the post-processed results of its prompts
    fusion_context = official_computation(model) if official_mode else contextlib.nullcontext()
    with fusion_context:
        for indices, prompt_slice in _plan_forwards(padded_sizes, num_prompts, batch_size, max_prompts_per_forward):
            pixel_values = torch.cat([image_features[index]["pixel_values"] for index in indices])
            image_sizes = torch.cat([image_features[index]["image_sizes"] for index in indices])
            selection = slice(None) if prompt_slice is None else prompt_slice
            text = {
                key: torch.cat([prompts[index][key][selection] for index in indices]).to(device)
                for key in ("input_ids", "token_type_ids", "attention_mask")
            }  # each (num_prompts_of_forward, max_length)
            positive_maps = [
                positive_map for index in indices for positive_map in prompts[index]["positive_maps"][selection]
            ]
            length = int(text["attention_mask"].sum(dim=-1).max())
            if trim_text_padding and not text["attention_mask"][:, length:].any():  # (right padding: nothing cut)
                text = {key: value[:, :length] for key, value in text.items()}  # each (num_prompts_of_forward, length)
                positive_maps = [positive_map[:, :length] for positive_map in positive_maps]  # zero on padding
            outputs = model(
                pixel_values=pixel_values.to(device=device, dtype=dtype), image_sizes=image_sizes.to(device), **text
            )
            # One entry per prompt of this forward (several prompts only for a single chunked image).
            forward_prompts = [
                len(positive_maps) if prompt_slice is not None else num_prompts[index] for index in indices
            ]
            prompt_images = [index for index, count in zip(indices, forward_prompts) for _ in range(count)]
            if not bool(torch.isfinite(outputs.logits).all() and torch.isfinite(outputs.pred_boxes).all()):
                broken = find_non_finite_parameters(model)
                if broken:
                    raise ValueError(
                        f"The model weights hold NaN or infinity in {len(broken)} tensors (first: {broken[:3]}), so "
                        "every score is NaN and nothing can be detected. Reload or re-convert the checkpoint; after "
                        "training, lower the learning rate or use float32."
                    )
            per_prompt = processor.post_process_grounded_object_detection(
                outputs,
                threshold=threshold,
                target_sizes=[
                    target_size_list[index]
                    if target_size_list is not None
                    else tuple(image_features[index]["original_sizes"][0].tolist())
                    for index in prompt_images
                ],
                positive_map=positive_maps,
                image_sizes=[tuple(image_features[index]["image_sizes"][0].tolist()) for index in prompt_images],
                config=config,
            )
            start = 0
            for index, count in zip(indices, forward_prompts):
                chunk_results.setdefault(index, []).extend(per_prompt[start : start + count])
                start += count
                if len(chunk_results[index]) < num_prompts[index]:
                    continue  # more forwards of this image's chunks follow
                merged = merge_chunk_detections(
                    chunk_results.pop(index),
                    prompts[index]["chunk_label_indices"],
                    mode=merge_mode,
                    # "concatenate" is the official plain concatenation (no NMS across chunks).
                    nms_threshold=config.nms_threshold if merge_mode == "cross_chunk_nms" else None,
                    max_detections=max_detections,
                )
                merged["text_labels"] = [label_lists[index][label] for label in merged["labels"].tolist()]
                results[index] = merged
    return results
