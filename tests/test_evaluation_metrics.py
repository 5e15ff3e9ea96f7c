"""Tests of the detection / grounding metrics (`transformers_glip/metrics_glip.py`) on hand-checked fixtures.

Every expected number below is derived by hand in the comment next to it, from COCO's definition of AP (101-point
interpolated precision, averaged over IoU 0.50:0.05:0.95 and over categories with ground truth).
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from transformers_glip.box_geometry_glip import xywh_to_xyxy
from transformers_glip.evaluation.metrics import (
    GLIPCocoMetric,
    GLIPFlickrGroundingMetric,
    GLIPLvisMetric,
    xyxy_to_coco_xywh,
)

# ----------------------------------------------------------------------------------------------- COCO fixture
# Two categories with non-contiguous ids (label 0 -> id 3 "circle", label 1 -> id 7 "square"), one box per size:
#   image 1: circle [10, 10, 4, 4] (area 16, small), circle [50, 50, 40, 40] (area 1600, medium)
#   image 2: square [0, 0, 100, 100] (area 10000, large)
COCO_GROUND_TRUTH = {
    "images": [{"id": 1, "width": 200, "height": 200}, {"id": 2, "width": 200, "height": 200}],
    "categories": [{"id": 3, "name": "circle"}, {"id": 7, "name": "square"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 4, 4], "area": 16, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [50, 50, 40, 40], "area": 1600, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 7, "bbox": [0, 0, 100, 100], "area": 10000, "iscrowd": 0},
    ],
}


def inclusive(boxes_xywh):
    """COCO xywh -> the project's inclusive xyxy, through the project's own conversion."""
    return xywh_to_xyxy(torch.tensor(boxes_xywh, dtype=torch.float32))


def perfect_coco_predictions():
    return [
        {"boxes": inclusive([[10, 10, 4, 4], [50, 50, 40, 40]]), "scores": torch.tensor([0.9, 0.8]),
         "labels": torch.tensor([0, 0])},
        {"boxes": inclusive([[0, 0, 100, 100]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])},
    ]  # fmt: skip


def test_inclusive_boxes_round_trip_to_coco_xywh():
    boxes = [[10, 10, 4, 4], [50.5, 20, 40, 7]]
    assert xyxy_to_coco_xywh(inclusive(boxes).numpy()).tolist() == boxes


# pycocotools computes precision as `tp / (tp + fp + np.spacing(1))`, so a perfect score is 1 minus at most
# 2.2e-16 (1 / (1 + eps) with a single true positive); "exactly 1" is therefore checked to 1e-12.
EXACT = 1e-12


def test_coco_perfect_detector_scores_exactly_one():
    metric = GLIPCocoMetric(COCO_GROUND_TRUTH)
    metric.add_batch(predictions=perfect_coco_predictions(), references=[1, 2])
    results = metric.compute()
    for name in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR10", "AR100"):
        assert results[name] == pytest.approx(1.0, abs=EXACT), name
    # AR1: one detection per (image, circle) -> circle recall 1/2, square 1 -> mean 0.75.
    assert results["AR1"] == pytest.approx(0.75)
    assert results["per_category"] == pytest.approx({"circle": 1.0, "square": 1.0}, abs=EXACT)
    assert results["num_images"] == 2


def test_coco_exclusive_width_would_not_be_perfect():
    """The +1 matters: read as `w = x2 - x1` the 4x4 box becomes 3x3, IoU 9/16 < 0.6, so AP would drop."""
    predictions = perfect_coco_predictions()
    shrunk = copy.deepcopy(predictions)
    shrunk[0]["boxes"][0, 2:] -= 1  # what an exclusive-width reading of the same box means
    metric = GLIPCocoMetric(COCO_GROUND_TRUTH)
    results = metric.compute(predictions=shrunk, references=[1, 2])
    # IoU 9/16 = 0.5625: matched at 0.50 and 0.55 only -> the small circle is found at 2 of 10 thresholds.
    assert results["APs"] == pytest.approx(0.2)


def test_coco_shifted_detector_exact_values():
    predictions = perfect_coco_predictions()
    # Square shifted 20 px right: [20, 0, 119, 99] vs [0, 0, 99, 99]; IoU = 80*100 / (2*10000 - 8000) = 2/3,
    # a true positive at IoU 0.50, 0.55, 0.60, 0.65 and a false positive at 0.70..0.95 -> square AP = 4/10.
    predictions[1]["boxes"] = inclusive([[20, 0, 100, 100]])
    results = GLIPCocoMetric(COCO_GROUND_TRUTH).compute(predictions=predictions, references=[1, 2])
    assert results["per_category"] == pytest.approx({"circle": 1.0, "square": 0.4})
    assert results["AP"] == pytest.approx(0.7)  # (1.0 + 0.4) / 2
    assert results["AP50"] == pytest.approx(1.0)
    assert results["AP75"] == pytest.approx(0.5)  # circle 1, square 0
    assert results["APs"] == pytest.approx(1.0)  # only the circle has a small box
    assert results["APm"] == pytest.approx(1.0)
    assert results["APl"] == pytest.approx(0.4)  # only the square is large


def test_coco_false_positive_ranked_first_exact_values():
    predictions = perfect_coco_predictions()
    # A circle false positive [150, 150, 20, 20] (area 400, small) scored above both true circles. Ranked circle
    # detections: FP, TP, TP -> precision 0, 1/2, 2/3 at recall 0, 1/2, 1; interpolated precision is 2/3 at every
    # recall threshold and IoU -> circle AP = 2/3, AP = (2/3 + 1) / 2 = 5/6.
    predictions[0] = {
        "boxes": torch.cat([inclusive([[150, 150, 20, 20]]), predictions[0]["boxes"]]),
        "scores": torch.tensor([0.95, 0.9, 0.8]),
        "labels": torch.tensor([0, 0, 0]),
    }
    results = GLIPCocoMetric(COCO_GROUND_TRUTH).compute(predictions=predictions, references=[1, 2])
    assert results["per_category"]["circle"] == pytest.approx(2 / 3)
    assert results["AP"] == pytest.approx(5 / 6)
    assert results["AP50"] == pytest.approx(5 / 6)
    # Small range: the medium circle and its detection are ignored; FP then TP -> precision 1/2 at recall 1 -> 1/2.
    assert results["APs"] == pytest.approx(0.5)
    # Medium range: the FP and the small pair are outside it (ignored) -> 1.
    assert results["APm"] == pytest.approx(1.0)


def test_coco_per_image_references_equal_the_json():
    shifted = perfect_coco_predictions()
    shifted[1]["boxes"] = inclusive([[20, 0, 100, 100]])
    from_json = GLIPCocoMetric(COCO_GROUND_TRUTH).compute(predictions=shifted, references=[1, 2])
    references = [
        {"image_id": 1, "boxes": inclusive([[10, 10, 4, 4], [50, 50, 40, 40]]), "labels": [0, 0]},
        {"image_id": 2, "boxes": inclusive([[0, 0, 100, 100]]), "labels": [1]},
    ]
    metric = GLIPCocoMetric(category_names=["circle", "square"])
    for prediction, reference in zip(shifted, references):
        metric.add(prediction=prediction, reference=reference)
    from_references = metric.compute()
    assert from_references.pop("per_category") == pytest.approx(from_json.pop("per_category"))
    assert from_references == pytest.approx(from_json)


def test_coco_json_file_and_batches(tmp_path):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(COCO_GROUND_TRUTH))
    metric = GLIPCocoMetric(path)
    predictions = perfect_coco_predictions()
    metric.add_batch(predictions=predictions[:1], references=[{"image_id": 1}])
    metric.add_batch(predictions=predictions[1:], references=[2])
    assert metric.compute()["AP"] == pytest.approx(1.0, abs=EXACT)
    # compute() cleared the state, as evaluate.Metric does
    with pytest.raises(ValueError, match="No image was added"):
        metric.compute()


def test_coco_subset_of_images_is_evaluated_alone():
    # Only image 1 added: the square has no ground truth there (-1) and AP is the circle's.
    metric = GLIPCocoMetric(COCO_GROUND_TRUTH)
    results = metric.compute(predictions=perfect_coco_predictions()[:1], references=[1])
    assert results["per_category"] == pytest.approx({"circle": 1.0, "square": -1.0}, abs=EXACT)
    assert results["AP"] == pytest.approx(1.0, abs=EXACT)


def test_coco_empty_predictions_score_zero():
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
    results = GLIPCocoMetric(COCO_GROUND_TRUTH).compute(predictions=[empty, empty], references=[1, 2])
    assert results["AP"] == 0.0


@pytest.mark.parametrize(
    ("predictions", "references", "error", "match"),
    [
        ([{"boxes": [[0, 0, 1, 1]], "scores": [0.5]}], [1], ValueError, "lacks"),
        ([{"boxes": [[0, 0, 1, 1]], "scores": [0.5], "labels": [2]}], [1], ValueError, "only 2 categories"),
        ([{"boxes": [[0, 0, 1, 1]], "scores": [0.5, 0.4], "labels": [0]}], [1], ValueError, "one entry per"),
        ([{"boxes": [[0, 0, 1]], "scores": [0.5], "labels": [0]}], [1], ValueError, "shape"),
        ([{"boxes": [[0, 0, 1, float("nan")]], "scores": [0.5], "labels": [0]}], [1], ValueError, "NaN"),
        ([{"boxes": [[0, 0, 1, 1]], "scores": [0.5], "labels": [-1]}], [1], ValueError, "non-negative"),
        ([{"boxes": [[0, 0, 1, 1]], "scores": [0.5], "labels": [0]}], [99], ValueError, "not in"),
        ([{"boxes": [[0, 0, 1, 1]], "scores": [0.5], "labels": [0]}], ["1"], TypeError, "image id"),
        ([{"boxes": [], "scores": [], "labels": []}], [1, 2], ValueError, "same length"),
        (["boxes"], [1], TypeError, "dict"),
        (None, [1], ValueError, "both"),
    ],
)
def test_coco_bad_input_is_named(predictions, references, error, match):
    metric = GLIPCocoMetric(COCO_GROUND_TRUTH)
    with pytest.raises(error, match=match):
        metric.add_batch(predictions=predictions, references=references)


def test_coco_duplicate_image_and_bad_construction():
    metric = GLIPCocoMetric(COCO_GROUND_TRUTH)
    metric.add(prediction=perfect_coco_predictions()[0], reference=1)
    with pytest.raises(ValueError, match="added twice"):
        metric.add(prediction=perfect_coco_predictions()[0], reference=1)
    with pytest.raises(ValueError, match="category_ids"):
        GLIPCocoMetric(COCO_GROUND_TRUTH, category_ids=[3, 8])
    with pytest.raises(ValueError, match="max_detections"):
        GLIPCocoMetric(COCO_GROUND_TRUTH, max_detections=0)
    with pytest.raises(ValueError, match="not a file"):
        GLIPCocoMetric("/no/such/file.json")
    with pytest.raises(ValueError, match="missing 'annotations'"):
        GLIPCocoMetric({"images": [], "categories": []})
    with pytest.raises(TypeError, match="`boxes`"):
        GLIPCocoMetric().add(prediction=perfect_coco_predictions()[0], reference=1)


def test_coco_category_ids_follow_the_label_order():
    # The label list given to the model was ["square", "circle"]: label 0 -> id 7, label 1 -> id 3.
    predictions = perfect_coco_predictions()
    predictions[0]["labels"] = torch.tensor([1, 1])
    predictions[1]["labels"] = torch.tensor([0])
    metric = GLIPCocoMetric(COCO_GROUND_TRUTH, category_ids=[7, 3])
    assert metric.compute(predictions=predictions, references=[1, 2])["AP"] == pytest.approx(1.0, abs=EXACT)


# ----------------------------------------------------------------------------------------------- LVIS fixture
# apple (r), banana (c), cherry (f); one box each:
#   image 1: apple; banana is known absent (neg); cherry unknown (neither) -> cherry detections are discarded
#   image 2: cherry, not exhaustively annotated -> unmatched cherry detections are ignored
#   image 3: banana
LVIS_GROUND_TRUTH = {
    "images": [
        {"id": 1, "neg_category_ids": [2], "not_exhaustive_category_ids": []},
        {"id": 2, "neg_category_ids": [1], "not_exhaustive_category_ids": [3]},
        {"id": 3, "neg_category_ids": [], "not_exhaustive_category_ids": []},
    ],
    "categories": [
        {"id": 1, "name": "apple", "frequency": "r"},
        {"id": 2, "name": "banana", "frequency": "c"},
        {"id": 3, "name": "cherry", "frequency": "f"},
    ],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 50, 50], "area": 2500},
        {"id": 2, "image_id": 2, "category_id": 3, "bbox": [10, 10, 60, 60], "area": 3600},
        {"id": 3, "image_id": 3, "category_id": 2, "bbox": [0, 0, 40, 40], "area": 1600},
    ],
}


def lvis_predictions(with_distractors: bool):
    """Perfect boxes (score 0.9); distractors: banana FP on image 1 (0.99, banana is negative there: a real FP),
    cherry on image 1 (0.98, cherry unknown there: discarded), extra cherry on image 2 (0.95, not exhaustive:
    ignored)."""
    image1 = {"boxes": inclusive([[0, 0, 50, 50]]), "scores": [0.9], "labels": [0]}
    image2 = {"boxes": inclusive([[10, 10, 60, 60]]), "scores": [0.9], "labels": [2]}
    image3 = {"boxes": inclusive([[0, 0, 40, 40]]), "scores": [0.9], "labels": [1]}
    if with_distractors:
        image1 = {
            "boxes": torch.cat([image1["boxes"], inclusive([[100, 100, 30, 30], [60, 0, 30, 30]])]),
            "scores": [0.9, 0.99, 0.98],
            "labels": [0, 1, 2],
        }
        image2 = {
            "boxes": torch.cat([image2["boxes"], inclusive([[150, 150, 20, 20]])]),
            "scores": [0.9, 0.95],
            "labels": [2, 2],
        }
    return [image1, image2, image3]


def test_lvis_perfect_detector_scores_exactly_one():
    results = GLIPLvisMetric(LVIS_GROUND_TRUTH).compute(predictions=lvis_predictions(False), references=[1, 2, 3])
    for name in ("AP", "AP50", "AP75", "APr", "APc", "APf"):
        assert results[name] == pytest.approx(1.0, abs=EXACT), name
    assert results["protocol"] == "fixed_ap"


def test_lvis_federated_rules_exact_values():
    results = GLIPLvisMetric(LVIS_GROUND_TRUTH).compute(predictions=lvis_predictions(True), references=[1, 2, 3])
    # cherry: the image-1 detection is discarded (cherry neither present nor negative there) and the extra image-2
    # detection ignored (not exhaustive) -> 1. Without these LVIS rules it would be FP, FP, TP -> 1/3.
    assert results["APf"] == pytest.approx(1.0)
    # banana: FP (0.99, image 1 where banana is negative) ranked above the TP -> precision 1/2 at recall 1 -> 1/2.
    assert results["APc"] == pytest.approx(0.5)
    assert results["APr"] == pytest.approx(1.0)
    assert results["AP"] == pytest.approx(2.5 / 3)
    assert results["per_category"] == pytest.approx({"apple": 1.0, "banana": 0.5, "cherry": 1.0})


def test_lvis_fixed_ap_keeps_the_top_k_per_category():
    metric = GLIPLvisMetric(LVIS_GROUND_TRUTH, detections_per_category=1)
    results = metric.compute(predictions=lvis_predictions(True), references=[1, 2, 3])
    # banana keeps only its best detection, the FP -> 0. cherry keeps the 0.98 one (image 1), which the federated
    # filter then discards -> no cherry detection -> 0. apple -> 1. AP = 1/3.
    assert results["per_category"] == pytest.approx({"apple": 1.0, "banana": 0.0, "cherry": 0.0})
    assert results["AP"] == pytest.approx(1 / 3)


def test_lvis_standard_protocol_caps_each_image():
    metric = GLIPLvisMetric(LVIS_GROUND_TRUTH, fixed_ap=False, max_detections_per_image=1)
    results = metric.compute(predictions=lvis_predictions(True), references=[1, 2, 3])
    # image 1 keeps banana FP (0.99) -> apple gets nothing (0); banana FP + image-3 TP -> 1/2; image 2 keeps the
    # ignored extra cherry (0.95) -> cherry has no TP (0). APr 0, APc 1/2, APf 0, AP = 1/6.
    assert (results["APr"], results["APc"], results["APf"]) == pytest.approx((0.0, 0.5, 0.0))
    assert results["AP"] == pytest.approx(1 / 6)
    assert results["protocol"] == "standard"


def test_lvis_bad_input_is_named():
    no_frequency = copy.deepcopy(LVIS_GROUND_TRUTH)
    del no_frequency["categories"][0]["frequency"]
    with pytest.raises(ValueError, match="frequency"):
        GLIPLvisMetric(no_frequency)
    with pytest.raises(ValueError, match="detections_per_category"):
        GLIPLvisMetric(LVIS_GROUND_TRUTH, detections_per_category=0)
    with pytest.raises(TypeError, match="fixed_ap"):
        GLIPLvisMetric(LVIS_GROUND_TRUTH, fixed_ap="yes")
    metric = GLIPLvisMetric(LVIS_GROUND_TRUTH)
    with pytest.raises(ValueError, match="only 3 categories"):
        metric.add(prediction={"boxes": [[0, 0, 1, 1]], "scores": [1.0], "labels": [3]}, reference=1)
    with pytest.raises(ValueError, match="not in"):
        metric.add(prediction={"boxes": [[0, 0, 1, 1]], "scores": [1.0], "labels": [0]}, reference=4)


# ----------------------------------------------------------------------------------------------- Flickr fixture
# Entry 0: "a man holds two dogs", phrases "a man" [0, 5) and "two dogs" [12, 20); the dogs have two boxes.
# Entry 1: "a cat", phrase [0, 5). Boxes are MDETR xywh (w = xmax - xmin): exclusive xyxy
#   man [10, 10, 60, 110], dog1 [100, 100, 120, 120], dog2 [140, 100, 160, 120], union of the dogs
#   [100, 100, 160, 120], cat [0, 0, 30, 30].
FLICKR_GROUND_TRUTH = {
    "images": [
        {"id": 0, "caption": "a man holds two dogs", "tokens_positive_eval": [[[0, 5]], [[12, 20]]]},
        {"id": 1, "caption": "a cat", "tokens_positive_eval": [[[0, 5]]]},
    ],
    "annotations": [
        {"id": 1, "image_id": 0, "bbox": [10, 10, 50, 100], "tokens_positive": [[0, 5]], "category_id": 1},
        {"id": 2, "image_id": 0, "bbox": [100, 100, 20, 20], "tokens_positive": [[12, 20]], "category_id": 1},
        {"id": 3, "image_id": 0, "bbox": [140, 100, 20, 20], "tokens_positive": [[12, 20]], "category_id": 1},
        {"id": 4, "image_id": 1, "bbox": [0, 0, 30, 30], "tokens_positive": [[0, 5]], "category_id": 1},
    ],
    "categories": [{"id": 1, "name": "object"}],
}
# The project's inclusive boxes of the same rectangles (x2 - 1, y2 - 1).
MAN, DOG1, UNION_OF_DOGS, CAT = [10, 10, 59, 109], [100, 100, 119, 119], [100, 100, 159, 119], [0, 0, 29, 29]


def test_flickr_perfect_detector_scores_one_in_each_protocol():
    separate = [
        {"boxes": [MAN, DOG1], "scores": [0.9, 0.8], "labels": [0, 1]},
        {"boxes": [CAT], "scores": [0.7], "labels": [0]},
    ]
    merged = copy.deepcopy(separate)
    merged[0]["boxes"][1] = UNION_OF_DOGS
    results = GLIPFlickrGroundingMetric(FLICKR_GROUND_TRUTH).compute(predictions=separate, references=[0, 1])
    assert results["separate"] == {"Recall@1": 1.0, "Recall@5": 1.0, "Recall@10": 1.0}
    # One dog against the union box: IoU = 400 / 1200 = 1/3 < 0.5 -> the dogs are missed when merged.
    assert results["merged"]["Recall@1"] == pytest.approx(2 / 3)
    results = GLIPFlickrGroundingMetric(FLICKR_GROUND_TRUTH).compute(predictions=merged, references=[0, 1])
    assert results["merged"] == {"Recall@1": 1.0, "Recall@5": 1.0, "Recall@10": 1.0}
    assert results["num_phrases"] == 3


def test_flickr_ranked_boxes_exact_recalls():
    # man: a box shifted 25 px (exclusive [35, 10, 85, 110]: IoU 2500 / 7500 = 1/3) ranked above the exact box
    #   -> missed at 1, found at 5 (both protocols: one gt box).
    # dogs: the union box ranked above dog1 -> separate: union vs each dog IoU 1/3, miss at 1, dog1 found at 5;
    #   merged: found at 1.
    # cat: nothing predicted -> missed at every k.
    # separate: R@1 = 0/3, R@5 = R@10 = 2/3; merged: R@1 = 1/3, R@5 = R@10 = 2/3.
    predictions = [
        {
            "boxes": [[35, 10, 84, 109], MAN, UNION_OF_DOGS, DOG1],
            "scores": [0.9, 0.8, 0.7, 0.6],
            "labels": [0, 0, 1, 1],
        },
        {"boxes": torch.zeros(0, 4), "scores": [], "labels": []},
    ]
    results = GLIPFlickrGroundingMetric(FLICKR_GROUND_TRUTH).compute(predictions=predictions, references=[0, 1])
    assert results["separate"] == pytest.approx({"Recall@1": 0.0, "Recall@5": 2 / 3, "Recall@10": 2 / 3})
    assert results["merged"] == pytest.approx({"Recall@1": 1 / 3, "Recall@5": 2 / 3, "Recall@10": 2 / 3})


def test_flickr_top_k_cuts_the_ranking():
    # The exact man box is ranked second: found at k=2, not at k=1.
    predictions = [{"boxes": [[35, 10, 84, 109], MAN], "scores": [0.9, 0.8], "labels": [0, 0]}]
    metric = GLIPFlickrGroundingMetric(FLICKR_GROUND_TRUTH, top_k=(1, 2))
    results = metric.compute(predictions=predictions, references=[{"image_id": 0}])
    # entry 0 only: 2 phrases (man found at 2, dogs never) -> R@1 = 0, R@2 = 1/2
    assert results["separate"] == pytest.approx({"Recall@1": 0.0, "Recall@2": 0.5})
    assert results["num_entries_not_evaluated"] == 1


def test_flickr_bad_input_is_named():
    with pytest.raises(ValueError, match="top_k"):
        GLIPFlickrGroundingMetric(FLICKR_GROUND_TRUTH, top_k=(0,))
    with pytest.raises(ValueError, match="iou_threshold"):
        GLIPFlickrGroundingMetric(FLICKR_GROUND_TRUTH, iou_threshold=1.5)
    no_eval = copy.deepcopy(FLICKR_GROUND_TRUTH)
    del no_eval["images"][0]["tokens_positive_eval"]
    with pytest.raises(ValueError, match="tokens_positive_eval"):
        GLIPFlickrGroundingMetric(no_eval)
    metric = GLIPFlickrGroundingMetric(FLICKR_GROUND_TRUTH)
    with pytest.raises(ValueError, match="has 1 phrases"):
        metric.add(prediction={"boxes": [CAT], "scores": [1.0], "labels": [1]}, reference=1)
    with pytest.raises(ValueError, match="not in"):
        metric.add(prediction={"boxes": [CAT], "scores": [1.0], "labels": [0]}, reference=5)
    with pytest.raises(ValueError, match="No image entry"):
        metric.compute()


def test_coco_summary_equals_pycocotools_summarize():
    """At COCO's default budget the figures are those of `COCOeval.summarize` on the same detections."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    predictions = perfect_coco_predictions()
    predictions[1]["boxes"] = inclusive([[20, 0, 100, 100]])
    predictions[0]["scores"] = torch.tensor([0.6, 0.95])
    ours = GLIPCocoMetric(COCO_GROUND_TRUTH).compute(predictions=predictions, references=[1, 2])
    detections = [
        {"image_id": 1, "category_id": 3, "bbox": [10, 10, 4, 4], "score": 0.6},
        {"image_id": 1, "category_id": 3, "bbox": [50, 50, 40, 40], "score": 0.95},
        {"image_id": 2, "category_id": 7, "bbox": [20, 0, 100, 100], "score": 0.9},
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO()
        ground_truth.dataset = copy.deepcopy(COCO_GROUND_TRUTH)
        ground_truth.createIndex()
        evaluator = COCOeval(ground_truth, ground_truth.loadRes(detections), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    reference = dict(zip(("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"),
                         evaluator.stats.tolist()))  # fmt: skip
    assert {name: ours[name] for name in reference} == pytest.approx(reference, abs=1e-12)


def test_coco_detection_budget_is_per_image():
    # Budget 2 per image: image 1 keeps its two best detections, a square false positive (0.95, another category)
    # and the small circle (0.9); the medium circle (0.8) is cut -> circle recall 1/2 at every IoU; the ranked circle
    # detections are one TP -> precision 1 up to recall 1/2, 0 beyond: 51 of 101 recall thresholds -> 51/101.
    predictions = perfect_coco_predictions()
    predictions[0] = {
        "boxes": torch.cat([inclusive([[150, 150, 20, 20]]), predictions[0]["boxes"]]),
        "scores": torch.tensor([0.95, 0.9, 0.8]),
        "labels": torch.tensor([1, 0, 0]),
    }
    results = GLIPCocoMetric(COCO_GROUND_TRUTH, max_detections=2).compute(predictions=predictions, references=[1, 2])
    assert results["per_category"]["circle"] == pytest.approx(51 / 101)
    assert results["AR2"] == pytest.approx((0.5 + 1.0) / 2)
    assert "AR100" not in results and "AR10" not in results
    # With the default budget nothing is cut: the square FP ranks above the square TP -> square AP 1/2.
    results = GLIPCocoMetric(COCO_GROUND_TRUTH).compute(predictions=predictions, references=[1, 2])
    assert results["per_category"] == pytest.approx({"circle": 1.0, "square": 0.5})


def test_coco_order_of_images_and_extra_keys_do_not_matter():
    predictions = perfect_coco_predictions()
    predictions[1]["boxes"] = inclusive([[20, 0, 100, 100]])
    for prediction in predictions:
        prediction["text_labels"] = ["whatever"] * len(prediction["labels"])  # `detect` adds the names
    forward = GLIPCocoMetric(COCO_GROUND_TRUTH).compute(predictions=predictions, references=[1, 2])
    backward = GLIPCocoMetric(COCO_GROUND_TRUTH).compute(predictions=predictions[::-1], references=[2, 1])
    assert forward == backward
