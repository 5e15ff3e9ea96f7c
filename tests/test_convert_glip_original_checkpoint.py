"""Tests of the checkpoint converter, `transformers_glip.conversion` and its command line
`transformers_glip.convert_glip_original_checkpoint` (offline, CPU, tiny fixtures + schema files)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from transformers_glip.configuration_glip import GLIPConfig
from transformers_glip.conversion.cli import (
    CONVERSION_OUTPUT_FILE_PATTERNS,
    check_output_folder,
    is_conversion_output,
    main,
    run_command_line,
)
from transformers_glip.conversion.key_tables import (
    DROPPED_KEY_PATTERNS,
    MMDET_KEY_RULES,
    ORIGINAL_KEY_RULES,
    UNSUPPORTED_KEY_PATTERNS,
    convert_state_dict,
    detect_checkpoint_layout,
    mmdet_to_original_state_dict,
    rename_state_dict,
    to_original_layout,
)
from transformers_glip.conversion.official_config_keys import OFFICIAL_CONFIG_KEYS, OPEN_OFFICIAL_CONFIG_SECTIONS
from transformers_glip.conversion.original_checkpoint import load_original_state_dict
from transformers_glip.conversion.original_config import (
    OFFICIAL_CONFIG_DEFAULTS,
    check_config_matches_state_dict,
    check_known_yaml_keys,
    config_from_original_yaml,
    config_from_variant,
    image_processor_settings_from_original_yaml,
    load_original_yaml,
)
from transformers_glip.conversion.text_model import load_text_tokenizer, text_config_from_pretrained
from transformers_glip.conversion.verification import find_non_finite_tensors, verify_against_reference
from transformers_glip.image_processing_glip import GLIPImageProcessor
from transformers_glip.modeling_glip import GLIPForGrounding
from transformers_glip.processing_glip import GLIPProcessor

__all__: list[str] = []

FIXTURES = Path(__file__).parent / "fixtures"
TINY_A = FIXTURES / "tiny_a"
VARIANT_A = FIXTURES / "tiny_a_variant_a"
BERT = TINY_A / "bert"
REPOSITORY_ROOT = Path(__file__).parents[1]


torch.set_num_threads(2)


# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------
def schema_tensors(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}_state_dict_schema.json").read_text())["tensors"]


def schema_state_dict(name: str) -> dict[str, torch.Tensor]:
    """Meta tensors with the keys / shapes / dtypes of a schema file (no memory)."""
    return {
        key: torch.empty(entry["shape"], dtype=getattr(torch, entry["dtype"]), device="meta")
        for key, entry in schema_tensors(name).items()
    }


def tiny_config(yaml_path: Path = TINY_A / "config.yaml") -> GLIPConfig:
    return config_from_original_yaml(yaml_path, text_config=text_config_from_pretrained(BERT))


def shapes_of(state_dict: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in state_dict.items()}


def matching_rules(key: str, early_fusion: bool) -> list[str]:
    """Every entry of the key tables that claims `key` (the tables must be unambiguous)."""
    claims = [f"dropped:{pattern}" for pattern in DROPPED_KEY_PATTERNS if re.fullmatch(pattern, key)]
    claims += [f"unsupported:{pattern}" for pattern in UNSUPPORTED_KEY_PATTERNS if re.fullmatch(pattern, key)]
    claims += [rule.pattern for rule in ORIGINAL_KEY_RULES if rule.apply(key, early_fusion) is not None]
    return claims


@pytest.fixture(scope="module")
def tiny_a_state_dict() -> dict[str, torch.Tensor]:
    return load_original_state_dict(TINY_A / "checkpoint.pth")


@pytest.fixture(scope="module")
def tiny_a_expected_shapes(tiny_a_state_dict) -> dict[str, tuple[int, ...]]:
    """Model-free stand-in for the model's shapes: the clean conversion of the fixture itself."""
    renamed, report = rename_state_dict(tiny_a_state_dict, tiny_config())
    assert report.is_clean, report.format()
    return shapes_of(renamed)


# ---------------------------------------------------------------------------------------------------------------
# (a) key tables against the full-size schemas
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("schema", "config", "num_dropped"),
    [
        # 12 / 24 Swin relative_position_index + 2 cls_logits + 5 cell_anchors + 1 BERT position_ids
        ("glip_t", GLIPConfig.glip_t(), 20),
        ("glip_l", GLIPConfig.glip_l(), 32),
    ],
)
def test_every_schema_key_maps(schema, config, num_dropped):
    state_dict = schema_state_dict(schema)
    renamed, report = rename_state_dict(state_dict, config)
    assert report.is_clean, report.format()
    assert report.unmapped_keys == [] and report.unsupported_keys == {}
    assert len(report.dropped_keys) == num_dropped
    assert len(renamed) + num_dropped == len(state_dict)
    # every parameter is converted except the unused cls_logits (the dropped keys are buffers)
    schema_info = json.loads((FIXTURES / f"{schema}_state_dict_schema.json").read_text())
    expected_parameters = schema_info["num_parameters"] - schema_info["parameters_by_group"]["rpn.head.cls_logits"]
    assert sum(value.numel() for value in renamed.values()) == expected_parameters
    for key in state_dict:
        assert len(matching_rules(key.removeprefix("module."), config.early_fusion)) == 1, key
    # renaming never changes a shape
    for key, value in to_original_layout(state_dict).items():
        new_key = _rename_one(key, config)
        if new_key is not None:
            assert tuple(renamed[new_key].shape) == tuple(value.shape), key


def _rename_one(key: str, config: GLIPConfig) -> str | None:
    for rule in ORIGINAL_KEY_RULES:
        new_key = rule.apply(key, config.early_fusion)
        if new_key is not None:
            return new_key
    return None


def test_head_tower_indices_map_to_blocks():
    config = GLIPConfig.glip_t()
    renamed, _ = rename_state_dict(schema_state_dict("glip_t"), config)
    blocks = {int(key.split(".")[3]) for key in renamed if key.startswith("model.head.blocks.")}
    assert blocks == set(range(6))
    assert "model.head.blocks.5.fusion.attention.out_text_proj.weight" in renamed
    assert "model.head.blocks.5.text_layer.output.LayerNorm.bias" in renamed
    assert "model.head.blocks.5.dyconv.dynamic_relu.fc2.weight" in renamed
    assert "model.backbone.output_norms.2.weight" in renamed
    assert "model.feature_pyramid.extra_convs.1.bias" in renamed
    assert tuple(renamed["model.feature_pyramid.lateral_convs.0.weight"].shape) == (256, 192, 1, 1)


def test_variant_a_tower_maps_without_fusion():
    state_dict = load_original_state_dict(VARIANT_A / "checkpoint.pth")
    config = tiny_config(VARIANT_A / "config.yaml")
    assert not config.early_fusion
    renamed, report = rename_state_dict(state_dict, config)
    assert report.is_clean, report.format()
    assert "model.head.blocks.1.dyconv.offset_conv.weight" in renamed
    assert not any(".fusion." in key or ".text_layer." in key for key in renamed)
    for key in state_dict:
        assert len(matching_rules(key, early_fusion=False)) == 1, key
    # with the wrong fusion setting the tower keys do not map
    _, wrong = rename_state_dict(state_dict, tiny_config())
    assert "rpn.head.dyhead_tower.1.DyConv.0.conv.weight" in wrong.unmapped_keys


def test_mmdet_schema_maps_to_official_keys_and_same_model_keys():
    mmdet_schema = schema_tensors("glip_t_mmdet")
    mmdet_state_dict = schema_state_dict("glip_t_mmdet")
    assert detect_checkpoint_layout(mmdet_state_dict) == "mmdet"
    original = mmdet_to_original_state_dict(mmdet_state_dict)
    for key in mmdet_schema:
        claims = [rule.pattern for rule in MMDET_KEY_RULES if rule.apply(key) is not None]
        assert len(claims) >= 1, key
    official_of = {entry["official_key"].removeprefix("module."): key for key, entry in mmdet_schema.items()}
    assert set(original) == set(official_of)
    assert all(list(original[key].shape) == mmdet_schema[official_of[key]]["shape"] for key in original)

    config = GLIPConfig.glip_t()
    from_mmdet, mmdet_report = rename_state_dict(mmdet_state_dict, config)
    from_official, _ = rename_state_dict(schema_state_dict("glip_t"), config)
    assert mmdet_report.is_clean, mmdet_report.format()
    assert set(from_mmdet) == set(from_official)
    assert shapes_of(from_mmdet) == shapes_of(from_official)


@pytest.mark.parametrize(("schema", "config"), [("glip_t", GLIPConfig.glip_t()), ("glip_l", GLIPConfig.glip_l())])
def test_schema_matches_model_built_on_meta_device(schema, config):
    with torch.device("meta"):
        model = GLIPForGrounding(config)
    model_shapes = shapes_of(model.state_dict())
    renamed, report = rename_state_dict(schema_state_dict(schema), config)
    assert report.is_clean, report.format()
    assert sorted(set(model_shapes) - set(renamed)) == []  # no missing model key
    assert sorted(set(renamed) - set(model_shapes)) == []  # no unexpected key
    assert shapes_of(renamed) == model_shapes
    convert_state_dict(schema_state_dict(schema), config, expected_shapes=model_shapes)


def test_mmdet_schema_matches_model():
    config = GLIPConfig.glip_t()
    converted = convert_state_dict(schema_state_dict("glip_t_mmdet"), config)  # meta model shapes by default
    assert len(converted) == 726


# ---------------------------------------------------------------------------------------------------------------
# reading checkpoints and the mmdetection layout
# ---------------------------------------------------------------------------------------------------------------
def test_load_original_state_dict_layouts(tmp_path, tiny_a_state_dict):
    weights = {"module.rpn.head.bias0": torch.ones(1), "module.rpn.head.log_scale": torch.zeros(1)}
    torch.save({"model": weights, "model_ema": {"x": torch.ones(1)}, "iteration": 3}, tmp_path / "official.pth")
    torch.save({"meta": {"a": 1}, "state_dict": {"bbox_head.head.bias0": torch.ones(1)}}, tmp_path / "mmdet.pth")
    torch.save(weights, tmp_path / "bare.pth")
    assert set(load_original_state_dict(tmp_path / "official.pth")) == {"rpn.head.bias0", "rpn.head.log_scale"}
    assert set(load_original_state_dict(tmp_path / "mmdet.pth")) == {"bbox_head.head.bias0"}
    assert set(load_original_state_dict(tmp_path / "bare.pth")) == {"rpn.head.bias0", "rpn.head.log_scale"}
    assert len(tiny_a_state_dict) == 272 and all(not key.startswith("module.") for key in tiny_a_state_dict)


def test_mmdet_fixture_maps_back_to_the_official_tensors(tiny_a_state_dict):
    mmdet = load_original_state_dict(TINY_A / "mmdet_checkpoint.pth")
    assert detect_checkpoint_layout(mmdet) == "mmdet"
    original = to_original_layout(mmdet)
    dropped = set(tiny_a_state_dict) - set(original)
    assert dropped == {"rpn.head.cls_logits.weight", "rpn.head.cls_logits.bias"} | {
        f"rpn.anchor_generator.cell_anchors.{level}" for level in range(5)
    }
    for key, value in original.items():  # includes the un-permuted PatchMerging tensors
        assert torch.equal(value, tiny_a_state_dict[key]), key
    patch_merging = mmdet["backbone.stages.0.downsample.reduction.weight"]
    assert not torch.equal(patch_merging, tiny_a_state_dict["backbone.body.layers.0.downsample.reduction.weight"])


def test_mmdet_zero_dim_scale_is_reshaped():
    original = mmdet_to_original_state_dict({"bbox_head.head.scales.0.scale": torch.tensor(2.5)})
    assert original["rpn.head.scales.0.scale"].shape == (1,)


def test_layout_detection_rejects_unknown_and_mixed_keys():
    with pytest.raises(ValueError, match="Cannot tell the checkpoint layout"):
        detect_checkpoint_layout({"encoder.weight": torch.ones(1)})
    with pytest.raises(ValueError, match="Cannot tell the checkpoint layout"):
        detect_checkpoint_layout({"rpn.head.bias0": torch.ones(1), "bbox_head.head.bias0": torch.ones(1)})
    with pytest.raises(ValueError, match="neck.something"):
        mmdet_to_original_state_dict({"neck.something": torch.ones(1)})


# ---------------------------------------------------------------------------------------------------------------
# (c) strict report on bad inputs (model-free expected shapes)
# ---------------------------------------------------------------------------------------------------------------
def test_clean_fixture_converts(tiny_a_state_dict, tiny_a_expected_shapes):
    converted = convert_state_dict(tiny_a_state_dict, tiny_config(), expected_shapes=tiny_a_expected_shapes)
    assert converted["model.head.bias0"] is tiny_a_state_dict["rpn.head.bias0"]


def test_unknown_key_fails(tiny_a_state_dict, tiny_a_expected_shapes):
    state_dict = {**tiny_a_state_dict, "rpn.head.extra_projection.weight": torch.ones(2)}
    with pytest.raises(ValueError, match=r"unmapped checkpoint keys[\s\S]*rpn\.head\.extra_projection\.weight"):
        convert_state_dict(state_dict, tiny_config(), expected_shapes=tiny_a_expected_shapes)


def test_missing_key_fails(tiny_a_state_dict, tiny_a_expected_shapes):
    state_dict = {
        key: value for key, value in tiny_a_state_dict.items() if key != "rpn.head.dyhead_tower.5.offset.bias"
    }
    with pytest.raises(
        ValueError, match=r"missing model keys[\s\S]*model\.head\.blocks\.1\.dyconv\.offset_conv\.bias"
    ):
        convert_state_dict(state_dict, tiny_config(), expected_shapes=tiny_a_expected_shapes)


def test_shape_mismatch_fails(tiny_a_state_dict, tiny_a_expected_shapes):
    state_dict = {**tiny_a_state_dict, "backbone.fpn.fpn_inner3.bias": torch.zeros(33)}
    with pytest.raises(ValueError, match=r"model\.feature_pyramid\.lateral_convs\.1\.bias: \[33\] vs \[32\]"):
        convert_state_dict(state_dict, tiny_config(), expected_shapes=tiny_a_expected_shapes)


def test_unexpected_key_fails(tiny_a_state_dict, tiny_a_expected_shapes):
    shapes = {key: shape for key, shape in tiny_a_expected_shapes.items() if key != "model.head.bias_lang"}
    with pytest.raises(ValueError, match=r"unexpected keys[\s\S]*model\.head\.bias_lang"):
        convert_state_dict(tiny_a_state_dict, tiny_config(), expected_shapes=shapes)


def test_prompt_tuning_weights_need_prompt_tuning_length(tiny_a_state_dict, tiny_a_expected_shapes):
    # `rpn.tunable_linear.weight` maps onto `model.prompt_offsets`, which a config without prompt offsets lacks.
    state_dict = {**tiny_a_state_dict, "rpn.tunable_linear.weight": torch.zeros(1000, 32)}
    with pytest.raises(ValueError, match=r"unexpected keys[\s\S]*model\.prompt_offsets"):
        convert_state_dict(state_dict, tiny_config(), expected_shapes=tiny_a_expected_shapes)


# ---------------------------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------------------------
def test_config_from_full_dump():
    config = tiny_config()
    assert config.backbone_config.embed_dim == 16
    assert list(config.backbone_config.depths) == [1, 1, 2, 1]
    assert list(config.backbone_config.num_heads) == [1, 2, 4, 8]
    assert config.backbone_config.window_size == 7
    assert config.fpn_channels == 32 and config.num_head_blocks == 2
    assert config.early_fusion and config.use_fused_text_for_dot_product
    assert config.text_config.hidden_size == 32 and config.text_config.num_hidden_layers == 2
    assert (config.pre_nms_score_threshold, config.pre_nms_top_n, config.nms_threshold) == (0.05, 1000, 0.6)
    assert config.max_detections == 100 and config.max_text_length == 256
    assert config.anchor_sizes == [64, 128, 256, 512, 1024] and config.anchor_strides == [8, 16, 32, 64, 128]
    assert image_processor_settings_from_original_yaml(TINY_A / "config.yaml") == {
        "min_size": 320,
        "max_size": 533,
        "size_divisibility": 32,
        "image_mean": [103.53, 116.28, 123.675],
        "image_std": [57.375, 57.12, 58.395],
        "train_min_sizes": [480, 560, 640, 720, 800],
        "horizontal_flip_probability": 0.5,
    }
    variant_a = tiny_config(VARIANT_A / "config.yaml")
    assert not variant_a.early_fusion and not variant_a.use_fused_text_for_dot_product


# Model-relevant part of configs/pretrain/glip_Swin_T_O365_GoldG.yaml / glip_Swin_L.yaml (tuples as strings, the
# way yacs files write them).
GLIP_T_OVERRIDES = """
MODEL:
  META_ARCHITECTURE: "GeneralizedVLRCNN"
  RPN_ONLY: True
  RPN_ARCHITECTURE: "VLDYHEAD"
  BACKBONE:
    CONV_BODY: "SWINT-FPN-RETINANET"
    OUT_CHANNELS: 256
    FREEZE_CONV_BODY_AT: -1
  LANGUAGE_BACKBONE:
    FREEZE: False
    MODEL_TYPE: "bert-base-uncased"
    MASK_SPECIAL: False
  RPN:
    USE_FPN: True
    ANCHOR_SIZES: (64, 128, 256, 512, 1024)
    ANCHOR_STRIDE: (8, 16, 32, 64, 128)
    ASPECT_RATIOS: (1.0,)
    SCALES_PER_OCTAVE: 1
  DYHEAD:
    CHANNELS: 256
    NUM_CONVS: 6
    USE_GN: True
    USE_DYRELU: True
    USE_DFCONV: True
    USE_DYFUSE: True
    TOPK: 9
    SCORE_AGG: "MEAN"
    LOG_SCALE: 0.0
    FUSE_CONFIG:
      EARLY_FUSE_ON: True
      TYPE: "MHA-B"
      USE_CLASSIFICATION_LOSS: False
      USE_TOKEN_LOSS: False
      USE_CONTRASTIVE_ALIGN_LOSS: False
      CONTRASTIVE_HIDDEN_DIM: 64
      USE_DOT_PRODUCT_TOKEN_LOSS: True
      USE_FUSED_FEATURES_DOT_PRODUCT: True
      USE_LAYER_SCALE: True
      CLAMP_MIN_FOR_UNDERFLOW: True
      CLAMP_MAX_FOR_OVERFLOW: True
      CLAMP_BERTATTN_MIN_FOR_UNDERFLOW: True
      CLAMP_BERTATTN_MAX_FOR_OVERFLOW: True
      CLAMP_DOT_PRODUCT: True
    USE_CHECKPOINT: True
DATASETS:
  TRAIN: ("object365_dt_train", "mixed_train_no_coco", "flickr30k_train")
  SEPARATION_TOKENS: ". "
INPUT:
  PIXEL_MEAN: [ 103.530, 116.280, 123.675 ]
  PIXEL_STD: [ 57.375, 57.120, 58.395 ]
  MIN_SIZE_TEST: 800
  MAX_SIZE_TEST: 1333
DATALOADER:
  SIZE_DIVISIBILITY: 32
"""

GLIP_L_OVERRIDES = GLIP_T_OVERRIDES.replace("NUM_CONVS: 6", "NUM_CONVS: 8").replace(
    "    FREEZE_CONV_BODY_AT: -1\n",
    "  SWINT:\n    EMBED_DIM: 192\n    DEPTHS: (2, 2, 18, 2)\n    NUM_HEADS: (6, 12, 24, 48)\n    WINDOW_SIZE: 12\n"
    "    OUT_CHANNELS: (192, 384, 768, 1536)\n    DROP_PATH_RATE: 0.4\n",
)


@pytest.mark.parametrize(
    ("overrides", "preset"), [(GLIP_T_OVERRIDES, GLIPConfig.glip_t), (GLIP_L_OVERRIDES, GLIPConfig.glip_l)]
)
def test_config_from_official_overrides_equals_preset(tmp_path, overrides, preset):
    path = tmp_path / "config.yaml"
    path.write_text(overrides)
    assert load_original_yaml(path)["MODEL"]["RPN"]["ASPECT_RATIOS"] == [1.0]
    assert config_from_original_yaml(path).to_dict() == preset().to_dict()
    settings = image_processor_settings_from_original_yaml(path)
    assert (settings["min_size"], settings["max_size"], settings["size_divisibility"]) == (800, 1333, 32)
    assert settings["train_min_sizes"] == [800]  # no AUGMENT.MULT_MIN_SIZE_TRAIN in these overrides


def test_config_base_chain(tmp_path):
    (tmp_path / "base.yaml").write_text(GLIP_T_OVERRIDES)
    (tmp_path / "child.yaml").write_text("_BASE_: base.yaml\nMODEL:\n  DYHEAD:\n    NUM_CONVS: 8\n")
    assert config_from_original_yaml(tmp_path / "child.yaml").num_head_blocks == 8


def test_variant_presets():
    assert config_from_variant("glip-t-a").early_fusion is False
    assert config_from_variant("glip-l").num_head_blocks == 8
    with pytest.raises(ValueError, match="Unknown variant"):
        config_from_variant("glip-x")


def _edited_dump(tmp_path: Path, edit) -> Path:
    original = yaml.safe_load((TINY_A / "config.yaml").read_text())
    edit(original)
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(original))
    return path


def test_unsupported_yaml_fails_clearly(tmp_path):
    def edit(original):
        original["MODEL"]["DYHEAD"]["FUSE_CONFIG"]["TYPE"] = "SCAN"
        original["MODEL"]["DYHEAD"]["USE_DYRELU"] = False

    with pytest.raises(ValueError, match=r"USE_DYRELU = False[\s\S]*FUSE_CONFIG\.TYPE = 'SCAN'"):
        config_from_original_yaml(_edited_dump(tmp_path, edit), text_config=text_config_from_pretrained(BERT))


def test_lang_dim_must_match_text_model():
    with pytest.raises(ValueError, match=r"LANG_DIM = 32 but the text model's hidden_size = 768"):
        config_from_original_yaml(TINY_A / "config.yaml")  # bert-base-uncased sizes


def test_yaml_and_weights_disagreement_fails_clearly(tmp_path, tiny_a_state_dict):
    variant_a = tiny_config(VARIANT_A / "config.yaml")
    with pytest.raises(ValueError, match=r"early fusion .*: config False, checkpoint True"):
        check_config_matches_state_dict(variant_a, tiny_a_state_dict)

    def more_blocks(original):
        original["MODEL"]["DYHEAD"]["NUM_CONVS"] = 3

    config = config_from_original_yaml(
        _edited_dump(tmp_path, more_blocks), text_config=text_config_from_pretrained(BERT)
    )
    with pytest.raises(ValueError, match=r"head blocks .*: config 3, checkpoint 2"):
        check_config_matches_state_dict(config, tiny_a_state_dict)

    with pytest.raises(ValueError, match=r"text hidden size .*: config 768, checkpoint 32"):
        check_config_matches_state_dict(config_from_variant("glip-t"), tiny_a_state_dict)

    check_config_matches_state_dict(tiny_config(), tiny_a_state_dict)
    mmdet = load_original_state_dict(TINY_A / "mmdet_checkpoint.pth")
    check_config_matches_state_dict(tiny_config(), mmdet)


def test_checkpoint_bert_layers_must_match(tiny_a_state_dict):
    text_config = text_config_from_pretrained(BERT)
    text_config.num_hidden_layers = 3
    config = config_from_original_yaml(TINY_A / "config.yaml", text_config=text_config)
    with pytest.raises(ValueError, match=r"text layers .*: config 3, checkpoint 2"):
        check_config_matches_state_dict(config, tiny_a_state_dict)


# ---------------------------------------------------------------------------------------------------------------
# (b) end to end through the command line (needs the model class)
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def converted_tiny_a(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("converted") / "tiny_a"
    command = [
        sys.executable,
        "-m",
        "transformers_glip.convert_glip_original_checkpoint",
        "--checkpoint",
        str(TINY_A / "checkpoint.pth"),
        "--original-config",
        str(TINY_A / "config.yaml"),
        "--text-model",
        str(BERT),
        "--output",
        str(output),
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPOSITORY_ROOT, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    return output


def _converted_reference(state_dict_path: Path, config: GLIPConfig) -> dict[str, torch.Tensor]:
    state_dict = load_original_state_dict(state_dict_path)
    renamed, report = rename_state_dict(state_dict, config)
    assert report.is_clean, report.format()
    return renamed


def test_cli_output_loads_and_equals_fixture(converted_tiny_a):
    from transformers import AutoTokenizer

    assert (converted_tiny_a / "config.json").is_file() and (converted_tiny_a / "model.safetensors").is_file()
    model = GLIPForGrounding.from_pretrained(converted_tiny_a)
    reference = _converted_reference(TINY_A / "checkpoint.pth", model.config)
    state = model.state_dict()
    assert set(state) == set(reference)
    for key, value in reference.items():
        assert torch.equal(state[key], value), key
    tokenizer = AutoTokenizer.from_pretrained(converted_tiny_a)
    assert tokenizer("a red circle.")["input_ids"] == [101, 1037, 2417, 4418, 1012, 102]
    image_processor = GLIPImageProcessor.from_pretrained(converted_tiny_a)
    assert (image_processor.min_size, image_processor.max_size) == (320, 533)
    assert image_processor.size_divisibility == 32
    processor = GLIPProcessor.from_pretrained(converted_tiny_a)
    assert processor.max_length == 256 and processor.image_processor.min_size == 320


def test_mmdet_checkpoint_converts_to_identical_state(tmp_path, converted_tiny_a):
    from safetensors.torch import load_file

    output = tmp_path / "mmdet"
    main(
        [
            "--checkpoint",
            str(TINY_A / "mmdet_checkpoint.pth"),
            "--original-config",
            str(TINY_A / "config.yaml"),
            "--text-model",
            str(BERT),
            "--output",
            str(output),
        ]
    )
    from_mmdet = load_file(output / "model.safetensors")
    from_official = load_file(converted_tiny_a / "model.safetensors")
    assert set(from_mmdet) == set(from_official)
    for key, value in from_official.items():
        assert torch.equal(from_mmdet[key], value), key


def test_variant_a_converts(tmp_path):
    output = tmp_path / "variant_a"
    main(
        [
            "--checkpoint",
            str(VARIANT_A / "checkpoint.pth"),
            "--original-config",
            str(VARIANT_A / "config.yaml"),
            "--text-model",
            str(BERT),
            "--output",
            str(output),
        ]
    )
    model = GLIPForGrounding.from_pretrained(output)
    assert not model.config.early_fusion
    reference = _converted_reference(VARIANT_A / "checkpoint.pth", model.config)
    state = model.state_dict()
    assert set(state) == set(reference)
    assert all(torch.equal(state[key], value) for key, value in reference.items())


def test_cli_rejects_disagreeing_yaml(tmp_path):
    with pytest.raises(ValueError, match="early fusion"):
        main(
            [
                "--checkpoint",
                str(TINY_A / "checkpoint.pth"),
                "--original-config",
                str(VARIANT_A / "config.yaml"),
                "--text-model",
                str(BERT),
                "--output",
                str(tmp_path / "never"),
            ]
        )
    assert not (tmp_path / "never").exists()


def test_converted_model_matches_official_outputs(converted_tiny_a):
    model = GLIPForGrounding.from_pretrained(converted_tiny_a).eval()
    differences = verify_against_reference(model, TINY_A / "outputs.safetensors", tolerance=1e-3)
    assert set(differences) == {"logits", "centerness", "box_regression"}


class _PickledObject:
    """Stands in for non-tensor objects (e.g. mmengine's message hub) that weights_only loading refuses."""


def test_checkpoint_with_python_objects_fails_clearly(tmp_path):
    torch.save({"state_dict": {"bbox_head.head.bias0": torch.ones(1)}, "hub": _PickledObject()}, tmp_path / "x.pth")
    with pytest.raises(ValueError, match=r"weights_only=True[\s\S]*publish_model"):
        load_original_state_dict(tmp_path / "x.pth")


def test_command_line_module_runs_the_conversion_command_line():
    import transformers_glip.convert_glip_original_checkpoint as command_line

    assert command_line.run_command_line is run_command_line


# ---------------------------------------------------------------------------------------------------------------
# no silent failure: bad checkpoints
# ---------------------------------------------------------------------------------------------------------------
class _CodeOnUnpickling:
    """Unpickling runs `Path.touch(marker)`: an unsafe `torch.load` would create the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_pickle_never_runs_code(tmp_path):
    marker = tmp_path / "code_ran"
    torch.save({"model": {"rpn.head.bias0": torch.ones(1)}, "payload": _CodeOnUnpickling(marker)}, tmp_path / "x.pth")
    with pytest.raises(ValueError, match="weights_only=True"):
        load_original_state_dict(tmp_path / "x.pth")
    assert not marker.exists()


def test_empty_truncated_missing_and_foreign_checkpoints_fail_naming_the_file(tmp_path):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=rf"{re.escape(str(empty))} is empty \(0 bytes\)"):
        load_original_state_dict(empty)
    truncated = tmp_path / "truncated.pth"
    data = (TINY_A / "checkpoint.pth").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"{re.escape(str(truncated))} .*truncated or not a file written by"):
        load_original_state_dict(truncated)
    foreign = tmp_path / "notes.pth"
    foreign.write_text("these are not weights")
    with pytest.raises(ValueError, match=rf"{re.escape(str(foreign))} .*truncated or not a file written by"):
        load_original_state_dict(foreign)
    with pytest.raises(ValueError, match=r"missing\.pth does not exist"):
        load_original_state_dict(tmp_path / "missing.pth")
    torch.save({"model": {}}, tmp_path / "no_weights.pth")
    with pytest.raises(ValueError, match="empty state dict"):
        load_original_state_dict(tmp_path / "no_weights.pth")


def test_non_finite_tensors_are_reported(tiny_a_state_dict, tiny_a_expected_shapes):
    bias = tiny_a_state_dict["rpn.head.bias0"].clone()
    bias[0] = float("nan")
    weight = tiny_a_state_dict["backbone.fpn.fpn_inner3.weight"].clone()
    weight[0, 0, 0, 0] = float("inf")
    weight[1, 0, 0, 0] = float("-inf")
    state_dict = {**tiny_a_state_dict, "rpn.head.bias0": bias, "backbone.fpn.fpn_inner3.weight": weight}
    _, report = rename_state_dict(state_dict, tiny_config())
    assert not report.is_clean
    assert report.non_finite_keys == {
        "rpn.head.bias0": f"1 NaN, 0 Inf of {bias.numel()} values",
        "backbone.fpn.fpn_inner3.weight": f"0 NaN, 2 Inf of {weight.numel()} values",
    }
    with pytest.raises(ValueError, match=r"holding NaN or Inf[\s\S]*backbone\.fpn\.fpn_inner3\.weight[\s\S]*bias0"):
        convert_state_dict(state_dict, tiny_config(), expected_shapes=tiny_a_expected_shapes)
    # integer buffers and shape-only (meta) tensors are not inspected; the clean fixture has none
    assert find_non_finite_tensors({"a": torch.arange(3), "b": torch.empty(2, device="meta")}) == {}
    assert find_non_finite_tensors(tiny_a_state_dict) == {}


def _nan_checkpoint(tmp_path: Path) -> Path:
    checkpoint = torch.load(TINY_A / "checkpoint.pth", weights_only=True)
    state_dict = dict(checkpoint["model"])
    key = next(key for key in state_dict if key.endswith("rpn.head.bias0"))
    state_dict[key] = torch.full_like(state_dict[key], float("nan"))
    path = tmp_path / "nan.pth"
    torch.save({"model": state_dict}, path)
    return path


def _arguments(checkpoint: Path, output: Path, *extra: str, config: Path = TINY_A / "config.yaml") -> list[str]:
    return [
        "--checkpoint",
        str(checkpoint),
        "--original-config",
        str(config),
        "--text-model",
        str(BERT),
        "--output",
        str(output),
        *extra,
    ]


def test_cli_refuses_a_checkpoint_holding_nan(tmp_path):
    command = [sys.executable, "-m", "transformers_glip.convert_glip_original_checkpoint"]
    command += _arguments(_nan_checkpoint(tmp_path), tmp_path / "never")
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPOSITORY_ROOT, timeout=900)
    assert result.returncode == 1, result.stderr[-4000:]
    assert re.search(r"holding NaN or Inf[\s\S]*rpn\.head\.bias0: 1 NaN", result.stderr), result.stderr[-4000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "never").exists()


# ---------------------------------------------------------------------------------------------------------------
# no silent failure: bad yaml
# ---------------------------------------------------------------------------------------------------------------
def test_known_key_tree_covers_the_fixture_dumps_and_the_keys_read():
    for dump in (TINY_A / "config.yaml", VARIANT_A / "config.yaml"):
        check_known_yaml_keys(yaml.safe_load(dump.read_text()), dump)  # full official dumps: every key is known

    def leaves(node, prefix=""):
        for key, value in node.items():
            yield from leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]

    for dotted_key in leaves(OFFICIAL_CONFIG_DEFAULTS):  # the converter reads only official keys
        section, _, name = dotted_key.rpartition(".")
        assert name in OFFICIAL_CONFIG_KEYS[section], dotted_key
    assert OPEN_OFFICIAL_CONFIG_SECTIONS <= {
        f"{section}.{name}" for section in OFFICIAL_CONFIG_KEYS for name in OFFICIAL_CONFIG_KEYS[section]
    }


def test_unknown_yaml_key_fails_naming_the_nearest_known_key(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text(GLIP_T_OVERRIDES.replace("MIN_SIZE_TEST: 800", "MIN_SIZE_TSET: 600"))
    message = (
        r"typo\.yaml: keys that the official GLIP config[\s\S]*"
        r"INPUT\.MIN_SIZE_TSET: unknown key \(did you mean INPUT\.MIN_SIZE_TEST\?\)"
    )
    with pytest.raises(ValueError, match=message):
        image_processor_settings_from_original_yaml(path)
    with pytest.raises(ValueError, match=message):
        config_from_original_yaml(path)

    def edit(original):
        original["MODEL"]["DYHEAD"]["NUM_CONVZ"] = 3
        original["SOLVR"] = {"BASE_LR": 0.1}
        original["DATASETS"]["REGISTER"] = {"my_dataset": {"img_dir": "images"}}  # open section: accepted
        original["INPUT"]["PIXEL_MEAN"] = {"B": 1.0}  # a value given a section
        original["MODEL"]["SWINT"] = 7  # a section given a value

    with pytest.raises(ValueError) as raised:
        load_original_yaml(_edited_dump(tmp_path, edit))
    message = str(raised.value)
    assert "MODEL.DYHEAD.NUM_CONVZ: unknown key (did you mean MODEL.DYHEAD.NUM_CONVS?)" in message
    assert "SOLVR: unknown key (did you mean SOLVER?)" in message
    assert "INPUT.PIXEL_MEAN: is a value of the official config" in message
    assert "MODEL.SWINT: is a section of the official config, got the value 7" in message
    assert "REGISTER" not in message


def test_unknown_key_in_a_base_file_is_named(tmp_path):
    (tmp_path / "base.yaml").write_text(GLIP_T_OVERRIDES.replace("TOPK: 9", "TOPKK: 9"))
    (tmp_path / "child.yaml").write_text("_BASE_: base.yaml\nMODEL:\n  DYHEAD:\n    NUM_CONVS: 8\n")
    with pytest.raises(
        ValueError,
        match=r"base\.yaml: [\s\S]*MODEL\.DYHEAD\.TOPKK: unknown key \(did you mean MODEL\.DYHEAD\.TOPK\?\)",
    ):
        config_from_original_yaml(tmp_path / "child.yaml")


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("ATSS", "NMS_TH", "high", r"MODEL\.ATSS\.NMS_TH = 'high': expected finite number \(default 0\.6\)"),
        ("ATSS", "NMS_TH", float("nan"), r"MODEL\.ATSS\.NMS_TH = nan: expected finite number"),
        ("DYHEAD", "NUM_CONVS", True, r"MODEL\.DYHEAD\.NUM_CONVS = True: expected integer \(default 4\)"),
        ("DYHEAD", "USE_DFCONV", "yes", r"MODEL\.DYHEAD\.USE_DFCONV = 'yes': expected boolean"),
        ("RPN", "ANCHOR_SIZES", [64, "x", 256, 512, 1024], r"MODEL\.RPN\.ANCHOR_SIZES = \[64, 'x', 256, 512, 1024\]"),
        # right type, invalid value: GLIPConfig refuses it, the message names the yaml key
        (
            "ATSS",
            "NMS_TH",
            1.5,
            r"edited\.yaml: .*nms_threshold.*; yaml keys: nms_threshold <- MODEL\.ATSS\.NMS_TH = 1\.5",
        ),
        ("DYHEAD", "NUM_CONVS", 0, r"num_head_blocks <- MODEL\.DYHEAD\.NUM_CONVS = 0"),
    ],
)
def test_invalid_yaml_value_fails_naming_the_key(tmp_path, section, key, value, message):
    def edit(original):
        original["MODEL"][section][key] = value

    with pytest.raises(ValueError, match=message):
        config_from_original_yaml(_edited_dump(tmp_path, edit), text_config=text_config_from_pretrained(BERT))


def test_invalid_image_setting_fails_naming_the_key(tmp_path):
    def edit(original):
        original["INPUT"]["MIN_SIZE_TEST"] = -320

    with pytest.raises(
        ValueError, match=r"Invalid image settings in the official config .*min_size <- INPUT\.MIN_SIZE_TEST = -320"
    ):
        main(_arguments(TINY_A / "checkpoint.pth", tmp_path / "never", config=_edited_dump(tmp_path, edit)))
    assert not (tmp_path / "never").exists()


def test_missing_or_malformed_yaml_file_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"nope\.yaml does not exist"):
        load_original_yaml(tmp_path / "nope.yaml")
    (tmp_path / "broken.yaml").write_text("MODEL:\n  DYHEAD: [unclosed\n")
    with pytest.raises(ValueError, match=r"broken\.yaml is not valid yaml"):
        load_original_yaml(tmp_path / "broken.yaml")
    (tmp_path / "list.yaml").write_text("- MODEL\n")
    with pytest.raises(ValueError, match=r"list\.yaml must hold a mapping"):
        load_original_yaml(tmp_path / "list.yaml")


# ---------------------------------------------------------------------------------------------------------------
# no silent failure: the text model
# ---------------------------------------------------------------------------------------------------------------
def test_missing_text_model_folder_is_named(tmp_path):
    missing = tmp_path / "bert-base-uncased"
    with pytest.raises(
        ValueError,
        match=rf"--text-model folder {re.escape(str(missing))} does not exist[\s\S]*nothing is downloaded at run time",
    ):
        text_config_from_pretrained(missing)
    with pytest.raises(ValueError, match=r"--text-model folder \./no/such/bert does not exist"):
        text_config_from_pretrained("./no/such/bert")
    with pytest.raises(ValueError, match="does not exist"):
        main(
            _arguments(TINY_A / "checkpoint.pth", tmp_path / "never")[:5]
            + [str(missing), "--output", str(tmp_path / "never")]
        )
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        text_config_from_pretrained(tmp_path / "file")
    (tmp_path / "empty_folder").mkdir()
    with pytest.raises(ValueError, match=r"empty_folder holds no config\.json"):
        text_config_from_pretrained(tmp_path / "empty_folder")
    assert not (tmp_path / "never").exists()


def _bert_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "bert"
    folder.mkdir()
    for file in BERT.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    return folder


def test_corrupt_tokenizer_files_are_named(tmp_path):
    folder = _bert_copy(tmp_path)
    tokenizer_json = folder / "tokenizer.json"
    tokenizer_json.write_text(tokenizer_json.read_text()[:1000])  # truncated
    with pytest.raises(ValueError, match=rf"{re.escape(str(tokenizer_json))} is not valid JSON"):
        main(
            _arguments(TINY_A / "checkpoint.pth", tmp_path / "never")[:5]
            + [str(folder), "--output", str(tmp_path / "never")]
        )
    tokenizer_json.write_text('{"version": "1.0"}')  # valid JSON, not a tokenizer
    with pytest.raises(
        ValueError, match=rf"Could not load the tokenizer of {re.escape(str(folder))}[\s\S]*tokenizer\.json"
    ):
        load_text_tokenizer(folder, required=True)
    tokenizer_json.unlink()
    with pytest.raises(ValueError, match=r"holds no tokenizer files \(tokenizer\.json or vocab\.txt\)"):
        load_text_tokenizer(folder, required=True)
    assert load_text_tokenizer(folder, required=False) is None  # the yaml fallback: a warning, no tokenizer
    assert not (tmp_path / "never").exists()


# ---------------------------------------------------------------------------------------------------------------
# no silent failure: the output folder
# ---------------------------------------------------------------------------------------------------------------
def test_output_folder_with_foreign_files_is_refused(tmp_path, converted_tiny_a):
    output = tmp_path / "mine"
    output.mkdir()
    (output / "notes.txt").write_text("my notes")
    (output / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(
        ValueError, match=r"mine is not empty and is not the output of an earlier conversion[\s\S]*--overwrite"
    ):
        main(_arguments(TINY_A / "checkpoint.pth", output))
    assert sorted(path.name for path in output.iterdir()) == ["config.json", "notes.txt"]
    assert (output / "config.json").read_text() == '{"model_type": "bert"}'
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        check_output_folder(tmp_path / "a_file", overwrite=True)
    # what counts as an earlier conversion: only converter files and a GLIP config.json
    assert is_conversion_output(converted_tiny_a)
    assert all(
        any(re.fullmatch(pattern, path.name) for pattern in CONVERSION_OUTPUT_FILE_PATTERNS)
        for path in converted_tiny_a.iterdir()
    )
    assert not is_conversion_output(output)
    check_output_folder(tmp_path / "new")  # a folder that does not exist yet is fine


def _files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_overwrite_replaces_the_folder_as_a_whole(tmp_path, converted_tiny_a):
    output = tmp_path / "mine"
    output.mkdir()
    (output / "notes.txt").write_text("my notes")
    (output / "model-00001-of-00002.safetensors").write_bytes(b"stale shard")
    main(_arguments(TINY_A / "checkpoint.pth", output, "--overwrite"))
    assert _files(output) == _files(converted_tiny_a)  # nothing stale or foreign survives
    assert sorted(path.name for path in tmp_path.iterdir()) == ["mine"]  # no staging folder left


def test_reconversion_replaces_an_earlier_output_and_failure_keeps_it(tmp_path, converted_tiny_a):
    output = tmp_path / "glip"
    output.mkdir()
    for name, content in _files(converted_tiny_a).items():
        (output / name).write_bytes(content)
    (output / "model-00001-of-00002.safetensors").write_bytes(b"stale shard of a larger earlier conversion")
    assert is_conversion_output(output)
    with pytest.raises(ValueError, match="NaN"):
        main(_arguments(_nan_checkpoint(tmp_path), output))
    assert "model-00001-of-00002.safetensors" in _files(output)  # a failed conversion changes nothing
    main(_arguments(TINY_A / "mmdet_checkpoint.pth", output))  # no --overwrite needed
    assert _files(output) == _files(converted_tiny_a)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["glip", "nan.pth"]


def test_an_existing_empty_output_folder_is_kept_and_filled(tmp_path, converted_tiny_a):
    output = tmp_path / "mounted"
    output.mkdir()
    inode = output.stat().st_ino
    main(_arguments(TINY_A / "checkpoint.pth", output))
    assert output.stat().st_ino == inode  # the same folder (e.g. a mount point), not a replacement
    assert _files(output) == _files(converted_tiny_a)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["mounted"]
