#!/usr/bin/env python
"""Regenerate `docs/images/pipeline_example.png`: the `zero-shot-object-detection` pipeline on the `tiny_a` fixture.

The fixture model is the GLIP-T architecture shrunk, with RANDOM weights (it exists to check numerical parity with
the official code), so its boxes are not meaningful detections: the picture shows the pipeline's output and
`draw_detections`, not detection quality. Point `--model` at a converted released checkpoint for real results.

    python examples/draw_pipeline_example.py
    python examples/draw_pipeline_example.py --model converted/glip-t --image photo.jpg --labels person dog
"""

import argparse
import tempfile
from pathlib import Path

from PIL import Image
from transformers import pipeline

import transformers_glip  # noqa: F401  (registers GLIP with the Auto classes and the pipeline)
from transformers_glip import draw_detections
from transformers_glip.conversion import convert_checkpoint

REPOSITORY = Path(__file__).resolve().parent.parent
FIXTURE = REPOSITORY / "tests" / "fixtures" / "tiny_a"


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="converted GLIP folder (default: convert the tiny_a fixture)")
    parser.add_argument("--image", default=str(FIXTURE / "image.png"))
    parser.add_argument("--labels", nargs="+", default=["red circle", "blue square", "green triangle", "person"])
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--top_k", type=int, default=6)
    parser.add_argument("--output", default=str(REPOSITORY / "docs" / "images" / "pipeline_example.png"))
    return parser.parse_args()


def main() -> None:
    arguments = parse_arguments()
    with tempfile.TemporaryDirectory() as temporary:
        model = arguments.model
        if model is None:
            model = temporary
            convert_checkpoint(
                checkpoint_path=FIXTURE / "checkpoint.pth",
                output_dir=model,
                original_config=FIXTURE / "config.yaml",
                text_model=FIXTURE / "bert",
            )
        detector = pipeline("zero-shot-object-detection", model=model)
        image = Image.open(arguments.image).convert("RGB")
        detections = detector(
            image, candidate_labels=arguments.labels, threshold=arguments.threshold, top_k=arguments.top_k
        )
    for detection in detections:
        print(detection)
    Path(arguments.output).parent.mkdir(parents=True, exist_ok=True)
    draw_detections(image, detections).save(arguments.output)
    print(f"wrote {arguments.output}")


if __name__ == "__main__":
    main()
