"""Conversion of official GLIP checkpoints (microsoft/GLIP, or mmdetection's GLIP layout) to `transformers_glip`.

Conversion is data plus proof, one module per role:

* `key_tables`: the regex tables official / mmdetection keys -> `GLIPForGrounding` keys, `rename_state_dict` and
  the strict `convert_state_dict`;
* `original_checkpoint`: reading a `.pth` file safely (`torch.load(weights_only=True)`);
* `original_config`: the official yacs yaml (unknown keys and mistyped values are errors, as in yacs) -> `GLIPConfig`
  and `GLIPImageProcessor` settings, the `--variant` presets, and `check_config_matches_state_dict`;
* `official_config_keys`: the key tree of the official `defaults.py` (what "a known yaml key" means);
* `text_model`: the BERT folder or Hub id (`--text-model`): sizes and tokenizer;
* `verification`: the `ConversionReport` (including tensors holding NaN / Inf) and `verify_against_reference`;
* `cli`: `convert_checkpoint` (writes the output folder as a whole) and the command line, run as
  `python -m transformers_glip.convert_glip_original_checkpoint`.
"""

from .cli import convert_checkpoint, main
from .key_tables import (
    DROPPED_KEY_PATTERNS,
    MMDET_KEY_RULES,
    ORIGINAL_KEY_RULES,
    UNSUPPORTED_KEY_PATTERNS,
    KeyRule,
    convert_state_dict,
    detect_checkpoint_layout,
    expected_state_dict_shapes,
    mmdet_to_original_state_dict,
    rename_state_dict,
    to_original_layout,
)
from .original_checkpoint import load_original_state_dict
from .original_config import (
    OFFICIAL_CONFIG_DEFAULTS,
    VARIANTS,
    check_config_matches_state_dict,
    config_from_original_yaml,
    config_from_variant,
    image_processor_settings_from_original_yaml,
    load_original_yaml,
)
from .text_model import text_config_from_pretrained
from .verification import ConversionReport, verify_against_reference

__all__ = [
    "DROPPED_KEY_PATTERNS",
    "MMDET_KEY_RULES",
    "OFFICIAL_CONFIG_DEFAULTS",
    "ORIGINAL_KEY_RULES",
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
