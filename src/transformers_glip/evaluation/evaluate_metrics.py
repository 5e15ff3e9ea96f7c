"""The GLIP metrics of `evaluation.metrics` as 🤗 `evaluate` metrics (`evaluate.Metric` subclasses).

`evaluate` stores every added example in an Arrow file whose schema is the metric's `datasets.Features`, gathers the
files of all processes (`num_process` / `process_id`, synchronised with file locks on a shared `cache_dir`) and
calls `_compute` on process 0 with every example. Detection results fit such a schema: one row per image,

* `predictions`: `{"boxes": Sequence(Sequence(float64, length=4)), "scores": Sequence(float64),
  "labels": Sequence(int64)}` — what [`detect`] / `post_process_grounded_object_detection` return for one image
  (inclusive xyxy original pixels; extra keys such as `text_labels` are dropped by the schema; tensors are accepted);
* `references`: the image id (COCO / LVIS) or the MDETR image-entry id (Flickr30K), an `int64`.

The ground truth is not per-example data: it is given once, as the keyword `annotation_file` (a json path or an
already loaded dict) to the constructor (also through `evaluate.load(script, annotation_file=...)`) or to
`compute`. `_compute` hands the rows to [`GLIPCocoMetric`], [`GLIPLvisMetric`] or [`GLIPFlickrGroundingMetric`]:
`pycocotools` computes the AP, the numbers are those of the in-memory classes.

Example:

```python
import evaluate
from transformers_glip.evaluation.evaluate_metrics import metric_script_path

metric = evaluate.load(metric_script_path("coco"), annotation_file="instances_val2017.json")
for images, image_ids in loader:
    metric.add_batch(predictions=detect(model, processor, images, names, threshold=None), references=image_ids)
results = metric.compute()  # {"AP": ..., "AP50": ..., "per_category": {...}, "num_images": ...}
```
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import datasets
import evaluate

from .metrics import GLIPCocoMetric, GLIPFlickrGroundingMetric, GLIPLvisMetric

__all__ = [
    "METRIC_SCRIPTS",
    "GLIPCocoEvaluationMetric",
    "GLIPFlickrGroundingEvaluationMetric",
    "GLIPLvisEvaluationMetric",
    "detection_features",
    "metric_script_path",
]

# `evaluate.load` script of each metric, in `metric_scripts/` next to this module.
METRIC_SCRIPTS = {"coco": "glip_coco.py", "lvis": "glip_lvis.py", "flickr": "glip_flickr_grounding.py"}

_INPUTS_DESCRIPTION = """
Args:
    predictions (`list[dict]`): per image, `boxes` `(num_detections, 4)` inclusive xyxy original-image pixels,
        `scores` `(num_detections,)`, `labels` `(num_detections,)` 0-based label (or phrase) indices.
    references (`list[int]`): per image, its image id (COCO / LVIS) or image-entry id (MDETR Flickr30K json).
    annotation_file (*optional*, `compute` keyword): the ground truth (json path or dict); defaults to the one given
        to the constructor.
"""


def detection_features() -> datasets.Features:
    """The per-image schema: predictions `{boxes (n, 4) float64, scores (n,) float64, labels (n,) int64}`,
    references an `int64` image (entry) id."""
    return datasets.Features(
        {
            "predictions": {
                "boxes": datasets.Sequence(datasets.Sequence(datasets.Value("float64"), length=4)),
                "scores": datasets.Sequence(datasets.Value("float64")),
                "labels": datasets.Sequence(datasets.Value("int64")),
            },
            "references": datasets.Value("int64"),
        }
    )


def metric_script_path(name: str) -> str:
    """Path of the `evaluate.load` script of metric `name` (`"coco"`, `"lvis"` or `"flickr"`)."""
    if name not in METRIC_SCRIPTS:
        raise ValueError(f"Unknown metric {name!r}; choose one of {sorted(METRIC_SCRIPTS)}.")
    return str(Path(__file__).parent / "metric_scripts" / METRIC_SCRIPTS[name])


def _as_list(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else value


def _schema_prediction(prediction: Any, name: str) -> dict[str, Any]:
    """One image's detections reduced to the schema's keys, tensors / arrays as lists."""
    if not isinstance(prediction, Mapping):
        raise TypeError(
            f"{name} must be a dict with `boxes`, `scores` and `labels` (the output of `detect` for one image), got "
            f"{type(prediction).__name__}."
        )
    missing = [key for key in ("boxes", "scores", "labels") if key not in prediction]
    if missing:
        raise ValueError(f"{name} lacks {missing}; it needs `boxes` (xyxy), `scores` and `labels`.")
    return {key: _as_list(prediction[key]) for key in ("boxes", "scores", "labels")}


def _schema_reference(reference: Any, name: str) -> Any:
    """An image id: an int, a one-element tensor, or a dict's `image_id`."""
    if isinstance(reference, Mapping):
        if "image_id" not in reference:
            raise ValueError(f"{name} is a dict without `image_id`.")
        reference = reference["image_id"]
    reference = _as_list(reference)
    if isinstance(reference, list) and len(reference) == 1:
        reference = reference[0]
    if isinstance(reference, bool) or not isinstance(reference, int):
        raise TypeError(f"{name} must be an image id (int) or a dict with `image_id`, got {reference!r}.")
    return reference


class _GLIPEvaluationMetric(evaluate.Metric):
    """Shared part: ground truth and options at construction, rows handed to an in-memory metric at compute."""

    metric_class: type = GLIPCocoMetric
    metric_description: str = ""

    def __init__(self, annotation_file: str | os.PathLike | Mapping | None = None, **kwargs) -> None:
        option_names = self.option_names()
        self.metric_options = {name: kwargs.pop(name) for name in list(kwargs) if name in option_names}
        super().__init__(**kwargs)
        self.annotation_file = (
            os.fspath(annotation_file) if isinstance(annotation_file, os.PathLike) else annotation_file
        )
        # Built now so that a bad ground truth or option fails at construction, not after the whole evaluation.
        self.metric = None if annotation_file is None else self.metric_class(annotation_file, **self.metric_options)

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        raise NotImplementedError

    def add_batch(self, *, predictions: Any = None, references: Any = None, **kwargs) -> None:
        """Add images: `predictions[i]` (dict with `boxes`, `scores`, `labels`; other keys are dropped) for image
        (entry) id `references[i]` (an int, or a dict with `image_id`)."""
        if predictions is not None:
            if isinstance(predictions, Mapping) or isinstance(predictions, (str, bytes)):
                raise TypeError("`predictions` must be a list with one dict per image.")
            predictions = [
                _schema_prediction(prediction, f"predictions[{index}]") for index, prediction in enumerate(predictions)
            ]
        if references is not None:
            if isinstance(references, (Mapping, str, bytes)):
                raise TypeError("`references` must be a list with one image id per image.")
            references = [
                _schema_reference(reference, f"references[{index}]") for index, reference in enumerate(references)
            ]
        super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction: Any = None, reference: Any = None, **kwargs) -> None:
        """Add one image (see [`add_batch`])."""
        self.add_batch(predictions=[prediction], references=[reference], **kwargs)

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=self.metric_description,
            citation="",
            inputs_description=_INPUTS_DESCRIPTION,
            features=detection_features(),
            codebase_urls=["https://github.com/cocodataset/cocoapi"],
        )

    def _compute(self, predictions: Any = None, references: Any = None, annotation_file: Any = None, **options):
        if annotation_file is not None or options:
            metric = self.metric_class(
                self.annotation_file if annotation_file is None else annotation_file,
                **{**self.metric_options, **options},
            )
        elif self.metric is not None:
            metric = self.metric
        else:
            raise ValueError(
                f"{type(self).__name__} needs the ground truth: pass `annotation_file` (json path or dict) to the "
                "constructor / `evaluate.load`, or to `compute`."
            )
        return metric.compute(predictions=list(predictions), references=list(references))


class GLIPCocoEvaluationMetric(_GLIPEvaluationMetric):
    """COCO box AP ([`GLIPCocoMetric`]) as an `evaluate.Metric`. Options (constructor or `compute` keywords):
    `category_ids` (category id of each prediction label), `max_detections` (per-image budget, 100)."""

    metric_class = GLIPCocoMetric
    metric_description = (
        "COCO box AP (pycocotools COCOeval) of GLIP detections: AP, AP50, AP75, APs/m/l, AR, per category."
    )

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return ("category_ids", "max_detections")


class GLIPLvisEvaluationMetric(_GLIPEvaluationMetric):
    """LVIS box AP with APr/APc/APf ([`GLIPLvisMetric`], FixedAP by default) as an `evaluate.Metric`. Options:
    `category_ids`, `fixed_ap`, `detections_per_category`, `max_detections_per_image`."""

    metric_class = GLIPLvisMetric
    metric_description = (
        "LVIS box AP (FixedAP or standard protocol, federated rules) with APr/APc/APf, by pycocotools."
    )

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return ("category_ids", "fixed_ap", "detections_per_category", "max_detections_per_image")


class GLIPFlickrGroundingEvaluationMetric(_GLIPEvaluationMetric):
    """Flickr30K Entities Recall@k ([`GLIPFlickrGroundingMetric`], MDETR protocol) as an `evaluate.Metric`.
    Options: `top_k`, `iou_threshold`; prediction labels are phrase indices into `tokens_positive_eval`."""

    metric_class = GLIPFlickrGroundingMetric
    metric_description = (
        "Flickr30K Entities phrase grounding Recall@k (MDETR protocol, separate and merged ground truth)."
    )

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return ("top_k", "iou_threshold")
