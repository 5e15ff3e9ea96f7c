"""Discovery of the official GLIP reference fixtures (outputs of the microsoft/GLIP code on tiny configs).

Every directory holding `checkpoint.pth`, `config.yaml` and `outputs.safetensors` is a fixture, in `tests/fixtures/`
and in the team's shared reference folder (`../shared/fixtures/glip_reference/` next to the repository) when it
exists, so a fixture dropped into either place is tested by every parity test without code changes. Files a fixture
directory lacks (the variant fixtures share tiny_a's image, inputs and tokenizer) are taken from `tiny_a`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["OfficialFixture", "discover_fixtures", "fixture_params", "assert_same_detection_sets"]

TESTS_DIR = Path(__file__).resolve().parent
LOCAL_FIXTURES = TESTS_DIR / "fixtures"
SHARED_FIXTURES = TESTS_DIR.parent.parent / "shared" / "fixtures" / "glip_reference"
REQUIRED_FILES = ("checkpoint.pth", "config.yaml", "outputs.safetensors")


@dataclass(frozen=True)
class OfficialFixture:
    name: str
    directory: Path

    def file(self, name: str) -> Path:
        """`name` inside the fixture, else the shared tiny_a copy (same image, inputs and tokenizer)."""
        own = self.directory / name
        if own.exists():
            return own
        for fallback_root in (LOCAL_FIXTURES, SHARED_FIXTURES):
            fallback = fallback_root / "tiny_a" / name
            if fallback.exists():
                return fallback
        raise FileNotFoundError(f"fixture {self.name} has no {name} and no tiny_a fallback exists")

    def has(self, name: str) -> bool:
        return (self.directory / name).exists()


def discover_fixtures() -> list[OfficialFixture]:
    found: dict[str, OfficialFixture] = {}
    for root in (LOCAL_FIXTURES, SHARED_FIXTURES):
        if not root.is_dir():
            continue
        for directory in sorted(path for path in root.iterdir() if path.is_dir()):
            if all((directory / name).exists() for name in REQUIRED_FILES):
                found.setdefault(directory.name, OfficialFixture(directory.name, directory))
    return list(found.values())


def fixture_params(required: tuple[str, ...] = ()) -> list:
    """pytest parameters (one per fixture that has every file of `required` itself)."""
    return [
        pytest.param(fixture, id=fixture.name)
        for fixture in discover_fixtures()
        if all(fixture.has(name) for name in required)
    ]


def assert_same_detection_sets(actual: dict, boxes, scores, labels, score_atol=1e-5, box_atol=1e-3) -> None:
    """The official detections `(boxes, scores, labels)` equal `actual` as sets: every official detection is matched
    to a distinct detection with the same label, a score within `score_atol` and a box within `box_atol` pixels."""
    import torch

    assert len(actual["scores"]) == len(scores), f"{len(actual['scores'])} detections, official {len(scores)}"
    actual_boxes = torch.as_tensor(actual["boxes"], dtype=torch.float32)
    actual_scores = torch.as_tensor(actual["scores"], dtype=torch.float32)
    actual_labels = torch.as_tensor(actual["labels"])
    used = torch.zeros(len(actual_scores), dtype=torch.bool)
    for box, score, label in zip(boxes, scores, labels):
        candidates = (actual_labels == label) & ~used
        score_error = (actual_scores - score).abs()
        box_error = (actual_boxes - box).abs().amax(dim=-1)
        matching = candidates & (score_error <= score_atol) & (box_error <= box_atol)
        assert matching.any(), (
            f"official detection label={int(label)} score={float(score):.6f} box={box.tolist()} has no match "
            f"(closest same-label score error {float(score_error[candidates].min()) if candidates.any() else None})"
        )
        index = int(torch.nonzero(matching).flatten()[torch.argmin(score_error[matching] + box_error[matching])])
        used[index] = True
