"""Tests of `loss_glip.py` against the official GLIP training losses (fixtures `tiny_a`, `tiny_a_variant_a`).

The head outputs recorded from the official model are fed straight into `GLIPLoss`, so these tests need no model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from transformers_glip import GLIPConfig
from transformers_glip.box_geometry_glip import legacy_box_iou
from transformers_glip.loss_glip import (
    GLIPLoss,
    atss_assign,
    generalized_iou_loss,
    token_sigmoid_focal_loss,
    torch_distributed_average,
)

torch.set_num_threads(2)

FIXTURES = Path(__file__).parent / "fixtures"
LEVELS = ("P3", "P4", "P5", "P6", "P7")
LOSS_KEYS = ("loss_reg", "loss_centerness", "loss_dot_product_token")
# Suggested by the fixture README for float32 losses; observed difference is 0.0 (same ops as the official code).
LOSS_RELATIVE_TOLERANCE = 1e-5
# Regression targets use the same float32 ops as the official `BoxCoder.encode`; observed difference is 0.0, the
# tolerance only allows for a different reduction/vectorisation order of elementwise kernels on other hardware.
REGRESSION_TARGET_TOLERANCE = 1e-5


def load_head_outputs(fixture_name: str) -> dict:
    """Official head outputs of one fixture, flattened to the model-output contract (batch 1)."""
    outputs = load_file(FIXTURES / fixture_name / "outputs.safetensors")
    logits = torch.cat([outputs[f"head.dot_product_logits.{level}"] for level in LEVELS], dim=1)  # (1, A, 256)
    box_regression = torch.cat(
        # (1, 4, H, W) -> (1, H, W, 4) -> (1, H * W, 4), row-major (y, x) like the anchors
        [outputs[f"head.box_regression.{level}"].permute(0, 2, 3, 1).reshape(1, -1, 4) for level in LEVELS],
        dim=1,
    )  # (1, A, 4)
    centerness = torch.cat(
        [outputs[f"head.centerness.{level}"].reshape(1, -1) for level in LEVELS], dim=1
    )  # (1, 1, H, W) -> (1, H * W) per level, then (1, A)
    anchors = torch.cat([outputs[f"anchors.{level}"] for level in LEVELS], dim=0)  # (A, 4)
    return {
        "logits": logits,
        "box_regression": box_regression,
        "centerness": centerness,
        "anchors": anchors,
        "num_anchors_per_level": [outputs[f"anchors.{level}"].shape[0] for level in LEVELS],
        "anchor_labels": outputs["train.anchor_labels"],
        "regression_targets": outputs["train.reg_targets"],
        "losses": json.loads((FIXTURES / fixture_name / "losses.json").read_text()),
    }


@pytest.fixture(scope="module")
def inputs() -> dict:
    # The variant fixture was recorded with the same inputs, so both use tiny_a's inputs.safetensors.
    return load_file(FIXTURES / "tiny_a" / "inputs.safetensors")


@pytest.fixture(scope="module", params=["tiny_a", "tiny_a_variant_a"])
def head_outputs(request) -> dict:
    return load_head_outputs(request.param)


@pytest.fixture(scope="module")
def tiny_a_outputs() -> dict:
    return load_head_outputs("tiny_a")


def fixture_labels(inputs: dict) -> list[dict[str, torch.Tensor]]:
    return [{"boxes": inputs["train.gt_boxes_xyxy"], "positive_map": inputs["train.positive_map"]}]


def empty_labels(sequence_length: int = 256) -> dict[str, torch.Tensor]:
    return {"boxes": torch.zeros(0, 4), "positive_map": torch.zeros(0, sequence_length)}


def run_loss(loss_module: GLIPLoss, outputs: dict, attention_mask: torch.Tensor, labels: list[dict]):
    return loss_module(
        outputs["logits"],
        outputs["box_regression"],
        outputs["centerness"],
        outputs["anchors"],
        outputs["num_anchors_per_level"],
        attention_mask,
        labels,
    )


# ---------------------------------------------------------------------------------------------------------------
# Parity with the official code
# ---------------------------------------------------------------------------------------------------------------


def test_atss_anchor_labels_match_official(head_outputs, inputs):
    targets = GLIPLoss(GLIPConfig()).prepare_targets(
        head_outputs["anchors"], head_outputs["num_anchors_per_level"], fixture_labels(inputs), sequence_length=256
    )
    assert torch.equal(targets.anchor_labels[0], head_outputs["anchor_labels"])
    assert torch.equal(targets.matched_box_indices[0], head_outputs["anchor_labels"] - 1)
    assert int((targets.anchor_labels > 0).sum()) == head_outputs["losses"]["train_info"]["num_positive_anchors"]


def test_regression_targets_match_official(head_outputs, inputs):
    targets = GLIPLoss(GLIPConfig()).prepare_targets(
        head_outputs["anchors"], head_outputs["num_anchors_per_level"], fixture_labels(inputs), sequence_length=256
    )
    is_positive = head_outputs["anchor_labels"] > 0
    torch.testing.assert_close(
        targets.regression_targets[0][is_positive],
        head_outputs["regression_targets"][is_positive],
        rtol=0.0,
        atol=REGRESSION_TARGET_TOLERANCE,
    )


def test_token_targets_follow_positive_map(tiny_a_outputs, inputs):
    targets = GLIPLoss(GLIPConfig()).prepare_targets(
        tiny_a_outputs["anchors"], tiny_a_outputs["num_anchors_per_level"], fixture_labels(inputs), 256
    )
    token_targets = targets.token_targets[0]
    matched = targets.matched_box_indices[0]
    positive_map = inputs["train.positive_map"]
    assert torch.equal(token_targets[matched >= 0], positive_map[matched[matched >= 0]])
    background_row = torch.zeros(256)
    background_row[-1] = 1.0
    assert torch.equal(token_targets[matched < 0], background_row.expand(int((matched < 0).sum()), 256))


def test_losses_match_official(head_outputs, inputs):
    loss, loss_dict = run_loss(GLIPLoss(GLIPConfig()), head_outputs, inputs["attention_mask"], fixture_labels(inputs))
    assert set(loss_dict) == set(LOSS_KEYS)
    expected = head_outputs["losses"]["losses"]
    for key in LOSS_KEYS:
        torch.testing.assert_close(
            loss_dict[key], torch.tensor(expected[key]), rtol=LOSS_RELATIVE_TOLERANCE, atol=0.0, msg=key
        )
    total = head_outputs["losses"]["sum_of_losses (computed here, what the trainer back-propagates)"]
    torch.testing.assert_close(loss, torch.tensor(total), rtol=LOSS_RELATIVE_TOLERANCE, atol=0.0)


# ---------------------------------------------------------------------------------------------------------------
# Empty images, batching, distributed normalisation, sequence length
# ---------------------------------------------------------------------------------------------------------------


def test_image_without_boxes_gives_token_loss_only_and_gradients(tiny_a_outputs, inputs):
    logits = tiny_a_outputs["logits"].clone().requires_grad_(True)
    box_regression = tiny_a_outputs["box_regression"].clone().requires_grad_(True)
    centerness = tiny_a_outputs["centerness"].clone().requires_grad_(True)
    loss, loss_dict = GLIPLoss(GLIPConfig())(
        logits,
        box_regression,
        centerness,
        tiny_a_outputs["anchors"],
        tiny_a_outputs["num_anchors_per_level"],
        inputs["attention_mask"],
        [empty_labels()],
    )
    assert torch.isfinite(loss)
    assert loss_dict["loss_reg"].item() == 0.0
    assert loss_dict["loss_centerness"].item() == 0.0
    assert loss_dict["loss_dot_product_token"].item() > 0.0
    loss.backward()
    for tensor in (logits, box_regression, centerness):
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all()
    assert logits.grad.abs().sum() > 0
    # Padded token positions never receive gradient.
    assert logits.grad[..., inputs["attention_mask"][0] == 0].abs().sum() == 0


def test_atss_without_boxes_is_all_background():
    anchors = torch.tensor([[0.0, 0.0, 15.0, 15.0], [8.0, 8.0, 23.0, 23.0]])
    matches = atss_assign(anchors, torch.zeros(0, 4), [2], topk=9)
    assert torch.equal(matches, torch.tensor([-1, -1]))


def test_batch_with_empty_image_matches_per_image_sums(tiny_a_outputs, inputs):
    loss_module = GLIPLoss(GLIPConfig())
    attention_mask = inputs["attention_mask"]
    generator = torch.Generator().manual_seed(0)
    second_image = {
        "logits": torch.randn(tiny_a_outputs["logits"].shape, generator=generator) - 3.0,
        "box_regression": torch.randn(tiny_a_outputs["box_regression"].shape, generator=generator),
        "centerness": torch.randn(tiny_a_outputs["centerness"].shape, generator=generator),
    }
    batch = {
        key: torch.cat([tiny_a_outputs[key], second_image[key]]) for key in ("logits", "box_regression", "centerness")
    }
    batch["anchors"] = tiny_a_outputs["anchors"]
    batch["num_anchors_per_level"] = tiny_a_outputs["num_anchors_per_level"]
    batch_loss, batch_dict = run_loss(
        loss_module, batch, attention_mask.repeat(2, 1), fixture_labels(inputs) + [empty_labels()]
    )

    _, first_dict = run_loss(loss_module, tiny_a_outputs, attention_mask, fixture_labels(inputs))
    second_outputs = {
        **second_image,
        "anchors": batch["anchors"],
        "num_anchors_per_level": batch["num_anchors_per_level"],
    }
    _, second_dict = run_loss(loss_module, second_outputs, attention_mask, [empty_labels()])

    num_positives = 27  # all in the first image; the empty image alone is normalised by max(0, 1) = 1
    expected_token = (first_dict["loss_dot_product_token"] * num_positives + second_dict["loss_dot_product_token"]) / (
        num_positives
    )
    torch.testing.assert_close(batch_dict["loss_dot_product_token"], expected_token, rtol=1e-6, atol=0.0)
    torch.testing.assert_close(batch_dict["loss_reg"], first_dict["loss_reg"], rtol=1e-6, atol=0.0)
    torch.testing.assert_close(batch_dict["loss_centerness"], first_dict["loss_centerness"], rtol=1e-6, atol=0.0)
    torch.testing.assert_close(batch_loss, sum(batch_dict.values()))


class MockTwoProcessAverage:
    """Pretends a second process contributed `other_process_value(tensor)`; records every call."""

    def __init__(self, other_process_value):
        self.other_process_value = other_process_value
        self.calls = []

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        self.calls.append(tensor.clone())
        return (tensor + self.other_process_value(tensor)) / 2


def test_cross_process_average_changes_normalisation(tiny_a_outputs, inputs):
    labels = fixture_labels(inputs)
    _, local_dict = run_loss(GLIPLoss(GLIPConfig()), tiny_a_outputs, inputs["attention_mask"], labels)

    # The other process has no positives: every normaliser halves, every term doubles.
    idle_peer = MockTwoProcessAverage(torch.zeros_like)
    _, halved_dict = run_loss(GLIPLoss(GLIPConfig(), idle_peer), tiny_a_outputs, inputs["attention_mask"], labels)
    assert len(idle_peer.calls) == 2  # number of positives, then sum of centerness targets
    assert idle_peer.calls[0].item() == 27
    for key in LOSS_KEYS:
        torch.testing.assert_close(halved_dict[key], 2 * local_dict[key], rtol=1e-6, atol=0.0)

    # The other process has identical statistics: nothing changes.
    twin_peer = MockTwoProcessAverage(lambda tensor: tensor)
    _, twin_dict = run_loss(GLIPLoss(GLIPConfig(), twin_peer), tiny_a_outputs, inputs["attention_mask"], labels)
    for key in LOSS_KEYS:
        torch.testing.assert_close(twin_dict[key], local_dict[key], rtol=1e-6, atol=0.0)

    # The other process has three times as many positives and centerness mass: every term halves.
    busy_peer = MockTwoProcessAverage(lambda tensor: 3 * tensor)
    _, busy_dict = run_loss(GLIPLoss(GLIPConfig(), busy_peer), tiny_a_outputs, inputs["attention_mask"], labels)
    for key in LOSS_KEYS:
        torch.testing.assert_close(busy_dict[key], local_dict[key] / 2, rtol=1e-6, atol=0.0)


def test_empty_image_keeps_collective_calls_and_clamps_normaliser(tiny_a_outputs, inputs):
    # An image without boxes must still take part in both reductions, or the other processes would hang.
    peer = MockTwoProcessAverage(torch.zeros_like)
    _, loss_dict = run_loss(GLIPLoss(GLIPConfig(), peer), tiny_a_outputs, inputs["attention_mask"], [empty_labels()])
    assert len(peer.calls) == 2
    _, local_dict = run_loss(GLIPLoss(GLIPConfig()), tiny_a_outputs, inputs["attention_mask"], [empty_labels()])
    # Average number of positives is 0 -> clamped to 1, so the token loss equals the local one.
    torch.testing.assert_close(loss_dict["loss_dot_product_token"], local_dict["loss_dot_product_token"])


def test_torch_distributed_single_process_group(tiny_a_outputs, inputs):
    if not torch.distributed.is_available() or torch.distributed.is_initialized():
        pytest.skip("torch.distributed unavailable or already initialised")
    labels = fixture_labels(inputs)
    _, local_dict = run_loss(GLIPLoss(GLIPConfig()), tiny_a_outputs, inputs["attention_mask"], labels)
    torch.distributed.init_process_group("gloo", store=torch.distributed.HashStore(), rank=0, world_size=1)
    try:
        value = torch.tensor(5.0)
        assert torch_distributed_average(value).item() == 5.0
        _, group_dict = run_loss(GLIPLoss(GLIPConfig()), tiny_a_outputs, inputs["attention_mask"], labels)
    finally:
        torch.distributed.destroy_process_group()
    for key in LOSS_KEYS:
        torch.testing.assert_close(group_dict[key], local_dict[key], rtol=0.0, atol=0.0)


def test_sequence_length_64(tiny_a_outputs, inputs):
    sequence_length = 64
    short_outputs = {**tiny_a_outputs, "logits": tiny_a_outputs["logits"][..., :sequence_length]}
    short_labels = [
        {
            "boxes": inputs["train.gt_boxes_xyxy"],
            "positive_map": inputs["train.positive_map"][:, :sequence_length],
        }
    ]
    short_mask = inputs["attention_mask"][:, :sequence_length]
    loss_module = GLIPLoss(GLIPConfig())
    _, short_dict = run_loss(loss_module, short_outputs, short_mask, short_labels)
    _, full_dict = run_loss(loss_module, tiny_a_outputs, inputs["attention_mask"], fixture_labels(inputs))
    # Only the 13 unpadded tokens count, so dropping padded columns changes nothing.
    for key in LOSS_KEYS:
        torch.testing.assert_close(short_dict[key], full_dict[key], rtol=1e-6, atol=0.0)

    # The "no object" slot is the last column of whatever length the text has; it counts once the mask covers it.
    targets = loss_module.prepare_targets(
        tiny_a_outputs["anchors"], tiny_a_outputs["num_anchors_per_level"], short_labels, sequence_length
    )
    is_background = targets.matched_box_indices[0] < 0
    assert targets.token_targets.shape == (1, tiny_a_outputs["logits"].shape[1], sequence_length)
    assert (targets.token_targets[0, is_background, sequence_length - 1] == 1).all()
    assert (targets.token_targets[0, ~is_background, sequence_length - 1] == 0).all()
    _, full_mask_dict = run_loss(loss_module, short_outputs, torch.ones(1, sequence_length), short_labels)
    assert full_mask_dict["loss_dot_product_token"] > short_dict["loss_dot_product_token"]


# ---------------------------------------------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------------------------------------------


def test_legacy_box_iou_uses_plus_one_widths():
    boxes = torch.tensor([[0.0, 0.0, 9.0, 9.0]])  # 10 x 10 pixels
    shifted = torch.tensor([[5.0, 0.0, 14.0, 9.0]])  # overlaps 5 x 10
    torch.testing.assert_close(legacy_box_iou(boxes, boxes), torch.ones(1, 1))
    torch.testing.assert_close(legacy_box_iou(boxes, shifted), torch.tensor([[50.0 / 150.0]]))


def test_atss_ties_go_to_first_box_and_small_levels_work():
    # 4 x 4 grid of 16 px anchors (stride 8) plus a level with only 2 anchors (k = min(topk, 2)).
    grid = torch.arange(4, dtype=torch.float32) * 8
    grid_y, grid_x = torch.meshgrid(grid, grid, indexing="ij")
    fine = torch.stack([grid_x, grid_y, grid_x + 15, grid_y + 15], dim=-1).reshape(-1, 4)  # (16, 4)
    coarse = torch.tensor([[0.0, 0.0, 31.0, 31.0], [16.0, 16.0, 47.0, 47.0]])
    anchors = torch.cat([fine, coarse])
    box = torch.tensor([[4.0, 4.0, 27.0, 27.0]])
    matches = atss_assign(anchors, torch.cat([box, box]), [16, 2], topk=9)
    assert (matches >= 0).any()
    assert set(matches[matches >= 0].tolist()) == {0}
    single = atss_assign(anchors, box, [16, 2], topk=9)
    assert torch.equal(single >= 0, matches >= 0)


def test_generalized_iou_loss_properties():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 25.0, 15.0]])
    torch.testing.assert_close(generalized_iou_loss(boxes, boxes), torch.tensor(0.0), atol=1e-6, rtol=0.0)
    # Disjoint boxes: IoU 0, union 100 + 100, enclosing 30 x 10 -> GIoU = -1/3, loss 4/3 (weighted by 2).
    first = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    second = torch.tensor([[10.0, 0.0, 20.0, 0.0]])  # zero height: area 0
    third = torch.tensor([[20.0, 0.0, 30.0, 10.0]])
    torch.testing.assert_close(
        generalized_iou_loss(first, third, torch.tensor([2.0])), torch.tensor(2 * 4 / 3), atol=1e-6, rtol=0.0
    )
    assert torch.isfinite(generalized_iou_loss(second, first))
    # A predicted box with x2 < x1 is collapsed to zero width instead of getting a negative area.
    inverted = torch.tensor([[10.0, 0.0, 0.0, 10.0]])
    collapsed = torch.tensor([[10.0, 0.0, 10.0, 10.0]])
    torch.testing.assert_close(generalized_iou_loss(inverted, first), generalized_iou_loss(collapsed, first))


def test_token_focal_loss_matches_formula_and_ignores_masked_tokens():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=generator)
    targets = (torch.rand(2, 5, 7, generator=generator) > 0.7).float()
    text_mask = torch.tensor([[1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0]])
    probabilities = logits.sigmoid()
    p_t = probabilities * targets + (1 - probabilities) * (1 - targets)
    alpha_t = 0.25 * targets + 0.75 * (1 - targets)
    elementwise = -alpha_t * (1 - p_t) ** 2 * torch.log(p_t)
    expected = (elementwise * text_mask[:, None, :]).sum()
    result = token_sigmoid_focal_loss(logits, targets, text_mask, alpha=0.25, gamma=2.0)
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=0.0)
    changed = logits.clone()
    changed[..., 5:] = 100.0
    torch.testing.assert_close(token_sigmoid_focal_loss(changed, targets, text_mask, 0.25, 2.0), result)
