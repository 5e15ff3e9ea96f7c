"""The converter is not tied to the fixture's sizes: a random model of other sizes (window 5, 3 head blocks, other
widths, a 3-layer BERT) written in the official checkpoint layout with an official-style override yaml converts
through the command line back to the identical model.

The official layout is produced here by an independent inverse of the key table in docs/TEAM_NOTES.md, so a wrong
rule in the converter's table shows up as a failed round trip.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import BertConfig

from transformers_glip import GLIPConfig, GLIPForGrounding

TOKENIZER_DIR = Path(__file__).parent / "fixtures" / "tiny_a" / "bert"

# ours -> official, applied in order (first match wins); `{i}` head block, tower index from the block index.
INVERSE_RULES = [
    (r"^model\.backbone\.embeddings\.projection\.", "backbone.body.patch_embed.proj."),
    (r"^model\.backbone\.embeddings\.norm\.", "backbone.body.patch_embed.norm."),
    (
        r"^model\.backbone\.stages\.(\d+)\.blocks\.(\d+)\.layernorm_before\.",
        r"backbone.body.layers.\1.blocks.\2.norm1.",
    ),
    (
        r"^model\.backbone\.stages\.(\d+)\.blocks\.(\d+)\.layernorm_after\.",
        r"backbone.body.layers.\1.blocks.\2.norm2.",
    ),
    (
        r"^model\.backbone\.stages\.(\d+)\.blocks\.(\d+)\.attention\.projection\.",
        r"backbone.body.layers.\1.blocks.\2.attn.proj.",
    ),
    (r"^model\.backbone\.stages\.(\d+)\.blocks\.(\d+)\.attention\.", r"backbone.body.layers.\1.blocks.\2.attn."),
    (r"^model\.backbone\.stages\.(\d+)\.blocks\.(\d+)\.mlp\.", r"backbone.body.layers.\1.blocks.\2.mlp."),
    (r"^model\.backbone\.stages\.(\d+)\.downsample\.", r"backbone.body.layers.\1.downsample."),
    (r"^model\.backbone\.output_norms\.(\d+)\.", lambda m: f"backbone.body.norm{int(m.group(1)) + 1}."),
    (r"^model\.feature_pyramid\.lateral_convs\.(\d+)\.", lambda m: f"backbone.fpn.fpn_inner{int(m.group(1)) + 2}."),
    (r"^model\.feature_pyramid\.output_convs\.(\d+)\.", lambda m: f"backbone.fpn.fpn_layer{int(m.group(1)) + 2}."),
    (r"^model\.feature_pyramid\.extra_convs\.(\d+)\.", lambda m: f"backbone.fpn.top_blocks.p{int(m.group(1)) + 6}."),
    (r"^model\.text_model\.", "language_backbone.body.model."),
]
FUSION_NAMES = {
    "vision_layer_norm": "layer_norm_v",
    "text_layer_norm": "layer_norm_l",
    "attention.vision_proj": "attn.v_proj",
    "attention.text_proj": "attn.l_proj",
    "attention.values_vision_proj": "attn.values_v_proj",
    "attention.values_text_proj": "attn.values_l_proj",
    "attention.out_vision_proj": "attn.out_v_proj",
    "attention.out_text_proj": "attn.out_l_proj",
    "vision_gamma": "gamma_v",
    "text_gamma": "gamma_l",
}
DYCONV_NAMES = {
    r"convs\.(\d)\.conv": r"DyConv.\1.conv",
    r"convs\.(\d)\.norm": r"DyConv.\1.bn",
    r"scale_attention": "AttnConv.1",
    r"dynamic_relu\.fc1": "relu.fc.0",
    r"dynamic_relu\.fc2": "relu.fc.2",
    r"offset_conv": "offset",
}
HEAD_NAMES = {"token_projection": "dot_product_projection_text", "bbox_pred": "bbox_pred", "centerness": "centerness"}


def to_official_key(key: str, early_fusion: bool) -> str:
    for pattern, replacement in INVERSE_RULES:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key)
    block = re.match(r"^model\.head\.blocks\.(\d+)\.(fusion|text_layer|dyconv)\.(.+)$", key)
    if block:
        index, role, rest = int(block.group(1)), block.group(2), block.group(3)
        tower = {"fusion": 3 * index, "text_layer": 3 * index + 1, "dyconv": 3 * index + 2}[role]
        if not early_fusion:
            tower = index
        if role == "fusion":
            for ours, official in FUSION_NAMES.items():
                if rest.startswith(ours):
                    rest = "b_attn." + official + rest[len(ours) :]
                    break
        elif role == "dyconv":
            for ours, official in DYCONV_NAMES.items():
                if re.match(ours, rest):
                    rest = re.sub(ours, official, rest, count=1)
                    break
        return f"rpn.head.dyhead_tower.{tower}.{rest}"
    head = re.match(r"^model\.head\.(.+)$", key)
    if head:
        rest = head.group(1)
        for ours, official in HEAD_NAMES.items():
            if rest.startswith(ours):
                return f"rpn.head.{official}{rest[len(ours) :]}"
        return f"rpn.head.{rest}"  # scales.{l}.scale, log_scale, bias_lang, bias0
    raise AssertionError(f"no inverse rule for {key}")


OVERRIDE_YAML = """\
MODEL:
  META_ARCHITECTURE: "GeneralizedVLRCNN"
  RPN_ONLY: True
  RPN_ARCHITECTURE: "VLDYHEAD"
  BACKBONE:
    CONV_BODY: "SWINT-FPN-RETINANET"
    OUT_CHANNELS: 48
  RPN:
    USE_FPN: True
    ANCHOR_SIZES: (64, 128, 256, 512, 1024)
    ANCHOR_STRIDE: (8, 16, 32, 64, 128)
    ASPECT_RATIOS: (1.0,)
    SCALES_PER_OCTAVE: 1
  SWINT:
    EMBED_DIM: 24
    DEPTHS: (1, 2, 1, 1)
    NUM_HEADS: (1, 2, 3, 6)
    WINDOW_SIZE: 5
    OUT_CHANNELS: (24, 48, 96, 192)
  LANGUAGE_BACKBONE:
    MODEL_TYPE: "bert-base-uncased"
    LANG_DIM: 48
  DYHEAD:
    CHANNELS: 48
    NUM_CONVS: 3
    USE_GN: True
    USE_DYRELU: True
    USE_DFCONV: {deformable}
    USE_DYFUSE: True
    TOPK: 9
    SCORE_AGG: "MEAN"
    FUSE_CONFIG:
      EARLY_FUSE_ON: {early_fusion}
      TYPE: "MHA-B"
      USE_CLASSIFICATION_LOSS: False
      USE_TOKEN_LOSS: False
      USE_DOT_PRODUCT_TOKEN_LOSS: True
      USE_FUSED_FEATURES_DOT_PRODUCT: {early_fusion}
      JOINT_EMB_SIZE: 48
      USE_LAYER_SCALE: True
      CLAMP_MIN_FOR_UNDERFLOW: True
      CLAMP_MAX_FOR_OVERFLOW: True
      CLAMP_BERTATTN_MIN_FOR_UNDERFLOW: True
      CLAMP_BERTATTN_MAX_FOR_OVERFLOW: True
      CLAMP_DOT_PRODUCT: True
INPUT:
  MIN_SIZE_TEST: 224
  MAX_SIZE_TEST: 320
"""


def other_sizes_config(early_fusion: bool, deformable: bool) -> GLIPConfig:
    text_config = BertConfig(
        hidden_size=48, num_hidden_layers=3, num_attention_heads=4, intermediate_size=96, vocab_size=30522
    )
    return GLIPConfig(
        backbone_config={"embed_dim": 24, "depths": [1, 2, 1, 1], "num_heads": [1, 2, 3, 6], "window_size": 5},
        text_config=text_config,
        fpn_channels=48,
        num_head_blocks=3,
        early_fusion=early_fusion,
        use_fused_text_for_dot_product=early_fusion,
        head_use_deformable_conv=deformable,
    )


@pytest.mark.parametrize(
    ("early_fusion", "deformable"),
    [(True, True), (False, True), (True, False)],
    ids=["fused", "variant_a", "fused_plain_conv"],
)
def test_other_sizes_round_trip_through_the_cli(tmp_path, early_fusion, deformable):
    torch.manual_seed(0)
    config = other_sizes_config(early_fusion, deformable)
    model = GLIPForGrounding(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():  # no constant tensors: a swapped key must change something
            parameter.add_(0.01 * torch.randn_like(parameter))
    official = {"module." + to_official_key(key, early_fusion): value for key, value in model.state_dict().items()}
    torch.save({"model": official, "iteration": 0}, tmp_path / "checkpoint.pth")
    (tmp_path / "override.yaml").write_text(OVERRIDE_YAML.format(early_fusion=early_fusion, deformable=deformable))
    text_dir = tmp_path / "bert"
    config.text_config.save_pretrained(text_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (text_dir / name).write_bytes((TOKENIZER_DIR / name).read_bytes())

    output_dir = tmp_path / "converted"
    command = [
        sys.executable,
        "-m",
        "transformers_glip.convert_glip_original_checkpoint",
        "--checkpoint",
        str(tmp_path / "checkpoint.pth"),
        "--original-config",
        str(tmp_path / "override.yaml"),
        "--text-model",
        str(text_dir),
        "--output",
        str(output_dir),
    ]
    completed = subprocess.run(command, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stdout + completed.stderr

    converted = GLIPForGrounding.from_pretrained(output_dir).eval()
    assert converted.config.backbone_config.window_size == 5
    assert converted.config.num_head_blocks == 3
    assert converted.config.early_fusion is early_fusion
    assert converted.config.head_use_deformable_conv is deformable  # official MODEL.DYHEAD.USE_DFCONV
    assert any(".offset_conv." in key for key in converted.state_dict()) is deformable
    expected = model.state_dict()
    actual = converted.state_dict()
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(actual[key], value), key

    pixel_values = torch.randn(1, 3, 96, 128)
    input_ids = torch.tensor([[101, 1037, 2417, 4418, 1012, 102]])
    with torch.no_grad():
        torch.testing.assert_close(converted(pixel_values, input_ids).logits, model(pixel_values, input_ids).logits)

    from transformers_glip.image_processing_glip import GLIPImageProcessor

    image_processor = GLIPImageProcessor.from_pretrained(output_dir)
    assert (image_processor.min_size, image_processor.max_size) == (224, 320)
