"""Key tables: how official (microsoft/GLIP) and mmdetection GLIP checkpoint keys map onto `GLIPForGrounding`.

Two explicit regex tables. `MMDET_KEY_RULES` maps mmdetection's GLIP layout back to the official layout
(`tools/model_converters/glip_to_mmdet.py` of mmdetection 3.x, inverted, including its PatchMerging value
permutation); `ORIGINAL_KEY_RULES` maps official keys onto the parameter tree of `GLIPForGrounding`
(docs/TEAM_NOTES.md). `DROPPED_KEY_PATTERNS` lists the official keys that are deliberately not converted and
`UNSUPPORTED_KEY_PATTERNS` the ones this package cannot represent. `rename_state_dict` applies the tables and
`convert_state_dict` applies them strictly (a `ConversionReport` listing every problem, raised as a `ValueError`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from ..configuration_glip import GLIPConfig
from ..modeling_glip import GLIPForGrounding
from .verification import ConversionReport, find_non_finite_tensors

__all__ = [
    "DROPPED_KEY_PATTERNS",
    "MMDET_KEY_RULES",
    "MODULE_PREFIX",
    "ORIGINAL_KEY_RULES",
    "UNSUPPORTED_KEY_PATTERNS",
    "KeyRule",
    "convert_state_dict",
    "detect_checkpoint_layout",
    "expected_state_dict_shapes",
    "mmdet_to_original_state_dict",
    "rename_state_dict",
    "strip_module_prefix",
    "to_original_layout",
]

logger = logging.getLogger(__name__)


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
    # Prompt-tuning offsets (`FUSE_CONFIG.ADD_LINEAR_LAYER`, `tools/finetune.py` language_prompt_v2/v4): the
    # weight of the bias-free Linear(text_hidden_size -> rows), used as (rows, text_hidden_size) offsets.
    KeyRule(r"rpn\.tunable_linear\.weight", "model.prompt_offsets"),
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

# Official keys of features this package does not implement (none at present; `rpn.tunable_linear.weight`, once
# listed here, maps onto `model.prompt_offsets`).
UNSUPPORTED_KEY_PATTERNS: dict[str, str] = {}

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

# DistributedDataParallel prefix of every key of an official checkpoint.
MODULE_PREFIX = "module."
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


def strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip the DistributedDataParallel prefix `module.` (official checkpoints carry it on every key)."""
    return {key.removeprefix(MODULE_PREFIX): value for key, value in state_dict.items()}


def detect_checkpoint_layout(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Return `"original"` (microsoft/GLIP key names) or `"mmdet"` (mmdetection's GLIP); raise if neither."""
    keys = [key.removeprefix(MODULE_PREFIX) for key in state_dict]
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
    for key, value in strip_module_prefix(state_dict).items():
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
    return strip_module_prefix(state_dict)


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
    unmapped, unsupported, dropped and duplicate keys and the converted checkpoint tensors that hold NaN or Inf
    (tensors on the meta device are not inspected). `config.early_fusion` decides how head-tower indices map to
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
    converted_sources = {source: original[source] for sources in sources_of.values() for source in sources}
    report.non_finite_keys = find_non_finite_tensors(converted_sources)
    return renamed, report


def expected_state_dict_shapes(config: GLIPConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of `GLIPForGrounding(config).state_dict()`, built on the meta device (no memory, no init)."""
    with torch.device("meta"):
        model = GLIPForGrounding(config)
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
            key, every shape mismatch and every checkpoint tensor holding NaN or Inf.
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
