"""Image processor of GLIP: the official evaluation/training image transforms and COCO targets (box rules from
`box_geometry_glip`). Post-processing is `GLIPProcessor.post_process_grounded_object_detection`.

Official sources (microsoft/GLIP): `maskrcnn_benchmark/data/transforms/build.py::build_transforms`,
`maskrcnn_benchmark/data/transforms/transforms.py::{Resize, RandomHorizontalFlip, ToTensor, Normalize}`,
`maskrcnn_benchmark/structures/image_list.py::to_image_list`, `maskrcnn_benchmark/structures/bounding_box.py`
(`BoxList.convert/clip_to_image/resize/transpose`), `maskrcnn_benchmark/data/datasets/modulated_coco.py`
(`CocoGrounding.__getitem__`). Spec §2 and §8.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.processing_utils import ImagesKwargs

from .box_geometry_glip import (
    clip_boxes_to_image,
    flip_boxes,
    get_resize_output_size,
    nonempty_box_mask,
    padded_size,
    resize_boxes,
    xywh_to_xyxy,
)
from .postprocessing_glip import as_size_pairs, output_field

__all__ = [
    "GLIP_PIXEL_MEAN_BGR",
    "GLIP_PIXEL_STD_BGR",
    "GLIPImageProcessor",
    "GLIPImageProcessorKwargs",
]

# Detectron's ImageNet statistics in B, G, R order on the 0-255 scale (`MODEL.PIXEL_MEAN/PIXEL_STD`). The network
# sees BGR channels ("bgr255" format, `INPUT.TO_BGR255 = True`).
GLIP_PIXEL_MEAN_BGR = (103.53, 116.28, 123.675)
GLIP_PIXEL_STD_BGR = (57.375, 57.12, 58.395)
# Multi-scale training short sides (`INPUT.MIN_SIZE_TRAIN` of the GLIP pre-training configs).
GLIP_TRAIN_MIN_SIZES = (480, 560, 640, 720, 800)


class GLIPImageProcessorKwargs(ImagesKwargs, total=False):
    """Keyword arguments of [`GLIPImageProcessor`] on top of the generic `ImagesKwargs`.

    Attributes:
        min_size (`int`): target short side (`INPUT.MIN_SIZE_TEST`, 800).
        max_size (`int`): cap of the long side (`INPUT.MAX_SIZE_TEST`, 1333).
        train_min_sizes (`list[int]`): short sides drawn per image with training augmentation (480..800).
        horizontal_flip_probability (`float`): flip probability with training augmentation (0.5).
        size_divisibility (`int`): padded sizes are multiples of this (`DATALOADER.SIZE_DIVISIBILITY`, 32).
    """

    min_size: int
    max_size: int | None
    train_min_sizes: list[int]
    horizontal_flip_probability: float
    size_divisibility: int


def _validate_positive_int(value: Any, name: str, allow_none: bool = False, allow_zero: bool = False) -> None:
    if value is None and allow_none:
        return
    minimum = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}.")


def _validate_channel_statistics(values: Any, name: str, positive: bool) -> list[float]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != 3:
        raise ValueError(f"`{name}` must hold 3 numbers (B, G, R order, 0-255 scale), got {values!r}.")
    values = [float(value) for value in values]
    if not all(math.isfinite(value) for value in values) or (positive and min(values) <= 0):
        raise ValueError(f"`{name}` must hold finite{' positive' if positive else ''} numbers, got {values}.")
    return values


def _array_to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    """`(height, width, channels)` array of any numeric dtype -> uint8 (floats are read on the [0, 1] scale)."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_ or not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    ):
        raise TypeError(f"`{name}` has dtype {array.dtype}; use uint8 (0-255) or floating point (0-1) pixels.")
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError(f"`{name}` contains NaN or infinite pixel values.")
        if array.size and (array.min() < 0.0 or array.max() > 1.0):
            raise ValueError(
                f"`{name}` is a floating-point image with values in [{array.min()}, {array.max()}]; floating-point "
                "images must be on the [0, 1] scale (uint8 images on 0-255)."
            )
        return np.round(array.astype(np.float64) * 255.0).astype(np.uint8)
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(f"`{name}` is an integer image with values outside [0, 255].")
    return array.astype(np.uint8)


def _to_rgb_pil_image(image: Any, name: str, input_data_format: str | None) -> PIL.Image.Image:
    """Any supported image -> an RGB PIL image (the official loaders decode to PIL RGB).

    PIL images of any mode go through `convert("RGB")` (grayscale replicated, alpha dropped); numpy arrays are
    `(height, width[, channels])`, torch tensors `(channels, height, width)` or `(height, width)`, unless
    `input_data_format` says otherwise. Channels must be 1 (grayscale), 3 (RGB) or 4 (RGBA).
    """
    if isinstance(image, PIL.Image.Image):
        pil_image = image
    elif isinstance(image, (np.ndarray, torch.Tensor)):
        is_tensor = isinstance(image, torch.Tensor)
        array = image.detach().cpu().numpy() if is_tensor else image
        if array.ndim == 2:
            array = array[:, :, None]
        elif array.ndim == 3:
            channels_first = is_tensor if input_data_format is None else input_data_format == "channels_first"
            if channels_first:
                array = np.transpose(array, (1, 2, 0))  # (channels, height, width) -> (height, width, channels)
        else:
            raise ValueError(
                f"`{name}` has {array.ndim} dimensions; expected (height, width), (height, width, channels) for numpy "
                "or (channels, height, width) for torch."
            )
        if array.shape[-1] not in (1, 3, 4):
            raise ValueError(
                f"`{name}` has {array.shape[-1]} channels (shape {tuple(image.shape)}); expected 1 (grayscale), "
                "3 (RGB) or 4 (RGBA)."
            )
        array = _array_to_uint8(np.ascontiguousarray(array), name)
        if array.shape[0] < 2 or array.shape[1] < 2:
            raise ValueError(
                f"`{name}` has size (height, width) = {array.shape[:2]}; GLIP needs at least 2 pixels per side."
            )
        pil_image = PIL.Image.fromarray(array[:, :, 0] if array.shape[-1] == 1 else array)
    else:
        raise TypeError(
            f"`{name}` must be a PIL.Image.Image, a numpy.ndarray or a torch.Tensor, got {type(image).__name__} "
            "(load paths or URLs with `transformers.image_utils.load_image`)."
        )
    if pil_image.width < 2 or pil_image.height < 2:
        raise ValueError(
            f"`{name}` has size (height, width) = {(pil_image.height, pil_image.width)}; GLIP needs at least 2 "
            "pixels per side."
        )
    if pil_image.mode != "RGB":
        pil_image = pil_image.convert("RGB")
    return pil_image


def _flatten_images(images: Any) -> list[Any]:
    if isinstance(images, (PIL.Image.Image,)):
        return [images]
    if isinstance(images, np.ndarray):
        return list(images) if images.ndim == 4 else [images]
    if isinstance(images, torch.Tensor):
        return list(images) if images.ndim == 4 else [images]
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError("`images` is empty; pass at least one image.")
        return list(images)
    raise TypeError(
        f"`images` must be an image (PIL.Image.Image, numpy.ndarray, torch.Tensor) or a list of images, got "
        f"{type(images).__name__}."
    )


class GLIPImageProcessor(BaseImageProcessor):
    r"""
    Constructs a GLIP image processor reproducing the official GLIP transforms bit for bit (spec §2).

    Evaluation: PIL RGB -> resize (short side `min_size`, long side <= `max_size`, PIL bilinear on uint8) -> [0, 1]
    -> channels flipped to **BGR** -> x255 -> `(x - image_mean) / image_std` (BGR statistics) -> zero padding at the
    bottom/right to multiples of `size_divisibility`. Training (`do_train_augmentation=True`): the short side is
    drawn from `train_min_sizes` and the image is flipped horizontally with `horizontal_flip_probability`.

    Args:
        min_size (`int`, *optional*, defaults to 800): short side of the resized image (`INPUT.MIN_SIZE_TEST`).
        max_size (`int`, *optional*, defaults to 1333): cap of the long side (`INPUT.MAX_SIZE_TEST`).
        train_min_sizes (`list[int]`, *optional*, defaults to `[480, 560, 640, 720, 800]`):
            Short sides for multi-scale training (`INPUT.MIN_SIZE_TRAIN`).
        horizontal_flip_probability (`float`, *optional*, defaults to 0.5): training flip probability.
        size_divisibility (`int`, *optional*, defaults to 32): padded height/width are multiples of this.
        image_mean (`list[float]`, *optional*, defaults to `[103.53, 116.28, 123.675]`): BGR mean, 0-255 scale.
        image_std (`list[float]`, *optional*, defaults to `[57.375, 57.12, 58.395]`): BGR std, 0-255 scale.
    """

    valid_kwargs = GLIPImageProcessorKwargs
    model_input_names = ["pixel_values", "image_sizes"]

    def __init__(
        self,
        min_size: int = 800,
        max_size: int | None = 1333,
        train_min_sizes: Sequence[int] = GLIP_TRAIN_MIN_SIZES,
        horizontal_flip_probability: float = 0.5,
        size_divisibility: int = 32,
        image_mean: Sequence[float] = GLIP_PIXEL_MEAN_BGR,
        image_std: Sequence[float] = GLIP_PIXEL_STD_BGR,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _validate_positive_int(min_size, "min_size")
        _validate_positive_int(max_size, "max_size", allow_none=True)
        _validate_positive_int(size_divisibility, "size_divisibility", allow_zero=True)
        if (
            isinstance(train_min_sizes, (str, bytes))
            or not isinstance(train_min_sizes, Sequence)
            or not train_min_sizes
        ):
            raise ValueError(f"`train_min_sizes` must be a non-empty list of ints, got {train_min_sizes!r}.")
        for size in train_min_sizes:
            _validate_positive_int(size, "train_min_sizes")
        if not isinstance(horizontal_flip_probability, (int, float)) or not 0.0 <= horizontal_flip_probability <= 1.0:
            raise ValueError(f"`horizontal_flip_probability` must be in [0, 1], got {horizontal_flip_probability!r}.")
        self.min_size = int(min_size)
        self.max_size = None if max_size is None else int(max_size)
        self.train_min_sizes = [int(size) for size in train_min_sizes]
        self.horizontal_flip_probability = float(horizontal_flip_probability)
        self.size_divisibility = int(size_divisibility)
        self.image_mean = _validate_channel_statistics(image_mean, "image_mean", positive=False)
        self.image_std = _validate_channel_statistics(image_std, "image_std", positive=True)

    # ------------------------------------------------------------------ sizes
    def get_resized_size(self, height: int, width: int, min_size: int | None = None) -> tuple[int, int]:
        """Network-input `(height, width)` (before padding) of an image of `(height, width)` at evaluation."""
        return get_resize_output_size(height, width, self.min_size if min_size is None else min_size, self.max_size)

    # ------------------------------------------------------------------ pixels
    def _normalize(self, image: PIL.Image.Image, image_mean: list[float], image_std: list[float]) -> torch.Tensor:
        """uint8 RGB PIL image -> `(3, height, width)` float32 BGR normalised tensor, in the official op order
        (`ToTensor`: /255; `Normalize(format="bgr255")`: channel flip, x255, subtract mean, divide by std) because
        `k / 255 * 255` is not always exactly `k` in float32."""
        array = np.asarray(image, dtype=np.uint8)  # (height, width, 3) RGB
        tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()  # (3, height, width)
        tensor = tensor.to(torch.float32).div(255)
        tensor = tensor[[2, 1, 0]] * 255  # RGB -> BGR, 0-255 scale
        mean = torch.tensor(image_mean, dtype=torch.float32)[:, None, None]  # (3, 1, 1)
        std = torch.tensor(image_std, dtype=torch.float32)[:, None, None]  # (3, 1, 1)
        return tensor.sub(mean).div(std)

    # ------------------------------------------------------------------ targets
    @staticmethod
    def _convert_annotations(
        annotations: Any,
        name: str,
        original_size: tuple[int, int],
        resized_size: tuple[int, int],
        flipped: bool,
    ) -> dict[str, Any]:
        """COCO detection annotations of one image -> training target in network-input pixels.

        Official `CocoGrounding.__getitem__` + transforms: crowd boxes dropped; xywh -> xyxy with the +1 rule
        (`x2 = x + max(w - 1, 0)`); clipped to `[0, W - 1] x [0, H - 1]` of the original image and empty boxes
        removed (`clip_to_image(remove_empty=True)`); resized by the per-axis ratio; flipped with
        `x1' = W' - x2 - 1`, `x2' = W' - x1 - 1` (`BoxList.transpose`).
        """
        if not isinstance(annotations, Mapping):
            raise TypeError(
                f"`{name}` must be a dict in COCO detection format {{'image_id': ..., 'annotations': [{{'bbox': "
                f"[x, y, w, h], 'category_id': int}}, ...]}}, got {type(annotations).__name__}."
            )
        objects = annotations.get("annotations")
        if isinstance(objects, (str, bytes)) or not isinstance(objects, Sequence):
            raise ValueError(f"`{name}['annotations']` must be a list of COCO object dicts, got {objects!r}.")
        kept_indices, boxes, categories = [], [], []
        for object_index, annotation in enumerate(objects):
            if not isinstance(annotation, Mapping) or "bbox" not in annotation or "category_id" not in annotation:
                raise ValueError(f"`{name}['annotations'][{object_index}]` needs the keys 'bbox' and 'category_id'.")
            if annotation.get("iscrowd", 0):
                continue
            bbox = annotation["bbox"]
            if (
                isinstance(bbox, (str, bytes))
                or not isinstance(bbox, Sequence)
                or len(bbox) != 4
                or not all(isinstance(value, (int, float)) and math.isfinite(value) for value in bbox)
                or bbox[2] < 0
                or bbox[3] < 0
            ):
                raise ValueError(
                    f"`{name}['annotations'][{object_index}]['bbox']` must be [x, y, width, height] with finite "
                    f"numbers and non-negative sizes, got {bbox!r}."
                )
            category = annotation["category_id"]
            if isinstance(category, bool) or not isinstance(category, (int, np.integer)):
                raise ValueError(
                    f"`{name}['annotations'][{object_index}]['category_id']` must be an int, got {category!r}."
                )
            kept_indices.append(object_index)
            boxes.append([float(value) for value in bbox])
            categories.append(int(category))
        boxes = xywh_to_xyxy(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))  # (num_boxes, 4) xyxy
        boxes = clip_boxes_to_image(boxes, original_size[0], original_size[1])
        keep = nonempty_box_mask(boxes)
        boxes = resize_boxes(boxes[keep], original_size, resized_size)
        if flipped:
            boxes = flip_boxes(boxes, resized_size[1])
        return {
            "image_id": annotations.get("image_id"),
            "boxes": boxes,  # (num_kept, 4) xyxy network-input pixels
            "class_labels": torch.tensor(categories, dtype=torch.long)[keep],
            "annotation_indices": torch.tensor(kept_indices, dtype=torch.long)[keep],
            "original_size": torch.tensor(original_size, dtype=torch.long),
            "size": torch.tensor(resized_size, dtype=torch.long),
            "flipped": flipped,
        }

    # ------------------------------------------------------------------ main entry
    def preprocess(
        self,
        images: Any,
        annotations: Any = None,
        return_tensors: str | None = None,
        do_train_augmentation: bool = False,
        generator: torch.Generator | None = None,
        min_size: int | Sequence[int] | None = None,
        max_size: int | None = None,
        train_min_sizes: Sequence[int] | None = None,
        horizontal_flip_probability: float | None = None,
        size_divisibility: int | None = None,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        input_data_format: str | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Prepare one image or a batch of images for [`GLIPForGrounding`].

        Args:
            images (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them):
                PIL images of any mode (converted to RGB), numpy `(height, width[, channels])` or torch
                `(channels, height, width)` arrays (1, 3 or 4 channels; uint8 0-255 or float 0-1); 4D arrays are
                batches.
            annotations (`dict` or `list[dict]`, *optional*):
                COCO detection annotations per image, `{"image_id": ..., "annotations": [{"bbox": [x, y, w, h],
                "category_id": int, "iscrowd": 0}, ...]}` (original-image pixels).
            return_tensors (`str`, *optional*): only `"pt"` (or `None`, same result) is supported.
            do_train_augmentation (`bool`, *optional*, defaults to `False`):
                Multi-scale short side from `train_min_sizes` and random horizontal flip (official training).
            generator (`torch.Generator`, *optional*): random source of the augmentation.
            min_size, max_size, train_min_sizes, horizontal_flip_probability, size_divisibility, image_mean,
            image_std: per-call overrides of the attributes. A list `min_size` draws the short side per image.
            input_data_format (`str`, *optional*): `"channels_first"` or `"channels_last"` for array inputs.

        Returns:
            [`BatchFeature`] with `pixel_values` `(batch_size, 3, padded_height, padded_width)` float32 (BGR,
            normalised, zero-padded bottom/right), `image_sizes` `(batch_size, 2)` int64 resized unpadded
            `(height, width)`, `original_sizes` `(batch_size, 2)` int64 and, with `annotations`, `labels`: one dict
            per image with `boxes` `(num_boxes, 4)` xyxy network-input pixels (+1 convention), `class_labels`
            (category ids), `annotation_indices` (positions of the kept objects in the input list), `image_id`,
            `original_size`, `size`, `flipped`.
        """
        if kwargs:
            raise TypeError(f"GLIPImageProcessor.preprocess got unexpected keyword arguments {sorted(kwargs)}.")
        if return_tensors not in (None, "pt") and str(return_tensors) != "TensorType.PYTORCH":
            raise ValueError(f"`return_tensors` must be 'pt' or None, got {return_tensors!r}.")
        if input_data_format not in (None, "channels_first", "channels_last"):
            input_data_format = getattr(input_data_format, "value", input_data_format)
            if input_data_format not in ("channels_first", "channels_last"):
                raise ValueError(
                    f"`input_data_format` must be 'channels_first' or 'channels_last', got {input_data_format!r}."
                )
        min_size = self.min_size if min_size is None else min_size
        max_size = self.max_size if max_size is None else max_size
        train_min_sizes = self.train_min_sizes if train_min_sizes is None else list(train_min_sizes)
        flip_probability = (
            self.horizontal_flip_probability if horizontal_flip_probability is None else horizontal_flip_probability
        )
        size_divisibility = self.size_divisibility if size_divisibility is None else size_divisibility
        image_mean = (
            self.image_mean if image_mean is None else _validate_channel_statistics(image_mean, "image_mean", False)
        )
        image_std = self.image_std if image_std is None else _validate_channel_statistics(image_std, "image_std", True)
        short_side_choices = train_min_sizes if do_train_augmentation else min_size
        if not isinstance(short_side_choices, Sequence) or isinstance(short_side_choices, (str, bytes)):
            short_side_choices = [short_side_choices]
        if len(short_side_choices) == 0:
            raise ValueError("`min_size` / `train_min_sizes` must not be empty.")
        for size in short_side_choices:
            _validate_positive_int(size, "min_size" if not do_train_augmentation else "train_min_sizes")
        _validate_positive_int(max_size, "max_size", allow_none=True)
        _validate_positive_int(size_divisibility, "size_divisibility", allow_zero=True)
        if not isinstance(flip_probability, (int, float)) or not 0.0 <= flip_probability <= 1.0:
            raise ValueError(f"`horizontal_flip_probability` must be in [0, 1], got {flip_probability!r}.")

        image_list = _flatten_images(images)
        if annotations is not None:
            annotation_list = [annotations] if isinstance(annotations, Mapping) else annotations
            if not isinstance(annotation_list, (list, tuple)):
                raise TypeError(
                    f"`annotations` must be a dict (one image) or a list of dicts, got {type(annotations).__name__}."
                )
            if len(annotation_list) != len(image_list):
                raise ValueError(
                    f"`annotations` has {len(annotation_list)} entries for {len(image_list)} images; pass one "
                    "annotation dict per image."
                )

        normalized_images, image_sizes, original_sizes, targets = [], [], [], []
        for image_index, image in enumerate(image_list):
            name = "images" if len(image_list) == 1 else f"images[{image_index}]"
            pil_image = _to_rgb_pil_image(image, name, input_data_format)
            original_size = (pil_image.height, pil_image.width)
            if len(short_side_choices) == 1:
                short_side = short_side_choices[0]
            else:
                short_side = short_side_choices[int(torch.randint(len(short_side_choices), (1,), generator=generator))]
            resized_size = get_resize_output_size(original_size[0], original_size[1], short_side, max_size)
            if min(resized_size) < 1:
                raise ValueError(
                    f"`{name}` of size (height, width) = {original_size} resizes to {resized_size}; its aspect ratio "
                    f"is too extreme for max_size={max_size}."
                )
            if resized_size != original_size:
                pil_image = pil_image.resize((resized_size[1], resized_size[0]), PIL.Image.BILINEAR)
            flipped = bool(do_train_augmentation and float(torch.rand((), generator=generator)) < flip_probability)
            if flipped:
                pil_image = pil_image.transpose(PIL.Image.FLIP_LEFT_RIGHT)
            normalized_images.append(self._normalize(pil_image, image_mean, image_std))
            image_sizes.append(resized_size)
            original_sizes.append(original_size)
            if annotations is not None:
                annotation_name = "annotations" if len(image_list) == 1 else f"annotations[{image_index}]"
                targets.append(
                    self._convert_annotations(
                        annotation_list[image_index], annotation_name, original_size, resized_size, flipped
                    )
                )

        max_height, max_width = padded_size(
            max(size[0] for size in image_sizes), max(size[1] for size in image_sizes), size_divisibility
        )
        pixel_values = torch.zeros((len(normalized_images), 3, max_height, max_width), dtype=torch.float32)
        for image_index, tensor in enumerate(normalized_images):
            pixel_values[image_index, :, : tensor.shape[1], : tensor.shape[2]] = tensor

        data = {
            "pixel_values": pixel_values,
            "image_sizes": torch.tensor(image_sizes, dtype=torch.long),
            "original_sizes": torch.tensor(original_sizes, dtype=torch.long),
        }
        if annotations is not None:
            data["labels"] = targets
        return BatchFeature(data=data)

    # ------------------------------------------------------------------ post-processing sizes
    def resolve_image_sizes(self, outputs: Any, image_sizes: Any, target_sizes: Any, batch_size: int):
        """Unpadded network-input `(height, width)` per image: `image_sizes` if given, else `outputs.image_sizes`,
        else recomputed from the original `target_sizes` with this processor's evaluation resize rule."""
        if image_sizes is None:
            image_sizes = output_field(outputs, "image_sizes")
        if image_sizes is not None:
            return as_size_pairs(image_sizes, "image_sizes", batch_size)
        if target_sizes is None:
            raise ValueError(
                "The network-input image sizes are unknown: pass `image_sizes` (the processor output of the same "
                "name), model outputs carrying `image_sizes`, or the original `target_sizes`."
            )
        original = as_size_pairs(target_sizes, "target_sizes", batch_size)
        return [self.get_resized_size(int(height), int(width)) for height, width in original]
