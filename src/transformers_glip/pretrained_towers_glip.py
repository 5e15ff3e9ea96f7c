"""Start GLIP from pre-trained towers, as the paper does: the Swin from ImageNet weights, BERT from a BERT checkpoint.

* Swin: [`load_pretrained_swin`] fills `GLIPSwinBackbone` from a timm Swin (`swin_tiny_patch4_window7_224` for
  GLIP-T, `swin_large_patch4_window12_384` for GLIP-L; a model name is built with `timm.create_model(name,
  pretrained=True)`), a timm model object, a state dict, or a local `.safetensors` / `.pth` file (loaded with
  `torch.load(..., weights_only=True)`; a `{"model": ...}` or `{"state_dict": ...}` wrapper is unwrapped). Both key
  layouts are read: timm >= 0.9 (patch merging at the START of stage `s + 1`: `layers.{s+1}.downsample`) and the
  original microsoft/Swin-Transformer release (at the END of stage `s`: `layers.{s}.downsample`, buffers saved).
  timm's and the official patch merging concatenate the 2x2 sub-grids in the same order (x[0::2, 0::2],
  x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]), so, unlike mmdetection checkpoints, no weight permutation is needed
  (proved numerically in `tests/test_pretrained_towers_glip.py`).
* BERT: [`load_pretrained_text_model`] loads any local transformers BERT folder (or hub name) with
  `BertModel.from_pretrained(path, add_pooling_layer=False)` into `model.model.text_model`.

Both return a [`TowerLoadReport`] and, by default, raise when a key is unmapped, missing or of the wrong shape.

What stays at initialisation (as in the official recipe): the three per-level output LayerNorms of the detection
Swin (`backbone.output_norms`, official `norm1..3`) have no counterpart in an ImageNet classifier, whose final `norm`
and `head` are dropped; the FPN, the fusion head and the head's BERT layers are new.

Colour order: GLIP feeds BGR images (`image_processing_glip.py`) while ImageNet Swins were trained on RGB. The
official recipe loads the RGB weights unchanged and lets fine-tuning adapt; `flip_patch_embedding_channels=True`
instead reverses the input channels of the patch-embedding convolution so the filters see the colours they learnt.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .modeling_glip_backbone import GLIPSwinBackbone

__all__ = [
    "SWIN_DROPPED_KEY_PATTERNS",
    "SWIN_INITIALIZED_KEY_PATTERNS",
    "TIMM_SWIN_NAMES",
    "TowerLoadReport",
    "convert_swin_state_dict",
    "load_pretrained_swin",
    "load_pretrained_text_model",
    "load_swin_state_dict_file",
]

# The timm names of the ImageNet Swins GLIP starts from (paper §4: Swin-T for GLIP-T, Swin-L for GLIP-L).
TIMM_SWIN_NAMES = {"glip_t": "swin_tiny_patch4_window7_224", "glip_l": "swin_large_patch4_window12_384"}

# Source keys that are deliberately not loaded, with the reason.
SWIN_DROPPED_KEY_PATTERNS = {
    r"head(\.fc)?\.(weight|bias)": "ImageNet classifier",
    r"norm\.(weight|bias)": "final norm of the classifier (the detection Swin has per-level output norms)",
    r".*\.relative_position_index": "buffer, recomputed",
    r".*\.attn_mask": "buffer, recomputed for each input size",
}
# Our keys that an ImageNet checkpoint cannot fill; they keep their initialisation.
SWIN_INITIALIZED_KEY_PATTERNS = {
    r"output_norms\.\d+\.(weight|bias)": "per-level output LayerNorm of the detection Swin (official norm1..3)",
}

# timm / microsoft Swin key (after the stage renumbering of patch merging) -> `GLIPSwinBackbone` key.
_SWIN_KEY_RULES = (
    (r"patch_embed\.proj\.(weight|bias)", r"embeddings.projection.\1"),
    (r"patch_embed\.norm\.(weight|bias)", r"embeddings.norm.\1"),
    (r"layers\.(\d+)\.blocks\.(\d+)\.norm1\.(weight|bias)", r"stages.\1.blocks.\2.layernorm_before.\3"),
    (r"layers\.(\d+)\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)", r"stages.\1.blocks.\2.attention.qkv.\3"),
    (r"layers\.(\d+)\.blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"stages.\1.blocks.\2.attention.projection.\3"),
    (
        r"layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_bias_table",
        r"stages.\1.blocks.\2.attention.relative_position_bias_table",
    ),
    (r"layers\.(\d+)\.blocks\.(\d+)\.norm2\.(weight|bias)", r"stages.\1.blocks.\2.layernorm_after.\3"),
    (r"layers\.(\d+)\.blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", r"stages.\1.blocks.\2.mlp.\3.\4"),
    (r"layers\.(\d+)\.downsample\.(norm|reduction)\.(weight|bias)", r"stages.\1.downsample.\2.\3"),
)
_TIMM_DOWNSAMPLE = re.compile(r"layers\.(\d+)\.downsample\.")
_WEIGHT_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


@dataclass
class TowerLoadReport:
    """What loading a pre-trained tower did.

    Attributes:
        loaded: our parameter names that received a pre-trained tensor.
        initialized: our parameter names the checkpoint cannot fill (kept at initialisation), with the reason.
        dropped: source keys deliberately not loaded, with the reason.
        unexpected: source keys that match no rule (a different architecture, e.g. absolute position embedding).
        missing: our parameter names that should have been loaded but were not found in the source.
        shape_mismatches: `(our name, source shape, our shape)` for tensors of a different size (e.g. another
            window size or width).
    """

    loaded: list[str] = field(default_factory=list)
    initialized: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    shape_mismatches: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def is_complete(self) -> bool:
        """True when nothing is unexpected, missing or mis-shaped."""
        return not (self.unexpected or self.missing or self.shape_mismatches)

    def raise_if_incomplete(self, what: str, hint: str = "") -> None:
        """Raise a `ValueError` naming `what`, listing the problems (first five of each kind), then `hint`."""
        if self.is_complete:
            return
        problems = []
        if self.shape_mismatches:
            shown = ", ".join(
                f"{name}: source {source} vs ours {ours}" for name, source, ours in self.shape_mismatches[:5]
            )
            problems.append(f"{len(self.shape_mismatches)} shape mismatches ({shown})")
        if self.missing:
            problems.append(f"{len(self.missing)} missing keys ({self.missing[:5]})")
        if self.unexpected:
            problems.append(f"{len(self.unexpected)} unmapped source keys ({self.unexpected[:5]})")
        raise ValueError(f"{what} does not fit this model: " + "; ".join(problems) + ". " + hint)


def _reason(patterns: Mapping[str, str], key: str) -> str | None:
    for pattern, reason in patterns.items():
        if re.fullmatch(pattern, key):
            return reason
    return None


def _find_backbone(model: nn.Module) -> GLIPSwinBackbone:
    if isinstance(model, GLIPSwinBackbone):
        return model
    inner = getattr(model, "model", model)  # GLIPForGrounding.model is the GLIPModel
    backbone = getattr(inner, "backbone", None)
    if not isinstance(backbone, GLIPSwinBackbone):
        raise TypeError(
            f"`model` must be a GLIPForGrounding, a GLIPModel or a GLIPSwinBackbone, got {type(model).__name__}."
        )
    return backbone


def load_swin_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a Swin state dict from a `.safetensors` file or a torch file (`torch.load(..., weights_only=True)`).

    A `{"model": state_dict}` (microsoft/Swin-Transformer release) or `{"state_dict": ...}` wrapper is unwrapped.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"Swin weights file {path!r} does not exist.")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle errors of many kinds: report them as a bad input file
        raise ValueError(f"Could not read {path!r} as torch weights (weights_only=True): {error}") from error
    return _unwrap_state_dict(state_dict, path)


def _unwrap_state_dict(state_dict: Any, name: str) -> dict[str, torch.Tensor]:
    for wrapper in ("model", "state_dict"):
        if isinstance(state_dict, Mapping) and isinstance(state_dict.get(wrapper), Mapping):
            state_dict = state_dict[wrapper]
    if not isinstance(state_dict, Mapping) or not all(
        isinstance(value, torch.Tensor) for value in state_dict.values()
    ):
        raise ValueError(f"{name} does not hold a state dict (a mapping of names to tensors).")
    return dict(state_dict)


def convert_swin_state_dict(
    state_dict: Mapping[str, torch.Tensor], backbone: GLIPSwinBackbone
) -> tuple[dict[str, torch.Tensor], TowerLoadReport]:
    """Rename a timm / microsoft Swin state dict onto the keys of `backbone` and check it against its shapes.

    Args:
        state_dict: source tensors (timm >= 0.9 layout, or the original release with `layers.0.downsample.*`).
        backbone: the target [`GLIPSwinBackbone`] (only its names and shapes are read).

    Returns:
        `(converted, report)`: `converted` maps `backbone` parameter names to source tensors (shape-checked ones
        only); `report` lists everything else.
    """
    report = TowerLoadReport()
    # The original release merges patches at the end of stage s (stage 0 has a downsample), timm at the start of
    # stage s + 1; ours keeps the official placement (end of stage s).
    timm_layout = not any(key.startswith("layers.0.downsample.") for key in state_dict)
    expected = {name: tuple(tensor.shape) for name, tensor in backbone.state_dict().items()}
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        reason = _reason(SWIN_DROPPED_KEY_PATTERNS, key)
        if reason is not None:
            report.dropped[key] = reason
            continue
        source_key = key
        if timm_layout:
            source_key = _TIMM_DOWNSAMPLE.sub(lambda match: f"layers.{int(match.group(1)) - 1}.downsample.", key)
        target = None
        for pattern, template in _SWIN_KEY_RULES:
            if re.fullmatch(pattern, source_key):
                target = re.sub(pattern, template, source_key)
                break
        if target is None or target not in expected:
            report.unexpected.append(key)
            continue
        if tuple(tensor.shape) != expected[target]:
            report.shape_mismatches.append((target, tuple(tensor.shape), expected[target]))
            continue
        converted[target] = tensor
    report.loaded = sorted(converted)
    for name in expected:
        if name in converted or name.endswith("relative_position_index"):
            continue
        reason = _reason(SWIN_INITIALIZED_KEY_PATTERNS, name)
        if reason is not None:
            report.initialized[name] = reason
        elif not any(name == mismatch[0] for mismatch in report.shape_mismatches):
            report.missing.append(name)
    return converted, report


def _source_state_dict(source: Any) -> tuple[dict[str, torch.Tensor], str]:
    if isinstance(source, nn.Module):
        return source.state_dict(), f"the {type(source).__name__} given"
    if isinstance(source, Mapping):
        return _unwrap_state_dict(source, "`swin_weights`"), "the state dict given"
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isfile(path):
            return load_swin_state_dict_file(path), path
        if path.endswith(_WEIGHT_FILE_SUFFIXES) or os.sep in path:
            raise ValueError(f"Swin weights file {path!r} does not exist.")
        import timm

        if not timm.is_model(path):
            raise ValueError(
                f"{path!r} is neither a file nor a timm model name (e.g. {TIMM_SWIN_NAMES['glip_t']!r} or "
                f"{TIMM_SWIN_NAMES['glip_l']!r})."
            )
        # Downloads the ImageNet weights from the Hugging Face Hub on first use (timm's cache afterwards).
        return timm.create_model(path, pretrained=True).state_dict(), f"timm {path!r}"
    raise TypeError(
        "`swin_weights` must be a timm model name, a path to a .safetensors/.pth file, a state dict or a timm model, "
        f"got {type(source).__name__}."
    )


def load_pretrained_swin(
    model: nn.Module,
    swin_weights: Any,
    strict: bool = True,
    flip_patch_embedding_channels: bool = False,
) -> TowerLoadReport:
    """Fill the Swin backbone of a GLIP model with ImageNet weights (in place).

    Args:
        model: a `GLIPForGrounding`, `GLIPModel` or `GLIPSwinBackbone`.
        swin_weights: a timm model name (`"swin_tiny_patch4_window7_224"`, downloaded by timm), a `.safetensors` /
            `.pth` path, a state dict, or a timm `SwinTransformer` instance.
        strict (`bool`, *optional*, defaults to `True`): raise a `ValueError` when a source key is unmapped, a
            backbone key is missing or a shape differs (window size, widths); otherwise load what fits.
        flip_patch_embedding_channels (`bool`, *optional*, defaults to `False`): reverse the patch-embedding input
            channels (RGB-trained filters on GLIP's BGR input); `False` follows the official recipe.

    Returns:
        [`TowerLoadReport`].
    """
    backbone = _find_backbone(model)
    if not isinstance(flip_patch_embedding_channels, bool):
        raise TypeError(
            f"`flip_patch_embedding_channels` must be True or False, got {flip_patch_embedding_channels!r}."
        )
    state_dict, description = _source_state_dict(swin_weights)
    converted, report = convert_swin_state_dict(state_dict, backbone)
    if strict:
        report.raise_if_incomplete(
            f"Swin weights from {description}",
            "Use the Swin of the config (GLIPConfig.glip_t: swin_tiny_patch4_window7_224, GLIPConfig.glip_l: "
            "swin_large_patch4_window12_384; same embed_dim, depths, num_heads and window_size), or strict=False.",
        )
    if flip_patch_embedding_channels and "embeddings.projection.weight" in converted:
        # (embed_dim, 3, patch, patch): channel order RGB -> BGR
        converted["embeddings.projection.weight"] = converted["embeddings.projection.weight"].flip(1)
    reference = next(backbone.parameters())
    with torch.no_grad():
        for name, tensor in backbone.state_dict(keep_vars=True).items():
            if name in converted:
                tensor.copy_(converted[name].to(device=reference.device, dtype=tensor.dtype))
    return report


# Fields of the BERT config that change the computation or the parameter shapes.
_TEXT_CONFIG_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
    "hidden_act",
    "layer_norm_eps",
)


def load_pretrained_text_model(
    model: nn.Module, text_model: str | os.PathLike, strict: bool = True
) -> TowerLoadReport:
    """Load a transformers BERT (`BertModel.from_pretrained(text_model)`) into `model.model.text_model` (in place).

    Args:
        model: a `GLIPForGrounding` or `GLIPModel` whose `config.text_config` has the sizes of that BERT (build it
            with `GLIPConfig(text_config=BertConfig.from_pretrained(text_model))` when in doubt).
        text_model: a local folder saved by `save_pretrained` (or a hub name such as `"bert-base-uncased"`, which
            transformers downloads).
        strict (`bool`, *optional*, defaults to `True`): raise when a key is missing or unexpected.

    Returns:
        [`TowerLoadReport`] (the pooler is never loaded: GLIP's text model has none).
    """
    from transformers import BertModel

    inner = getattr(model, "model", model)
    target = getattr(inner, "text_model", None)
    if not isinstance(target, BertModel):
        raise TypeError(f"`model` must be a GLIPForGrounding or a GLIPModel, got {type(model).__name__}.")
    if not isinstance(text_model, (str, os.PathLike)):
        raise TypeError(f"`text_model` must be a folder or a hub name, got {type(text_model).__name__}.")
    try:
        pretrained = BertModel.from_pretrained(os.fspath(text_model), add_pooling_layer=False)
    except OSError as error:
        raise ValueError(f"Could not load a BERT from {os.fspath(text_model)!r}: {error}") from error
    mismatched = [
        f"{name}: checkpoint {getattr(pretrained.config, name)!r} vs model {getattr(target.config, name)!r}"
        for name in _TEXT_CONFIG_FIELDS
        if getattr(pretrained.config, name) != getattr(target.config, name)
    ]
    if mismatched:
        raise ValueError(
            f"The BERT at {os.fspath(text_model)!r} differs from `model.config.text_config` "
            f"({'; '.join(mismatched)}). Build the model with "
            "`GLIPConfig(text_config=BertConfig.from_pretrained(path))`."
        )
    source = pretrained.state_dict()
    result = target.load_state_dict(source, strict=False)
    report = TowerLoadReport(
        loaded=sorted(set(source) - set(result.unexpected_keys)),
        unexpected=list(result.unexpected_keys),
        missing=list(result.missing_keys),
    )
    if strict:
        report.raise_if_incomplete(f"BERT from {os.fspath(text_model)!r}", "Pass strict=False to load what fits.")
    return report
