"""Shared fixtures: discovery and conversion of the official GLIP reference fixtures.

Every directory of `tests/fixtures/` (and of `../shared/fixtures/glip_reference/` next to the repository, when it
exists) holding `checkpoint.pth`, `config.yaml`, `detection_prompt.json` and `detection_outputs.safetensors` is a
detection fixture; tests that use `converted_fixture` run once per distinct fixture (identical copies are tested
once). A fixture without `bert/` uses `tests/fixtures/tiny_a/bert`; one without its image uses tiny_a's image (the
public fixtures share it; its size is checked against the fixture's record).
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

TESTS = Path(__file__).parent
REPOSITORY = TESTS.parent
FIXTURE_ROOTS = [TESTS / "fixtures", REPOSITORY.parent / "shared" / "fixtures" / "glip_reference"]
DEFAULT_FIXTURE = TESTS / "fixtures" / "tiny_a"
REQUIRED_FILES = ("checkpoint.pth", "config.yaml", "detection_prompt.json", "detection_outputs.safetensors")


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def discover_detection_fixtures() -> list[Path]:
    """Fixture directories with everything a detection parity test needs, without duplicates (same checkpoint and
    same detections)."""
    found, seen = [], set()
    for root in FIXTURE_ROOTS:
        if not root.is_dir():
            continue
        for directory in sorted(path for path in root.iterdir() if path.is_dir()):
            if not all((directory / name).is_file() for name in REQUIRED_FILES):
                continue
            key = (
                _file_digest(directory / "checkpoint.pth"),
                _file_digest(directory / "detection_outputs.safetensors"),
            )
            if key not in seen:
                seen.add(key)
                found.append(directory)
    return found


DETECTION_FIXTURES = discover_detection_fixtures()


@dataclass
class ConvertedFixture:
    """An official reference fixture converted with `convert_checkpoint`."""

    name: str
    source: Path
    model_dir: Path
    image: Image.Image
    labels: list[str]
    chunk_size: int | None  # official `TEST.CHUNKED_EVALUATION` when > 0 (then merged by concatenation)
    expected_boxes: torch.Tensor  # (num_detections, 4) xyxy, original-image pixels
    expected_scores: torch.Tensor  # (num_detections,)
    expected_labels: torch.Tensor  # (num_detections,) 0-based label indices


@pytest.fixture(scope="session")
def convert_fixture(tmp_path_factory):
    """`convert(source_dir) -> converted folder`, converting each official fixture once per test session."""
    from transformers_glip.conversion import convert_checkpoint

    converted: dict[Path, Path] = {}

    def convert(source: Path) -> Path:
        if source not in converted:
            bert = source / "bert" if (source / "bert" / "tokenizer.json").is_file() else DEFAULT_FIXTURE / "bert"
            model_dir = tmp_path_factory.mktemp(f"converted_{source.name}")
            convert_checkpoint(
                checkpoint_path=source / "checkpoint.pth",
                output_dir=model_dir,
                original_config=source / "config.yaml",
                text_model=bert,
            )
            converted[source] = model_dir
        return converted[source]

    return convert


@pytest.fixture(scope="session")
def tiny_a_dir(convert_fixture) -> Path:
    """The converted public fixture `tiny_a` (GLIP-T architecture, random weights)."""
    return convert_fixture(DEFAULT_FIXTURE)


@pytest.fixture(scope="session", params=DETECTION_FIXTURES, ids=[path.name for path in DETECTION_FIXTURES])
def converted_fixture(request, convert_fixture) -> ConvertedFixture:
    """Each discovered detection fixture, converted, with its image, labels and official detections."""
    source = request.param
    prompt = json.loads((source / "detection_prompt.json").read_text())
    image_name = prompt.get("image", {}).get("file", "image.png")
    image_path = source / image_name if (source / image_name).is_file() else DEFAULT_FIXTURE / "image.png"
    image = Image.open(image_path).convert("RGB")
    expected_size = prompt.get("image", {}).get("original_size_hw")
    if expected_size is not None:
        assert [image.height, image.width] == list(expected_size), f"{image_path} is not the image of {source}"
    chunked = prompt.get("eval_cfg", {}).get("TEST.CHUNKED_EVALUATION", -1)
    recorded = load_file(source / "detection_outputs.safetensors")
    return ConvertedFixture(
        name=source.name,
        source=source,
        model_dir=convert_fixture(source),
        image=image,
        labels=list(prompt["labels"]),
        chunk_size=chunked if isinstance(chunked, int) and chunked > 0 else None,
        expected_boxes=recorded["detections.boxes_xyxy"],
        expected_scores=recorded["detections.scores"],
        expected_labels=recorded["detections.labels"] - 1,  # official labels are 1-based
    )


def _match_detections(actual, expected, score_tolerance: float, box_tolerance: float) -> None:
    """Assert that two detection multisets are equal: every expected `(label, score, box)` has a distinct actual match
    with the same label, |score difference| <= `score_tolerance` and max |box difference| <= `box_tolerance`.

    `actual` / `expected`: tuples `(boxes (n, 4), scores (n,), labels (n,))` of tensors; labels may be any
    comparable ids (ints or strings as a list)."""
    boxes, scores, labels = actual
    expected_boxes, expected_scores, expected_labels = expected
    labels = labels.tolist() if isinstance(labels, torch.Tensor) else list(labels)
    expected_labels = expected_labels.tolist() if isinstance(expected_labels, torch.Tensor) else list(expected_labels)
    assert len(scores) == len(expected_scores), (len(scores), len(expected_scores))
    boxes, scores = torch.as_tensor(boxes, dtype=torch.float64), torch.as_tensor(scores, dtype=torch.float64)
    expected_boxes = torch.as_tensor(expected_boxes, dtype=torch.float64)
    expected_scores = torch.as_tensor(expected_scores, dtype=torch.float64)
    score_difference = (expected_scores[:, None] - scores[None, :]).abs()  # (num_expected, num_actual)
    box_difference = (expected_boxes[:, None, :] - boxes[None, :, :]).abs().amax(-1)  # (num_expected, num_actual)
    same_label = torch.tensor([[label == other for other in labels] for label in expected_labels])
    compatible = same_label & (score_difference <= score_tolerance) & (box_difference <= box_tolerance)
    taken = torch.zeros(len(scores), dtype=torch.bool)
    for index in range(len(expected_scores)):
        candidates = torch.nonzero(compatible[index] & ~taken).flatten()
        assert candidates.numel() > 0, (
            f"expected detection {index} (label {expected_labels[index]!r}, score "
            f"{float(expected_scores[index]):.6f}, box {expected_boxes[index].tolist()}) has no match"
        )
        taken[candidates[torch.argmin(box_difference[index, candidates])]] = True


@pytest.fixture(scope="session")
def match_detections():
    """The detection-multiset assertion (see `_match_detections`)."""
    return _match_detections


@pytest.fixture
def single_torch_thread():
    """Run a test with one intra-op thread (restored afterwards): the tiny-model forwards of the inference and
    pipeline tests are as fast on one thread, and several times faster when other processes share the 2 cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
