"""COCO box evaluation of a GLIP model through the inference path (processor -> model -> grounded post-processing).

Shared by the training script (`examples/pretrain.py`, periodic and final held-out AP) and by later evaluate /
fine-tune / pseudo-label scripts. No Accelerate here: the caller picks the process that evaluates.

* [`predict_coco_detections`]: every image of a COCO json prompted with all category names (one prompt), decoded
  with `GLIPProcessor.post_process_grounded_object_detection`; boxes exported as COCO `xywh` with the official "+1"
  width rule (`w = x2 - x1 + 1`).
* [`coco_box_metrics`]: pycocotools `COCOeval` (bbox) of such detections: AP, AP50, AP50 per category, and -- for a
  json whose categories carry a `held_out` flag (the synthetic shapes world) -- AP50 of seen and never-seen
  categories.
* [`evaluate_coco`]: both, from a COCO json file and its image folder.
"""

from __future__ import annotations

import contextlib
import io
import json
import os

import torch
from PIL import Image

__all__ = ["coco_box_metrics", "evaluate_coco", "predict_coco_detections", "read_coco_ground_truth"]


def read_coco_ground_truth(annotation_file: str | os.PathLike) -> dict:
    """Read and check a COCO detection json (`images`, `annotations`, `categories` lists; integer category ids).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: it is not json, or not a COCO detection json.
    """
    annotation_file = os.fspath(annotation_file)
    if not os.path.isfile(annotation_file):
        raise FileNotFoundError(
            f"annotation_file={annotation_file!r} is not a file; pass a COCO detection json (e.g. instances_val.json)."
        )
    try:
        with open(annotation_file, encoding="utf-8") as handle:
            data = json.load(handle)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{annotation_file} is not valid json ({error}); pass a COCO detection json.") from error
    if not isinstance(data, dict):
        raise ValueError(f"{annotation_file} must hold a json object with images, annotations and categories.")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{annotation_file}: '{key}' must be a list (a COCO detection json has all three).")
    if not data["images"] or not data["categories"]:
        raise ValueError(f"{annotation_file} lists no images or no categories; nothing can be evaluated.")
    for index, category in enumerate(data["categories"]):
        if (
            not isinstance(category, dict)
            or isinstance(category.get("id"), bool)
            or not isinstance(category.get("id"), int)
            or not isinstance(category.get("name"), str)
        ):
            raise ValueError(f"{annotation_file}: categories[{index}] needs an integer 'id' and a string 'name'.")
    for index, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            raise ValueError(f"{annotation_file}: images[{index}] needs an 'id' and a string 'file_name'.")
    return data


def _coco_index(ground_truth: dict):
    """A pycocotools `COCO` object of an in-memory json (its index messages silenced)."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = ground_truth
        coco.createIndex()
    return coco


@torch.no_grad()
def predict_coco_detections(model, processor, ground_truth: dict, image_dir: str, batch_size: int = 8) -> list[dict]:
    """COCO-format detections (`{"image_id", "category_id", "bbox": xywh, "score"}`) of `model` on every image of
    `ground_truth` (a json checked by [`read_coco_ground_truth`]); `image_dir` holds the images' `file_name`s.

    All category names form one prompt (in category id order), every detection keeps the category of its phrase;
    the model is put in eval mode (the caller restores training mode). Boxes are in original image pixels,
    `w = x2 - x1 + 1` (the official "+1" export).
    """
    categories = sorted(ground_truth["categories"], key=lambda category: category["id"])
    names = [category["name"] for category in categories]
    images = sorted(ground_truth["images"], key=lambda image: image["id"])
    model.eval()
    detections = []
    for start in range(0, len(images), batch_size):
        infos = images[start : start + batch_size]
        pictures = [_open_image(os.path.join(image_dir, info["file_name"])) for info in infos]
        inputs = processor(images=pictures, text=[names] * len(pictures), return_tensors="pt")
        outputs = model(
            pixel_values=inputs["pixel_values"].to(model.device),
            input_ids=inputs["input_ids"].to(model.device),
            attention_mask=inputs["attention_mask"].to(model.device),
            image_sizes=inputs["image_sizes"],
        )
        results = processor.post_process_grounded_object_detection(
            outputs,
            threshold=None,
            target_sizes=[(picture.height, picture.width) for picture in pictures],
            positive_map=inputs["positive_map"],
            text_labels=inputs["text_labels"],
        )
        for info, result in zip(infos, results):
            for box, score, label in zip(
                result["boxes"].tolist(), result["scores"].tolist(), result["labels"].tolist()
            ):
                x1, y1, x2, y2 = box
                detections.append(
                    {
                        "image_id": info["id"],
                        "category_id": categories[label]["id"],
                        "bbox": [x1, y1, x2 - x1 + 1, y2 - y1 + 1],
                        "score": score,
                    }
                )
    return detections


def _open_image(path: str) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(
            f"Cannot read the evaluation image {path} ({error}); check image_dir and the file_name in the json."
        ) from error


def coco_box_metrics(ground_truth: dict, detections: list[dict]) -> dict:
    """COCO bbox metrics of `detections` against `ground_truth` (both COCO json structures).

    Returns:
        `{"ap", "ap50", "ap50_per_category"}` (AP 0.5:0.95 and AP at IoU 0.5, all areas, 100 detections; per
        category `None` when it has no ground truth) plus `"ap50_seen"` / `"ap50_held_out"` (mean AP50 of the
        categories without / with a `held_out` flag) when some category has that flag. No detection: AP 0.
    """
    from pycocotools.cocoeval import COCOeval

    categories = sorted(ground_truth["categories"], key=lambda category: category["id"])
    names = [category["name"] for category in categories]
    annotated = {item["category_id"] for item in ground_truth["annotations"]}
    per_category = {category["name"]: (0.0 if category["id"] in annotated else None) for category in categories}
    metrics = {"ap": 0.0, "ap50": 0.0}
    if detections:
        coco = _coco_index(ground_truth)
        with contextlib.redirect_stdout(io.StringIO()):
            evaluation = COCOeval(coco, coco.loadRes(detections), "bbox")
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        precision = evaluation.eval["precision"][0, :, :, 0, 2]  # (recall thresholds, categories) at IoU 0.5
        for index, name in enumerate(names):
            values = precision[:, index]
            if (values > -1).any():
                per_category[name] = float(values[values > -1].mean())
        metrics = {"ap": float(evaluation.stats[0]), "ap50": float(evaluation.stats[1])}
    metrics["ap50_per_category"] = per_category
    held_out = [category["name"] for category in categories if category.get("held_out")]
    if held_out:
        for key, group in (
            ("ap50_seen", [name for name in names if name not in held_out]),
            ("ap50_held_out", held_out),
        ):
            values = [per_category[name] for name in group if per_category[name] is not None]
            metrics[key] = sum(values) / len(values) if values else None
    return metrics


def evaluate_coco(
    model, processor, annotation_file: str | os.PathLike, image_dir: str | os.PathLike, batch_size: int = 8
) -> dict:
    """COCO box AP of `model` (a `GLIPForGrounding`) with `processor` (its `GLIPProcessor`) on a COCO json and its
    image folder; see [`predict_coco_detections`] and [`coco_box_metrics`] (same return value).

    Raises:
        FileNotFoundError: `annotation_file` or `image_dir` does not exist.
        ValueError: the json is not a COCO detection json, an image cannot be read, `batch_size < 1`.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
    ground_truth = read_coco_ground_truth(annotation_file)
    image_dir = os.fspath(image_dir)
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(
            f"image_dir={image_dir!r} is not a folder; pass the folder the file_names of {annotation_file} are in."
        )
    detections = predict_coco_detections(model, processor, ground_truth, image_dir, batch_size)
    return coco_box_metrics(ground_truth, detections)
