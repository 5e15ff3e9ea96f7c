"""The GLIP metrics through 🤗 `evaluate` (`evaluation_metrics_glip.py`): same numbers as the in-memory classes,
`evaluate.load` of the metric scripts, and evaluate's own 2-process gathering (file locks) equal to 1 process."""

from __future__ import annotations

import json
import threading

import evaluate
import evaluate.config
import pytest
import torch
from test_evaluation_metrics import (
    CAT,
    COCO_GROUND_TRUTH,
    DOG1,
    FLICKR_GROUND_TRUTH,
    LVIS_GROUND_TRUTH,
    MAN,
    inclusive,
    lvis_predictions,
    perfect_coco_predictions,
)

from transformers_glip.evaluation.evaluate_metrics import (
    GLIPCocoEvaluationMetric,
    GLIPFlickrGroundingEvaluationMetric,
    GLIPLvisEvaluationMetric,
    metric_script_path,
)
from transformers_glip.evaluation.metrics import GLIPCocoMetric, GLIPFlickrGroundingMetric, GLIPLvisMetric


def shifted_coco_predictions():
    """Square shifted 20 px (square AP 0.4, AP 0.7, see test_metrics_glip), as `detect` returns them."""
    predictions = perfect_coco_predictions()
    predictions[1]["boxes"] = inclusive([[20, 0, 100, 100]])
    for prediction in predictions:
        prediction["text_labels"] = ["name"] * len(prediction["labels"])  # dropped by the schema
    return predictions


@pytest.fixture(scope="module")
def modules_cache(tmp_path_factory):
    """`evaluate.load` copies scripts into HF_MODULES_CACHE: keep it in a temporary folder. One folder for the
    module: the `evaluate_modules` package it creates there stays imported for the whole session."""
    saved = evaluate.config.HF_MODULES_CACHE
    evaluate.config.HF_MODULES_CACHE = tmp_path_factory.mktemp("modules")
    yield evaluate.config.HF_MODULES_CACHE
    evaluate.config.HF_MODULES_CACHE = saved


def test_coco_through_evaluate_equals_the_in_memory_metric(tmp_path):
    expected = GLIPCocoMetric(COCO_GROUND_TRUTH).compute(predictions=shifted_coco_predictions(), references=[1, 2])
    metric = GLIPCocoEvaluationMetric(annotation_file=COCO_GROUND_TRUTH, cache_dir=str(tmp_path))
    predictions = shifted_coco_predictions()
    metric.add_batch(predictions=predictions[:1], references=[1])
    metric.add(prediction=predictions[1], reference={"image_id": torch.tensor(2)})
    results = metric.compute()
    assert results == expected
    assert results["AP"] == pytest.approx(0.7)
    # the state is cleared by compute, as every evaluate metric
    assert len(metric) == 0


def test_ground_truth_as_a_compute_keyword_and_options(tmp_path):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(COCO_GROUND_TRUTH))
    metric = GLIPCocoEvaluationMetric(cache_dir=str(tmp_path))
    results = metric.compute(predictions=shifted_coco_predictions(), references=[1, 2], annotation_file=str(path))
    assert results["AP"] == pytest.approx(0.7)
    # labels in the order ["square", "circle"] -> category_ids [7, 3]
    swapped = perfect_coco_predictions()
    swapped[0]["labels"] = torch.tensor([1, 1])
    swapped[1]["labels"] = torch.tensor([0])
    metric = GLIPCocoEvaluationMetric(annotation_file=path, category_ids=[7, 3], cache_dir=str(tmp_path))
    assert metric.compute(predictions=swapped, references=[1, 2])["AP"] == pytest.approx(1.0, abs=1e-12)


def test_lvis_and_flickr_through_evaluate(tmp_path):
    expected = GLIPLvisMetric(LVIS_GROUND_TRUTH).compute(predictions=lvis_predictions(True), references=[1, 2, 3])
    metric = GLIPLvisEvaluationMetric(annotation_file=LVIS_GROUND_TRUTH, cache_dir=str(tmp_path))
    results = metric.compute(predictions=lvis_predictions(True), references=[1, 2, 3])
    assert results == expected
    assert results["APc"] == pytest.approx(0.5)
    standard = GLIPLvisEvaluationMetric(
        annotation_file=LVIS_GROUND_TRUTH, fixed_ap=False, max_detections_per_image=1, cache_dir=str(tmp_path)
    )
    assert standard.compute(predictions=lvis_predictions(True), references=[1, 2, 3])["AP"] == pytest.approx(1 / 6)

    predictions = [
        {"boxes": [MAN, DOG1], "scores": [0.9, 0.8], "labels": [0, 1]},
        {"boxes": [CAT], "scores": [0.7], "labels": [0]},
    ]
    expected = GLIPFlickrGroundingMetric(FLICKR_GROUND_TRUTH).compute(predictions=predictions, references=[0, 1])
    metric = GLIPFlickrGroundingEvaluationMetric(annotation_file=FLICKR_GROUND_TRUTH, cache_dir=str(tmp_path))
    results = metric.compute(predictions=predictions, references=[0, 1])
    assert results == expected
    assert results["separate"]["Recall@1"] == 1.0 and results["merged"]["Recall@1"] == pytest.approx(2 / 3)


def test_empty_detections_are_stored(tmp_path):
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
    metric = GLIPCocoEvaluationMetric(annotation_file=COCO_GROUND_TRUTH, cache_dir=str(tmp_path))
    metric.add_batch(predictions=[empty, perfect_coco_predictions()[1]], references=[1, 2])
    results = metric.compute()
    assert results["per_category"] == pytest.approx({"circle": 0.0, "square": 1.0}, abs=1e-12)


@pytest.mark.parametrize("name", ["coco", "lvis", "flickr"])
def test_evaluate_load_of_the_metric_scripts(name, tmp_path, modules_cache):
    ground_truth, predictions, references, key = {
        "coco": (COCO_GROUND_TRUTH, shifted_coco_predictions(), [1, 2], "AP"),
        "lvis": (LVIS_GROUND_TRUTH, lvis_predictions(True), [1, 2, 3], "AP"),
        "flickr": (FLICKR_GROUND_TRUTH, [{"boxes": [CAT], "scores": [0.5], "labels": [0]}], [1], "num_phrases"),
    }[name]
    metric = evaluate.load(metric_script_path(name), annotation_file=ground_truth, cache_dir=str(tmp_path))
    assert isinstance(metric, evaluate.Metric)
    assert list(metric.features) == ["predictions", "references"]
    expected = {
        "coco": GLIPCocoMetric,
        "lvis": GLIPLvisMetric,
        "flickr": GLIPFlickrGroundingMetric,
    }[name](ground_truth).compute(predictions=predictions, references=references)
    metric.add_batch(predictions=predictions, references=references)
    assert metric.compute()[key] == expected[key]
    assert any(modules_cache.rglob(metric_script_path(name).rsplit("/", 1)[-1]))  # the copied script


def run_process(process_id: int, num_process: int, cache_dir, predictions, references, results: dict) -> None:
    metric = GLIPCocoEvaluationMetric(
        annotation_file=COCO_GROUND_TRUTH,
        num_process=num_process,
        process_id=process_id,
        cache_dir=str(cache_dir),
        experiment_id="two_process_test",
        timeout=30,
    )
    for prediction, reference in zip(predictions, references):
        metric.add_batch(predictions=[prediction], references=[reference])
    results[process_id] = metric.compute()


def test_two_processes_through_evaluate_file_locks_equal_one(tmp_path):
    """evaluate's distributed mode: each process writes its Arrow file under a file lock in the shared cache_dir;
    process 0 waits for the others' locks, reads every file and computes; the others return None."""
    predictions, references = shifted_coco_predictions(), [1, 2]
    single = GLIPCocoEvaluationMetric(annotation_file=COCO_GROUND_TRUTH, cache_dir=str(tmp_path / "single"))
    expected = single.compute(predictions=predictions, references=references)
    results: dict = {}
    errors: list = []

    def target(process_id):
        try:
            run_process(process_id, 2, tmp_path / "shared", predictions[process_id::2], references[process_id::2],
                        results)  # fmt: skip
        except Exception as error:  # noqa: BLE001 - surfaced below
            errors.append(error)

    threads = [threading.Thread(target=target, args=(process_id,)) for process_id in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert results[1] is None
    assert results[0] == expected
    assert results[0]["num_images"] == 2
    assert not list((tmp_path / "shared").rglob("*.arrow"))  # process 0 deleted every cache file


def test_bad_input_is_named(tmp_path):
    metric = GLIPCocoEvaluationMetric(cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="needs the ground truth"):
        metric.compute(predictions=perfect_coco_predictions(), references=[1, 2])
    with pytest.raises(ValueError, match="not a file"):
        GLIPCocoEvaluationMetric(annotation_file="/no/such.json", cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="max_detections"):
        GLIPCocoEvaluationMetric(annotation_file=COCO_GROUND_TRUTH, max_detections=0, cache_dir=str(tmp_path))
    metric = GLIPCocoEvaluationMetric(annotation_file=COCO_GROUND_TRUTH, cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="lacks"):
        metric.add(prediction={"boxes": [[0, 0, 1, 1]], "scores": [0.5]}, reference=1)
    with pytest.raises(TypeError, match="dict"):
        metric.add_batch(predictions=["boxes"], references=[1])
    with pytest.raises(TypeError, match="image id"):
        metric.add(prediction=perfect_coco_predictions()[0], reference="1")
    with pytest.raises(ValueError, match="expected format"):  # evaluate's own schema check: 3 coordinates
        metric.add(prediction={"boxes": [[0, 0, 1]], "scores": [0.5], "labels": [0]}, reference=1)
    with pytest.raises(ValueError, match="not in `annotation_file`"):  # the metric's check, at compute
        metric.compute(predictions=[perfect_coco_predictions()[0]], references=[99])
    with pytest.raises(ValueError, match="Unknown metric"):
        metric_script_path("voc")
