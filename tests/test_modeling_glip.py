"""Tests of the GLIP model (`transformers_glip/modeling_glip.py`, `modeling_glip_fusion.py`).

Parity against the official microsoft/GLIP outputs stored in `tests/fixtures/tiny_a*` (GLIP-T (C) and GLIP-T (A)
architectures shrunk to tiny sizes), plus model tests on tiny random configurations (ModelTester spirit, offline).
"""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torchvision.ops import deform_conv2d
from transformers import BertConfig

from transformers_glip import GLIPConfig, GLIPForGrounding, GLIPGroundingOutput, GLIPModel
from transformers_glip.conversion import (
    config_from_original_yaml,
    convert_state_dict,
    load_original_state_dict,
)
from transformers_glip.modeling_glip import GLIPHeadBlock, gather_deform_conv2d, reinterpret_offsets_for_output

torch.set_num_threads(2)

FIXTURES = Path(__file__).parent / "fixtures"
LEVELS = ["P3", "P4", "P5", "P6", "P7"]
# Fixture README, "Numerical tolerances observed": intermediate tensors atol/rtol 1e-4, logit tensors atol 5e-4
# (a different GEMM/attention kernel moves values by ~1e-6..1e-5 and logits are scaled by 1/exp(log_scale) ~ 12).
ATOL = 1e-4
RTOL = 1e-4
LOGIT_ATOL = 5e-4
LOSS_RTOL = 1e-5


# --------------------------------------------------------------------------------------------------- helpers
@cache
def reference_model(fixture: str) -> GLIPForGrounding:
    """`GLIPForGrounding` with the fixture's official weights, converted by the package's converter (eval mode)."""
    fixture_dir = FIXTURES / fixture
    text_config = BertConfig.from_pretrained(FIXTURES / "tiny_a" / "bert")
    config = config_from_original_yaml(fixture_dir / "config.yaml", text_config=text_config)
    model = GLIPForGrounding(config)
    expected_shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    state_dict = convert_state_dict(
        load_original_state_dict(fixture_dir / "checkpoint.pth"), config, expected_shapes=expected_shapes
    )
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


@cache
def reference_tensors(fixture: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(outputs, inputs) of the official run; both fixtures share tiny_a's inputs."""
    outputs = load_file(FIXTURES / fixture / "outputs.safetensors")
    inputs = load_file(FIXTURES / "tiny_a" / "inputs.safetensors")
    return outputs, inputs


@cache
def reference_forward(fixture: str) -> GLIPGroundingOutput:
    """Our model on the fixture's image tensor and 256-token prompt, with every intermediate tensor."""
    model = reference_model(fixture)
    _, inputs = reference_tensors(fixture)
    with torch.no_grad():
        return model(
            inputs["images.tensors"],
            inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            image_sizes=inputs["images.image_sizes_hw"],
            output_hidden_states=True,
        )


def split_levels(flat: torch.Tensor, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
    """`(batch, num_anchors, channels)` -> per level `(batch, channels, height, width)` (anchors row-major)."""
    levels = torch.split(flat, [height * width for height, width in sizes], dim=1)
    return [
        level.reshape(level.shape[0], height, width, -1).permute(0, 3, 1, 2)  # (batch, channels, height, width)
        for level, (height, width) in zip(levels, sizes)
    ]


def check_close(actual: torch.Tensor, expected: torch.Tensor, name: str, atol: float = ATOL, rtol: float = RTOL):
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, msg=lambda message: f"{name}: {message}")


def check_head_tensors(head_outputs, reference: dict[str, torch.Tensor], early_fusion: bool) -> None:
    """Compare every `dyhead.layer{i}.*` and `head.*` tensor of the official run."""
    sizes = [tuple(reference[f"fpn.{level}"].shape[-2:]) for level in LEVELS]
    for block_index, dyconv_levels in enumerate(head_outputs.dyconv_hidden_states):
        prefix = f"dyhead.layer{block_index}"
        if early_fusion:
            for level, fused in zip(LEVELS, head_outputs.fusion_vision_hidden_states[block_index]):
                check_close(fused, reference[f"{prefix}.fuse.visual.{level}"], f"{prefix}.fuse.visual.{level}")
            check_close(
                head_outputs.fusion_text_hidden_states[block_index],
                reference[f"{prefix}.fuse.lang_hidden"],
                f"{prefix}.fuse.lang_hidden",
            )
            check_close(
                head_outputs.head_text_hidden_states[block_index],
                reference[f"{prefix}.lang_bert.lang_hidden"],
                f"{prefix}.lang_bert.lang_hidden",
            )
        else:
            assert head_outputs.fusion_vision_hidden_states[block_index] is None
            assert head_outputs.head_text_hidden_states[block_index] is None
        for level, output in zip(LEVELS, dyconv_levels):
            check_close(output, reference[f"{prefix}.dyconv.visual.{level}"], f"{prefix}.dyconv.visual.{level}")

    box_levels = split_levels(head_outputs.box_regression, sizes)
    centerness_levels = split_levels(head_outputs.centerness.unsqueeze(-1), sizes)
    logit_levels = torch.split(head_outputs.logits, [height * width for height, width in sizes], dim=1)
    for level, box, centerness, logits in zip(LEVELS, box_levels, centerness_levels, logit_levels):
        check_close(box, reference[f"head.box_regression.{level}"], f"head.box_regression.{level}")
        check_close(centerness, reference[f"head.centerness.{level}"], f"head.centerness.{level}")
        check_close(
            logits, reference[f"head.dot_product_logits.{level}"], f"head.dot_product_logits.{level}", atol=LOGIT_ATOL
        )
    check_close(head_outputs.projected_text_features, reference["head.dot_product_proj_tokens"], "proj_tokens")


def tiny_random_config(**overrides) -> GLIPConfig:
    """A tiny GLIP-T-like model (2 head blocks with fusion) with every stochastic op off."""
    text_overrides = overrides.pop("text", {})
    text_config = {
        "vocab_size": 100,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "max_position_embeddings": 64,
        **text_overrides,
    }
    settings = {
        "backbone_config": {
            "embed_dim": 16,
            "depths": [1, 1, 2, 1],
            "num_heads": [1, 2, 2, 4],
            "window_size": 7,
            "drop_path_rate": 0.0,
        },
        "text_config": text_config,
        "fpn_channels": 32,
        "num_head_blocks": 2,
        "fusion_hidden_size": 64,
        "fusion_num_heads": 4,
        "fusion_dropout": 0.0,
        "fpn_drop_block_prob": 0.0,
        "max_text_length": 64,
    }
    settings.update(overrides)
    return GLIPConfig(**settings)


def tiny_inputs(batch_size: int = 2, sequence_length: int = 12, height: int = 96, width: int = 128, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(batch_size, 3, height, width, generator=generator)
    input_ids = torch.randint(1, 100, (batch_size, sequence_length), generator=generator)
    attention_mask = torch.ones(batch_size, sequence_length, dtype=torch.long)
    attention_mask[1:, sequence_length - 4 :] = 0
    input_ids[attention_mask == 0] = 0
    return pixel_values, input_ids, attention_mask


def tiny_labels(sequence_length: int = 12) -> list[dict[str, torch.Tensor]]:
    """Two images: two boxes on the first, one on the second; phrases on tokens 1-2, 4 and 1."""
    first_map = torch.zeros(2, sequence_length)
    first_map[0, 1:3] = 1.0
    first_map[1, 4] = 1.0
    second_map = torch.zeros(1, sequence_length)
    second_map[0, 1] = 1.0
    return [
        {"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0], [50.0, 20.0, 120.0, 90.0]]), "positive_map": first_map},
        {"boxes": torch.tensor([[30.0, 5.0, 100.0, 80.0]]), "positive_map": second_map},
    ]


def tiny_model(seed: int = 0, **overrides) -> GLIPForGrounding:
    torch.manual_seed(seed)
    model = GLIPForGrounding(tiny_random_config(**overrides))
    # Non-trivial values for the parameters that start constant (layer scale, GroupNorm, Scale, biases).
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.numel() > 0 and torch.all(parameter == parameter.flatten()[0]) and "text_model" not in name:
                parameter.add_(0.1 * torch.randn_like(parameter))
    return model


# --------------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("fixture", ["tiny_a", "tiny_a_variant_a"])
def test_head_parity_with_official_outputs(fixture):
    """The head alone, fed with the official FPN levels and BERT outputs, reproduces every head tensor."""
    model = reference_model(fixture)
    reference, inputs = reference_tensors(fixture)
    with torch.no_grad():
        head_outputs = model.model.head(
            [reference[f"fpn.{level}"] for level in LEVELS],
            reference["lang.hidden"],
            reference["lang.embedded"],
            inputs["attention_mask"],
            output_hidden_states=True,
        )
    check_head_tensors(head_outputs, reference, early_fusion=model.config.early_fusion)
    text_features = (
        head_outputs.head_text_hidden_states[-1] if model.config.early_fusion else reference["lang.embedded"]
    )
    check_close(
        F.normalize(text_features, p=2, dim=-1) / 2.0,
        reference["head.dot_product_projection_text.input"],
        "head.dot_product_projection_text.input",
    )


@pytest.mark.parametrize("fixture", ["tiny_a", "tiny_a_variant_a"])
def test_full_model_parity_with_official_outputs(fixture):
    """Image tensor + token ids -> every recorded stage of the official model, anchors included."""
    model = reference_model(fixture)
    reference, inputs = reference_tensors(fixture)
    outputs = reference_forward(fixture)
    assert isinstance(outputs, GLIPGroundingOutput)
    for stage, tensor in zip(["stage3", "stage4", "stage5"], outputs.backbone_hidden_states):
        check_close(tensor, reference[f"swin.{stage}"], f"swin.{stage}")
    for level, tensor in zip(LEVELS, outputs.feature_pyramid_hidden_states):
        check_close(tensor, reference[f"fpn.{level}"], f"fpn.{level}")
    bert_names = ["lang.bert.embeddings_output", "lang.bert.layer0", "lang.bert.layer1"]
    assert len(outputs.text_hidden_states) == len(bert_names)
    for name, tensor in zip(bert_names, outputs.text_hidden_states):
        check_close(tensor, reference[name], name)
    check_close(outputs.text_last_hidden_state, reference["lang.hidden"], "lang.hidden")
    check_head_tensors(outputs, reference, early_fusion=model.config.early_fusion)

    expected_anchors = torch.cat([reference[f"anchors.{level}"] for level in LEVELS])
    torch.testing.assert_close(outputs.anchors, expected_anchors, atol=0, rtol=0)
    assert outputs.num_anchors_per_level == [len(reference[f"anchors.{level}"]) for level in LEVELS]
    assert torch.equal(outputs.input_ids, inputs["input_ids"])
    assert torch.equal(outputs.image_sizes, inputs["images.image_sizes_hw"])
    assert outputs.loss is None and outputs.loss_dict is None


@pytest.mark.parametrize("fixture", ["tiny_a", "tiny_a_variant_a"])
def test_training_losses_match_official(fixture):
    """The loss through `GLIPForGrounding(labels=...)` equals the official train-mode losses (`losses.json`)."""
    model = reference_model(fixture)
    _, inputs = reference_tensors(fixture)
    expected = json.loads((FIXTURES / fixture / "losses.json").read_text())["losses"]
    labels = [{"boxes": inputs["train.gt_boxes_xyxy"], "positive_map": inputs["train.positive_map"]}]
    with torch.no_grad():
        outputs = model(inputs["images.tensors"], inputs["input_ids"], inputs["attention_mask"], labels=labels)
    for name in ("loss_reg", "loss_centerness", "loss_dot_product_token"):
        assert outputs.loss_dict[name].item() == pytest.approx(expected[name], rel=LOSS_RTOL), name
    assert outputs.loss.item() == pytest.approx(sum(expected.values()), rel=LOSS_RTOL)


def test_pred_boxes_decode_box_regression():
    outputs = reference_forward("tiny_a")
    anchors = outputs.anchors
    deltas = outputs.box_regression[0]
    widths = anchors[:, 2] - anchors[:, 0] + 1
    centers = (anchors[:, 2] + anchors[:, 0]) / 2
    expected_x1 = deltas[:, 0] / 10 * widths + centers - 0.5 * (torch.exp(deltas[:, 2] / 5) * widths - 1)
    torch.testing.assert_close(outputs.pred_boxes[0, :, 0], expected_x1)


def test_text_padding_does_not_change_real_token_outputs():
    """Padding the prompt to 64 or 256 tokens gives the same logits on the real tokens, boxes and centerness."""
    model = reference_model("tiny_a")
    _, inputs = reference_tensors("tiny_a")
    num_real_tokens = int(inputs["attention_mask"].sum())
    padded_256 = reference_forward("tiny_a")
    with torch.no_grad():
        padded_64 = model(inputs["images.tensors"], inputs["input_ids"][:, :64], inputs["attention_mask"][:, :64])
        unpadded = model(
            inputs["images.tensors"],
            inputs["input_ids"][:, :num_real_tokens],
            inputs["attention_mask"][:, :num_real_tokens],
        )
    assert padded_64.logits.shape[-1] == 64 and unpadded.logits.shape[-1] == num_real_tokens
    for other in (padded_64, unpadded):
        check_close(
            other.logits[..., :num_real_tokens],
            padded_256.logits[..., :num_real_tokens],
            "real-token logits",
            atol=LOGIT_ATOL,
        )
        check_close(other.box_regression, padded_256.box_regression, "box_regression")
        check_close(other.centerness, padded_256.centerness, "centerness")


# --------------------------------------------------------------------------------------------------- building blocks
def test_reinterpret_offsets_reads_a_flat_prefix():
    offset = torch.arange(2 * 18 * 4 * 6, dtype=torch.float32).reshape(2, 18, 4, 6)
    mask = torch.arange(2 * 9 * 4 * 6, dtype=torch.float32).reshape(2, 9, 4, 6)
    new_offset, new_mask = reinterpret_offsets_for_output(offset, mask, 2, 3)
    assert new_offset.shape == (2, 18, 2, 3) and new_mask.shape == (2, 9, 2, 3)
    for image in range(2):
        assert torch.equal(new_offset[image].reshape(-1), offset[image].reshape(-1)[: 18 * 6])
        assert torch.equal(new_mask[image].reshape(-1), mask[image].reshape(-1)[: 9 * 6])
    same_offset, same_mask = reinterpret_offsets_for_output(offset, mask, 4, 6)
    assert same_offset is offset and same_mask is mask
    with pytest.raises(ValueError):
        reinterpret_offsets_for_output(offset, mask, 5, 6)


def test_variant_a_builds_and_runs():
    model = tiny_model(early_fusion=False, use_fused_text_for_dot_product=False).eval()
    for block in model.model.head.blocks:
        assert block.fusion is None and block.text_layer is None
    names = [name for name, _ in model.named_parameters()]
    assert not any(".fusion." in name or ".text_layer." in name for name in names)
    assert "model.head.blocks.1.dyconv.convs.2.conv.weight" in names
    pixel_values, input_ids, attention_mask = tiny_inputs()
    with torch.no_grad():
        outputs = model(pixel_values, input_ids, attention_mask, output_hidden_states=True)
    assert outputs.logits.shape == (2, sum(outputs.num_anchors_per_level), 12)
    assert all(state is None for state in outputs.fusion_vision_hidden_states)
    # Without fusion the visual path does not depend on the prompt.
    with torch.no_grad():
        other_prompt = model(pixel_values, (input_ids + 7) % 100, attention_mask)
    torch.testing.assert_close(other_prompt.box_regression, outputs.box_regression, atol=0, rtol=0)
    # Padded token columns use the zeroed `embedded` text: all equal to bias0 + bias(projection) terms.
    padded_logits = outputs.logits[1, :, 8:]
    torch.testing.assert_close(padded_logits, padded_logits[:, :1].expand_as(padded_logits))


@pytest.mark.parametrize("offset_scale", [3.0, 0.0], ids=["random_offsets", "zero_offsets"])
@pytest.mark.parametrize("stride, batch_size", [(1, 1), (2, 1), (1, 2), (2, 3)])
def test_gathered_deformable_conv_equals_torchvision(stride, batch_size, offset_scale):
    """The fast path's `gather_deform_conv2d` is torchvision's modulated deformable conv: offsets of up to +-6 px put
    sampling points outside the map and on its borders (zero padding), on maps that are not square; zero offsets
    (the official zero-initialised offset branch at the start of training) put every point on integer pixels and
    on the padding border `-1`, where the bilinear surface has kinks. In float64 the outputs and every gradient
    agree to rounding (torchvision's one-sided derivatives included); in float32 to the product's summation order."""
    generator = torch.Generator().manual_seed(stride * 10 + batch_size)
    height, width = 9, 13
    output_height, output_width = (height - 1) // stride + 1, (width - 1) // stride + 1

    def random(*shape, scale=1.0):
        return torch.randn(*shape, generator=generator, dtype=torch.float64) * scale

    inputs = {
        "hidden_states": random(batch_size, 6, height, width),
        "offset": random(batch_size, 18, output_height, output_width, scale=offset_scale),
        "mask": torch.rand(batch_size, 9, output_height, output_width, generator=generator, dtype=torch.float64),
        "weight": random(5, 6, 3, 3),
        "bias": random(5),
    }
    if offset_scale:
        inputs["offset"][..., 0, 0] = torch.tensor([-1.0, 1.0] * 9)  # points exactly on the border rows/columns
    for tensor in inputs.values():
        tensor.requires_grad_(True)
    expected = deform_conv2d(
        inputs["hidden_states"], inputs["offset"], inputs["weight"], inputs["bias"], stride=stride, padding=1,
        mask=inputs["mask"],
    )  # fmt: skip
    actual = gather_deform_conv2d(**inputs, stride=stride, padding=1)
    torch.testing.assert_close(actual, expected, atol=1e-12, rtol=0)
    outer = random(*expected.shape)
    expected_gradients = torch.autograd.grad((expected * outer).sum(), list(inputs.values()))
    actual_gradients = torch.autograd.grad((actual * outer).sum(), list(inputs.values()))
    for name, actual_gradient, expected_gradient in zip(inputs, actual_gradients, expected_gradients):
        torch.testing.assert_close(actual_gradient, expected_gradient, atol=1e-10, rtol=0, msg=name)
    with torch.no_grad():
        single = {name: tensor.float() for name, tensor in inputs.items()}
        expected = deform_conv2d(
            single["hidden_states"], single["offset"], single["weight"], single["bias"], stride=stride, padding=1,
            mask=single["mask"],
        )  # fmt: skip
        actual = gather_deform_conv2d(**single, stride=stride, padding=1)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)  # float32: 54-term sums in another order


def test_model_switches_its_deformable_conv_with_its_config():
    """`deformable_conv_implementation` is read at every call: the same model gives torchvision's and the gathered
    implementation's outputs, equal to float32 rounding; an unknown value is refused."""
    model = tiny_model().eval()
    assert model.config.deformable_conv_implementation == "gather"
    pixel_values, input_ids, attention_mask = tiny_inputs()
    outputs = {}
    with torch.no_grad():
        for implementation in ("gather", "torchvision"):
            model.config.deformable_conv_implementation = implementation
            outputs[implementation] = model(pixel_values, input_ids, attention_mask)
    assert not torch.equal(outputs["gather"].logits, outputs["torchvision"].logits)  # two computations ran
    torch.testing.assert_close(outputs["gather"].logits, outputs["torchvision"].logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        outputs["gather"].box_regression, outputs["torchvision"].box_regression, atol=1e-4, rtol=1e-4
    )
    with pytest.raises(ValueError, match="deformable_conv_implementation must be 'gather' or 'torchvision'"):
        GLIPConfig(deformable_conv_implementation="cuda")


def test_plain_conv_head_equals_deformable_head_with_zero_offsets():
    """`head_use_deformable_conv=False` (official `USE_DFCONV: False`) uses plain 3x3 convs and no offset branch. A
    deformable conv whose offsets are 0 and whose modulation mask is 1 samples exactly the plain conv's taps, so the
    two models agree once the deformable one's offset branch is set to give offset 0 and mask sigmoid(40) == 1.0."""
    for block in GLIPForGrounding(tiny_random_config(head_use_deformable_conv=False)).model.head.blocks:
        assert block.dyconv.offset_conv is None
        for conv_norm in block.dyconv.convs:  # official DyConv.init_weights: normal(0, 0.01), zero bias
            assert type(conv_norm.conv) is torch.nn.Conv2d
            assert torch.all(conv_norm.conv.bias == 0) and 0.008 < conv_norm.conv.weight.std() < 0.012
    deformable = tiny_model().eval()
    plain = tiny_model(head_use_deformable_conv=False).eval()
    state = {key: value for key, value in deformable.state_dict().items() if ".offset_conv." not in key}
    assert state.keys() == plain.state_dict().keys()
    plain.load_state_dict(state)
    with torch.no_grad():
        for block in deformable.model.head.blocks:
            block.dyconv.offset_conv.weight.zero_()
            block.dyconv.offset_conv.bias.zero_()
            block.dyconv.offset_conv.bias[18:] = 40.0  # mask logits: sigmoid(40) rounds to 1.0 in float32
        pixel_values, input_ids, attention_mask = tiny_inputs()
        expected = deformable(pixel_values, input_ids, attention_mask)
        actual = plain(pixel_values, input_ids, attention_mask)
    # Same taps and weights, different summation order (im2col + mm against mkldnn conv): float32 rounding only.
    torch.testing.assert_close(actual.logits, expected.logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(actual.box_regression, expected.box_regression, atol=1e-4, rtol=1e-4)


def test_fusion_without_fused_text_for_the_dot_product():
    """EARLY_FUSE_ON with USE_FUSED_FEATURES_DOT_PRODUCT off: no text layer in the last block, `embedded` text."""
    model = tiny_model(use_fused_text_for_dot_product=False).eval()
    assert model.model.head.blocks[0].text_layer is not None and model.model.head.blocks[-1].text_layer is None
    pixel_values, input_ids, attention_mask = tiny_inputs()
    with torch.no_grad():
        outputs = model(pixel_values, input_ids, attention_mask, output_hidden_states=True)
    assert outputs.head_text_hidden_states[-1] is None and outputs.fusion_text_hidden_states[-1] is not None
    padded_logits = outputs.logits[1, :, 8:]
    torch.testing.assert_close(padded_logits, padded_logits[:, :1].expand_as(padded_logits))


def test_parameter_tree_follows_team_notes():
    model = tiny_model()
    names = {name for name, _ in model.named_parameters()}
    expected = {
        "model.head.blocks.0.fusion.vision_layer_norm.weight",
        "model.head.blocks.0.fusion.text_layer_norm.bias",
        "model.head.blocks.0.fusion.attention.vision_proj.weight",
        "model.head.blocks.0.fusion.attention.text_proj.weight",
        "model.head.blocks.0.fusion.attention.values_vision_proj.weight",
        "model.head.blocks.0.fusion.attention.values_text_proj.weight",
        "model.head.blocks.0.fusion.attention.out_vision_proj.weight",
        "model.head.blocks.0.fusion.attention.out_text_proj.weight",
        "model.head.blocks.0.fusion.vision_gamma",
        "model.head.blocks.0.fusion.text_gamma",
        "model.head.blocks.1.text_layer.attention.self.query.weight",
        "model.head.blocks.1.text_layer.attention.output.LayerNorm.weight",
        "model.head.blocks.1.text_layer.intermediate.dense.weight",
        "model.head.blocks.1.text_layer.output.dense.weight",
        "model.head.blocks.1.text_layer.output.LayerNorm.bias",
        "model.head.blocks.0.dyconv.convs.0.conv.weight",
        "model.head.blocks.0.dyconv.convs.0.conv.bias",
        "model.head.blocks.0.dyconv.convs.1.norm.weight",
        "model.head.blocks.0.dyconv.scale_attention.weight",
        "model.head.blocks.0.dyconv.dynamic_relu.fc1.weight",
        "model.head.blocks.0.dyconv.dynamic_relu.fc2.bias",
        "model.head.blocks.0.dyconv.offset_conv.weight",
        "model.head.bbox_pred.weight",
        "model.head.centerness.bias",
        "model.head.scales.4.scale",
        "model.head.token_projection.weight",
        "model.head.log_scale",
        "model.head.bias_lang",
        "model.head.bias0",
        "model.text_model.embeddings.word_embeddings.weight",
    }
    assert expected <= names, sorted(expected - names)
    assert not any("pooler" in name for name in names)
    assert model.model.head.scales[0].scale.shape == (1,)


def test_initialization():
    config = tiny_random_config(prior_prob=0.02, log_scale_init=0.5)
    torch.manual_seed(0)
    model = GLIPForGrounding(config)
    head = model.model.head
    assert head.bias0.item() == pytest.approx(-math.log(0.98 / 0.02))
    assert head.log_scale.item() == pytest.approx(0.5)
    assert torch.all(head.bias_lang == 0)
    assert torch.all(head.blocks[0].fusion.vision_gamma == config.layer_scale_init)
    assert torch.all(head.blocks[1].dyconv.convs[0].conv.bias == 0)
    assert torch.all(head.bbox_pred.bias == 0) and head.bbox_pred.weight.std() < 0.05
    assert torch.all(head.blocks[0].fusion.attention.vision_proj.bias == 0)
    # SDPA by default for the Swin and BERT attentions (`_supports_sdpa`); the fusion and head text layers are eager.
    assert model.config._attn_implementation == "sdpa"
    assert model.model.text_model.config._attn_implementation == "sdpa"


# --------------------------------------------------------------------------------------------------- model tests
def test_forward_shapes_and_output_contract():
    model = tiny_model().eval()
    pixel_values, input_ids, attention_mask = tiny_inputs()
    with torch.no_grad():
        outputs = model(pixel_values, input_ids, attention_mask)
    # 96 x 128 input: P3..P7 = 12x16, 6x8, 3x4, 2x2, 1x1.
    assert outputs.num_anchors_per_level == [192, 48, 12, 4, 1]
    num_anchors = 257
    assert outputs.logits.shape == (2, num_anchors, 12)
    assert outputs.pred_boxes.shape == (2, num_anchors, 4)
    assert outputs.box_regression.shape == (2, num_anchors, 4)
    assert outputs.centerness.shape == (2, num_anchors)
    assert outputs.anchors.shape == (num_anchors, 4)
    assert torch.equal(outputs.text_attention_mask, attention_mask)
    assert outputs.backbone_hidden_states is None and outputs.loss is None
    assert torch.isfinite(outputs.logits).all() and torch.isfinite(outputs.pred_boxes).all()
    as_tuple = model(pixel_values, input_ids, attention_mask, return_dict=False)
    assert isinstance(as_tuple, tuple)

    base_model = GLIPModel(model.config).eval()
    base_model.load_state_dict(model.model.state_dict())
    with torch.no_grad():
        base_outputs = base_model(pixel_values, input_ids, attention_mask)
    torch.testing.assert_close(base_outputs.logits, outputs.logits, atol=0, rtol=0)


def test_batched_equals_single():
    model = tiny_model().eval()
    pixel_values, input_ids, attention_mask = tiny_inputs()
    with torch.no_grad():
        batched = model(pixel_values, input_ids, attention_mask)
        for index in range(2):
            length = int(attention_mask[index].sum())
            single = model(
                pixel_values[index : index + 1],
                input_ids[index : index + 1, :length],
                attention_mask[index : index + 1, :length],
            )
            check_close(single.logits, batched.logits[index : index + 1, :, :length], "logits", atol=LOGIT_ATOL)
            check_close(single.pred_boxes, batched.pred_boxes[index : index + 1], "pred_boxes", atol=1e-3)
            check_close(single.centerness, batched.centerness[index : index + 1], "centerness")


def test_save_and_load_round_trip(tmp_path):
    model = tiny_model().eval()
    pixel_values, input_ids, attention_mask = tiny_inputs()
    with torch.no_grad():
        expected = model(pixel_values, input_ids, attention_mask)
    model.save_pretrained(tmp_path)
    reloaded = GLIPForGrounding.from_pretrained(tmp_path).eval()
    assert reloaded.model.text_model.config._attn_implementation == "sdpa"
    with torch.no_grad():
        actual = reloaded(pixel_values, input_ids, attention_mask)
    for name in ("logits", "pred_boxes", "box_regression", "centerness"):
        torch.testing.assert_close(getattr(actual, name), getattr(expected, name), atol=0, rtol=0)


def test_bfloat16_forward_on_cpu():
    model = tiny_model().eval()
    pixel_values, input_ids, attention_mask = tiny_inputs()
    with torch.no_grad():
        reference = model(pixel_values, input_ids, attention_mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast_outputs = model(pixel_values, input_ids, attention_mask)
        model.to(torch.bfloat16)
        bf16_outputs = model(pixel_values.to(torch.bfloat16), input_ids, attention_mask)
    assert bf16_outputs.logits.dtype == torch.bfloat16
    for outputs in (autocast_outputs, bf16_outputs):
        assert torch.isfinite(outputs.logits).all() and torch.isfinite(outputs.pred_boxes).all()
        torch.testing.assert_close(outputs.centerness.float(), reference.centerness, atol=0.1, rtol=0.05)
        torch.testing.assert_close(outputs.logits.float(), reference.logits, atol=0.5, rtol=0.05)


def _loss_and_gradients(model: GLIPForGrounding, inputs, labels):
    model.zero_grad(set_to_none=True)
    outputs = model(*inputs, labels=labels)
    outputs.loss.backward()
    gradients = {
        name: parameter.grad.clone() for name, parameter in model.named_parameters() if parameter.grad is not None
    }
    return outputs, gradients


@pytest.mark.parametrize("deformable_conv", ["gather", "torchvision"])
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("use_reentrant", [False, True])
def test_gradient_checkpointing_gives_identical_outputs_and_gradients(use_reentrant, attention, deformable_conv):
    model = tiny_model(deformable_conv_implementation=deformable_conv).train()
    model.set_attn_implementation(attention)
    # Eager attention with torchvision's deformable conv is bit-exact under checkpointing. CPU SDPA picks another
    # kernel when gradients are off, which is how the reentrant checkpoint runs the first forward, and the gathered
    # deformable conv's first forward differs from a normal one by rounding too (measured: 2.4e-6 on the logits,
    # 0 on the loss): outputs may move by an ulp there.
    exact = attention == "eager" and deformable_conv == "torchvision"
    loss_tolerance = 0.0 if exact or not use_reentrant else 1e-6
    inputs = tiny_inputs()
    labels = tiny_labels()
    expected_outputs, expected_gradients = _loss_and_gradients(model, inputs, labels)

    model.activation_checkpointing_enable({"use_reentrant": use_reentrant})
    checkpointed_calls = []

    def counting_wrapper(original, name):
        def counting(function, *args, **kwargs):
            checkpointed_calls.append(name)
            return original(function, *args, **kwargs)

        return counting

    for module in model.modules():
        if getattr(module, "gradient_checkpointing", False) and hasattr(module, "_gradient_checkpointing_func"):
            module._gradient_checkpointing_func = counting_wrapper(
                module._gradient_checkpointing_func, type(module).__name__
            )
    actual_outputs, actual_gradients = _loss_and_gradients(model, inputs, labels)

    assert checkpointed_calls.count("GLIPHeadBlock") == 2
    assert checkpointed_calls.count("GLIPSwinBlock") == 5
    torch.testing.assert_close(actual_outputs.loss, expected_outputs.loss, atol=0, rtol=loss_tolerance)
    torch.testing.assert_close(
        actual_outputs.logits, expected_outputs.logits, atol=loss_tolerance, rtol=loss_tolerance
    )
    assert actual_gradients.keys() == expected_gradients.keys()
    for name, gradient in expected_gradients.items():
        torch.testing.assert_close(
            actual_gradients[name],
            gradient,
            # The recomputed blocks start from the first forward's rounding: measured up to 1.5e-5 (a DyConv bias)
            # with the gathered deformable conv, so 50x the output tolerance where the first forward is inexact.
            atol=1e-7 + 50 * loss_tolerance,
            rtol=1e-6 + 50 * loss_tolerance,
            msg=name,
        )


def test_every_parameter_receives_a_gradient():
    model = tiny_model().train()
    with torch.no_grad():
        # Keep the scale-attention gates relu(conv(avgpool(x))) open: a closed ReLU legitimately has zero gradient.
        for block in model.model.head.blocks:
            block.dyconv.scale_attention.bias.fill_(1.0)
    inputs, labels = tiny_inputs(), tiny_labels()
    outputs, gradients = _loss_and_gradients(model, inputs, labels)
    assert set(outputs.loss_dict) >= {"loss_reg", "loss_centerness", "loss_dot_product_token"}
    assert torch.isfinite(outputs.loss)

    trainable = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
    assert [name for name in trainable if name not in gradients] == []
    assert all(torch.isfinite(gradient).all() for gradient in gradients.values())
    # A level's box scale only acts through the regression loss of its positive anchors.
    targets = model.criterion.prepare_targets(
        outputs.anchors, outputs.num_anchors_per_level, labels, outputs.logits.shape[-1]
    )
    is_positive = targets.matched_box_indices >= 0  # (batch, num_anchors)
    positive_levels = [bool(level.any()) for level in torch.split(is_positive, outputs.num_anchors_per_level, dim=1)]
    assert positive_levels[0]
    allowed_zero = {
        f"model.head.scales.{level}.scale" for level, positive in enumerate(positive_levels) if not positive
    }
    zero_gradient = {name for name in trainable if not torch.any(gradients[name] != 0)}
    assert zero_gradient <= allowed_zero, sorted(zero_gradient - allowed_zero)


def test_same_output_type_in_train_and_eval():
    model = tiny_model()
    inputs = tiny_inputs()
    model.train()
    train_outputs = model(*inputs, labels=tiny_labels())
    model.eval()
    with torch.no_grad():
        eval_outputs = model(*inputs, labels=tiny_labels())
    assert type(train_outputs) is type(eval_outputs) is GLIPGroundingOutput
    assert eval_outputs.loss is not None
    torch.testing.assert_close(eval_outputs.loss, train_outputs.loss.detach(), atol=1e-6, rtol=1e-6)


def test_head_blocks_are_checkpointable_layers():
    model = tiny_model()
    assert all(isinstance(block, GLIPHeadBlock) for block in model.model.head.blocks)
    assert model.supports_gradient_checkpointing


# --------------------------------------------------------------------------------------------------- conventions
def test_eager_and_sdpa_attention_give_the_same_outputs():
    """`attn_implementation` "sdpa" (default) and "eager" agree on the official fixture (float rounding only)."""
    model = reference_model("tiny_a")
    _, inputs = reference_tensors("tiny_a")
    arguments = (inputs["images.tensors"], inputs["input_ids"])
    try:
        with torch.no_grad():
            model.set_attn_implementation("sdpa")
            sdpa = model(*arguments, attention_mask=inputs["attention_mask"])
            model.set_attn_implementation("eager")
            assert model.model.backbone.stages[0].blocks[0].attention.config._attn_implementation == "eager"
            eager = model(*arguments, attention_mask=inputs["attention_mask"])
    finally:
        model.set_attn_implementation("sdpa")
    check_close(sdpa.logits, eager.logits, "logits", atol=1e-4, rtol=0)
    check_close(sdpa.box_regression, eager.box_regression, "box_regression", atol=1e-5, rtol=0)


def test_return_dict_false_gives_tuples():
    model = tiny_model().eval()
    pixel_values, input_ids, attention_mask = tiny_inputs()
    with torch.no_grad():
        expected = model(pixel_values, input_ids, attention_mask)
        as_tuple = model(pixel_values, input_ids, attention_mask, return_dict=False)
        model.config.return_dict = False
        from_config = model(pixel_values, input_ids, attention_mask)
        base_tuple = model.model(pixel_values, input_ids, attention_mask)
    assert isinstance(as_tuple, tuple) and isinstance(from_config, tuple) and isinstance(base_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], expected.logits)
    torch.testing.assert_close(from_config[1], expected.pred_boxes)
    torch.testing.assert_close(base_tuple[0], expected.logits)


def test_config_output_hidden_states_and_attentions_are_the_defaults():
    model = tiny_model().eval()
    pixel_values, input_ids, attention_mask = tiny_inputs()
    with torch.no_grad():
        plain = model(pixel_values, input_ids, attention_mask)
        assert plain.backbone_hidden_states is None and plain.backbone_attentions is None
        model.config.output_hidden_states = True
        model.set_attn_implementation("eager")  # attention probabilities need eager attention (transformers' rule)
        model.config.output_attentions = True
        outputs = model(pixel_values, input_ids, attention_mask)
    config = model.config
    assert len(outputs.backbone_hidden_states) == 3 and len(outputs.feature_pyramid_hidden_states) == 5
    assert len(outputs.text_hidden_states) == config.text_config.num_hidden_layers + 1
    assert len(outputs.backbone_attentions) == sum(config.backbone_config.depths)
    assert len(outputs.text_attentions) == config.text_config.num_hidden_layers
    assert len(outputs.fusion_attentions) == len(outputs.head_text_attentions) == config.num_head_blocks
    vision_to_text, text_to_vision = outputs.fusion_attentions[0]
    num_positions, sequence_length = outputs.logits.shape[1:]
    assert vision_to_text.shape == (2, config.fusion_num_heads, num_positions, sequence_length)
    assert text_to_vision.shape == (2, config.fusion_num_heads, sequence_length, num_positions)
    # padded tokens (the last 4 of the second prompt) get no weight from the visual positions
    assert torch.all(vision_to_text[1, :, :, -4:] == 0)
    torch.testing.assert_close(outputs.logits, plain.logits, atol=1e-5, rtol=1e-5)


def test_one_image_several_prompts_expands_backbone_attentions():
    model = tiny_model().eval()
    pixel_values, input_ids, attention_mask = tiny_inputs()
    with torch.no_grad():
        outputs = model(pixel_values[:1], input_ids, attention_mask, output_attentions=True)
        single = model(pixel_values[:1], input_ids[:1], attention_mask[:1], output_attentions=True)
    for shared, alone in zip(outputs.backbone_attentions, single.backbone_attentions):
        assert shared.shape[0] == 2 * alone.shape[0]
        torch.testing.assert_close(shared[: alone.shape[0]], alone)


def test_from_pretrained_dtype_reaches_every_parameter(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    reloaded = GLIPForGrounding.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert {parameter.dtype for parameter in reloaded.parameters()} == {torch.bfloat16}
    head = reloaded.model.head
    assert head.log_scale.dtype == head.bias0.dtype == head.scales[0].scale.dtype == torch.bfloat16


def test_input_embeddings_are_the_bert_word_embeddings():
    model = tiny_model()
    assert model.get_input_embeddings() is model.model.text_model.embeddings.word_embeddings
