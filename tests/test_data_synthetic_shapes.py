"""The generated shapes world: determinism, held-out combinations, exact phrase spans, tight boxes, reuse."""

import json
import os

import numpy as np
import pytest
from datasets import load_dataset
from PIL import Image

from transformers_glip.data.synthetic_shapes import (
    COLOR_VALUES,
    SyntheticShapesConfig,
    category_names,
    generate_synthetic_shapes,
    read_synthetic_metadata,
)

SMALL = {"num_train": 40, "num_validation": 30, "num_train_shards": 2}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    directory = tmp_path_factory.mktemp("world")
    metadata = generate_synthetic_shapes(directory, SyntheticShapesConfig(seed=1, **SMALL))
    return directory, metadata


def read_records(directory, split):
    metadata = read_synthetic_metadata(directory)
    records = []
    for file_name in metadata["splits"][split]["files"]:
        with open(os.path.join(directory, file_name)) as handle:
            records.extend(json.loads(line) for line in handle)
    return records


def test_generation_is_deterministic(world, tmp_path):
    directory, _ = world
    generate_synthetic_shapes(tmp_path / "again", SyntheticShapesConfig(seed=1, **SMALL))
    assert read_records(directory, "train") == read_records(tmp_path / "again", "train")
    first = os.path.join(directory, "train", "images", "train-000003.png")
    second = tmp_path / "again" / "train" / "images" / "train-000003.png"
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(second)))
    generate_synthetic_shapes(tmp_path / "other", SyntheticShapesConfig(seed=2, **SMALL))
    assert read_records(directory, "train") != read_records(tmp_path / "other", "train")


def test_held_out_combinations_never_appear_in_training(world):
    directory, metadata = world
    config = SyntheticShapesConfig(seed=1, **SMALL)
    held_out = set(metadata["held_out_categories"])
    assert held_out == {"red triangle", "blue circle"}
    assert held_out.isdisjoint(metadata["train_categories"]) and held_out <= set(metadata["categories"])
    assert metadata["train_categories"] == category_names(config, "train")
    for record in read_records(directory, "train"):
        assert held_out.isdisjoint(record["categories"])
        assert not any(name in record["caption"] for name in held_out)
    validation = [name for record in read_records(directory, "validation") for name in record["categories"]]
    assert held_out & set(validation)  # the held-out split does contain them


def test_captions_have_exact_phrase_spans(world):
    directory, _ = world
    partial = 0
    for split in ("train", "validation"):
        for record in read_records(directory, split):
            assert len(record["tokens_positive"]) == len(record["boxes"]) == len(record["categories"])
            mentioned = {name for name, spans in zip(record["categories"], record["tokens_positive"]) if spans}
            assert mentioned, record  # every caption mentions something
            partial += len(mentioned) < len(set(record["categories"]))
            for spans, name, color, shape, size in zip(
                record["tokens_positive"], record["categories"], record["colors"], record["shapes"], record["sizes"]
            ):
                if not spans:  # not mentioned: no mentioned phrase may describe it
                    assert name not in mentioned and name not in record["caption"]
                    continue
                ((begin, end),) = spans
                phrase = record["caption"][begin:end]
                assert phrase in (f"{color} {shape}", f"{size} {color} {shape}")
                assert record["caption"][begin - 2 : begin] == "a "
    assert partial > 0  # some captions leave objects out


def test_boxes_are_tight_around_the_drawn_shapes(world):
    directory, _ = world
    for record in read_records(directory, "validation")[:10]:
        pixels = np.asarray(Image.open(os.path.join(directory, "validation", record["image"]))).astype(int)
        assert pixels.shape[:2] == (record["height"], record["width"])
        for box, color in zip(record["boxes"], record["colors"]):
            x1, y1, x2, y2 = (int(value) for value in box)
            target = np.array(COLOR_VALUES[color])
            close = np.abs(pixels - target).max(-1) <= 40  # shape colours are jittered by at most 18
            inside = close[y1 : y2 + 1, x1 : x2 + 1]
            assert inside.any(axis=0)[[0, -1]].all() and inside.any(axis=1)[[0, -1]].all()  # touches all 4 sides
            # Nothing of that colour right outside the box (shapes keep a gap of 3 pixels).
            ring = close[max(y1 - 1, 0) : y2 + 2, max(x1 - 1, 0) : x2 + 2].sum() - inside.sum()
            assert ring == 0


def test_coco_annotations_and_streaming(world):
    directory, metadata = world
    coco = json.load(open(os.path.join(directory, metadata["splits"]["validation"]["coco_annotations"])))
    records = read_records(directory, "validation")
    assert len(coco["images"]) == len(records)
    assert len(coco["annotations"]) == sum(len(record["boxes"]) for record in records)
    first_box, first_annotation = records[0]["boxes"][0], coco["annotations"][0]
    assert first_annotation["bbox"] == [
        first_box[0],
        first_box[1],
        first_box[2] - first_box[0] + 1,
        first_box[3] - first_box[1] + 1,
    ]
    assert {category["name"] for category in coco["categories"] if category["held_out"]} == {
        "red triangle",
        "blue circle",
    }
    files = [os.path.join(directory, name) for name in metadata["splits"]["train"]["files"]]
    stream = load_dataset("json", data_files={"train": files}, split="train", streaming=True)
    assert stream.n_shards == 2 and sum(1 for _ in stream) == 40


def test_existing_world_is_reused(world, tmp_path):
    directory, metadata = world
    stamp = os.path.getmtime(os.path.join(directory, "metadata.json"))
    assert generate_synthetic_shapes(directory, SyntheticShapesConfig(seed=1, **SMALL)) == metadata
    assert os.path.getmtime(os.path.join(directory, "metadata.json")) == stamp
    with pytest.raises(FileExistsError):
        generate_synthetic_shapes(directory, SyntheticShapesConfig(seed=5, **SMALL))
    small = generate_synthetic_shapes(tmp_path / "w", SyntheticShapesConfig(seed=5, num_train=3, num_validation=2))
    replaced = generate_synthetic_shapes(
        tmp_path / "w", SyntheticShapesConfig(seed=6, num_train=3, num_validation=2), overwrite=True
    )
    assert small["config"]["seed"] == 5 and replaced["config"]["seed"] == 6
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".tmp")]


def test_config_validation():
    with pytest.raises(ValueError, match="Unknown shape"):
        SyntheticShapesConfig(shapes=("hexagon",))
    with pytest.raises(ValueError, match="Held-out"):
        SyntheticShapesConfig(held_out_combinations=(("purple", "circle"),))
    with pytest.raises(ValueError, match="min_image_size"):
        SyntheticShapesConfig(min_image_size=64)
