"""Tests of the pre-trained tower loaders (`transformers_glip/pretrained_towers_glip.py`), offline.

Swin: timm models are built with random weights (`pretrained=False` or the `SwinTransformer` class), so nothing is
downloaded. The mapping is proved numerically: with the same weights, every stage output of our detection Swin
equals timm's (`forward_intermediates(norm=False)`), at an input size where both handle the windows the same way.
"""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models.swin_transformer import SwinTransformer
from transformers import BertConfig, BertModel

from transformers_glip.configuration_glip import GLIPConfig
from transformers_glip.modeling_glip import GLIPForGrounding
from transformers_glip.modeling_glip_backbone import GLIPSwinBackbone
from transformers_glip.pretrained_towers_glip import (
    TIMM_SWIN_NAMES,
    convert_swin_state_dict,
    load_pretrained_swin,
    load_pretrained_text_model,
    load_swin_state_dict_file,
)

torch.set_num_threads(2)

# Same operations in the same order in float32: the outputs agree bit for bit today (max difference 0.0). The
# tolerance leaves room for an equivalent kernel choice (e.g. timm's fused scaled-dot-product attention when
# TIMM_FUSED_ATTN is set: ~1e-6 relative after 8 blocks), far below any mapping error (order 1).
ATOL = 1e-5
TINY_SWIN = {"embed_dim": 16, "depths": (2, 2, 2, 2), "num_heads": (1, 2, 2, 4), "window_size": 7}


def tiny_timm_swin(img_size: int, **kwargs) -> SwinTransformer:
    """A small timm Swin (2 blocks per stage, so every stage has a shifted block) with every tensor random."""
    torch.manual_seed(0)
    model = SwinTransformer(img_size=img_size, num_classes=0, **TINY_SWIN, **kwargs).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.normal_(0.0, 0.1)
            if "norm" in name and name.endswith("weight"):
                parameter.add_(1.0)  # LayerNorm scales around 1, random shifts: the 4C patch-merging norm is ordered
    return model


def tiny_backbone() -> GLIPSwinBackbone:
    backbone_config = {**TINY_SWIN, "depths": list(TINY_SWIN["depths"]), "num_heads": list(TINY_SWIN["num_heads"])}
    return GLIPSwinBackbone(GLIPConfig(backbone_config={**backbone_config, "drop_path_rate": 0.0})).eval()


def our_stage_outputs(backbone: GLIPSwinBackbone, pixel_values: torch.Tensor) -> list[torch.Tensor]:
    """Every stage output before patch merging, NCHW (what timm's `forward_intermediates` returns)."""
    hidden_states = backbone.embeddings(pixel_values)
    outputs = []
    for stage in backbone.stages:
        stage_output, hidden_states, _ = stage(hidden_states)  # (output, merged input of the next stage, attentions)
        # (batch, channels, height, width)
        outputs.append(stage_output.permute(0, 3, 1, 2))
    return outputs


def test_swin_stage_outputs_equal_timm_at_448():
    """448 px: stage maps 112, 56, 28, 14 are multiples of the window 7 (no padding, whose place differs) and
    larger than it (timm keeps the shift; it drops it when a map is no larger than the window)."""
    timm_model = tiny_timm_swin(448)
    backbone = tiny_backbone()
    report = load_pretrained_swin(backbone, timm_model)
    assert report.is_complete
    pixel_values = torch.randn(1, 3, 448, 448)
    with torch.no_grad():
        reference = timm_model.forward_intermediates(pixel_values, norm=False, intermediates_only=True)
        ours = our_stage_outputs(backbone, pixel_values)
        for stage_index, (expected, actual) in enumerate(zip(reference, ours)):
            assert actual.shape == expected.shape
            torch.testing.assert_close(actual, expected, atol=ATOL, rtol=0, msg=f"stage {stage_index}")
        # End to end: with timm's final norm as our C5 output norm, C5 is timm's forward_features (NHWC there).
        backbone.output_norms[2].load_state_dict(timm_model.norm.state_dict())
        c5 = backbone(pixel_values).feature_maps[2]
        torch.testing.assert_close(
            c5, timm_model.forward_features(pixel_values).permute(0, 3, 1, 2), atol=ATOL, rtol=0
        )


def test_swin_at_224_only_the_last_stage_differs_and_always_partition_fixes_it():
    """At 224 the last map is 7x7 = one window: timm (by default) drops the shift there, GLIP's Swin keeps it
    (masked). So C5 differs while stages 1-3 agree; with timm's `always_partition=True` all four agree."""
    backbone = tiny_backbone()
    pixel_values = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        for always_partition in (False, True):
            timm_model = tiny_timm_swin(224, always_partition=always_partition)
            load_pretrained_swin(backbone, timm_model)
            reference = timm_model.forward_intermediates(pixel_values, norm=False, intermediates_only=True)
            ours = our_stage_outputs(backbone, pixel_values)
            for stage_index in range(3):
                torch.testing.assert_close(ours[stage_index], reference[stage_index], atol=ATOL, rtol=0)
            last_stage_difference = (ours[3] - reference[3]).abs().max().item()
            if always_partition:
                assert last_stage_difference <= ATOL
            else:
                assert last_stage_difference > 1e-2


def test_swin_tiny_and_large_checkpoints_map_completely():
    """Every tensor of timm's Swin-T / Swin-L maps onto GLIP-T / GLIP-L with the right shape (Swin-L on the meta
    device: names and shapes only, no memory)."""
    timm_model = timm.create_model(TIMM_SWIN_NAMES["glip_t"], pretrained=False)
    backbone = GLIPSwinBackbone(GLIPConfig.glip_t())
    report = load_pretrained_swin(backbone, timm_model.state_dict())
    assert report.is_complete
    assert set(report.initialized) == {
        f"output_norms.{level}.{kind}" for level in range(3) for kind in ("weight", "bias")
    }
    assert set(report.dropped) == {"head.fc.weight", "head.fc.bias", "norm.weight", "norm.bias"}
    assert len(report.loaded) == len(timm_model.state_dict()) - 4
    torch.testing.assert_close(
        backbone.stages[0].downsample.reduction.weight,
        timm_model.layers[1].downsample.reduction.weight,
        rtol=0,
        atol=0,
    )
    torch.testing.assert_close(
        backbone.stages[3].blocks[1].attention.relative_position_bias_table,
        timm_model.layers[3].blocks[1].attn.relative_position_bias_table,
        rtol=0,
        atol=0,
    )
    with torch.device("meta"):
        large_timm = timm.create_model(TIMM_SWIN_NAMES["glip_l"], pretrained=False)
        large_backbone = GLIPSwinBackbone(GLIPConfig.glip_l())
    _, large_report = convert_swin_state_dict(large_timm.state_dict(), large_backbone)
    assert large_report.is_complete
    assert len(large_report.loaded) == len(large_timm.state_dict()) - 4


def to_microsoft_layout(timm_state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original microsoft/Swin-Transformer key layout: downsample at the end of stage s, buffers and `head.*`."""
    import re

    state_dict = {}
    for key, tensor in timm_state_dict.items():
        key = re.sub(r"layers\.(\d+)\.downsample", lambda match: f"layers.{int(match.group(1)) - 1}.downsample", key)
        state_dict[key.replace("head.fc.", "head.")] = tensor
        if key.endswith("attn.relative_position_bias_table"):
            state_dict[key.replace("relative_position_bias_table", "relative_position_index")] = torch.zeros(49, 49)
    state_dict["head.weight"] = torch.zeros(10, 128)
    state_dict["layers.0.blocks.1.attn_mask"] = torch.zeros(64, 49, 49)
    return state_dict


def test_swin_files_and_microsoft_layout_load_the_same_weights(tmp_path):
    timm_model = tiny_timm_swin(448)
    expected = tiny_backbone()
    load_pretrained_swin(expected, timm_model)
    timm_state = timm_model.state_dict()
    pth_path = tmp_path / "swin_microsoft.pth"
    torch.save({"model": to_microsoft_layout(timm_state)}, pth_path)
    safetensors_path = tmp_path / "swin_timm.safetensors"
    save_file({key: tensor.contiguous() for key, tensor in timm_state.items()}, safetensors_path)
    for path in (pth_path, str(safetensors_path)):
        backbone = tiny_backbone()
        report = load_pretrained_swin(backbone, path)
        assert report.is_complete, path
        for name, tensor in expected.state_dict().items():
            torch.testing.assert_close(backbone.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    assert "head.weight" in convert_swin_state_dict(load_swin_state_dict_file(pth_path), tiny_backbone())[1].dropped


def test_swin_flip_patch_embedding_channels():
    timm_model = tiny_timm_swin(448)
    backbone = tiny_backbone()
    load_pretrained_swin(backbone, timm_model, flip_patch_embedding_channels=True)
    # (embed_dim, 3, 4, 4): input channel 0 (blue for GLIP) gets the filter of RGB channel 2 (blue)
    torch.testing.assert_close(backbone.embeddings.projection.weight, timm_model.patch_embed.proj.weight.flip(1))


def test_swin_wrong_architecture_is_reported():
    backbone = tiny_backbone()
    window_12 = SwinTransformer(img_size=384, num_classes=0, **{**TINY_SWIN, "window_size": 12})
    with pytest.raises(
        ValueError, match=r"shape mismatches .*relative_position_bias_table.*\(529, 1\) vs ours \(169, 1\)"
    ):
        load_pretrained_swin(backbone, window_12)
    report = load_pretrained_swin(backbone, window_12, strict=False)
    assert len(report.shape_mismatches) == 8 and not report.missing and not report.unexpected
    with_position_embedding = dict(tiny_timm_swin(448).state_dict())
    with_position_embedding["absolute_pos_embed"] = torch.zeros(1, 3136, 16)
    with pytest.raises(ValueError, match="1 unmapped source keys"):
        load_pretrained_swin(backbone, with_position_embedding)
    shallower = SwinTransformer(img_size=448, num_classes=0, **{**TINY_SWIN, "depths": (2, 2, 1, 2)})
    with pytest.raises(ValueError, match="missing keys"):
        load_pretrained_swin(backbone, shallower)


@pytest.mark.parametrize(
    ("source", "error", "match"),
    [
        ("/no/such/swin.pth", ValueError, "does not exist"),
        ("swin_tiny_patch4_window7_224.safetensors", ValueError, "does not exist"),
        ("not_a_timm_model", ValueError, "neither a file nor a timm model"),
        (42, TypeError, "swin_weights"),
        ({"a": "not a tensor"}, ValueError, "state dict"),
    ],
)
def test_swin_bad_source_is_named(source, error, match):
    with pytest.raises(error, match=match):
        load_pretrained_swin(tiny_backbone(), source)


def test_swin_bad_target_and_file(tmp_path):
    with pytest.raises(TypeError, match="GLIPSwinBackbone"):
        load_pretrained_swin(torch.nn.Linear(2, 2), tiny_timm_swin(448))
    with pytest.raises(TypeError, match="flip_patch_embedding_channels"):
        load_pretrained_swin(tiny_backbone(), tiny_timm_swin(448), flip_patch_embedding_channels=1)
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="Could not read"):
        load_swin_state_dict_file(broken)


# ----------------------------------------------------------------------------------------------- BERT

TINY_BERT = {
    "vocab_size": 100,
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 512,
}


def tiny_grounding_model(**text_overrides) -> GLIPForGrounding:
    backbone_config = {"embed_dim": 8, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "window_size": 7}
    config = GLIPConfig(
        backbone_config=backbone_config,
        text_config={**TINY_BERT, **text_overrides},
        fpn_channels=16,
        num_head_blocks=1,
    )
    return GLIPForGrounding(config).eval()


def test_bert_loads_into_the_text_model(tmp_path):
    torch.manual_seed(1)
    pretrained = BertModel(BertConfig(**TINY_BERT))
    pretrained.save_pretrained(tmp_path / "bert")
    model = tiny_grounding_model()
    report = load_pretrained_text_model(model, tmp_path / "bert")
    assert report.is_complete
    text_state = model.model.text_model.state_dict()
    assert report.loaded and set(report.loaded) <= set(text_state)
    for name, tensor in pretrained.state_dict().items():
        if name.startswith("pooler."):
            continue
        torch.testing.assert_close(text_state[name], tensor, rtol=0, atol=0, msg=name)


def test_bert_mismatch_and_bad_input_are_named(tmp_path):
    BertModel(BertConfig(**{**TINY_BERT, "hidden_size": 16})).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match="hidden_size: checkpoint 16 vs model 32"):
        load_pretrained_text_model(tiny_grounding_model(), tmp_path / "bert")
    with pytest.raises(ValueError, match="Could not load a BERT"):
        load_pretrained_text_model(tiny_grounding_model(), tmp_path / "missing")
    with pytest.raises(TypeError, match="GLIPForGrounding or a GLIPModel"):
        load_pretrained_text_model(tiny_backbone(), tmp_path / "bert")
    with pytest.raises(TypeError, match="folder or a hub name"):
        load_pretrained_text_model(tiny_grounding_model(), 3)


def test_swin_loads_into_a_whole_grounding_model():
    model = tiny_grounding_model()
    timm_model = SwinTransformer(
        img_size=224, num_classes=0, embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), window_size=7
    )
    fpn_before = model.model.feature_pyramid.lateral_convs[0].weight.clone()
    report = load_pretrained_swin(model, timm_model)
    assert report.is_complete
    torch.testing.assert_close(
        model.model.backbone.stages[2].blocks[0].mlp.fc2.weight, timm_model.layers[2].blocks[0].mlp.fc2.weight
    )
    # nothing outside the backbone is touched
    torch.testing.assert_close(model.model.feature_pyramid.lateral_convs[0].weight, fpn_before, rtol=0, atol=0)
