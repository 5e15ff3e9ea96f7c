"""Fine-tuning modes, their optimizer parameter groups, and few-shot subsets of COCO jsons (official GLIP protocol).

The three modes of the paper, as `tools/finetune.py::tuning_highlevel_override` defines them (spec §9.5) and
`GeneralizedVLRCNN.__init__` / `.train` apply them:

* `full` (official `full`): every parameter trains; nothing is kept in eval mode.
* `linear_probe` (`linear_prob`): only the head's `bbox_pred`, `centerness`, `dot_product_projection_text`
  (= `token_projection`), `log_scale`, `bias_lang` and `bias0` train (NOT the per-level `scales`); Swin, FPN and
  BERT stay in eval mode (the head stays in train mode: `RPN.FREEZE` is off).
* `prompt_tuning` (`language_prompt_v2`): only the prompt offsets train (`rpn.tunable_linear.weight` =
  `model.prompt_offsets`, zero-initialised, 1000 rows); Swin, FPN, BERT and the head stay in eval mode.

The official `cls_logits` and `cosine_scale` of the linear-probe list do not exist in `GLIPForGrounding` (the
80-class conv is unused and dropped by the converter; `COSINE_SCALE` is -1). Optimizer groups follow
`solver/build.py::make_optimizer`: one LR / weight decay per tensor, `language_backbone` (= `text_model`) at the text
LR, names containing "bias" at `bias_lr_factor` x LR without weight decay, norm weights keep the weight decay
(`WEIGHT_DECAY_NORM_FACTOR` 1.0). The README's fine-tuning commands use weight decay 0.05 with the config LRs (1e-4,
BERT 1e-5); prompt tuning uses `SOLVER.BASE_LR 0.05` and `SOLVER.WEIGHT_DECAY 0.25` (`TUNING_DEFAULTS`).

Few-shot data (`sample_few_shot_coco`) reproduces the official `--custom_shot_and_epoch_and_general_copy K_E_C`
sampling (`data/datasets/coco.py::COCODataset.__init__` with `DATASETS.FEW_SHOT` K and `DATASETS.SHUFFLE_SEED`).
"""

from __future__ import annotations

import copy
import json
import os
import random
from collections.abc import Mapping

import torch
from torch import nn

from .modeling_glip import GLIPForGrounding, GLIPModel

__all__ = [
    "LINEAR_PROBE_PARAMETER_NAMES",
    "OFFICIAL_FEW_SHOT_SCHEDULES",
    "OFFICIAL_MODE_NAMES",
    "OFFICIAL_PROMPT_TUNING_LENGTH",
    "TUNING_DEFAULTS",
    "TUNING_MODES",
    "apply_tuning_mode",
    "normalize_tuning_mode",
    "sample_few_shot_coco",
    "tuning_parameter_groups",
]

TUNING_MODES = ("full", "linear_probe", "prompt_tuning")
# Our mode name -> `SOLVER.TUNING_HIGHLEVEL_OVERRIDE`; the official names are accepted too.
OFFICIAL_MODE_NAMES = {"full": "full", "linear_probe": "linear_prob", "prompt_tuning": "language_prompt_v2"}
# Rows of the official `rpn.tunable_linear` (`vldyhead.py`: `Linear(lang_dim, 1000, bias=False)`).
OFFICIAL_PROMPT_TUNING_LENGTH = 1000
# Parameters of `GLIPModel` trained by linear probing (official names: `rpn.head.bbox_pred.*`, `rpn.head.centerness.*`,
# `rpn.head.dot_product_projection_text.*`, `rpn.head.log_scale`, `rpn.head.bias_lang`, `rpn.head.bias0`).
LINEAR_PROBE_PARAMETER_NAMES = (
    "head.bbox_pred.weight",
    "head.bbox_pred.bias",
    "head.centerness.weight",
    "head.centerness.bias",
    "head.token_projection.weight",
    "head.token_projection.bias",
    "head.log_scale",
    "head.bias_lang",
    "head.bias0",
)
# Submodules of `GLIPModel` that each mode keeps in eval mode (official `GeneralizedVLRCNN.train`).
_FROZEN_MODULES = {
    "full": (),
    "linear_probe": ("backbone", "feature_pyramid", "text_model"),
    "prompt_tuning": ("backbone", "feature_pyramid", "text_model", "head"),
}
# Default optimizer settings per mode (official README fine-tuning commands and GLIP-T `SOLVER` values).
TUNING_DEFAULTS = {
    "full": {"learning_rate": 1e-4, "text_learning_rate": 1e-5, "weight_decay": 0.05, "bias_lr_factor": 2.0},
    "linear_probe": {"learning_rate": 1e-4, "text_learning_rate": 1e-5, "weight_decay": 0.05, "bias_lr_factor": 2.0},
    "prompt_tuning": {"learning_rate": 0.05, "text_learning_rate": 1e-5, "weight_decay": 0.25, "bias_lr_factor": 2.0},
}
# `--custom_shot_and_epoch_and_general_copy` of the official README: shots -> (epochs, dataset copies per epoch).
OFFICIAL_FEW_SHOT_SCHEDULES = {1: (200, 8), 3: (200, 4), 5: (200, 2), 10: (200, 1), 0: (200, 1)}


def normalize_tuning_mode(mode: str) -> str:
    """`"full"`, `"linear_probe"` or `"prompt_tuning"` for one of those or an official name (`"linear_prob"`,
    `"language_prompt_v2"`). Raises `ValueError` for anything else."""
    official_to_ours = {official: ours for ours, official in OFFICIAL_MODE_NAMES.items()}
    if isinstance(mode, str) and mode in TUNING_MODES:
        return mode
    if isinstance(mode, str) and mode in official_to_ours:
        return official_to_ours[mode]
    raise ValueError(
        f"Unknown fine-tuning mode {mode!r}; choose one of {TUNING_MODES} (or the official names "
        f"{tuple(OFFICIAL_MODE_NAMES.values())})."
    )


def _base_model_and_prefix(model: nn.Module) -> tuple[GLIPModel, str]:
    if isinstance(model, GLIPForGrounding):
        return model.model, "model."
    if isinstance(model, GLIPModel):
        return model, ""
    raise TypeError(f"`model` must be a GLIPForGrounding or a GLIPModel, got {type(model).__name__}.")


def apply_tuning_mode(model: nn.Module, mode: str, prompt_tuning_length: int | None = None) -> list[str]:
    """Freeze `model` for a fine-tuning mode, exactly as the official `tuning_highlevel_override` does.

    Sets `requires_grad` on every parameter, records the frozen submodules in `model.frozen_module_names` (so
    `model.train()` keeps them in eval mode, as the official `GeneralizedVLRCNN.train`) and puts the model in train
    mode. `prompt_tuning` adds zero-initialised prompt offsets `(prompt_tuning_length, text_hidden_size)` when the
    model has none (and sets `config.prompt_tuning_length`); existing offsets (a converted prompt-tuned checkpoint)
    are kept and tuned further. In `full` and `linear_probe` existing offsets are kept in the forward but frozen
    (the official code builds no `tunable_linear` in those modes). `linear_probe` also turns gradient checkpointing
    off (official `DYHEAD.USE_CHECKPOINT False`: nothing before the probed layers needs a gradient).

    Args:
        model: a `GLIPForGrounding` or `GLIPModel`.
        mode: `"full"`, `"linear_probe"` or `"prompt_tuning"` (or `"linear_prob"` / `"language_prompt_v2"`).
        prompt_tuning_length: rows of new prompt offsets (default 1000, the official size); only for
            `prompt_tuning` on a model without offsets. Prompts may not be longer than this.

    Returns:
        The names (as in `model.named_parameters()`) of the parameters left trainable, in model order.

    Raises:
        TypeError: `model` is not a GLIP model.
        ValueError: unknown `mode`, or a `prompt_tuning_length` that is not a positive integer or is given for
            another mode / a model that already has offsets of another length.
    """
    mode = normalize_tuning_mode(mode)
    base_model, prefix = _base_model_and_prefix(model)
    if prompt_tuning_length is not None:
        if isinstance(prompt_tuning_length, bool) or not isinstance(prompt_tuning_length, int):
            raise ValueError(f"`prompt_tuning_length` must be a positive integer, got {prompt_tuning_length!r}.")
        if prompt_tuning_length < 1:
            raise ValueError(f"`prompt_tuning_length` must be >= 1, got {prompt_tuning_length}.")
        if mode != "prompt_tuning":
            raise ValueError(f"`prompt_tuning_length` only applies to mode 'prompt_tuning', not {mode!r}.")
        existing = base_model.prompt_offsets
        if existing is not None and existing.shape[0] != prompt_tuning_length:
            raise ValueError(
                f"The model already has {existing.shape[0]} prompt offset rows; `prompt_tuning_length` "
                f"{prompt_tuning_length} disagrees (pass None to keep them)."
            )
    if mode == "prompt_tuning" and base_model.prompt_offsets is None:
        length = prompt_tuning_length or OFFICIAL_PROMPT_TUNING_LENGTH
        reference = base_model.head.bias_lang
        base_model.prompt_offsets = nn.Parameter(
            torch.zeros(length, base_model.config.text_hidden_size, device=reference.device, dtype=reference.dtype)
        )
        base_model.config.prompt_tuning_length = length
        model.config.prompt_tuning_length = length

    trainable = []
    for name, parameter in base_model.named_parameters():
        if mode == "full":
            requires_grad = name != "prompt_offsets"
        elif mode == "linear_probe":
            requires_grad = name in LINEAR_PROBE_PARAMETER_NAMES
        else:
            requires_grad = name == "prompt_offsets"
        parameter.requires_grad_(requires_grad)
        if requires_grad:
            trainable.append(prefix + name)
    if mode == "linear_probe" and model.is_activation_checkpointing:
        model.activation_checkpointing_disable()
    model.frozen_module_names = tuple(prefix + name for name in _FROZEN_MODULES[mode])
    model.train()
    return trainable


def tuning_parameter_groups(
    model: nn.Module,
    learning_rate: float,
    weight_decay: float,
    text_learning_rate: float | None = None,
    bias_lr_factor: float = 2.0,
) -> list[dict]:
    """Optimizer parameter groups of the trainable parameters, as the official `make_optimizer` builds them.

    One group per tensor (official): `lr = learning_rate` (`SOLVER.BASE_LR`), `text_model.*` (the BERT language
    backbone) at `text_learning_rate` (`SOLVER.LANG_LR`; default `learning_rate`); a name containing "bias" (also
    `bias_lang`, `bias0`, `relative_position_bias_table`) gets `lr x bias_lr_factor` (`BIAS_LR_FACTOR`, 2) and weight
    decay 0 (`WEIGHT_DECAY_BIAS`); everything else, norm weights and the prompt offsets included, `weight_decay`.
    With `TUNING_DEFAULTS["prompt_tuning"]` the prompt offsets train at LR 0.05, weight decay 0.25 (official README).

    Returns:
        `[{"params": [tensor], "lr": ..., "weight_decay": ..., "name": ...}, ...]` for `torch.optim.AdamW`.
    """
    _base_model_and_prefix(model)
    text_learning_rate = learning_rate if text_learning_rate is None else text_learning_rate
    groups = []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        is_text = ".text_model." in f".{name}"
        group_learning_rate = text_learning_rate if is_text else learning_rate
        group_weight_decay = weight_decay
        if "bias" in name:
            group_learning_rate *= bias_lr_factor
            group_weight_decay = 0.0
        groups.append(
            {"params": [parameter], "lr": group_learning_rate, "weight_decay": group_weight_decay, "name": name}
        )
    return groups


def _has_valid_annotation(annotations: list[dict]) -> bool:
    # Official `data/datasets/coco.py::has_valid_annotation`: some annotation, and not every box <= 1 pixel wide/high.
    if not annotations:
        return False
    return not all(any(side <= 1 for side in annotation["bbox"][2:]) for annotation in annotations)


def sample_few_shot_coco(
    coco: Mapping | str | os.PathLike, shots: int, seed: int, output_file: str | os.PathLike | None = None
) -> dict:
    """A k-shot subset of a COCO detection json, with the official GLIP few-shot sampling.

    Official protocol (`data/datasets/coco.py::COCODataset.__init__`, `DATASETS.FEW_SHOT = shots`,
    `DATASETS.SHUFFLE_SEED = seed`, set by `tools/finetune.py --custom_shot_and_epoch_and_general_copy`):
    image ids sorted; images without a valid annotation dropped (no annotation, or every box at most 1 pixel wide or
    high); if `seed != 0` the list is shuffled with Python's `random.Random(seed).shuffle`; then, in that order, an
    image is kept when ANY of its categories still needs shots, and every category of a kept image uses one shot.
    Counting is per image, not per box, and a kept image keeps ALL its annotations, so a category can end up in more
    than `shots` images (it co-occurs with needed ones) but never in fewer, unless the json has fewer. The same
    json, shots and seed give the official image list (Python's `random` is the same on every platform). Per-category
    counters are keyed by category id (the official list indexed by `id - 1` assumes ids 1..N; same result then).

    Args:
        coco: the COCO json (a path or the loaded dict with `images`, `annotations`, `categories`).
        shots: images per category, >= 1.
        seed: shuffle seed; 0 keeps the sorted order (official: `SHUFFLE_SEED` 0 does not shuffle).
        output_file: also write the subset there as json.

    Returns:
        A new COCO dict: every top-level key of the input, `images` (the kept images, in selection order) and
        `annotations` (all annotations of those images); `info.few_shot` records shots, seed and the protocol.

    Raises:
        ValueError: `shots` / `seed` not integers or `shots < 1`, a json missing `images` / `annotations` /
            `categories`, or an annotation whose `image_id` / `category_id` is not in the json.
    """
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise ValueError(f"`shots` must be an integer >= 1 (images per category), got {shots!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"`seed` must be an integer (0: no shuffle, as the official SHUFFLE_SEED 0), got {seed!r}.")
    if isinstance(coco, (str, os.PathLike)):
        with open(coco, encoding="utf-8") as handle:
            coco = json.load(handle)
    if not isinstance(coco, Mapping):
        raise ValueError(f"`coco` must be a COCO json path or dict, got {type(coco).__name__}.")
    missing = [key for key in ("images", "annotations", "categories") if key not in coco]
    if missing:
        raise ValueError(f"The COCO json lacks {missing}; it needs `images`, `annotations` and `categories`.")

    category_ids = {category["id"] for category in coco["categories"]}
    annotations_of = {image["id"]: [] for image in coco["images"]}
    for annotation in coco["annotations"]:
        if annotation["image_id"] not in annotations_of:
            raise ValueError(
                f"Annotation {annotation.get('id')!r} refers to unknown image_id {annotation['image_id']!r}."
            )
        if annotation["category_id"] not in category_ids:
            raise ValueError(
                f"Annotation {annotation.get('id')!r} has category_id {annotation['category_id']!r}, which is not in "
                "`categories`."
            )
        annotations_of[annotation["image_id"]].append(annotation)

    image_ids = [image_id for image_id in sorted(annotations_of) if _has_valid_annotation(annotations_of[image_id])]
    if seed != 0:
        random.Random(seed).shuffle(image_ids)
    remaining = dict.fromkeys(category_ids, shots)
    selected = []
    for image_id in image_ids:
        categories = {annotation["category_id"] for annotation in annotations_of[image_id]}
        if any(remaining[category] > 0 for category in categories):
            selected.append(image_id)
            for category in categories:
                remaining[category] -= 1

    images_by_id = {image["id"]: image for image in coco["images"]}
    subset = copy.deepcopy({key: value for key, value in coco.items() if key not in ("images", "annotations")})
    subset["images"] = [copy.deepcopy(images_by_id[image_id]) for image_id in selected]
    subset["annotations"] = [
        copy.deepcopy(annotation) for image_id in selected for annotation in annotations_of[image_id]
    ]
    info = dict(subset.get("info") or {})
    info["few_shot"] = {"shots": shots, "seed": seed, "protocol": "GLIP COCODataset FEW_SHOT / SHUFFLE_SEED"}
    subset["info"] = info
    if output_file is not None:
        with open(output_file, "w", encoding="utf-8") as handle:
            json.dump(subset, handle)
    return subset
