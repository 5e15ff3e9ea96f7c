"""Tests of the `glip` command line (`cli.py`), run through `main([...])` and once as a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transformers_glip import GLIPForGrounding, GLIPProcessor, cli, detect

REPOSITORY = Path(__file__).resolve().parents[1]
FIXTURE = REPOSITORY / "tests" / "fixtures" / "tiny_a"
IMAGE = FIXTURE / "image.png"
LABELS = ["red circle", "blue square", "green triangle", "person"]
CAPTION = "a red circle next to a blue square"
THRESHOLD = 0.55  # the random-weight fixture scores ~0.5-0.66; keeps a handful of rows


@pytest.fixture(scope="module")
def loaded(tiny_a_dir):
    model = GLIPForGrounding.from_pretrained(tiny_a_dir).eval()
    processor = GLIPProcessor.from_pretrained(tiny_a_dir)
    return model, processor


@pytest.fixture(scope="module")
def image():
    return Image.open(IMAGE).convert("RGB")


@pytest.fixture(scope="module")
def second_image(tmp_path_factory):
    """The fixture image flipped, under another folder with the same file name (output names must not clash)."""
    path = tmp_path_factory.mktemp("other") / "image.png"
    Image.open(IMAGE).convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(path)
    return path


@pytest.fixture(scope="module")
def expected_detections(loaded, image, second_image):
    """`detect` on the fixture image and its flipped copy: what the CLI must print."""
    model, processor = loaded
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return detect(model, processor, [image, Image.open(second_image).convert("RGB")], LABELS, threshold=THRESHOLD)
    finally:
        torch.set_num_threads(previous)


def run(arguments, capsys):
    status = cli.main([str(argument) for argument in arguments])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_line_error(status, err, *fragments):
    assert status == 2
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("Loading weights")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("glip")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ------------------------------------------------------------------------------------------------------------ help
def test_help_lists_every_command_with_examples(capsys):
    status, out, _ = run(["--help"], capsys)
    assert status == 0
    for command in ("detect", "convert", "train", "finetune", "evaluate", "pseudo-label", "export", "app"):
        assert f"    {command}" in out
    assert "examples:" in out and "glip detect cat.jpg" in out


def test_detect_help(capsys):
    status, out, _ = run(["detect", "--help"], capsys)
    assert status == 0
    for option in ("--model", "--labels", "--caption", "--threshold", "--json", "--output", "--batch-size"):
        assert option in out
    assert "examples:" in out


def test_no_command_prints_help_and_fails(capsys):
    status, _, err = run([], capsys)
    assert status == 2 and "usage: glip" in err


# ---------------------------------------------------------------------------------------------------- glip detect
def test_detect_labels_table(tiny_a_dir, expected_detections, capsys, single_torch_thread):
    status, out, err = run(
        ["detect", IMAGE, "--model", tiny_a_dir, "--labels", *LABELS, "--threshold", THRESHOLD, "--device", "cpu"],
        capsys,
    )
    assert status == 0, err
    expected = expected_detections[0]
    lines = out.splitlines()
    assert lines[0] == f"{IMAGE}: {len(expected['scores'])} detections (score > {THRESHOLD:g})"
    assert "label" in lines[1] and "score" in lines[1] and "box (xmin, ymin, xmax, ymax)" in lines[1]
    rows = lines[2:]
    assert len(rows) == len(expected["scores"]) > 0
    for row, label, score, box in zip(rows, expected["text_labels"], expected["scores"], expected["boxes"]):
        assert row.split("  ")[1].strip() == label
        assert f"{float(score):.3f}" in row
        assert "(" + ", ".join(f"{float(value):.1f}" for value in box) + ")" in row


@pytest.mark.parametrize("prompt", [["--labels", *LABELS], ["--caption", "a person with a dog"]])
def test_detect_official_mode_gives_the_default_detections(tiny_a_dir, prompt, capsys, single_torch_thread):
    """`--official-mode` (256-token padding, unfactorised fusion) and the fast default agree: same labels, boxes and
    scores up to float rounding (1e-4: the two sum the fusion products in another order)."""
    common = ["detect", IMAGE, "--model", tiny_a_dir, *prompt, "--threshold", "0.0", "--json", "--device", "cpu"]
    status, fast, err = run(common, capsys)
    assert status == 0, err
    status, official, err = run([*common, "--official-mode"], capsys)
    assert status == 0, err
    fast_records, official_records = json.loads(fast)[0]["detections"], json.loads(official)[0]["detections"]
    assert len(fast_records) == len(official_records) > 0
    for fast_record, official_record in zip(fast_records, official_records):
        assert fast_record["label"] == official_record["label"]
        assert fast_record["score"] == pytest.approx(official_record["score"], abs=1e-4)
        for key in ("xmin", "ymin", "xmax", "ymax"):
            assert fast_record["box"][key] == pytest.approx(official_record["box"][key], abs=1e-2)


def test_detect_labels_json_batch_and_drawn_output(
    tiny_a_dir, expected_detections, image, second_image, tmp_path, capsys, single_torch_thread
):
    output = tmp_path / "drawn"
    status, out, err = run(
        [
            "detect",
            IMAGE,
            second_image,
            "--model",
            tiny_a_dir,
            "--labels",
            *LABELS,
            "--threshold",
            THRESHOLD,
            "--json",
            "--batch-size",
            "2",
            "--output",
            output,
        ],
        capsys,
    )
    assert status == 0, err
    report = json.loads(out)
    assert [entry["image"] for entry in report] == [str(IMAGE), str(second_image)]
    assert len(report[0]["detections"]) > 0
    flipped = Image.open(second_image).convert("RGB")
    for entry, result in zip(report, expected_detections):
        detections = entry["detections"]
        assert [item["label"] for item in detections] == result["text_labels"]
        assert torch.allclose(torch.tensor([item["score"] for item in detections]), result["scores"], atol=1e-5)
        boxes = torch.tensor(
            [[item["box"][key] for key in ("xmin", "ymin", "xmax", "ymax")] for item in detections]
        ).reshape(-1, 4)
        assert torch.allclose(boxes, result["boxes"], atol=1e-3)
    drawn = sorted(path.name for path in output.iterdir())
    assert drawn == ["image-1.png", "image.png"]  # same stem twice: numbered, not overwritten
    for name, original, entry in zip(("image.png", "image-1.png"), (image, flipped), report):
        picture = Image.open(output / name).convert("RGB")
        assert picture.size == original.size
        # boxes were drawn exactly where there are detections
        assert (np.asarray(picture) != np.asarray(original)).any() == bool(entry["detections"])
    assert "Wrote 2 images with boxes" in err


def test_detect_caption_matches_processor_path(tiny_a_dir, loaded, image, capsys, single_torch_thread):
    status, out, err = run(
        ["detect", IMAGE, "--model", tiny_a_dir, "--caption", CAPTION, "--threshold", "0.5", "--json"], capsys
    )
    assert status == 0, err
    (entry,) = json.loads(out)
    model, processor = loaded
    inputs = processor(images=image, text=CAPTION)
    assert inputs["text_labels"] == [["a red circle", "a blue square"]]  # the caption's noun phrases
    with torch.inference_mode():
        outputs = model(
            pixel_values=inputs["pixel_values"],
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            token_type_ids=inputs["token_type_ids"],
            image_sizes=inputs["image_sizes"],
        )
    (expected,) = processor.post_process_grounded_object_detection(
        outputs,
        threshold=0.5,
        target_sizes=inputs["original_sizes"],
        text_labels=inputs["text_labels"],
        positive_map=inputs["positive_map"],
        config=model.config,
    )
    assert len(expected["scores"]) > 0
    assert [item["label"] for item in entry["detections"]] == expected["text_labels"]
    assert torch.allclose(torch.tensor([item["score"] for item in entry["detections"]]), expected["scores"], atol=1e-5)


def test_detect_through_a_subprocess(tiny_a_dir, tmp_path):
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPOSITORY / "src"), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    completed = subprocess.run(
        [sys.executable, "-m", "transformers_glip.cli", "detect", str(IMAGE), "--model", str(tiny_a_dir)]
        + ["--labels", *LABELS, "--threshold", str(THRESHOLD), "--json"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    (entry,) = json.loads(completed.stdout)
    assert entry["image"] == str(IMAGE) and len(entry["detections"]) > 0
    assert all(item["score"] > THRESHOLD and item["label"] in LABELS for item in entry["detections"])


@pytest.mark.parametrize(
    ("arguments", "fragments"),
    [
        (["detect", "{missing}", "--model", "{model}", "--labels", "cat"], ["does not exist", "nope.png"]),
        (["detect", "{not_image}", "--model", "{model}", "--labels", "cat"], ["not an image"]),
        (["detect", "{image}", "--model", "{model}"], ["--labels", "--caption", "required"]),
        (["detect", "{image}", "--model", "{model}", "--labels", "cat", "--caption", "a cat"], ["not allowed"]),
        (["detect", "{image}", "--labels", "cat"], ["--model"]),
        (["detect", "{image}", "--model", "{model}", "--labels", "cat", ""], ["label 2 is empty"]),
        (["detect", "{image}", "--model", "{model}", "--caption", "  "], ["--caption is empty"]),
        (["detect", "{image}", "--model", "{model}", "--caption", "the of and"], ["--caption", "noun"]),
        (
            ["detect", "{image}", "--model", "{model}", "--labels", "cat", "--threshold", "2"],
            ["--threshold", "[0, 1]"],
        ),
        (["detect", "{image}", "--model", "{model}", "--labels", "cat", "--threshold", "high"], ["--threshold"]),
        (["detect", "{image}", "--model", "{model}", "--labels", "cat", "--batch-size", "0"], ["--batch-size"]),
        (["detect", "{image}", "--model", "{tmp}/absent/model/folder", "--labels", "cat"], ["no such folder"]),
        (["detect", "{image}", "--model", "{tmp}", "--labels", "cat"], ["no config.json"]),
        (["detect", "{image}", "--model", "{not_image}", "--labels", "cat"], ["is a file"]),
        (
            ["detect", "{image}", "--model", "nobody-glip-test/not-cached", "--labels", "cat", "--local-files-only"],
            ["nobody-glip-test/not-cached", "Hub"],
        ),
        (["detect", "{image}", "--model", "{model}", "--labels", "cat", "--output", "{not_image}"], ["--output"]),
        (["detect", "{image}", "--model", "{model}", "--labels", "cat", "--frobnicate"], ["--frobnicate"]),
        (["frobnicate"], ["invalid choice"]),
    ],
)
def test_bad_arguments_exit_2_with_one_line(arguments, fragments, tiny_a_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    not_image = tmp_path / "notes.txt"
    not_image.write_text("not an image")
    values = {
        "missing": tmp_path / "nope.png",
        "not_image": not_image,
        "image": IMAGE,
        "model": tiny_a_dir,
        "tmp": tmp_path,
    }
    status, _, err = run([argument.format(**values) for argument in arguments], capsys)
    assert_one_line_error(status, err, *fragments)


# ----------------------------------------------------------------------------------------------- forwarded commands
def test_convert_forwards_to_the_converter(tmp_path, capsys):
    output = tmp_path / "converted"
    status, _, err = run(
        ["convert", "--checkpoint", FIXTURE / "checkpoint.pth", "--original-config", FIXTURE / "config.yaml"]
        + ["--text-model", FIXTURE / "bert", "--output", output],
        capsys,
    )
    assert status == 0, err
    assert (output / "config.json").is_file() and (output / "model.safetensors").is_file()
    GLIPProcessor.from_pretrained(output)


def test_convert_errors_are_reported_without_traceback(tmp_path, capsys):
    status, _, err = run(
        ["convert", "--checkpoint", tmp_path / "missing.pth", "--original-config", FIXTURE / "config.yaml"]
        + ["--text-model", FIXTURE / "bert", "--output", tmp_path / "out"],
        capsys,
    )
    assert status == 1
    assert "Traceback" not in err
    assert any(line.startswith("glip convert: error:") and "missing.pth" in line for line in err.splitlines())
    status, _, err = run(["convert", "--variant", "glip-t"], capsys)  # the converter's own usage error
    assert status == 2 and "--checkpoint" in err


def test_example_scripts_are_found_in_the_checkout():
    assert cli.find_examples_directory() == REPOSITORY / "examples"
    assert (REPOSITORY / "examples" / cli.EXAMPLE_SCRIPTS["train"]).is_file()


def test_example_script_runs_as_main_with_the_arguments(tmp_path, monkeypatch, capsys):
    (tmp_path / "helper_module_for_cli_test.py").write_text("VALUE = 'imported next to the script'\n")
    (tmp_path / "evaluate.py").write_text(
        "import sys\n"
        "import helper_module_for_cli_test\n"
        "if __name__ == '__main__':\n"
        "    print(sys.argv, helper_module_for_cli_test.VALUE)\n"
        "    raise SystemExit(3 if '--fail' in sys.argv else 0)\n"
    )
    monkeypatch.setenv(cli.EXAMPLES_DIRECTORY_VARIABLE, str(tmp_path))
    argv_before = list(sys.argv)
    status, out, _ = run(["evaluate", "--model", "m", "--split", "val"], capsys)
    assert status == 0
    assert out.strip() == "['glip evaluate', '--model', 'm', '--split', 'val'] imported next to the script"
    assert sys.argv == argv_before and str(tmp_path) not in sys.path
    status, _, _ = run(["evaluate", "--fail"], capsys)
    assert status == 3
    status, _, err = run(["pseudo-label", "--help"], capsys)  # no pseudo_label.py in that folder
    assert_one_line_error(status, err, "pseudo_label.py", "does not exist")


def test_train_help_runs_the_pretrain_script(capsys):
    status, out, _ = run(["train", "--help"], capsys)
    assert status == 0
    assert out.startswith("usage: glip train")


def test_example_scripts_outside_a_checkout_exit_2(monkeypatch, capsys):
    monkeypatch.delenv(cli.EXAMPLES_DIRECTORY_VARIABLE, raising=False)
    monkeypatch.setattr(cli, "find_examples_directory", lambda: None)
    status, _, err = run(["train", "--max_train_steps", "1"], capsys)
    assert_one_line_error(status, err, "glip train", "examples/pretrain.py", "source checkout")
