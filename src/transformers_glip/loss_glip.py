"""Training losses of GLIP: ATSS assignment, binary token focal loss, centerness-weighted GIoU and centerness BCE.

Official sources (microsoft/GLIP): `maskrcnn_benchmark/modeling/rpn/loss.py::ATSSLossComputation`
(`prepare_targets`, `GIoULoss`, `compute_centerness_targets`, `__call__`) and
`maskrcnn_benchmark/layers/sigmoid_focal_loss.py::token_sigmoid_binary_focal_loss`.

The math lives in small pure functions; `GLIPLoss` only assigns targets, flattens the batch and normalises. The loss
never imports a launcher: the cross-process averaging of the normalisers is an injectable callable that defaults to
`torch.distributed` (all-reduce / world size) when a process group is initialised, else the identity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from .box_geometry_glip import GLIPBoxCoder, legacy_box_iou
from .configuration_glip import GLIPConfig

__all__ = [
    "GLIPLoss",
    "GLIPLossTargets",
    "atss_assign",
    "centerness_loss",
    "compute_centerness_targets",
    "generalized_iou_loss",
    "token_sigmoid_focal_loss",
    "torch_distributed_average",
]

# Candidate anchor centres must lie strictly inside the box by more than this many pixels (official constant).
CENTER_INSIDE_MARGIN = 0.01

# Added to union and enclosing areas of the GIoU loss (official constant; areas there use no +1).
GIOU_EPSILON = 1e-7

# Sentinel IoU of (anchor, box) pairs that are not ATSS positives (official `INF = 1e8`).
NOT_POSITIVE_IOU = -1e8


def torch_distributed_average(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of `tensor` over all processes (sum all-reduce / world size) if `torch.distributed` is initialised.

    Without an initialised process group this is the identity (single process). The input is never modified.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        tensor = tensor.clone()
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor / torch.distributed.get_world_size()
    return tensor


def atss_assign(
    anchors: torch.Tensor,
    gt_boxes: torch.Tensor,
    num_anchors_per_level: list[int],
    topk: int,
) -> torch.Tensor:
    """Adaptive Training Sample Selection (ATSS, Zhang et al. 2020) as in the official GLIP loss.

    For every box: per level, the `min(topk, level size)` anchors whose centres are nearest to the box centre are
    candidates; the IoU threshold is mean + unbiased std of the candidates' IoUs (+1 convention); a candidate is
    positive if its IoU reaches the threshold and its centre lies inside the box by more than 0.01 px. An anchor
    positive for several boxes takes the box of largest IoU (ties: the first box).
    Official: `modeling/rpn/loss.py::ATSSLossComputation.prepare_targets`.

    Args:
        anchors: `(num_anchors, 4)` xyxy anchors, all levels concatenated finest first.
        gt_boxes: `(num_boxes, 4)` xyxy boxes in the anchors' frame; `num_boxes` may be 0.
        num_anchors_per_level: anchors of each level, summing to `num_anchors`.
        topk: candidates per level and box (`MODEL.ATSS.TOPK`).

    Returns:
        `(num_anchors,)` int64: index of the assigned box, or -1 for background (every anchor when `num_boxes` is 0,
        a case the official code does not handle).
    """
    num_anchors = anchors.shape[0]
    num_boxes = gt_boxes.shape[0]
    if sum(num_anchors_per_level) != num_anchors:
        raise ValueError(
            f"num_anchors_per_level sums to {sum(num_anchors_per_level)} but there are {num_anchors} anchors."
        )
    if num_boxes == 0:
        return torch.full((num_anchors,), -1, dtype=torch.long, device=anchors.device)

    ious = legacy_box_iou(anchors, gt_boxes)  # (num_anchors, num_boxes)

    box_centers = torch.stack(
        [(gt_boxes[:, 2] + gt_boxes[:, 0]) / 2.0, (gt_boxes[:, 3] + gt_boxes[:, 1]) / 2.0], dim=1
    )  # (num_boxes, 2)
    anchor_centers = torch.stack(
        [(anchors[:, 2] + anchors[:, 0]) / 2.0, (anchors[:, 3] + anchors[:, 1]) / 2.0], dim=1
    )  # (num_anchors, 2)
    # (num_anchors, num_boxes) Euclidean distances between anchor and box centres
    distances = (anchor_centers[:, None, :] - box_centers[None, :, :]).pow(2).sum(-1).sqrt()

    candidate_indices_per_level = []
    level_start = 0
    for level_size in num_anchors_per_level:
        level_end = level_start + level_size
        level_topk = min(topk, level_size)
        _, level_candidates = distances[level_start:level_end].topk(level_topk, dim=0, largest=False)
        candidate_indices_per_level.append(level_candidates + level_start)  # (level_topk, num_boxes)
        level_start = level_end
    candidate_indices = torch.cat(candidate_indices_per_level, dim=0)  # (num_candidates, num_boxes)

    box_range = torch.arange(num_boxes, device=anchors.device)
    candidate_ious = ious[candidate_indices, box_range]  # (num_candidates, num_boxes)
    iou_thresholds = candidate_ious.mean(0) + candidate_ious.std(0)  # (num_boxes,)
    is_positive = candidate_ious >= iou_thresholds[None, :]

    candidate_centers = anchor_centers[candidate_indices]  # (num_candidates, num_boxes, 2)
    center_offsets = torch.stack(
        [
            candidate_centers[..., 0] - gt_boxes[:, 0],
            candidate_centers[..., 1] - gt_boxes[:, 1],
            gt_boxes[:, 2] - candidate_centers[..., 0],
            gt_boxes[:, 3] - candidate_centers[..., 1],
        ],
        dim=1,
    )  # (num_candidates, 4, num_boxes)
    is_positive = is_positive & (center_offsets.min(dim=1).values > CENTER_INSIDE_MARGIN)

    positive_ious = torch.full_like(ious, NOT_POSITIVE_IOU)  # (num_anchors, num_boxes)
    box_indices = box_range.expand_as(candidate_indices)  # (num_candidates, num_boxes)
    positive_anchors = candidate_indices[is_positive]
    positive_boxes = box_indices[is_positive]
    positive_ious[positive_anchors, positive_boxes] = ious[positive_anchors, positive_boxes]

    # `max` returns the first maximal index, so equal IoUs go to the first box (as in the official code).
    best_ious, matched_box_indices = positive_ious.max(dim=1)
    return torch.where(best_ious == NOT_POSITIVE_IOU, -1, matched_box_indices)


def token_sigmoid_focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    text_mask: torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Binary sigmoid focal loss (Lin et al. 2017) summed over the token positions where `text_mask` is 1.

    Per element: `alpha_t * (1 - p_t) ** gamma * BCE(logit, target)`; `alpha < 0` disables the alpha weighting.
    Official: `layers/sigmoid_focal_loss.py::token_sigmoid_binary_focal_loss` (version "binary"), which is
    `torchvision.ops.sigmoid_focal_loss` (same operations in the same order) on the selected positions.

    Args:
        logits: `(batch, num_anchors, sequence_length)` token logits.
        targets: `(batch, num_anchors, sequence_length)` binary targets.
        text_mask: `(batch, sequence_length)` attention mask; positions with 0 are dropped.

    Returns:
        Scalar sum (not normalised).
    """
    selected = (text_mask > 0)[:, None, :].expand_as(logits)  # (batch, num_anchors, sequence_length)
    logits = torch.masked_select(logits, selected)  # (num_selected,)
    targets = torch.masked_select(targets.to(logits.dtype), selected)  # (num_selected,)
    return sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma, reduction="sum")


def generalized_iou_loss(
    predicted_boxes: torch.Tensor, target_boxes: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Sum of `weights * (1 - GIoU)` (Rezatofighi et al. 2019) over matched box pairs.

    Areas use no "+1" (unlike the rest of GLIP); predicted `x2`/`y2` are lower-bounded by `x1`/`y1`; 1e-7 is added
    to the union and enclosing areas. Official: `modeling/rpn/loss.py::ATSSLossComputation.GIoULoss` (which drops
    the weights when they sum to 0; that cannot happen for ATSS positives, whose centres lie inside their boxes).

    Args:
        predicted_boxes: `(num_pairs, 4)` xyxy.
        target_boxes: `(num_pairs, 4)` xyxy.
        weights: optional `(num_pairs,)` per-pair weights (GLIP: centerness targets).

    Returns:
        Scalar sum (not normalised).
    """
    predicted_x1, predicted_y1, predicted_x2, predicted_y2 = predicted_boxes.unbind(-1)
    predicted_x2 = torch.max(predicted_x1, predicted_x2)
    predicted_y2 = torch.max(predicted_y1, predicted_y2)
    predicted_area = (predicted_x2 - predicted_x1) * (predicted_y2 - predicted_y1)

    target_x1, target_y1, target_x2, target_y2 = target_boxes.unbind(-1)
    target_area = (target_x2 - target_x1) * (target_y2 - target_y1)

    intersection_x1 = torch.max(predicted_x1, target_x1)
    intersection_y1 = torch.max(predicted_y1, target_y1)
    intersection_x2 = torch.min(predicted_x2, target_x2)
    intersection_y2 = torch.min(predicted_y2, target_y2)
    overlaps = (intersection_x2 > intersection_x1) & (intersection_y2 > intersection_y1)
    intersection_area = torch.where(
        overlaps,
        (intersection_x2 - intersection_x1) * (intersection_y2 - intersection_y1),
        torch.zeros_like(predicted_area),
    )

    enclosing_x1 = torch.min(predicted_x1, target_x1)
    enclosing_y1 = torch.min(predicted_y1, target_y1)
    enclosing_x2 = torch.max(predicted_x2, target_x2)
    enclosing_y2 = torch.max(predicted_y2, target_y2)
    enclosing_area = (enclosing_x2 - enclosing_x1) * (enclosing_y2 - enclosing_y1) + GIOU_EPSILON

    union_area = predicted_area + target_area - intersection_area + GIOU_EPSILON
    ious = intersection_area / union_area
    generalized_ious = ious - (enclosing_area - union_area) / enclosing_area
    losses = 1 - generalized_ious
    if weights is not None:
        losses = losses * weights
    return losses.sum()


def compute_centerness_targets(target_boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """FCOS centerness of each anchor centre inside its target box: `sqrt(min(l, r)/max(l, r) * min(t, b)/max(t, b))`.

    Official: `modeling/rpn/loss.py::ATSSLossComputation.compute_centerness_targets` (which first decodes the
    regression targets back to boxes; pass those decoded boxes here for parity).

    Args:
        target_boxes: `(num_positives, 4)` xyxy.
        anchors: `(num_positives, 4)` xyxy anchors; their centres are `((x1 + x2) / 2, (y1 + y2) / 2)`.

    Returns:
        `(num_positives,)` targets in `[0, 1]`.
    """
    anchor_center_x = (anchors[:, 2] + anchors[:, 0]) / 2
    anchor_center_y = (anchors[:, 3] + anchors[:, 1]) / 2
    left = anchor_center_x - target_boxes[:, 0]
    top = anchor_center_y - target_boxes[:, 1]
    right = target_boxes[:, 2] - anchor_center_x
    bottom = target_boxes[:, 3] - anchor_center_y
    left_right = torch.stack([left, right], dim=1)  # (num_positives, 2)
    top_bottom = torch.stack([top, bottom], dim=1)  # (num_positives, 2)
    return torch.sqrt(
        (left_right.min(dim=-1).values / left_right.max(dim=-1).values)
        * (top_bottom.min(dim=-1).values / top_bottom.max(dim=-1).values)
    )


def centerness_loss(centerness_logits: torch.Tensor, centerness_targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with logits, summed. Both `(num_positives,)`. Returns a scalar (not normalised)."""
    return F.binary_cross_entropy_with_logits(centerness_logits, centerness_targets, reduction="sum")


@dataclass
class GLIPLossTargets:
    """Per-anchor training targets of a batch (`GLIPLoss.prepare_targets`).

    Attributes:
        matched_box_indices: `(batch, num_anchors)` int64, index of the assigned box in the image's `boxes`, -1 for
            background.
        anchor_labels: `(batch, num_anchors)` int64, `matched_box_indices + 1` (0 = background), the official
            `labels` field for grounding data.
        regression_targets: `(batch, num_anchors, 4)` encoded deltas of the assigned box (official: box 0 for
            background anchors, zeros for images without boxes; only meaningful on positives).
        token_targets: `(batch, num_anchors, sequence_length)` float binary maps: the assigned box's
            `positive_map` row, or a single 1 at the last position (the "no object" slot) for background.
    """

    matched_box_indices: torch.Tensor
    anchor_labels: torch.Tensor
    regression_targets: torch.Tensor
    token_targets: torch.Tensor


class GLIPLoss(nn.Module):
    """ATSS losses of GLIP: `loss_dot_product_token`, `loss_reg` (centerness-weighted GIoU) and `loss_centerness`.

    Normalisation (official `ATSSLossComputation.__call__`): the token and centerness losses are divided by
    `max(mean over processes of the number of positives, 1)`; the GIoU loss by the mean over processes of the sum of
    centerness targets. The total loss is the plain sum of the weighted terms. Runs in float32.

    Args:
        config: `GLIPConfig` (`atss_topk`, `focal_alpha`, `focal_gamma`, `token_loss_weight`,
            `regression_loss_weight`, `centerness_loss_weight`, `box_coder_weights`).
        average_across_processes: callable mapping a local tensor to its mean over all training processes; defaults
            to `torch_distributed_average` (torch.distributed when initialised, else identity). Launchers such as
            Accelerate can pass their own reduction here.
    """

    def __init__(
        self,
        config: GLIPConfig,
        average_across_processes: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        super().__init__()
        self.topk = config.atss_topk
        self.focal_alpha = config.focal_alpha
        self.focal_gamma = config.focal_gamma
        self.token_loss_weight = config.token_loss_weight
        self.regression_loss_weight = config.regression_loss_weight
        self.centerness_loss_weight = config.centerness_loss_weight
        self.box_coder = GLIPBoxCoder(config.box_coder_weights)
        self.average_across_processes = average_across_processes or torch_distributed_average

    @torch.no_grad()
    def prepare_targets(
        self,
        anchors: torch.Tensor,
        num_anchors_per_level: list[int],
        labels: list[dict[str, torch.Tensor]],
        sequence_length: int,
    ) -> GLIPLossTargets:
        """ATSS assignment and per-anchor targets for every image.

        Args:
            anchors: `(num_anchors, 4)` xyxy anchors shared by the batch.
            num_anchors_per_level: anchors per level, finest first.
            labels: one dict per image with `boxes` `(num_boxes, 4)` xyxy in network-input pixels and
                `positive_map` `(num_boxes, sequence_length)` binary.
            sequence_length: token length of the logits.

        Returns:
            `GLIPLossTargets` with a leading batch dimension.
        """
        anchors = anchors.float()
        num_anchors = anchors.shape[0]
        background_tokens = anchors.new_zeros(sequence_length)
        background_tokens[-1] = 1.0  # the official "[NoObj]" slot; removed by the mask unless the text fills it

        matched_box_indices, regression_targets, token_targets = [], [], []
        for image_labels in labels:
            boxes = image_labels["boxes"].to(device=anchors.device, dtype=torch.float32)
            positive_map = image_labels["positive_map"].to(device=anchors.device, dtype=torch.float32)
            if boxes.ndim != 2 or boxes.shape[-1] != 4:
                raise ValueError(f"labels['boxes'] must be (num_boxes, 4), got {tuple(boxes.shape)}.")
            if positive_map.shape != (boxes.shape[0], sequence_length):
                raise ValueError(
                    f"labels['positive_map'] must be (num_boxes, sequence_length) = ({boxes.shape[0]}, "
                    f"{sequence_length}), got {tuple(positive_map.shape)}."
                )
            image_matches = atss_assign(anchors, boxes, num_anchors_per_level, self.topk)  # (num_anchors,)
            is_background = image_matches < 0
            if boxes.shape[0] > 0:
                # Background anchors encode box 0 like the official code; those targets are never used.
                image_regression = self.box_coder.encode(boxes[image_matches.clamp(min=0)], anchors)
                image_tokens = positive_map[image_matches.clamp(min=0)]  # (num_anchors, sequence_length)
                image_tokens[is_background] = background_tokens
            else:
                image_regression = anchors.new_zeros(num_anchors, 4)
                image_tokens = background_tokens.expand(num_anchors, sequence_length).clone()
            matched_box_indices.append(image_matches)
            regression_targets.append(image_regression)
            token_targets.append(image_tokens)

        matched_box_indices = torch.stack(matched_box_indices)  # (batch, num_anchors)
        return GLIPLossTargets(
            matched_box_indices=matched_box_indices,
            anchor_labels=matched_box_indices + 1,
            regression_targets=torch.stack(regression_targets),  # (batch, num_anchors, 4)
            token_targets=torch.stack(token_targets),  # (batch, num_anchors, sequence_length)
        )

    def forward(
        self,
        logits: torch.Tensor,
        box_regression: torch.Tensor,
        centerness: torch.Tensor,
        anchors: torch.Tensor,
        num_anchors_per_level: list[int],
        text_attention_mask: torch.Tensor,
        labels: list[dict[str, torch.Tensor]],
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Compute the GLIP training loss.

        Args:
            logits: `(batch, num_anchors, sequence_length)` token logits, anchors ordered P3..P7, row-major (y, x).
            box_regression: `(batch, num_anchors, 4)` raw deltas for the box coder.
            centerness: `(batch, num_anchors)` centerness logits.
            anchors: `(num_anchors, 4)` xyxy anchors in network-input pixels (+1 convention).
            num_anchors_per_level: anchors per level, finest first.
            text_attention_mask: `(batch, sequence_length)`; token positions with 0 are excluded from the token loss.
            labels: one dict per image with `boxes` `(num_boxes, 4)` xyxy in network-input pixels and
                `positive_map` `(num_boxes, sequence_length)` binary; `num_boxes` may be 0.

        Returns:
            `(loss, loss_dict)`: the scalar total (sum of the terms) and `{"loss_reg", "loss_centerness",
            "loss_dot_product_token"}`.
        """
        batch_size, num_anchors, sequence_length = logits.shape
        if len(labels) != batch_size:
            raise ValueError(f"Got {len(labels)} label dicts for a batch of {batch_size}.")
        # The official loss runs under `custom_fwd(cast_inputs=torch.float32)`.
        logits = logits.float()
        box_regression = box_regression.float()
        centerness = centerness.float()
        anchors = anchors.float()

        targets = self.prepare_targets(anchors, num_anchors_per_level, labels, sequence_length)

        is_positive = targets.matched_box_indices.reshape(-1) >= 0  # (batch * num_anchors,)
        with torch.no_grad():
            num_positives = is_positive.sum().to(torch.float32)
            num_positives_average = self.average_across_processes(num_positives).clamp(min=1.0)

        token_loss = token_sigmoid_focal_loss(
            logits, targets.token_targets, text_attention_mask, self.focal_alpha, self.focal_gamma
        )
        token_loss = token_loss / num_positives_average

        positive_regression = box_regression.reshape(-1, 4)[is_positive]  # (num_positives, 4)
        positive_centerness = centerness.reshape(-1)[is_positive]  # (num_positives,)
        if positive_regression.shape[0] > 0:
            positive_targets = targets.regression_targets.reshape(-1, 4)[is_positive]  # (num_positives, 4)
            # (num_anchors, 4) -> (batch * num_anchors, 4) -> (num_positives, 4)
            positive_anchors = anchors.expand(batch_size, num_anchors, 4).reshape(-1, 4)[is_positive]
            # Targets are decoded back from the encoded deltas, as in the official loss (same rounding).
            target_boxes = self.box_coder.decode(positive_targets, positive_anchors)
            predicted_boxes = self.box_coder.decode(positive_regression, positive_anchors)
            centerness_targets = compute_centerness_targets(target_boxes, positive_anchors)
            with torch.no_grad():
                centerness_sum_average = self.average_across_processes(centerness_targets.sum())
            regression_loss = (
                generalized_iou_loss(predicted_boxes, target_boxes, centerness_targets) / centerness_sum_average
            )
            centerness_term = centerness_loss(positive_centerness, centerness_targets) / num_positives_average
        else:
            # Keep the graph (zero gradients) and the same number of collective calls as the other processes.
            with torch.no_grad():
                self.average_across_processes(centerness.new_zeros(()))
            regression_loss = positive_regression.sum()
            centerness_term = positive_centerness.sum()

        loss_dict = {
            "loss_reg": regression_loss * self.regression_loss_weight,
            "loss_centerness": centerness_term * self.centerness_loss_weight,
            "loss_dot_product_token": token_loss * self.token_loss_weight,
        }
        loss = sum(loss_dict.values())
        return loss, loss_dict
