"""Tests of `hub_glip.py`: a saved folder carries its code (`trust_remote_code=True` without the package) and uploads
go through `push_folder_to_hub` (checked against a local stand-in for the Hub API)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hub_stand_in import RecordingHubApi
from PIL import Image
from transformers import pipeline
from transformers.dynamic_module_utils import get_imports

from transformers_glip import GLIPForGrounding, GLIPProcessor, add_remote_code_files
from transformers_glip.hub_glip import (
    CUSTOM_PIPELINES,
    REMOTE_CODE_SHIM_NAME,
    push_folder_to_hub,
    remote_code_source_files,
)

FIXTURE = Path(__file__).parent / "fixtures" / "tiny_a"
TASK = "zero-shot-object-detection"
LABELS = ["red circle", "blue square", "green triangle", "person"]
SCORE_TOLERANCE = 1e-5

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def image():
    return Image.open(FIXTURE / "image.png").convert("RGB")


@pytest.fixture(scope="module")
def saved_folder(tiny_a_dir, tmp_path_factory):
    """The tiny_a model and processor saved with `save_pretrained` (no converter, no extra call)."""
    folder = tmp_path_factory.mktemp("hub") / "saved"
    GLIPForGrounding.from_pretrained(tiny_a_dir).save_pretrained(folder)
    GLIPProcessor.from_pretrained(tiny_a_dir).save_pretrained(folder)
    return folder


# the folder carries its code -----------------------------------------------------------------------------------------


def test_saved_folder_carries_the_code_and_the_entries(saved_folder):
    names = {path.name for path in remote_code_source_files()}
    assert {"configuration_glip.py", "modeling_glip.py", "processing_glip.py", "pipeline_glip.py"} <= names
    assert {path.name for path in saved_folder.iterdir()} >= names | {f"{REMOTE_CODE_SHIM_NAME}.py"}
    for name in names:  # exact copies of the package's modules
        assert (saved_folder / name).read_bytes() == (Path(remote_code_source_files()[0]).parent / name).read_bytes()
    config = json.loads((saved_folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "glip_shim.GLIPConfig",
        "AutoModel": "glip_shim.GLIPModel",
        "AutoModelForZeroShotObjectDetection": "glip_shim.GLIPForGrounding",
    }
    assert config["custom_pipelines"] == CUSTOM_PIPELINES
    processor_config = json.loads((saved_folder / "processor_config.json").read_text())
    assert processor_config["auto_map"] == {"AutoProcessor": "glip_shim.GLIPProcessor"}
    assert processor_config["image_processor"]["auto_map"] == {"AutoImageProcessor": "glip_shim.GLIPImageProcessor"}


def test_copied_modules_import_only_relatively_and_no_training_data_or_conversion_code():
    for path in remote_code_source_files():
        imported = set(get_imports(path))  # what transformers' `check_imports` requires to be installed
        assert "transformers_glip" not in imported, path.name
        third_party = imported - set(sys.stdlib_module_names) - {"__future__"}
        # what a venv with transformers and torchvision holds (huggingface_hub and numpy come with transformers)
        assert third_party <= {"PIL", "huggingface_hub", "numpy", "torch", "torchvision", "transformers"}, path.name
        text = path.read_text(encoding="utf-8")
        for subpackage in ("data", "conversion", "evaluation"):
            assert f"from .{subpackage}" not in text and f"from ..{subpackage}" not in text, path.name
        assert "from . import" not in text and "from .. " not in text, path.name  # a folder has no package


def test_add_remote_code_files_needs_a_saved_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        add_remote_code_files(tmp_path)


def test_the_package_ignores_custom_pipelines(saved_folder, image):
    """With the package imported, the folder loads without `trust_remote_code` and the package's classes run."""
    from transformers_glip import GLIPConfig, GLIPZeroShotObjectDetectionPipeline

    config = GLIPConfig.from_pretrained(saved_folder)
    assert not hasattr(config, "custom_pipelines")
    detector = pipeline(TASK, model=str(saved_folder))
    assert type(detector) is GLIPZeroShotObjectDetectionPipeline
    # (`saved_folder` was saved from such a config: the model's `save_pretrained` writes the entry back.)


REMOTE_CODE_SCRIPT = """
import sys

sys.modules["transformers_glip"] = None  # from here on `import transformers_glip` raises ImportError
import json

import torch
from PIL import Image
from transformers import AutoConfig, AutoModelForZeroShotObjectDetection, AutoProcessor, pipeline

folder, image_path, labels = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
try:
    AutoConfig.from_pretrained(folder, trust_remote_code=False)
    raise SystemExit("loaded without trust_remote_code")
except ValueError:
    pass
model = AutoModelForZeroShotObjectDetection.from_pretrained(folder, trust_remote_code=True)
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
detector = pipeline("zero-shot-object-detection", model=folder, trust_remote_code=True)
image = Image.open(image_path).convert("RGB")

forwards = []
handle = detector.model.register_forward_hook(lambda module, args, output: forwards.append(1))
detections = detector(image, candidate_labels=labels, threshold=0.0, top_k=20)
handle.remove()

inputs = processor(images=image, text=[labels], return_tensors="pt")
with torch.no_grad():
    outputs = model(**{key: value for key, value in inputs.items() if key != "text_labels"})
(result,) = processor.post_process_grounded_object_detection(
    outputs, threshold=0.0, target_sizes=inputs["original_sizes"], text_labels=inputs["text_labels"],
    positive_map=inputs["positive_map"], config=model.config,
)
print(json.dumps({
    "classes": [
        type(item).__module__ + "." + type(item).__name__ for item in (model, processor, detector, detector.model)
    ],
    "package_modules": sorted(name for name in sys.modules if name.startswith("transformers_glip.")),
    "package_importable": sys.modules.get("transformers_glip") is not None,
    "forwards": len(forwards),
    "pipeline": detections,
    "model": {"scores": result["scores"][:20].tolist(), "boxes": result["boxes"][:20].tolist(),
              "labels": list(result["text_labels"][:20])},
}))
"""


def processor_model_detections(folder, image, labels):
    """The in-process reference of the script's model + processor path (package classes)."""
    model = GLIPForGrounding.from_pretrained(folder).eval()
    processor = GLIPProcessor.from_pretrained(folder)
    inputs = processor(images=image, text=[labels], return_tensors="pt")
    with torch.no_grad():
        outputs = model(**{key: value for key, value in inputs.items() if key != "text_labels"})
    (result,) = processor.post_process_grounded_object_detection(
        outputs,
        threshold=0.0,
        target_sizes=inputs["original_sizes"],
        text_labels=inputs["text_labels"],
        positive_map=inputs["positive_map"],
        config=model.config,
    )
    return result


def test_folder_loads_and_detects_without_the_package(saved_folder, image, tmp_path):
    """model, processor and pipeline load from the folder in a process where `transformers_glip` cannot be imported
    (`sys.modules["transformers_glip"] = None`, `src` not on the path, cwd outside the repository) and give the
    in-process detections; the pipeline is GLIP's (one forward for all labels), not the stock per-label loop."""
    expected_pipeline = pipeline(TASK, model=str(saved_folder))(
        image, candidate_labels=LABELS, threshold=0.0, top_k=20
    )
    expected_model = processor_model_detections(saved_folder, image, LABELS)

    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment.update({"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")})
    completed = subprocess.run(
        [sys.executable, "-c", REMOTE_CODE_SCRIPT, str(saved_folder), str(FIXTURE / "image.png"), json.dumps(LABELS)],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        text=True,
        env=environment,
        cwd=tmp_path,
        timeout=900,  # seconds; the run takes about 20 s, far more on a loaded machine
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    loaded = json.loads(completed.stdout.strip().splitlines()[-1])
    modules = [name.rsplit(".", 2) for name in loaded["classes"]]
    assert [class_name for _, _, class_name in modules] == [
        "GLIPForGrounding",
        "GLIPProcessor",
        "GLIPZeroShotObjectDetectionPipeline",
        "GLIPForGrounding",
    ]
    packages = {package for package, _, _ in modules}
    assert len(packages) == 1 and next(iter(packages)).startswith("transformers_modules.")  # one copy of the code
    assert loaded["package_modules"] == [] and not loaded["package_importable"]
    assert loaded["forwards"] == 1  # all four labels in one prompt

    actual = loaded["pipeline"]
    assert [(item["label"], item["box"]) for item in actual] == [
        (item["label"], item["box"]) for item in expected_pipeline
    ]
    assert (
        actual
        and max(abs(item["score"] - reference["score"]) for item, reference in zip(actual, expected_pipeline))
        <= SCORE_TOLERANCE
    )
    assert loaded["model"]["labels"] == list(expected_model["text_labels"][:20])
    torch.testing.assert_close(
        torch.tensor(loaded["model"]["scores"]), expected_model["scores"][:20], atol=SCORE_TOLERANCE, rtol=0
    )
    torch.testing.assert_close(torch.tensor(loaded["model"]["boxes"]), expected_model["boxes"][:20], atol=1e-3, rtol=0)


def test_a_remote_code_model_saves_its_code_again(saved_folder, tmp_path):
    """A model loaded as remote code (from the dynamic-module cache) saves a folder that carries the same code."""
    script = (
        "import sys; sys.modules['transformers_glip'] = None\n"
        "from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor\n"
        "AutoModelForZeroShotObjectDetection.from_pretrained(sys.argv[1], trust_remote_code=True)"
        ".save_pretrained(sys.argv[2])\n"
        "AutoProcessor.from_pretrained(sys.argv[1], trust_remote_code=True).save_pretrained(sys.argv[2])\n"
    )
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment.update({"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")})
    again = tmp_path / "again"
    completed = subprocess.run(
        [sys.executable, "-c", script, str(saved_folder), str(again)],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        text=True,
        env=environment,
        cwd=tmp_path,
        timeout=900,  # seconds; the run takes about 20 s, far more on a loaded machine
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    for path in [*remote_code_source_files(), saved_folder / "glip_shim.py"]:
        assert (again / path.name).read_bytes() == path.read_bytes(), path.name
    config = json.loads((again / "config.json").read_text())
    assert config["auto_map"]["AutoModelForZeroShotObjectDetection"] == "glip_shim.GLIPForGrounding"
    assert config["custom_pipelines"] == CUSTOM_PIPELINES


# uploading -----------------------------------------------------------------------------------------------------------


def test_push_folder_to_hub_uploads_the_whole_folder_in_one_commit(saved_folder):
    api = RecordingHubApi()
    url = push_folder_to_hub(saved_folder, "someone/glip", commit_message="Add GLIP", private=True, api=api)
    assert url.startswith("https://huggingface.co/someone/glip/commit/")
    assert api.calls == [("create_repo", "someone/glip", {"private": True, "exist_ok": True})]
    (upload,) = api.uploads
    assert upload["repo_id"] == "someone/glip" and upload["commit_message"] == "Add GLIP"
    assert set(upload["files"]) == {path.name for path in saved_folder.iterdir()}
    assert upload["revision"] is None and not upload["create_pr"]


def test_push_folder_to_hub_creates_the_branch_of_a_revision(saved_folder):
    api = RecordingHubApi(user="me")
    push_folder_to_hub(saved_folder, "glip", revision="v1", api=api)
    assert api.calls[0][:2] == ("create_repo", "me/glip")
    assert api.calls[1] == ("create_branch", "me/glip", {"branch": "v1", "exist_ok": True})
    assert api.uploads[0]["revision"] == "v1" and api.uploads[0]["commit_message"] == "Upload GLIP"
