"""Evaluation runs (`evaluation_suite_glip.py`) and `examples/evaluate.py` on small generated data: prompts with
overrides, process split + gather equal to one process, a perfect detector scoring 1.0 through the library path,
and the example's outputs for --coco / --lvis / --flickr / --suite."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from accelerate.state import AcceleratorState, PartialState
from PIL import Image, ImageDraw

from transformers_glip import GLIPForGrounding, GLIPImageProcessor, GLIPProcessor
from transformers_glip.evaluation.suite import (
    build_category_prompt,
    compute_dataset_metrics,
    ground_truth_predictor,
    load_evaluation_dataset,
    merge_process_predictions,
    model_predictor,
    predict_samples,
    read_suite_config,
    split_for_process,
    suite_summary,
    write_evaluation_report,
)
from transformers_glip.inference_glip import encode_detection_prompts
from transformers_glip.prompts_glip import build_detection_prompt

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPOSITORY, "examples", "evaluate.py")
EXACT = 1e-12  # pycocotools' precision is tp / (tp + fp + eps)
NUM_LVIS_CATEGORIES = 100  # enough names to need several 256-token prompts

pytestmark = pytest.mark.usefixtures("single_torch_thread")


# ----------------------------------------------------------------------------------------------- generated data


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Three images with rectangles; a COCO json (circle id 3, square id 7), an LVIS json with 100 categories, an
    MDETR-style Flickr json (two sentences of image 1, one of image 2) and a suite yaml."""
    root = tmp_path_factory.mktemp("evaluation_data")
    images_dir = root / "images"
    images_dir.mkdir()
    boxes = {1: [[10, 10, 30, 20], [50, 40, 20, 30]], 2: [[5, 5, 60, 50]], 3: [[20, 30, 40, 25]]}
    for image_id, image_boxes in boxes.items():
        image = Image.new("RGB", (96, 80), (200, 200, 200))
        draw = ImageDraw.Draw(image)
        for x, y, width, height in image_boxes:
            draw.rectangle([x, y, x + width - 1, y + height - 1], fill=(30 * image_id, 90, 160))
        image.save(images_dir / f"{image_id}.png")
    images = [{"id": image_id, "file_name": f"{image_id}.png", "width": 96, "height": 80} for image_id in boxes]
    labels = {1: [3, 7], 2: [7], 3: [3]}
    annotations = [
        {"id": 0, "image_id": image_id, "category_id": category, "bbox": box,
         "area": box[2] * box[3], "iscrowd": 0}
        for image_id in boxes for box, category in zip(boxes[image_id], labels[image_id])
    ]  # fmt: skip
    for index, annotation in enumerate(annotations):
        annotation["id"] = index + 1
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": 3, "name": "circle"}, {"id": 7, "name": "square"}]}  # fmt: skip
    (root / "coco.json").write_text(json.dumps(coco))

    lvis_categories = [
        {"id": index + 1, "name": f"object_{index}", "frequency": "rcf"[index % 3]}
        for index in range(NUM_LVIS_CATEGORIES)
    ]
    lvis_annotations = [
        {**annotation, "category_id": 1 if annotation["category_id"] == 3 else 2} for annotation in annotations
    ]
    lvis_images = [{**image, "neg_category_ids": [5], "not_exhaustive_category_ids": []} for image in images]
    lvis = {"images": lvis_images, "annotations": lvis_annotations, "categories": lvis_categories}
    (root / "lvis.json").write_text(json.dumps(lvis))

    flickr = {
        "images": [
            {"id": 0, "file_name": "1.png", "caption": "a blue box and a tall box",
             "tokens_positive_eval": [[[0, 10]], [[15, 25]]]},
            {"id": 1, "file_name": "1.png", "caption": "two boxes", "tokens_positive_eval": [[[0, 9]]]},
            {"id": 2, "file_name": "2.png", "caption": "a big box", "tokens_positive_eval": [[[0, 9]]]},
        ],
        "annotations": [
            {"id": 1, "image_id": 0, "bbox": [10, 10, 30, 20], "tokens_positive": [[0, 10]], "category_id": 1},
            {"id": 2, "image_id": 0, "bbox": [50, 40, 20, 30], "tokens_positive": [[15, 25]], "category_id": 1},
            {"id": 3, "image_id": 1, "bbox": [10, 10, 30, 20], "tokens_positive": [[0, 9]], "category_id": 1},
            {"id": 4, "image_id": 1, "bbox": [50, 40, 20, 30], "tokens_positive": [[0, 9]], "category_id": 1},
            {"id": 5, "image_id": 2, "bbox": [5, 5, 60, 50], "tokens_positive": [[0, 9]], "category_id": 1},
        ],
        "categories": [{"id": 1, "name": "object"}],
    }  # fmt: skip
    (root / "flickr.json").write_text(json.dumps(flickr))

    suite = {
        "datasets": [
            {"name": "plain", "annotations": "coco.json", "images": "images"},
            {"name": "prompted", "annotations": "coco.json", "images": "images",
             "prompts": {"circle": {"prefix": "a ", "name": "round thing", "suffix": " in a picture"}}},
        ]
    }  # fmt: skip
    (root / "suite.yaml").write_text(yaml.safe_dump(suite))
    return root


@pytest.fixture(scope="module")
def tiny_model(tiny_a_dir):
    return GLIPForGrounding.from_pretrained(tiny_a_dir).eval()


@pytest.fixture(scope="module")
def small_processor(tiny_a_dir):
    processor = GLIPProcessor.from_pretrained(tiny_a_dir)
    return GLIPProcessor(GLIPImageProcessor(min_size=64, max_size=107), processor.tokenizer)


@pytest.fixture(scope="module")
def evaluate_script():
    specification = importlib.util.spec_from_file_location("evaluate_example", SCRIPT)
    module = importlib.util.module_from_spec(specification)
    specification.loader.exec_module(module)
    return module


@pytest.fixture
def fresh_accelerator_state():
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    PartialState._reset_state()


# ----------------------------------------------------------------------------------------------- prompts


def test_category_prompt_without_overrides_is_the_official_prompt():
    names = ["traffic_light", "bow_(weapon)", "person"]
    assert build_category_prompt(names) == tuple(build_detection_prompt(names))


def test_category_prompt_overrides_span_only_the_name():
    caption, spans = build_category_prompt(
        ["fish", "jellyfish"], {"fish": {"prefix": "a ", "name": "small fish", "suffix": " in water"}}
    )
    assert caption == "a small fish in water. jellyfish"
    assert [caption[begin:end] for ((begin, end),) in spans] == ["small fish", "jellyfish"]
    listed, _ = build_category_prompt(["fish", "jellyfish"], [{"suffix": " swimming"}, {"name": "medusa"}])
    assert listed == "fish swimming. medusa"


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ({"shark": {"name": "a"}}, ValueError, "unknown categories"),
        ([{"name": "a"}], ValueError, "one entry per category"),
        ({"fish": {"label": "a"}}, ValueError, "keys among"),
        ({"fish": {"name": 3}}, TypeError, "strings"),
        ({"fish": {"name": " "}}, ValueError, "empty"),
        ("fish", TypeError, "dict by category name"),
    ],
)
def test_category_prompt_bad_overrides_are_named(overrides, error, match):
    with pytest.raises(error, match=match):
        build_category_prompt(["fish", "jellyfish"], overrides)


# ----------------------------------------------------------------------------------------------- split / gather


def test_split_for_process_shares_cover_the_items_once():
    items = list(range(7))
    shares = [split_for_process(items, index, 3) for index in range(3)]
    assert shares == [[0, 1, 2], [3, 4], [5, 6]]
    assert split_for_process(items[:1], 1, 2) == []
    with pytest.raises(ValueError, match="process_index"):
        split_for_process(items, 2, 2)
    with pytest.raises(ValueError, match="num_processes"):
        split_for_process(items, 0, 0)


def test_two_processes_equal_one_process_with_the_model(data, tiny_model, small_processor):
    """Process 0 and process 1 of 2 predict their shares (run here one after the other); their concatenation (what
    `gather_object` returns) merged and scored equals the 1-process run, metric for metric."""
    dataset = load_evaluation_dataset("coco", data / "coco.json", data / "images")
    predictor = model_predictor(tiny_model, small_processor)
    single = predict_samples(predictor, dataset, dataset.samples)
    gathered = []
    for process_index in (0, 1):
        share = split_for_process(dataset.samples, process_index, 2)
        assert len(share) in (1, 2)
        gathered += predict_samples(predictor, dataset, share)
    merged = merge_process_predictions(gathered, dataset.samples)
    assert merged == single
    assert len(single[0]["scores"]) > 0  # threshold=None: the top detections of a random model
    assert compute_dataset_metrics(dataset, merged) == compute_dataset_metrics(dataset, single)
    with pytest.raises(ValueError, match="more than one process"):
        merge_process_predictions(gathered + gathered[:1], dataset.samples)
    with pytest.raises(ValueError, match="miss samples"):
        merge_process_predictions(gathered[1:], dataset.samples)


def test_model_path_equals_detect_and_chunks_large_vocabularies(data, tiny_model, small_processor):
    from transformers_glip import detect

    dataset = load_evaluation_dataset("lvis", data / "lvis.json", data / "images", max_images=1)
    assert len(encode_detection_prompts(small_processor, dataset.category_names)["chunk_label_indices"]) > 1
    predictions = predict_samples(model_predictor(tiny_model, small_processor), dataset, dataset.samples)
    image = Image.open(dataset.samples[0].image_path).convert("RGB")
    expected = detect(tiny_model, small_processor, image, dataset.category_names, threshold=None)[0]
    assert predictions[0]["labels"] == expected["labels"].tolist()
    assert max(predictions[0]["labels"]) < NUM_LVIS_CATEGORIES


def test_caption_prompts_give_phrase_labels(data, tiny_model, small_processor):
    dataset = load_evaluation_dataset("flickr", data / "flickr.json", data / "images")
    predictions = predict_samples(model_predictor(tiny_model, small_processor), dataset, dataset.samples)
    for sample, prediction in zip(dataset.samples, predictions):
        assert prediction["reference"] == sample.reference
        assert set(prediction["labels"]) <= set(range(len(sample.phrase_spans)))
    results = compute_dataset_metrics(dataset, predictions)
    assert results["num_phrases"] == 4


# ----------------------------------------------------------------------------------------------- perfect detector


@pytest.mark.parametrize("task", ["coco", "lvis", "flickr"])
def test_perfect_detector_scores_one_through_the_library_path(task, data):
    dataset = load_evaluation_dataset(task, data / f"{task}.json", data / "images")
    gathered = []
    for process_index in (0, 1):
        share = split_for_process(dataset.samples, process_index, 2)
        gathered += predict_samples(ground_truth_predictor(), dataset, share, batch_size=2)
    results = compute_dataset_metrics(dataset, merge_process_predictions(gathered, dataset.samples))
    if task == "flickr":
        assert results["separate"] == {"Recall@1": 1.0, "Recall@5": 1.0, "Recall@10": 1.0}
        # entry 1's phrase has two boxes; their union is not one of them -> merged misses it at k=1 (3 of 4)
        assert results["merged"]["Recall@1"] == pytest.approx(3 / 4)
    else:
        for key in ("AP", "AP50", "AP75"):
            assert results[key] == pytest.approx(1.0, abs=EXACT), key
    if task == "lvis":
        assert results["APr"] == pytest.approx(1.0, abs=EXACT) and results["APc"] == pytest.approx(1.0, abs=EXACT)
        assert results["APf"] == -1.0  # no frequent category has ground truth


def shifted_predictor(fraction: float):
    """The ground truth moved right by `fraction` of each box's width: IoU = (1 - fraction) / (1 + fraction)."""
    perfect = ground_truth_predictor()

    def predict(dataset, samples, images):
        predictions = perfect(dataset, samples, images)
        for prediction in predictions:
            prediction["boxes"] = [
                [x1 + fraction * (x2 - x1 + 1), y1, x2 + fraction * (x2 - x1 + 1), y2]
                for x1, y1, x2, y2 in prediction["boxes"]
            ]
        return predictions

    return predict


def test_shifted_detector_scores_less_by_the_iou_thresholds_it_misses(data):
    dataset = load_evaluation_dataset("coco", data / "coco.json", data / "images")
    # 10%: IoU 0.9 / 1.1 = 0.818 -> a true positive at IoU 0.50 .. 0.80 (7 of the 10 thresholds) -> AP 0.7, AP50 1.
    results = compute_dataset_metrics(dataset, predict_samples(shifted_predictor(0.1), dataset, dataset.samples))
    assert (
        results["AP"] == pytest.approx(0.7)
        and results["AP50"] == pytest.approx(1.0)
        and results["AP75"] == pytest.approx(1.0)
    )
    # 40%: IoU 0.6 / 1.4 = 0.43 < 0.5 -> every detection is a false positive.
    results = compute_dataset_metrics(dataset, predict_samples(shifted_predictor(0.4), dataset, dataset.samples))
    assert results["AP50"] == 0.0 and results["AP"] == 0.0


def test_report_files_and_suite_average(data, tmp_path):
    entries = read_suite_config(data / "suite.yaml")
    assert [entry.name for entry in entries] == ["plain", "prompted"]
    results = {}
    for entry in entries:
        dataset = load_evaluation_dataset("coco", entry.annotation_file, entry.image_dir, name=entry.name,
                                          prompt_overrides=entry.prompts)  # fmt: skip
        predictions = predict_samples(ground_truth_predictor(), dataset, dataset.samples)
        metrics = compute_dataset_metrics(dataset, predictions)
        results[entry.name] = {"task": "coco", "num_samples": len(predictions), "metrics": metrics}
    prompted = load_evaluation_dataset("coco", entries[1].annotation_file, entries[1].image_dir,
                                       prompt_overrides=entries[1].prompts)  # fmt: skip
    assert prompted.prompt[0] == "a round thing in a picture. square"
    suite = suite_summary({name: entry["metrics"] for name, entry in results.items()})
    assert suite["average"]["AP"] == pytest.approx(1.0, abs=EXACT)
    paths = write_evaluation_report(tmp_path / "report", {"model": "perfect", "datasets": results, "suite": suite})
    assert json.loads(open(paths["json"]).read())["suite"]["datasets"].keys() == {"plain", "prompted"}
    markdown = open(paths["markdown"]).read()
    assert "| **average** | 100.0 | 100.0 |" in markdown and "| circle | 100.0 |" in markdown
    assert "## prompted (coco, 3 samples)" in markdown
    assert Image.open(paths["figure"]).size[0] > 100


def test_bad_datasets_and_suites_are_named(data, tmp_path):
    with pytest.raises(ValueError, match="task"):
        load_evaluation_dataset("voc", data / "coco.json", data / "images")
    with pytest.raises(ValueError, match="not a file"):
        load_evaluation_dataset("coco", tmp_path / "none.json", data / "images")
    with pytest.raises(ValueError, match="not a folder"):
        load_evaluation_dataset("coco", data / "coco.json", tmp_path / "none")
    with pytest.raises(ValueError, match="tokens_positive_eval"):
        load_evaluation_dataset("flickr", data / "coco.json", data / "images")
    with pytest.raises(ValueError, match="max_images"):
        load_evaluation_dataset("coco", data / "coco.json", data / "images", max_images=0)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ValueError, match="not valid json"):
        load_evaluation_dataset("coco", broken, data / "images")
    for content, match in (
        ("datasets: []", "non-empty list"),
        ("datasets: [{name: a, images: x}]", "needs `annotations`"),
        ("datasets: [{annotations: a.json, images: x, prompt: {}}]", "unknown keys"),
        ("datasets: [{name: a, annotations: a.json, images: x}, {name: a, annotations: b.json, images: x}]", "twice"),
        ("datasets: [", "not valid yaml"),
    ):
        suite = tmp_path / "suite.yaml"
        suite.write_text(content)
        with pytest.raises(ValueError, match=match):
            read_suite_config(suite)
    (tmp_path / "images").mkdir()
    missing_image = {"images": [{"id": 1, "file_name": "gone.png"}], "annotations": [], "categories": []}
    (tmp_path / "missing.json").write_text(json.dumps(missing_image))
    dataset = load_evaluation_dataset("coco", tmp_path / "missing.json", tmp_path / "images")
    with pytest.raises(ValueError, match="cannot read image"):
        predict_samples(ground_truth_predictor(), dataset, dataset.samples)


# ----------------------------------------------------------------------------------------------- examples/evaluate.py


def run_example(evaluate_script, tiny_a_dir, output_dir, *data_arguments):
    return evaluate_script.main(
        ["--model", str(tiny_a_dir), *data_arguments, "--output_dir", str(output_dir), "--min_size", "64",
         "--max_size", "107", "--cpu"]
    )  # fmt: skip


@pytest.mark.usefixtures("fresh_accelerator_state")
@pytest.mark.parametrize("task", ["coco", "lvis", "flickr", "suite"])
def test_example_script_writes_the_report(task, data, tiny_a_dir, evaluate_script, tmp_path):
    arguments = ["--suite", str(data / "suite.yaml")] if task == "suite" else [f"--{task}", str(data / f"{task}.json"),
                                                                              str(data / "images")]  # fmt: skip
    if task == "lvis":
        arguments += ["--max_images", "1"]
    summary = run_example(evaluate_script, tiny_a_dir, tmp_path, *arguments)
    for name in ("summary.json", "summary.md", "per_category_ap.png"):
        assert (tmp_path / name).is_file(), name
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written == json.loads(json.dumps(summary))
    assert written["num_processes"] == 1
    expected_datasets = {"coco": ["coco"], "lvis": ["lvis"], "flickr": ["flickr"], "suite": ["plain", "prompted"]}
    assert list(written["datasets"]) == expected_datasets[task]
    metrics = next(iter(written["datasets"].values()))["metrics"]
    expected_keys = {
        "coco": {"AP", "AP50", "AP75", "APs", "APm", "APl", "per_category", "num_images"},
        "lvis": {"AP", "APr", "APc", "APf", "per_category", "protocol"},
        "flickr": {"separate", "merged", "num_phrases"},
        "suite": {"AP", "AP50", "per_category"},
    }[task]
    assert expected_keys <= set(metrics)
    if task == "suite":
        assert set(written["suite"]["datasets"]) == {"plain", "prompted"} and "AP" in written["suite"]["average"]
        assert "| **average** |" in (tmp_path / "summary.md").read_text()
    if task == "lvis":
        assert metrics["protocol"] == "fixed_ap" and len(metrics["per_category"]) == NUM_LVIS_CATEGORIES


@pytest.mark.usefixtures("fresh_accelerator_state")
def test_example_script_bad_arguments_exit(data, tiny_a_dir, evaluate_script, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        run_example(evaluate_script, tiny_a_dir, tmp_path, "--coco", str(tmp_path / "none.json"), str(data / "images"))
    assert "is not a file" in str(stop.value.code)
    with pytest.raises(SystemExit) as stop:
        evaluate_script.main(["--model", str(tiny_a_dir), "--output_dir", str(tmp_path)])  # no dataset
    assert stop.value.code == 2
    with pytest.raises(SystemExit) as stop:
        run_example(evaluate_script, tiny_a_dir, tmp_path, "--suite", "s.yaml", "--batch_size", "0")
    assert stop.value.code == 2 and "--batch_size must be a positive integer" in capsys.readouterr().err


def test_detections_are_plain_lists_for_gathering(data, tiny_model, small_processor):
    dataset = load_evaluation_dataset("coco", data / "coco.json", data / "images", max_images=1)
    (prediction,) = predict_samples(model_predictor(tiny_model, small_processor), dataset, dataset.samples)
    assert set(prediction) == {"reference", "boxes", "scores", "labels"}
    assert all(isinstance(value, list) for key, value in prediction.items() if key != "reference")
    assert torch.tensor(prediction["boxes"]).shape[1] == 4


@pytest.mark.usefixtures("fresh_accelerator_state")
def test_real_two_process_run_equals_one_process(data, tiny_a_dir, evaluate_script, tmp_path):
    """`torchrun --nproc_per_node 2` (gloo on CPU): each process predicts half of the images, gather_object brings
    them to process 0; the summary equals the in-process 1-process run's."""
    arguments = ["--coco", str(data / "coco.json"), str(data / "images")]
    single = run_example(evaluate_script, tiny_a_dir, tmp_path / "one", *arguments)
    environment = {
        **os.environ,
        "ACCELERATE_USE_CPU": "true",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([os.path.join(REPOSITORY, "src"), os.environ.get("PYTHONPATH", "")]),
    }
    command = [
        os.path.join(os.path.dirname(sys.executable), "torchrun"), "--nproc_per_node", "2", "--master_port", "29531",
        SCRIPT, "--model", str(tiny_a_dir), *arguments, "--output_dir", str(tmp_path / "two"), "--min_size", "64",
        "--max_size", "107",
    ]  # fmt: skip
    completed = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert two["num_processes"] == 2 and single["num_processes"] == 1
    assert two["datasets"] == json.loads(json.dumps(single["datasets"]))


def test_lvis_images_named_by_coco_url(data, tmp_path):
    """LVIS v1 images carry only `coco_url`: the official layout IMAGE_DIR/val2017/x.jpg, or IMAGE_DIR/x.jpg."""
    lvis = json.loads((data / "lvis.json").read_text())
    for image in lvis["images"]:
        image["coco_url"] = f"http://images.cocodataset.org/val2017/{image.pop('file_name')}"
    (tmp_path / "lvis_url.json").write_text(json.dumps(lvis))
    flat = load_evaluation_dataset("lvis", tmp_path / "lvis_url.json", data / "images")
    assert flat.samples[0].image_path == os.path.join(data / "images", "1.png")
    (tmp_path / "coco" / "val2017").mkdir(parents=True)
    official = load_evaluation_dataset("lvis", tmp_path / "lvis_url.json", tmp_path / "coco")
    assert official.samples[0].image_path == os.path.join(tmp_path / "coco", "val2017", "1.png")
