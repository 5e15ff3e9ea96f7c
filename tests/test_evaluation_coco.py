"""COCO evaluation: metrics of fabricated detections, the held-out split, and clear errors for bad inputs."""

import json

import pytest
import torch
from PIL import Image

from transformers_glip.evaluation.coco import coco_box_metrics, evaluate_coco, read_coco_ground_truth


def ground_truth():
    return {
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 10], "area": 200, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [30, 20, 12, 12], "area": 144, "iscrowd": 0},
        ],
        "categories": [
            {"id": 1, "name": "red circle", "held_out": False},
            {"id": 2, "name": "blue square", "held_out": True},
            {"id": 3, "name": "green triangle", "held_out": False},  # no ground truth: AP undefined
        ],
    }


def test_metrics_of_perfect_shifted_and_missing_detections():
    truth = ground_truth()
    perfect = [{**item, "score": 0.9} for item in truth["annotations"]]
    perfect = [{key: item[key] for key in ("image_id", "category_id", "bbox", "score")} for item in perfect]
    metrics = coco_box_metrics(truth, perfect)
    assert metrics["ap50"] == pytest.approx(1.0) and metrics["ap"] == pytest.approx(1.0)
    assert metrics["ap50_per_category"] == {
        "red circle": pytest.approx(1.0),
        "blue square": pytest.approx(1.0),
        "green triangle": None,
    }
    assert metrics["ap50_seen"] == pytest.approx(1.0) and metrics["ap50_held_out"] == pytest.approx(1.0)
    # The held-out box is found 10 pixels off (IoU < 0.5): only the seen category scores.
    shifted = [perfect[0], {**perfect[1], "bbox": [40, 30, 12, 12]}]
    metrics = coco_box_metrics(truth, shifted)
    assert metrics["ap50_seen"] == pytest.approx(1.0) and metrics["ap50_held_out"] == 0.0
    assert metrics["ap50"] == pytest.approx(0.5)
    metrics = coco_box_metrics(truth, [])
    assert metrics["ap50"] == 0.0 and metrics["ap50_per_category"]["red circle"] == 0.0


def test_bad_inputs_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="annotation_file='.*missing.json' is not a file"):
        read_coco_ground_truth(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="broken.json is not valid json"):
        read_coco_ground_truth(tmp_path / "broken.json")
    (tmp_path / "partial.json").write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="'annotations' must be a list"):
        read_coco_ground_truth(tmp_path / "partial.json")
    bad_category = {**ground_truth(), "categories": [{"id": "1", "name": "x"}]}
    (tmp_path / "bad_category.json").write_text(json.dumps(bad_category))
    with pytest.raises(ValueError, match=r"categories\[0\] needs an integer 'id'"):
        read_coco_ground_truth(tmp_path / "bad_category.json")

    (tmp_path / "coco.json").write_text(json.dumps(ground_truth()))
    model = torch.nn.Identity()  # never called: the inputs fail first
    with pytest.raises(FileNotFoundError, match="image_dir='.*no_images' is not a folder"):
        evaluate_coco(model, None, tmp_path / "coco.json", tmp_path / "no_images")
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        evaluate_coco(model, None, tmp_path / "coco.json", tmp_path, batch_size=0)
    (tmp_path / "a.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="Cannot read the evaluation image .*a.png"):
        evaluate_coco(model, None, tmp_path / "coco.json", tmp_path)
    Image.new("RGB", (64, 48)).save(tmp_path / "a.png")
    assert read_coco_ground_truth(tmp_path / "coco.json")["images"][0]["file_name"] == "a.png"
