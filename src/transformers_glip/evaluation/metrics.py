"""Detection and grounding metrics of the GLIP transfer protocols, with the interface of 🤗 `evaluate` metrics.

Three metrics, each an object with `add(prediction=..., reference=...)`, `add_batch(predictions=...,
references=...)` and `compute()` (keyword-only, as `evaluate.Metric`):

* [`GLIPCocoMetric`]: COCO box AP (AP, AP50, AP75, APs/APm/APl, AR1/AR10/AR100, per-category AP) computed by
  `pycocotools.cocoeval.COCOeval`;
* [`GLIPLvisMetric`]: LVIS box AP with APr/APc/APf, in the FixedAP protocol (Dave et al. 2021, "Evaluating
  Large-Vocabulary Object Detectors: The Devil is in the Details": no per-image cap, the top
  `detections_per_category` detections of each category over the whole dataset) or the standard one (top 300 per
  image). The `lvis` package (0.5.3) cannot be used: `import lvis` needs OpenCV (`lvis/vis.py`) and its `eval.py`
  calls `np.float`, removed in numpy 1.24. The LVIS rules are therefore applied around `COCOeval`, which does all
  the matching and the precision/recall accumulation: detections of a category that is neither annotated in an
  image nor in its `neg_category_ids` are discarded (federated annotation), unmatched detections of a category in
  the image's `not_exhaustive_category_ids` are ignored (set in `COCOeval.evalImgs[...]["dtIgnore"]` before
  `accumulate`, exactly as `lvis/eval.py::LVISEval.evaluate_img` does), and APr/APc/APf average the per-category AP
  of the categories whose `frequency` is `"r"`, `"c"`, `"f"`;
* [`GLIPFlickrGroundingMetric`]: Flickr30K Entities phrase grounding Recall@k (MDETR protocol,
  `mdetr/datasets/flickr_eval.py`, also GLIP's `evaluation/flickr/flickr_eval.py`): a phrase is found at `k` when
  one of the `k` highest-scoring boxes predicted for it has IoU >= 0.5 with its ground truth, "separate" = any of
  the phrase's boxes, "merged" = the union box of the phrase's boxes; ground truth read from MDETR's
  `final_flickr_{separate,merged}GT_{val,test}.json`.

These classes keep their state in memory. The same metrics as `evaluate.Metric` subclasses (Arrow-stored per-image
rows, `evaluate.load` scripts, evaluate's own multi-process gathering through file locks) are in
`evaluation.evaluate_metrics`, which hands the gathered rows to these classes. Distributed evaluation without
`evaluate` gathers the per-image predictions (e.g. `accelerate.utils.gather_object`, as `examples/evaluate.py`) and
adds them on one process; the library never imports accelerate.

Box conventions. Predictions are what [`detect`] and `GLIPProcessor.post_process_grounded_object_detection`
return: per image `boxes` `(num_detections, 4)` xyxy in original-image pixels with the inclusive Detectron "+1"
convention (`x2 = x + w - 1`, see `box_geometry_glip.py`), `scores` `(num_detections,)`, `labels`
`(num_detections,)` 0-based indices into the image's label (or phrase) list. They go back to COCO `xywh` with
`w = x2 - x1 + 1` ([`xyxy_to_coco_xywh`]), so a box produced from a COCO annotation by `xywh_to_xyxy` is scored
with IoU 1 against that annotation.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision.ops import box_iou

from ..box_geometry_glip import LEGACY_PIXEL_OFFSET

__all__ = [
    "COCO_SUMMARY_NAMES",
    "FLICKR_IOU_THRESHOLD",
    "LVIS_FREQUENCY_NAMES",
    "GLIPCocoMetric",
    "GLIPFlickrGroundingMetric",
    "GLIPLvisMetric",
    "coco_xywh_to_exclusive_xyxy",
    "xyxy_to_coco_xywh",
]

# Names of the figures of `COCOeval.summarize` (pycocotools `cocoeval.py::_summarizeDets`) at the default budget 100.
COCO_SUMMARY_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
# LVIS category `frequency` field -> summary name (rare: 1-10 training images, common: 11-100, frequent: > 100).
LVIS_FREQUENCY_NAMES = {"r": "APr", "c": "APc", "f": "APf"}
# MDETR / Flickr30K Entities: a box localises a phrase when IoU >= 0.5.
FLICKR_IOU_THRESHOLD = 0.5


# ----------------------------------------------------------------------------------------------- boxes


def xyxy_to_coco_xywh(boxes: np.ndarray) -> np.ndarray:
    """Inclusive xyxy `(num_boxes, 4)` (`x2 = x + w - 1`) -> COCO `[x, y, w, h]` with `w = x2 - x1 + 1`."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    widths = boxes[:, 2] - boxes[:, 0] + LEGACY_PIXEL_OFFSET
    heights = boxes[:, 3] - boxes[:, 1] + LEGACY_PIXEL_OFFSET
    return np.stack([boxes[:, 0], boxes[:, 1], widths, heights], axis=1)


def coco_xywh_to_exclusive_xyxy(boxes: np.ndarray) -> np.ndarray:
    """COCO `[x, y, w, h]` `(num_boxes, 4)` -> exclusive xyxy `[x, y, x + w, y + h]` (torchvision's IoU frame)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


# ----------------------------------------------------------------------------------------------- input checks


def _as_array(value: Any, name: str, dtype) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().float().numpy() if value.is_floating_point() else value.detach().cpu().numpy()
    try:
        return np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a tensor, an array or a list of numbers ({error}).") from error


def _prediction_arrays(prediction: Any, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(boxes (N, 4) float64, scores (N,) float64, labels (N,) int64)` of one image's detections, validated."""
    if not isinstance(prediction, Mapping):
        raise TypeError(
            f"{name} must be a dict with `boxes`, `scores` and `labels` (the output of `detect` or "
            f"`post_process_grounded_object_detection` for one image), got {type(prediction).__name__}."
        )
    missing = [key for key in ("boxes", "scores", "labels") if key not in prediction]
    if missing:
        raise ValueError(f"{name} lacks {missing}; it needs `boxes` (xyxy), `scores` and `labels`.")
    boxes = _as_array(prediction["boxes"], f"{name}['boxes']", np.float64)
    scores = _as_array(prediction["scores"], f"{name}['scores']", np.float64).reshape(-1)
    labels = _as_array(prediction["labels"], f"{name}['labels']", np.float64).reshape(-1)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name}['boxes'] must have shape (num_detections, 4), got {boxes.shape}.")
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError(
            f"{name}: boxes, scores and labels must have one entry per detection, got {len(boxes)}, {len(scores)} "
            f"and {len(labels)}."
        )
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        raise ValueError(f"{name} holds NaN or infinite boxes or scores.")
    if len(labels) and (labels.min() < 0 or not np.array_equal(labels, np.round(labels))):
        raise ValueError(f"{name}['labels'] must be non-negative integer label indices.")
    return boxes, scores, labels.astype(np.int64)


def _check_pairs(predictions: Any, references: Any) -> tuple[list, list]:
    if predictions is None or references is None:
        raise ValueError("`predictions` and `references` must both be given (one entry per image).")
    if isinstance(predictions, Mapping) or not isinstance(predictions, Sequence):
        raise TypeError("`predictions` must be a list with one dict per image.")
    if isinstance(references, (str, bytes, Mapping)) or not isinstance(references, Sequence):
        raise TypeError("`references` must be a list with one entry per image.")
    if len(predictions) != len(references):
        raise ValueError(
            f"`predictions` and `references` must have the same length (one per image), got {len(predictions)} "
            f"and {len(references)}."
        )
    return list(predictions), list(references)


def _load_json_dataset(annotation_file: Any, name: str) -> dict:
    """A COCO-format dict from a path, a dict or a `pycocotools.coco.COCO` (deep-copied: never edited in place)."""
    if isinstance(annotation_file, COCO):
        return copy.deepcopy(annotation_file.dataset)
    if isinstance(annotation_file, Mapping):
        dataset = copy.deepcopy(dict(annotation_file))
    elif isinstance(annotation_file, (str, os.PathLike)):
        if not os.path.isfile(annotation_file):
            raise ValueError(f"`{name}` {os.fspath(annotation_file)!r} is not a file.")
        with open(annotation_file) as handle:
            dataset = json.load(handle)
    else:
        raise TypeError(f"`{name}` must be a path to a json file, a dict or a pycocotools COCO object.")
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            raise ValueError(
                f"`{name}` must hold the lists `images`, `annotations` and `categories` (missing {key!r})."
            )
    return dataset


def _reference_image_id(reference: Any, name: str) -> int:
    image_id = reference.get("image_id") if isinstance(reference, Mapping) else reference
    if isinstance(image_id, torch.Tensor) and image_id.numel() == 1:
        image_id = image_id.item()
    if isinstance(image_id, (bool, np.bool_)) or not isinstance(image_id, (int, np.integer)):
        raise TypeError(f"{name} must be an image id (int) or a dict with `image_id`, got {image_id!r}.")
    return int(image_id)


# ----------------------------------------------------------------------------------------------- COCO machinery


def _coco_from_dataset(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _prepare_ground_truth(dataset: dict) -> dict:
    """Fill the fields COCOeval reads but LVIS / hand-made jsons may lack, and number annotations from 1.

    `COCOeval` marks an unmatched detection with match id 0, so a ground-truth annotation with id 0 would be
    counted as unmatched; annotation ids are therefore renumbered 1..N (they are not used for anything else).
    """
    for index, annotation in enumerate(dataset["annotations"]):
        annotation["id"] = index + 1
        annotation.setdefault("iscrowd", 0)
        if "area" not in annotation:
            annotation["area"] = float(annotation["bbox"][2]) * float(annotation["bbox"][3])
    return dataset


def _run_cocoeval(
    ground_truth: COCO,
    detections: list[dict],
    image_ids: list[int],
    budget: int,
    not_exhaustive: set[tuple[int, int]] | None = None,
) -> COCOeval:
    """`COCOeval` (bbox) on `image_ids`, with optional LVIS not-exhaustive ignoring; returns the accumulated eval.

    `budget` is the per-(image, category) detection cap of `COCOeval` and the budget of the summary; recalls are
    also accumulated at 1 and 10 detections when below it (`params.maxDets`, which pycocotools sorts).
    """
    results = {
        "images": ground_truth.dataset["images"],
        "categories": ground_truth.dataset["categories"],
        "annotations": [
            {**detection, "id": index + 1, "iscrowd": 0, "area": detection["bbox"][2] * detection["bbox"][3]}
            for index, detection in enumerate(detections)
        ],
    }
    evaluator = COCOeval(ground_truth, _coco_from_dataset(results), iouType="bbox")
    evaluator.params.imgIds = sorted(image_ids)
    evaluator.params.maxDets = sorted({value for value in (1, 10, budget) if value <= budget})
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        if not_exhaustive:
            for entry in evaluator.evalImgs:
                if entry is not None and (entry["image_id"], entry["category_id"]) in not_exhaustive:
                    # LVIS: a detection of a category not exhaustively annotated in this image is ignored unless it
                    # matches a ground-truth box (`lvis/eval.py::evaluate_img`, `dt_ig_mask`).
                    entry["dtIgnore"] = np.logical_or(entry["dtIgnore"], entry["dtMatches"] == 0)
        evaluator.accumulate()
    return evaluator


def _mean_valid(values: np.ndarray) -> float:
    """Mean over the entries > -1 (-1 marks "no ground truth"), -1 when there is none: `COCOeval.summarize`'s
    averaging."""
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else -1.0


def _summarize(evaluator: COCOeval) -> dict[str, float]:
    """The `COCOeval.summarize` figures at the evaluator's own detection budgets.

    `summarize` itself hard-codes `maxDets=100` for the first AP, which is wrong for any other budget (LVIS: 300
    or none), so the same averages of `evaluator.eval["precision"]` / `["recall"]` are taken here at the largest
    budget `params.maxDets[-1]` (pycocotools sorts `maxDets`). Recall keys are `AR{budget}` for each budget.
    """
    params = evaluator.params
    # precision: (iou_thresholds, recall_thresholds, categories, area_ranges, max_detections); recall: no recall axis
    precision, recall = evaluator.eval["precision"], evaluator.eval["recall"]
    area = {label: index for index, label in enumerate(params.areaRngLbl)}
    iou_50 = int(np.flatnonzero(np.isclose(params.iouThrs, 0.5))[0])
    iou_75 = int(np.flatnonzero(np.isclose(params.iouThrs, 0.75))[0])
    results = {
        "AP": _mean_valid(precision[:, :, :, area["all"], -1]),
        "AP50": _mean_valid(precision[iou_50, :, :, area["all"], -1]),
        "AP75": _mean_valid(precision[iou_75, :, :, area["all"], -1]),
        "APs": _mean_valid(precision[:, :, :, area["small"], -1]),
        "APm": _mean_valid(precision[:, :, :, area["medium"], -1]),
        "APl": _mean_valid(precision[:, :, :, area["large"], -1]),
    }
    for index, budget in enumerate(params.maxDets):
        results[f"AR{budget}"] = _mean_valid(recall[:, :, area["all"], index])
    results["ARs"] = _mean_valid(recall[:, :, area["small"], -1])
    results["ARm"] = _mean_valid(recall[:, :, area["medium"], -1])
    results["ARl"] = _mean_valid(recall[:, :, area["large"], -1])
    return results


def _category_average_precision(evaluator: COCOeval) -> np.ndarray:
    """`(num_categories,)` AP over IoU 0.50:0.95, area "all", last maxDets, in `params.catIds` order; -1 when the
    category has no ground truth (same averaging as `COCOeval.summarize`)."""
    # (iou_thresholds, recall_thresholds, categories, area_ranges, max_detections)
    all_areas = evaluator.params.areaRngLbl.index("all")
    # (iou_thresholds, recall_thresholds, categories)
    precision = evaluator.eval["precision"][:, :, :, all_areas, -1]
    return np.asarray([_mean_valid(precision[:, :, index]) for index in range(precision.shape[2])])


class _ImageDetectionStore:
    """Per-image detections keyed by image id, shared by the COCO and LVIS metrics."""

    def __init__(self) -> None:
        self.detections: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def add(self, image_id: int, arrays: tuple[np.ndarray, np.ndarray, np.ndarray], name: str) -> None:
        if image_id in self.detections:
            raise ValueError(
                f"{name}: image id {image_id} was added twice (with distributed evaluation, drop the duplicated "
                "samples `gather_for_metrics` pads with, or add each image once)."
            )
        self.detections[image_id] = arrays


# ----------------------------------------------------------------------------------------------- COCO


class GLIPCocoMetric:
    """COCO box AP of detections, by `pycocotools` (never a hand-written AP).

    Two ways to give the ground truth:

    * `annotation_file` (COCO json path, dict or `pycocotools.coco.COCO`): references are image ids (or dicts with
      `image_id`); prediction label `i` is category `category_ids[i]` (default: the json's category ids sorted,
      i.e. labels index `[c["name"] for c in sorted(categories, key=id)]`, the label list given to [`detect`]).
      Only the added images are evaluated.
    * no `annotation_file`: each reference is a dict `{"boxes": (num_boxes, 4) inclusive xyxy original pixels (the
      frame of the predictions), "labels": (num_boxes,) label indices, optional "image_id", "iscrowd", "area"}`;
      label `i` is its own category, named `category_names[i]` in the per-category table (default `str(i)`).

    Example:

    ```python
    metric = GLIPCocoMetric("instances_val2017.json")
    for images, image_ids in loader:
        metric.add_batch(predictions=detect(model, processor, images, names, threshold=None), references=image_ids)
    results = metric.compute()  # {"AP": ..., "AP50": ..., "per_category": {"person": ..., ...}}
    ```

    Args:
        annotation_file (*optional*): COCO ground truth, see above.
        category_ids (`list[int]`, *optional*): category id of each prediction label (annotation-file mode).
        category_names (`list[str]`, *optional*): name of each label (per-image mode).
        max_detections (`int`, *optional*, defaults to 100): COCO's per-image budget: the `max_detections`
            highest-scoring detections of each image are evaluated (what the official detectors output, at most 100
            per image; pycocotools alone only caps each image *and category*).
    """

    def __init__(
        self,
        annotation_file: str | os.PathLike | Mapping | COCO | None = None,
        category_ids: Sequence[int] | None = None,
        category_names: Sequence[str] | None = None,
        max_detections: int = 100,
    ) -> None:
        if isinstance(max_detections, bool) or not isinstance(max_detections, int) or max_detections < 1:
            raise ValueError(f"`max_detections` must be a positive integer, got {max_detections!r}.")
        self.max_detections = max_detections
        if annotation_file is not None:
            if category_names is not None:
                raise ValueError("`category_names` is for per-image references; the json names the categories.")
            self.ground_truth_dataset = _prepare_ground_truth(_load_json_dataset(annotation_file, "annotation_file"))
            known_ids = sorted(category["id"] for category in self.ground_truth_dataset["categories"])
            if category_ids is None:
                category_ids = known_ids
            unknown = sorted(set(category_ids) - set(known_ids))
            if unknown:
                raise ValueError(f"`category_ids` {unknown} are not categories of `annotation_file`.")
            self.category_ids = [int(category_id) for category_id in category_ids]
            self.known_image_ids = {image["id"] for image in self.ground_truth_dataset["images"]}
            self.category_names = None
        else:
            if category_ids is not None:
                raise ValueError("`category_ids` needs `annotation_file`; per-image labels are the categories.")
            self.ground_truth_dataset = None
            self.category_ids = None
            self.category_names = list(category_names) if category_names is not None else None
        self.reset()

    def reset(self) -> None:
        """Forget every added image."""
        self.store = _ImageDetectionStore()
        self.reference_records: dict[int, dict] = {}

    def add(self, *, prediction: Any = None, reference: Any = None) -> None:
        """Add one image (see [`add_batch`])."""
        self.add_batch(predictions=[prediction], references=[reference])

    def add_batch(self, *, predictions: Any = None, references: Any = None) -> None:
        """Add images: `predictions[i]` (dict with `boxes`, `scores`, `labels`) for reference `references[i]`."""
        predictions, references = _check_pairs(predictions, references)
        for index, (prediction, reference) in enumerate(zip(predictions, references)):
            name = f"predictions[{index}]"
            boxes, scores, labels = _prediction_arrays(prediction, name)
            if self.ground_truth_dataset is not None:
                image_id = _reference_image_id(reference, f"references[{index}]")
                if image_id not in self.known_image_ids:
                    raise ValueError(f"references[{index}]: image id {image_id} is not in `annotation_file`.")
                if len(labels) and labels.max() >= len(self.category_ids):
                    raise ValueError(
                        f"{name}['labels'] holds label {labels.max()} but only {len(self.category_ids)} categories "
                        "are known (pass `category_ids` in the order of the label list given to the model)."
                    )
            else:
                image_id = self._add_reference_record(reference, index)
            self.store.add(image_id, (boxes, scores, labels), name)

    def _add_reference_record(self, reference: Any, index: int) -> int:
        name = f"references[{index}]"
        if not isinstance(reference, Mapping) or "boxes" not in reference or "labels" not in reference:
            raise TypeError(
                f"{name} must be a dict with `boxes` (inclusive xyxy) and `labels` when no `annotation_file` is given."
            )
        boxes = _as_array(reference["boxes"], f"{name}['boxes']", np.float64)
        boxes = boxes.reshape(0, 4) if boxes.size == 0 else boxes
        labels = _as_array(reference["labels"], f"{name}['labels']", np.int64).reshape(-1)
        if boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) != len(labels):
            raise ValueError(f"{name}: `boxes` must be (num_boxes, 4) with one label per box.")
        if len(labels) and labels.min() < 0:
            raise ValueError(f"{name}['labels'] must be non-negative label indices.")
        if self.category_names is not None and len(labels) and labels.max() >= len(self.category_names):
            raise ValueError(f"{name}['labels'] holds label {labels.max()}, beyond `category_names`.")
        image_id = reference.get("image_id", len(self.reference_records))
        image_id = _reference_image_id(image_id, f"{name}['image_id']")
        if image_id in self.reference_records:
            raise ValueError(f"{name}: image id {image_id} was added twice.")
        iscrowd = reference.get("iscrowd")
        area = reference.get("area")
        self.reference_records[image_id] = {
            "boxes": boxes,
            "labels": labels,
            "iscrowd": None if iscrowd is None else _as_array(iscrowd, f"{name}['iscrowd']", np.int64).reshape(-1),
            "area": None if area is None else _as_array(area, f"{name}['area']", np.float64).reshape(-1),
        }
        return image_id

    def _per_image_ground_truth(self) -> tuple[dict, dict[int, str]]:
        labels_seen = {int(label) for record in self.reference_records.values() for label in record["labels"]}
        if self.category_names is not None:
            names = dict(enumerate(self.category_names))
        else:
            names = {label: str(label) for label in sorted(labels_seen)}
        annotations = []
        for image_id, record in self.reference_records.items():
            xywh = xyxy_to_coco_xywh(record["boxes"])
            for box_index, (box, label) in enumerate(zip(xywh, record["labels"])):
                annotation = {"image_id": image_id, "category_id": int(label), "bbox": box.tolist()}
                if record["iscrowd"] is not None:
                    annotation["iscrowd"] = int(record["iscrowd"][box_index])
                if record["area"] is not None:
                    annotation["area"] = float(record["area"][box_index])
                annotations.append(annotation)
        dataset = {
            "images": [{"id": image_id} for image_id in self.reference_records],
            "annotations": annotations,
            "categories": [{"id": category_id, "name": name} for category_id, name in names.items()],
        }
        return _prepare_ground_truth(dataset), names

    def _detections(self, label_to_category: Sequence[int] | None) -> list[dict]:
        detections = []
        for image_id, (boxes, scores, labels) in self.store.detections.items():
            order = np.argsort(-scores, kind="stable")[: self.max_detections]
            for box, score, label in zip(xyxy_to_coco_xywh(boxes[order]), scores[order], labels[order]):
                category_id = int(label) if label_to_category is None else label_to_category[int(label)]
                detections.append(
                    {"image_id": image_id, "category_id": category_id, "bbox": box.tolist(), "score": float(score)}
                )
        return detections

    def compute(self, *, predictions: Any = None, references: Any = None) -> dict[str, Any]:
        """COCO summary of the added images (plus `predictions`/`references` if given); clears the state.

        Returns:
            `dict`: `AP`, `AP50`, `AP75`, `APs`, `APm`, `APl`, `AR1`, `AR10`, `AR{max_detections}` (`AR100` by
            default), `ARs`, `ARm`, `ARl` (floats in [0, 1]; -1 where no ground truth falls in that area range, the
            pycocotools convention), `per_category`
            (`{name: AP}`, -1 for categories without ground truth in the evaluated images), `num_images`.
        """
        if predictions is not None or references is not None:
            self.add_batch(predictions=predictions, references=references)
        if not self.store.detections:
            raise ValueError("No image was added: call `add_batch(predictions=..., references=...)` first.")
        if self.ground_truth_dataset is not None:
            dataset = self.ground_truth_dataset
            names = {category["id"]: category["name"] for category in dataset["categories"]}
            detections = self._detections(self.category_ids)
        else:
            dataset, names = self._per_image_ground_truth()
            detections = self._detections(None)
        ground_truth = _coco_from_dataset(dataset)
        image_ids = list(self.store.detections)
        evaluator = _run_cocoeval(ground_truth, detections, image_ids, self.max_detections)
        results: dict[str, Any] = _summarize(evaluator)
        per_category = _category_average_precision(evaluator)
        results["per_category"] = {
            names[category_id]: float(value) for category_id, value in zip(evaluator.params.catIds, per_category)
        }
        results["num_images"] = len(image_ids)
        self.reset()
        return results


# ----------------------------------------------------------------------------------------------- LVIS


class GLIPLvisMetric:
    """LVIS box AP with APr / APc / APf, FixedAP protocol by default (see the module docstring).

    References are image ids (or dicts with `image_id`) of the LVIS json; prediction label `i` is category
    `category_ids[i]` (default: the json's category ids sorted). With a large vocabulary, [`detect`] chunks the
    labels into several prompts and returns one merged list per image, which is what this metric takes.

    Args:
        annotation_file: LVIS json (path, dict or `pycocotools.coco.COCO`), whose images carry `neg_category_ids`
            and `not_exhaustive_category_ids` and whose categories carry `frequency` (`"r"`, `"c"` or `"f"`).
        category_ids (`list[int]`, *optional*): category id of each prediction label.
        fixed_ap (`bool`, *optional*, defaults to `True`): FixedAP (no per-image cap, the top
            `detections_per_category` detections of each category over the dataset); `False`: the standard LVIS
            protocol (top `max_detections_per_image` per image).
        detections_per_category (`int`, *optional*, defaults to 10000): FixedAP's per-category budget.
        max_detections_per_image (`int`, *optional*, defaults to 300): standard LVIS per-image cap.
    """

    def __init__(
        self,
        annotation_file: str | os.PathLike | Mapping | COCO,
        category_ids: Sequence[int] | None = None,
        fixed_ap: bool = True,
        detections_per_category: int = 10000,
        max_detections_per_image: int = 300,
    ) -> None:
        if not isinstance(fixed_ap, bool):
            raise TypeError(f"`fixed_ap` must be True or False, got {fixed_ap!r}.")
        for name, value in (
            ("detections_per_category", detections_per_category),
            ("max_detections_per_image", max_detections_per_image),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        self.fixed_ap = fixed_ap
        self.detections_per_category = detections_per_category
        self.max_detections_per_image = max_detections_per_image
        dataset = _prepare_ground_truth(_load_json_dataset(annotation_file, "annotation_file"))
        for category in dataset["categories"]:
            if category.get("frequency") not in LVIS_FREQUENCY_NAMES:
                raise ValueError(
                    f"LVIS category {category.get('id')} has frequency {category.get('frequency')!r}; every category "
                    "needs `frequency` 'r', 'c' or 'f' (the LVIS v1 json has it)."
                )
        self.ground_truth_dataset = dataset
        known_ids = sorted(category["id"] for category in dataset["categories"])
        category_ids = known_ids if category_ids is None else [int(category_id) for category_id in category_ids]
        unknown = sorted(set(category_ids) - set(known_ids))
        if unknown:
            raise ValueError(f"`category_ids` {unknown} are not categories of `annotation_file`.")
        self.category_ids = category_ids
        self.images = {image["id"]: image for image in dataset["images"]}
        self.positive_categories: dict[int, set[int]] = defaultdict(set)
        for annotation in dataset["annotations"]:
            self.positive_categories[annotation["image_id"]].add(annotation["category_id"])
        self.reset()

    def reset(self) -> None:
        """Forget every added image."""
        self.store = _ImageDetectionStore()

    def add(self, *, prediction: Any = None, reference: Any = None) -> None:
        """Add one image (see [`add_batch`])."""
        self.add_batch(predictions=[prediction], references=[reference])

    def add_batch(self, *, predictions: Any = None, references: Any = None) -> None:
        """Add images: `predictions[i]` (dict with `boxes`, `scores`, `labels`) for image id `references[i]`."""
        predictions, references = _check_pairs(predictions, references)
        for index, (prediction, reference) in enumerate(zip(predictions, references)):
            name = f"predictions[{index}]"
            arrays = _prediction_arrays(prediction, name)
            image_id = _reference_image_id(reference, f"references[{index}]")
            if image_id not in self.images:
                raise ValueError(f"references[{index}]: image id {image_id} is not in `annotation_file`.")
            labels = arrays[2]
            if len(labels) and labels.max() >= len(self.category_ids):
                raise ValueError(
                    f"{name}['labels'] holds label {labels.max()} but only {len(self.category_ids)} categories are "
                    "known (pass `category_ids` in the order of the label list given to the model)."
                )
            self.store.add(image_id, arrays, name)

    def _selected_detections(self) -> list[dict]:
        """Protocol selection (FixedAP per-category top-k, or per-image top-k), then the federated filter."""
        detections = []
        for image_id, (boxes, scores, labels) in self.store.detections.items():
            order = np.argsort(-scores, kind="stable")
            if not self.fixed_ap:
                order = order[: self.max_detections_per_image]
            for box, score, label in zip(xyxy_to_coco_xywh(boxes[order]), scores[order], labels[order]):
                detections.append(
                    {
                        "image_id": image_id,
                        "category_id": self.category_ids[int(label)],
                        "bbox": box.tolist(),
                        "score": float(score),
                    }
                )
        if self.fixed_ap:
            by_category: dict[int, list[dict]] = defaultdict(list)
            for detection in detections:
                by_category[detection["category_id"]].append(detection)
            detections = []
            for category_detections in by_category.values():
                category_detections.sort(key=lambda detection: -detection["score"])
                detections.extend(category_detections[: self.detections_per_category])
        # Federated annotation (`LVISEval._prepare`): only categories known present or known absent are judged.
        return [
            detection
            for detection in detections
            if detection["category_id"] in self.positive_categories[detection["image_id"]]
            or detection["category_id"] in self.images[detection["image_id"]].get("neg_category_ids", ())
        ]

    def compute(self, *, predictions: Any = None, references: Any = None) -> dict[str, Any]:
        """LVIS summary of the added images; clears the state.

        Returns:
            `dict`: `AP`, `AP50`, `AP75`, `APs`, `APm`, `APl`, `APr`, `APc`, `APf` (floats in [0, 1], -1 when no
            category of the group has ground truth), `AR` (at the protocol's detection budget), `per_category`
            (`{name: AP}`), `num_images`, `protocol` (`"fixed_ap"` or `"standard"`).
        """
        if predictions is not None or references is not None:
            self.add_batch(predictions=predictions, references=references)
        if not self.store.detections:
            raise ValueError("No image was added: call `add_batch(predictions=..., references=...)` first.")
        detections = self._selected_detections()
        image_ids = list(self.store.detections)
        if self.fixed_ap:
            # No per-image cap: COCOeval's per-(image, category) cap set above the largest possible count.
            per_image_cap = max(1, max(len(arrays[0]) for arrays in self.store.detections.values()))
        else:
            per_image_cap = self.max_detections_per_image
        not_exhaustive = {
            (image_id, category_id)
            for image_id in image_ids
            for category_id in self.images[image_id].get("not_exhaustive_category_ids", ())
        }
        evaluator = _run_cocoeval(
            _coco_from_dataset(self.ground_truth_dataset),
            detections,
            image_ids,
            per_image_cap,
            not_exhaustive,
        )
        summary = _summarize(evaluator)
        results: dict[str, Any] = {name: summary[name] for name in ("AP", "AP50", "AP75", "APs", "APm", "APl")}
        per_category = _category_average_precision(evaluator)
        categories = {category["id"]: category for category in self.ground_truth_dataset["categories"]}
        for frequency, name in LVIS_FREQUENCY_NAMES.items():
            values = [
                value
                for category_id, value in zip(evaluator.params.catIds, per_category)
                if categories[category_id]["frequency"] == frequency and value > -1
            ]
            results[name] = float(np.mean(values)) if values else -1.0
        results["AR"] = summary[f"AR{evaluator.params.maxDets[-1]}"]
        results["per_category"] = {
            categories[category_id]["name"]: float(value)
            for category_id, value in zip(evaluator.params.catIds, per_category)
        }
        results["num_images"] = len(image_ids)
        results["protocol"] = "fixed_ap" if self.fixed_ap else "standard"
        self.reset()
        return results


# ----------------------------------------------------------------------------------------------- Flickr30K


class GLIPFlickrGroundingMetric:
    """Flickr30K Entities phrase grounding Recall@k, MDETR protocol, from MDETR's json.

    Each image entry of the json is one (image, sentence) pair: `caption`, `tokens_positive_eval` (one span list
    `[[begin, end]]` per phrase to evaluate, in order) and its annotations (`bbox` xywh with `w = xmax - xmin` as
    MDETR's `flickr_combined.py` writes it, `tokens_positive` = the spans of the phrases the box belongs to). The
    ground-truth boxes of phrase `p` are the annotations whose `tokens_positive` contain one of the phrase's spans.

    A prediction is one image entry's detections with `labels` = phrase index `p` (into `tokens_positive_eval`),
    the output of grounding post-processing for that caption; a phrase's boxes are ranked by decreasing score.
    Predictions are inclusive xyxy (`x2 = x + w - 1`) and are compared in the exclusive frame of the MDETR
    evaluator (`x2 + 1`), with torchvision's IoU.

    Args:
        annotation_file: MDETR json (`final_flickr_separateGT_val.json` or `..._mergedGT_...`), path or dict. From a
            mergedGT json each phrase has one box and "separate" equals "merged".
        top_k (`tuple[int]`, *optional*, defaults to `(1, 5, 10)`): the recalls to report.
        iou_threshold (`float`, *optional*, defaults to 0.5).
    """

    def __init__(
        self,
        annotation_file: str | os.PathLike | Mapping,
        top_k: Sequence[int] = (1, 5, 10),
        iou_threshold: float = FLICKR_IOU_THRESHOLD,
    ) -> None:
        if isinstance(top_k, (str, bytes)) or not isinstance(top_k, Sequence) or not top_k:
            raise TypeError(f"`top_k` must be a non-empty list of positive integers, got {top_k!r}.")
        if any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in top_k):
            raise ValueError(f"`top_k` must hold positive integers, got {list(top_k)}.")
        if not 0.0 < float(iou_threshold) <= 1.0:
            raise ValueError(f"`iou_threshold` must be in (0, 1], got {iou_threshold!r}.")
        self.top_k = tuple(top_k)
        self.iou_threshold = float(iou_threshold)
        dataset = _load_json_dataset(annotation_file, "annotation_file")
        boxes_by_image: dict[int, list[tuple[list[float], set[tuple[int, int]]]]] = defaultdict(list)
        for annotation in dataset["annotations"]:
            spans = {tuple(span) for span in annotation.get("tokens_positive", [])}
            boxes_by_image[annotation["image_id"]].append((annotation["bbox"], spans))
        # image entry id -> one (num_gt_boxes, 4) exclusive xyxy array per phrase (phrases without boxes skipped)
        self.phrase_boxes: dict[int, list[np.ndarray | None]] = {}
        for image in dataset["images"]:
            if "tokens_positive_eval" not in image:
                raise ValueError(
                    f"image entry {image.get('id')} has no `tokens_positive_eval`; use MDETR's "
                    "final_flickr_*GT_{val,test}.json."
                )
            phrases = []
            for phrase_spans in image["tokens_positive_eval"]:
                wanted = {tuple(span) for span in phrase_spans}
                boxes = [box for box, spans in boxes_by_image[image["id"]] if spans & wanted]
                phrases.append(coco_xywh_to_exclusive_xyxy(boxes) if boxes else None)
            self.phrase_boxes[image["id"]] = phrases
        self.reset()

    def reset(self) -> None:
        """Forget every added image entry."""
        self.predictions: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def add(self, *, prediction: Any = None, reference: Any = None) -> None:
        """Add one image entry (see [`add_batch`])."""
        self.add_batch(predictions=[prediction], references=[reference])

    def add_batch(self, *, predictions: Any = None, references: Any = None) -> None:
        """Add image entries: `predictions[i]` (`boxes`, `scores`, `labels` = phrase indices) for entry id
        `references[i]` (the json image `id`, or a dict with `image_id`)."""
        predictions, references = _check_pairs(predictions, references)
        for index, (prediction, reference) in enumerate(zip(predictions, references)):
            name = f"predictions[{index}]"
            boxes, scores, labels = _prediction_arrays(prediction, name)
            image_id = _reference_image_id(reference, f"references[{index}]")
            if image_id not in self.phrase_boxes:
                raise ValueError(f"references[{index}]: image entry {image_id} is not in `annotation_file`.")
            if len(labels) and labels.max() >= len(self.phrase_boxes[image_id]):
                raise ValueError(
                    f"{name}['labels'] holds phrase {labels.max()} but entry {image_id} has "
                    f"{len(self.phrase_boxes[image_id])} phrases in `tokens_positive_eval`."
                )
            if image_id in self.predictions:
                raise ValueError(f"{name}: image entry {image_id} was added twice.")
            self.predictions[image_id] = (boxes, scores, labels)

    def compute(self, *, predictions: Any = None, references: Any = None) -> dict[str, Any]:
        """Recall@k over the phrases of the added entries; clears the state.

        Returns:
            `dict`: `{"separate": {"Recall@1": ..., ...}, "merged": {...}, "num_phrases": n}` (recalls in [0, 1]).
        """
        if predictions is not None or references is not None:
            self.add_batch(predictions=predictions, references=references)
        if not self.predictions:
            raise ValueError("No image entry was added: call `add_batch(predictions=..., references=...)` first.")
        hits = {mode: dict.fromkeys(self.top_k, 0) for mode in ("separate", "merged")}
        num_phrases = 0
        for image_id, (boxes, scores, labels) in self.predictions.items():
            # (num_detections, 4) inclusive -> exclusive xyxy
            exclusive = torch.as_tensor(boxes, dtype=torch.float64).clone()
            exclusive[:, 2:] += LEGACY_PIXEL_OFFSET
            for phrase_index, ground_truth in enumerate(self.phrase_boxes[image_id]):
                if ground_truth is None:
                    continue
                num_phrases += 1
                selected = np.flatnonzero(labels == phrase_index)
                ranked = selected[np.argsort(-scores[selected], kind="stable")]
                truth = torch.as_tensor(ground_truth, dtype=torch.float64)
                union_box = torch.cat([truth[:, :2].min(dim=0).values, truth[:, 2:].max(dim=0).values])[None]
                for mode, targets in (("separate", truth), ("merged", union_box)):
                    if len(ranked) == 0:
                        continue
                    # (num_ranked,) best IoU of each ranked box with the phrase's targets
                    best = box_iou(exclusive[torch.as_tensor(ranked)], targets).max(dim=1).values
                    for k in self.top_k:
                        if bool((best[:k] >= self.iou_threshold).any()):
                            hits[mode][k] += 1
        missing = set(self.phrase_boxes) - set(self.predictions)
        results: dict[str, Any] = {
            mode: {f"Recall@{k}": (hits[mode][k] / num_phrases if num_phrases else 0.0) for k in self.top_k}
            for mode in ("separate", "merged")
        }
        results["num_phrases"] = num_phrases
        results["num_entries"] = len(self.predictions)
        results["num_entries_not_evaluated"] = len(missing)
        self.reset()
        return results
