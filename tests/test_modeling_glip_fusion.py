"""The factorised fusion attention equals the official operation order; official mode is one config field away."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from transformers_glip import GLIPConfig, GLIPForGrounding, detect
from transformers_glip.modeling_glip_fusion import (
    ATTENTION_CLAMP_VALUE,
    FUSION_IMPLEMENTATIONS,
    GLIPBiMultiHeadAttention,
)
from transformers_glip.processing_glip import GLIPProcessor

REPOSITORY = Path(__file__).resolve().parents[1]


def small_config(**kwargs) -> GLIPConfig:
    """A fusion with vision width 32, text width 48, 4 heads of 16 (head width != vision width on purpose)."""
    config = GLIPConfig(fpn_channels=32, fusion_hidden_size=64, fusion_num_heads=4, head_group_norm_groups=8, **kwargs)
    config.text_config.hidden_size = 48
    return config


def random_attention(config: GLIPConfig, dtype: torch.dtype = torch.float64) -> GLIPBiMultiHeadAttention:
    """Every weight AND bias random (the model's init zeroes the biases, which would hide the bias terms)."""
    torch.manual_seed(0)
    attention = GLIPBiMultiHeadAttention(config).to(dtype).eval()
    with torch.no_grad():
        for parameter in attention.parameters():
            parameter.normal_(0.0, 0.3)
    return attention


def random_inputs(dtype: torch.dtype = torch.float64, vision_scale: float = 1.0):
    generator = torch.Generator().manual_seed(1)
    vision = torch.randn(2, 37, 32, generator=generator, dtype=dtype) * vision_scale  # (batch, positions, vision)
    text = torch.randn(2, 9, 48, generator=generator, dtype=dtype)  # (batch, seq_len, text)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 5:] = 0  # padded tokens in the second prompt
    return vision, text, mask


def run_both(attention, config, *inputs, output_attentions=True):
    results = {}
    for implementation in FUSION_IMPLEMENTATIONS:
        config.fusion_implementation = implementation
        results[implementation] = attention(*inputs, output_attentions=output_attentions)
    return results["factorised"], results["official"]


def assert_outputs_equal(factorised, official, atol):
    for name, actual, expected in zip(("vision_delta", "text_delta"), factorised[:2], official[:2]):
        torch.testing.assert_close(
            actual, expected, atol=atol, rtol=0, msg=lambda message, name=name: f"{name}: {message}"
        )
    for name, actual, expected in zip(("vision_to_text", "text_to_vision"), factorised[2], official[2]):
        assert actual.shape == expected.shape, name
        torch.testing.assert_close(
            actual, expected, atol=atol, rtol=0, msg=lambda message, name=name: f"{name}: {message}"
        )


def test_default_is_factorised_and_official_mode_round_trips(tmp_path):
    # The fast path is the default; official mode is one config value away and survives saving.
    assert GLIPConfig().fusion_implementation == "factorised"
    config = GLIPConfig(fusion_implementation="official")
    assert GLIPConfig.from_dict(config.to_dict()).fusion_implementation == "official"
    config.save_pretrained(tmp_path / "official")
    assert GLIPConfig.from_pretrained(tmp_path / "official").fusion_implementation == "official"
    # A folder saved without the field (every folder saved while "official" was the default, which
    # `save_pretrained` leaves out as a default value) loads with today's default.
    GLIPConfig().save_pretrained(tmp_path / "old")
    saved = json.loads((tmp_path / "old" / "config.json").read_text())
    saved.pop("fusion_implementation", None)
    (tmp_path / "old" / "config.json").write_text(json.dumps(saved))
    assert GLIPConfig.from_pretrained(tmp_path / "old").fusion_implementation == "factorised"


def test_returned_probabilities_retain_the_official_gradients():
    """`output_attentions=True`: the factorised path's probabilities are part of the graph (transformers'
    `test_retain_grad_hidden_states_attentions`), with the official path's values and gradients."""
    config = small_config()
    attention = random_attention(config)
    vision, text, mask = random_inputs()
    probabilities, gradients = {}, {}
    for implementation in FUSION_IMPLEMENTATIONS:
        config.fusion_implementation = implementation
        vision_delta, text_delta, (vision_to_text, text_to_vision) = attention(
            vision, text, mask, output_attentions=True
        )
        for tensor in (vision_to_text, text_to_vision):
            tensor.retain_grad()
        (vision_delta.square().sum() + text_delta.sin().sum()).backward()
        assert vision_to_text.grad is not None and text_to_vision.grad is not None, implementation
        probabilities[implementation] = (vision_to_text.detach(), text_to_vision.detach())
        gradients[implementation] = (vision_to_text.grad, text_to_vision.grad)
    for name, index in (("vision_to_text", 0), ("text_to_vision", 1)):
        for figures in (probabilities, gradients):
            torch.testing.assert_close(
                figures["factorised"][index], figures["official"][index], atol=1e-9, rtol=1e-9, msg=name
            )


def test_unknown_implementation_is_a_clear_error():
    with pytest.raises(ValueError, match="fusion_implementation must be 'factorised' or 'official'"):
        GLIPConfig(fusion_implementation="fast")


@pytest.mark.parametrize("use_mask", [True, False], ids=["padding_mask", "no_mask"])
def test_factorised_equals_official_in_float64(use_mask):
    """Algebraically the same computation: in float64 the two orders agree to rounding (1e-10)."""
    config = small_config()
    attention = random_attention(config)
    vision, text, mask = random_inputs()
    with torch.no_grad():
        factorised, official = run_both(attention, config, vision, text, mask if use_mask else None)
    assert_outputs_equal(factorised, official, atol=1e-10)


def test_factorised_equals_official_in_float32():
    config = small_config()
    attention = random_attention(config, torch.float32)
    vision, text, mask = random_inputs(torch.float32)
    with torch.no_grad():
        factorised, official = run_both(attention, config, vision, text, mask)
    assert_outputs_equal(factorised, official, atol=1e-5)


def test_clamps_are_kept_when_scores_overflow():
    """Scores far beyond +-50000: both clamps bite, and the factorised order clamps the same scores."""
    config = small_config()
    attention = random_attention(config)
    vision, text, mask = random_inputs(vision_scale=3e4)
    with torch.no_grad():
        query = attention.vision_proj(vision) * attention.scale  # (batch, positions, embed)
        key = attention.text_proj(text)  # (batch, seq_len, embed)
        head_dim = attention.head_dim
        raw_scores = torch.einsum("bnd,btd->bnt", query[..., :head_dim], key[..., :head_dim])  # first head
        assert raw_scores.abs().max() > 2 * ATTENTION_CLAMP_VALUE  # the clamp is exercised
        factorised, official = run_both(attention, config, vision, text, mask)
    assert_outputs_equal(factorised, official, atol=1e-8)


def test_gradients_match():
    config = small_config()
    attention = random_attention(config)
    gradients = {}
    for implementation in FUSION_IMPLEMENTATIONS:
        config.fusion_implementation = implementation
        vision, text, mask = random_inputs()
        vision.requires_grad_(True)
        text.requires_grad_(True)
        attention.zero_grad()
        vision_delta, text_delta, _ = attention(vision, text, mask)
        (vision_delta.square().sum() + text_delta.sin().sum()).backward()
        gradients[implementation] = [vision.grad, text.grad] + [p.grad.clone() for p in attention.parameters()]
    for actual, expected in zip(gradients["factorised"], gradients["official"]):
        torch.testing.assert_close(actual, expected, atol=1e-9, rtol=1e-9)


def test_dropped_probabilities_keep_the_value_bias_exact(monkeypatch):
    """With dropout the text->vision rows no longer sum to 1: the value bias is scaled by the kept mass.

    A deterministic, layout-independent stand-in for dropout (`p * (1 + p)`) makes the check exact."""
    config = small_config()
    attention = random_attention(config)
    attention.train()
    vision, text, mask = random_inputs()
    monkeypatch.setattr(
        torch.nn.functional, "dropout", lambda tensor, p=0.5, training=True, inplace=False: tensor * (1 + tensor)
    )
    with torch.no_grad():
        factorised, official = run_both(attention, config, vision, text, mask, output_attentions=False)
    assert_outputs_equal((*factorised[:2], ()), (*official[:2], ()), atol=1e-10)


def test_model_switches_with_its_config(converted_fixture):
    """A converted official fixture: logits within 1e-4 and the same detections in both modes."""
    model = GLIPForGrounding.from_pretrained(converted_fixture.model_dir).eval()
    processor = GLIPProcessor.from_pretrained(converted_fixture.model_dir)
    inputs = processor(images=converted_fixture.image, text=[converted_fixture.labels], return_tensors="pt")
    model_inputs = {key: inputs[key] for key in ("pixel_values", "input_ids", "attention_mask")}
    logits, detections = {}, {}
    for implementation in FUSION_IMPLEMENTATIONS:
        model.config.fusion_implementation = implementation
        with torch.no_grad():
            logits[implementation] = model(**model_inputs).logits
        detections[implementation] = detect(model, processor, converted_fixture.image, converted_fixture.labels)[0]
    difference = (logits["factorised"] - logits["official"]).abs().max()
    assert difference <= 1e-4, f"max |logit difference| {float(difference):.3e}"
    assert detections["factorised"]["labels"].tolist() == detections["official"]["labels"].tolist()
    torch.testing.assert_close(detections["factorised"]["scores"], detections["official"]["scores"], atol=1e-5, rtol=0)
    torch.testing.assert_close(detections["factorised"]["boxes"], detections["official"]["boxes"], atol=1e-3, rtol=0)


def test_latency_benchmark_quick_prints_its_json():
    completed = subprocess.run(
        [sys.executable, str(REPOSITORY / "benchmarks" / "benchmark_glip_latency.py"), "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert summary["same_detections"] is True
    assert summary["per_label_count"]["10"]["num_reference"] == 100
    for key in ("ratio_fast_to_grounding_dino", "ratio_fast_to_official_mode"):
        assert summary[key] > 0


def test_lvis_benchmark_quick_prints_its_json():
    completed = subprocess.run(
        [sys.executable, str(REPOSITORY / "benchmarks" / "benchmark_glip_lvis.py"), "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert summary["same_detections"] is True
    assert summary["num_reference"] == 300  # 3 chunks of the official top 100, concatenated
    assert summary["forwards"] == {"official_mode": 3, "fast_path": 1}
    assert summary["lvis_speedup"] > 0


@pytest.mark.parametrize("official_mode", [False, True], ids=["fast_path", "official_mode"])
def test_profile_script_splits_the_call_by_part(official_mode):
    command = [sys.executable, str(REPOSITORY / "benchmarks" / "profile_glip.py"), "--height", "64", "--width", "96"]
    command += ["--labels", "3", "--threads", "1", "--top", "400", "--json"]
    completed = subprocess.run(
        command + (["--official-mode"] if official_mode else []), capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    parts = dict(summary["parts_s"])
    deformable = parts.pop("head: DyConv: deformable convs")  # a part of DyConv, not a part of its own
    assert 0 < deformable <= parts["head: DyConv"]
    # The parts cover the call (the forward's anchors and box decoding are the only time outside them).
    assert 0.8 * summary["total_s"] <= sum(parts.values()) <= 1.01 * summary["total_s"]
    operators = {operator["name"] for operator in summary["operators"]}
    # The deformable convs run torchvision's kernel in official mode and the gathered formulation on the fast path.
    assert ("torchvision::deform_conv2d" in operators) is official_mode
    assert (
        "aten::embedding_bag" in operators or "aten::_embedding_bag_forward_only" in operators
    ) is not official_mode
