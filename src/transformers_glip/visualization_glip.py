"""Figures: grounded detections drawn on images, a grid of detection tiles, and training curves.

* [`draw_detections`]: boxes labelled "phrase score" on one image (processor or pipeline output).
* [`best_label_per_object`], [`draw_detection_tile`], [`draw_detection_grid`]: the held-out picture of the training
  demo (ground truth in white, detections in colour, one tile per image, tiles in a grid with a footer).
* [`moving_average`], [`plot_training_curves`]: the loss curve (every loss term, raw and smoothed) next to the
  held-out AP of a training run (matplotlib, imported when called).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import torch
from torchvision.ops import nms

__all__ = [
    "best_label_per_object",
    "draw_detection_grid",
    "draw_detection_tile",
    "draw_detections",
    "moving_average",
    "plot_training_curves",
]

# A qualitative palette (Tableau 10); each phrase keeps one colour.
PALETTE = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
]


def _as_detection_list(detections: Any) -> list[tuple[list[float], str, float]]:
    """Normalise processor output (`{"boxes", "scores", "text_labels"}`) or pipeline output (list of dicts)."""
    if isinstance(detections, Mapping):
        boxes = detections["boxes"]
        scores = detections["scores"]
        names = detections.get("text_labels")
        if names is None:
            names = [str(int(label)) for label in detections["labels"]]
        boxes = boxes.tolist() if isinstance(boxes, torch.Tensor) else [list(box) for box in boxes]
        scores = scores.tolist() if isinstance(scores, torch.Tensor) else list(scores)
        return [(box, str(name), float(score)) for box, name, score in zip(boxes, names, scores)]
    if isinstance(detections, Sequence):
        result = []
        for index, detection in enumerate(detections):
            if not isinstance(detection, Mapping) or not {"box", "label", "score"} <= set(detection):
                raise TypeError(
                    f"detections[{index}] must be a pipeline result dict with 'box', 'label' and 'score', "
                    f"got {detection!r}."
                )
            box = detection["box"]
            result.append(
                ([box["xmin"], box["ymin"], box["xmax"], box["ymax"]], str(detection["label"]), detection["score"])
            )
        return result
    raise TypeError(
        "detections must be a post-processing dict with 'boxes', 'scores' and 'text_labels' (or 'labels'), or the "
        f"list returned by the zero-shot-object-detection pipeline; got {type(detections).__name__}."
    )


def draw_detections(
    image: PIL.Image.Image,
    detections: Any,
    score_threshold: float = 0.0,
    line_width: int | None = None,
    font_size: int | None = None,
) -> PIL.Image.Image:
    """Return a copy of `image` with each detection drawn as a box labelled "phrase score".

    Args:
        image: the original image (detections are in its pixel frame, xyxy).
        detections: one image's result of `GLIPProcessor.post_process_grounded_object_detection`
            (`{"boxes", "scores", "text_labels"}`) or of `pipeline("zero-shot-object-detection")`.
        score_threshold: detections with a lower score are not drawn.
        line_width: box outline width in pixels (default: scales with the image size).
        font_size: label text height in pixels (default: Pillow's default font size).
    """
    if not isinstance(image, PIL.Image.Image):
        raise TypeError(f"image must be a PIL.Image.Image, got {type(image).__name__}.")
    canvas = image.convert("RGB").copy()
    draw = PIL.ImageDraw.Draw(canvas)
    width = line_width or max(1, round(max(canvas.size) / 300))
    font = PIL.ImageFont.load_default(size=font_size) if font_size else PIL.ImageFont.load_default()
    colours: dict[str, tuple[int, int, int]] = {}
    for box, name, score in sorted(_as_detection_list(detections), key=lambda item: item[2]):
        if score < score_threshold:
            continue
        colour = colours.setdefault(name, PALETTE[len(colours) % len(PALETTE)])
        x1, y1, x2, y2 = (float(value) for value in box)
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
        caption = f"{name} {score:.2f}"
        text_box = draw.textbbox((x1, y1), caption, font=font)
        text_height = text_box[3] - text_box[1]
        text_width = text_box[2] - text_box[0] + 4
        top = y1 - text_height - 2 if y1 - text_height - 2 >= 0 else y1
        left = max(0.0, min(x1, canvas.width - text_width))  # keep the label inside the image
        draw.rectangle([left, top, left + text_width, top + text_height + 2], fill=colour)
        draw.text((left + 2, top), caption, fill=(255, 255, 255), font=font)
    return canvas


# ----------------------------------------------------------------------------------------------- detection grid


def best_label_per_object(detections: list[dict], iou_threshold: float = 0.5) -> list[dict]:
    """Pipeline detections with only the best-scoring label per object, for readable pictures: greedy NMS across
    labels (`torchvision.ops.nms`, plain IoU; the pipeline's own NMS is per label). Order: by score, best first."""
    if not detections:
        return []
    boxes = torch.tensor(
        [[float(detection["box"][key]) for key in ("xmin", "ymin", "xmax", "ymax")] for detection in detections]
    )  # (detections, 4) xyxy
    scores = torch.tensor([float(detection["score"]) for detection in detections])
    return [detections[index] for index in nms(boxes, scores, iou_threshold).tolist()]


def draw_detection_tile(
    image: PIL.Image.Image,
    detections: list[dict],
    ground_truth_boxes: Sequence[Sequence[float]] = (),
    title: str = "",
    title_color: tuple[int, int, int] = (0, 0, 0),
    scale: int = 3,
    font_size: int = 14,
) -> PIL.Image.Image:
    """One tile: `image` enlarged `scale` times (nearest neighbour, pixels stay visible), the ground truth in white,
    the detections (pipeline format, original pixels) in colour with their labels, `title` in a white header.

    Args:
        ground_truth_boxes: COCO `[x, y, width, height]` boxes in original pixels (inclusive "+1" width rule).
    """
    if not isinstance(image, PIL.Image.Image):
        raise TypeError(f"image must be a PIL.Image.Image, got {type(image).__name__}.")
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be an integer >= 1, got {scale!r}.")
    large = image.convert("RGB").resize((image.width * scale, image.height * scale), PIL.Image.NEAREST)
    draw = PIL.ImageDraw.Draw(large)
    for x, y, width, height in ground_truth_boxes:
        x, y, width, height = (value * scale for value in (x, y, width, height))
        draw.rectangle([x - 2, y - 2, x + width + 1, y + height + 1], outline=(255, 255, 255), width=1)
    scaled = [
        {**detection, "box": {key: value * scale for key, value in detection["box"].items()}}
        for detection in detections
    ]
    picture = draw_detections(large, scaled, line_width=2, font_size=font_size)
    header_height = font_size + 6
    tile = PIL.Image.new("RGB", (picture.width, picture.height + header_height), (255, 255, 255))
    tile.paste(picture, (0, header_height))
    font = PIL.ImageFont.load_default(size=font_size)
    PIL.ImageDraw.Draw(tile).text((2, 2), title, fill=title_color, font=font)
    return tile


def draw_detection_grid(
    tiles: Sequence[PIL.Image.Image], columns: int = 3, footer: str = "", font_size: int = 14
) -> PIL.Image.Image:
    """Tiles (e.g. of [`draw_detection_tile`]) in a grid of `columns` columns on white, `footer` text below."""
    if not tiles or not all(isinstance(tile, PIL.Image.Image) for tile in tiles):
        raise ValueError("tiles must be a non-empty list of PIL images.")
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns must be an integer >= 1, got {columns!r}.")
    rows = (len(tiles) + columns - 1) // columns
    cell_width = max(tile.width for tile in tiles) + 8
    cell_height = max(tile.height for tile in tiles) + 8
    footer_height = font_size + 8
    grid = PIL.Image.new(
        "RGB", (cell_width * min(columns, len(tiles)), cell_height * rows + footer_height), (255, 255, 255)
    )
    for index, tile in enumerate(tiles):
        grid.paste(tile, ((index % columns) * cell_width + 4, (index // columns) * cell_height + 4))
    font = PIL.ImageFont.load_default(size=font_size)
    PIL.ImageDraw.Draw(grid).text((4, cell_height * rows + 2), footer, fill=(0, 0, 0), font=font)
    return grid


# ----------------------------------------------------------------------------------------------- training curves


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over the last `window` values (fewer at the start)."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be an integer >= 1, got {window!r}.")
    if len(values) == 0:
        return []
    totals = torch.tensor(values, dtype=torch.float64).cumsum(0)
    totals[window:] = totals[window:] - totals[:-window].clone()
    return (totals / torch.arange(1, len(values) + 1).clamp(max=window)).tolist()


def plot_training_curves(
    points: Sequence[Mapping[str, float]],
    evaluations: Sequence[Mapping[str, float]],
    path: str | os.PathLike,
    window: int = 25,
    ap50_target: float | None = None,
) -> None:
    """Save a figure to `path`. Left: every loss term per optimizer step (faint) and its moving average over `window`
    steps (log scale). Right (when the run evaluated): held-out AP50 and AP against the step.

    Args:
        points: One dict per optimizer step: `{"step", "loss", <loss terms>...}` (the same keys in every point).
        evaluations: One dict per evaluation: `{"step", "ap50", "ap"}` (may be empty).
    """
    if not points or not all(isinstance(point, Mapping) and "step" in point for point in points):
        raise ValueError("points must be a non-empty list of dicts with a 'step' and the loss terms.")
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError("plot_training_curves needs matplotlib: pip install 'transformers-glip[train]'.") from error

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 2 if evaluations else 1
    figure, axes = plt.subplots(1, columns, figsize=(6.5 * columns, 4.2), squeeze=False)
    loss_axis = axes[0, 0]
    steps = [point["step"] for point in points]
    for index, key in enumerate(key for key in points[0] if key != "step"):
        values = [point[key] for point in points]
        loss_axis.plot(steps, values, color=f"C{index}", alpha=0.15, linewidth=0.7)
        loss_axis.plot(steps, moving_average(values, window), color=f"C{index}", label=key, linewidth=1.6)
    loss_axis.set_xlabel("optimizer step")
    loss_axis.set_ylabel(f"training loss (faint: per step, solid: mean of {window})")
    loss_axis.set_yscale("log")
    loss_axis.set_title("training losses")
    loss_axis.legend(fontsize=8)
    loss_axis.grid(alpha=0.3, which="both")
    if evaluations:
        eval_axis = axes[0, 1]
        eval_steps = [evaluation["step"] for evaluation in evaluations]
        for index, (key, name) in enumerate((("ap50", "AP50"), ("ap", "AP 0.5:0.95"))):
            values = [evaluation[key] for evaluation in evaluations]
            eval_axis.plot(eval_steps, values, marker="o", color=f"C{index}", label=name)
            eval_axis.annotate(
                f"{values[-1]:.3f}",
                (eval_steps[-1], values[-1]),
                textcoords="offset points",
                xytext=(-10, 6),
                fontsize=8,
            )
        if ap50_target is not None:
            eval_axis.axhline(
                ap50_target, color="grey", linestyle="--", linewidth=0.8, label=f"AP50 target {ap50_target}"
            )
        eval_axis.set_xlabel("optimizer step")
        eval_axis.set_ylabel("held-out COCO AP")
        eval_axis.set_ylim(0, 1)
        eval_axis.set_title("held-out evaluation")
        eval_axis.legend(fontsize=8, loc="upper left")
        eval_axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
