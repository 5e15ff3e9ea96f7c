"""Official GLIP inference post-processing as pure tensor functions.

Reproduces `maskrcnn_benchmark/modeling/rpn/inference.py::ATSSPostProcessor` (+ `convert_grounding_to_od_logits`,
`structures/boxlist_ops.py::boxlist_ml_nms`, `csrc/cuda/ml_nms.cu`, `BoxList.clip_to_image/resize`), spec §8:

1. `probabilities = sigmoid(token_logits)`; the score of label `k` is the MEAN of the probabilities over the label's
   tokens (a product with the binary positive map divided by the token counts);
2. per level: candidates are the (anchor, label) pairs whose score is above `pre_nms_threshold` (0.05, BEFORE the
   centerness), at most `pre_nms_top_n` (1000) of them ranked by `score * sigmoid(centerness)`;
3. final score = `sqrt(score * sigmoid(centerness))`; boxes clipped to `[0, width - 1] x [0, height - 1]` of the
   unpadded resized image;
4. all levels concatenated, class-aware NMS (IoU 0.6 with the legacy "+1" areas), then at most `max_detections`
   (100) kept via `kthvalue` (ties at the threshold are all kept);
5. optionally rescaled to the original image (x by `original_width / resized_width`, y likewise).

Frames: "network-input pixels" = the resized image before padding (padding is bottom/right, so the padded and the
unpadded frames share their origin). Labels returned here are 0-based indices into the rows of the positive map
(the official code uses `row + 1`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou

from .box_geometry_glip import LEGACY_PIXEL_OFFSET, class_aware_nms, clip_boxes_to_image, resize_boxes
from .configuration_glip import GLIPConfig

__all__ = [
    "CHUNK_MERGE_MODES",
    "DEFAULT_SCORE_THRESHOLD",
    "as_size_pairs",
    "check_finite_outputs",
    "check_score_threshold",
    "find_non_finite_parameters",
    "output_field",
    "post_processing_arguments",
    "compute_label_scores",
    "select_level_candidates",
    "cross_chunk_suppression",
    "keep_top_detections",
    "post_process_grounded_detections",
    "merge_chunk_detections",
    "positive_map_to_token_lists",
    "token_lists_to_positive_map",
]


# Final `score > threshold` cut of the high-level paths ([`detect`], the pipeline, the processor); the same value as
# the stock `zero-shot-object-detection` pipeline. The official evaluation has none (`threshold=None`): it keeps the
# top `config.max_detections`.
DEFAULT_SCORE_THRESHOLD = 0.1


def post_processing_arguments(config: GLIPConfig) -> dict[str, float | int]:
    """The official post-processing values of a model config, as keyword arguments of
    [`post_process_grounded_detections`]. `GLIPConfig` is the one place these defaults live (the converter writes
    them from the official yaml)."""
    return {
        "pre_nms_threshold": config.pre_nms_score_threshold,
        "pre_nms_top_n": config.pre_nms_top_n,
        "nms_threshold": config.nms_threshold,
        "max_detections": config.max_detections,
    }


def output_field(outputs: Any, name: str) -> Any:
    """Field `name` of model outputs given as a `ModelOutput` (attribute) or a mapping (key); None when absent."""
    if isinstance(outputs, Mapping):
        return outputs.get(name)
    return getattr(outputs, name, None)


def check_score_threshold(threshold: Any, name: str = "threshold") -> None:
    """A score threshold is None (no cut) or a finite number in [0, 1]."""
    if threshold is None:
        return
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(
            f"`{name}` must be a number in [0, 1] or None, got {type(threshold).__name__} ({threshold!r})."
        )
    if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise ValueError(f"`{name}` must be a number in [0, 1] (scores are probabilities) or None: {threshold!r}.")


def check_finite_outputs(outputs: Any) -> None:
    """Raise when the model outputs the post-processing reads hold NaN or infinity: every score would then fail
    every comparison and the result would be silently empty."""
    for name in ("logits", "pred_boxes", "centerness"):
        value = output_field(outputs, name)
        if isinstance(value, torch.Tensor) and not bool(torch.isfinite(value).all()):
            count = int((~torch.isfinite(value)).sum())
            raise ValueError(
                f"The model outputs hold {count} non-finite values (NaN or infinity) in `{name}`, so no detection "
                "can be scored. Check the weights (`transformers_glip.find_non_finite_parameters(model)`) and the "
                "inputs (`pixel_values` must be finite); half precision can overflow: try float32."
            )


def find_non_finite_parameters(model: torch.nn.Module) -> list[str]:
    """Names of the parameters and buffers of `model` that hold NaN or infinity (empty when all are finite)."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    return [name for name, tensor in tensors if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]


def as_size_pairs(sizes, name: str, batch_size: int | None = None) -> list[tuple[float, float]]:
    """`(batch, 2)` tensor / list of `(height, width)` pairs -> list of float pairs, validated."""
    if isinstance(sizes, torch.Tensor):
        if sizes.ndim == 1 and sizes.numel() == 2:
            sizes = sizes[None]
        if sizes.ndim != 2 or sizes.shape[-1] != 2:
            raise ValueError(f"`{name}` must have shape (batch_size, 2) of (height, width), got {tuple(sizes.shape)}.")
        pairs = [(float(height), float(width)) for height, width in sizes.tolist()]
    elif isinstance(sizes, Sequence) and not isinstance(sizes, (str, bytes)):
        pairs = []
        for pair in sizes:
            if isinstance(pair, torch.Tensor):
                pair = pair.tolist()
            if not isinstance(pair, Sequence) or len(pair) != 2:
                raise ValueError(f"`{name}` must be a list of (height, width) pairs, got the entry {pair!r}.")
            pairs.append((float(pair[0]), float(pair[1])))
    else:
        raise TypeError(f"`{name}` must be a tensor of shape (batch_size, 2) or a list of (height, width) pairs.")
    for height, width in pairs:
        if not (math.isfinite(height) and math.isfinite(width)) or height < 1 or width < 1:
            raise ValueError(f"`{name}` holds the size {(height, width)}; heights and widths must be >= 1.")
    if batch_size is not None and len(pairs) != batch_size:
        raise ValueError(
            f"`{name}` has {len(pairs)} entries but the outputs hold {batch_size} images; pass one (height, width) "
            "per image."
        )
    return pairs


def positive_map_to_token_lists(positive_map: torch.Tensor) -> list[list[int]]:
    """Rows of a `(num_labels, sequence_length)` map -> the token indices of each label (the official
    `{label: [tokens]}` dictionary without the `+1` on the keys)."""
    if not isinstance(positive_map, torch.Tensor) or positive_map.ndim != 2:
        raise ValueError("`positive_map` must be a 2D tensor of shape (num_labels, sequence_length).")
    return [torch.nonzero(row > 0).flatten().tolist() for row in positive_map]


def token_lists_to_positive_map(token_lists: Sequence[Sequence[int]], sequence_length: int = 256) -> torch.Tensor:
    """The official `{label: [token indices]}` map (as a list, label `k` -> entry `k`) -> a binary
    `(num_labels, sequence_length)` float map."""
    positive_map = torch.zeros((len(token_lists), sequence_length), dtype=torch.float32)
    for label_index, tokens in enumerate(token_lists):
        for token in tokens:
            if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < sequence_length:
                raise ValueError(
                    f"`token_lists[{label_index}]` holds {token!r}; token indices must be ints in "
                    f"[0, {sequence_length})."
                )
            positive_map[label_index, token] = 1.0
    return positive_map


def compute_label_scores(token_logits: torch.Tensor, positive_map: torch.Tensor) -> torch.Tensor:
    """Per-label scores = mean over the label's tokens of `sigmoid(token_logits)` (official `SCORE_AGG MEAN`).

    Args:
        token_logits (`torch.Tensor` of shape `(..., num_anchors, sequence_length)`):
            Dot-product token logits.
        positive_map (`torch.Tensor` of shape `(num_labels, sequence_length)`):
            Which tokens belong to each label (any value > 0 counts as a token of the label; weights are ignored).
            A map wider than the logits must be zero beyond them; a narrower one is zero-padded.

    Returns:
        `torch.Tensor` of shape `(..., num_anchors, num_labels)`. A label without tokens scores 0 (the official code
        produces NaN there; neither ever passes the candidate threshold).
    """
    if positive_map.ndim != 2:
        raise ValueError(
            f"`positive_map` must have shape (num_labels, sequence_length), got {tuple(positive_map.shape)}."
        )
    sequence_length = token_logits.shape[-1]
    binary_map = (positive_map > 0).to(device=token_logits.device, dtype=token_logits.dtype)
    if binary_map.shape[-1] > sequence_length:
        if binary_map[:, sequence_length:].any():
            raise ValueError(
                f"`positive_map` marks tokens at positions >= {sequence_length}, beyond the {sequence_length} token "
                "logits of the model outputs."
            )
        binary_map = binary_map[:, :sequence_length]
    elif binary_map.shape[-1] < sequence_length:
        binary_map = torch.nn.functional.pad(binary_map, (0, sequence_length - binary_map.shape[-1]))
    token_counts = binary_map.sum(dim=-1).clamp(min=1.0)  # (num_labels,)
    probabilities = token_logits.sigmoid()
    # (..., num_anchors, sequence_length) @ (sequence_length, num_labels) -> (..., num_anchors, num_labels)
    return torch.matmul(probabilities, binary_map.transpose(0, 1)) / token_counts


def select_level_candidates(
    label_scores: torch.Tensor,
    centerness_logits: torch.Tensor,
    pred_boxes: torch.Tensor,
    image_size: tuple[float, float],
    pre_nms_threshold: float,
    pre_nms_top_n: int,
    min_box_size: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Candidates of ONE pyramid level of ONE image (`ATSSPostProcessor.forward_for_single_feature_map`).

    Args:
        label_scores (`torch.Tensor` of shape `(num_level_anchors, num_labels)`): mean token probabilities.
        centerness_logits (`torch.Tensor` of shape `(num_level_anchors,)`): centerness logits.
        pred_boxes (`torch.Tensor` of shape `(num_level_anchors, 4)`): decoded xyxy boxes, network-input pixels.
        image_size (`tuple`): `(height, width)` of the unpadded resized image (clipping bounds).

    Returns:
        `dict` with `boxes` `(num_candidates, 4)` clipped xyxy network-input pixels, `scores` `(num_candidates,)`
        `= sqrt(label_score * sigmoid(centerness))`, `labels` `(num_candidates,)` 0-based label indices and
        `anchor_indices` `(num_candidates,)` (level-local). Order is that of `topk(sorted=False)` (unspecified).
    """
    candidate_mask = label_scores > pre_nms_threshold  # (num_level_anchors, num_labels)
    num_candidates = min(int(candidate_mask.sum()), pre_nms_top_n)
    weighted_scores = label_scores * centerness_logits.sigmoid()[:, None]  # (num_level_anchors, num_labels)
    candidate_scores = weighted_scores[candidate_mask]  # row-major (anchor, label) order, as the official code
    top_scores, top_positions = candidate_scores.topk(num_candidates, sorted=False)
    candidate_pairs = torch.nonzero(candidate_mask)[top_positions]  # (num_candidates, 2): anchor, label
    anchor_indices = candidate_pairs[:, 0]
    boxes = clip_boxes_to_image(pred_boxes[anchor_indices], image_size[0], image_size[1])
    # `remove_small_boxes(min_size=0)`: widths/heights use the +1 rule; with 0 it keeps every clipped box.
    widths = boxes[:, 2] - boxes[:, 0] + LEGACY_PIXEL_OFFSET
    heights = boxes[:, 3] - boxes[:, 1] + LEGACY_PIXEL_OFFSET
    keep = (widths >= min_box_size) & (heights >= min_box_size)
    return {
        "boxes": boxes[keep],
        "scores": top_scores.sqrt()[keep],
        "labels": candidate_pairs[:, 1][keep],
        "anchor_indices": anchor_indices[keep],
    }


def keep_top_detections(scores: torch.Tensor, max_detections: int = 100) -> torch.Tensor:
    """Boolean mask keeping the `max_detections` best scores, with ties at the threshold all kept (official
    `kthvalue` cut of `ATSSPostProcessor.select_over_all_levels`). `max_detections <= 0` keeps everything."""
    number = scores.shape[0]
    if max_detections <= 0 or number <= max_detections:
        return torch.ones(number, dtype=torch.bool, device=scores.device)
    threshold, _ = torch.kthvalue(scores.float().cpu(), number - max_detections + 1)
    return scores >= threshold.to(device=scores.device, dtype=scores.dtype)


def _per_image_positive_maps(positive_map, batch_size: int) -> list[torch.Tensor]:
    if isinstance(positive_map, torch.Tensor):
        if positive_map.ndim == 2:
            return [positive_map] * batch_size
        if positive_map.ndim == 3:
            if positive_map.shape[0] != batch_size:
                raise ValueError(
                    f"`positive_map` has {positive_map.shape[0]} maps but the outputs hold {batch_size} images."
                )
            return list(positive_map)
        raise ValueError(
            "`positive_map` must have shape (num_labels, sequence_length) or (batch_size, num_labels, "
            f"sequence_length), got {tuple(positive_map.shape)}."
        )
    if isinstance(positive_map, Sequence) and not isinstance(positive_map, (str, bytes)):
        if len(positive_map) != batch_size:
            raise ValueError(f"`positive_map` has {len(positive_map)} maps but the outputs hold {batch_size} images.")
        maps = []
        for image_index, image_map in enumerate(positive_map):
            if not isinstance(image_map, torch.Tensor) or image_map.ndim != 2:
                raise ValueError(
                    f"`positive_map[{image_index}]` must be a tensor of shape (num_labels, sequence_length)."
                )
            maps.append(image_map)
        return maps
    raise TypeError(
        "`positive_map` must be a tensor (num_labels, sequence_length), (batch_size, num_labels, sequence_length) "
        f"or a list of per-image tensors, got {type(positive_map).__name__}."
    )


def post_process_grounded_detections(
    logits: torch.Tensor,
    pred_boxes: torch.Tensor,
    centerness: torch.Tensor,
    num_anchors_per_level: Sequence[int],
    positive_map,
    image_sizes,
    target_sizes=None,
    *,
    pre_nms_threshold: float,
    pre_nms_top_n: int,
    nms_threshold: float,
    max_detections: int,
    score_threshold: float | None = None,
    return_candidates: bool = False,
) -> list[dict[str, torch.Tensor]]:
    """Official GLIP grounded/detection post-processing for a batch (spec §8), vectorised over anchors.

    Args:
        logits (`torch.Tensor` of shape `(batch_size, num_anchors, sequence_length)`):
            Token logits, anchors ordered P3..P7 and row-major `(y, x)` within a level.
        pred_boxes (`torch.Tensor` of shape `(batch_size, num_anchors, 4)`):
            Decoded xyxy boxes in network-input pixels (legacy +1 coder).
        centerness (`torch.Tensor` of shape `(batch_size, num_anchors)`): centerness logits.
        num_anchors_per_level (`list[int]`): anchors of each level (sums to `num_anchors`).
        positive_map (`torch.Tensor` or `list[torch.Tensor]`):
            `(num_labels, sequence_length)` shared by the batch, `(batch_size, num_labels, sequence_length)`, or a
            list of per-image `(num_labels_i, sequence_length)` maps. Values > 0 mark the label's tokens.
        image_sizes (`torch.Tensor` of shape `(batch_size, 2)` or list of pairs):
            Unpadded resized `(height, width)` of every image (clipping bounds).
        target_sizes (`torch.Tensor` of shape `(batch_size, 2)` or list of pairs, *optional*):
            Original `(height, width)`; when given, boxes are rescaled to it (`BoxList.resize`).
        pre_nms_threshold, pre_nms_top_n, nms_threshold, max_detections:
            Official `MODEL.ATSS.{INFERENCE_TH, PRE_NMS_TOP_N, NMS_TH, DETECTIONS_PER_IMG}`; pass
            `**post_processing_arguments(model.config)` (the config holds the defaults 0.05, 1000, 0.6, 100).
        score_threshold (`float`, *optional*): drop final detections with `score <= score_threshold`.
        return_candidates (`bool`, *optional*):
            Also return `"candidates"`: per level a dict `boxes/scores/labels` (network-input pixels, sorted by
            decreasing score) before NMS.

    Returns:
        `list[dict]`, one per image: `boxes` `(num_detections, 4)` xyxy (original pixels if `target_sizes`, else
        network-input pixels), `scores` `(num_detections,)`, `labels` `(num_detections,)` 0-based rows of the
        positive map; sorted by decreasing score.
    """
    if logits.ndim != 3:
        raise ValueError(
            f"`logits` must have shape (batch_size, num_anchors, sequence_length), got {tuple(logits.shape)}."
        )
    batch_size, num_anchors = logits.shape[:2]
    if pred_boxes.shape != (batch_size, num_anchors, 4):
        raise ValueError(
            f"`pred_boxes` must have shape {(batch_size, num_anchors, 4)} to match `logits`, got "
            f"{tuple(pred_boxes.shape)}."
        )
    if centerness.ndim == 3 and centerness.shape[-1] == 1:
        centerness = centerness[..., 0]
    if centerness.shape != (batch_size, num_anchors):
        raise ValueError(
            f"`centerness` must have shape {(batch_size, num_anchors)} to match `logits`, got "
            f"{tuple(centerness.shape)}."
        )
    num_anchors_per_level = [int(count) for count in num_anchors_per_level]
    if sum(num_anchors_per_level) != num_anchors or any(count < 0 for count in num_anchors_per_level):
        raise ValueError(
            f"`num_anchors_per_level` {num_anchors_per_level} must sum to the {num_anchors} anchors of `logits`."
        )
    # The official post-processing runs in float32 (also for half-precision models).
    logits, pred_boxes, centerness = logits.float(), pred_boxes.float(), centerness.float()
    image_sizes = as_size_pairs(image_sizes, "image_sizes", batch_size)
    if target_sizes is not None:
        target_sizes = as_size_pairs(target_sizes, "target_sizes", batch_size)
    positive_maps = _per_image_positive_maps(positive_map, batch_size)
    level_bounds = torch.tensor([0] + num_anchors_per_level).cumsum(0).tolist()

    results = []
    for image_index in range(batch_size):
        label_scores = compute_label_scores(logits[image_index], positive_maps[image_index])  # (num_anchors, K)
        level_candidates = []
        for level_index in range(len(num_anchors_per_level)):
            start, end = level_bounds[level_index], level_bounds[level_index + 1]
            level_candidates.append(
                select_level_candidates(
                    label_scores[start:end],
                    centerness[image_index, start:end],
                    pred_boxes[image_index, start:end],
                    image_sizes[image_index],
                    pre_nms_threshold=pre_nms_threshold,
                    pre_nms_top_n=pre_nms_top_n,
                )
            )
        boxes = torch.cat([candidates["boxes"] for candidates in level_candidates])
        scores = torch.cat([candidates["scores"] for candidates in level_candidates])
        labels = torch.cat([candidates["labels"] for candidates in level_candidates])
        keep = class_aware_nms(boxes, scores, labels, nms_threshold)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = keep_top_detections(scores, max_detections)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        if score_threshold is not None:
            keep = scores > score_threshold
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        if target_sizes is not None:
            boxes = resize_boxes(boxes, image_sizes[image_index], target_sizes[image_index])
        result = {"boxes": boxes, "scores": scores, "labels": labels}
        if return_candidates:
            sorted_candidates = []
            for candidates in level_candidates:
                order = torch.argsort(candidates["scores"], descending=True, stable=True)
                sorted_candidates.append({key: candidates[key][order] for key in ("boxes", "scores", "labels")})
            result["candidates"] = sorted_candidates
        results.append(result)
    return results


CHUNK_MERGE_MODES = ("concatenate", "cross_chunk_nms")


def cross_chunk_suppression(
    boxes: torch.Tensor, scores: torch.Tensor, chunk_ids: torch.Tensor, iou_threshold: float = 0.6
) -> torch.Tensor:
    """Greedy NMS whose suppression only acts ACROSS chunks: detections of the same chunk never suppress each other.

    Detections are visited by decreasing score (stable, so on equal scores the earlier input wins); a detection is
    dropped when an already kept detection of ANOTHER chunk overlaps it with a legacy "+1" IoU above
    `iou_threshold` (the IoU of [`class_aware_nms`]), whatever the labels. The detections of one chunk alone are
    therefore returned untouched.

    Args:
        boxes (`torch.Tensor` of shape `(num_boxes, 4)`): xyxy boxes (+1 convention), one frame for all chunks.
        scores (`torch.Tensor` of shape `(num_boxes,)`), chunk_ids (`torch.Tensor` of shape `(num_boxes,)`).

    Returns:
        `torch.LongTensor` of the kept indices, sorted by decreasing score (stable).
    """
    if boxes.numel() == 0:
        return torch.zeros((0,), dtype=torch.long, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    shifted_boxes = boxes[order].float().clone()
    shifted_boxes[:, 2:] += LEGACY_PIXEL_OFFSET
    overlapping = box_iou(shifted_boxes, shifted_boxes) > float(iou_threshold)  # (num_boxes, num_boxes)
    sorted_chunks = chunk_ids[order]
    suppresses = overlapping & (sorted_chunks[:, None] != sorted_chunks[None, :])  # (num_boxes, num_boxes)
    suppresses = suppresses.cpu().numpy()
    number = suppresses.shape[0]
    suppressed = np.zeros(number, dtype=bool)
    for index in range(number):
        if not suppressed[index]:
            # Only lower-scoring detections (later in the order) can be suppressed by this kept one.
            suppressed[index + 1 :] |= suppresses[index, index + 1 :]
    keep = torch.from_numpy(np.flatnonzero(~suppressed)).to(device=boxes.device)
    return order[keep]


def merge_chunk_detections(
    chunk_detections: Sequence[dict[str, torch.Tensor]],
    chunk_label_indices: Sequence[Sequence[int]],
    *,
    mode: str,
    nms_threshold: float | None = None,
    max_detections: int | None = None,
) -> dict[str, torch.Tensor]:
    """Merge the detections of one image prompted with several label chunks (large vocabularies, spec §3.6).

    Modes:
    - `"concatenate"` (the official behaviour): the official chunked evaluation
      (`TEST.CHUNKED_EVALUATION 40`) concatenates the per-chunk detections (each already NMS-ed and capped) without
      any cross-chunk step. With `nms_threshold`, a class-aware NMS runs over the merged detections; since the
      chunks hold disjoint labels, it only matters when a label appears in several chunks.
    - `"cross_chunk_nms"` (the default `GLIPConfig.chunk_merge_mode`, so of every inference path): duplicates ACROSS
      chunks are removed with [`cross_chunk_suppression`] at `nms_threshold` (0.6 if not given): a detection goes
      when a kept, higher-scoring detection of a DIFFERENT chunk overlaps it with a "+1" IoU above the threshold,
      whatever the labels (synonyms in different chunks otherwise give one box per synonym). Detections within a
      chunk are never suppressed by each other, so one chunk gives exactly its single-prompt results.

    Args:
        chunk_detections (`list[dict]`): per chunk, `boxes` `(n_c, 4)`, `scores` `(n_c,)`, `labels` `(n_c,)`
            (0-based chunk-local label indices), in the same frame for all chunks.
        chunk_label_indices (`list[list[int]]`): per chunk, the global label index of each chunk-local label.
        nms_threshold (`float`, *optional*): IoU threshold of the NMS of the chosen mode (see above).
        max_detections (`int`, *optional*): keep at most this many (kthvalue cut, ties kept).
        mode (`str`): `"concatenate"` or `"cross_chunk_nms"` (high-level paths pass `config.chunk_merge_mode`).

    Returns:
        `dict` with `boxes`, `scores`, `labels` (global 0-based label indices), sorted by decreasing score.
    """
    if mode not in CHUNK_MERGE_MODES:
        raise ValueError(f"`mode` must be one of {CHUNK_MERGE_MODES}, got {mode!r}.")
    if len(chunk_detections) != len(chunk_label_indices):
        raise ValueError(
            f"`chunk_detections` has {len(chunk_detections)} entries but `chunk_label_indices` has "
            f"{len(chunk_label_indices)}; pass one label-index list per chunk."
        )
    if len(chunk_detections) == 0:
        raise ValueError("`chunk_detections` is empty; pass the detections of at least one chunk.")
    boxes, scores, labels, chunk_ids = [], [], [], []
    for chunk_index, (detections, label_indices) in enumerate(zip(chunk_detections, chunk_label_indices)):
        mapping = torch.as_tensor(list(label_indices), dtype=torch.long, device=detections["labels"].device)
        if detections["labels"].numel() and int(detections["labels"].max()) >= mapping.numel():
            raise ValueError(
                f"chunk {chunk_index} has label {int(detections['labels'].max())} but only {mapping.numel()} labels."
            )
        boxes.append(detections["boxes"])
        scores.append(detections["scores"])
        labels.append(mapping[detections["labels"]])
        chunk_ids.append(torch.full_like(detections["labels"], chunk_index))
    boxes, scores, labels, chunk_ids = torch.cat(boxes), torch.cat(scores), torch.cat(labels), torch.cat(chunk_ids)
    if mode == "cross_chunk_nms":
        keep = cross_chunk_suppression(boxes, scores, chunk_ids, 0.6 if nms_threshold is None else nms_threshold)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    elif nms_threshold is not None:
        keep = class_aware_nms(boxes, scores, labels, nms_threshold)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    if max_detections is not None:
        keep = keep_top_detections(scores, max_detections)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    order = torch.argsort(scores, descending=True, stable=True)
    return {"boxes": boxes[order], "scores": scores[order], "labels": labels[order]}
