"""Convert official GLIP checkpoints (microsoft/GLIP, or mmdetection's GLIP layout) to `transformers_glip`.

Conversion is data plus proof:

* data: two explicit regex tables. `MMDET_KEY_RULES` maps mmdetection's GLIP layout back to the official layout
  (`tools/model_converters/glip_to_mmdet.py` of mmdetection 3.x, inverted, including its PatchMerging value
  permutation); `ORIGINAL_KEY_RULES` maps official keys onto the parameter tree of `GLIPForGrounding`
  (docs/TEAM_NOTES.md). `DROPPED_KEY_PATTERNS` lists the official keys that are deliberately not converted and
  `UNSUPPORTED_KEY_PATTERNS` the ones this package cannot represent.
* proof: a strict `ConversionReport` (unmapped, unsupported, missing, unexpected keys and shape mismatches) that
  makes `convert_state_dict` raise, checks that the configuration agrees with the weights
  (`check_config_matches_state_dict`), and an optional comparison of the converted model with reference outputs of
  the official code (`verify_against_reference`).

Command line:

```
python -m transformers_glip.convert_glip_original_checkpoint --checkpoint glip_tiny_model_o365_goldg.pth \
    --original-config configs/pretrain/glip_Swin_T_O365_GoldG.yaml --output glip-t
python -m transformers_glip.convert_glip_original_checkpoint --checkpoint glip_large_model.pth \
    --variant glip-l --text-model bert-base-uncased --output glip-l
```
"""

from __future__ import annotations

import argparse
import ast
import copy
import importlib
import logging
import math
import pickle
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from transformers import BertConfig

from .configuration_glip import GLIPConfig

__all__ = [
    "DROPPED_KEY_PATTERNS",
    "MMDET_KEY_RULES",
    "ORIGINAL_KEY_RULES",
    "OFFICIAL_CONFIG_DEFAULTS",
    "UNSUPPORTED_KEY_PATTERNS",
    "VARIANTS",
    "ConversionReport",
    "KeyRule",
    "check_config_matches_state_dict",
    "config_from_original_yaml",
    "config_from_variant",
    "convert_checkpoint",
    "convert_state_dict",
    "detect_checkpoint_layout",
    "expected_state_dict_shapes",
    "image_processor_settings_from_original_yaml",
    "load_original_state_dict",
    "load_original_yaml",
    "main",
    "mmdet_to_original_state_dict",
    "rename_state_dict",
    "text_config_from_pretrained",
    "to_original_layout",
    "verify_against_reference",
]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------
# Key tables
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KeyRule:
    """One renaming rule: a full-match regex on the source key and a `str.format` template for the target key.

    Args:
        pattern: regular expression with named groups, matched against the whole key (`re.fullmatch`).
        target: template filled with the named groups (after `group_transforms`) and, for head-tower rules,
            `{block}` (the head block index computed from the `tower` group).
        group_transforms: optional callables applied to named groups (e.g. `norm{1,2,3}` -> `output_norms.{0,1,2}`).
        tower_role: for `rpn.head.dyhead_tower.{k}` rules, which member of a head block the key belongs to
            (`"fusion"`, `"text_layer"` or `"dyconv"`); the block index is then derived from `k` (see
            `_head_block_index`).
    """

    pattern: str
    target: str
    group_transforms: tuple[tuple[str, Callable[[str], object]], ...] = ()
    tower_role: str | None = None

    def apply(self, key: str, early_fusion: bool = True) -> str | None:
        """Return the renamed key, or `None` when the rule does not apply to `key`."""
        match = re.fullmatch(self.pattern, key)
        if match is None:
            return None
        groups: dict[str, object] = dict(match.groupdict())
        for name, transform in self.group_transforms:
            groups[name] = transform(groups[name])
        if self.tower_role is not None:
            block = _head_block_index(int(match.group("tower")), self.tower_role, early_fusion)
            if block is None:
                return None
            groups["block"] = block
        return self.target.format(**groups)


def _head_block_index(tower_index: int, role: str, early_fusion: bool) -> int | None:
    """Head block of `rpn.head.dyhead_tower.{tower_index}` (official `vldyhead.py::VLDyHead.__init__`).

    With early fusion the tower is `[VLFuse, BertEncoderLayer, DyConv] * NUM_CONVS`, so block `i` owns tower
    entries `3i` (fusion), `3i + 1` (text layer) and `3i + 2` (DyConv); without it (GLIP-T (A)) the tower is
    `[DyConv] * NUM_CONVS` and entry `i` is block `i`. Returns `None` when the index does not fit the role.
    """
    if not early_fusion:
        return tower_index if role == "dyconv" else None
    position = {"fusion": 0, "text_layer": 1, "dyconv": 2}[role]
    return tower_index // 3 if tower_index % 3 == position else None


def _minus(offset: int) -> Callable[[str], int]:
    return lambda value: int(value) - offset


_SWIN_BLOCK = r"backbone\.body\.layers\.(?P<stage>\d+)\.blocks\.(?P<index>\d+)"
_OUR_SWIN_BLOCK = "model.backbone.stages.{stage}.blocks.{index}"
_TOWER = r"rpn\.head\.dyhead_tower\.(?P<tower>\d+)"
_OUR_BLOCK = "model.head.blocks.{block}"
_PARAMETER = r"(?P<parameter>weight|bias)"
_BERT_LAYER = (
    r"(?P<name>(?:attention\.self\.(?:query|key|value)|attention\.output\.(?:dense|LayerNorm)|intermediate\.dense"
    r"|output\.(?:dense|LayerNorm))\.(?:weight|bias))"
)

# Official key (after stripping `module.`) -> key of `GLIPForGrounding.state_dict()`.
ORIGINAL_KEY_RULES: tuple[KeyRule, ...] = (
    # Swin backbone (`modeling/backbone/swint.py`).
    KeyRule(rf"backbone\.body\.patch_embed\.proj\.{_PARAMETER}", "model.backbone.embeddings.projection.{parameter}"),
    KeyRule(rf"backbone\.body\.patch_embed\.norm\.{_PARAMETER}", "model.backbone.embeddings.norm.{parameter}"),
    KeyRule(rf"{_SWIN_BLOCK}\.norm1\.{_PARAMETER}", _OUR_SWIN_BLOCK + ".layernorm_before.{parameter}"),
    KeyRule(rf"{_SWIN_BLOCK}\.attn\.qkv\.{_PARAMETER}", _OUR_SWIN_BLOCK + ".attention.qkv.{parameter}"),
    KeyRule(rf"{_SWIN_BLOCK}\.attn\.proj\.{_PARAMETER}", _OUR_SWIN_BLOCK + ".attention.projection.{parameter}"),
    KeyRule(
        rf"{_SWIN_BLOCK}\.attn\.relative_position_bias_table",
        _OUR_SWIN_BLOCK + ".attention.relative_position_bias_table",
    ),
    KeyRule(rf"{_SWIN_BLOCK}\.norm2\.{_PARAMETER}", _OUR_SWIN_BLOCK + ".layernorm_after.{parameter}"),
    KeyRule(rf"{_SWIN_BLOCK}\.mlp\.(?P<layer>fc1|fc2)\.{_PARAMETER}", _OUR_SWIN_BLOCK + ".mlp.{layer}.{parameter}"),
    KeyRule(
        r"backbone\.body\.layers\.(?P<stage>\d+)\.downsample\.reduction\.weight",
        "model.backbone.stages.{stage}.downsample.reduction.weight",
    ),
    KeyRule(
        rf"backbone\.body\.layers\.(?P<stage>\d+)\.downsample\.norm\.{_PARAMETER}",
        "model.backbone.stages.{stage}.downsample.norm.{parameter}",
    ),
    # Output norms of stages 2..4 (C3, C4, C5); there is no `norm0` (Identity in the official code).
    KeyRule(
        rf"backbone\.body\.norm(?P<level>[123])\.{_PARAMETER}",
        "model.backbone.output_norms.{level}.{parameter}",
        group_transforms=(("level", _minus(1)),),
    ),
    # FPN "RETINANET" variant (`modeling/backbone/fpn.py`): inner/layer 2..4 are C3..C5.
    KeyRule(
        rf"backbone\.fpn\.fpn_inner(?P<level>[234])\.{_PARAMETER}",
        "model.feature_pyramid.lateral_convs.{level}.{parameter}",
        group_transforms=(("level", _minus(2)),),
    ),
    KeyRule(
        rf"backbone\.fpn\.fpn_layer(?P<level>[234])\.{_PARAMETER}",
        "model.feature_pyramid.output_convs.{level}.{parameter}",
        group_transforms=(("level", _minus(2)),),
    ),
    KeyRule(
        rf"backbone\.fpn\.top_blocks\.p(?P<level>[67])\.{_PARAMETER}",
        "model.feature_pyramid.extra_convs.{level}.{parameter}",
        group_transforms=(("level", _minus(6)),),
    ),
    # Language backbone: Hugging Face `BertModel` keys, unchanged.
    KeyRule(
        r"language_backbone\.body\.model\.(?P<name>(?:embeddings|encoder)\..+\.(?:weight|bias))",
        "model.text_model.{name}",
    ),
    # VLDyHead fusion blocks (`vldyhead.py::VLFuse` -> `BiAttentionBlockForCheckpoint`).
    KeyRule(
        rf"{_TOWER}\.b_attn\.layer_norm_v\.{_PARAMETER}",
        _OUR_BLOCK + ".fusion.vision_layer_norm.{parameter}",
        tower_role="fusion",
    ),
    KeyRule(
        rf"{_TOWER}\.b_attn\.layer_norm_l\.{_PARAMETER}",
        _OUR_BLOCK + ".fusion.text_layer_norm.{parameter}",
        tower_role="fusion",
    ),
    KeyRule(
        rf"{_TOWER}\.b_attn\.attn\.(?P<projection>v_proj|l_proj|values_v_proj|values_l_proj|out_v_proj|out_l_proj)"
        rf"\.{_PARAMETER}",
        _OUR_BLOCK + ".fusion.attention.{projection}.{parameter}",
        group_transforms=(
            (
                "projection",
                lambda name: {
                    "v_proj": "vision_proj",
                    "l_proj": "text_proj",
                    "values_v_proj": "values_vision_proj",
                    "values_l_proj": "values_text_proj",
                    "out_v_proj": "out_vision_proj",
                    "out_l_proj": "out_text_proj",
                }[name],
            ),
        ),
        tower_role="fusion",
    ),
    KeyRule(
        rf"{_TOWER}\.b_attn\.gamma_(?P<modality>[vl])",
        _OUR_BLOCK + ".fusion.{modality}_gamma",
        group_transforms=(("modality", lambda name: {"v": "vision", "l": "text"}[name]),),
        tower_role="fusion",
    ),
    # Head BERT layers (`vldyhead.py::BertEncoderLayer`): HF BertLayer names, unchanged.
    KeyRule(rf"{_TOWER}\.{_BERT_LAYER}", _OUR_BLOCK + ".text_layer.{name}", tower_role="text_layer"),
    # DyConv blocks (`vldyhead.py::DyConv`, `layers/dyrelu.py::DYReLU`).
    KeyRule(
        rf"{_TOWER}\.DyConv\.(?P<conv>[012])\.conv\.{_PARAMETER}",
        _OUR_BLOCK + ".dyconv.convs.{conv}.conv.{parameter}",
        tower_role="dyconv",
    ),
    KeyRule(
        rf"{_TOWER}\.DyConv\.(?P<conv>[012])\.bn\.{_PARAMETER}",
        _OUR_BLOCK + ".dyconv.convs.{conv}.norm.{parameter}",
        tower_role="dyconv",
    ),
    KeyRule(
        rf"{_TOWER}\.AttnConv\.1\.{_PARAMETER}",
        _OUR_BLOCK + ".dyconv.scale_attention.{parameter}",
        tower_role="dyconv",
    ),
    KeyRule(
        rf"{_TOWER}\.relu\.fc\.(?P<layer>[02])\.{_PARAMETER}",
        _OUR_BLOCK + ".dyconv.dynamic_relu.{layer}.{parameter}",
        group_transforms=(("layer", lambda index: {"0": "fc1", "2": "fc2"}[index]),),
        tower_role="dyconv",
    ),
    KeyRule(rf"{_TOWER}\.offset\.{_PARAMETER}", _OUR_BLOCK + ".dyconv.offset_conv.{parameter}", tower_role="dyconv"),
    # Prediction layers and dot-product parameters.
    KeyRule(rf"rpn\.head\.(?P<layer>bbox_pred|centerness)\.{_PARAMETER}", "model.head.{layer}.{parameter}"),
    KeyRule(r"rpn\.head\.scales\.(?P<level>[0-4])\.scale", "model.head.scales.{level}.scale"),
    KeyRule(rf"rpn\.head\.dot_product_projection_text\.{_PARAMETER}", "model.head.token_projection.{parameter}"),
    KeyRule(r"rpn\.head\.(?P<name>log_scale|bias_lang|bias0)", "model.head.{name}"),
)

# Official keys that are deliberately not converted, with the reason.
DROPPED_KEY_PATTERNS: dict[str, str] = {
    r"backbone\.body\.layers\.\d+\.blocks\.\d+\.attn\.relative_position_index": (
        "integer index buffer, recomputed (non-persistent buffer of the model)"
    ),
    r"rpn\.head\.cls_logits\.(?:weight|bias)": "unused 80-class conv (only a shape donor in the official code)",
    r"rpn\.anchor_generator\.cell_anchors\.\d+": "anchor buffers, recomputed from the config",
    r"language_backbone\.body\.model\.pooler\..+": "BERT pooler, unused by GLIP",
    r"language_backbone\.body\.model\.embeddings\.position_ids": "BERT position-id buffer (arange), recomputed",
}

# Official keys of features this package does not implement.
UNSUPPORTED_KEY_PATTERNS: dict[str, str] = {
    r"rpn\.tunable_linear\.weight": (
        "prompt-tuning offsets (`FUSE_CONFIG.ADD_LINEAR_LAYER`, `tools/finetune.py` language_prompt_v2/v4); "
        "GLIPForGrounding has no field for them"
    ),
}

# mmdetection GLIP key -> official key (inverse of mmdetection 3.x `tools/model_converters/glip_to_mmdet.py`).
MMDET_KEY_RULES: tuple[KeyRule, ...] = (
    KeyRule(r"backbone\.patch_embed\.projection\.(?P<rest>.+)", "backbone.body.patch_embed.proj.{rest}"),
    KeyRule(r"backbone\.patch_embed\.norm\.(?P<rest>.+)", "backbone.body.patch_embed.norm.{rest}"),
    KeyRule(
        r"backbone\.stages\.(?P<stage>\d+)\.blocks\.(?P<index>\d+)\.attn\.w_msa\.(?P<rest>.+)",
        "backbone.body.layers.{stage}.blocks.{index}.attn.{rest}",
    ),
    KeyRule(
        r"backbone\.stages\.(?P<stage>\d+)\.blocks\.(?P<index>\d+)\.ffn\.layers\.0\.0\.(?P<rest>.+)",
        "backbone.body.layers.{stage}.blocks.{index}.mlp.fc1.{rest}",
    ),
    KeyRule(
        r"backbone\.stages\.(?P<stage>\d+)\.blocks\.(?P<index>\d+)\.ffn\.layers\.1\.(?P<rest>.+)",
        "backbone.body.layers.{stage}.blocks.{index}.mlp.fc2.{rest}",
    ),
    KeyRule(
        r"backbone\.stages\.(?P<stage>\d+)\.blocks\.(?P<index>\d+)\.(?P<norm>norm[12])\.(?P<rest>.+)",
        "backbone.body.layers.{stage}.blocks.{index}.{norm}.{rest}",
    ),
    KeyRule(
        r"backbone\.stages\.(?P<stage>\d+)\.downsample\.(?P<rest>.+)", "backbone.body.layers.{stage}.downsample.{rest}"
    ),
    KeyRule(r"backbone\.(?P<norm>norm[123])\.(?P<rest>.+)", "backbone.body.{norm}.{rest}"),
    KeyRule(
        r"neck\.lateral_convs\.(?P<level>[012])\.conv\.(?P<rest>.+)",
        "backbone.fpn.fpn_inner{level}.{rest}",
        group_transforms=(("level", lambda level: int(level) + 2),),
    ),
    KeyRule(
        r"neck\.fpn_convs\.(?P<level>[012])\.conv\.(?P<rest>.+)",
        "backbone.fpn.fpn_layer{level}.{rest}",
        group_transforms=(("level", lambda level: int(level) + 2),),
    ),
    KeyRule(
        r"neck\.fpn_convs\.(?P<level>[34])\.conv\.(?P<rest>.+)",
        "backbone.fpn.top_blocks.p{level}.{rest}",
        group_transforms=(("level", lambda level: int(level) + 3),),
    ),
    KeyRule(r"language_model\.(?P<rest>language_backbone\..+)", "{rest}"),
    KeyRule(
        r"bbox_head\.head\.dyhead_tower\.(?P<tower>\d+)\.dyconvs\.(?P<rest>.+)",
        "rpn.head.dyhead_tower.{tower}.DyConv.{rest}",
    ),
    KeyRule(
        r"bbox_head\.head\.dyhead_tower\.(?P<tower>\d+)\.attnconv\.(?P<rest>.+)",
        "rpn.head.dyhead_tower.{tower}.AttnConv.{rest}",
    ),
    # Everything else of the head keeps its suffix (b_attn, BERT layers, offset, relu, bbox_pred, scales, ...).
    # Also covers older mmdetection conversions that kept `DyConv` / `AttnConv`.
    KeyRule(r"bbox_head\.(?P<rest>head\..+)", "rpn.{rest}"),
)

_MODULE_PREFIX = "module."
_OFFICIAL_PREFIXES = ("backbone.body.", "backbone.fpn.", "language_backbone.", "rpn.")
_MMDET_PREFIXES = (
    "backbone.patch_embed.",
    "backbone.stages.",
    "backbone.norm",
    "neck.",
    "language_model.",
    "bbox_head.",
)
# Official PatchMerging concatenates the 2x2 neighbours as (row 0, col 0), (1, 0), (0, 1), (1, 1); mmdetection's
# `nn.Unfold` order is channel-major, then (0, 0), (0, 1), (1, 0), (1, 1). The swap of the middle two is its own
# inverse.
_PATCH_MERGING_ORDER = [0, 2, 1, 3]


# ---------------------------------------------------------------------------------------------------------------
# Conversion report
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class ConversionReport:
    """Outcome of a conversion: every key that was not converted cleanly, by reason.

    Attributes:
        unmapped_keys: checkpoint keys that match no rule of the key table (and are not listed as dropped).
        unsupported_keys: checkpoint keys of features this package does not implement, with the reason.
        dropped_keys: checkpoint keys dropped on purpose (`DROPPED_KEY_PATTERNS`); informational only.
        duplicate_targets: model keys produced by more than one checkpoint key, with those keys.
        missing_keys: model keys that no checkpoint key maps to.
        unexpected_keys: converted keys that the model does not have.
        shape_mismatches: model key -> (converted shape, model shape).
    """

    unmapped_keys: list[str] = field(default_factory=list)
    unsupported_keys: dict[str, str] = field(default_factory=dict)
    dropped_keys: list[str] = field(default_factory=list)
    duplicate_targets: dict[str, list[str]] = field(default_factory=dict)
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    shape_mismatches: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)

    @property
    def is_clean(self) -> bool:
        """Whether the conversion is complete and exact (dropped keys do not count as problems)."""
        return not (
            self.unmapped_keys
            or self.unsupported_keys
            or self.duplicate_targets
            or self.missing_keys
            or self.unexpected_keys
            or self.shape_mismatches
        )

    def format(self, max_keys_per_section: int = 50) -> str:
        """Human-readable report listing every problem (at most `max_keys_per_section` keys per section)."""

        def section(title: str, lines: list[str]) -> list[str]:
            if not lines:
                return []
            shown = lines[:max_keys_per_section]
            more = [f"    ... and {len(lines) - len(shown)} more"] if len(lines) > len(shown) else []
            return [f"  {title} ({len(lines)}):", *[f"    {line}" for line in shown], *more]

        parts = [
            *section("unmapped checkpoint keys (no rule in the key table)", sorted(self.unmapped_keys)),
            *section(
                "unsupported checkpoint keys",
                [f"{key}: {reason}" for key, reason in sorted(self.unsupported_keys.items())],
            ),
            *section(
                "model keys produced by several checkpoint keys",
                [f"{key} <- {sources}" for key, sources in sorted(self.duplicate_targets.items())],
            ),
            *section("missing model keys (no checkpoint key maps to them)", sorted(self.missing_keys)),
            *section("unexpected keys (converted, but the model has no such key)", sorted(self.unexpected_keys)),
            *section(
                "shape mismatches (model key: converted shape vs model shape)",
                [
                    f"{key}: {list(source_shape)} vs {list(model_shape)}"
                    for key, (source_shape, model_shape) in sorted(self.shape_mismatches.items())
                ],
            ),
        ]
        if not parts:
            return f"Conversion report: clean ({len(self.dropped_keys)} keys dropped on purpose)."
        return "\n".join(["Conversion report: the checkpoint does not convert cleanly.", *parts])


# ---------------------------------------------------------------------------------------------------------------
# Reading checkpoints
# ---------------------------------------------------------------------------------------------------------------
def load_original_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an official GLIP or mmdetection GLIP checkpoint as a flat state dict (keys without `module.`).

    Accepted files (`torch.load(path, map_location="cpu", weights_only=True)`):

    * official (`utils/checkpoint.py::Checkpointer.save`): `{"model": state_dict, "optimizer": ..., ...}`; only
      `model` is used (`model_ema`, `optimizer`, `scheduler`, `iteration` are ignored);
    * mmdetection / mmengine: `{"meta": ..., "state_dict": state_dict, ...}`;
    * a bare state dict of either layout.

    The layout is not converted here; see `to_original_layout` (applied by `convert_state_dict`).
    """
    path = Path(path)
    logger.info("Reading %s", path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # weights_only refused an object: re-raised with a hint
        raise ValueError(
            f"Could not read {path} with torch.load(weights_only=True): {error}. Checkpoints holding pickled "
            "Python objects besides tensors (e.g. mmengine's `message_hub`) must first be reduced to their "
            "weights, e.g. with mmdetection's tools/model_converters/publish_model.py."
        ) from error
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{path} does not hold a dict (got {type(checkpoint).__name__}).")
    if "model" in checkpoint and isinstance(checkpoint["model"], Mapping):
        state_dict = checkpoint["model"]
        ignored = sorted(key for key in checkpoint if key != "model")
    elif "state_dict" in checkpoint and isinstance(checkpoint["state_dict"], Mapping):
        state_dict = checkpoint["state_dict"]
        ignored = sorted(key for key in checkpoint if key != "state_dict")
    else:
        state_dict = checkpoint
        ignored = []
    if ignored:
        logger.info("Ignoring checkpoint entries %s", ignored)
    non_tensors = sorted(key for key, value in state_dict.items() if not isinstance(value, torch.Tensor))
    if non_tensors:
        raise ValueError(f"{path}: state dict entries that are not tensors: {non_tensors[:10]}")
    return _strip_module_prefix(dict(state_dict))


def _strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip the DistributedDataParallel prefix `module.` (official checkpoints carry it on every key)."""
    return {key.removeprefix(_MODULE_PREFIX): value for key, value in state_dict.items()}


def detect_checkpoint_layout(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Return `"original"` (microsoft/GLIP key names) or `"mmdet"` (mmdetection's GLIP); raise if neither."""
    keys = [key.removeprefix(_MODULE_PREFIX) for key in state_dict]
    official = sum(key.startswith(_OFFICIAL_PREFIXES) for key in keys)
    mmdet = sum(key.startswith(_MMDET_PREFIXES) for key in keys)
    if official and not mmdet:
        return "original"
    if mmdet and not official:
        return "mmdet"
    raise ValueError(
        "Cannot tell the checkpoint layout: "
        f"{official} keys look like microsoft/GLIP ({', '.join(_OFFICIAL_PREFIXES)}) and {mmdet} like mmdetection "
        f"({', '.join(_MMDET_PREFIXES)}); first keys: {keys[:5]}"
    )


def mmdet_to_original_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an mmdetection GLIP state dict back to microsoft/GLIP key names and values.

    Inverts mmdetection's `tools/model_converters/glip_to_mmdet.py`: renames through `MMDET_KEY_RULES`, undoes the
    PatchMerging channel permutation of `downsample.reduction.weight` / `downsample.norm.*`, and reshapes mmcv's
    0-d `Scale` parameters to the official shape [1]. Raises `ValueError` listing keys that match no rule.
    """
    converted: dict[str, torch.Tensor] = {}
    unmapped = []
    for key, value in _strip_module_prefix(state_dict).items():
        new_key = _apply_first_rule(MMDET_KEY_RULES, key)
        if new_key is None:
            unmapped.append(key)
            continue
        if re.fullmatch(r"backbone\.body\.layers\.\d+\.downsample\.reduction\.weight", new_key):
            value = _unpermute_patch_merging_weight(value)
        elif re.fullmatch(r"backbone\.body\.layers\.\d+\.downsample\.norm\.(?:weight|bias)", new_key):
            value = _unpermute_patch_merging_vector(value)
        elif re.fullmatch(r"rpn\.head\.scales\.\d+\.scale", new_key) and value.dim() == 0:
            value = value.reshape(1)
        converted[new_key] = value
    if unmapped:
        raise ValueError(
            f"{len(unmapped)} mmdetection keys match no rule of MMDET_KEY_RULES:\n  " + "\n  ".join(sorted(unmapped))
        )
    return converted


def _unpermute_patch_merging_weight(weight: torch.Tensor) -> torch.Tensor:
    """(out, 4C) mmdet `nn.Unfold` order -> official PatchMerging order (x0, x1, x2, x3 concatenated)."""
    out_channels, in_channels = weight.shape
    channels = in_channels // 4
    weight = weight.reshape(out_channels, channels, 4).transpose(1, 2)  # (out, 4, C), unfold neighbour order
    return weight[:, _PATCH_MERGING_ORDER, :].reshape(out_channels, in_channels)  # (out, 4C), official order


def _unpermute_patch_merging_vector(vector: torch.Tensor) -> torch.Tensor:
    """(4C,) mmdet `nn.Unfold` order -> official PatchMerging order (LayerNorm weight / bias)."""
    channels = vector.shape[0] // 4
    vector = vector.reshape(channels, 4).transpose(0, 1)  # (4, C), unfold neighbour order
    return vector[_PATCH_MERGING_ORDER, :].reshape(-1)  # (4C,), official order


def to_original_layout(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip `module.` and, for an mmdetection checkpoint, map it to the official layout (auto-detected)."""
    layout = detect_checkpoint_layout(state_dict)
    if layout == "mmdet":
        logger.info("Detected the mmdetection GLIP layout; mapping it to the official layout first")
        return mmdet_to_original_state_dict(state_dict)
    return _strip_module_prefix(state_dict)


# ---------------------------------------------------------------------------------------------------------------
# Renaming and strict checking
# ---------------------------------------------------------------------------------------------------------------
def _apply_first_rule(rules: tuple[KeyRule, ...], key: str, early_fusion: bool = True) -> str | None:
    for rule in rules:
        new_key = rule.apply(key, early_fusion)
        if new_key is not None:
            return new_key
    return None


def _reason_if_listed(patterns: Mapping[str, str], key: str) -> str | None:
    for pattern, reason in patterns.items():
        if re.fullmatch(pattern, key):
            return reason
    return None


def rename_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: GLIPConfig
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Rename an official (or mmdetection) state dict onto the `GLIPForGrounding` parameter tree.

    Pure key mapping, no model needed: returns the renamed tensors (same objects) and a report holding the
    unmapped, unsupported, dropped and duplicate keys. `config.early_fusion` decides how head-tower indices map to
    head blocks.
    """
    original = to_original_layout(state_dict)
    report = ConversionReport()
    sources_of: dict[str, list[str]] = {}
    renamed: dict[str, torch.Tensor] = {}
    for key, value in original.items():
        if _reason_if_listed(DROPPED_KEY_PATTERNS, key) is not None:
            report.dropped_keys.append(key)
            continue
        unsupported_reason = _reason_if_listed(UNSUPPORTED_KEY_PATTERNS, key)
        if unsupported_reason is not None:
            report.unsupported_keys[key] = unsupported_reason
            continue
        new_key = _apply_first_rule(ORIGINAL_KEY_RULES, key, config.early_fusion)
        if new_key is None:
            report.unmapped_keys.append(key)
            continue
        sources_of.setdefault(new_key, []).append(key)
        renamed[new_key] = value
    report.duplicate_targets = {key: sources for key, sources in sources_of.items() if len(sources) > 1}
    return renamed, report


def expected_state_dict_shapes(config: GLIPConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of `GLIPForGrounding(config).state_dict()`, built on the meta device (no memory, no init)."""
    model_class = _model_class()
    with torch.device("meta"):
        model = model_class(config)
    return {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    config: GLIPConfig,
    expected_shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> dict[str, torch.Tensor]:
    """Convert an official (or mmdetection, auto-detected) GLIP state dict to `GLIPForGrounding` keys, strictly.

    Args:
        state_dict: checkpoint tensors, with or without the `module.` prefix.
        config: the target configuration (its `early_fusion` decides the head-tower mapping).
        expected_shapes: model key -> shape to check against; defaults to the shapes of `GLIPForGrounding(config)`
            built on the meta device.

    Returns:
        The renamed tensors (the same tensor objects; nothing is copied).

    Raises:
        ValueError: with a `ConversionReport` listing every unmapped, unsupported, duplicate, missing or unexpected
            key and every shape mismatch.
    """
    renamed, report = rename_state_dict(state_dict, config)
    if expected_shapes is None:
        expected_shapes = expected_state_dict_shapes(config)
    report.missing_keys = sorted(set(expected_shapes) - set(renamed))
    report.unexpected_keys = sorted(set(renamed) - set(expected_shapes))
    report.shape_mismatches = {
        key: (tuple(value.shape), tuple(expected_shapes[key]))
        for key, value in renamed.items()
        if key in expected_shapes and tuple(value.shape) != tuple(expected_shapes[key])
    }
    if not report.is_clean:
        raise ValueError(report.format())
    logger.info("%s Converted %d tensors.", report.format(), len(renamed))
    return renamed


# ---------------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------------
# The values of `maskrcnn_benchmark/config/defaults.py` for the keys the conversion reads or checks; an official
# yaml (e.g. configs/pretrain/glip_Swin_T_O365_GoldG.yaml) is merged over these, as yacs does.
OFFICIAL_CONFIG_DEFAULTS: dict = {
    "MODEL": {
        "META_ARCHITECTURE": "GeneralizedRCNN",
        "RPN_ONLY": False,
        "RPN_ARCHITECTURE": "RPN",
        "BACKBONE": {"CONV_BODY": "R-50-C4", "OUT_CHANNELS": 256 * 4},
        "SWINT": {
            "EMBED_DIM": 96,
            "OUT_CHANNELS": [96, 192, 384, 768],
            "DEPTHS": [2, 2, 6, 2],
            "NUM_HEADS": [3, 6, 12, 24],
            "WINDOW_SIZE": 7,
            "MLP_RATIO": 4,
            "DROP_PATH_RATE": 0.2,
            "APE": False,
            "VERSION": "v1",
            "OUT_NORM": True,
            "LAYER_SCALE": 0,
        },
        "FPN": {
            "USE_GN": False,
            "USE_RELU": False,
            "DROP_BLOCK": True,
            "DROP_PROB": 0.3,
            "DROP_SIZE": 3,
            "USE_SPP": False,
            "USE_PAN": False,
            "USE_DYHEAD": False,
        },
        "GROUP_NORM": {"DIM_PER_GP": -1, "NUM_GROUPS": 16, "EPSILON": 1e-5},
        "LANGUAGE_BACKBONE": {
            "TOKENIZER_TYPE": "bert-base-uncased",
            "MODEL_TYPE": "bert-base-uncased",
            "LANG_DIM": 768,
            "MAX_QUERY_LEN": 256,
            "N_LAYERS": 1,
            "MASK_SPECIAL": False,
        },
        "RPN": {
            "ANCHOR_SIZES": [32, 64, 128, 256, 512],
            "ANCHOR_STRIDE": [16],
            "ASPECT_RATIOS": [0.5, 1.0, 2.0],
            "ANCHOR_SHIFT": [0.0, 0.0, 0.0, 0.0],
            "USE_RELATIVE_SIZE": False,
            "SCALES_PER_OCTAVE": 3,
            "OCTAVE": 2.0,
        },
        "DYHEAD": {
            "PRIOR_PROB": 0.01,
            "NUM_CONVS": 4,
            "CHANNELS": 128,
            "USE_DFCONV": False,
            "SCORE_AGG": "MEAN",
            "LOG_SCALE": 0.0,
            "USE_GN": False,
            "USE_DYFUSE": False,
            "USE_DYRELU": False,
            "COSINE_SCALE": -1.0,
            "FUSE_CONFIG": {
                "EARLY_FUSE_ON": False,
                "TYPE": "",
                "JOINT_EMB_SIZE": 256,
                "USE_CLASSIFICATION_LOSS": False,
                "USE_TOKEN_LOSS": False,
                "TOKEN_GAMMA": 2.0,
                "TOKEN_ALPHA": 0.25,
                "USE_DOT_PRODUCT_TOKEN_LOSS": False,
                "USE_CONTRASTIVE_ALIGN_LOSS": False,
                "DOT_PRODUCT_TOKEN_LOSS_WEIGHT": 1.0,
                "USE_LAYER_SCALE": True,
                "SEPARATE_BIDIRECTIONAL": False,
                "STABLE_SOFTMAX_2D": False,
                "USE_FUSED_FEATURES_DOT_PRODUCT": False,
                "CLAMP_MIN_FOR_UNDERFLOW": False,
                "CLAMP_MAX_FOR_OVERFLOW": False,
                "CLAMP_BERTATTN_MIN_FOR_UNDERFLOW": False,
                "CLAMP_BERTATTN_MAX_FOR_OVERFLOW": False,
                "CLAMP_DOT_PRODUCT": False,
                "MLM_LOSS": False,
                "USE_SHALLOW_CONTRASTIVE_LOSS": False,
                "USE_BACKBONE_SHALLOW_CONTRASTIVE_LOSS": False,
                "ADD_LINEAR_LAYER": False,
            },
        },
        "ATSS": {
            "INFERENCE_TH": 0.05,
            "NMS_TH": 0.6,
            "PRE_NMS_TOP_N": 1000,
            "TOPK": 9,
            "REG_LOSS_WEIGHT": 2.0,
            "DETECTIONS_PER_IMG": 100,
        },
    },
    "INPUT": {
        "MIN_SIZE_TRAIN": 800,
        "MIN_SIZE_TEST": 800,
        "MAX_SIZE_TEST": 1333,
        "PIXEL_MEAN": [102.9801, 115.9465, 122.7717],
        "PIXEL_STD": [1.0, 1.0, 1.0],
        "TO_BGR255": True,
        "FORMAT": "",
    },
    "AUGMENT": {"MULT_MIN_SIZE_TRAIN": [], "FLIP_PROB_TRAIN": 0.5},
    "DATALOADER": {"SIZE_DIVISIBILITY": 0},
}

# Official values the GLIP implementation here is fixed to (the released GLIP-T / GLIP-L configs all have them);
# any other value describes a model this package does not implement.
_REQUIRED_VALUES: dict[str, object] = {
    "MODEL.META_ARCHITECTURE": "GeneralizedVLRCNN",
    "MODEL.RPN_ONLY": True,
    "MODEL.RPN_ARCHITECTURE": "VLDYHEAD",
    "MODEL.BACKBONE.CONV_BODY": "SWINT-FPN-RETINANET",
    "MODEL.SWINT.APE": False,
    "MODEL.SWINT.VERSION": "v1",
    "MODEL.SWINT.OUT_NORM": True,
    "MODEL.SWINT.LAYER_SCALE": 0,
    "MODEL.FPN.USE_GN": False,
    "MODEL.FPN.USE_RELU": False,
    "MODEL.FPN.USE_SPP": False,
    "MODEL.FPN.USE_PAN": False,
    "MODEL.FPN.USE_DYHEAD": False,
    "MODEL.GROUP_NORM.DIM_PER_GP": -1,
    "MODEL.LANGUAGE_BACKBONE.N_LAYERS": 1,
    "MODEL.LANGUAGE_BACKBONE.MASK_SPECIAL": False,
    "MODEL.RPN.ASPECT_RATIOS": [1.0],
    "MODEL.RPN.SCALES_PER_OCTAVE": 1,
    "MODEL.RPN.ANCHOR_SHIFT": [0.0, 0.0, 0.0, 0.0],
    "MODEL.RPN.USE_RELATIVE_SIZE": False,
    "MODEL.DYHEAD.USE_GN": True,
    "MODEL.DYHEAD.USE_DYRELU": True,
    "MODEL.DYHEAD.USE_DYFUSE": True,
    "MODEL.DYHEAD.SCORE_AGG": "MEAN",
    "MODEL.DYHEAD.COSINE_SCALE": -1.0,
    "MODEL.DYHEAD.FUSE_CONFIG.USE_DOT_PRODUCT_TOKEN_LOSS": True,
    "MODEL.DYHEAD.FUSE_CONFIG.USE_CLASSIFICATION_LOSS": False,
    "MODEL.DYHEAD.FUSE_CONFIG.USE_TOKEN_LOSS": False,
    "MODEL.DYHEAD.FUSE_CONFIG.USE_CONTRASTIVE_ALIGN_LOSS": False,
    "MODEL.DYHEAD.FUSE_CONFIG.USE_SHALLOW_CONTRASTIVE_LOSS": False,
    "MODEL.DYHEAD.FUSE_CONFIG.USE_BACKBONE_SHALLOW_CONTRASTIVE_LOSS": False,
    "MODEL.DYHEAD.FUSE_CONFIG.MLM_LOSS": False,
    "MODEL.DYHEAD.FUSE_CONFIG.ADD_LINEAR_LAYER": False,
    "MODEL.DYHEAD.FUSE_CONFIG.CLAMP_DOT_PRODUCT": True,
    "INPUT.TO_BGR255": True,
    "INPUT.FORMAT": "",
}
# Only read when FUSE_CONFIG.EARLY_FUSE_ON (the fusion blocks and head BERT layers exist).
_REQUIRED_VALUES_WITH_EARLY_FUSION: dict[str, object] = {
    "MODEL.DYHEAD.FUSE_CONFIG.TYPE": "MHA-B",
    "MODEL.DYHEAD.FUSE_CONFIG.USE_LAYER_SCALE": True,
    "MODEL.DYHEAD.FUSE_CONFIG.SEPARATE_BIDIRECTIONAL": False,
    "MODEL.DYHEAD.FUSE_CONFIG.STABLE_SOFTMAX_2D": False,
    "MODEL.DYHEAD.FUSE_CONFIG.CLAMP_MIN_FOR_UNDERFLOW": True,
    "MODEL.DYHEAD.FUSE_CONFIG.CLAMP_MAX_FOR_OVERFLOW": True,
    "MODEL.DYHEAD.FUSE_CONFIG.CLAMP_BERTATTN_MIN_FOR_UNDERFLOW": True,
    "MODEL.DYHEAD.FUSE_CONFIG.CLAMP_BERTATTN_MAX_FOR_OVERFLOW": True,
}

# `--variant` presets: GLIPConfig factory and the official config file it corresponds to.
VARIANTS: dict[str, tuple[Callable[..., GLIPConfig], str]] = {
    "glip-t": (GLIPConfig.glip_t, "configs/pretrain/glip_Swin_T_O365_GoldG.yaml"),
    "glip-t-a": (GLIPConfig.glip_t_a, "configs/pretrain/glip_A_Swin_T_O365.yaml"),
    "glip-l": (GLIPConfig.glip_l, "configs/pretrain/glip_Swin_L.yaml"),
}
_OFFICIAL_TEST_MIN_SIZE = 800
_OFFICIAL_TEST_MAX_SIZE = 1333


def _decode_yaml_value(value):
    """Decode a yaml value as yacs does: strings holding Python literals (`"(64, 128)"`) become values."""
    if isinstance(value, dict):
        return {key: _decode_yaml_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_decode_yaml_value(item) for item in value]
    if isinstance(value, str):
        try:
            decoded = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
        return _decode_yaml_value(decoded) if isinstance(decoded, (list, tuple, dict)) else decoded
    return value


def _merge_into(base: dict, overrides: Mapping) -> dict:
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge_into(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def load_original_yaml(path: str | Path) -> dict:
    """Read an official GLIP yaml and merge it over `OFFICIAL_CONFIG_DEFAULTS` (yacs semantics).

    Works for the yaml of overrides in `configs/` (optionally chained with `_BASE_`, resolved relative to the file)
    and for a full `cfg.dump()`. Returns the merged nested dict.
    """
    path = Path(path)
    with open(path, encoding="utf-8") as handle:
        overrides = yaml.safe_load(handle) or {}
    overrides = _decode_yaml_value(overrides)
    merged = copy.deepcopy(OFFICIAL_CONFIG_DEFAULTS)
    base = overrides.pop("_BASE_", None)
    if base is not None:
        merged = load_original_yaml(path.parent / base)
    return _merge_into(merged, overrides)


def _lookup(original_config: Mapping, dotted_key: str):
    value = original_config
    for part in dotted_key.split("."):
        value = value[part]
    return value


def _values_equal(value, expected) -> bool:
    if isinstance(expected, list):
        return (
            isinstance(value, (list, tuple))
            and len(value) == len(expected)
            and all(_values_equal(item, reference) for item, reference in zip(value, expected))
        )
    if isinstance(expected, bool) or isinstance(value, bool):
        return value is expected
    if isinstance(expected, (int, float)) and isinstance(value, (int, float)):
        return math.isclose(value, expected, rel_tol=1e-6, abs_tol=1e-9)
    return value == expected


def _check_supported(original_config: Mapping) -> None:
    required = dict(_REQUIRED_VALUES)
    if _lookup(original_config, "MODEL.DYHEAD.FUSE_CONFIG.EARLY_FUSE_ON"):
        required.update(_REQUIRED_VALUES_WITH_EARLY_FUSION)
    problems = []
    for dotted_key, expected in required.items():
        value = _lookup(original_config, dotted_key)
        if not _values_equal(value, expected):
            problems.append(f"{dotted_key} = {value!r} (supported: {expected!r})")
    model_type = str(_lookup(original_config, "MODEL.LANGUAGE_BACKBONE.MODEL_TYPE"))
    if not model_type.startswith("bert-"):
        problems.append(f"MODEL.LANGUAGE_BACKBONE.MODEL_TYPE = {model_type!r} (supported: a BERT model)")
    if problems:
        raise ValueError(
            "The official config describes a model transformers_glip does not implement:\n  " + "\n  ".join(problems)
        )


def text_config_from_pretrained(text_model: str | Path | None) -> BertConfig:
    """BertConfig of `text_model` (a local folder with config.json, or a Hub id; local files are preferred).

    `None` gives the sizes of bert-base-uncased without any download.
    """
    if text_model is None:
        return GLIPConfig().text_config
    config = BertConfig.from_pretrained(str(text_model))
    if config.model_type != "bert":
        raise ValueError(f"--text-model {text_model} is a {config.model_type!r} model; GLIP uses BERT.")
    return config


def config_from_original_yaml(path: str | Path, text_config: BertConfig | dict | None = None) -> GLIPConfig:
    """Build a `GLIPConfig` from an official GLIP yaml (overrides over defaults.py, or a full `cfg.dump()`).

    Args:
        path: the official yaml.
        text_config: BERT sizes (the yaml only names the text model); `None` means bert-base-uncased.

    Raises:
        ValueError: when the yaml describes a model this package does not implement, or its sizes are inconsistent
            (e.g. `LANG_DIM` differs from the BERT hidden size, `SWINT.OUT_CHANNELS` from `EMBED_DIM * 2**i`).
    """
    original_config = load_original_yaml(path)
    _check_supported(original_config)
    model = original_config["MODEL"]
    swin, dyhead, fuse = model["SWINT"], model["DYHEAD"], model["DYHEAD"]["FUSE_CONFIG"]
    if text_config is None:
        text_config = text_config_from_pretrained(None)
    elif isinstance(text_config, dict):
        text_config = BertConfig(**{key: value for key, value in text_config.items() if key != "model_type"})

    problems = []
    stage_channels = [swin["EMBED_DIM"] * 2**stage for stage in range(len(swin["DEPTHS"]))]
    if list(swin["OUT_CHANNELS"]) != stage_channels:
        problems.append(f"MODEL.SWINT.OUT_CHANNELS = {swin['OUT_CHANNELS']} but EMBED_DIM * 2**i = {stage_channels}")
    fpn_channels = model["BACKBONE"]["OUT_CHANNELS"]
    if dyhead["CHANNELS"] != fpn_channels:
        problems.append(
            f"MODEL.DYHEAD.CHANNELS = {dyhead['CHANNELS']} but MODEL.BACKBONE.OUT_CHANNELS = {fpn_channels}"
        )
    if fuse["EARLY_FUSE_ON"] and fuse["JOINT_EMB_SIZE"] != fpn_channels:
        problems.append(
            f"MODEL.DYHEAD.FUSE_CONFIG.JOINT_EMB_SIZE = {fuse['JOINT_EMB_SIZE']} but MODEL.BACKBONE.OUT_CHANNELS = "
            f"{fpn_channels}"
        )
    lang_dim = model["LANGUAGE_BACKBONE"]["LANG_DIM"]
    if lang_dim != text_config.hidden_size:
        problems.append(
            f"MODEL.LANGUAGE_BACKBONE.LANG_DIM = {lang_dim} but the text model's hidden_size = "
            f"{text_config.hidden_size} (pass the matching --text-model)"
        )
    if problems:
        raise ValueError(f"Inconsistent official config {path}:\n  " + "\n  ".join(problems))

    backbone_config = {
        "embed_dim": swin["EMBED_DIM"],
        "depths": list(swin["DEPTHS"]),
        "num_heads": list(swin["NUM_HEADS"]),
        "window_size": swin["WINDOW_SIZE"],
        "mlp_ratio": float(swin["MLP_RATIO"]),
        "drop_path_rate": swin["DROP_PATH_RATE"],
        "patch_size": 4,
        "num_channels": 3,
        "layer_norm_eps": 1e-5,
        "qkv_bias": True,
    }
    fpn = model["FPN"]
    atss = model["ATSS"]
    return GLIPConfig(
        backbone_config=backbone_config,
        text_config=text_config,
        fpn_channels=fpn_channels,
        num_head_blocks=dyhead["NUM_CONVS"],
        early_fusion=bool(fuse["EARLY_FUSE_ON"]),
        use_fused_text_for_dot_product=bool(fuse["USE_FUSED_FEATURES_DOT_PRODUCT"]),
        head_group_norm_groups=model["GROUP_NORM"]["NUM_GROUPS"],
        head_use_deformable_conv=bool(dyhead["USE_DFCONV"]),
        anchor_strides=list(model["RPN"]["ANCHOR_STRIDE"]),
        anchor_sizes=list(model["RPN"]["ANCHOR_SIZES"]),
        prior_prob=dyhead["PRIOR_PROB"],
        log_scale_init=dyhead["LOG_SCALE"],
        max_text_length=model["LANGUAGE_BACKBONE"]["MAX_QUERY_LEN"],
        pre_nms_score_threshold=atss["INFERENCE_TH"],
        pre_nms_top_n=atss["PRE_NMS_TOP_N"],
        nms_threshold=atss["NMS_TH"],
        max_detections=atss["DETECTIONS_PER_IMG"],
        atss_topk=atss["TOPK"],
        focal_alpha=fuse["TOKEN_ALPHA"],
        focal_gamma=fuse["TOKEN_GAMMA"],
        token_loss_weight=fuse["DOT_PRODUCT_TOKEN_LOSS_WEIGHT"],
        regression_loss_weight=atss["REG_LOSS_WEIGHT"],
        fpn_drop_block_prob=fpn["DROP_PROB"] if fpn["DROP_BLOCK"] else 0.0,
        fpn_drop_block_size=fpn["DROP_SIZE"],
    )


def image_processor_settings_from_original_yaml(path: str | Path) -> dict:
    """`GLIPImageProcessor` arguments of the official evaluation / training transforms of an official yaml.

    `min_size` / `max_size` <- `INPUT.MIN_SIZE_TEST` / `MAX_SIZE_TEST`, `size_divisibility` <-
    `DATALOADER.SIZE_DIVISIBILITY`, `image_mean` / `image_std` <- `INPUT.PIXEL_MEAN` / `PIXEL_STD` (BGR, 0-255),
    `train_min_sizes` <- `AUGMENT.MULT_MIN_SIZE_TRAIN` (or `INPUT.MIN_SIZE_TRAIN` when empty),
    `horizontal_flip_probability` <- `AUGMENT.FLIP_PROB_TRAIN`.
    """
    original_config = load_original_yaml(path)
    inputs, augment = original_config["INPUT"], original_config["AUGMENT"]
    train_min_sizes = augment["MULT_MIN_SIZE_TRAIN"] or inputs["MIN_SIZE_TRAIN"]
    if not isinstance(train_min_sizes, (list, tuple)):
        train_min_sizes = [train_min_sizes]
    return {
        "min_size": inputs["MIN_SIZE_TEST"],
        "max_size": inputs["MAX_SIZE_TEST"],
        "size_divisibility": original_config["DATALOADER"]["SIZE_DIVISIBILITY"],
        "image_mean": [float(value) for value in inputs["PIXEL_MEAN"]],
        "image_std": [float(value) for value in inputs["PIXEL_STD"]],
        "train_min_sizes": [int(size) for size in train_min_sizes],
        "horizontal_flip_probability": float(augment["FLIP_PROB_TRAIN"]),
    }


def config_from_variant(variant: str, text_config: BertConfig | dict | None = None) -> GLIPConfig:
    """`GLIPConfig` preset of a released model: `"glip-t"` (B/C/T), `"glip-t-a"` (GLIP-T (A)) or `"glip-l"`."""
    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}; choose one of {sorted(VARIANTS)}.")
    factory, _ = VARIANTS[variant]
    return factory(text_config=text_config)


# ---------------------------------------------------------------------------------------------------------------
# Config <-> weights consistency
# ---------------------------------------------------------------------------------------------------------------
def _max_index(keys: list[str], pattern: str) -> int | None:
    indices = [int(match.group(1)) for key in keys if (match := re.fullmatch(pattern, key))]
    return max(indices) if indices else None


def check_config_matches_state_dict(config: GLIPConfig, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Raise `ValueError` listing every size of `config` that disagrees with the checkpoint.

    Reads the official layout (mmdetection checkpoints are mapped first): number of head blocks from the highest
    head-tower index, early fusion from the presence of `b_attn` keys, BERT hidden size / layers / vocabulary /
    positions / intermediate size, Swin width / depths / window / heads, FPN width and fusion width. Attention head
    counts of BERT are not visible in the weights and cannot be checked.
    """
    original = to_original_layout(state_dict)
    keys = list(original)
    problems: list[str] = []

    def compare(description: str, config_value, checkpoint_value) -> None:
        if checkpoint_value is not None and config_value != checkpoint_value:
            problems.append(f"{description}: config {config_value!r}, checkpoint {checkpoint_value!r}")

    has_fusion = any(".b_attn." in key for key in keys)
    compare("early fusion (FUSE_CONFIG.EARLY_FUSE_ON; b_attn keys present)", config.early_fusion, has_fusion)
    highest_tower = _max_index(keys, r"rpn\.head\.dyhead_tower\.(\d+)\..+")
    if highest_tower is not None:
        num_blocks = highest_tower // 3 + 1 if has_fusion else highest_tower + 1
        compare("head blocks (MODEL.DYHEAD.NUM_CONVS; highest dyhead_tower index)", config.num_head_blocks, num_blocks)

    text = config.text_config
    bert = "language_backbone.body.model."
    word_embeddings = original.get(bert + "embeddings.word_embeddings.weight")
    if word_embeddings is not None:
        compare("text hidden size (word_embeddings columns)", text.hidden_size, word_embeddings.shape[1])
        compare("text vocabulary size (word_embeddings rows)", text.vocab_size, word_embeddings.shape[0])
    position_embeddings = original.get(bert + "embeddings.position_embeddings.weight")
    if position_embeddings is not None:
        compare("text max_position_embeddings", text.max_position_embeddings, position_embeddings.shape[0])
    token_type_embeddings = original.get(bert + "embeddings.token_type_embeddings.weight")
    if token_type_embeddings is not None:
        compare("text type_vocab_size", text.type_vocab_size, token_type_embeddings.shape[0])
    highest_layer = _max_index(keys, re.escape(bert) + r"encoder\.layer\.(\d+)\..+")
    if highest_layer is not None:
        compare("text layers (encoder.layer.* count)", text.num_hidden_layers, highest_layer + 1)
    intermediate = original.get(bert + "encoder.layer.0.intermediate.dense.weight")
    if intermediate is not None:
        compare("text intermediate_size", text.intermediate_size, intermediate.shape[0])

    backbone = config.backbone_config
    patch_embedding = original.get("backbone.body.patch_embed.proj.weight")
    if patch_embedding is not None:
        compare("Swin embed_dim (patch_embed.proj rows)", backbone.embed_dim, patch_embedding.shape[0])
        compare("Swin patch_size", backbone.patch_size, patch_embedding.shape[-1])
    for stage in range(len(backbone.depths)):
        stage_prefix = rf"backbone\.body\.layers\.{stage}\.blocks\.(\d+)\..+"
        highest_block = _max_index(keys, stage_prefix)
        if highest_block is not None:
            compare(f"Swin depth of stage {stage}", backbone.depths[stage], highest_block + 1)
        table = original.get(f"backbone.body.layers.{stage}.blocks.0.attn.relative_position_bias_table")
        if table is not None:
            window_size = (math.isqrt(table.shape[0]) + 1) // 2  # (2w - 1)**2 rows
            compare(f"Swin window size (stage {stage} bias table)", backbone.window_size, window_size)
            compare(f"Swin heads of stage {stage}", backbone.num_heads[stage], table.shape[1])

    fpn_inner = original.get("backbone.fpn.fpn_inner2.weight")
    if fpn_inner is not None:
        compare("FPN / head width (MODEL.BACKBONE.OUT_CHANNELS)", config.fpn_channels, fpn_inner.shape[0])
    fusion_projection = original.get("rpn.head.dyhead_tower.0.b_attn.attn.v_proj.weight")
    if fusion_projection is not None and config.early_fusion:
        compare("fusion width (hard-coded 2048 in VLFuse)", config.fusion_hidden_size, fusion_projection.shape[0])

    if problems:
        raise ValueError("The configuration disagrees with the checkpoint weights:\n  " + "\n  ".join(problems))


# ---------------------------------------------------------------------------------------------------------------
# Model / processor classes (written in sibling modules)
# ---------------------------------------------------------------------------------------------------------------
def _model_class():
    from .modeling_glip import GLIPForGrounding

    return GLIPForGrounding


def _build_processor(image_processor_settings: dict, tokenizer, max_text_length: int):
    """GLIPProcessor, or its parts when a class is not available yet; `None` when there is nothing to save.

    `max_text_length` is the prompt padding length (`MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN`).
    """
    image_processing = _optional_module("image_processing_glip")
    image_processor_class = getattr(image_processing, "GLIPImageProcessor", None)
    if image_processor_class is None:
        # TODO(lead): remove this fallback once image_processing_glip.GLIPImageProcessor is in the package.
        logger.warning("GLIPImageProcessor is not available: no image processor config is saved.")
        return tokenizer
    image_processor = image_processor_class(**image_processor_settings)
    if tokenizer is None:
        return image_processor
    processor_class = getattr(_optional_module("processing_glip"), "GLIPProcessor", None)
    if processor_class is None:
        # TODO(lead): remove this fallback once processing_glip.GLIPProcessor is in the package.
        logger.warning("GLIPProcessor is not available: saving the image processor and the tokenizer separately.")
        return (image_processor, tokenizer)
    return processor_class(image_processor=image_processor, tokenizer=tokenizer, max_length=max_text_length)


def _optional_module(name: str):
    try:
        return importlib.import_module(f"{__package__}.{name}")
    except ModuleNotFoundError:
        return None


def _load_tokenizer(name: str | Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(name))
    except (OSError, ValueError) as error:
        logger.warning(
            "Could not load the tokenizer %r (%s); the output folder will hold no tokenizer files. Pass --text-model "
            "with a local folder to include them.",
            str(name),
            error,
        )
        return None


# ---------------------------------------------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------------------------------------------
def verify_against_reference(
    model,
    reference_outputs: str | Path,
    reference_inputs: str | Path | None = None,
    tolerance: float = 1e-3,
) -> dict[str, float]:
    """Run `model` on the inputs of an official reference run and compare its head outputs.

    Args:
        model: a `GLIPForGrounding` in eval mode.
        reference_outputs: safetensors with `head.dot_product_logits.P{3..7}` (batch, H*W, tokens),
            `head.centerness.P{3..7}` (batch, 1, H, W) and `head.box_regression.P{3..7}` (batch, 4, H, W) recorded
            from the official model (e.g. tests/fixtures/tiny_a/outputs.safetensors).
        reference_inputs: safetensors with `images.tensors`, `input_ids`, `attention_mask`; defaults to
            `inputs.safetensors` next to `reference_outputs`.
        tolerance: maximum absolute difference allowed for every compared tensor.

    Returns:
        Maximum absolute difference per compared output.

    Raises:
        ValueError: when a difference exceeds `tolerance`.
    """
    from safetensors.torch import load_file

    reference_outputs = Path(reference_outputs)
    reference_inputs = Path(reference_inputs) if reference_inputs else reference_outputs.parent / "inputs.safetensors"
    inputs = load_file(str(reference_inputs))
    outputs = load_file(str(reference_outputs))
    levels = [f"P{level}" for level in range(3, 8)]
    expected = {
        # (batch, num_anchors, tokens), anchors P3..P7 row-major (y, x)
        "logits": torch.cat([outputs[f"head.dot_product_logits.{level}"] for level in levels], dim=1),
        # (batch, 1, H, W) -> (batch, H * W) per level -> (batch, num_anchors)
        "centerness": torch.cat([outputs[f"head.centerness.{level}"].flatten(1) for level in levels], dim=1),
        # (batch, 4, H, W) -> (batch, H * W, 4) per level -> (batch, num_anchors, 4)
        "box_regression": torch.cat(
            [outputs[f"head.box_regression.{level}"].flatten(2).transpose(1, 2) for level in levels], dim=1
        ),
    }
    with torch.no_grad():
        result = model(
            pixel_values=inputs["images.tensors"],
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
        )
    differences = {}
    for name, reference in expected.items():
        actual = getattr(result, name)
        if tuple(actual.shape) != tuple(reference.shape):
            raise ValueError(f"Verification: {name} has shape {list(actual.shape)}, reference {list(reference.shape)}")
        differences[name] = (actual.float() - reference.float()).abs().max().item()
    logger.info("Verification against %s: max |difference| %s", reference_outputs, differences)
    failed = {name: difference for name, difference in differences.items() if not difference <= tolerance}
    if failed:
        raise ValueError(f"Verification against {reference_outputs} failed (tolerance {tolerance}): {failed}")
    return differences


# ---------------------------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------------------------
def convert_checkpoint(
    checkpoint_path: str | Path,
    output_dir: str | Path,
    original_config: str | Path | None = None,
    variant: str | None = None,
    text_model: str | Path | None = None,
    verify_against: str | Path | None = None,
    verify_inputs: str | Path | None = None,
    verify_tolerance: float = 1e-3,
):
    """Convert an official (or mmdetection) GLIP checkpoint into a `save_pretrained` folder.

    Args:
        checkpoint_path: the `.pth` file.
        output_dir: folder that receives config.json, model.safetensors, the tokenizer files, the processor
            config and `glip_shim.py` with `auto_map` entries (see `pipeline_glip.add_remote_code_files`).
        original_config: official yaml (configs/pretrain/*.yaml or a full `cfg.dump()`); exclusive with `variant`.
        variant: `"glip-t"`, `"glip-t-a"` or `"glip-l"` when no yaml is given.
        text_model: folder or Hub id of the BERT (config.json for the sizes, tokenizer files); defaults to
            bert-base-uncased sizes and the yaml's `TOKENIZER_TYPE`.
        verify_against: optional reference outputs to compare the converted model with (`verify_against_reference`).
        verify_inputs: reference inputs for `verify_against` (default: inputs.safetensors next to it).
        verify_tolerance: maximum absolute difference accepted by the verification.

    Returns:
        The converted `GLIPForGrounding` (eval mode).
    """
    if (original_config is None) == (variant is None):
        raise ValueError("Pass exactly one of `original_config` (an official yaml) and `variant`.")
    state_dict = to_original_layout(load_original_state_dict(checkpoint_path))
    text_config = text_config_from_pretrained(text_model)
    if original_config is not None:
        config = config_from_original_yaml(original_config, text_config=text_config)
        processor_settings = image_processor_settings_from_original_yaml(original_config)
        tokenizer_name = (
            text_model or load_original_yaml(original_config)["MODEL"]["LANGUAGE_BACKBONE"]["TOKENIZER_TYPE"]
        )
    else:
        config = config_from_variant(variant, text_config=text_config)
        # GLIPImageProcessor's defaults are the official values of every released config.
        processor_settings = {"min_size": _OFFICIAL_TEST_MIN_SIZE, "max_size": _OFFICIAL_TEST_MAX_SIZE}
        tokenizer_name = text_model or "bert-base-uncased"
    check_config_matches_state_dict(config, state_dict)

    model_class = _model_class()
    model = model_class(config)
    converted = convert_state_dict(
        state_dict, config, expected_shapes={key: tuple(value.shape) for key, value in model.state_dict().items()}
    )
    model.load_state_dict(converted, strict=True)
    model.eval()
    if verify_against is not None:
        verify_against_reference(model, verify_against, verify_inputs, tolerance=verify_tolerance)

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer = _load_tokenizer(tokenizer_name)
    processor = _build_processor(processor_settings, tokenizer, config.max_text_length)
    for part in processor if isinstance(processor, tuple) else (processor,):
        if part is not None:
            part.save_pretrained(output_dir)
    # `auto_map` + a shim re-exporting the package classes: loads with `trust_remote_code=True` without the import.
    from .hub_glip import add_remote_code_files

    add_remote_code_files(output_dir)
    logger.info("Saved the converted model to %s", output_dir)
    return model


def _parse_arguments(arguments: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m transformers_glip.convert_glip_original_checkpoint",
        description="Convert an official GLIP (or mmdetection GLIP) checkpoint to a transformers_glip folder.",
    )
    parser.add_argument("--checkpoint", required=True, help="official .pth (microsoft/GLIP or mmdetection layout)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--original-config", help="official yaml (configs/pretrain/*.yaml or a full cfg.dump())")
    source.add_argument("--variant", choices=sorted(VARIANTS), help="preset instead of a yaml")
    parser.add_argument("--text-model", help="BERT folder or Hub id (sizes + tokenizer); default bert-base-uncased")
    parser.add_argument("--output", required=True, help="output folder (save_pretrained)")
    parser.add_argument("--verify-against", help="reference outputs.safetensors of the official model (optional)")
    parser.add_argument("--verify-inputs", help="reference inputs.safetensors (default: next to --verify-against)")
    parser.add_argument("--verify-tolerance", type=float, default=1e-3, help="max |difference| (default 1e-3)")
    return parser.parse_args(arguments)


def main(arguments: list[str] | None = None) -> None:
    """Command-line entry point (see the module docstring)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parsed = _parse_arguments(arguments)
    convert_checkpoint(
        checkpoint_path=parsed.checkpoint,
        output_dir=parsed.output,
        original_config=parsed.original_config,
        variant=parsed.variant,
        text_model=parsed.text_model,
        verify_against=parsed.verify_against,
        verify_inputs=parsed.verify_inputs,
        verify_tolerance=parsed.verify_tolerance,
    )


if __name__ == "__main__":
    try:
        main()
    except ValueError as error:  # a failed check: print the report, not a traceback
        logger.error("%s", error)
        raise SystemExit(1) from error
