"""Image processor of GLIP: the official evaluation/training image transforms and COCO targets (box rules from
`box_geometry_glip`). Post-processing is `GLIPProcessor.post_process_grounded_object_detection`.

Official sources (microsoft/GLIP): `maskrcnn_benchmark/data/transforms/build.py::build_transforms`,
`maskrcnn_benchmark/data/transforms/transforms.py::{Resize, RandomHorizontalFlip, ToTensor, Normalize}`,
`maskrcnn_benchmark/structures/image_list.py::to_image_list`, `maskrcnn_benchmark/structures/bounding_box.py`
(`BoxList.convert/clip_to_image/resize/transpose`), `maskrcnn_benchmark/data/datasets/modulated_coco.py`
(`CocoGrounding.__getitem__`). Spec §2 and §8.

The processor is PIL-based (the official resize is PIL bilinear on uint8 images; a torchvision resize would not be
bit-exact), a transformers `PilBackend`: register it with
`AutoImageProcessor.register(GLIPConfig, image_processor_classes={"pil": GLIPImageProcessor})`.
"""

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import PILImageResampling
from transformers.processing_utils import ImagesKwargs, Unpack

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
# Evaluation resize (`INPUT.MIN_SIZE_TEST` / `INPUT.MAX_SIZE_TEST`).
GLIP_TEST_SIZE = {"shortest_edge": 800, "longest_edge": 1333}
# PIL modes holding more than 8 bits per pixel; they are read as numbers, not through `convert("RGB")` (which clips
# them to 255: all white).
_HIGH_BIT_DEPTH_PIL_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_NOT_GIVEN = object()


class GLIPImageProcessorKwargs(ImagesKwargs, total=False):
    """Keyword arguments of [`GLIPImageProcessor`] on top of the generic `ImagesKwargs`.

    Attributes:
        do_convert_to_bgr255 (`bool`): flip the channels to B, G, R and bring the rescaled values back to the 0-255
            scale before `normalize`, as the official `Normalize(format="bgr255")` (`INPUT.TO_BGR255`).
        size_divisibility (`int`): padded sizes are multiples of this (`DATALOADER.SIZE_DIVISIBILITY`, 32; 0: none).
        do_train_augmentation (`bool`): multi-scale short side drawn from `train_min_sizes` and random horizontal
            flip (official training transforms).
        train_min_sizes (`list[int]`): short sides drawn per image with training augmentation (480..800).
        horizontal_flip_probability (`float`): flip probability with training augmentation (0.5).
        generator (`torch.Generator`): random source of the augmentation (per call only).
    """

    do_convert_to_bgr255: bool
    size_divisibility: int
    do_train_augmentation: bool
    train_min_sizes: list[int] | tuple[int, ...]
    horizontal_flip_probability: float | int
    generator: torch.Generator | None


def _check_int(value: Any, name: str, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}.")


def _channel_statistics(values: Any, name: str, positive: bool) -> list[float]:
    """`image_mean` / `image_std` -> list of finite floats (a single number applies to every channel)."""
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = [values]
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
        raise ValueError(f"`{name}` must be a number or a list of numbers (one per channel), got {values!r}.")
    values = [float(value) for value in values]
    if not all(math.isfinite(value) for value in values) or (positive and min(values) <= 0):
        raise ValueError(f"`{name}` must hold finite{' positive' if positive else ''} numbers, got {values}.")
    return values


def _size_dict(size: Any, name: str = "size") -> dict[str, int]:
    """`size` -> `{"shortest_edge": int, "longest_edge": int}` (`longest_edge` optional). An int is the short side
    with the official long-side cap 1333 (transformers' legacy integer `size`)."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = {"shortest_edge": int(size), "longest_edge": GLIP_TEST_SIZE["longest_edge"]}
    if not isinstance(size, Mapping) or "shortest_edge" not in size or set(size) - {"shortest_edge", "longest_edge"}:
        raise ValueError(
            f"`{name}` must be {{'shortest_edge': int, 'longest_edge': int}} (longest_edge optional) or an int (the "
            f"short side), got {size!r}; GLIP resizes the short side (`INPUT.MIN_SIZE_TEST`) with a long-side cap."
        )
    _check_int(size["shortest_edge"], f"{name}['shortest_edge']", 1)
    _check_int(size.get("longest_edge"), f"{name}['longest_edge']", 1, allow_none=True)
    return {key: int(value) for key, value in size.items() if value is not None}


def _integer_array_to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    """Integer pixels -> uint8. uint16 (16-bit PNGs, PIL `I;16`) is scaled by 65535; other integer types are
    read on the 0-255 scale and refused when they leave it (their range is ambiguous)."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return np.round(array.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(
            f"`{name}` is an image of dtype {array.dtype} (e.g. PIL mode 'I') with values in [{array.min()}, "
            f"{array.max()}], outside 0-255, and its range is ambiguous: pass 16-bit data as uint16 "
            "(`np.asarray(image).astype(np.uint16)`, scaled by 65535), 8-bit data as uint8, or floats in [0, 1] "
            "(`array / array.max()`)."
        )
    return array.astype(np.uint8)


def _array_to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    """`(height, width, channels)` array of any numeric dtype -> uint8.

    uint8 is kept; uint16 is scaled by 65535; other integers must lie in 0-255; floats must lie in [0, 1] (PIL mode
    `F` included) and are rounded from `x * 255`.
    """
    if array.dtype == np.bool_ or not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    ):
        raise TypeError(
            f"`{name}` has dtype {array.dtype}; use uint8 (0-255), uint16 (0-65535) or floating point (0-1) pixels."
        )
    if np.issubdtype(array.dtype, np.integer):
        return _integer_array_to_uint8(array, name)
    if not np.isfinite(array).all():
        raise ValueError(f"`{name}` contains NaN or infinite pixel values.")
    if array.size and (array.min() < 0.0 or array.max() > 1.0):
        raise ValueError(
            f"`{name}` is a floating-point image (e.g. PIL mode 'F') with values in [{array.min()}, {array.max()}]; "
            "floating-point images must be on the [0, 1] scale (divide by their maximum, e.g. 255 or 65535), uint8 "
            "images on 0-255."
        )
    return np.round(array.astype(np.float64) * 255.0).astype(np.uint8)


def _channels_first(array: np.ndarray, is_tensor: bool, input_data_format: str | None) -> bool:
    """Whether a 3-D array is `(channels, height, width)`: `input_data_format` if given, else the axis that can hold
    1, 3 or 4 channels (numpy defaults to channels-last, torch to channels-first when both can)."""
    if input_data_format is not None:
        return input_data_format == "channels_first"
    first, last = array.shape[0] in (1, 3, 4), array.shape[-1] in (1, 3, 4)
    if first and last:
        return is_tensor
    return first


def _to_uint8_array(image: Any, name: str, input_data_format: str | None, do_convert_rgb: bool) -> np.ndarray:
    """Any supported image -> `(height, width, channels)` uint8 array.

    PIL images of 8-bit modes go through `convert("RGB")` when `do_convert_rgb` (grayscale replicated, alpha dropped,
    as the official loaders); high-bit-depth modes (`I;16`, `I`, `F`) are read as numbers (see [`_array_to_uint8`]).
    Numpy arrays / torch tensors are `(height, width)`, `(height, width, channels)` or `(channels, height, width)`
    (see [`_channels_first`]) with 1, 3 or 4 channels; with `do_convert_rgb` they become 3-channel RGB too.
    """
    if isinstance(image, PIL.Image.Image):
        if image.mode in _HIGH_BIT_DEPTH_PIL_MODES:
            array = _array_to_uint8(np.asarray(image), name)[:, :, None]  # (height, width, 1)
        elif do_convert_rgb or image.mode not in ("L", "LA", "RGB", "RGBA"):
            array = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
        else:
            array = np.asarray(image)
            array = array[:, :, None] if array.ndim == 2 else array
    elif isinstance(image, (np.ndarray, torch.Tensor)):
        is_tensor = isinstance(image, torch.Tensor)
        array = image.detach().cpu().numpy() if is_tensor else image
        if array.ndim == 2:
            array = array[:, :, None]
        elif array.ndim == 3:
            if _channels_first(array, is_tensor, input_data_format):
                array = np.transpose(array, (1, 2, 0))  # (channels, height, width) -> (height, width, channels)
        else:
            raise ValueError(
                f"`{name}` has {array.ndim} dimensions; expected (height, width), (height, width, channels) or "
                "(channels, height, width)."
            )
        if array.shape[-1] not in (1, 3, 4):
            raise ValueError(
                f"`{name}` has {array.shape[-1]} channels (shape {tuple(image.shape)}); expected 1 (grayscale), "
                "3 (RGB) or 4 (RGBA)."
            )
        array = _array_to_uint8(np.ascontiguousarray(array), name)
    else:
        raise TypeError(
            f"`{name}` must be a PIL.Image.Image, a numpy.ndarray or a torch.Tensor, got {type(image).__name__} "
            "(load paths or URLs with `transformers.image_utils.load_image`)."
        )
    if array.shape[0] < 2 or array.shape[1] < 2:
        raise ValueError(
            f"`{name}` has size (height, width) = {array.shape[:2]}; GLIP needs at least 2 pixels per side."
        )
    if do_convert_rgb and array.shape[-1] != 3:
        # Grayscale -> replicated, RGBA -> alpha dropped, LA -> luminance replicated (PIL `convert("RGB")`).
        array = np.repeat(array[:, :, :1], 3, axis=-1) if array.shape[-1] in (1, 2) else array[:, :, :3]
    return np.ascontiguousarray(array)


def _resize(array: np.ndarray, size: tuple[int, int], resample: int) -> np.ndarray:
    """PIL resize of a `(height, width, channels)` uint8 array to `size = (height, width)`; RGB images go through PIL
    as one image (the official path), other channel counts one channel at a time."""
    if array.shape[-1] == 3:
        return np.asarray(PIL.Image.fromarray(array).resize((size[1], size[0]), resample))
    channels = [
        np.asarray(PIL.Image.fromarray(array[:, :, channel]).resize((size[1], size[0]), resample))
        for channel in range(array.shape[-1])
    ]
    return np.stack(channels, axis=-1)  # (height, width, channels)


def _flatten_images(images: Any) -> list[Any]:
    """One image, a list of images, a 4D batch, or a list of per-sample lists (transformers' nested layout)
    -> a flat list of images."""
    if isinstance(images, PIL.Image.Image):
        return [images]
    if isinstance(images, (np.ndarray, torch.Tensor)):
        return list(images) if images.ndim == 4 else [images]
    if isinstance(images, (list, tuple)):
        flat = [item for entry in images for item in (entry if isinstance(entry, (list, tuple)) else [entry])]
        if len(flat) == 0:
            raise ValueError("`images` is empty; pass at least one image.")
        return flat
    raise TypeError(
        f"`images` must be an image (PIL.Image.Image, numpy.ndarray, torch.Tensor) or a list of images, got "
        f"{type(images).__name__}."
    )


class GLIPImageProcessor(PilBackend):
    r"""
    Constructs a GLIP image processor reproducing the official GLIP transforms bit for bit (spec §2).

    Evaluation: PIL RGB -> resize (short side `size["shortest_edge"]`, long side <= `size["longest_edge"]`, PIL
    bilinear on uint8) -> rescale (x / 255, `ToTensor`) -> channels flipped to **BGR** and x255
    (`Normalize(format="bgr255")`) -> `(x - image_mean) / image_std` (BGR statistics, 0-255 scale) -> zero padding at
    the bottom/right to multiples of `size_divisibility`. Training (`do_train_augmentation=True`): the short side is
    drawn from `train_min_sizes` and the image is flipped horizontally with `horizontal_flip_probability`.

    Every step has transformers' standard switch (`do_convert_rgb`, `do_resize` / `size` / `resample`, `do_rescale`
    / `rescale_factor`, `do_normalize` / `image_mean` / `image_std`, `do_pad` / `pad_size`, `do_center_crop` /
    `crop_size`, `data_format`, `input_data_format`, `device`); the defaults are the official pipeline.

    Pixel types: PIL images of any mode, numpy arrays / torch tensors of uint8 (0-255), uint16 (0-65535, e.g. 16-bit
    PNGs), other integer types within 0-255, or floats in [0, 1]. PIL modes `I;16*` are scaled by 65535, `F` is read
    as [0, 1]; integer images outside 0-255 that are not uint16 (e.g. mode `I`) are refused (ambiguous range).

    Args:
        size (`dict[str, int]`, *optional*, defaults to `{"shortest_edge": 800, "longest_edge": 1333}`):
            Evaluation resize (`INPUT.MIN_SIZE_TEST` / `INPUT.MAX_SIZE_TEST`).
        min_size, max_size (`int`, *optional*): the short side / long-side cap, a shorthand for `size`.
        train_min_sizes (`list[int]`, *optional*, defaults to `[480, 560, 640, 720, 800]`):
            Short sides for multi-scale training (`INPUT.MIN_SIZE_TRAIN`).
        horizontal_flip_probability (`float`, *optional*, defaults to 0.5): training flip probability.
        size_divisibility (`int`, *optional*, defaults to 32): padded height/width are multiples of this.
        image_mean (`list[float]`, *optional*, defaults to `[103.53, 116.28, 123.675]`): BGR mean, 0-255 scale.
        image_std (`list[float]`, *optional*, defaults to `[57.375, 57.12, 58.395]`): BGR std, 0-255 scale.
        kwargs ([`GLIPImageProcessorKwargs`]): the other switches above.
    """

    valid_kwargs = GLIPImageProcessorKwargs
    model_input_names = ["pixel_values", "image_sizes"]

    do_convert_rgb = True
    do_resize = True
    size = GLIP_TEST_SIZE
    default_to_square = False
    resample = PILImageResampling.BILINEAR
    do_rescale = True
    rescale_factor = 1 / 255
    do_convert_to_bgr255 = True
    do_normalize = True
    image_mean = list(GLIP_PIXEL_MEAN_BGR)
    image_std = list(GLIP_PIXEL_STD_BGR)
    do_pad = True
    size_divisibility = 32
    do_train_augmentation = False
    train_min_sizes = list(GLIP_TRAIN_MIN_SIZES)
    horizontal_flip_probability = 0.5

    def __init__(
        self, min_size: Any = _NOT_GIVEN, max_size: Any = _NOT_GIVEN, **kwargs: Unpack[GLIPImageProcessorKwargs]
    ):
        if kwargs.get("generator") is not None:
            raise TypeError("`generator` is a per-call argument of `GLIPImageProcessor.preprocess`, not a setting.")
        if min_size is not _NOT_GIVEN or max_size is not _NOT_GIVEN:
            if "size" in kwargs:
                raise ValueError("Pass either `size` or `min_size` / `max_size`, not both.")
            size = dict(GLIP_TEST_SIZE)
            if min_size is not _NOT_GIVEN:
                _check_int(min_size, "min_size", 1)
                size["shortest_edge"] = min_size
            if max_size is not _NOT_GIVEN:
                _check_int(max_size, "max_size", 1, allow_none=True)
                size["longest_edge"] = max_size
            kwargs["size"] = {key: value for key, value in size.items() if value is not None}
        super().__init__(**kwargs)

    @property
    def min_size(self) -> int:
        """Evaluation short side, `size["shortest_edge"]` (`INPUT.MIN_SIZE_TEST`)."""
        return self.size["shortest_edge"]

    @min_size.setter
    def min_size(self, value: int) -> None:
        _check_int(value, "min_size", 1)
        self.size = {**self.size, "shortest_edge": int(value)}

    @property
    def max_size(self) -> int | None:
        """Evaluation long-side cap, `size["longest_edge"]` (`INPUT.MAX_SIZE_TEST`; None: no cap)."""
        return self.size.get("longest_edge")

    @max_size.setter
    def max_size(self, value: int | None) -> None:
        _check_int(value, "max_size", 1, allow_none=True)
        size = {key: item for key, item in self.size.items() if key != "longest_edge"}
        self.size = size if value is None else {**size, "longest_edge": int(value)}

    def _standardize_kwargs(self, **kwargs) -> dict[str, Any]:
        """Check the settings (at construction and per call) and bring them to one form: `size` a plain dict,
        `image_mean` / `image_std` lists of floats, `train_min_sizes` a list of ints, formats as strings."""
        unknown = sorted(set(kwargs) - set(self.valid_kwargs.__annotations__))
        if unknown:
            raise TypeError(f"GLIPImageProcessor got unexpected keyword arguments {unknown}.")
        if kwargs.get("size") is not None:
            kwargs["size"] = _size_dict(kwargs["size"])
        for key in ("crop_size", "pad_size"):
            value = kwargs.get(key)
            if value is None:
                continue
            if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
                value = {"height": int(value), "width": int(value)}
            if not isinstance(value, Mapping) or set(value) != {"height", "width"}:
                raise ValueError(f"`{key}` must be {{'height': int, 'width': int}} or an int, got {value!r}.")
            _check_int(value["height"], f"{key}['height']", 1)
            _check_int(value["width"], f"{key}['width']", 1)
            kwargs[key] = {"height": int(value["height"]), "width": int(value["width"])}
        if kwargs.get("image_mean") is not None:
            kwargs["image_mean"] = _channel_statistics(kwargs["image_mean"], "image_mean", positive=False)
        if kwargs.get("image_std") is not None:
            kwargs["image_std"] = _channel_statistics(kwargs["image_std"], "image_std", positive=True)
        if kwargs.get("train_min_sizes") is not None:
            sizes = kwargs["train_min_sizes"]
            if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or not sizes:
                raise ValueError(f"`train_min_sizes` must be a non-empty list of ints, got {sizes!r}.")
            for size in sizes:
                _check_int(size, "train_min_sizes", 1)
            kwargs["train_min_sizes"] = [int(size) for size in sizes]
        _check_int(kwargs.get("size_divisibility"), "size_divisibility", 0, allow_none=True)
        probability = kwargs.get("horizontal_flip_probability")
        if probability is not None and (
            isinstance(probability, bool) or not isinstance(probability, (int, float)) or not 0 <= probability <= 1
        ):
            raise ValueError(f"`horizontal_flip_probability` must be in [0, 1], got {probability!r}.")
        rescale_factor = kwargs.get("rescale_factor")
        if rescale_factor is not None and (
            isinstance(rescale_factor, bool)
            or not isinstance(rescale_factor, (int, float))
            or not math.isfinite(rescale_factor)
        ):
            raise ValueError(f"`rescale_factor` must be a finite number, got {rescale_factor!r}.")
        for key in ("data_format", "input_data_format"):
            value = kwargs.get(key)
            if value is None:
                continue
            value = getattr(value, "value", value)
            if value not in ("channels_first", "channels_last"):
                raise ValueError(f"`{key}` must be 'channels_first' or 'channels_last', got {value!r}.")
            kwargs[key] = value
        return kwargs

    # ------------------------------------------------------------------ sizes
    def get_resized_size(self, height: int, width: int, min_size: int | None = None) -> tuple[int, int]:
        """Network-input `(height, width)` (before padding) of an image of `(height, width)` at evaluation."""
        return get_resize_output_size(height, width, self.min_size if min_size is None else min_size, self.max_size)

    # ------------------------------------------------------------------ pixels
    @staticmethod
    def _to_tensor(
        array: np.ndarray,
        do_rescale: bool,
        rescale_factor: float,
        do_convert_to_bgr255: bool,
        do_normalize: bool,
        image_mean: list[float],
        image_std: list[float],
    ) -> torch.Tensor:
        """`(height, width, channels)` uint8 array -> `(channels, height, width)` float32 tensor, in the official op
        order (`ToTensor`: /255; `Normalize(format="bgr255")`: channel flip, x255, subtract mean, divide by std)
        because `k / 255 * 255` is not always exactly `k` in float32."""
        tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()  # (channels, height, width)
        tensor = tensor.to(torch.float32)
        if do_rescale:
            divisor = 1.0 / rescale_factor if rescale_factor != 0 else math.inf
            # The official `ToTensor` divides by 255; multiplying by 1/255 differs in the last bit for some pixels.
            tensor = tensor.div(divisor) if float(divisor).is_integer() else tensor.mul(rescale_factor)
        if do_convert_to_bgr255:
            if tensor.shape[0] >= 3:
                order = [2, 1, 0] + list(range(3, tensor.shape[0]))
                tensor = tensor[order]  # RGB(A) -> BGR(A)
            tensor = tensor * 255  # back to the 0-255 scale of the statistics
        if do_normalize:
            channels = tensor.shape[0]
            if len(image_mean) == 1:
                image_mean = image_mean * channels
            if len(image_std) == 1:
                image_std = image_std * channels
            if len(image_mean) != channels or len(image_std) != channels:
                raise ValueError(
                    f"`image_mean` ({len(image_mean)} values) and `image_std` ({len(image_std)} values) need one "
                    f"value per channel of the image ({channels}); with `do_convert_rgb=False` pass statistics for "
                    "every channel."
                )
            mean = torch.tensor(image_mean, dtype=torch.float32)[:, None, None]  # (channels, 1, 1)
            std = torch.tensor(image_std, dtype=torch.float32)[:, None, None]  # (channels, 1, 1)
            tensor = tensor.sub(mean).div(std)
        return tensor

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
        **kwargs: Unpack[GLIPImageProcessorKwargs],
    ) -> BatchFeature:
        """Prepare one image or a batch of images for [`GLIPForGrounding`].

        Args:
            images (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them):
                PIL images of any mode, numpy / torch arrays `(height, width[, channels])` or `(channels, height,
                width)` (1, 3 or 4 channels; see the class docstring for the pixel types); 4D arrays are batches;
                a list of per-sample lists is flattened.
            annotations (`dict` or `list[dict]`, *optional*):
                COCO detection annotations per image, `{"image_id": ..., "annotations": [{"bbox": [x, y, w, h],
                "category_id": int, "iscrowd": 0}, ...]}` (original-image pixels).
            kwargs ([`GLIPImageProcessorKwargs`]): per-call overrides of the settings, plus
                `return_tensors` (only `"pt"` or `None`, same result), `do_train_augmentation`, `generator`,
                `input_data_format` (`"channels_first"` / `"channels_last"` for array inputs), `data_format` (of
                `pixel_values`), `device`.

        Returns:
            [`BatchFeature`] with `pixel_values` `(batch_size, channels, padded_height, padded_width)` float32 (BGR,
            normalised, zero-padded bottom/right; `(batch_size, height, width, channels)` with
            `data_format="channels_last"`), `image_sizes` `(batch_size, 2)` int64 resized unpadded `(height, width)`,
            `original_sizes` `(batch_size, 2)` int64 and, with `annotations`, `labels`: one dict per image with
            `boxes` `(num_boxes, 4)` xyxy network-input pixels (+1 convention), `class_labels` (category ids),
            `annotation_indices` (positions of the kept objects in the input list), `image_id`, `original_size`,
            `size`, `flipped`.
        """
        return_tensors = kwargs.pop("return_tensors", None)
        if return_tensors not in (None, "pt") and str(return_tensors) != "TensorType.PYTORCH":
            raise ValueError(f"`return_tensors` must be 'pt' or None (torch tensors), got {return_tensors!r}.")
        generator = kwargs.pop("generator", None)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"`generator` must be a torch.Generator, got {type(generator).__name__}.")
        settings = self._standardize_kwargs(**kwargs)
        for key in self.valid_kwargs.__annotations__:
            if settings.get(key) is None:
                settings[key] = getattr(self, key, None)
        do_train_augmentation = bool(settings["do_train_augmentation"])
        flip_probability = settings["horizontal_flip_probability"]
        max_size = settings["size"].get("longest_edge")
        short_side_choices = (
            settings["train_min_sizes"] if do_train_augmentation else [settings["size"]["shortest_edge"]]
        )
        if settings["do_center_crop"] and settings["crop_size"] is None:
            raise ValueError("`do_center_crop=True` needs `crop_size` ({'height': int, 'width': int}).")
        do_center_crop = bool(settings["do_center_crop"])
        if do_center_crop and annotations is not None:
            raise ValueError(
                "`do_center_crop=True` does not move `annotations` (the official GLIP transforms never crop); pass "
                "`do_center_crop=False` with annotations."
            )

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

        tensors, image_sizes, original_sizes, targets = [], [], [], []
        for image_index, image in enumerate(image_list):
            name = "images" if len(image_list) == 1 else f"images[{image_index}]"
            array = _to_uint8_array(image, name, settings["input_data_format"], bool(settings["do_convert_rgb"]))
            original_size = (array.shape[0], array.shape[1])
            if len(short_side_choices) == 1:
                short_side = short_side_choices[0]
            else:
                short_side = short_side_choices[int(torch.randint(len(short_side_choices), (1,), generator=generator))]
            resized_size = original_size
            if settings["do_resize"]:
                resized_size = get_resize_output_size(original_size[0], original_size[1], short_side, max_size)
                if min(resized_size) < 1:
                    raise ValueError(
                        f"`{name}` of size (height, width) = {original_size} resizes to {resized_size}; its aspect "
                        f"ratio is too extreme for longest_edge={max_size}."
                    )
                if resized_size != original_size:
                    array = _resize(array, resized_size, int(settings["resample"]))
            flipped = bool(do_train_augmentation and float(torch.rand((), generator=generator)) < flip_probability)
            if flipped:
                array = np.ascontiguousarray(array[:, ::-1])  # horizontal flip (PIL FLIP_LEFT_RIGHT)
            if do_center_crop:
                array = self._center_crop_array(array, settings["crop_size"])
                resized_size = (array.shape[0], array.shape[1])
            tensors.append(
                self._to_tensor(
                    array,
                    bool(settings["do_rescale"]),
                    float(settings["rescale_factor"]),
                    bool(settings["do_convert_to_bgr255"]),
                    bool(settings["do_normalize"]),
                    settings["image_mean"],
                    settings["image_std"],
                )
            )
            image_sizes.append(resized_size)
            original_sizes.append(original_size)
            if annotations is not None:
                annotation_name = "annotations" if len(image_list) == 1 else f"annotations[{image_index}]"
                targets.append(
                    self._convert_annotations(
                        annotation_list[image_index], annotation_name, original_size, resized_size, flipped
                    )
                )

        if len({tensor.shape[0] for tensor in tensors}) != 1:
            raise ValueError(
                "`images` mixes channel counts "
                f"({sorted({tensor.shape[0] for tensor in tensors})}); use `do_convert_rgb=True` to batch them."
            )
        pixel_values = self._pad(tensors, image_sizes, settings)
        if settings["data_format"] == "channels_last":
            # (batch, channels, height, width) -> (batch, height, width, channels)
            pixel_values = pixel_values.permute(0, 2, 3, 1)
        if settings["device"] is not None:
            pixel_values = pixel_values.to(settings["device"])
        data = {
            "pixel_values": pixel_values,
            "image_sizes": torch.tensor(image_sizes, dtype=torch.long),
            "original_sizes": torch.tensor(original_sizes, dtype=torch.long),
        }
        if annotations is not None:
            data["labels"] = targets
        return BatchFeature(data=data)

    @staticmethod
    def _center_crop_array(array: np.ndarray, crop_size: dict[str, int]) -> np.ndarray:
        """Centre crop of a `(height, width, channels)` array to `crop_size`, zero-padded where it is larger."""
        height, width = array.shape[:2]
        crop_height, crop_width = crop_size["height"], crop_size["width"]
        output = np.zeros((crop_height, crop_width, array.shape[2]), dtype=array.dtype)
        top, left = (height - crop_height) // 2, (width - crop_width) // 2
        source_top, source_left = max(top, 0), max(left, 0)
        target_top, target_left = max(-top, 0), max(-left, 0)
        copy_height = min(height - source_top, crop_height - target_top)
        copy_width = min(width - source_left, crop_width - target_left)
        output[target_top : target_top + copy_height, target_left : target_left + copy_width] = array[
            source_top : source_top + copy_height, source_left : source_left + copy_width
        ]
        return output

    @staticmethod
    def _pad(
        tensors: list[torch.Tensor], image_sizes: list[tuple[int, int]], settings: dict[str, Any]
    ) -> torch.Tensor:
        """Stack `(channels, height, width)` tensors into `(batch, channels, padded_height, padded_width)`: zeros at
        the bottom/right up to the batch maximum rounded to `size_divisibility` (official `to_image_list`), or to
        `pad_size`; without `do_pad` the images must share one size."""
        max_height = max(size[0] for size in image_sizes)
        max_width = max(size[1] for size in image_sizes)
        if not settings["do_pad"]:
            if any(tuple(tensor.shape[1:]) != (max_height, max_width) for tensor in tensors):
                raise ValueError(
                    "`do_pad=False` needs images that all resize to one size; got sizes "
                    f"{sorted(set(image_sizes))}. Pass `do_pad=True` (the default) to batch them."
                )
            return torch.stack(tensors)
        if settings["pad_size"] is not None:
            target_height, target_width = settings["pad_size"]["height"], settings["pad_size"]["width"]
            if target_height < max_height or target_width < max_width:
                raise ValueError(
                    f"`pad_size` = {settings['pad_size']} is smaller than the largest resized image "
                    f"({max_height}, {max_width})."
                )
        else:
            target_height, target_width = padded_size(max_height, max_width, settings["size_divisibility"])
        pixel_values = torch.zeros(
            (len(tensors), tensors[0].shape[0], target_height, target_width), dtype=torch.float32
        )
        for image_index, tensor in enumerate(tensors):
            pixel_values[image_index, :, : tensor.shape[1], : tensor.shape[2]] = tensor
        return pixel_values

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
