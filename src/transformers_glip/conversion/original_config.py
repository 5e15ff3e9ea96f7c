"""Reading the official GLIP configuration: yacs yaml files (`configs/pretrain/*.yaml` or a full `cfg.dump()`) merged
over the official defaults, checked like yacs checks them, and turned into a `GLIPConfig` and the settings of
`GLIPImageProcessor`; the `--variant` presets; and the check that a configuration agrees with the checkpoint weights.

Every problem is a `ValueError` naming the yaml file and the dotted yaml key: a key the official `defaults.py` does
not define (with the nearest known key), a value of the wrong type, a value the package does not implement, sizes
that disagree with each other or with the weights.
"""

from __future__ import annotations

import ast
import copy
import difflib
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import yaml
from transformers import BertConfig

from ..configuration_glip import GLIPConfig
from .key_tables import to_original_layout
from .official_config_keys import OFFICIAL_CONFIG_KEYS, OPEN_OFFICIAL_CONFIG_SECTIONS

__all__ = [
    "CONFIG_FIELD_YAML_KEYS",
    "IMAGE_PROCESSOR_SETTING_YAML_KEYS",
    "OFFICIAL_CONFIG_DEFAULTS",
    "OFFICIAL_PROMPT_TUNING_LENGTH",
    "VARIANTS",
    "check_config_matches_state_dict",
    "check_known_yaml_keys",
    "config_from_original_yaml",
    "config_from_variant",
    "image_processor_settings_from_original_yaml",
    "image_processor_settings_from_variant",
    "load_original_yaml",
]


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

# `GLIPConfig` field (`backbone_config.<name>` for the Swin sizes) <- the official yaml key it is read from.
CONFIG_FIELD_YAML_KEYS: dict[str, str] = {
    "backbone_config.embed_dim": "MODEL.SWINT.EMBED_DIM",
    "backbone_config.depths": "MODEL.SWINT.DEPTHS",
    "backbone_config.num_heads": "MODEL.SWINT.NUM_HEADS",
    "backbone_config.window_size": "MODEL.SWINT.WINDOW_SIZE",
    "backbone_config.mlp_ratio": "MODEL.SWINT.MLP_RATIO",
    "backbone_config.drop_path_rate": "MODEL.SWINT.DROP_PATH_RATE",
    "fpn_channels": "MODEL.BACKBONE.OUT_CHANNELS",
    "num_head_blocks": "MODEL.DYHEAD.NUM_CONVS",
    "early_fusion": "MODEL.DYHEAD.FUSE_CONFIG.EARLY_FUSE_ON",
    "use_fused_text_for_dot_product": "MODEL.DYHEAD.FUSE_CONFIG.USE_FUSED_FEATURES_DOT_PRODUCT",
    "head_group_norm_groups": "MODEL.GROUP_NORM.NUM_GROUPS",
    "head_use_deformable_conv": "MODEL.DYHEAD.USE_DFCONV",
    "anchor_strides": "MODEL.RPN.ANCHOR_STRIDE",
    "anchor_sizes": "MODEL.RPN.ANCHOR_SIZES",
    "prior_prob": "MODEL.DYHEAD.PRIOR_PROB",
    "log_scale_init": "MODEL.DYHEAD.LOG_SCALE",
    "max_text_length": "MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN",
    "pre_nms_score_threshold": "MODEL.ATSS.INFERENCE_TH",
    "pre_nms_top_n": "MODEL.ATSS.PRE_NMS_TOP_N",
    "nms_threshold": "MODEL.ATSS.NMS_TH",
    "max_detections": "MODEL.ATSS.DETECTIONS_PER_IMG",
    "atss_topk": "MODEL.ATSS.TOPK",
    "focal_alpha": "MODEL.DYHEAD.FUSE_CONFIG.TOKEN_ALPHA",
    "focal_gamma": "MODEL.DYHEAD.FUSE_CONFIG.TOKEN_GAMMA",
    "token_loss_weight": "MODEL.DYHEAD.FUSE_CONFIG.DOT_PRODUCT_TOKEN_LOSS_WEIGHT",
    "regression_loss_weight": "MODEL.ATSS.REG_LOSS_WEIGHT",
    "fpn_drop_block_prob": "MODEL.FPN.DROP_PROB",
    "fpn_drop_block_size": "MODEL.FPN.DROP_SIZE",
}

# Rows of the official `rpn.tunable_linear` (`vldyhead.py`: `Linear(lang_dim, 1000, bias=False)`).
OFFICIAL_PROMPT_TUNING_LENGTH = 1000

# `GLIPImageProcessor` argument <- the official yaml key(s) it is read from.
IMAGE_PROCESSOR_SETTING_YAML_KEYS: dict[str, str] = {
    "min_size": "INPUT.MIN_SIZE_TEST",
    "max_size": "INPUT.MAX_SIZE_TEST",
    "size_divisibility": "DATALOADER.SIZE_DIVISIBILITY",
    "image_mean": "INPUT.PIXEL_MEAN",
    "image_std": "INPUT.PIXEL_STD",
    "train_min_sizes": "AUGMENT.MULT_MIN_SIZE_TRAIN (or INPUT.MIN_SIZE_TRAIN when empty)",
    "horizontal_flip_probability": "AUGMENT.FLIP_PROB_TRAIN",
}


# Element kind of list defaults that are empty in `OFFICIAL_CONFIG_DEFAULTS`, and keys that also take another form.
_LIST_ELEMENT_KINDS: dict[str, str] = {"AUGMENT.MULT_MIN_SIZE_TRAIN": "integer"}
_ALSO_ACCEPTED_KINDS: dict[str, str] = {
    "INPUT.MIN_SIZE_TRAIN": "list of integer",
    "MODEL.SWINT.MLP_RATIO": "finite number",
}


def image_processor_settings_from_variant(variant: str) -> dict:
    """`GLIPImageProcessor` arguments of a `--variant` preset: the official test sizes of every released config."""
    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}; choose one of {sorted(VARIANTS)}.")
    return {"min_size": _OFFICIAL_TEST_MIN_SIZE, "max_size": _OFFICIAL_TEST_MAX_SIZE}


def _decode_yaml_value(value):
    """Decode a yaml value as yacs does: strings holding Python literals (`"(64, 128)"`) become values."""
    if isinstance(value, dict):
        return {key: _decode_yaml_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_decode_yaml_value(item) for item in value]
    if isinstance(value, str):
        try:
            decoded = ast.literal_eval(value)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
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


def check_known_yaml_keys(overrides: Mapping, source: str | Path = "the yaml") -> None:
    """Raise `ValueError` listing every key of `overrides` that the official `defaults.py` does not define.

    yacs refuses such keys (`merge_from_file` raises `KeyError`); so does the converter, instead of ignoring a typo
    and using the default. Each unknown key is named with the nearest known key of its section. Below the official
    `CN(new_allowed=True)` sections (`OPEN_OFFICIAL_CONFIG_SECTIONS`) every key is accepted. A section given a
    value, or a value given a section, is refused too. `_BASE_` is accepted at the top level.

    Args:
        overrides: the nested mapping read from one yaml file.
        source: the file, for the message.
    """
    problems: list[str] = []

    def visit(node: Mapping, section: str) -> None:
        known = OFFICIAL_CONFIG_KEYS[section]
        for key, value in node.items():
            name = str(key)
            dotted = f"{section}.{name}" if section else name
            if not section and name == "_BASE_":
                continue
            if name not in known:
                nearest = difflib.get_close_matches(name, sorted(known), n=1)
                hint = (
                    f"did you mean {section + '.' if section else ''}{nearest[0]}?"
                    if nearest
                    else f"known keys of {section or 'the top level'}: {', '.join(sorted(known))}"
                )
                problems.append(f"{dotted}: unknown key ({hint})")
            elif dotted in OPEN_OFFICIAL_CONFIG_SECTIONS or dotted in OFFICIAL_CONFIG_KEYS:
                if not isinstance(value, Mapping):
                    problems.append(f"{dotted}: is a section of the official config, got the value {value!r}")
                elif dotted in OFFICIAL_CONFIG_KEYS:
                    visit(value, dotted)
            elif isinstance(value, Mapping):
                problems.append(f"{dotted}: is a value of the official config, got a section {dict(value)!r}")

    visit(overrides, "")
    if problems:
        raise ValueError(
            f"{source}: keys that the official GLIP config (maskrcnn_benchmark/config/defaults.py) does not define "
            "(yacs refuses them too; fix the spelling or remove them):\n  " + "\n  ".join(problems)
        )


def _kind_of(default) -> str:
    """Kind of value a default asks for: "boolean", "integer", "finite number", "string" or "list of <kind>"."""
    if isinstance(default, bool):
        return "boolean"
    if isinstance(default, int):
        return "integer"
    if isinstance(default, float):
        return "finite number"
    if isinstance(default, str):
        return "string"
    return "list of " + (_kind_of(default[0]) if default else "value")


def _has_kind(value, kind: str) -> bool:
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "finite number":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "string":
        return isinstance(value, str)
    if kind == "value":
        return True
    element_kind = kind.removeprefix("list of ")
    return isinstance(value, list) and all(_has_kind(item, element_kind) for item in value)


def _flatten(node: Mapping, prefix: str = "") -> dict[str, object]:
    flat = {}
    for key, value in node.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _check_value_types(merged: Mapping, source: str | Path) -> None:
    """Raise `ValueError` naming every key read by the converter whose merged value has the wrong type."""
    problems = []
    for dotted_key, default in _flatten(OFFICIAL_CONFIG_DEFAULTS).items():
        value = _lookup(merged, dotted_key)
        kind = _kind_of(default)
        if isinstance(default, list) and not default and dotted_key in _LIST_ELEMENT_KINDS:
            kind = "list of " + _LIST_ELEMENT_KINDS[dotted_key]
        kinds = [kind] + ([_ALSO_ACCEPTED_KINDS[dotted_key]] if dotted_key in _ALSO_ACCEPTED_KINDS else [])
        if not any(_has_kind(value, accepted) for accepted in kinds):
            problems.append(f"{dotted_key} = {value!r}: expected {' or '.join(kinds)} (default {default!r})")
    if problems:
        raise ValueError(f"{source}: values of the wrong type:\n  " + "\n  ".join(problems))


def _read_yaml_file(path: Path) -> dict:
    if not path.is_file():
        raise ValueError(f"Official config {path} does not exist (or is not a file); pass the official yaml.")
    try:
        with open(path, encoding="utf-8") as handle:
            overrides = yaml.safe_load(handle)
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ValueError(f"Official config {path} is not valid yaml: {error}") from error
    if overrides is None:
        return {}
    if not isinstance(overrides, dict):
        raise ValueError(f"Official config {path} must hold a mapping of sections, got {type(overrides).__name__}.")
    return _decode_yaml_value(overrides)


def load_original_yaml(path: str | Path) -> dict:
    """Read an official GLIP yaml and merge it over `OFFICIAL_CONFIG_DEFAULTS` (yacs semantics).

    Works for the yaml of overrides in `configs/` (optionally chained with `_BASE_`, resolved relative to the file)
    and for a full `cfg.dump()`. Returns the merged nested dict.

    Raises:
        ValueError: naming the file and the key for a missing or malformed file, a key the official `defaults.py`
            does not define (`check_known_yaml_keys`, with the nearest known key) or a value of the wrong type for
            a key the converter reads (e.g. `MODEL.ATSS.NMS_TH: "high"`).
    """
    path = Path(path)
    merged = _merge_loaded_yaml(path, seen=())
    _check_value_types(merged, path)
    return merged


def _merge_loaded_yaml(path: Path, seen: tuple[Path, ...]) -> dict:
    if path.resolve() in seen:
        raise ValueError(f"Official config {path}: the _BASE_ chain loops back to it.")
    overrides = _read_yaml_file(path)
    check_known_yaml_keys(overrides, path)
    base = overrides.pop("_BASE_", None)
    if base is None:
        merged = copy.deepcopy(OFFICIAL_CONFIG_DEFAULTS)
    elif isinstance(base, str):
        merged = _merge_loaded_yaml(path.parent / base, (*seen, path.resolve()))
    else:
        raise ValueError(f"Official config {path}: _BASE_ must be a file name, got {base!r}.")
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


def config_from_original_yaml(path: str | Path, text_config: BertConfig | dict | None = None) -> GLIPConfig:
    """Build a `GLIPConfig` from an official GLIP yaml (overrides over defaults.py, or a full `cfg.dump()`).

    Args:
        path: the official yaml.
        text_config: BERT sizes (the yaml only names the text model); `None` means bert-base-uncased.

    Raises:
        ValueError: naming the yaml key, when the yaml holds an unknown key or a value of the wrong type
            (`load_original_yaml`), describes a model this package does not implement, has inconsistent sizes (e.g.
            `LANG_DIM` differs from the BERT hidden size, `SWINT.OUT_CHANNELS` from `EMBED_DIM * 2**i`) or a value
            `GLIPConfig` refuses (e.g. `MODEL.ATSS.NMS_TH: 1.5`; the fields are listed in `CONFIG_FIELD_YAML_KEYS`).
    """
    original_config = load_original_yaml(path)
    _check_supported(original_config)
    model = original_config["MODEL"]
    swin, dyhead, fuse = model["SWINT"], model["DYHEAD"], model["DYHEAD"]["FUSE_CONFIG"]
    if text_config is None:
        text_config = GLIPConfig().text_config  # bert-base-uncased sizes, built locally
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

    values = {dotted_key: _lookup(original_config, dotted_key) for dotted_key in CONFIG_FIELD_YAML_KEYS.values()}
    fields = {field_name: values[dotted_key] for field_name, dotted_key in CONFIG_FIELD_YAML_KEYS.items()}
    backbone_config = {
        "embed_dim": fields.pop("backbone_config.embed_dim"),
        "depths": list(fields.pop("backbone_config.depths")),
        "num_heads": list(fields.pop("backbone_config.num_heads")),
        "window_size": fields.pop("backbone_config.window_size"),
        "mlp_ratio": float(fields.pop("backbone_config.mlp_ratio")),
        "drop_path_rate": fields.pop("backbone_config.drop_path_rate"),
        "patch_size": 4,
        "num_channels": 3,
        "layer_norm_eps": 1e-5,
        "qkv_bias": True,
    }
    fpn = model["FPN"]
    fields["early_fusion"] = bool(fields["early_fusion"])
    fields["use_fused_text_for_dot_product"] = bool(fields["use_fused_text_for_dot_product"])
    fields["head_use_deformable_conv"] = bool(fields["head_use_deformable_conv"])
    fields["anchor_strides"] = list(fields["anchor_strides"])
    fields["anchor_sizes"] = list(fields["anchor_sizes"])
    fields["fpn_drop_block_prob"] = fields["fpn_drop_block_prob"] if fpn["DROP_BLOCK"] else 0.0
    # `ADD_LINEAR_LAYER` builds `rpn.tunable_linear` = Linear(LANG_DIM -> 1000) (vldyhead.py, hard-coded rows).
    fields["prompt_tuning_length"] = OFFICIAL_PROMPT_TUNING_LENGTH if fuse["ADD_LINEAR_LAYER"] else 0
    try:
        return GLIPConfig(backbone_config=backbone_config, text_config=text_config, **fields)
    except (ValueError, TypeError) as error:
        message = str(error)
        named = [
            f"{field_name} <- {dotted_key} = {values[dotted_key]!r}"
            for field_name, dotted_key in CONFIG_FIELD_YAML_KEYS.items()
            if re.search(rf"\b{re.escape(field_name.removeprefix('backbone_config.'))}\b", message)
        ]
        keys = ("; yaml keys: " + ", ".join(named)) if named else ""
        raise ValueError(f"Invalid value in the official config {path}: {message.rstrip('.')}{keys}") from error


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
    prompt_offsets = original.get("rpn.tunable_linear.weight")
    if prompt_offsets is not None:
        compare(
            "prompt offsets (FUSE_CONFIG.ADD_LINEAR_LAYER; rpn.tunable_linear.weight rows)",
            config.prompt_tuning_length,
            prompt_offsets.shape[0],
        )
    fusion_projection = original.get("rpn.head.dyhead_tower.0.b_attn.attn.v_proj.weight")
    if fusion_projection is not None and config.early_fusion:
        compare("fusion width (hard-coded 2048 in VLFuse)", config.fusion_hidden_size, fusion_projection.shape[0])

    if problems:
        raise ValueError("The configuration disagrees with the checkpoint weights:\n  " + "\n  ".join(problems))
