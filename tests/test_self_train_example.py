"""`examples/self_train.py` end to end on a tiny world (teacher -> pseudo labels -> student), the pseudo-label
scoring against hidden boxes, the caption-only split of the shapes world, and bad arguments."""

import importlib.util
import io
import json
import os
import tarfile

import pytest

from transformers_glip.data.streaming import image_caption_source
from transformers_glip.data.synthetic_shapes import SyntheticShapesConfig, generate_caption_only_split

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPOSITORY, "examples", "self_train.py")
# The smallest world and model settings that still run every stage (64-72 px images, small shapes).
TINY = [
    "--num_labelled", "8", "--num_captions", "10", "--num_validation", "4", "--caption_shards", "2",
    "--steps", "2", "--per_device_train_batch_size", "2", "--min_size", "64", "--max_size", "96",
    "--train_min_sizes", "64", "--image_sizes", "64", "72", "--shape_sizes", "small",
    "--pseudo_label_threshold", "0.0", "--min_box_size", "0", "--num_pictures", "2", "--dataloader_num_workers", "0",
]  # fmt: skip


@pytest.fixture(scope="module")
def self_train():
    specification = importlib.util.spec_from_file_location("self_train_example", SCRIPT)
    module = importlib.util.module_from_spec(specification)
    specification.loader.exec_module(module)
    return module


def test_end_to_end_writes_the_summary_schema(self_train, tmp_path, capsys):
    output_dir = tmp_path / "run"
    summary = self_train.main(["--output_dir", str(output_dir), "--seeds", "0", "1", *TINY])
    written = json.loads((output_dir / "summary.json").read_text())
    assert written == summary and list(written) == ["runs"]
    assert [run["seed"] for run in written["runs"]] == [0, 1]
    for run in written["runs"]:
        assert tuple(run) == self_train.SUMMARY_KEYS
        assert all(0.0 <= run[key] <= 1.0 for key in self_train.SUMMARY_KEYS[1:]), run
    # The student learnt from pseudo labels the library wrote (thresholds in each shard's sidecar) and the same
    # number of steps as the teacher.
    details = json.loads((output_dir / "details.json").read_text())
    for run in details["runs"]:
        assert run["teacher"]["steps"] == run["student"]["steps"] == 2
        assert run["labelling"]["images_labelled"] == 10 and run["pseudo_label_quality"]["boxes"] > 0
    pseudo_dir = output_dir / "seed_0" / "pseudo_labels"
    sidecars = sorted(pseudo_dir.glob("shard-*.meta.json"))
    assert len(sidecars) == 2
    assert json.loads(sidecars[0].read_text())["filters"]["score_threshold"] == 0.0
    assert (output_dir / "pseudo_labels.png").stat().st_size > 0
    table = capsys.readouterr().out
    assert "| seed | teacher AP50 | student AP50 |" in table and "| mean |" in table


def test_student_from_the_teacher_is_compared_with_a_same_budget_control(self_train, tmp_path, capsys, monkeypatch):
    calls = []
    original = self_train.run_pretrain

    def recording_run_pretrain(argv):
        calls.append(argv)
        return original(argv)

    monkeypatch.setattr(self_train, "run_pretrain", recording_run_pretrain)
    output_dir = tmp_path / "run"
    summary = self_train.main(["--output_dir", str(output_dir), "--seeds", "0", "--student_init", "teacher", *TINY])
    (run,) = summary["runs"]
    assert tuple(run) == self_train.SUMMARY_KEYS + ("control_ap50", "control_never_seen_ap50")
    assert all(0.0 <= value <= 1.0 for key, value in run.items() if key != "seed"), run
    (details,) = json.loads((output_dir / "details.json").read_text())["runs"]
    assert details["control"]["steps"] == details["student"]["steps"] == details["teacher"]["steps"] == 2

    def option(argv, name):
        return [argv[index + 1] for index, item in enumerate(argv) if item == name]

    teacher, student, control = calls
    teacher_dir = str(output_dir / "seed_0" / "teacher")
    assert option(teacher, "--output_dir") == [teacher_dir] and not option(teacher, "--model_name_or_path")
    # Student and control both continue from the teacher; the control sees the labelled sources alone.
    assert option(student, "--model_name_or_path") == option(control, "--model_name_or_path") == [teacher_dir]
    assert option(student, "--dataset") == ["synthetic_detection", "synthetic_grounding", "pseudo_label"]
    assert (
        option(control, "--dataset") == option(teacher, "--dataset") == ["synthetic_detection", "synthetic_grounding"]
    )
    assert "| control AP50 | control never-seen AP50 |" in capsys.readouterr().out


def test_pseudo_labels_are_scored_against_the_hidden_boxes(self_train):
    hidden = {
        "000000001": {
            "boxes": [[0, 0, 19, 19], [40, 40, 59, 59], [80, 0, 99, 19]],
            "categories": ["red triangle", "green square", "blue square"],
            "tokens_positive": [[[2, 14]], [[20, 32]], []],  # the blue square is not mentioned
        },
        "000000002": {"boxes": [[0, 0, 9, 9]], "categories": ["red triangle"], "tokens_positive": [[[2, 14]]]},
    }
    rows = [
        {
            "sample_id": "captions:shard-00000.tar:000000001",
            "bboxes": [[1, 1, 19, 19], [0, 0, 19, 19], [40, 40, 59, 59], [80, 0, 99, 19]],
            "scores": [0.9, 0.8, 0.3, 0.6],
            "phrases": ["a red triangle", "a red triangle", "the left", "a green square"],
        }
    ]
    quality = self_train.pseudo_label_quality(rows, hidden, {"red triangle"})
    # red triangle found once (the duplicate is wrong), "the left" names nothing, the green-square box is off.
    assert quality["boxes"] == 4 and quality["correct"] == 1 and quality["non_object_boxes"] == 1
    assert quality["precision"] == 0.25
    assert quality["mentioned"] == 3 and quality["found"] == 1 and quality["recall"] == pytest.approx(1 / 3)
    assert quality["never_seen_boxes"] == 2 and quality["never_seen_precision"] == 0.5
    assert quality["never_seen_mentioned"] == 2 and quality["never_seen_recall"] == 0.5
    assert self_train.phrase_category("a Small RED circle") == "red circle"
    assert self_train.phrase_category("the left") is None


def test_caption_only_split_has_captions_and_no_boxes(tmp_path):
    config = SyntheticShapesConfig(seed=3, num_train=4, num_validation=2)
    metadata = generate_caption_only_split(tmp_path / "captions", config, num_images=40, num_shards=2)
    assert metadata["files"] == ["shard-00000.tar", "shard-00001.tar"]
    with tarfile.open(tmp_path / "captions" / "shard-00000.tar") as tar:
        names = tar.getnames()
        sidecar = json.load(io.TextIOWrapper(tar.extractfile("000000000.json")))
    assert names[:3] == ["000000000.png", "000000000.txt", "000000000.json"] and len(names) == 60
    assert set(sidecar) == {"key", "caption"}  # no boxes travel with the images
    hidden = [
        json.loads(line) for line in (tmp_path / "captions" / "hidden_ground_truth.jsonl").read_text().splitlines()
    ]
    assert len(hidden) == 40
    categories = {name for record in hidden for name in record["categories"]}
    assert {"red triangle", "blue circle"} <= categories  # the labelled split's never-seen combinations appear
    records = list(image_caption_source(str(tmp_path / "captions" / "*.tar")).dataset)
    assert [record["caption"] for record in records] == [record["caption"] for record in hidden]
    assert all(record["boxes"] == [] for record in records)
    # Same settings: reused; the same bytes when regenerated elsewhere; other settings are refused.
    assert generate_caption_only_split(tmp_path / "captions", config, 40, 2) == metadata
    generate_caption_only_split(tmp_path / "again", config, 40, 2)
    for name in metadata["files"]:
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "captions" / name).read_bytes()
    with pytest.raises(FileExistsError, match="other settings"):
        generate_caption_only_split(tmp_path / "captions", config, 30, 2)
    with pytest.raises(ValueError, match="num_shards"):
        generate_caption_only_split(tmp_path / "bad", config, 3, 4)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--steps", "0"], "--steps must be >= 1"),
        (["--pseudo_label_ratio", "1"], "--pseudo_label_ratio must be in (0, 1)"),
        (["--pseudo_label_threshold", "1.5"], "--pseudo_label_threshold must be in [0, 1)"),
        (["--seeds", "1", "1"], "--seeds must be distinct"),
        (["--num_captions", "2", "--caption_shards", "4"], "--caption_shards (4) must be <= --num_captions (2)"),
    ],
)
def test_bad_arguments_are_refused_naming_the_argument(self_train, arguments, message, capsys):
    with pytest.raises(SystemExit) as raised:
        self_train.parse_args(arguments)
    assert raised.value.code == 2 and message in capsys.readouterr().err
