"""The novel shapes (star, diamond, cross) of the generator: the default world is unchanged by them, each novel shape
fills its box, and the novel-task world has only novel categories."""

import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image, ImageDraw

from transformers_glip.data.synthetic_shapes import (
    NOVEL_SHAPE_NAMES,
    SHAPE_NAMES,
    SyntheticShapesConfig,
    category_names,
    draw_shape,
    generate_synthetic_shapes,
    novel_shapes_config,
)

# sha256 of the records (json, sorted keys) and decoded RGB pixels of a default world (default config except
# num_train=6, num_validation=3, num_train_shards=1), computed with the generator BEFORE the novel shapes were added
# (commit 1e35f61). The demo's measured figures depend on this world: adding shapes must not change it.
DEFAULT_WORLD_SHA256 = "ba2d21fe872b17568c076859557e9f8a56058feef7aecf1e654d58bd68f608f3"


def world_digest(directory) -> str:
    digest = hashlib.sha256()
    for split in ("train", "validation"):
        with open(os.path.join(directory, split, "data-00000-of-00001.jsonl")) as handle:
            for line in handle:
                record = json.loads(line)
                digest.update(json.dumps(record, sort_keys=True).encode())
                with Image.open(os.path.join(directory, split, record["image"])) as image:
                    digest.update(np.asarray(image.convert("RGB")).tobytes())
    return digest.hexdigest()


def test_default_world_is_unchanged_by_the_novel_shapes(tmp_path):
    assert SHAPE_NAMES == ("circle", "square", "triangle")  # also the distractor shapes of every world
    assert SyntheticShapesConfig().shapes == SHAPE_NAMES
    config = SyntheticShapesConfig(num_train=6, num_validation=3, num_train_shards=1)
    generate_synthetic_shapes(tmp_path / "world", config)
    assert world_digest(tmp_path / "world") == DEFAULT_WORLD_SHA256


@pytest.mark.parametrize("shape", NOVEL_SHAPE_NAMES)
@pytest.mark.parametrize("side", [16, 17, 31, 56])
def test_novel_shape_fills_its_box(shape, side):
    # Boxes are the square the shape is drawn in: the drawn pixels must touch all four sides (a tight box).
    image = Image.new("RGB", (80, 80))
    assert SyntheticShapesConfig(shapes=(shape,), held_out_combinations=()).shapes == (shape,)
    draw_shape(ImageDraw.Draw(image), shape, 5, 7, side, (255, 0, 0))
    ys, xs = np.nonzero(np.asarray(image)[..., 0])
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (5, 5 + side - 1, 7, 7 + side - 1)
    coverage = len(xs) / side**2
    assert 0.3 < coverage < 0.85  # neither a filled square nor a sliver


def test_novel_shapes_look_different():
    masks = {}
    for shape in NOVEL_SHAPE_NAMES + SHAPE_NAMES:
        image = Image.new("L", (40, 40))
        draw_shape(ImageDraw.Draw(image), shape, 2, 2, 32, 255)
        masks[shape] = np.asarray(image) > 0
    names = list(masks)
    for index, first in enumerate(names):
        for second in names[index + 1 :]:
            assert (masks[first] != masks[second]).mean() > 0.05, (first, second)


def test_novel_task_world(tmp_path):
    config = novel_shapes_config(seed=0, num_train=20, num_validation=6)
    assert config.shapes == NOVEL_SHAPE_NAMES and config.held_out_combinations == ()
    metadata = generate_synthetic_shapes(tmp_path / "novel", config)
    expected = [f"{color} {shape}" for color in ("red", "green", "blue", "yellow") for shape in NOVEL_SHAPE_NAMES]
    assert metadata["categories"] == metadata["train_categories"] == expected == category_names(config)
    for split in ("train", "validation"):
        with open(tmp_path / "novel" / split / "coco.json") as handle:
            coco = json.load(handle)
        assert [category["name"] for category in coco["categories"]] == expected
        assert len(coco["images"]) == {"train": 20, "validation": 6}[split]
        assert coco["annotations"]
    # Its layouts are not those of the default world of the same seed (seed 1000 + seed).
    assert config.seed == 1000
    assert novel_shapes_config(seed=2).seed == 1002


def test_unknown_shape_rejected():
    with pytest.raises(ValueError, match="Unknown shape 'pentagon'"):
        SyntheticShapesConfig(shapes=("pentagon",), held_out_combinations=())
    with pytest.raises(ValueError, match="Unknown shape 'pentagon'"):
        draw_shape(ImageDraw.Draw(Image.new("L", (8, 8))), "pentagon", 0, 0, 4, 255)
