"""Anchors and the ATSS box coder of GLIP, with the legacy Detectron "+1" pixel convention.

Official sources: `maskrcnn_benchmark/modeling/rpn/anchor_generator.py` (`generate_anchors`, `AnchorGenerator`) and
`maskrcnn_benchmark/modeling/rpn/vldyhead.py::BoxCoder` (weights hard-coded to (10, 10, 5, 5)).
"""

from __future__ import annotations

import math

import torch

__all__ = ["LEGACY_PIXEL_OFFSET", "GLIPBoxCoder", "generate_anchors", "cell_anchor"]

# Detectron-era boxes are inclusive pixel ranges: a box [x1, x2] is `x2 - x1 + 1` pixels wide. The released
# checkpoints were trained with this convention (box coder, anchors, ATSS IoU, NMS), so we keep it for parity.
LEGACY_PIXEL_OFFSET = 1.0

# Upper clamp of the width/height log-deltas before `exp` (official: `math.log(1000.0 / 16)`).
MAX_LOG_SCALE = math.log(1000.0 / 16)


def cell_anchor(stride: int, size: int) -> list[float]:
    """The single square anchor of one location at the origin (Detectron convention).

    The reference window is `[0, 0, stride - 1, stride - 1]` with centre `(stride - 1) / 2`; the anchor of width
    `size` (+1 convention) is centred there: stride 8, size 64 -> `[-28, -28, 35, 35]`.
    """
    center = (stride - 1) / 2.0
    half_extent = (size - 1) / 2.0
    return [center - half_extent, center - half_extent, center + half_extent, center + half_extent]


def generate_anchors(
    level_sizes: list[tuple[int, int]],
    strides: list[int],
    sizes: list[int],
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """One square anchor per location of every pyramid level, concatenated P3 -> P7.

    Args:
        level_sizes: `(height, width)` of each feature map, finest first.
        strides: stride of each level in input pixels (8, 16, 32, 64, 128).
        sizes: anchor side of each level (64, 128, 256, 512, 1024).

    Returns:
        `(num_anchors, 4)` xyxy anchors in network-input pixels, row-major `(y, x)` within a level
        (`num_anchors = sum(height * width)`), matching the flattening of the head's predictions.
    """
    anchors_per_level = []
    for (height, width), stride, size in zip(level_sizes, strides, sizes):
        base = torch.tensor(cell_anchor(stride, size), dtype=torch.float32, device=device)
        shift_x = torch.arange(0, width * stride, step=stride, dtype=torch.float32, device=device)
        shift_y = torch.arange(0, height * stride, step=stride, dtype=torch.float32, device=device)
        grid_y, grid_x = torch.meshgrid(shift_y, shift_x, indexing="ij")  # (height, width) each
        shifts = torch.stack([grid_x, grid_y, grid_x, grid_y], dim=-1).reshape(-1, 4)  # (height * width, 4)
        anchors_per_level.append(shifts + base)
    return torch.cat(anchors_per_level, dim=0).to(dtype)


class GLIPBoxCoder:
    """Encodes boxes as `(dx, dy, dw, dh)` deltas relative to anchors and decodes them back (legacy +1 widths).

    For an anchor `a`: `w_a = x2 - x1 + 1`, `cx_a = (x1 + x2) / 2`; `t_x = w_x * (cx - cx_a) / w_a`,
    `t_w = w_w * log(w / w_a)` with weights `(w_x, w_y, w_w, w_h) = (10, 10, 5, 5)`.
    """

    def __init__(self, weights: tuple[float, float, float, float] | list[float] = (10.0, 10.0, 5.0, 5.0)):
        if len(weights) != 4:
            raise ValueError(f"GLIPBoxCoder needs 4 weights, got {weights}.")
        self.weights = tuple(float(weight) for weight in weights)

    def encode(self, boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Deltas that turn `anchors` into `boxes`; both `(..., 4)` xyxy in the same frame. Returns `(..., 4)`."""
        anchor_widths = anchors[..., 2] - anchors[..., 0] + LEGACY_PIXEL_OFFSET
        anchor_heights = anchors[..., 3] - anchors[..., 1] + LEGACY_PIXEL_OFFSET
        anchor_center_x = (anchors[..., 2] + anchors[..., 0]) / 2
        anchor_center_y = (anchors[..., 3] + anchors[..., 1]) / 2

        box_widths = boxes[..., 2] - boxes[..., 0] + LEGACY_PIXEL_OFFSET
        box_heights = boxes[..., 3] - boxes[..., 1] + LEGACY_PIXEL_OFFSET
        box_center_x = (boxes[..., 2] + boxes[..., 0]) / 2
        box_center_y = (boxes[..., 3] + boxes[..., 1]) / 2

        weight_x, weight_y, weight_w, weight_h = self.weights
        delta_x = weight_x * (box_center_x - anchor_center_x) / anchor_widths
        delta_y = weight_y * (box_center_y - anchor_center_y) / anchor_heights
        delta_w = weight_w * torch.log(box_widths / anchor_widths)
        delta_h = weight_h * torch.log(box_heights / anchor_heights)
        return torch.stack([delta_x, delta_y, delta_w, delta_h], dim=-1)

    def decode(self, deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Boxes from `deltas` `(..., 4)` and `anchors` broadcastable to it. Returns `(..., 4)` xyxy.

        Anchors are cast to the deltas' dtype first; only the upper side of `dw`/`dh` is clamped (official).
        """
        anchors = anchors.to(deltas.dtype)
        anchor_widths = anchors[..., 2] - anchors[..., 0] + LEGACY_PIXEL_OFFSET
        anchor_heights = anchors[..., 3] - anchors[..., 1] + LEGACY_PIXEL_OFFSET
        anchor_center_x = (anchors[..., 2] + anchors[..., 0]) / 2
        anchor_center_y = (anchors[..., 3] + anchors[..., 1]) / 2

        weight_x, weight_y, weight_w, weight_h = self.weights
        delta_x = deltas[..., 0] / weight_x
        delta_y = deltas[..., 1] / weight_y
        delta_w = torch.clamp(deltas[..., 2] / weight_w, max=MAX_LOG_SCALE)
        delta_h = torch.clamp(deltas[..., 3] / weight_h, max=MAX_LOG_SCALE)

        center_x = delta_x * anchor_widths + anchor_center_x
        center_y = delta_y * anchor_heights + anchor_center_y
        widths = torch.exp(delta_w) * anchor_widths
        heights = torch.exp(delta_h) * anchor_heights

        half_width = 0.5 * (widths - LEGACY_PIXEL_OFFSET)
        half_height = 0.5 * (heights - LEGACY_PIXEL_OFFSET)
        return torch.stack(
            [center_x - half_width, center_y - half_height, center_x + half_width, center_y + half_height], dim=-1
        )
