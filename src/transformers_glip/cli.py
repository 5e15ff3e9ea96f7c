"""The `glip` command line: thin front-ends over the library and the example scripts.

```
glip detect cat.jpg dog.jpg --model ./glip-t --labels cat dog "remote control" --threshold 0.4
glip detect street.jpg --model ./glip-t --caption "a man rides a bike past a red car" --json --output boxes/
glip convert --checkpoint glip_tiny_model_o365_goldg.pth --variant glip-t --output glip-t
glip train --model_preset tiny --output_dir out/demo
glip app --model ./glip-t --port 7861
```

- `glip detect`: labels go through [`detect`] (all labels of an image in one prompt, the official detection
  prompt); a caption goes through [`GLIPProcessor`] (its noun phrases are the entities, see
  `prompts_glip.find_noun_phrases`) and `GLIPProcessor.post_process_grounded_object_detection` with the model's
  config. Prints a table per image, or JSON (`--json`; boxes as the zero-shot-object-detection pipeline gives
  them); `--output DIR` writes each picture with its boxes ([`draw_detections`]).
- `glip convert ARGS`: the checkpoint converter (`transformers_glip.convert_glip_original_checkpoint.main`).
- `glip train` / `glip finetune` / `glip evaluate` / `glip pseudo-label ARGS`: run `examples/pretrain.py`,
  `examples/finetune.py`, `examples/evaluate.py`, `examples/pseudo_label.py` of the source checkout in this process
  (the examples are not part of the installed package: they are found next to the package source, `src/..`, or in
  the folder named by the environment variable `GLIP_EXAMPLES_DIR`; else the command exits with status 2).
- `glip app [--model DIR] [--port N] [--host H] [--share] [--device D]`: the Gradio demo page
  ([`transformers_glip.app_glip`]; needs `pip install "transformers-glip[app]"`) on `http://127.0.0.1:N`, for the
  folder `--model` (default `out/demo`, the model `make demo` trains).
- `glip export --model DIR --format onnx --output FILE [--labels A B ...]`: an ONNX graph of the model and the
  post-processing json next to it (`onnx_export_glip.export_pretrained_glip_to_onnx`; needs the `export` extra).

Exit status: 0 on success, 2 on a bad argument (one line on stderr, no traceback), 1 when a forwarded command
fails its own checks.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "EXAMPLE_SCRIPTS",
    "CommandLineError",
    "build_parser",
    "find_examples_directory",
    "main",
]

PROGRAM = "glip"

# Commands that run a script of the source checkout's `examples/` folder, with the script's own arguments.
EXAMPLE_SCRIPTS = {
    "train": "pretrain.py",
    "finetune": "finetune.py",
    "evaluate": "evaluate.py",
    "pseudo-label": "pseudo_label.py",
}
EXAMPLE_DESCRIPTIONS = {
    "train": "pre-train or continue training (examples/pretrain.py; its arguments, see `glip train --help`)",
    "finetune": "fine-tune on a COCO-format dataset (examples/finetune.py)",
    "evaluate": "COCO / LVIS box AP, Flickr30K Recall@k or an ODinW-style suite (examples/evaluate.py)",
    "pseudo-label": "ground the noun phrases of image-caption pairs with a teacher (examples/pseudo_label.py)",
}
EXAMPLES_DIRECTORY_VARIABLE = "GLIP_EXAMPLES_DIR"
DEFAULT_THRESHOLD = 0.3
# `onnx_export_glip.MINIMUM_OPSET_VERSION` (ONNX DeformConv), repeated so that building the parser imports no torch;
# tests/test_onnx_export_glip.py checks that they agree.
ONNX_OPSET_VERSION = 19

COMMANDS = ("detect", "convert", "export", "app", *EXAMPLE_SCRIPTS)

EPILOG = """\
examples:
  glip detect cat.jpg --model ./glip-t --labels cat "remote control"
  glip detect photos/*.jpg --model ./glip-t --labels person bicycle car --threshold 0.4 --json
  glip detect street.jpg --model ./glip-t --caption "a man rides a bike past a red car" --output boxes/
  glip convert --checkpoint glip_tiny_model_o365_goldg.pth --variant glip-t --output glip-t
  glip export --model ./glip-t --format onnx --output glip-t.onnx
  glip app --model ./glip-t
  glip train --help

Run `glip COMMAND --help` for the options of a command. train, finetune, evaluate and pseudo-label run the
scripts of the source checkout's examples/ folder (for several processes: `accelerate launch examples/pretrain.py`).
"""

DETECT_EPILOG = """\
examples:
  glip detect cat.jpg --model ./glip-t --labels cat "remote control"
  glip detect a.jpg b.jpg --model ./glip-t --labels person dog --threshold 0.5 --json > detections.json
  glip detect street.jpg --model ./glip-t --caption "a man rides a bike past a red car" --output boxes/

--labels puts all labels in one prompt (the official detection prompt, chunked when they do not fit in 256
tokens); --caption grounds the noun phrases of a free sentence. Scores are probabilities in [0, 1]; boxes are
(xmin, ymin, xmax, ymax) in pixels of the original image.
"""

EXPORT_EPILOG = """\
examples:
  glip export --model ./glip-t --format onnx --output glip-t.onnx
  glip export --model ./glip-t --format onnx --output coco.onnx --labels person bicycle car --image-size 800 1344

Without --labels the prompt is a graph input (pixel_values, input_ids, attention_mask, token_type_ids); with
--labels their detection prompt is encoded once and baked in (only pixel_values is an input). The graph takes one
padded image size (default: the processor's landscape maximum); FILE.json next to it holds what the
post-processing needs. Run it with transformers_glip.onnx_export_glip.GLIPOnnxDetector (onnxruntime).
"""


APP_EPILOG = """\
examples:
  glip app                          # the demo model of `make demo` (out/demo)
  glip app --model ./glip-t --port 7861
  glip app --model ./glip-t --host 0.0.0.0 --device cuda:0

Opens nothing by itself: visit the printed URL. Upload an image, type labels (comma separated) or a caption, set
the threshold and press Detect. Needs Gradio: pip install "transformers-glip[app]".
"""


class CommandLineError(Exception):
    """A bad argument: printed as one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is ONE line on stderr (`glip detect: error: ... (see glip detect --help)`)."""

    def error(self, message: str):
        raise CommandLineError(f"{message} (see `{self.prog} --help`)")


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1] (scores are probabilities), got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number in [1, 65535], got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number in [1, 65535], got {value}")
    return value


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("transformers-glip")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The `glip` argument parser (subcommands; the forwarded ones only carry their description here)."""
    parser = _Parser(
        prog=PROGRAM,
        description="GLIP (Grounded Language-Image Pre-training) from the terminal: detect objects named by\n"
        "words, convert official checkpoints, train and evaluate.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_package_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    detect_parser = commands.add_parser(
        "detect",
        help="detect objects named by labels or a caption in images",
        description="Detect the objects named by --labels (or the noun phrases of --caption) in each IMAGE.",
        epilog=DETECT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    detect_parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (png, jpg, ...)")
    detect_parser.add_argument(
        "--model", required=True, metavar="DIR_OR_HUB_ID", help="a converted / saved GLIP folder or a Hub model id"
    )
    prompt = detect_parser.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--labels", nargs="+", metavar="LABEL", help="the object names to detect")
    prompt.add_argument("--caption", metavar="TEXT", help="a sentence whose noun phrases are detected")
    detect_parser.add_argument(
        "--threshold",
        type=_threshold,
        default=DEFAULT_THRESHOLD,
        metavar="X",
        help=f"keep detections with score > X (default: {DEFAULT_THRESHOLD}; the pipeline's 0.1 keeps weak boxes)",
    )
    detect_parser.add_argument(
        "--official-mode",
        action="store_true",
        help="the exact official computation (prompts padded to 256 tokens, unfactorised fusion, one chunk per "
        "forward) instead of the faster default, which equals it up to float rounding",
    )
    detect_parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    detect_parser.add_argument("--output", metavar="DIR", help="write each image with its boxes drawn into DIR")
    detect_parser.add_argument(
        "--batch-size", type=_positive_int, default=1, metavar="N", help="images per forward (default: 1)"
    )
    detect_parser.add_argument("--device", help="torch device, e.g. cpu or cuda:0 (default: cuda when available)")
    detect_parser.add_argument(
        "--local-files-only", action="store_true", help="never download: use local folders and the Hub cache only"
    )
    commands.add_parser(
        "convert",
        add_help=False,
        help="convert an official GLIP checkpoint (see `glip convert --help`)",
    )
    _add_export_parser(commands)
    app_parser = commands.add_parser(
        "app",
        help="a browser demo (Gradio) of a model: upload an image, type labels, see the boxes",
        description="Serve the GLIP demo page (Gradio) for a model folder on http://HOST:PORT.",
        epilog=APP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    app_parser.add_argument(
        "--model",
        metavar="DIR_OR_HUB_ID",
        help="a converted / saved GLIP folder or a Hub model id (default: out/demo, written by `make demo`)",
    )
    app_parser.add_argument(
        "--port", type=_port, metavar="N", help="port to listen on (default: the first free one from 7860)"
    )
    app_parser.add_argument(
        "--host", default="127.0.0.1", metavar="H", help="address to listen on (default: 127.0.0.1, this machine)"
    )
    app_parser.add_argument(
        "--share", action="store_true", help="also make a public gradio.live link (default: no, local only)"
    )
    app_parser.add_argument("--device", help="torch device, e.g. cpu or cuda:0 (default: cuda when available)")
    for name, description in EXAMPLE_DESCRIPTIONS.items():
        commands.add_parser(name, add_help=False, help=description)
    return parser


def _add_export_parser(commands) -> None:
    export_parser = commands.add_parser(
        "export",
        help="export a model to ONNX (onnxruntime runs it; see `glip export --help`)",
        description="Export a saved or converted GLIP folder to an ONNX graph (plus FILE.json for the "
        "post-processing).",
        epilog=EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export_parser.add_argument("--model", required=True, metavar="DIR", help="a converted / saved GLIP folder")
    export_parser.add_argument("--format", required=True, choices=["onnx"], help="the export format (onnx)")
    export_parser.add_argument("--output", required=True, metavar="FILE", help="the .onnx file to write")
    export_parser.add_argument(
        "--labels", nargs="+", metavar="LABEL", help="bake the detection prompt of these names into the graph"
    )
    export_parser.add_argument(
        "--opset",
        type=_positive_int,
        default=ONNX_OPSET_VERSION,
        metavar="N",
        help=f"ONNX opset, >= {ONNX_OPSET_VERSION} for DeformConv (default: {ONNX_OPSET_VERSION})",
    )
    export_parser.add_argument(
        "--image-size",
        type=_positive_int,
        nargs=2,
        metavar=("HEIGHT", "WIDTH"),
        help="padded input size of the graph, multiples of 32 (default: the processor's landscape maximum)",
    )
    export_parser.add_argument(
        "--deformable-conv",
        choices=["onnx", "decomposed"],
        default="onnx",
        help="the head's deformable convs as ONNX DeformConv (default) or decomposed into gathers + MatMul, for "
        "runtimes without DeformConv",
    )


def find_examples_directory() -> Path | None:
    """The `examples/` folder of the source checkout this package runs from (or `$GLIP_EXAMPLES_DIR`); None when
    the package is installed without its sources."""
    override = os.environ.get(EXAMPLES_DIRECTORY_VARIABLE)
    if override:
        return Path(override)
    repository = Path(__file__).resolve().parents[2]  # src/transformers_glip/cli.py -> the checkout
    examples = repository / "examples"
    if (repository / "pyproject.toml").is_file() and examples.is_dir():
        return examples
    return None


def _run_example_script(command: str, arguments: list[str]) -> int:
    script_name = EXAMPLE_SCRIPTS[command]
    examples = find_examples_directory()
    if examples is None:
        raise CommandLineError(
            f"`glip {command}` runs examples/{script_name}, which comes with the source checkout, not with the "
            "installed package: git clone the repository and run it there (pip install -e .)"
        )
    script = examples / script_name
    if not script.is_file():
        raise CommandLineError(f"`glip {command}` needs {script}, which does not exist in this checkout")
    # What `python examples/x.py ARGS` does, with `glip COMMAND` as the program name (runpy.run_path would show the
    # script's file name in the script's usage lines): a fresh `__main__` module, the script's folder first on
    # sys.path.
    module = types.ModuleType("__main__")
    module.__file__ = str(script)
    code = compile(script.read_text(encoding="utf-8"), str(script), "exec")
    saved_argv, saved_path, saved_main = sys.argv, list(sys.path), sys.modules.get("__main__")
    sys.argv = [f"{PROGRAM} {command}", *arguments]
    sys.path.insert(0, str(script.parent))
    sys.modules["__main__"] = module
    try:
        exec(code, module.__dict__)
    except SystemExit as stop:
        return _exit_status(stop)
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
        if saved_main is not None:
            sys.modules["__main__"] = saved_main
    return 0


def _run_convert(arguments: list[str]) -> int:
    from .convert_glip_original_checkpoint import main as convert_main

    try:
        convert_main(arguments)
    except SystemExit as stop:  # the converter's own argparse (usage errors: 2, --help: 0)
        return _exit_status(stop)
    except (ValueError, OSError) as error:  # a failed check (a missing file too): its message, no traceback
        print(f"{PROGRAM} convert: error: {error}", file=sys.stderr)
        return 1
    return 0


def _exit_status(stop: SystemExit) -> int:
    if stop.code is None:
        return 0
    if isinstance(stop.code, int):
        return stop.code
    print(stop.code, file=sys.stderr)
    return 1


# ---------------------------------------------------------------------------------------------------- glip detect
def _check_images(paths: Sequence[str]) -> list[Path]:
    import PIL.Image

    checked = []
    for path in map(Path, paths):
        if not path.is_file():
            raise CommandLineError(
                f"image file {str(path)!r} does not exist" if not path.exists() else f"{path} is not a file"
            )
        try:
            with PIL.Image.open(path) as image:
                image.verify()
        except (PIL.UnidentifiedImageError, OSError, SyntaxError) as error:
            raise CommandLineError(f"{path} is not an image Pillow can read ({error})") from None
        checked.append(path)
    return checked


def _load_image(path: Path):
    import PIL.Image
    import PIL.ImageOps

    with PIL.Image.open(path) as image:
        return PIL.ImageOps.exif_transpose(image).convert("RGB")  # camera orientation, like transformers' load_image


def _load_model(name: str, device: str | None, local_files_only: bool):
    """GLIPForGrounding + GLIPProcessor of a folder or Hub id, in eval mode on `device`."""
    import torch

    from . import GLIPForGrounding, GLIPProcessor
    from .hub_glip import looks_like_hub_id

    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CommandLineError(
                f"--model {name}: the folder has no config.json; pass a folder written by `glip convert` or "
                "save_pretrained"
            )
    elif path.exists():
        raise CommandLineError(f"--model {name} is a file; pass the model folder (with config.json) or a Hub id")
    elif not looks_like_hub_id(name):
        raise CommandLineError(f"--model {name}: no such folder (and not a Hub model id)")
    try:
        model = GLIPForGrounding.from_pretrained(name, local_files_only=local_files_only)
        processor = GLIPProcessor.from_pretrained(name, local_files_only=local_files_only)
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        where = "a local folder" if path.is_dir() else "a local folder nor a model on the Hub (or in its cache)"
        if path.is_dir():
            raise CommandLineError(f"--model {name}: cannot load a GLIP model from {where}: {reason}") from None
        raise CommandLineError(f"--model {name} is neither {where}: {reason}") from None
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        model = model.to(device)
    except (RuntimeError, AssertionError) as error:
        raise CommandLineError(f"--device {device}: {str(error).strip().splitlines()[0]}") from None
    return model.eval(), processor


def _check_labels(labels: Sequence[str]) -> list[str]:
    for index, label in enumerate(labels):
        if not label.strip():
            raise CommandLineError(f"--labels: label {index + 1} is empty; give each object name as a word or phrase")
    return list(labels)


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def _encode_caption(processor, caption: str, official_mode: bool = False) -> dict[str, Any]:
    if not caption.strip():
        raise CommandLineError("--caption is empty; give a sentence that names the objects")
    try:
        encoded = processor(text=caption, official_mode=official_mode)
    except ValueError as error:
        raise CommandLineError(
            f"--caption {caption!r}: {error} (name the objects with nouns, or use --labels)"
        ) from None
    return encoded


def _detect_caption(model, processor, images: list[Any], encoded: dict[str, Any], threshold: float) -> list[dict]:
    """Ground the phrases of one encoded caption in each image: images of the same padded network-input size run
    in one forward (the model has no padding mask, so only those give single-image results)."""
    import torch

    parameter = next(model.parameters())
    features = [processor.image_processor(image) for image in images]
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, feature in enumerate(features):
        groups.setdefault(tuple(feature["pixel_values"].shape[-2:]), []).append(index)
    results: list[dict | None] = [None] * len(images)
    for indices in groups.values():
        count = len(indices)
        text = {
            key: encoded[key].expand(count, -1).to(parameter.device)  # (count, sequence_length)
            for key in ("input_ids", "token_type_ids", "attention_mask")
            if key in encoded
        }
        with torch.inference_mode():
            outputs = model(
                pixel_values=torch.cat([features[index]["pixel_values"] for index in indices]).to(
                    device=parameter.device, dtype=parameter.dtype
                ),
                image_sizes=torch.cat([features[index]["image_sizes"] for index in indices]).to(parameter.device),
                **text,
            )
        detections = processor.post_process_grounded_object_detection(
            outputs,
            threshold=threshold,
            target_sizes=[tuple(features[index]["original_sizes"][0].tolist()) for index in indices],
            text_labels=encoded["text_labels"] * count,
            positive_map=encoded["positive_map"].expand(count, -1, -1),  # (count, num_phrases, sequence_length)
            image_sizes=[tuple(features[index]["image_sizes"][0].tolist()) for index in indices],
            config=model.config,
        )
        for index, detection in zip(indices, detections):
            results[index] = detection
    return results


def _as_records(detections: dict[str, Any]) -> list[dict[str, Any]]:
    """One image's detections as the zero-shot-object-detection pipeline lists them (box as a dict)."""
    return [
        {
            "label": label,
            "score": float(score),
            "box": dict(zip(("xmin", "ymin", "xmax", "ymax"), (float(value) for value in box))),
        }
        for label, score, box in zip(
            detections["text_labels"], detections["scores"].tolist(), detections["boxes"].tolist()
        )
    ]


def _print_table(path: Path, records: list[dict[str, Any]], threshold: float) -> None:
    count = len(records)
    print(f"{path}: {count} detection{'s' if count != 1 else ''} (score > {threshold:g})")
    if not records:
        return
    width = max(5, *(len(record["label"]) for record in records))
    print(f"  {'label':<{width}}  {'score':>6}  box (xmin, ymin, xmax, ymax)")
    for record in records:
        box = ", ".join(f"{record['box'][key]:.1f}" for key in ("xmin", "ymin", "xmax", "ymax"))
        print(f"  {record['label']:<{width}}  {record['score']:>6.3f}  ({box})")


def _output_paths(paths: list[Path], directory: Path) -> list[Path]:
    """`DIR/<image stem>.png` per image, numbered when two images share a stem."""
    taken: set[str] = set()
    outputs = []
    for path in paths:
        name, number = f"{path.stem}.png", 1
        while name in taken:
            name, number = f"{path.stem}-{number}.png", number + 1
        taken.add(name)
        outputs.append(directory / name)
    return outputs


def _run_detect(arguments: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    image_paths = _check_images(arguments.images)
    labels = _check_labels(arguments.labels) if arguments.labels is not None else None
    output_directory = Path(arguments.output) if arguments.output else None
    if output_directory is not None and output_directory.exists() and not output_directory.is_dir():
        raise CommandLineError(f"--output {output_directory} is a file; pass a folder (it is created if needed)")
    model, processor = _load_model(arguments.model, arguments.device, arguments.local_files_only)
    encoded = _encode_caption(processor, arguments.caption, arguments.official_mode) if labels is None else None

    from . import detect, draw_detections
    from .inference_glip import official_computation

    if output_directory is not None:
        output_directory.mkdir(parents=True, exist_ok=True)
        drawn_paths = _output_paths(image_paths, output_directory)
    report = []
    # tqdm writes to stderr and stays quiet when that is not a terminal (disable=None).
    with tqdm(total=len(image_paths), desc="Detecting", unit="image", disable=None) as progress:
        for batch in _chunks(list(range(len(image_paths))), arguments.batch_size):
            images = [_load_image(image_paths[index]) for index in batch]
            try:
                if labels is not None:
                    results = detect(
                        model,
                        processor,
                        images,
                        labels,
                        threshold=arguments.threshold,
                        batch_size=len(batch),
                        official_mode=arguments.official_mode,
                    )
                elif arguments.official_mode:
                    with official_computation(model):
                        results = _detect_caption(model, processor, images, encoded, arguments.threshold)
                else:
                    results = _detect_caption(model, processor, images, encoded, arguments.threshold)
            except ValueError as error:  # e.g. NaN weights: the library says what is wrong
                print(f"{PROGRAM} detect: error: {error}", file=sys.stderr)
                return 1
            for index, image, result in zip(batch, images, results):
                records = _as_records(result)
                report.append({"image": str(image_paths[index]), "detections": records})
                if output_directory is not None:
                    draw_detections(image, result).save(drawn_paths[index])
                if not arguments.json:
                    progress.clear()
                    _print_table(image_paths[index], records, arguments.threshold)
            progress.update(len(batch))
    if arguments.json:
        print(json.dumps(report, indent=2))
    if output_directory is not None:
        print(
            f"Wrote {len(image_paths)} image{'s' if len(image_paths) != 1 else ''} with boxes to {output_directory}",
            file=sys.stderr,
        )
    return 0


# ---------------------------------------------------------------------------------------------------- glip export
def _run_export(arguments: argparse.Namespace) -> int:
    import importlib.util

    if arguments.opset < ONNX_OPSET_VERSION:
        raise CommandLineError(
            f"--opset {arguments.opset}: ONNX DeformConv (the head's deformable convolution) needs opset >= "
            f"{ONNX_OPSET_VERSION}"
        )
    labels = _check_labels(arguments.labels) if arguments.labels is not None else None
    output = Path(arguments.output)
    if output.is_dir():
        raise CommandLineError(f"--output {output} is a folder; pass the .onnx file to write")
    if output.suffix != ".onnx":
        raise CommandLineError(f"--output {output}: name the file FILE.onnx (FILE.json is written next to it)")
    if importlib.util.find_spec("onnx") is None:
        raise CommandLineError("ONNX export needs the onnx package: pip install 'transformers-glip[export]'")
    path = Path(arguments.model).expanduser()
    if not path.is_dir():
        problem = "is a file" if path.exists() else "no such folder"
        raise CommandLineError(
            f"--model {arguments.model}: {problem}; pass a folder written by `glip convert` or save_pretrained"
        )
    if not (path / "config.json").is_file():
        raise CommandLineError(
            f"--model {arguments.model}: the folder has no config.json; pass a folder written by `glip convert` or "
            "save_pretrained"
        )
    from . import GLIPProcessor

    try:  # the processor first: the size checks need it, and it loads without a progress bar
        processor = GLIPProcessor.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CommandLineError(f"--model {arguments.model}: cannot load the GLIP processor: {reason}") from None
    divisibility = processor.image_processor.size_divisibility
    image_size = tuple(arguments.image_size) if arguments.image_size else None
    if image_size is not None and divisibility > 0 and any(value % divisibility for value in image_size):
        raise CommandLineError(
            f"--image-size {image_size[0]} {image_size[1]}: the padded network input is a multiple of "
            f"{divisibility}; pass multiples of {divisibility}"
        )
    if image_size is None and processor.image_processor.max_size is None:
        raise CommandLineError(
            f"--model {arguments.model}: the processor has no long-side cap, so no default graph size holds every "
            "image; pass --image-size HEIGHT WIDTH"
        )
    model, _ = _load_model(arguments.model, "cpu", local_files_only=True)

    from .onnx_export_glip import export_glip_to_onnx, onnx_metadata_path

    print(f"Exporting {arguments.model} to {output} (opset {arguments.opset}) ...", file=sys.stderr)
    export_glip_to_onnx(
        model.float(),
        processor,
        output,
        labels=labels,
        opset_version=arguments.opset,
        image_size=image_size,
        deformable_conv=arguments.deformable_conv,
    )
    print(f"Wrote {output} and {onnx_metadata_path(output)}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------------------- glip app
def _run_app(arguments: argparse.Namespace) -> int:
    from .app_glip import launch_app

    try:
        launch_app(arguments.model, arguments.port, arguments.host, arguments.share, arguments.device)
    except (ImportError, ValueError) as error:  # no Gradio; a missing or unloadable model folder; a bad device
        raise CommandLineError(str(error)) from None
    except OSError as error:  # the port is taken, the address cannot be bound
        print(f"{PROGRAM} app: error: {str(error).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------------------------------------- entry point
def main(argv: Sequence[str] | None = None) -> int:
    """Run `glip` with `argv` (default `sys.argv[1:]`); returns the exit status (the console script exits with it).

    Returns:
        `int`: 0 on success, 2 on a bad argument (one line on stderr), 1 when a forwarded command fails.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = arguments[0] if arguments else None
    try:
        if command == "convert":
            return _run_convert(arguments[1:])
        if command in EXAMPLE_SCRIPTS:
            return _run_example_script(command, arguments[1:])
        parser = build_parser()
        try:
            parsed = parser.parse_args(arguments)
        except SystemExit as stop:  # --help, --version
            return _exit_status(stop)
        if parsed.command is None:
            parser.print_help(sys.stderr)
            return 2
        if parsed.command == "export":
            return _run_export(parsed)
        if parsed.command == "app":
            return _run_app(parsed)
        return _run_detect(parsed)
    except CommandLineError as error:
        known = command in COMMANDS
        print(f"{PROGRAM}{' ' + command if known else ''}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
