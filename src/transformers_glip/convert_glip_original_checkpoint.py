"""Command line of the checkpoint converter (the code lives in `transformers_glip.conversion`, one module per role).

```
python -m transformers_glip.convert_glip_original_checkpoint --checkpoint glip_tiny_model_o365_goldg.pth \
    --original-config configs/pretrain/glip_Swin_T_O365_GoldG.yaml --text-model bert-base-uncased --output glip-t
python -m transformers_glip.convert_glip_original_checkpoint --checkpoint glip_large_model.pth \
    --variant glip-l --text-model bert-base-uncased --output glip-l
```

`--text-model` is a local BERT folder (config.json + tokenizer files) or a Hub id; `--overwrite` replaces a
non-empty output folder that is not an earlier conversion. A failed check (unknown yaml key, NaN weights, a missing
file, ...) prints the error and exits with status 1.

The names this module re-exports are those of `transformers_glip.conversion`, kept importable from here.
"""

from .conversion import (
    DROPPED_KEY_PATTERNS,
    MMDET_KEY_RULES,
    OFFICIAL_CONFIG_DEFAULTS,
    ORIGINAL_KEY_RULES,
    UNSUPPORTED_KEY_PATTERNS,
    VARIANTS,
    ConversionReport,
    KeyRule,
    check_config_matches_state_dict,
    config_from_original_yaml,
    config_from_variant,
    convert_checkpoint,
    convert_state_dict,
    detect_checkpoint_layout,
    expected_state_dict_shapes,
    image_processor_settings_from_original_yaml,
    load_original_state_dict,
    load_original_yaml,
    main,
    mmdet_to_original_state_dict,
    rename_state_dict,
    text_config_from_pretrained,
    to_original_layout,
    verify_against_reference,
)
from .conversion.cli import run_command_line

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
    "run_command_line",
    "text_config_from_pretrained",
    "to_original_layout",
    "verify_against_reference",
]

if __name__ == "__main__":
    raise SystemExit(run_command_line())
