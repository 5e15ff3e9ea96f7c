"""Model cards of GLIP checkpoints: `huggingface_hub.ModelCard` from the repository's `model_card.md` template.

[`build_model_card`] fills `ModelCardData` (license, tags, pipeline tag `zero-shot-object-detection`, library
`transformers`, base model, datasets and the `model-index` results of an evaluation summary, through
`huggingface_hub.EvalResult`) and renders the Jinja template `model_card.md` with
`ModelCard.from_template`: the YAML header is the card data, the body describes the checkpoint (read from its
`GLIPConfig`) and tabulates the evaluation results.

[`check_model_card`] is an offline stand-in for `ModelCard.validate` (which posts the card to the Hub's
`/api/validate-yaml`): it re-parses the rendered text the way the Hub and `huggingface_hub.repocard` do (YAML block
-> `ModelCardData`, `model-index` -> `EvalResult`s) and checks the fields GLIP cards must carry.

An evaluation summary is a dict (or a list of them, one per dataset / split):

```python
{
    "dataset": "COCO 2017",  # or {"name": "COCO 2017", "type": "detection-datasets/coco", "split": "val"}
    "split": "val2017",  # optional
    "task": "zero-shot-object-detection",  # optional, the default
    "metrics": {"AP": 46.7, "AP50": 62.1},  # numbers; nested breakdowns (per-category dicts) are skipped
    "source": {"name": "GLIP paper, Table 2", "url": "https://arxiv.org/abs/2112.03857"},  # optional
}
```
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

from .configuration_glip import GLIPConfig
from .hub_glip import push_folder_to_hub

__all__ = [
    "DEFAULT_TASK_TYPE",
    "MODEL_CARD_FILE_NAME",
    "REQUIRED_TAGS",
    "build_model_card",
    "check_model_card",
    "default_template_path",
    "eval_results_from_summary",
    "evaluation_summary_from_training",
    "load_evaluation_summary",
    "publish_folder",
    "save_model_card",
    "summaries_from_evaluation_report",
]

PIPELINE_TAG = "zero-shot-object-detection"
LIBRARY_NAME = "transformers"
DEFAULT_TASK_TYPE = "zero-shot-object-detection"
REQUIRED_TAGS = ("glip", "zero-shot-object-detection", "transformers")
TAGS = (*REQUIRED_TAGS, "object-detection", "grounding", "vision", "transformers-glip")
TEMPLATE_NAME = "model_card.md"
SUMMARY_KEYS = ("dataset", "metrics", "split", "task", "source")
DATASET_KEYS = ("name", "type", "split", "config", "revision")
# Hub license ids are lowercase SPDX-like names ("mit", "apache-2.0", "cc-by-nc-4.0", "other").
LICENSE_PATTERN = re.compile(r"[a-z0-9][a-z0-9.+\-]*")
PLACEHOLDER_REPO_ID = "<this repo>"
MODEL_CARD_FILE_NAME = "README.md"
# `examples/evaluate.py` metrics that are not a figure of the dataset (breakdowns, counts).
REPORT_SKIPPED_METRICS = ("per_category", "num_phrases")


def default_template_path() -> Path:
    """`model_card.md`: next to this module when it was installed as package data, else at the root of the source
    checkout (`src/transformers_glip/..`)."""
    here = Path(__file__).resolve()
    for candidate in (here.with_name(TEMPLATE_NAME), here.parents[2] / TEMPLATE_NAME):
        if candidate.is_file():
            return candidate.resolve()  # (in a checkout, the package's copy is a link to the repository's file)
    raise FileNotFoundError(
        f"No {TEMPLATE_NAME} template next to {here.name} or at the repository root; pass `template_path=` "
        "(the template ships with the source checkout)."
    )


def _name_list(value: Any, name: str) -> list[str] | None:
    """None, a string or a list of strings -> a list of non-empty strings (or None)."""
    if value is None:
        return None
    values = [value] if isinstance(value, str) else value
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise TypeError(f"`{name}` must be a string or a non-empty list of strings, got {value!r}.")
    for index, item in enumerate(values):
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"`{name}[{index}]` = {item!r} must be a non-empty string.")
    return list(values)


def _metric_value(value: Any, name: str) -> float | int | None:
    """A metric value: a finite number is kept, a nested breakdown (dict / list) is skipped (None)."""
    if isinstance(value, (Mapping, list, tuple)):
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"`{name}` = {value!r} must be a finite number.")
    return value if isinstance(value, int) else float(value)


def _optional_string(value: Any, name: str) -> str | None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ValueError(f"`{name}` = {value!r} must be a non-empty string.")
    return value


def eval_results_from_summary(
    evaluation_summary: Mapping[str, Any] | Sequence[Mapping[str, Any]], task_type: str = DEFAULT_TASK_TYPE
) -> list[EvalResult]:
    """`EvalResult`s (one per metric) of an evaluation summary or a list of summaries (see the module docstring).

    Raises:
        `TypeError` / `ValueError` naming the entry when a summary is malformed: not a dict, unknown keys, no
        `dataset` or `metrics`, a metric that is not a finite number, no numeric metric at all.
    """
    summaries = [evaluation_summary] if isinstance(evaluation_summary, Mapping) else evaluation_summary
    if isinstance(summaries, (str, bytes)) or not isinstance(summaries, Sequence) or not summaries:
        raise TypeError(
            "`evaluation_summary` must be a dict {'dataset': ..., 'metrics': {...}} or a non-empty list of them, got "
            f"{type(evaluation_summary).__name__}."
        )
    results = []
    for index, summary in enumerate(summaries):
        name = "evaluation_summary" if isinstance(evaluation_summary, Mapping) else f"evaluation_summary[{index}]"
        if not isinstance(summary, Mapping):
            raise TypeError(f"`{name}` must be a dict with 'dataset' and 'metrics', got {type(summary).__name__}.")
        unknown = sorted(set(summary) - set(SUMMARY_KEYS))
        if unknown:
            raise ValueError(f"`{name}` has unknown keys {unknown}; the keys are {list(SUMMARY_KEYS)}.")
        dataset = summary.get("dataset")
        if isinstance(dataset, str):
            dataset = {"name": dataset}
        if not isinstance(dataset, Mapping) or not isinstance(dataset.get("name"), str) or not dataset["name"]:
            raise ValueError(
                f"`{name}['dataset']` must be a dataset name or a dict with a 'name' (and optionally "
                f"{list(DATASET_KEYS[1:])}), got {summary.get('dataset')!r}."
            )
        unknown = sorted(set(dataset) - set(DATASET_KEYS))
        if unknown:
            raise ValueError(f"`{name}['dataset']` has unknown keys {unknown}; the keys are {list(DATASET_KEYS)}.")
        for key in DATASET_KEYS[1:]:
            _optional_string(dataset.get(key), f"{name}['dataset']['{key}']")
        split = _optional_string(summary.get("split"), f"{name}['split']") or dataset.get("split")
        task = _optional_string(summary.get("task"), f"{name}['task']") or task_type
        source = summary.get("source")
        if isinstance(source, str):
            source = {"name": source}
        if source is not None and (
            not isinstance(source, Mapping) or set(source) - {"name", "url"} or not isinstance(source.get("name"), str)
        ):
            raise ValueError(
                f"`{name}['source']` must be a name or a dict {{'name': ..., 'url': ...}}, got {source!r}."
            )
        if source is not None and not source.get("url"):
            raise ValueError(
                f"`{name}['source']` = {source!r} needs a 'url' too (the Hub's model-index requires both); leave "
                "'source' out for figures measured here."
            )
        metrics = summary.get("metrics")
        if not isinstance(metrics, Mapping) or not metrics:
            raise ValueError(f"`{name}['metrics']` must be a non-empty dict {{metric name: value}}, got {metrics!r}.")
        kept = 0
        for metric, value in metrics.items():
            if not isinstance(metric, str) or not metric:
                raise ValueError(f"`{name}['metrics']` has the metric name {metric!r}; names must be strings.")
            number = _metric_value(value, f"{name}['metrics']['{metric}']")
            if number is None:
                continue
            kept += 1
            results.append(
                EvalResult(
                    task_type=task,
                    dataset_type=dataset.get("type") or dataset["name"],
                    dataset_name=dataset["name"],
                    dataset_split=split,
                    dataset_config=dataset.get("config"),
                    dataset_revision=dataset.get("revision"),
                    metric_type=metric,
                    metric_name=metric,
                    metric_value=number,
                    source_name=source["name"] if source else None,
                    source_url=source.get("url") if source else None,
                )
            )
        if kept == 0:
            raise ValueError(f"`{name}['metrics']` holds no number (only nested breakdowns): {dict(metrics)!r}.")
    return results


def _variant_name(config: GLIPConfig) -> str:
    backbone = config.backbone_config
    if backbone.embed_dim == 96 and list(backbone.depths) == [2, 2, 6, 2]:
        return "GLIP-T" if config.early_fusion else "GLIP-T (A)"
    if backbone.embed_dim == 192 and list(backbone.depths) == [2, 2, 18, 2]:
        return "GLIP-L"
    return "GLIP"


def _architecture(config: GLIPConfig) -> dict[str, str]:
    """Rows of the card's "This checkpoint" table, read from the config."""
    backbone, text = config.backbone_config, config.text_config
    depths = "-".join(str(depth) for depth in backbone.depths)
    size = {"GLIP-T": "Swin-T", "GLIP-T (A)": "Swin-T", "GLIP-L": "Swin-L"}.get(_variant_name(config), "Swin")
    convolution = "deformable" if config.head_use_deformable_conv else "plain"
    return {
        "backbone": f"{size} (embed_dim {backbone.embed_dim}, depths {depths}, window {backbone.window_size}) + FPN",
        "text_encoder": f"BERT ({text.num_hidden_layers} layers, hidden size {text.hidden_size})",
        "deep_fusion": f"yes, in each of the {config.num_head_blocks} head blocks" if config.early_fusion else "no",
        "head": (
            f"ATSS dense head, {config.num_head_blocks} blocks, {convolution} DyConv, {config.fpn_channels} channels"
        ),
        "max_text_length": str(config.max_text_length),
        "post_processing": (
            f"pre-NMS score > {config.pre_nms_score_threshold}, NMS IoU {config.nms_threshold}, at most "
            f"{config.max_detections} detections per prompt"
        ),
    }


def _evaluation_rows(eval_results: list[EvalResult]) -> list[dict[str, str]]:
    return [
        {
            "dataset": result.dataset_name,
            "split": result.dataset_split or "",
            "task": result.task_type,
            "metric": result.metric_name or result.metric_type,
            "value": f"{result.metric_value:.4g}",
            "source": f"[{result.source_name}]({result.source_url})"
            if result.source_url
            else (result.source_name or "measured"),
        }
        for result in eval_results
    ]


def build_model_card(
    config: GLIPConfig,
    base_model: str | Sequence[str] | None = None,
    datasets: str | Sequence[str] | None = None,
    evaluation_summary: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    license: str = "mit",
    template_path: str | Path | None = None,
    model_name: str | None = None,
    repo_id: str | None = None,
    tags: Sequence[str] | None = None,
    description: str | None = None,
) -> ModelCard:
    """The model card of a GLIP checkpoint (save it as the folder's `README.md`: `card.save(folder / "README.md")`).

    Args:
        config ([`GLIPConfig`]): the checkpoint's config (the body describes its backbone, fusion and head).
        base_model (`str` or `list[str]`, *optional*): Hub id(s) of the model(s) this one was converted or
            fine-tuned from (`base_model` metadata; e.g. `"GLIPModel/GLIP"`).
        datasets (`str` or `list[str]`, *optional*): training datasets (Hub dataset ids or names).
        evaluation_summary (`dict` or `list[dict]`, *optional*): results for the `model-index` (see the module
            docstring and [`eval_results_from_summary`]).
        license (`str`, *optional*, defaults to `"mit"`): Hub license id (GLIP's code and weights are MIT).
        template_path (`str` or `Path`, *optional*): the Jinja template; defaults to [`default_template_path`].
        model_name (`str`, *optional*): the card title and `model-index` name; defaults to the variant read from the
            config (`GLIP-T`, `GLIP-T (A)`, `GLIP-L`, else `GLIP`).
        repo_id (`str`, *optional*): the Hub id the card is written for (used in the usage snippet).
        tags (`list[str]`, *optional*): extra tags, added after the standard ones.
        description (`str`, *optional*): replaces the template's provenance paragraph ("converted from the
            official release"), e.g. for a model trained or fine-tuned with the example scripts.

    Returns:
        `huggingface_hub.ModelCard` whose `data` is the `ModelCardData` and whose text is the rendered template.

    Raises:
        `TypeError` / `ValueError` for a malformed argument (naming it), `FileNotFoundError` when the template is
        missing.
    """
    if not isinstance(config, GLIPConfig):
        raise TypeError(f"`config` must be a GLIPConfig (model.config), got {type(config).__name__}.")
    base_models = _name_list(base_model, "base_model")
    for index, name in enumerate(base_models or []):
        try:
            validate_repo_id(name)
        except HFValidationError as error:
            raise ValueError(f"`base_model[{index}]` = {name!r} is not a Hub model id ({error}).") from None
    dataset_list = _name_list(datasets, "datasets")
    extra_tags = _name_list(tags, "tags") or []
    if not isinstance(license, str) or not LICENSE_PATTERN.fullmatch(license):
        raise ValueError(f"`license` must be a Hub license id such as 'mit' or 'apache-2.0', got {license!r}.")
    model_name = _optional_string(model_name, "model_name") or _variant_name(config)
    repo_id = _optional_string(repo_id, "repo_id") or PLACEHOLDER_REPO_ID
    description = _optional_string(description, "description")
    eval_results = eval_results_from_summary(evaluation_summary) if evaluation_summary is not None else None
    template_path = Path(template_path) if template_path is not None else default_template_path()
    if not template_path.is_file():
        raise FileNotFoundError(f"`template_path` = {str(template_path)!r} is not a file.")

    card_data = ModelCardData(
        license=license,
        library_name=LIBRARY_NAME,
        pipeline_tag=PIPELINE_TAG,
        tags=[*TAGS, *(tag for tag in extra_tags if tag not in TAGS)],
        base_model=base_model if base_model is None or isinstance(base_model, str) else base_models,
        datasets=dataset_list,
        model_name=model_name if eval_results else None,  # the model-index name; no bare `model_name` key
        eval_results=eval_results,
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path),
        model_name=model_name,
        repo_id=repo_id,
        base_model_list=base_models or [],
        dataset_list=dataset_list or [],
        architecture=_architecture(config),
        evaluation_rows=_evaluation_rows(eval_results or []),
        description=description,
    )


def check_model_card(card: ModelCard | str) -> ModelCardData:
    """Offline validation of a rendered GLIP card (what `ModelCard.validate` asks the Hub, without network).

    Re-parses the text as the Hub does (a `---` YAML block first; `yaml.safe_load`; `ModelCardData`, which turns
    `model-index` into `EvalResult`s and rejects a malformed one) and checks: no unrendered template syntax; license,
    `library_name: transformers`, `pipeline_tag: zero-shot-object-detection` and the tags in [`REQUIRED_TAGS`];
    `base_model` entries are valid Hub ids; `datasets` are strings; every metric value is a finite number; and the
    metadata survives a `ModelCardData` round trip unchanged.

    Returns:
        The parsed `ModelCardData`.

    Raises:
        `ValueError` naming the first problem found.
    """
    text = str(card)
    for marker in ("{{", "{%", "{#"):
        if marker in text:
            raise ValueError(f"The card holds unrendered template syntax {marker!r}; render it with build_model_card.")
    if not text.startswith("---"):
        raise ValueError("The card must start with a '---' YAML metadata block.")
    try:
        parsed = ModelCard(text)
    except Exception as error:  # yaml.YAMLError or an invalid model-index, reported as one ValueError
        raise ValueError(f"The card metadata does not parse: {error}") from error
    data = parsed.data
    metadata = data.to_dict()
    if not metadata:
        raise ValueError("The card has an empty metadata block.")
    if not isinstance(data.license, str) or not LICENSE_PATTERN.fullmatch(data.license):
        raise ValueError(f"license {data.license!r} is not a Hub license id.")
    if data.library_name != LIBRARY_NAME:
        raise ValueError(f"library_name is {data.library_name!r}, expected {LIBRARY_NAME!r}.")
    if data.pipeline_tag != PIPELINE_TAG:
        raise ValueError(f"pipeline_tag is {data.pipeline_tag!r}, expected {PIPELINE_TAG!r}.")
    missing = [tag for tag in REQUIRED_TAGS if tag not in (data.tags or [])]
    if missing:
        raise ValueError(f"The card tags {data.tags} lack {missing}.")
    base_models = [data.base_model] if isinstance(data.base_model, str) else list(data.base_model or [])
    for name in base_models:
        try:
            validate_repo_id(name)
        except (HFValidationError, TypeError) as error:
            raise ValueError(f"base_model {name!r} is not a Hub model id ({error}).") from None
    datasets = [data.datasets] if isinstance(data.datasets, str) else list(data.datasets or [])
    if not all(isinstance(name, str) and name for name in datasets):
        raise ValueError(f"datasets {data.datasets!r} must be a list of non-empty strings.")
    for result in data.eval_results or []:
        value = result.metric_value
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"model-index metric {result.metric_type!r} of {result.dataset_name!r} is {value!r}.")
    if ModelCardData(**metadata).to_dict() != metadata:
        raise ValueError("The card metadata changes in a ModelCardData round trip.")
    return data


def summaries_from_evaluation_report(
    report: Mapping[str, Any], task_type: str = DEFAULT_TASK_TYPE
) -> list[dict[str, Any]]:
    """The card's evaluation summaries (see the module docstring) of an `examples/evaluate.py` `summary.json`.

    The report is `{"model": ..., "datasets": {name: {"task": "coco" | "lvis" | "flickr", "num_samples": n,
    "metrics": {...}}}}` with metrics in [0, 1] (-1 where a metric has no ground truth); the card gets them in
    percent (the unit of the GLIP paper's tables), rounded to 0.01. Nested breakdowns (per category, Flickr30K's
    `separate` / `merged` recalls), counts and missing values are left out; a dataset left with no figure is
    skipped. The figures have no `source` (the card's table says "measured").

    Raises:
        `ValueError` when `report` is not such a report, or when no dataset has a figure.
    """
    datasets = report.get("datasets") if isinstance(report, Mapping) else None
    if not isinstance(datasets, Mapping) or not datasets:
        raise ValueError(
            "The evaluation report must be examples/evaluate.py's summary.json ({'datasets': {name: {'metrics': "
            f"...}}}}), got {type(report).__name__} with keys {sorted(report) if isinstance(report, Mapping) else []}."
        )
    summaries = []
    for name, entry in datasets.items():
        metrics = entry.get("metrics") if isinstance(entry, Mapping) else None
        if not isinstance(metrics, Mapping):
            raise ValueError(f"The evaluation report's dataset {name!r} has no 'metrics' dict.")
        figures = {
            metric: round(100 * value, 2)
            for metric, value in metrics.items()
            if metric not in REPORT_SKIPPED_METRICS
            and isinstance(value, float)
            and math.isfinite(value)
            and 0 <= value <= 1
        }
        if not figures:
            continue
        summaries.append({"dataset": name, "task": task_type, "metrics": figures})
    if not summaries:
        raise ValueError("The evaluation report holds no figure (every metric is missing or a breakdown).")
    return summaries


def evaluation_summary_from_training(summary: Mapping[str, Any], dataset: str) -> dict[str, Any] | None:
    """The card's evaluation summary of the `summary.json` of `examples/pretrain.py` / `finetune.py` (`"ap"` and
    `"ap50"` in [0, 1] on the held-out `dataset`), in percent; None when the run was not evaluated."""
    figures = {
        name: round(100 * summary[key], 2)
        for key, name in (("ap", "AP"), ("ap50", "AP50"))
        if isinstance(summary.get(key), (int, float)) and math.isfinite(summary[key]) and summary[key] >= 0
    }
    return {"dataset": dataset, "task": "object-detection", "metrics": figures} if figures else None


def load_evaluation_summary(path: str | Path) -> list[dict[str, Any]] | dict[str, Any]:
    """Read an evaluation summary json for [`build_model_card`]: either the card's own format (a dict with `dataset`
    and `metrics`, or a list of them) or an `examples/evaluate.py` `summary.json` (converted with
    [`summaries_from_evaluation_report`]).

    Raises:
        `ValueError` naming the file when it is missing, is not json, or is in neither format.
    """
    import json

    path = Path(path)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ValueError(f"Evaluation summary {str(path)!r} cannot be read ({error}).") from error
    except ValueError as error:
        raise ValueError(f"Evaluation summary {str(path)!r} is not json ({error}).") from error
    if isinstance(content, Mapping) and "datasets" in content:
        try:
            return summaries_from_evaluation_report(content)
        except ValueError as error:
            raise ValueError(f"Evaluation summary {str(path)!r}: {error}") from error
    try:
        eval_results_from_summary(content)
    except (TypeError, ValueError) as error:
        raise ValueError(f"Evaluation summary {str(path)!r}: {error}") from error
    return content


def save_model_card(folder: str | Path, config: GLIPConfig | None = None, **card_arguments: Any) -> ModelCard:
    """Build the card of the checkpoint in `folder` ([`build_model_card`]; the config is read from the folder when
    not given), check it offline ([`check_model_card`]) and write it as `folder/README.md`.

    Args:
        folder: a saved GLIP folder (`config.json`).
        config ([`GLIPConfig`], *optional*): the checkpoint's config; default `GLIPConfig.from_pretrained(folder)`.
        card_arguments: the keyword arguments of [`build_model_card`] (`base_model`, `datasets`,
            `evaluation_summary`, `license`, `model_name`, `repo_id`, `tags`, `description`, `template_path`).

    Returns:
        The written `ModelCard`.
    """
    folder = Path(folder)
    if config is None:
        if not (folder / "config.json").is_file():
            raise ValueError(f"`folder` = {str(folder)!r} holds no config.json; save the model into it first.")
        config = GLIPConfig.from_pretrained(folder)
    card = build_model_card(config, **card_arguments)
    check_model_card(card)
    card.save(folder / MODEL_CARD_FILE_NAME)
    return card


def publish_folder(
    folder: str | Path,
    repo_id: str,
    commit_message: str | None = None,
    token: str | bool | None = None,
    private: bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    api: Any | None = None,
    ignore_patterns: list[str] | None = None,
    **card_arguments: Any,
) -> str:
    """Write the model card into a saved folder ([`save_model_card`], with `repo_id` in its usage snippet) and upload
    the folder to `repo_id` in one commit ([`push_folder_to_hub`]: weights, configs, tokenizer, the remote-code
    files and `README.md`).

    Args:
        folder, repo_id, commit_message, token, private, revision, create_pr, api, ignore_patterns: see
            [`push_folder_to_hub`].
        card_arguments: the keyword arguments of [`build_model_card`] except `repo_id`.

    Returns:
        `str`: the URL of the commit (or pull request).

    Raises:
        `ValueError` for a `repo_id` that is not a Hub id, and the errors of [`build_model_card`].
    """
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"`repo_id` = {repo_id!r} is not a Hub model id ({error}).") from None
    save_model_card(folder, repo_id=repo_id, **card_arguments)
    return push_folder_to_hub(
        folder,
        repo_id,
        commit_message=commit_message,
        token=token,
        private=private,
        create_pr=create_pr,
        revision=revision,
        api=api,
        ignore_patterns=ignore_patterns,
    )
