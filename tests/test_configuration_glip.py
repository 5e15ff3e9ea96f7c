"""GLIPConfig: presets, validation, serialisation (offline)."""

import pytest

from transformers_glip import GLIPConfig


def test_default_is_glip_t():
    config = GLIPConfig()
    assert config.model_type == "glip"
    assert config.backbone_config.embed_dim == 96
    assert list(config.backbone_config.depths) == [2, 2, 6, 2]
    assert config.backbone_stage_channels == [96, 192, 384, 768]
    assert config.text_hidden_size == 768
    assert config.num_head_blocks == 6 and config.early_fusion and config.use_fused_text_for_dot_product
    assert config.layer_scale_init == pytest.approx(1 / 6)


def test_presets():
    tiny_a = GLIPConfig.glip_t_a()
    assert not tiny_a.early_fusion and not tiny_a.use_fused_text_for_dot_product
    large = GLIPConfig.glip_l()
    assert large.backbone_config.embed_dim == 192
    assert list(large.backbone_config.depths) == [2, 2, 18, 2]
    assert large.backbone_config.window_size == 12
    assert large.num_head_blocks == 8
    assert large.layer_scale_init == pytest.approx(1 / 8)


def test_round_trip(tmp_path):
    config = GLIPConfig.glip_l(nms_threshold=0.5, max_text_length=128)
    config.save_pretrained(tmp_path)
    reloaded = GLIPConfig.from_pretrained(tmp_path)
    assert reloaded.to_dict() == config.to_dict()
    assert list(reloaded.backbone_config.num_heads) == [6, 12, 24, 48]
    assert reloaded.text_config.hidden_size == 768


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fpn_channels": 40}, "head_group_norm_groups"),
        ({"fusion_hidden_size": 100, "fusion_num_heads": 8}, "fusion_num_heads"),
        ({"early_fusion": False}, "early_fusion"),
        ({"anchor_strides": [8, 16, 32, 64]}, "5 entries"),
        ({"anchor_strides": [4, 8, 16, 32, 64]}, "strides"),
        ({"prior_prob": 1.5}, "prior_prob"),
        ({"num_head_blocks": 0}, "num_head_blocks"),
        ({"max_text_length": 1024}, "max_position_embeddings"),
        ({"backbone_config": {"embed_dim": 10, "num_heads": [3, 6, 12, 24]}}, "divisible"),
        ({"backbone_config": {"depths": [2, 2, 6]}}, "4 stages"),
    ],
)
def test_validation_errors_name_the_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GLIPConfig(**kwargs)


def test_wrong_sub_config_type():
    with pytest.raises(TypeError, match="backbone_config"):
        GLIPConfig(backbone_config="swin_tiny")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nms_threshold": "high"}, "nms_threshold must be a finite number, got 'high'"),
        ({"prior_prob": float("nan")}, "prior_prob must be a finite number"),
        ({"num_head_blocks": 2.0}, "num_head_blocks must be an integer"),
        ({"max_detections": True}, "max_detections must be an integer"),
        ({"early_fusion": 1}, "early_fusion must be True or False"),
        ({"fusion_layer_scale_init": "0.1"}, "fusion_layer_scale_init must be a number or None"),
        ({"anchor_sizes": [64, 128, "256", 512, 1024]}, "anchor_sizes must be a list of numbers"),
        ({"box_coder_weights": [10, 10, 5, "5"]}, "box_coder_weights must be a list of numbers"),
        ({"pre_nms_score_threshold": 1.5}, "pre_nms_score_threshold must be in"),
        ({"fusion_dropout": 1.0}, "fusion_dropout must be in"),
        ({"atss_topk": 0}, "atss_topk must be >= 1"),
    ],
)
def test_wrong_field_types_and_ranges_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GLIPConfig(**kwargs)


def test_integer_values_are_accepted_for_float_fields(tmp_path):
    config = GLIPConfig(nms_threshold=1, box_coder_weights=[10, 10, 5, 5], focal_gamma=2)
    assert config.box_coder_weights == [10.0, 10.0, 5.0, 5.0]
    config.save_pretrained(tmp_path)
    assert GLIPConfig.from_pretrained(tmp_path).nms_threshold == 1


def test_invalid_value_in_a_saved_config_fails_on_load(tmp_path):
    GLIPConfig().save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    path.write_text(path.read_text().replace('"nms_threshold": 0.6', '"nms_threshold": "high"'))
    with pytest.raises(ValueError, match="nms_threshold"):
        GLIPConfig.from_pretrained(tmp_path)
