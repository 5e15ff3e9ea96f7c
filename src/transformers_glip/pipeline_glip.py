"""The `zero-shot-object-detection` pipeline for GLIP.

The stock [`ZeroShotObjectDetectionPipeline`] runs one forward per candidate label with the prompt `[CLS] label
[SEP]`. GLIP is trained and evaluated with ALL labels in one prompt (the labels compete for each box; the official
detection prompt is the cleaned names joined by `". "`), and one forward is N times cheaper. For GLIP models,
[`GLIPZeroShotObjectDetectionPipeline`] therefore runs [`detect`]: one prompt per image (chunked automatically when
the labels do not fit in 256 tokens; the image is encoded once for all chunks), the official post-processing with
the model config's values, duplicates across chunks removed, then `threshold` (`score > threshold`) and `top_k`. The
output is the stock one: per image a list of `{"score", "label", "box": {"xmin", "ymin", "xmax", "ymax"}}` sorted by
decreasing score, boxes in original-image pixels truncated to ints. For every other model the class IS the stock
pipeline (every method delegates to it), so `import transformers_glip` can make it the task's default
([`register_glip_pipeline`]) without changing what other models return.
"""

from __future__ import annotations

import io
import os
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import PIL.Image
import PIL.ImageOps
from transformers.pipelines.zero_shot_object_detection import ZeroShotObjectDetectionPipeline
from transformers.utils import logging

from .inference_glip import DEFAULT_MAX_PROMPTS_PER_FORWARD, detect, validate_detection_arguments
from .modeling_glip import GLIPForGrounding
from .postprocessing_glip import DEFAULT_SCORE_THRESHOLD
from .processing_glip import GLIPProcessor
from .prompts_glip import validate_labels

logger = logging.get_logger(__name__)

__all__ = [
    "DEFAULT_URL_TIMEOUT",
    "GLIPZeroShotObjectDetectionPipeline",
    "load_image_reference",
    "register_glip_pipeline",
]

TASK = "zero-shot-object-detection"
STOCK_PIPELINE_IMPL = "transformers.pipelines.zero_shot_object_detection.ZeroShotObjectDetectionPipeline"

# Keyword arguments the GLIP path understands at call time (on top of `batch_size` and `num_workers`).
_PREPROCESS_PARAMETERS = ("timeout", "chunk_size")
_FORWARD_PARAMETERS = ("official_mode", "max_prompts_per_forward")
_POSTPROCESS_PARAMETERS = ("threshold", "top_k", "merge_mode")


# Seconds a URL image may take when the call gives no `timeout` (no timeout at all could wait forever).
DEFAULT_URL_TIMEOUT = 30.0


def load_image_reference(image: Any, timeout: float | None, name: str) -> PIL.Image.Image:
    """A path, an http(s) URL or a `PIL.Image.Image` -> an RGB image, with an error that names the input.

    A URL that answers with an error status (404, ...) or with bytes that are no image, a URL that does not answer
    within `timeout` seconds (`DEFAULT_URL_TIMEOUT` when None) and a path that is not a file raise `ValueError`.
    """
    if isinstance(image, PIL.Image.Image):
        return image.convert("RGB")
    if image.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(
                image, timeout=DEFAULT_URL_TIMEOUT if timeout is None else timeout
            ) as response:
                content = io.BytesIO(response.read())
        except urllib.error.HTTPError as error:
            raise ValueError(
                f"`{name}`: {image!r} answered HTTP {error.code} {error.reason}; check the URL."
            ) from error
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            raise ValueError(f"`{name}`: could not download {image!r} ({type(error).__name__}: {error}).") from error
        source = image
    elif os.path.isfile(image):
        source, content = image, image
    else:
        raise ValueError(f"`{name}`: {image!r} is neither an existing file nor an http(s) URL.")
    try:
        loaded = PIL.Image.open(content)
        loaded = PIL.ImageOps.exif_transpose(loaded)
        return loaded.convert("RGB")
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"`{name}`: {source!r} is not a readable image ({error}).") from error


def _split_label_string(labels: str) -> list[str]:
    # The stock pipeline splits on "," WITHOUT stripping (" dog" stays " dog"); a GLIP prompt would then hold
    # ".  dog", so the GLIP path strips the pieces.
    return [label.strip() for label in labels.split(",")]


def _normalize_candidate_labels(labels: Any, name: str) -> list[str]:
    if labels is None:
        raise ValueError(f"`{name}` is missing; pass the label names to detect, e.g. candidate_labels=['cat', 'dog'].")
    if isinstance(labels, str):
        labels = _split_label_string(labels)
    return validate_labels(labels, name)


class GLIPZeroShotObjectDetectionPipeline(ZeroShotObjectDetectionPipeline):
    """`zero-shot-object-detection` with all candidate labels in ONE GLIP prompt; the stock pipeline for other models.

    Example:

    ```python
    >>> import transformers_glip  # registers GLIP and makes this class the task's pipeline
    >>> from transformers import pipeline

    >>> detector = pipeline("zero-shot-object-detection", model="path/to/converted-glip")
    >>> detector("image.png", candidate_labels=["person", "red circle"], threshold=0.3)
    [{'score': 0.63, 'label': 'person', 'box': {'xmin': 402, 'ymin': 111, 'xmax': 520, 'ymax': 390}}, ...]
    ```

    Call arguments for GLIP models (on top of the stock `image`, `candidate_labels` / `text_queries`, `threshold`
    (default 0.1), `top_k`, `timeout`, `batch_size`):

    - `chunk_size` (`int`, *optional*): labels per prompt; default: one prompt when the labels fit in
      `config.max_text_length` tokens, else chunks of 40 (official LVIS evaluation).
    - `merge_mode` (`str`, *optional*): how chunks are merged, default `model.config.chunk_merge_mode`
      (`"cross_chunk_nms"`); `"concatenate"` is the official (duplicates across chunks kept). See
      [`merge_chunk_detections`].
    - `batch_size`: images per forward; only images of the same padded size share a forward, so the results do not
      depend on it (see [`detect`]).
    - `official_mode` (`bool`, *optional*, defaults to `False`): run the exact official computation (256-token
      padding, the official fusion order, torchvision's deformable convolution, one chunk per forward) instead of
      the fast path; same detections up to float rounding (see [`detect`]).
    - `max_prompts_per_forward` (`int`, *optional*, defaults to 4): on the fast path, at most this many label chunks
      of one image per forward (bounded memory for large vocabularies; see [`detect`]).

    A string `candidate_labels` is split on `","` and, unlike the stock pipeline, each piece is stripped.
    Every image may have its own label list: `detector([image1, image2], candidate_labels=[["cat"], ["dog", "car"]])`.
    """

    @property
    def is_glip(self) -> bool:
        """Whether the model is GLIP (then the one-prompt path runs; otherwise the stock pipeline)."""
        return isinstance(self.model, GLIPForGrounding)

    def _glip_processor(self) -> GLIPProcessor:
        processor = getattr(self, "_cached_glip_processor", None)
        if processor is None:
            processor = GLIPProcessor(
                self.image_processor, self.tokenizer, max_text_length=self.model.config.max_text_length
            )
            self._cached_glip_processor = processor
        return processor

    def _sanitize_parameters(self, **kwargs):
        if not self.is_glip:
            return super()._sanitize_parameters(**kwargs)
        preprocess_params = {key: kwargs[key] for key in _PREPROCESS_PARAMETERS if key in kwargs}
        forward_params = {key: kwargs[key] for key in _FORWARD_PARAMETERS if key in kwargs}
        postprocess_params = {key: kwargs[key] for key in _POSTPROCESS_PARAMETERS if key in kwargs}
        return preprocess_params, forward_params, postprocess_params

    def __call__(self, image: Any, candidate_labels: Any = None, **kwargs: Any) -> Any:
        """Detect `candidate_labels` in `image` (see the class docstring; the stock call forms are accepted).

        Returns:
            For one image (path, URL, `PIL.Image`, or a `{"image", "candidate_labels"}` dict) a list of detections;
            for a list of them, a list of such lists; for a generator or dataset, an iterator of such lists.
        """
        if not self.is_glip:
            return super().__call__(image, candidate_labels, **kwargs)
        if "text_queries" in kwargs:
            candidate_labels = kwargs.pop("text_queries")
        batch_size = kwargs.pop("batch_size", None)
        if batch_size is None:
            batch_size = 1 if self._batch_size is None else self._batch_size
        kwargs.pop("num_workers", None)  # no DataLoader on this path
        known = _PREPROCESS_PARAMETERS + _FORWARD_PARAMETERS + _POSTPROCESS_PARAMETERS
        unknown = sorted(set(kwargs) - set(known))
        if unknown:
            raise TypeError(
                f"GLIPZeroShotObjectDetectionPipeline got unexpected keyword arguments {unknown}; it takes "
                f"{sorted(known + ('batch_size', 'num_workers'))}."
            )
        preprocess_params, forward_params, postprocess_params = self._sanitize_parameters(**kwargs)
        parameters = {
            **self._preprocess_params,
            **self._forward_params,
            **self._postprocess_params,
            **preprocess_params,
            **forward_params,
            **postprocess_params,
        }
        # Every argument is checked before any image is loaded or any forward runs.
        validate_detection_arguments(
            parameters.get("threshold", DEFAULT_SCORE_THRESHOLD),
            parameters.get("chunk_size"),
            batch_size,
            parameters.get("merge_mode"),
            None,
            parameters.get("official_mode", False),
            parameters.get("max_prompts_per_forward", DEFAULT_MAX_PROMPTS_PER_FORWARD),
        )
        top_k = parameters.get("top_k")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"`top_k` must be a positive int (detections kept per image) or None, got {top_k!r}.")

        if isinstance(image, (str, PIL.Image.Image, Mapping)):
            request = self._request(image, candidate_labels, "image")
            return self._run_requests([request], batch_size, parameters)[0]
        if isinstance(image, (list, tuple)):
            if len(image) == 0:
                raise ValueError("`image` is an empty list; pass at least one image.")
            requests = self._requests_from_list(image, candidate_labels)
            return self._run_requests(requests, batch_size, parameters)
        if isinstance(image, Iterable) and not hasattr(image, "shape"):  # arrays are not streams of images
            return self._stream(image, candidate_labels, batch_size, parameters)
        raise TypeError(
            "`image` must be a path or URL, a PIL.Image.Image, a {'image', 'candidate_labels'} dict, a list of those, "
            f"or a generator / dataset of those; got {type(image).__name__}."
        )

    # ------------------------------------------------------------------ inputs
    @staticmethod
    def _request(image: Any, candidate_labels: Any, name: str) -> tuple[Any, list[str]]:
        """One `(image, labels)` pair from an image with labels, or a `{"image", "candidate_labels"}` dict."""
        if isinstance(image, Mapping):
            if "image" not in image:
                raise ValueError(f"`{name}` is a dict without an 'image' key.")
            labels = image.get("candidate_labels", image.get("text_queries", candidate_labels))
            return image["image"], _normalize_candidate_labels(labels, f"{name}['candidate_labels']")
        if not isinstance(image, (str, PIL.Image.Image)):
            raise TypeError(f"`{name}` must be a path or URL or a PIL.Image.Image, got {type(image).__name__}.")
        return image, _normalize_candidate_labels(candidate_labels, "candidate_labels")

    def _requests_from_list(self, images: Sequence[Any], candidate_labels: Any) -> list[tuple[Any, list[str]]]:
        if all(isinstance(item, Mapping) for item in images):
            return [self._request(item, candidate_labels, f"image[{index}]") for index, item in enumerate(images)]
        per_image = (
            isinstance(candidate_labels, (list, tuple))
            and len(candidate_labels) > 0
            and all(isinstance(labels, (list, tuple)) for labels in candidate_labels)
        )
        if per_image and len(candidate_labels) != len(images):
            raise ValueError(
                f"Got {len(images)} images but {len(candidate_labels)} label lists in `candidate_labels`; pass one "
                "list per image (or one list shared by all images)."
            )
        requests = []
        for index, item in enumerate(images):
            if not isinstance(item, (str, PIL.Image.Image)):
                raise TypeError(
                    f"`image[{index}]` must be a path or URL or a PIL.Image.Image, got {type(item).__name__}."
                )
            if per_image:
                labels = _normalize_candidate_labels(candidate_labels[index], f"candidate_labels[{index}]")
            else:
                labels = _normalize_candidate_labels(candidate_labels, "candidate_labels")
            requests.append((item, labels))
        return requests

    def _stream(
        self, inputs: Iterable[Any], candidate_labels: Any, batch_size: int, parameters: dict[str, Any]
    ) -> Iterator[list[dict[str, Any]]]:
        """Generators and datasets: `batch_size` inputs at a time, results yielded one image at a time."""
        window = []
        for index, item in enumerate(inputs):
            window.append(self._request(item, candidate_labels, f"image[{index}]"))
            if len(window) == batch_size:
                yield from self._run_requests(window, batch_size, parameters)
                window = []
        if window:
            yield from self._run_requests(window, batch_size, parameters)

    # ------------------------------------------------------------------ detection
    def _run_requests(
        self, requests: list[tuple[Any, list[str]]], batch_size: int, parameters: dict[str, Any]
    ) -> list[list[dict[str, Any]]]:
        images = [
            load_image_reference(image, parameters.get("timeout"), f"image[{index}]")
            for index, (image, _) in enumerate(requests)
        ]
        label_lists = [labels for _, labels in requests]
        results = detect(
            self.model,
            self._glip_processor(),
            images,
            label_lists,
            threshold=parameters.get("threshold", DEFAULT_SCORE_THRESHOLD),
            chunk_size=parameters.get("chunk_size"),
            batch_size=batch_size,
            merge_mode=parameters.get("merge_mode"),
            official_mode=parameters.get("official_mode", False),
            max_prompts_per_forward=parameters.get("max_prompts_per_forward", DEFAULT_MAX_PROMPTS_PER_FORWARD),
        )
        top_k = parameters.get("top_k")
        formatted = []
        for result in results:
            detections = [
                {"score": score, "label": label, "box": self._get_bounding_box(box)}
                for score, label, box in zip(result["scores"].tolist(), result["text_labels"], result["boxes"].cpu())
            ]
            detections = sorted(detections, key=lambda detection: detection["score"], reverse=True)
            if top_k:
                detections = detections[:top_k]
            formatted.append(detections)
        return formatted


def register_glip_pipeline() -> None:
    """Make [`GLIPZeroShotObjectDetectionPipeline`] the class `pipeline("zero-shot-object-detection")` builds.

    Only the task's `impl` entry changes (a dotted path, resolved by `pipeline()` at call time); since the class
    behaves as the stock pipeline for non-GLIP models, their results are unchanged. A task entry that someone else
    already replaced is left alone (with a warning).
    """
    from transformers.pipelines import SUPPORTED_TASKS

    task = SUPPORTED_TASKS[TASK]
    ours = f"{GLIPZeroShotObjectDetectionPipeline.__module__}.{GLIPZeroShotObjectDetectionPipeline.__qualname__}"
    current = task.get("impl")
    if current in (STOCK_PIPELINE_IMPL, ZeroShotObjectDetectionPipeline):
        task["impl"] = ours
    elif current not in (ours, GLIPZeroShotObjectDetectionPipeline):
        logger.warning(
            f"The '{TASK}' pipeline implementation was already replaced by {current!r}; GLIP keeps it. Pass "
            "`pipeline_class=GLIPZeroShotObjectDetectionPipeline` to use GLIP's one-prompt pipeline."
        )
