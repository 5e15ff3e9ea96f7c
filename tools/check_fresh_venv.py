#!/usr/bin/env python
"""What a new user meets, in a fresh virtual environment of their own (not the project's `.venv`), in two stages:

1. **Remote code without the package.** A venv with only `transformers`, `torchvision` and `pillow` (and what pip
   pulls in for them); `transformers_glip` is not installed and not on the path. The saved folder `--model` is
   loaded with `trust_remote_code=True` by `pipeline("zero-shot-object-detection")` (model and processor through
   the Auto classes); the pipeline must be GLIP's own (one forward for all labels, from
   the folder's `custom_pipelines`), not the stock one-forward-per-label loop.
2. **`pip install` then `glip detect`.** The same venv, then `pip install PROJECT` (a regular, non-editable
   install with the base dependencies only: no extras), then `glip detect IMAGE --model FOLDER --labels ... --json`.

The remote-code pipeline is compared with the package's pipeline run here (the project's environment) and
`glip detect` with `transformers_glip.detect` run here: same labels in the same order, boxes within 0.01 px, scores
within 1e-4. Prints one line per check and a final JSON line; exit status 1 when a check fails.

    python tools/check_fresh_venv.py --model out/demo [--image IMAGE] [--labels "red circle" ...] [--keep DIR]

Needs the package registries (pip); on this project's machines pip resolves torch and torchvision to local wheels.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
SCORE_TOLERANCE = 1e-4  # same weights, same float32 kernels: only summation order may differ
BOX_TOLERANCE = 1e-2  # pixels

REMOTE_CODE_SCRIPT = """
import json, sys
from PIL import Image
from transformers import pipeline

try:
    import transformers_glip  # noqa: F401
    raise SystemExit("transformers_glip is importable in the fresh venv: the check would prove nothing")
except ImportError:
    pass
folder, image_path, labels = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
detector = pipeline("zero-shot-object-detection", model=folder, trust_remote_code=True)
forwards = []
detector.model.register_forward_hook(lambda module, args, output: forwards.append(1))
detections = detector(Image.open(image_path).convert("RGB"), candidate_labels=labels, threshold=0.0, top_k=20)
print(json.dumps({
    "pipeline_class": type(detector).__module__ + "." + type(detector).__name__,
    "model_class": type(detector.model).__module__ + "." + type(detector.model).__name__,
    "forwards": len(forwards),
    "detections": detections,
}))
"""


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    completed = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kwargs)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} ... failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
    return completed


def reference_detections(folder: str, image_path: str, labels: list[str], threshold: float) -> list[dict]:
    """`transformers_glip.detect` in this environment, as the pipeline's list of dicts."""
    from PIL import Image

    from transformers_glip import GLIPForGrounding, GLIPProcessor, detect

    model = GLIPForGrounding.from_pretrained(folder).eval()
    processor = GLIPProcessor.from_pretrained(folder)
    (result,) = detect(model, processor, Image.open(image_path).convert("RGB"), labels, threshold=threshold)
    return [
        {"label": label, "score": float(score), "box": [float(value) for value in box]}
        for label, score, box in zip(result["text_labels"], result["scores"], result["boxes"])
    ]


def reference_pipeline(folder: str, image_path: str, labels: list[str]) -> list[dict]:
    """The package's zero-shot-object-detection pipeline in this environment (boxes truncated to ints, as the
    stock pipeline gives them)."""
    from PIL import Image
    from transformers import pipeline

    import transformers_glip  # noqa: F401  (registers GLIP with the Auto classes)

    detector = pipeline("zero-shot-object-detection", model=folder)
    return detector(Image.open(image_path).convert("RGB"), candidate_labels=labels, threshold=0.0, top_k=20)


def compare(reference: list[dict], candidate: list[dict], count: int) -> dict:
    """The top `count` detections of both, by score: same labels in the same order, boxes and scores close."""

    def as_rows(detections):
        rows = []
        for item in sorted(detections, key=lambda item: -item["score"])[:count]:
            box = item["box"]
            if isinstance(box, dict):
                box = [box["xmin"], box["ymin"], box["xmax"], box["ymax"]]
            rows.append((item["label"], float(item["score"]), [float(value) for value in box]))
        return rows

    reference_rows, candidate_rows = as_rows(reference), as_rows(candidate)
    same_labels = [row[0] for row in reference_rows] == [row[0] for row in candidate_rows]
    score_difference = max((abs(a[1] - b[1]) for a, b in zip(reference_rows, candidate_rows)), default=0.0)
    box_difference = max(
        (abs(x - y) for a, b in zip(reference_rows, candidate_rows) for x, y in zip(a[2], b[2])), default=0.0
    )
    return {
        "same": bool(reference_rows)
        and same_labels
        and len(reference_rows) == len(candidate_rows)
        and score_difference <= SCORE_TOLERANCE
        and box_difference <= BOX_TOLERANCE,
        "count": len(candidate_rows),
        "max_score_difference": score_difference,
        "max_box_difference": box_difference,
    }


def default_image(work: Path) -> str:
    """A held-out picture of the demo world (generated here, so the check needs no file of its own)."""
    from transformers_glip.data.synthetic_shapes import SyntheticShapesConfig, generate_synthetic_shapes

    world = work / "world"
    generate_synthetic_shapes(world, SyntheticShapesConfig(num_train=4, num_validation=2, num_train_shards=1))
    return str(sorted((world / "validation").rglob("*.png"))[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a folder saved by this package (e.g. out/demo)")
    parser.add_argument("--image", help="an image file (default: a generated held-out picture of the demo world)")
    parser.add_argument("--labels", nargs="+", default=["red circle", "green square", "blue triangle"])
    parser.add_argument("--keep", help="build the venv in this folder and keep it (default: a temporary folder)")
    args = parser.parse_args(argv)
    folder = Path(args.model).resolve()
    if not (folder / "config.json").is_file():
        parser.error(f"--model {args.model!r} is not a saved GLIP folder (no config.json); run `make demo` first.")

    with tempfile.TemporaryDirectory(prefix="glip-fresh-venv-") as temporary:
        work = Path(args.keep).resolve() if args.keep else Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        image = str(Path(args.image).resolve()) if args.image else default_image(work)
        environment_dir = work / "venv"
        python = environment_dir / "bin" / "python"
        environment = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
        environment.update({"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(work / "modules")})
        results = {}

        start = time.time()
        venv.EnvBuilder(with_pip=True, clear=True).create(environment_dir)
        run([str(python), "-m", "pip", "install", "-q", "transformers", "torchvision", "pillow"], env=environment)
        results["venv_seconds"] = round(time.time() - start, 1)
        freeze = run([str(python), "-m", "pip", "freeze"], env=environment).stdout.split()
        results["fresh_venv_packages"] = len(freeze)
        results["fresh_venv_has_package"] = any(line.lower().startswith("transformers-glip") for line in freeze)

        reference = reference_pipeline(str(folder), image, args.labels)
        loaded = json.loads(
            run(
                [str(python), "-c", REMOTE_CODE_SCRIPT, str(folder), image, json.dumps(args.labels)],
                env=environment,
                cwd=work,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        remote = compare(reference, loaded["detections"], count=20)
        remote.update(
            pipeline_class=loaded["pipeline_class"],
            glip_pipeline=loaded["pipeline_class"].endswith("GLIPZeroShotObjectDetectionPipeline")
            and loaded["pipeline_class"].startswith("transformers_modules."),
            forwards=loaded["forwards"],
        )
        results["remote_code"] = remote
        print(
            f"remote code without the package: {loaded['pipeline_class']}, {loaded['forwards']} forward(s), "
            f"same detections {remote['same']} (top {remote['count']}, |score diff| "
            f"{remote['max_score_difference']:.1e}, |box diff| {remote['max_box_difference']:.1e} px)",
            flush=True,
        )

        start = time.time()
        run([str(python), "-m", "pip", "install", "-q", str(REPOSITORY)], env=environment)
        results["install_seconds"] = round(time.time() - start, 1)
        glip = environment_dir / "bin" / "glip"
        command = [str(glip), "detect", image, "--model", str(folder), "--labels", *args.labels]
        command += ["--threshold", "0.2", "--json"]
        printed = json.loads(run(command, env=environment, cwd=work).stdout)
        detections = printed[0]["detections"] if isinstance(printed, list) else printed["detections"]
        cli = compare(reference_detections(str(folder), image, args.labels, threshold=0.2), detections, count=100)
        results["glip_detect"] = cli
        print(
            f"pip install + glip detect: {cli['count']} detections, same as detect here {cli['same']} "
            f"(|score diff| {cli['max_score_difference']:.1e}, |box diff| {cli['max_box_difference']:.1e} px)",
            flush=True,
        )
    passed = (
        not results["fresh_venv_has_package"]
        and remote["same"]
        and remote["glip_pipeline"]
        and remote["forwards"] == 1
        and cli["same"]
    )
    results["passed"] = passed
    print(json.dumps(results))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
