"""GLIPImageProcessor against the official fixture (`tests/fixtures/tiny_a`) and on fabricated inputs."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from transformers_glip.box_geometry_glip import get_resize_output_size
from transformers_glip.image_processing_glip import GLIPImageProcessor

FIXTURE = Path(__file__).parent / "fixtures" / "tiny_a"
LEVELS = ["P3", "P4", "P5", "P6", "P7"]


@pytest.fixture(scope="module")
def image():
    return Image.open(FIXTURE / "image.png").convert("RGB")


@pytest.fixture(scope="module")
def inputs():
    return load_file(FIXTURE / "inputs.safetensors")


@pytest.fixture(scope="module")
def processor():
    # The converter writes MIN_SIZE_TEST / MAX_SIZE_TEST of the fixture config.
    return GLIPImageProcessor(min_size=320, max_size=533)


# pixels --------------------------------------------------------------------------------------------------------------


def test_pixel_values_bit_equal_to_fixture(processor, image, inputs):
    features = processor(image, return_tensors="pt")
    assert features["pixel_values"].dtype == torch.float32
    assert torch.equal(features["pixel_values"], inputs["images.tensors"])
    assert features["image_sizes"].tolist() == inputs["images.image_sizes_hw"].tolist() == [[320, 426]]
    assert features["original_sizes"].tolist() == [[480, 640]]


def test_numpy_torch_and_float_inputs_are_equivalent(processor, image, inputs):
    array = np.asarray(image)  # (height, width, 3) uint8
    expected = inputs["images.tensors"]
    assert torch.equal(processor(array)["pixel_values"], expected)
    assert torch.equal(processor(torch.from_numpy(array.copy()).permute(2, 0, 1))["pixel_values"], expected)
    assert torch.equal(processor(array.astype(np.float32) / 255.0)["pixel_values"], expected)
    channels_first = np.ascontiguousarray(array.transpose(2, 0, 1))
    assert torch.equal(processor(channels_first, input_data_format="channels_first")["pixel_values"], expected)


def test_resized_uint8_image_matches_fixture(image, inputs):
    height, width = get_resize_output_size(480, 640, 320, 533)
    resized = np.asarray(image.resize((width, height), Image.BILINEAR))
    assert torch.equal(torch.from_numpy(resized.copy()), inputs["image.resized_rgb_uint8"])


@pytest.mark.parametrize(
    ("size", "min_size", "max_size", "expected"),
    [
        ((480, 640), 800, 1333, (800, 1066)),  # long side truncated: int(800 * 640 / 480) = 1066
        ((480, 640), 320, 533, (320, 426)),
        ((100, 1000), 800, 1333, (133, 1330)),  # max size hit: short round(133.3) = 133, long int(133 * 10) = 1330
        ((800, 1200), 800, 1333, (800, 1200)),  # short side already at the target size: kept
        ((1000, 500), 800, 1333, (1332, 666)),  # portrait; round(666.5) = 666 (Python rounds half to even)
        ((600, 600), 800, None, (800, 800)),
    ],
)
def test_official_resize_rule(size, min_size, max_size, expected):
    assert get_resize_output_size(*size, min_size, max_size) == expected


def test_grayscale_and_rgba_are_converted_to_rgb(processor, image):
    gray = image.convert("L")
    expected = processor(gray.convert("RGB"))["pixel_values"]
    assert torch.equal(processor(gray)["pixel_values"], expected)
    assert torch.equal(processor(np.asarray(gray))["pixel_values"], expected)
    assert torch.equal(processor(np.asarray(gray)[:, :, None])["pixel_values"], expected)
    rgba = np.concatenate([np.asarray(image), np.full((480, 640, 1), 7, dtype=np.uint8)], axis=-1)
    rgb_expected = processor(image)["pixel_values"]
    assert torch.equal(processor(rgba)["pixel_values"], rgb_expected)
    assert torch.equal(processor(Image.fromarray(rgba, mode="RGBA"))["pixel_values"], rgb_expected)


def test_batch_is_padded_to_multiples_of_32(processor, image):
    small = image.resize((200, 150))
    features = processor([image, small])
    assert features["pixel_values"].shape == (2, 3, 320, 448)
    assert features["image_sizes"].tolist() == [[320, 426], [320, 426]]
    tall = image.resize((150, 300))
    features = processor([image, tall])
    single = processor(tall)["pixel_values"]
    height, width = features["image_sizes"][1].tolist()
    assert (height, width) == (532, 266)  # max size hit: short round(266.5) = 266, long int(266 * 2) = 532
    assert features["pixel_values"].shape == (2, 3, 544, 448)
    assert torch.equal(features["pixel_values"][1, :, :height, :width], single[0, :, :height, :width])
    assert features["pixel_values"][1, :, height:, :].abs().sum() == 0
    assert features["pixel_values"][1, :, :, width:].abs().sum() == 0
    stacked = processor(torch.stack([torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)] * 2))
    assert stacked["pixel_values"].shape == (2, 3, 320, 448)


# targets -------------------------------------------------------------------------------------------------------------


def _coco_annotations():
    targets = json.loads((FIXTURE / "targets.json").read_text())
    objects = []
    for entry in targets["gt"]:
        x1, y1, x2, y2 = entry["box_xyxy_original_image"]
        # COCO xywh with the +1 convention of the official BoxList (x2 = x + w - 1).
        objects.append({"bbox": [x1, y1, x2 - x1 + 1, y2 - y1 + 1], "category_id": entry["label"], "iscrowd": 0})
    objects.append({"bbox": [0, 0, 50, 50], "category_id": 9, "iscrowd": 1})  # crowd boxes are dropped
    objects.append({"bbox": [700, 10, 20, 20], "category_id": 9})  # outside the image: removed as empty
    return {"image_id": 7, "annotations": objects}


def test_coco_annotations_to_network_input_boxes(processor, image, inputs):
    features = processor(image, annotations=_coco_annotations())
    target = features["labels"][0]
    torch.testing.assert_close(target["boxes"], inputs["train.gt_boxes_xyxy"], rtol=0, atol=1e-4)
    assert target["class_labels"].tolist() == inputs["train.gt_labels"].tolist()
    assert target["annotation_indices"].tolist() == [0, 1, 2]
    assert target["image_id"] == 7 and target["size"].tolist() == [320, 426] and not target["flipped"]


def test_training_flip_uses_plus_one_convention(processor, image, inputs):
    features = processor(
        image,
        annotations=_coco_annotations(),
        do_train_augmentation=True,
        train_min_sizes=[320],
        horizontal_flip_probability=1.0,
    )
    expected_pixels = inputs["images.tensors"][..., :426].flip(-1)
    assert torch.equal(features["pixel_values"][..., :426], expected_pixels)
    boxes = inputs["train.gt_boxes_xyxy"]
    expected_boxes = torch.stack([426 - boxes[:, 2] - 1, boxes[:, 1], 426 - boxes[:, 0] - 1, boxes[:, 3]], dim=-1)
    torch.testing.assert_close(features["labels"][0]["boxes"], expected_boxes, rtol=0, atol=1e-4)
    assert features["labels"][0]["flipped"]


def test_multi_scale_training_is_reproducible(image):
    processor = GLIPImageProcessor()
    sizes = set()
    for seed in range(8):
        first = processor(image, do_train_augmentation=True, generator=torch.Generator().manual_seed(seed))
        second = processor(image, do_train_augmentation=True, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(first["pixel_values"], second["pixel_values"])
        sizes.add(int(first["image_sizes"][0, 0]))
    assert sizes <= {480, 560, 640, 720, 800} and len(sizes) > 1
    evaluation = processor(image)
    assert evaluation["image_sizes"].tolist() == [[800, 1066]]


# errors --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_image",
    [
        np.zeros((1, 10, 3), dtype=np.uint8),
        np.zeros((10, 1, 3), dtype=np.uint8),
        np.zeros((0, 10, 3), dtype=np.uint8),
        torch.zeros((3, 1, 5), dtype=torch.uint8),
        Image.new("RGB", (1, 5)),
    ],
)
def test_tiny_images_are_rejected(processor, bad_image):
    with pytest.raises(ValueError, match="images.*2 pixels"):
        processor(bad_image)


@pytest.mark.parametrize(
    "bad_image",
    [
        np.zeros((8, 8, 2), dtype=np.uint8),
        np.zeros((8, 8, 5), dtype=np.uint8),
        torch.zeros((2, 8, 8)),
        torch.zeros((5, 8, 8)),
        np.zeros((2, 8, 8, 3, 1), dtype=np.uint8),
    ],
)
def test_wrong_channel_counts_are_rejected(processor, bad_image):
    with pytest.raises(ValueError, match="images"):
        processor(bad_image)


def test_nan_and_out_of_range_pixels_are_rejected(processor):
    array = np.full((8, 8, 3), 0.5, dtype=np.float32)
    array[2, 3, 1] = np.nan
    with pytest.raises(ValueError, match="images.*NaN"):
        processor(array)
    with pytest.raises(ValueError, match=r"images\[1\].*\[0, 1\]"):
        processor([np.zeros((8, 8, 3), np.float32), np.full((8, 8, 3), 3.0, np.float32)])


@pytest.mark.parametrize("bad_input", ["image.png", 3, None, {"pixels": 1}, [3]])
def test_wrong_types_are_rejected(processor, bad_input):
    with pytest.raises(TypeError, match="images"):
        processor(bad_input)


def test_bad_arguments_are_rejected(processor, image):
    with pytest.raises(ValueError, match="images"):
        processor([])
    with pytest.raises(ValueError, match="return_tensors"):
        processor(image, return_tensors="np")
    with pytest.raises(ValueError, match="annotations"):
        processor([image, image], annotations=[_coco_annotations()])
    with pytest.raises(ValueError, match="bbox"):
        processor(image, annotations={"image_id": 1, "annotations": [{"bbox": [1, 2, 3], "category_id": 1}]})
    with pytest.raises(TypeError, match="annotations"):
        processor(image, annotations="boxes")
    with pytest.raises(TypeError, match="unexpected"):
        processor(image, do_resize=False)
    with pytest.raises(ValueError, match="min_size"):
        GLIPImageProcessor(min_size=0)
    with pytest.raises(ValueError, match="image_std"):
        GLIPImageProcessor(image_std=[1.0, 0.0, 1.0])


# serialisation -------------------------------------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path, image):
    processor = GLIPImageProcessor(min_size=320, max_size=533, train_min_sizes=[320, 352], size_divisibility=64)
    processor.save_pretrained(tmp_path)
    reloaded = GLIPImageProcessor.from_pretrained(tmp_path)
    assert reloaded.to_dict() == processor.to_dict()
    assert reloaded.train_min_sizes == [320, 352] and reloaded.size_divisibility == 64
    assert torch.equal(reloaded(image)["pixel_values"], processor(image)["pixel_values"])


def test_auto_image_processor_loads_after_registration(tmp_path):
    from transformers import AutoImageProcessor

    from transformers_glip.configuration_glip import GLIPConfig

    AutoImageProcessor.register(GLIPConfig, image_processor_classes={"torchvision": GLIPImageProcessor}, exist_ok=True)
    GLIPImageProcessor(min_size=320, max_size=533).save_pretrained(tmp_path)
    reloaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert isinstance(reloaded, GLIPImageProcessor) and reloaded.min_size == 320
