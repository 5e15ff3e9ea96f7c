"""The GLIP demo app: a Gradio page that detects the objects named by labels or a caption in an uploaded image.

```
glip app                          # the demo model `make demo` trains (out/demo)
glip app --model ./glip-t --port 7861
python -m transformers_glip.app_glip --model ./glip-t
```

Upload an image, type labels (comma separated: `cat, dog, remote control`) or a caption (`a man rides a bike past a
red car`: its noun phrases are the entities), move the threshold slider, press Detect: the page shows the picture
with its boxes ([`draw_detections`]) and a table of the detections (label, score, box in original-image pixels).

- Labels go through [`detect`] (all labels in one prompt, the official detection prompt, chunked when they do not fit
  in the model's text length); a caption goes through [`GLIPProcessor`] and
  `GLIPProcessor.post_process_grounded_object_detection` with the model's config, as `glip detect --caption` does.
- [`GLIPDemo`] holds the model and answers one request ([`GLIPDemo.predict`], no Gradio needed); [`build_app`] wraps
  it in a `gradio.Blocks` page whose Detect button is also the API endpoint `/detect` (for `gradio_client`);
  [`launch_app`] loads a folder and serves the page.
- Nothing leaves the machine: Gradio's telemetry and version check are off (`analytics_enabled=False`), the page
  uses the fonts Gradio ships, and a public link is made only with `share=True` (`glip app --share`).

Gradio is an optional dependency: `pip install "transformers-glip[app]"`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import PIL.Image
import torch

from .hub_glip import looks_like_hub_id
from .inference_glip import detect
from .modeling_glip import GLIPForGrounding
from .postprocessing_glip import check_score_threshold
from .processing_glip import GLIPProcessor
from .visualization_glip import draw_detections

__all__ = [
    "API_NAME",
    "DEFAULT_MODEL_DIRECTORY",
    "DEFAULT_THRESHOLD",
    "PROMPT_MODES",
    "TABLE_HEADERS",
    "GLIPDemo",
    "build_app",
    "format_detection_rows",
    "import_gradio",
    "label_font_size",
    "launch_app",
    "load_glip_folder",
    "main",
    "parse_labels",
]

# Where `make demo` (examples/pretrain.py --output_dir out/demo) writes the demo model, relative to the checkout.
DEFAULT_MODEL_DIRECTORY = Path("out") / "demo"
DEFAULT_THRESHOLD = 0.3
PROMPT_MODES = ("labels", "caption")
TABLE_HEADERS = ["label", "score", "box (xmin, ymin, xmax, ymax)"]
API_NAME = "detect"
IMAGE_HEIGHT = 360  # pixels of the page's image boxes (small images are shown larger)
INSTALL_HINT = 'pip install "transformers-glip[app]"'

# Element ids of the page (a browser test or a screenshot script finds the widgets by them).
ELEMENT_IDS = {
    "image": "glip-input-image",
    "mode": "glip-prompt-mode",
    "prompt": "glip-prompt",
    "threshold": "glip-threshold",
    "button": "glip-detect",
    "output": "glip-output-image",
    "table": "glip-detections",
    "summary": "glip-summary",
}


def import_gradio():
    """`import gradio` with telemetry off, or an `ImportError` that says how to install it."""
    # Gradio reads this when it is imported and again when a Blocks or a Client is built; the app never phones home.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError as error:
        raise ImportError(f"The GLIP demo app needs Gradio: {INSTALL_HINT} (or pip install gradio).") from error
    return gradio


def load_glip_folder(
    model: str | os.PathLike | None = None, device: str | torch.device | None = None
) -> tuple[GLIPForGrounding, GLIPProcessor]:
    """[`GLIPForGrounding`] and [`GLIPProcessor`] of a saved or converted folder (or a Hub id), in eval mode.

    Args:
        model: a folder written by `save_pretrained` / `glip convert` / `make demo`, or a Hub model id; `None` is
            [`DEFAULT_MODEL_DIRECTORY`] (`out/demo`, relative to the working directory).
        device: torch device (default: `cuda` when available, else `cpu`).

    Raises:
        `ValueError` when the folder is missing, has no `config.json`, or does not hold a GLIP model (the message
        says what to pass instead: `make demo`, `--model DIR`), or when `device` is unknown or unavailable.
    """
    name = str(DEFAULT_MODEL_DIRECTORY if model is None else model)
    path = Path(name).expanduser()
    if model is None and not path.is_dir():
        raise ValueError(
            f"no demo model at {path}: run `make demo` in the repository (it trains the demo model there), or pass "
            "--model DIR (a folder written by `glip convert` or save_pretrained)"
        )
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(
                f"--model {name}: the folder has no config.json; pass a folder written by `glip convert`, "
                "save_pretrained or `make demo`"
            )
    elif path.exists():
        raise ValueError(f"--model {name} is a file; pass the model folder (with config.json)")
    elif not looks_like_hub_id(name):
        raise ValueError(
            f"--model {name}: no such folder (run `make demo` for the demo model in out/demo, or pass a folder "
            "written by `glip convert` or save_pretrained)"
        )
    try:
        loaded_model = GLIPForGrounding.from_pretrained(name)
        processor = GLIPProcessor.from_pretrained(name)
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"--model {name}: cannot load a GLIP model and processor from it: {reason}") from None
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        loaded_model = loaded_model.to(device)
    except (RuntimeError, AssertionError) as error:  # an unknown device name, CUDA not available
        raise ValueError(f"--device {device}: {str(error).strip().splitlines()[0]}") from None
    return loaded_model.eval(), processor


def parse_labels(text: str) -> list[str]:
    """`"cat, dog , remote control,"` -> `["cat", "dog", "remote control"]`: comma separated, stripped, empty
    entries and exact repeats dropped (first kept)."""
    if not isinstance(text, str):
        raise TypeError(f"the labels must be a string of comma-separated names, got {type(text).__name__}.")
    labels: list[str] = []
    for part in text.split(","):
        label = part.strip()
        if label and label not in labels:
            labels.append(label)
    return labels


def label_font_size(image: PIL.Image.Image) -> int:
    """Text height of the box labels the page draws: 1/32 of the image's longer side, at least 12 pixels (the
    page shows images scaled to its boxes; Pillow's default 10-pixel font would be unreadable on large photos)."""
    return max(12, round(max(image.size) / 32))


def format_detection_rows(detections: dict[str, Any]) -> list[list[Any]]:
    """One image's detections (`boxes` `(num_detections, 4)`, `scores`, `text_labels`) as table rows
    `[label, score (3 decimals), "(xmin, ymin, xmax, ymax)" (1 decimal)]`, best first."""
    rows = []
    for label, score, box in zip(
        detections["text_labels"], detections["scores"].tolist(), detections["boxes"].tolist()
    ):
        rows.append([str(label), round(float(score), 3), "(" + ", ".join(f"{value:.1f}" for value in box) + ")"])
    return rows


class GLIPDemo:
    """A loaded GLIP model answering the app's requests: one image, labels or a caption, a threshold.

    Args:
        model ([`GLIPForGrounding`]): the model (in eval mode; its device and dtype are used).
        processor ([`GLIPProcessor`]): its processor.
        model_name (`str`): shown on the page (the folder or Hub id).
    """

    def __init__(self, model: GLIPForGrounding, processor: GLIPProcessor, model_name: str = "GLIP"):
        self.model = model
        self.processor = processor
        self.model_name = model_name

    @classmethod
    def from_folder(cls, model: str | os.PathLike | None = None, device: str | torch.device | None = None):
        """Load a folder or Hub id with [`load_glip_folder`] (`None`: `out/demo`)."""
        loaded_model, processor = load_glip_folder(model, device)
        return cls(loaded_model, processor, str(DEFAULT_MODEL_DIRECTORY if model is None else model))

    def predict(
        self, image: Any, prompt: str, mode: str = "labels", threshold: float = DEFAULT_THRESHOLD
    ) -> tuple[PIL.Image.Image, list[list[Any]], dict[str, Any]]:
        """Detect in one image.

        Args:
            image (`PIL.Image.Image`): the uploaded image (converted to RGB).
            prompt (`str`): comma-separated labels (`mode="labels"`) or a caption (`mode="caption"`).
            mode (`str`): `"labels"` or `"caption"`.
            threshold (`float`): keep detections with `score > threshold`, in [0, 1].

        Returns:
            the image with its boxes drawn ([`draw_detections`], labels [`label_font_size`] high), the table rows
            ([`format_detection_rows`]) and the raw detections (`boxes` `(num_detections, 4)` xyxy original-image
            pixels, `scores`, `labels`, `text_labels`).

        Raises:
            `ValueError` / `TypeError` naming the bad input (no image, no labels, a caption without noun phrases, a
            threshold outside [0, 1], an unknown mode).
        """
        if image is None:
            raise ValueError("no image: upload an image first")
        if not isinstance(image, PIL.Image.Image):
            raise TypeError(f"the image must be a PIL.Image.Image, got {type(image).__name__}.")
        if mode not in PROMPT_MODES:
            raise ValueError(f"the prompt mode must be one of {list(PROMPT_MODES)}, got {mode!r}.")
        if not isinstance(prompt, str) or not prompt.strip():
            what = "labels, comma separated (e.g. cat, dog)" if mode == "labels" else "a caption naming the objects"
            raise ValueError(f"the prompt is empty: type {what}")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise TypeError(f"the threshold must be a number in [0, 1], got {threshold!r}.")
        threshold = float(threshold)
        check_score_threshold(threshold)
        image = image.convert("RGB")
        if mode == "labels":
            labels = parse_labels(prompt)
            if not labels:
                raise ValueError("no labels: type object names separated by commas (e.g. cat, dog)")
            detections = detect(self.model, self.processor, image, labels, threshold=threshold)[0]
        else:
            detections = self._detect_caption(image, prompt, threshold)
        drawn = draw_detections(image, detections, font_size=label_font_size(image))
        return drawn, format_detection_rows(detections), detections

    def _detect_caption(self, image: PIL.Image.Image, caption: str, threshold: float) -> dict[str, Any]:
        """The noun phrases of `caption` grounded in `image` (processor -> model -> the processor's official
        post-processing with the model config)."""
        try:
            inputs = self.processor(images=image, text=caption)
        except ValueError as error:
            raise ValueError(f"caption {caption!r}: {error} (name the objects with nouns, or use labels)") from None
        parameter = next(self.model.parameters())
        with torch.inference_mode():
            outputs = self.model(
                pixel_values=inputs["pixel_values"].to(device=parameter.device, dtype=parameter.dtype),
                image_sizes=inputs["image_sizes"].to(parameter.device),
                input_ids=inputs["input_ids"].to(parameter.device),  # (1, sequence_length)
                token_type_ids=inputs["token_type_ids"].to(parameter.device),
                attention_mask=inputs["attention_mask"].to(parameter.device),
            )
        return self.processor.post_process_grounded_object_detection(
            outputs,
            threshold=threshold,
            target_sizes=[tuple(inputs["original_sizes"][0].tolist())],
            text_labels=inputs["text_labels"],
            positive_map=inputs["positive_map"],  # (1, num_phrases, sequence_length)
            image_sizes=[tuple(inputs["image_sizes"][0].tolist())],
            config=self.model.config,
        )[0]


def _summary(detections: dict[str, Any], threshold: float, mode: str) -> str:
    count = len(detections["scores"])
    names = sorted(set(detections["text_labels"]), key=list(detections["text_labels"]).index)
    found = f": {', '.join(names)}" if names else ""
    return f"**{count} detection{'s' if count != 1 else ''}** (score > {threshold:g}, {mode}){found}"


def build_app(demo: GLIPDemo, default_prompt: str = "", default_threshold: float = DEFAULT_THRESHOLD):
    """The Gradio page of `demo`: image, prompt mode, prompt, threshold slider, Detect button; outputs the image
    with boxes, a Markdown summary and the detection table. The button's endpoint is `/detect` (inputs: image,
    mode, prompt, threshold; outputs: image, summary, table).

    Returns:
        `gradio.Blocks` (not launched: call `.launch()`, or [`launch_app`]).
    """
    if not isinstance(demo, GLIPDemo):
        raise TypeError(f"demo must be a GLIPDemo (GLIPDemo.from_folder(DIR)), got {type(demo).__name__}.")
    check_score_threshold(default_threshold)
    gradio = import_gradio()

    def run(image, mode, prompt, threshold):
        try:
            drawn, rows, detections = demo.predict(image, prompt, mode=mode, threshold=threshold)
        except (TypeError, ValueError) as error:
            raise gradio.Error(str(error)) from None
        import pandas

        return drawn, _summary(detections, float(threshold), mode), pandas.DataFrame(rows, columns=TABLE_HEADERS)

    with gradio.Blocks(title="GLIP demo", analytics_enabled=False) as app:
        gradio.Markdown(
            f"# GLIP: detect objects named by words\nModel: `{demo.model_name}`. Upload an image, type labels "
            "(comma separated) or a caption, press **Detect**."
        )
        with gradio.Row():
            with gradio.Column():
                image = gradio.Image(
                    type="pil", label="Image", elem_id=ELEMENT_IDS["image"], sources=["upload"], height=IMAGE_HEIGHT
                )
                mode = gradio.Radio(
                    list(PROMPT_MODES),
                    value="labels",
                    label="The prompt is",
                    info="labels: comma-separated object names; caption: a sentence whose noun phrases are found",
                    elem_id=ELEMENT_IDS["mode"],
                )
                prompt = gradio.Textbox(
                    value=default_prompt,
                    label="Labels or caption",
                    placeholder="cat, dog, remote control   (or: a man rides a bike past a red car)",
                    elem_id=ELEMENT_IDS["prompt"],
                )
                threshold = gradio.Slider(
                    0.0,
                    1.0,
                    value=default_threshold,
                    step=0.01,
                    label="Threshold (keep score > threshold)",
                    elem_id=ELEMENT_IDS["threshold"],
                )
                button = gradio.Button("Detect", variant="primary", elem_id=ELEMENT_IDS["button"])
            with gradio.Column():
                output = gradio.Image(
                    type="pil",
                    format="png",
                    label="Detections",
                    interactive=False,
                    elem_id=ELEMENT_IDS["output"],
                    height=IMAGE_HEIGHT,
                )
                summary = gradio.Markdown(elem_id=ELEMENT_IDS["summary"])
                table = gradio.Dataframe(
                    headers=TABLE_HEADERS,
                    datatype=["str", "number", "str"],
                    interactive=False,
                    label="Detections (boxes in pixels of the uploaded image)",
                    elem_id=ELEMENT_IDS["table"],
                )
        inputs = [image, mode, prompt, threshold]
        outputs = [output, summary, table]
        button.click(run, inputs=inputs, outputs=outputs, api_name=API_NAME)
        prompt.submit(run, inputs=inputs, outputs=outputs, api_name=False)
    return app


def launch_app(
    model: str | os.PathLike | None = None,
    port: int | None = None,
    host: str = "127.0.0.1",
    share: bool = False,
    device: str | None = None,
    prevent_thread_lock: bool = False,
):
    """Load `model` ([`load_glip_folder`]; `None`: `out/demo`) and serve its page on `host:port` (`None`: Gradio
    picks a free port from 7860). Blocks until interrupted unless `prevent_thread_lock=True`.

    Returns:
        the launched `gradio.Blocks` (its `local_url`; `.close()` stops it).
    """
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535):
        raise ValueError(f"port must be an integer in [1, 65535], got {port!r}.")
    import_gradio()
    demo = GLIPDemo.from_folder(model, device)
    app = build_app(demo)
    app.launch(
        server_name=host,
        server_port=port,
        share=share,
        inbrowser=False,
        show_error=True,
        prevent_thread_lock=True,
        quiet=True,
    )
    print(f"GLIP demo of {demo.model_name} on {app.local_url}", flush=True)
    if app.share_url:
        print(f"Public link (while this runs): {app.share_url}", flush=True)
    if not prevent_thread_lock:
        print("Press Ctrl+C to stop.", flush=True)
        app.block_thread()
    return app


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m transformers_glip.app_glip [--model DIR] [--port N] [--host H] [--share] [--device D]`."""
    parser = argparse.ArgumentParser(description="The GLIP demo app (Gradio).")
    parser.add_argument("--model", help=f"a GLIP folder or Hub id (default: {DEFAULT_MODEL_DIRECTORY})")
    parser.add_argument("--port", type=int, help="port (default: the first free one from 7860)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--share", action="store_true", help="also make a public gradio.live link")
    parser.add_argument("--device", help="torch device (default: cuda when available)")
    arguments = parser.parse_args(argv)
    try:
        launch_app(arguments.model, arguments.port, arguments.host, arguments.share, arguments.device)
    except (ImportError, ValueError) as error:
        parser.error(str(error))


if __name__ == "__main__":
    main()
