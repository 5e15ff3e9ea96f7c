"""Drawing grounded detections on images (boxes, phrase, score)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import torch

__all__ = ["draw_detections"]

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
