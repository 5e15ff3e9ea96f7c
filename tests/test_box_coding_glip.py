"""Anchors and box coder against the official fixture (`tests/fixtures/tiny_a`)."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from transformers_glip.box_coding_glip import GLIPBoxCoder, cell_anchor, generate_anchors

FIXTURE = Path(__file__).parent / "fixtures" / "tiny_a"
LEVELS = ["P3", "P4", "P5", "P6", "P7"]


@pytest.fixture(scope="module")
def outputs():
    return load_file(FIXTURE / "outputs.safetensors")


def test_cell_anchors_match_detectron_values():
    assert cell_anchor(8, 64) == [-28.0, -28.0, 35.0, 35.0]
    assert cell_anchor(128, 1024) == [-448.0, -448.0, 575.0, 575.0]


def test_anchors_equal_fixture(outputs):
    level_sizes = [tuple(outputs[f"head.centerness.{level}"].shape[-2:]) for level in LEVELS]
    anchors = generate_anchors(level_sizes, [8, 16, 32, 64, 128], [64, 128, 256, 512, 1024])
    expected = torch.cat([outputs[f"anchors.{level}"] for level in LEVELS])
    # Anchors are integers and half-integers: exact equality.
    torch.testing.assert_close(anchors, expected, rtol=0, atol=0)


def test_encode_matches_fixture_regression_targets(outputs):
    inputs = load_file(FIXTURE / "inputs.safetensors")
    anchors = torch.cat([outputs[f"anchors.{level}"] for level in LEVELS])
    anchor_labels = outputs["train.anchor_labels"]
    positive = anchor_labels > 0
    gt_boxes = inputs["train.gt_boxes_xyxy"][anchor_labels[positive] - 1]
    encoded = GLIPBoxCoder().encode(gt_boxes, anchors[positive])
    # Same float32 formula as the official coder; 1e-5 allows for operation-order rounding.
    torch.testing.assert_close(encoded, outputs["train.reg_targets"][positive], rtol=1e-5, atol=1e-5)


def test_decode_inverts_encode():
    coder = GLIPBoxCoder()
    anchors = torch.tensor([[-28.0, -28.0, 35.0, 35.0], [100.0, 50.0, 163.0, 113.0]])
    boxes = torch.tensor([[0.0, 3.0, 40.0, 30.0], [90.0, 60.0, 200.0, 100.0]])
    torch.testing.assert_close(coder.decode(coder.encode(boxes, anchors), anchors), boxes, rtol=1e-5, atol=1e-4)


def test_decode_clamps_only_large_log_scales():
    coder = GLIPBoxCoder()
    anchors = torch.tensor([[0.0, 0.0, 63.0, 63.0]])
    huge = coder.decode(torch.tensor([[0.0, 0.0, 1000.0, 1000.0]]), anchors)
    width = huge[0, 2] - huge[0, 0] + 1
    torch.testing.assert_close(width, torch.tensor(64.0 * 1000.0 / 16), rtol=1e-5, atol=1e-2)


def test_box_coder_rejects_wrong_weights():
    with pytest.raises(ValueError, match="4 weights"):
        GLIPBoxCoder((1.0, 2.0))
