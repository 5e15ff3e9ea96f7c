"""Evaluation runs of the GLIP transfer protocols: datasets, prompts, predictions, process split, report.

The reusable parts of `examples/evaluate.py` (which adds 🤗 Accelerate; this module never imports it):

* [`load_evaluation_dataset`]: a COCO / LVIS detection json or an MDETR Flickr30K json plus its image folder ->
  an [`EvaluationDataset`] of [`EvaluationSample`]s (one per image, or per image-sentence entry for Flickr). Images
  are only opened when predicted ([`iterate_batches`]): a run never holds more than one batch of decoded images.
* [`build_category_prompt`]: the official detection prompt of a category list with ODinW-style per-category
  `prefix` / `name` / `suffix` overrides (`engine/inference.py::create_queries_and_maps` with
  `DATASETS.CAPTION_PROMPT`: the label's span covers only `name`, which is not cleaned).
* [`model_predictor`]: predictions through the inference path. Plain category lists go through [`detect`]
  (`threshold=None`: the official top `config.max_detections` per prompt; large vocabularies such as LVIS chunked
  there); a caption (Flickr sentences, prompt overrides) through the processor's spans and
  `GLIPProcessor.post_process_grounded_object_detection`, the same post-processing entry point.
* [`split_for_process`] / [`merge_process_predictions`]: process `i` of `n` predicts a contiguous share of the
  samples; the per-process lists, concatenated in process order (what `accelerate.utils.gather_object` returns),
  are checked (each sample exactly once) and ordered as the 1-process run.
* [`compute_dataset_metrics`]: the pycocotools-based metrics of `evaluation.metrics`.
* [`read_suite_config`], [`suite_summary`], [`write_evaluation_report`]: an ODinW-style suite yaml, the table of
  per-dataset AP with the average, and the outputs `summary.json`, `summary.md` and a bar chart (matplotlib Agg).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import PIL.Image
import torch
import yaml

from ..inference_glip import detect
from ..prompts_glip import DETECTION_PROMPT_SEPARATOR, clean_label_name
from .metrics import GLIPCocoMetric, GLIPFlickrGroundingMetric, GLIPLvisMetric

__all__ = [
    "EVALUATION_TASKS",
    "EvaluationDataset",
    "EvaluationSample",
    "SuiteDataset",
    "build_category_prompt",
    "compute_dataset_metrics",
    "ground_truth_predictor",
    "iterate_batches",
    "load_evaluation_dataset",
    "merge_process_predictions",
    "model_predictor",
    "predict_samples",
    "read_suite_config",
    "split_for_process",
    "suite_summary",
    "write_evaluation_report",
]

EVALUATION_TASKS = ("coco", "lvis", "flickr")
PROMPT_OVERRIDE_KEYS = ("prefix", "name", "suffix")
# Bars shown per dataset in the figure; larger vocabularies (LVIS) show their best and worst halves of this.
MAX_PLOTTED_CATEGORIES = 40


@dataclass
class EvaluationSample:
    """One prediction request: the image file, and the caption + phrase spans when it is prompted with a caption.

    Attributes:
        reference (`int`): the json image id (COCO / LVIS) or image-entry id (MDETR Flickr30K).
        image_path (`str`): the image file.
        caption (`str`, *optional*): the sentence (Flickr30K); `None` for category prompts.
        phrase_spans (`list[list[tuple[int, int]]]`, *optional*): per phrase, its character spans in `caption`.
    """

    reference: int
    image_path: str
    caption: str | None = None
    phrase_spans: list[list[tuple[int, int]]] | None = None


@dataclass
class EvaluationDataset:
    """A dataset to evaluate: its task, ground truth, samples and category prompt.

    Attributes:
        name (`str`): shown in the report.
        task (`str`): `"coco"`, `"lvis"` or `"flickr"`.
        ground_truth (`dict`): the loaded json.
        samples (`list[EvaluationSample]`): in json order.
        category_names (`list[str]`): category names in the order of the json category ids (prediction label `i` is
            category `category_ids[i]`); empty for Flickr.
        category_ids (`list[int]`): sorted json category ids.
        prompt (`tuple[str, list]`, *optional*): the caption and per-category spans when prompt overrides are given
            ([`build_category_prompt`]); `None`: the plain category list goes to [`detect`].
        annotations_by_image (`dict[int, list[dict]]`): the json annotations of each image (entry) id.
    """

    name: str
    task: str
    ground_truth: dict
    samples: list[EvaluationSample]
    category_names: list[str] = field(default_factory=list)
    category_ids: list[int] = field(default_factory=list)
    prompt: tuple[str, list[list[tuple[int, int]]]] | None = None
    annotations_by_image: dict[int, list[dict]] = field(default_factory=dict, repr=False)


@dataclass
class SuiteDataset:
    """One entry of a suite yaml: `name`, `annotations` (COCO json), `images` (folder), optional `prompts`."""

    name: str
    annotation_file: str
    image_dir: str
    prompts: dict[str, dict[str, str]] | list[dict[str, str]] | None = None


# ----------------------------------------------------------------------------------------------- datasets


def _read_json(path: str | os.PathLike, name: str) -> dict:
    if not os.path.isfile(path):
        raise ValueError(f"{name} {os.fspath(path)!r} is not a file.")
    try:
        with open(path, encoding="utf-8") as handle:
            dataset = json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{name} {os.fspath(path)!r} is not valid json ({error}).") from error
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            raise ValueError(f"{name} {os.fspath(path)!r} lacks the list {key!r} of the COCO format.")
    return dataset


def _image_path(image: Mapping, image_dir: str | os.PathLike) -> str:
    """`image_dir/file_name`; LVIS v1 images have only `coco_url`: `image_dir/val2017/x.jpg` as the official
    `LvisDetection` reads it (IMAGE_DIR = the COCO folder), or `image_dir/x.jpg` when only that exists."""
    if "file_name" in image:
        return os.path.join(image_dir, image["file_name"])
    parts = str(image["coco_url"]).split("/")
    official = os.path.join(image_dir, *parts[-2:])
    return (
        official
        if os.path.exists(official) or not os.path.exists(os.path.join(image_dir, parts[-1]))
        else (os.path.join(image_dir, parts[-1]))
    )


def build_category_prompt(
    category_names: Sequence[str], overrides: Mapping | Sequence | None = None
) -> tuple[str, list[list[tuple[int, int]]]]:
    """The detection prompt of `category_names`, with optional per-category `prefix` / `name` / `suffix`.

    Without overrides this is the official prompt (cleaned names joined by `". "`, [`build_detection_prompt`]).
    `overrides` is a dict `{category name: {"prefix": ..., "name": ..., "suffix": ...}}` (missing keys: `""`, the
    cleaned name, `""`) or a list with one such dict per category in order, the official `DATASETS.CAPTION_PROMPT`.
    Each label's span covers only its `name` (official: the prefix and suffix are context, not the label).

    Returns:
        `(caption, spans)`: spans per category, `[[(begin, end)]]`.
    """
    if isinstance(overrides, Mapping):
        unknown = sorted(set(overrides) - set(category_names))
        if unknown:
            raise ValueError(
                f"prompt overrides name unknown categories {unknown}; the categories are {category_names}."
            )
        per_category = [overrides.get(name) for name in category_names]
    elif overrides is None:
        per_category = [None] * len(category_names)
    elif isinstance(overrides, Sequence) and not isinstance(overrides, (str, bytes)):
        if len(overrides) != len(category_names):
            raise ValueError(
                f"a prompt override list needs one entry per category ({len(category_names)}), got {len(overrides)}."
            )
        per_category = list(overrides)
    else:
        raise TypeError("prompt overrides must be a dict by category name or a list with one dict per category.")
    caption, spans = "", []
    for index, (category_name, override) in enumerate(zip(category_names, per_category)):
        override = {} if override is None else override
        if not isinstance(override, Mapping) or set(override) - set(PROMPT_OVERRIDE_KEYS):
            raise ValueError(
                f"the prompt override of {category_name!r} must be a dict with keys among {PROMPT_OVERRIDE_KEYS}, got "
                f"{override!r}."
            )
        if not all(isinstance(value, str) for value in override.values()):
            raise TypeError(f"the prompt override of {category_name!r} must map keys to strings, got {override!r}.")
        name = override.get("name", clean_label_name(category_name))
        if not name.strip():
            raise ValueError(f"the prompt name of {category_name!r} is empty.")
        caption += override.get("prefix", "")
        begin = len(caption)
        caption += name
        spans.append([(begin, len(caption))])
        caption += override.get("suffix", "")
        if index != len(category_names) - 1:
            caption += DETECTION_PROMPT_SEPARATOR
    return caption, spans


def load_evaluation_dataset(
    task: str,
    annotation_file: str | os.PathLike,
    image_dir: str | os.PathLike,
    name: str | None = None,
    prompt_overrides: Mapping | Sequence | None = None,
    max_images: int | None = None,
) -> EvaluationDataset:
    """Read a dataset to evaluate (images are not opened here).

    Args:
        task (`str`): `"coco"` (COCO json), `"lvis"` (LVIS v1 json: `frequency`, `neg_category_ids`, ...) or
            `"flickr"` (MDETR `final_flickr_{separate,merged}GT_*.json`: per image entry `caption` and
            `tokens_positive_eval`).
        annotation_file: the json. image_dir: the folder holding each image's `file_name`.
        name (`str`, *optional*): shown in the report (default: the json's file name).
        prompt_overrides (*optional*): per-category `prefix` / `name` / `suffix` ([`build_category_prompt`]).
        max_images (`int`, *optional*): only the first `max_images` samples (quick runs).
    """
    if task not in EVALUATION_TASKS:
        raise ValueError(f"`task` must be one of {EVALUATION_TASKS}, got {task!r}.")
    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1):
        raise ValueError(f"`max_images` must be a positive int or None, got {max_images!r}.")
    if not os.path.isdir(image_dir):
        raise ValueError(f"image folder {os.fspath(image_dir)!r} is not a folder.")
    ground_truth = _read_json(annotation_file, f"{task} annotation file")
    samples = []
    for image in ground_truth["images"]:
        if "id" not in image or ("file_name" not in image and "coco_url" not in image):
            raise ValueError(
                f"{os.fspath(annotation_file)!r}: every image needs `id` and `file_name` (or LVIS's `coco_url`), got "
                f"{image!r}."
            )
        sample = EvaluationSample(int(image["id"]), _image_path(image, image_dir))
        if task == "flickr":
            if "caption" not in image or "tokens_positive_eval" not in image:
                raise ValueError(
                    f"{os.fspath(annotation_file)!r}: image entry {image['id']} lacks `caption` or "
                    "`tokens_positive_eval` (use MDETR's final_flickr_*GT_*.json)."
                )
            sample.caption = image["caption"]
            sample.phrase_spans = [[tuple(span) for span in phrase] for phrase in image["tokens_positive_eval"]]
        samples.append(sample)
    if max_images is not None:
        samples = samples[:max_images]
    categories = sorted(ground_truth["categories"], key=lambda category: category["id"])
    category_names = [] if task == "flickr" else [category["name"] for category in categories]
    if prompt_overrides is not None and task == "flickr":
        raise ValueError("prompt overrides apply to detection datasets, not to Flickr30K captions.")
    annotations_by_image: dict[int, list[dict]] = {}
    for annotation in ground_truth["annotations"]:
        annotations_by_image.setdefault(annotation.get("image_id"), []).append(annotation)
    return EvaluationDataset(
        annotations_by_image=annotations_by_image,
        name=name or os.path.splitext(os.path.basename(annotation_file))[0],
        task=task,
        ground_truth=ground_truth,
        samples=samples,
        category_names=category_names,
        category_ids=[] if task == "flickr" else [category["id"] for category in categories],
        prompt=None if prompt_overrides is None else build_category_prompt(category_names, prompt_overrides),
    )


def read_suite_config(path: str | os.PathLike) -> list[SuiteDataset]:
    """Read an ODinW-style suite yaml; relative paths are relative to the yaml's folder.

    ```yaml
    datasets:
      - name: aquarium
        annotations: aquarium/test/annotations.json   # COCO json
        images: aquarium/test                          # image folder
        prompts:                                       # optional, per category (or a list in category-id order)
          fish: {prefix: "a ", name: "fish", suffix: " in an aquarium"}
    ```
    """
    if not os.path.isfile(path):
        raise ValueError(f"suite config {os.fspath(path)!r} is not a file.")
    with open(path, encoding="utf-8") as handle:
        try:
            config = yaml.safe_load(handle)
        except yaml.YAMLError as error:
            raise ValueError(f"suite config {os.fspath(path)!r} is not valid yaml ({error}).") from error
    entries = config.get("datasets") if isinstance(config, Mapping) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"suite config {os.fspath(path)!r} needs a non-empty list `datasets`.")
    root = os.path.dirname(os.path.abspath(path))
    datasets, names = [], set()
    for index, entry in enumerate(entries):
        where = f"suite config {os.fspath(path)!r}, datasets[{index}]"
        if not isinstance(entry, Mapping) or not {"annotations", "images"} <= set(entry):
            raise ValueError(f"{where} needs `annotations` (COCO json) and `images` (folder).")
        unknown = sorted(set(entry) - {"name", "annotations", "images", "prompts"})
        if unknown:
            raise ValueError(f"{where} has unknown keys {unknown} (known: name, annotations, images, prompts).")
        annotation_file = os.path.join(root, str(entry["annotations"]))
        name = str(entry.get("name") or os.path.splitext(os.path.basename(annotation_file))[0])
        if name in names:
            raise ValueError(f"{where}: the dataset name {name!r} is used twice.")
        names.add(name)
        datasets.append(
            SuiteDataset(name, annotation_file, os.path.join(root, str(entry["images"])), entry.get("prompts"))
        )
    return datasets


# ----------------------------------------------------------------------------------------------- predictions


def split_for_process(items: Sequence[Any], process_index: int, num_processes: int) -> list[Any]:
    """Process `process_index`'s contiguous share of `items` (the first `len % num_processes` processes get one
    more, as `accelerate`'s `split_between_processes`); the shares, concatenated in process order, are `items`."""
    if isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes < 1:
        raise ValueError(f"`num_processes` must be a positive int, got {num_processes!r}.")
    if isinstance(process_index, bool) or not isinstance(process_index, int) or not 0 <= process_index < num_processes:
        raise ValueError(f"`process_index` must be in [0, {num_processes}), got {process_index!r}.")
    base, extra = divmod(len(items), num_processes)
    start = process_index * base + min(process_index, extra)
    return list(items[start : start + base + (process_index < extra)])


def merge_process_predictions(gathered: Sequence[dict], samples: Sequence[EvaluationSample]) -> list[dict]:
    """The predictions of every process (concatenated) in sample order; each sample must appear exactly once."""
    by_reference: dict[int, dict] = {}
    for prediction in gathered:
        reference = prediction["reference"]
        if reference in by_reference:
            raise ValueError(f"sample {reference} was predicted by more than one process.")
        by_reference[reference] = prediction
    missing = [sample.reference for sample in samples if sample.reference not in by_reference]
    if missing or len(by_reference) != len(samples):
        raise ValueError(f"the gathered predictions miss samples {missing[:10]} (or hold unknown ones).")
    return [by_reference[sample.reference] for sample in samples]


def iterate_batches(samples: Sequence[EvaluationSample], batch_size: int) -> Iterator[tuple[list, list]]:
    """`(samples, RGB images)` batches; each batch's images are opened when it is reached (streaming)."""
    for start in range(0, len(samples), batch_size):
        batch = list(samples[start : start + batch_size])
        images = []
        for sample in batch:
            try:
                with PIL.Image.open(sample.image_path) as image:
                    images.append(image.convert("RGB"))
            except (OSError, PIL.UnidentifiedImageError) as error:
                raise ValueError(
                    f"cannot read image {sample.image_path!r} of sample {sample.reference}: {error}"
                ) from error
        yield batch, images


def _as_plain_detections(detections: Mapping) -> dict[str, list]:
    return {
        "boxes": torch.as_tensor(detections["boxes"], dtype=torch.float64).reshape(-1, 4).tolist(),
        "scores": torch.as_tensor(detections["scores"], dtype=torch.float64).reshape(-1).tolist(),
        "labels": torch.as_tensor(detections["labels"], dtype=torch.int64).reshape(-1).tolist(),
    }


@torch.inference_mode()
def _ground_caption(model, processor, image, caption: str, spans) -> dict:
    """One image prompted with a caption and explicit phrase spans; official post-processing without threshold."""
    inputs = processor(images=image, text=caption, phrase_spans=spans)
    parameter = next(model.parameters())
    outputs = model(
        pixel_values=inputs["pixel_values"].to(device=parameter.device, dtype=parameter.dtype),
        image_sizes=inputs["image_sizes"].to(parameter.device),
        input_ids=inputs["input_ids"].to(parameter.device),
        token_type_ids=inputs["token_type_ids"].to(parameter.device),
        attention_mask=inputs["attention_mask"].to(parameter.device),
    )
    return processor.post_process_grounded_object_detection(
        outputs,
        threshold=None,
        target_sizes=[tuple(inputs["original_sizes"][0].tolist())],
        positive_map=inputs["positive_map"],
        image_sizes=[tuple(inputs["image_sizes"][0].tolist())],
        config=model.config,
    )[0]


def model_predictor(model, processor, batch_size: int = 1) -> Callable:
    """`predict(dataset, samples, images) -> list of {boxes, scores, labels}` with the model, as inference does.

    Category prompts without overrides: [`detect`] with `threshold=None` (chunked when the vocabulary does not fit,
    images of one padded size batched by up to `batch_size`); captions and overridden prompts: one forward per image
    with the processor's phrase spans and the official post-processing (`threshold=None`).
    """

    def predict(dataset: EvaluationDataset, samples: list[EvaluationSample], images: list) -> list[dict]:
        if dataset.task == "flickr":
            return [
                _ground_caption(model, processor, image, sample.caption, sample.phrase_spans)
                for sample, image in zip(samples, images)
            ]
        if dataset.prompt is not None:
            caption, spans = dataset.prompt
            return [_ground_caption(model, processor, image, caption, spans) for image in images]
        return detect(model, processor, images, dataset.category_names, threshold=None, batch_size=batch_size)

    return predict


def ground_truth_predictor(score: float = 1.0) -> Callable:
    """A perfect "detector" stand-in: predicts each sample's ground-truth boxes (inclusive xyxy, the frame of the
    model's predictions), for checking an evaluation pipeline end to end (it must score 1.0)."""

    def predict(dataset: EvaluationDataset, samples: list[EvaluationSample], images: list) -> list[dict]:
        label_of_category = {category_id: index for index, category_id in enumerate(dataset.category_ids)}
        predictions = []
        for sample in samples:
            boxes, labels = [], []
            for annotation in dataset.annotations_by_image.get(sample.reference, []):
                if annotation.get("iscrowd", 0):
                    continue
                x, y, width, height = annotation["bbox"]
                if dataset.task == "flickr":
                    # MDETR boxes are exclusive (w = xmax - xmin); one box per phrase the annotation belongs to
                    spans = {tuple(span) for span in annotation.get("tokens_positive", [])}
                    for phrase_index, phrase in enumerate(sample.phrase_spans):
                        if spans & set(phrase):
                            boxes.append([x, y, x + width - 1, y + height - 1])
                            labels.append(phrase_index)
                else:
                    boxes.append([x, y, x + width - 1, y + height - 1])
                    labels.append(label_of_category[annotation["category_id"]])
            predictions.append({"boxes": boxes, "scores": [score] * len(boxes), "labels": labels})
        return predictions

    return predict


def predict_samples(
    predictor: Callable,
    dataset: EvaluationDataset,
    samples: Sequence[EvaluationSample],
    batch_size: int = 1,
    progress: Callable[[int], None] | None = None,
) -> list[dict]:
    """Run `predictor` over `samples` batch by batch (images streamed); `progress(n)` after each batch.

    Returns:
        `list[dict]`, per sample: `reference`, `boxes` (list of inclusive xyxy), `scores`, `labels` (plain lists:
        cheap to gather across processes).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}.")
    results = []
    for batch, images in iterate_batches(samples, batch_size):
        for sample, detections in zip(batch, predictor(dataset, batch, images)):
            results.append({"reference": sample.reference, **_as_plain_detections(detections)})
        if progress is not None:
            progress(len(batch))
    return results


# ----------------------------------------------------------------------------------------------- metrics and report


def compute_dataset_metrics(
    dataset: EvaluationDataset, predictions: Sequence[dict], lvis_fixed_ap: bool = True
) -> dict[str, Any]:
    """The pycocotools-based metric of the dataset's task on `predictions` ([`predict_samples`] entries)."""
    if dataset.task == "coco":
        metric = GLIPCocoMetric(dataset.ground_truth, category_ids=dataset.category_ids)
    elif dataset.task == "lvis":
        metric = GLIPLvisMetric(dataset.ground_truth, category_ids=dataset.category_ids, fixed_ap=lvis_fixed_ap)
    else:
        metric = GLIPFlickrGroundingMetric(dataset.ground_truth)
    return metric.compute(
        predictions=[{key: prediction[key] for key in ("boxes", "scores", "labels")} for prediction in predictions],
        references=[prediction["reference"] for prediction in predictions],
    )


def suite_summary(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """`{dataset: COCO metrics}` -> `{"datasets": {name: {"AP", "AP50"}}, "average": {"AP", "AP50"}}` (plain mean
    over the datasets, as ODinW reports)."""
    table = {name: {"AP": metrics["AP"], "AP50": metrics["AP50"]} for name, metrics in results.items()}
    average = {key: sum(row[key] for row in table.values()) / len(table) for key in ("AP", "AP50")}
    return {"datasets": table, "average": average}


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "–" if value < 0 or math.isnan(value) else f"{100 * value:.1f}"
    return str(value)


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(_format(value) for value in row) + " |" for row in rows]
    return lines


def _markdown(summary: Mapping[str, Any]) -> str:
    lines = [f"# Evaluation of {summary.get('model', 'the model')}", "", "Figures in percent (– : no ground truth)."]
    for name, entry in summary["datasets"].items():
        metrics = entry["metrics"]
        lines += [
            "",
            f"## {name} ({entry['task']}, {entry.get('num_samples', '?')} samples)",
            "",
        ]
        if entry["task"] == "flickr":
            ks = list(metrics["separate"])
            lines += _markdown_table(
                ["ground truth", *ks], [[mode, *metrics[mode].values()] for mode in ("separate", "merged")]
            )
            continue
        keys = ["AP", "AP50", "AP75", "APs", "APm", "APl"] + (["APr", "APc", "APf"] if entry["task"] == "lvis" else [])
        lines += _markdown_table(keys, [[metrics[key] for key in keys]])
        if len(metrics["per_category"]) <= MAX_PLOTTED_CATEGORIES:
            lines += ["", *_markdown_table(["category", "AP"], list(metrics["per_category"].items()))]
    if "suite" in summary:
        suite = summary["suite"]
        rows = [[name, row["AP"], row["AP50"]] for name, row in suite["datasets"].items()]
        rows.append(["**average**", suite["average"]["AP"], suite["average"]["AP50"]])
        lines += ["", "## Suite", "", *_markdown_table(["dataset", "AP", "AP50"], rows)]
    return "\n".join(lines) + "\n"


def _plot(summary: Mapping[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = list(summary["datasets"].items())
    heights = []
    for _, entry in entries:
        if entry["task"] == "flickr":
            count = 2 * len(entry["metrics"]["separate"])
        else:
            count = sum(value >= 0 for value in entry["metrics"]["per_category"].values())
        heights.append(1.0 + 0.25 * min(count, MAX_PLOTTED_CATEGORIES))
    figure, axes = plt.subplots(
        len(entries), 1, figsize=(7, sum(heights)), squeeze=False, gridspec_kw={"height_ratios": heights}
    )
    for axis, (name, entry) in zip(axes[:, 0], entries):
        metrics = entry["metrics"]
        if entry["task"] == "flickr":
            bars = {f"{mode} {k}": value for mode in ("separate", "merged") for k, value in metrics[mode].items()}
            axis.set_xlabel("recall")
        else:
            bars = {category: value for category, value in metrics["per_category"].items() if value >= 0}
            if len(bars) > MAX_PLOTTED_CATEGORIES:
                ranked = sorted(bars.items(), key=lambda item: -item[1])
                half = MAX_PLOTTED_CATEGORIES // 2
                bars = dict(ranked[:half] + ranked[-half:])
                name = f"{name} (best and worst {half} of {len(ranked)} categories)"
            axis.set_xlabel("AP (IoU 0.50:0.95)")
        axis.barh(list(bars)[::-1], list(bars.values())[::-1], color="tab:blue")
        axis.set_xlim(0, 1)
        axis.set_title(name, fontsize=10)
        axis.tick_params(axis="y", labelsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_evaluation_report(output_dir: str | os.PathLike, summary: Mapping[str, Any]) -> dict[str, str]:
    """Write `summary.json`, `summary.md` (markdown tables) and `per_category_ap.png` (bars per category, recalls
    for Flickr) into `output_dir`.

    Args:
        summary: `{"model": ..., "datasets": {name: {"task": ..., "num_samples": n, "metrics": {...}}},
            optional "suite": [`suite_summary`]}`.

    Returns:
        `dict`: the paths written, by kind (`json`, `markdown`, `figure`).
    """
    os.makedirs(output_dir, exist_ok=True)
    paths = {
        "json": os.path.join(output_dir, "summary.json"),
        "markdown": os.path.join(output_dir, "summary.md"),
        "figure": os.path.join(output_dir, "per_category_ap.png"),
    }
    with open(paths["json"], "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
    with open(paths["markdown"], "w", encoding="utf-8") as handle:
        handle.write(_markdown(summary))
    _plot(summary, paths["figure"])
    return paths
