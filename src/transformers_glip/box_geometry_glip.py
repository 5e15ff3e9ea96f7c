"""Box geometry of GLIP, shared by inference and training, with the legacy Detectron "+1" pixel convention.

One place for every box rule, so the image processor, the training transform, the loss and the post-processing
agree on every box:

- image sizes: the official resize rule ([`get_resize_output_size`]) and the padded size ([`padded_size`]);
- box conversions: COCO `xywh` -> inclusive xyxy ([`xywh_to_xyxy`]), clipping ([`clip_boxes_to_image`]), the
  empty-box rule ([`nonempty_box_mask`]), resizing ([`resize_boxes`]) and horizontal flipping ([`flip_boxes`]);
- areas and IoU with the +1 rule ([`legacy_box_area`], [`legacy_box_iou`]) and class-aware NMS on that IoU
  ([`class_aware_nms`]);
- anchors ([`cell_anchor`], [`generate_anchors`]) and the ATSS box coder ([`GLIPBoxCoder`]).

Official sources: `maskrcnn_benchmark/structures/bounding_box.py` (`BoxList.convert/resize/transpose/clip_to_image`),
`structures/boxlist_ops.py` (`boxlist_iou`, `boxlist_ml_nms` -> `csrc/cuda/ml_nms.cu`), `data/transforms/transforms.py`
(`Resize.get_size`), `modeling/rpn/anchor_generator.py` and `modeling/rpn/vldyhead.py::BoxCoder` (weights hard-coded
to (10, 10, 5, 5)). The hand-written IoU / areas remain because torchvision's `box_iou` / `box_area` use exclusive
widths (`x2 - x1`); NMS itself is `torchvision.ops.nms` on shifted boxes, which is exactly the +1 IoU.
"""

from __future__ import annotations

import math

import torch
from torchvision.ops import nms

__all__ = [
    "LEGACY_PIXEL_OFFSET",
    "GLIPBoxCoder",
    "cell_anchor",
    "class_aware_nms",
    "clip_boxes_to_image",
    "flip_boxes",
    "generate_anchors",
    "get_resize_output_size",
    "legacy_box_area",
    "legacy_box_iou",
    "nonempty_box_mask",
    "padded_size",
    "resize_boxes",
    "xywh_to_xyxy",
]

# Detectron-era boxes are inclusive pixel ranges: a box [x1, x2] is `x2 - x1 + 1` pixels wide. The released
# checkpoints were trained with this convention (box coder, anchors, ATSS IoU, NMS), so we keep it for parity.
LEGACY_PIXEL_OFFSET = 1.0

# Upper clamp of the width/height log-deltas before `exp` (official: `math.log(1000.0 / 16)`).
MAX_LOG_SCALE = math.log(1000.0 / 16)


# ----------------------------------------------------------------------------------------------- image sizes


def get_resize_output_size(height: int, width: int, min_size: int, max_size: int | None) -> tuple[int, int]:
    """Resized `(height, width)` of the official `Resize.get_size` (`transforms.py`, spec §2.1).

    The short side becomes `min_size` unless the long side would then exceed `max_size`, in which case the short
    side becomes `int(round(max_size * short / long))`; the long side is `int(size * long / short)` (truncation).
    An image whose short side already equals that size is kept as is.
    """
    size = min_size
    if max_size is not None:
        min_original_size = float(min(width, height))
        max_original_size = float(max(width, height))
        if max_original_size / min_original_size * size > max_size:
            size = int(round(max_size * min_original_size / max_original_size))
    if (width <= height and width == size) or (height <= width and height == size):
        return height, width
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def padded_size(height: int, width: int, size_divisibility: int) -> tuple[int, int]:
    """`(height, width)` rounded up to multiples of `size_divisibility` (official `to_image_list`; 0 = no rounding)."""
    if size_divisibility <= 0:
        return height, width
    return (
        int(math.ceil(height / size_divisibility) * size_divisibility),
        int(math.ceil(width / size_divisibility) * size_divisibility),
    )


# ----------------------------------------------------------------------------------------------- boxes


def xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """COCO `(num_boxes, 4)` `[x, y, w, h]` -> inclusive xyxy `[x, y, x + max(w - 1, 0), y + max(h - 1, 0)]`.

    Official `BoxList.convert("xyxy")` (`TO_REMOVE = 1`, sizes clamped at 0): a box under one pixel wide becomes
    a box of zero extent, which [`nonempty_box_mask`] then drops.
    """
    x1, y1, widths, heights = boxes.unbind(-1)
    x2 = x1 + (widths - LEGACY_PIXEL_OFFSET).clamp(min=0)
    y2 = y1 + (heights - LEGACY_PIXEL_OFFSET).clamp(min=0)
    return torch.stack([x1, y1, x2, y2], dim=-1)


def clip_boxes_to_image(boxes: torch.Tensor, height: float, width: float) -> torch.Tensor:
    """Clip `(num_boxes, 4)` xyxy boxes to `[0, width - 1] x [0, height - 1]` (`BoxList.clip_to_image`, +1 rule)."""
    boxes_x = boxes[:, 0::2].clamp(min=0, max=width - LEGACY_PIXEL_OFFSET)
    boxes_y = boxes[:, 1::2].clamp(min=0, max=height - LEGACY_PIXEL_OFFSET)
    return torch.stack([boxes_x[:, 0], boxes_y[:, 0], boxes_x[:, 1], boxes_y[:, 1]], dim=-1)


def nonempty_box_mask(boxes: torch.Tensor) -> torch.Tensor:
    """`(num_boxes,)` True where `x2 > x1` and `y2 > y1`: the boxes `clip_to_image(remove_empty=True)` keeps.

    The official rule drops the empty BOX and keeps the image; training and the image processor both follow it.
    """
    return (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])


def resize_boxes(boxes: torch.Tensor, from_size: tuple[float, float], to_size: tuple[float, float]) -> torch.Tensor:
    """`BoxList.resize`: multiply x by `to_width / from_width` and y by `to_height / from_height` (no +-1).

    Args:
        boxes (`torch.Tensor` of shape `(num_boxes, 4)`): xyxy boxes in the `from_size` frame.
        from_size, to_size (`tuple`): `(height, width)` of the source and target frames.
    """
    ratio_height = float(to_size[0]) / float(from_size[0])
    ratio_width = float(to_size[1]) / float(from_size[1])
    ratios = torch.tensor(
        [ratio_width, ratio_height, ratio_width, ratio_height], dtype=boxes.dtype, device=boxes.device
    )
    return boxes * ratios


def flip_boxes(boxes: torch.Tensor, image_width: float) -> torch.Tensor:
    """Horizontally flip `(num_boxes, 4)` inclusive xyxy boxes: `x1' = W - x2 - 1`, `x2' = W - x1 - 1`
    (official `BoxList.transpose(FLIP_LEFT_RIGHT)` with `TO_REMOVE = 1`)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(
        [image_width - x2 - LEGACY_PIXEL_OFFSET, y1, image_width - x1 - LEGACY_PIXEL_OFFSET, y2], dim=-1
    )


def legacy_box_area(boxes: torch.Tensor) -> torch.Tensor:
    """`(num_boxes,)` areas `(x2 - x1 + 1) * (y2 - y1 + 1)` of `(num_boxes, 4)` xyxy boxes (`BoxList.area`)."""
    return (boxes[:, 2] - boxes[:, 0] + LEGACY_PIXEL_OFFSET) * (boxes[:, 3] - boxes[:, 1] + LEGACY_PIXEL_OFFSET)


def legacy_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU with the legacy "+1" pixel convention (official `structures/boxlist_ops.py::boxlist_iou`).

    Args:
        boxes1: `(num_boxes1, 4)` xyxy.
        boxes2: `(num_boxes2, 4)` xyxy, same frame.

    Returns:
        `(num_boxes1, num_boxes2)` IoU, widths `x2 - x1 + 1`.
    """
    area1 = legacy_box_area(boxes1)
    area2 = legacy_box_area(boxes2)
    top_left = torch.max(boxes1[:, None, :2], boxes2[:, :2])  # (num_boxes1, num_boxes2, 2)
    bottom_right = torch.min(boxes1[:, None, 2:], boxes2[:, 2:])  # (num_boxes1, num_boxes2, 2)
    intersection_size = (bottom_right - top_left + LEGACY_PIXEL_OFFSET).clamp(min=0)
    intersection = intersection_size[..., 0] * intersection_size[..., 1]
    return intersection / (area1[:, None] + area2 - intersection)


def class_aware_nms(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float = 0.6
) -> torch.Tensor:
    """Greedy NMS within each label with the legacy "+1" IoU (official `ml_nms`); labels never suppress each other.

    The official kernel uses areas `(x2 - x1 + 1) * (y2 - y1 + 1)` and intersections `(min x2 - max x1 + 1)`, which is
    torchvision's IoU on boxes whose `x2, y2` are shifted by +1. Each label runs its own `torchvision.ops.nms` on
    the unshifted-magnitude coordinates (torchvision's coordinate-offset trick for batches would lose float32
    precision on large label ids). All labels equal gives plain (class-agnostic) NMS.

    Args:
        boxes (`torch.Tensor` of shape `(num_boxes, 4)`): xyxy boxes (+1 convention).
        scores (`torch.Tensor` of shape `(num_boxes,)`), labels (`torch.Tensor` of shape `(num_boxes,)`).

    Returns:
        `torch.LongTensor` of the kept indices, sorted by decreasing score (stable).
    """
    if boxes.numel() == 0:
        return torch.zeros((0,), dtype=torch.long, device=boxes.device)
    shifted_boxes = boxes.clone()
    shifted_boxes[:, 2:] += LEGACY_PIXEL_OFFSET
    keep_mask = torch.zeros(boxes.shape[0], dtype=torch.bool, device=boxes.device)
    for label in torch.unique(labels).tolist():
        label_indices = torch.nonzero(labels == label).flatten()
        kept = nms(shifted_boxes[label_indices], scores[label_indices], float(iou_threshold))
        keep_mask[label_indices[kept]] = True
    keep = torch.nonzero(keep_mask).flatten()
    return keep[torch.argsort(scores[keep], descending=True, stable=True)]


# ----------------------------------------------------------------------------------------------- anchors, coder


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
