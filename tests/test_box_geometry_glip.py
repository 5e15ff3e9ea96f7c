"""Box geometry: anchors and box coder against the official fixture (`tests/fixtures/tiny_a`), the +1 box rules,
and training / inference agreement on every box."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import BertTokenizer

from transformers_glip.box_geometry_glip import (
    GLIPBoxCoder,
    cell_anchor,
    class_aware_nms,
    clip_boxes_to_image,
    flip_boxes,
    generate_anchors,
    legacy_box_area,
    legacy_box_iou,
    nonempty_box_mask,
    padded_size,
    resize_boxes,
    xywh_to_xyxy,
)
from transformers_glip.data import GLIPTrainingStream, GLIPTrainingTransform, coco_detection_source
from transformers_glip.image_processing_glip import GLIPImageProcessor

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


def test_xywh_conversion_clip_resize_and_flip_follow_the_plus_one_rule():
    boxes = xywh_to_xyxy(torch.tensor([[1.5, 2.0, 4.0, 6.0], [3.0, 3.0, 0.5, 2.0]]))
    # x2 = x + max(w - 1, 0): a box under one pixel wide has zero extent.
    assert boxes.tolist() == [[1.5, 2.0, 4.5, 7.0], [3.0, 3.0, 3.0, 4.0]]
    assert nonempty_box_mask(boxes).tolist() == [True, False]
    assert clip_boxes_to_image(torch.tensor([[-2.0, 1.0, 70.0, 50.0]]), 48, 64).tolist() == [[0.0, 1.0, 63.0, 47.0]]
    flipped = flip_boxes(torch.tensor([[10.0, 5.0, 29.0, 14.0]]), 64)
    assert flipped.tolist() == [[34.0, 5.0, 53.0, 14.0]]  # x1' = W - x2 - 1, x2' = W - x1 - 1
    assert resize_boxes(flipped, (48, 64), (96, 32)).tolist() == [[17.0, 10.0, 26.5, 28.0]]
    assert padded_size(100, 65, 32) == (128, 96) and padded_size(100, 65, 0) == (100, 65)


def test_legacy_iou_and_nms_use_inclusive_widths():
    boxes = torch.tensor([[0.0, 0.0, 9.0, 9.0], [5.0, 0.0, 14.0, 9.0]])
    assert legacy_box_area(boxes).tolist() == [100.0, 100.0]
    # Intersection 5 x 10 = 50 pixels, union 150 (torchvision's exclusive widths would give 36 / 126).
    torch.testing.assert_close(legacy_box_iou(boxes, boxes)[0, 1], torch.tensor(50.0 / 150.0))
    scores = torch.tensor([0.9, 0.8])
    assert class_aware_nms(boxes, scores, torch.tensor([0, 0]), 0.3).tolist() == [0]
    assert class_aware_nms(boxes, scores, torch.tensor([0, 0]), 0.34).tolist() == [0, 1]
    assert class_aware_nms(boxes, scores, torch.tensor([0, 1]), 0.3).tolist() == [0, 1]  # labels never suppress


def test_training_and_image_processor_drop_the_same_empty_box_and_keep_the_image(tmp_path):
    """A COCO box 0.5 px wide: the official rule drops the box and keeps the image, in training and inference."""
    Image.new("RGB", (64, 48), (120, 120, 120)).save(tmp_path / "image.png")
    annotations = [
        {"id": 1, "image_id": 7, "bbox": [4.0, 4.0, 20.0, 20.0], "category_id": 1, "iscrowd": 0, "area": 400},
        {"id": 2, "image_id": 7, "bbox": [30.0, 10.0, 0.5, 12.0], "category_id": 1, "iscrowd": 0, "area": 6},
    ]
    coco = {
        "images": [{"id": 7, "file_name": "image.png", "width": 64, "height": 48}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "cat"}],
    }
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    processor = GLIPImageProcessor(min_size=48, max_size=64, train_min_sizes=[48], horizontal_flip_probability=0.0)

    target = processor(Image.open(tmp_path / "image.png"), annotations={"image_id": 7, "annotations": annotations})
    assert target["labels"][0]["annotation_indices"].tolist() == [0]

    tokenizer = BertTokenizer.from_pretrained(FIXTURE / "bert")
    transform = GLIPTrainingTransform(tokenizer, processor, max_length=16, num_negatives=0)
    source = coco_detection_source(tmp_path / "coco.json", tmp_path, num_shards=1)
    stream = GLIPTrainingStream([source], transform, shuffle_buffer_size=0, max_epochs=1)
    samples = list(stream)
    assert len(samples) == 1  # the image is kept ...
    torch.testing.assert_close(samples[0]["boxes"], target["labels"][0]["boxes"])  # ... with the same one box
    assert stream.counter.dropped_boxes == {"empty_box": 1} and stream.counter.num_skipped == 0
