"""Tests of the GLIP Swin backbone and FPN (`transformers_glip/modeling_glip_backbone.py`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from transformers_glip.configuration_glip import GLIPConfig
from transformers_glip.modeling_glip_backbone import (
    GLIPFeaturePyramid,
    GLIPSwinBackbone,
    build_shifted_window_attention_mask,
)

torch.set_num_threads(2)

FIXTURE_DIR = Path(__file__).parent / "fixtures" / "tiny_a"
# Suggested float32 tolerances for intermediate tensors in the fixture README ("Numerical tolerances observed").
ATOL = 1e-4
RTOL = 1e-4


def tiny_config(**overrides) -> GLIPConfig:
    """The tiny_a fixture model (`tests/fixtures/tiny_a/config.yaml`, MODEL.SWINT.* and BACKBONE.OUT_CHANNELS)."""
    backbone_config = {
        "embed_dim": 16,
        "depths": [1, 1, 2, 1],
        "num_heads": [1, 2, 4, 8],
        "window_size": 7,
        "mlp_ratio": 4.0,
        "drop_path_rate": 0.2,
        "patch_size": 4,
        "num_channels": 3,
        "layer_norm_eps": 1e-5,
        "qkv_bias": True,
    }
    backbone_config.update(overrides.pop("backbone", {}))
    text_config = json.loads((FIXTURE_DIR / "bert" / "config.json").read_text())
    return GLIPConfig(
        backbone_config=backbone_config,
        text_config=text_config,
        fpn_channels=32,
        num_head_blocks=2,
        **overrides,
    )


# Official key (after `module.backbone.`) -> ours, per the parameter tree in docs/TEAM_NOTES.md.
_KEY_RENAMES = [
    (r"^body\.patch_embed\.proj\.", "backbone.embeddings.projection."),
    (r"^body\.patch_embed\.norm\.", "backbone.embeddings.norm."),
    (r"^body\.layers\.(\d+)\.blocks\.(\d+)\.norm1\.", r"backbone.stages.\1.blocks.\2.layernorm_before."),
    (r"^body\.layers\.(\d+)\.blocks\.(\d+)\.norm2\.", r"backbone.stages.\1.blocks.\2.layernorm_after."),
    (r"^body\.layers\.(\d+)\.blocks\.(\d+)\.attn\.proj\.", r"backbone.stages.\1.blocks.\2.attention.projection."),
    (r"^body\.layers\.(\d+)\.blocks\.(\d+)\.attn\.", r"backbone.stages.\1.blocks.\2.attention."),
    (r"^body\.layers\.(\d+)\.blocks\.(\d+)\.mlp\.", r"backbone.stages.\1.blocks.\2.mlp."),
    (r"^body\.layers\.(\d+)\.downsample\.", r"backbone.stages.\1.downsample."),
    (r"^body\.norm1\.", "backbone.output_norms.0."),
    (r"^body\.norm2\.", "backbone.output_norms.1."),
    (r"^body\.norm3\.", "backbone.output_norms.2."),
    (r"^fpn\.fpn_inner2\.", "feature_pyramid.lateral_convs.0."),
    (r"^fpn\.fpn_inner3\.", "feature_pyramid.lateral_convs.1."),
    (r"^fpn\.fpn_inner4\.", "feature_pyramid.lateral_convs.2."),
    (r"^fpn\.fpn_layer2\.", "feature_pyramid.output_convs.0."),
    (r"^fpn\.fpn_layer3\.", "feature_pyramid.output_convs.1."),
    (r"^fpn\.fpn_layer4\.", "feature_pyramid.output_convs.2."),
    (r"^fpn\.top_blocks\.p6\.", "feature_pyramid.extra_convs.0."),
    (r"^fpn\.top_blocks\.p7\.", "feature_pyramid.extra_convs.1."),
]


def official_backbone_state_dicts() -> tuple[dict, dict]:
    """Rename the official `backbone.*` keys of the fixture checkpoint; returns (swin, fpn) state dicts."""
    checkpoint = torch.load(FIXTURE_DIR / "checkpoint.pth", map_location="cpu", weights_only=True)["model"]
    state_dicts = {"backbone": {}, "feature_pyramid": {}}
    for key, value in checkpoint.items():
        key = key.removeprefix("module.")
        if not key.startswith("backbone.") or key.endswith("relative_position_index"):
            continue
        key = key.removeprefix("backbone.")
        for pattern, replacement in _KEY_RENAMES:
            new_key, count = re.subn(pattern, replacement, key)
            if count:
                break
        else:
            raise KeyError(f"unmapped official key backbone.{key}")
        module_name, _, local_key = new_key.partition(".")
        state_dicts[module_name][local_key] = value
    return state_dicts["backbone"], state_dicts["feature_pyramid"]


@pytest.fixture(scope="module")
def loaded_modules() -> tuple[GLIPSwinBackbone, GLIPFeaturePyramid]:
    config = tiny_config()
    backbone, feature_pyramid = GLIPSwinBackbone(config).eval(), GLIPFeaturePyramid(config).eval()
    backbone_state, pyramid_state = official_backbone_state_dicts()
    backbone.load_state_dict(backbone_state, strict=True)
    feature_pyramid.load_state_dict(pyramid_state, strict=True)
    return backbone, feature_pyramid


# ---------------------------------------------------------------------------------------------- reference (slow)
def reference_block(block, hidden_states: torch.Tensor) -> torch.Tensor:
    """Loop-per-window restatement of the official `SwinTransformerBlock.forward` (mask from the official nested
    slice loop), with the parameters of `block`. `(batch, height, width, dim)` -> same shape."""
    batch_size, height, width, dim = hidden_states.shape
    window, shift = block.window_size, block.shift_size
    attention = block.attention
    normed = block.layernorm_before(hidden_states)
    padded_height, padded_width = -(-height // window) * window, -(-width // window) * window
    padded = torch.zeros(batch_size, padded_height, padded_width, dim)
    padded[:, :height, :width] = normed
    region = torch.zeros(padded_height, padded_width)
    slices = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    count = 0
    for row_slice in slices:
        for column_slice in slices:
            region[row_slice, column_slice] = count
            count += 1
    if shift > 0:
        padded = torch.roll(padded, shifts=(-shift, -shift), dims=(1, 2))
    output = torch.zeros_like(padded)
    bias = attention.relative_position_bias()
    for top in range(0, padded_height, window):
        for left in range(0, padded_width, window):
            # (batch, window * window, dim)
            tokens = padded[:, top : top + window, left : left + window].reshape(batch_size, window * window, dim)
            # (batch, window * window, 3, num_heads, head_dim)
            qkv = attention.qkv(tokens).view(batch_size, window * window, 3, attention.num_heads, -1)
            # each (batch, num_heads, window * window, head_dim)
            query, key, value = (qkv[:, :, index].transpose(1, 2) for index in range(3))
            scores = (query * attention.scale) @ key.transpose(-2, -1) + bias
            if shift > 0:
                # (window * window,)
                ids = region[top : top + window, left : left + window].reshape(-1)
                scores = scores + (ids[None, :] != ids[:, None]).float() * -100.0
            # (batch, window * window, dim)
            context = (scores.softmax(-1) @ value).transpose(1, 2).reshape(batch_size, window * window, dim)
            # written back as (batch, window, window, dim)
            output[:, top : top + window, left : left + window] = attention.projection(context).view(
                batch_size, window, window, dim
            )
    if shift > 0:
        output = torch.roll(output, shifts=(shift, shift), dims=(1, 2))
    hidden_states = hidden_states + output[:, :height, :width]
    return hidden_states + block.mlp(block.layernorm_after(hidden_states))


def reference_backbone(backbone: GLIPSwinBackbone, pixel_values: torch.Tensor) -> list[torch.Tensor]:
    hidden_states = backbone.embeddings(pixel_values)
    outputs = []
    for stage_index, stage in enumerate(backbone.stages):
        for block in stage.blocks:
            hidden_states = reference_block(block, hidden_states)
        if stage_index > 0:
            # (batch, channels, height, width)
            outputs.append(backbone.output_norms[stage_index - 1](hidden_states).permute(0, 3, 1, 2))
        if stage.downsample is not None:
            height, width = hidden_states.shape[1:3]
            padded = F.pad(hidden_states, (0, 0, 0, width % 2, 0, height % 2))
            merged = torch.cat(
                [padded[:, 0::2, 0::2], padded[:, 1::2, 0::2], padded[:, 0::2, 1::2], padded[:, 1::2, 1::2]], -1
            )
            hidden_states = stage.downsample.reduction(stage.downsample.norm(merged))
    return outputs


# ---------------------------------------------------------------------------------------------- tests
def test_parameter_names_follow_the_team_tree():
    backbone = GLIPSwinBackbone(tiny_config())
    names = set(backbone.state_dict())
    assert "stages.2.blocks.1.attention.qkv.weight" in names
    assert "stages.2.blocks.1.attention.relative_position_bias_table" in names
    assert "stages.0.downsample.reduction.weight" in names and "stages.3.downsample" not in str(names)
    assert {"output_norms.0.weight", "output_norms.2.bias"} <= names
    assert not any("relative_position_index" in name for name in names)  # non-persistent, recomputed
    assert any("relative_position_index" in name for name, _ in backbone.named_buffers())
    pyramid_names = set(GLIPFeaturePyramid(tiny_config()).state_dict())
    assert pyramid_names == {
        f"{group}.{index}.{kind}"
        for group, count in [("lateral_convs", 3), ("output_convs", 3), ("extra_convs", 2)]
        for index in range(count)
        for kind in ("weight", "bias")
    }


def test_relative_position_index_matches_official_buffer():
    checkpoint = torch.load(FIXTURE_DIR / "checkpoint.pth", map_location="cpu", weights_only=True)["model"]
    official = checkpoint["module.backbone.body.layers.0.blocks.0.attn.relative_position_index"]
    ours = GLIPSwinBackbone(tiny_config()).stages[0].blocks[0].attention.relative_position_index
    assert torch.equal(ours, official)


def test_parity_with_official_swin_and_fpn(loaded_modules):
    backbone, feature_pyramid = loaded_modules
    pixel_values = load_file(FIXTURE_DIR / "inputs.safetensors")["images.tensors"]
    expected = load_file(FIXTURE_DIR / "outputs.safetensors")
    with torch.no_grad():
        feature_maps = backbone(pixel_values).feature_maps
        pyramid = feature_pyramid(feature_maps)
    for name, actual in zip(["swin.stage3", "swin.stage4", "swin.stage5"], feature_maps):
        torch.testing.assert_close(actual, expected[name], atol=ATOL, rtol=RTOL, msg=name)
    for name, actual in zip(["fpn.P3", "fpn.P4", "fpn.P5", "fpn.P6", "fpn.P7"], pyramid):
        torch.testing.assert_close(actual, expected[name], atol=ATOL, rtol=RTOL, msg=name)


@pytest.mark.parametrize("size", [(64, 96), (96, 64)])
def test_non_multiple_of_window_matches_loop_reference(loaded_modules, size):
    backbone, _ = loaded_modules
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(2, 3, *size, generator=generator)
    with torch.no_grad():
        feature_maps = backbone(pixel_values).feature_maps
        reference = reference_backbone(backbone, pixel_values)
        single = backbone(pixel_values[1:]).feature_maps
    for actual, expected in zip(feature_maps, reference):
        torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)
    for batched, alone in zip(feature_maps, single):
        torch.testing.assert_close(batched[1:], alone, atol=1e-5, rtol=1e-5)


def test_shifted_window_mask_matches_official_slice_loop():
    window, shift, padded_height, padded_width = 7, 3, 21, 14
    region = torch.zeros(padded_height, padded_width)
    slices = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    count = 0
    for row_slice in slices:
        for column_slice in slices:
            region[row_slice, column_slice] = count
            count += 1
    # (rows of windows, columns of windows, window, window)
    ids = region.view(padded_height // window, window, padded_width // window, window).permute(0, 2, 1, 3)
    # (num_windows, window * window)
    ids = ids.reshape(-1, window * window)
    expected = (ids[:, None, :] - ids[:, :, None]).ne(0).float() * -100.0
    actual = build_shifted_window_attention_mask(padded_height, padded_width, window, shift)
    assert torch.equal(actual, expected)


def test_odd_input_shapes():
    config = tiny_config()
    backbone, feature_pyramid = GLIPSwinBackbone(config).eval(), GLIPFeaturePyramid(config).eval()
    with torch.no_grad():
        feature_maps = backbone(torch.randn(1, 3, 70, 90)).feature_maps
        pyramid = feature_pyramid(feature_maps)
    # 70x90 -> patch embed pads to 72x92 -> 18x23 -> 9x12 -> 5x6 -> 3x3; P6, P7 halve with ceil.
    assert [tuple(feature.shape) for feature in feature_maps] == [(1, 32, 9, 12), (1, 64, 5, 6), (1, 128, 3, 3)]
    assert [tuple(level.shape[-2:]) for level in pyramid] == [(9, 12), (5, 6), (3, 3), (2, 2), (1, 1)]
    assert all(level.shape[1] == 32 for level in pyramid)


def test_every_parameter_gets_a_gradient_with_and_without_checkpointing():
    config = tiny_config(backbone={"drop_path_rate": 0.0}, fpn_drop_block_prob=0.0)
    torch.manual_seed(0)
    backbone, feature_pyramid = GLIPSwinBackbone(config).train(), GLIPFeaturePyramid(config).train()
    pixel_values = torch.randn(2, 3, 64, 96)

    def gradients() -> dict[str, torch.Tensor]:
        backbone.zero_grad(set_to_none=True)
        feature_pyramid.zero_grad(set_to_none=True)
        sum(level.square().mean() for level in feature_pyramid(backbone(pixel_values).feature_maps)).backward()
        named = [*backbone.named_parameters(), *feature_pyramid.named_parameters(prefix="fpn")]
        return {name: parameter.grad.clone() for name, parameter in named if parameter.grad is not None}

    plain = gradients()
    expected_names = {name for name, _ in backbone.named_parameters()}
    expected_names |= {name for name, _ in feature_pyramid.named_parameters(prefix="fpn")}
    assert set(plain) == expected_names
    assert all(gradient.abs().sum() > 0 for gradient in plain.values()), "a parameter got an all-zero gradient"

    backbone.gradient_checkpointing = True
    assert all(block.gradient_checkpointing for stage in backbone.stages for block in stage.blocks)
    checkpointed = gradients()
    backbone.gradient_checkpointing = False
    for name, gradient in plain.items():
        torch.testing.assert_close(checkpointed[name], gradient, atol=1e-6, rtol=1e-5, msg=name)


def test_drop_path_is_training_only():
    config = tiny_config(backbone={"drop_path_rate": 0.5})
    backbone = GLIPSwinBackbone(config)
    pixel_values = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        evaluation = backbone.eval()(pixel_values).feature_maps
        assert all(torch.equal(a, b) for a, b in zip(evaluation, backbone(pixel_values).feature_maps))
        torch.manual_seed(1)
        training = backbone.train()(pixel_values).feature_maps
    assert any(not torch.allclose(a, b) for a, b in zip(evaluation, training))


def test_drop_block_is_off_in_eval_and_active_in_training(loaded_modules):
    backbone, _ = loaded_modules
    config = tiny_config(fpn_drop_block_prob=0.3, fpn_drop_block_size=3)
    feature_pyramid = GLIPFeaturePyramid(config)
    with torch.no_grad():
        feature_maps = backbone(torch.randn(2, 3, 128, 160)).feature_maps
        evaluation = feature_pyramid.eval()(feature_maps)
        torch.manual_seed(0)
        training = feature_pyramid.train()(feature_maps)
        feature_pyramid.drop_block.drop_prob = 0.0
        training_without_drop_block = feature_pyramid(feature_maps)
    # DropBlock acts on the merged P3/P4 features only; P5..P7 never see it.
    assert not torch.allclose(training[0], evaluation[0])
    assert not torch.allclose(training[1], evaluation[1])
    for level in (2, 3, 4):
        assert torch.equal(training[level], evaluation[level])
    for with_prob_zero, expected in zip(training_without_drop_block, evaluation):
        assert torch.equal(with_prob_zero, expected)
