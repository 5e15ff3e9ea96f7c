"""Streaming training data: readers, mixing, od -> grounding prompts, box math, corrupt records, resume."""

import json
import random
from collections import Counter

import pytest
import torch
from PIL import Image, ImageDraw
from transformers import BertTokenizer

from transformers_glip.box_geometry_glip import flip_boxes, get_resize_output_size, resize_boxes
from transformers_glip.image_processing_glip import GLIPImageProcessor
from transformers_glip.processing_glip import clean_label_name
from transformers_glip.data.collator import GLIPTrainingCollator
from transformers_glip.data.records import GroundingSource
from transformers_glip.data.sources import (
    coco_detection_source,
    mdetr_grounding_source,
    odvg_source,
    pseudo_label_source,
    synthetic_shapes_source,
)
from transformers_glip.data.stream import GLIPTrainingStream, SkippedRecordCounter
from transformers_glip.data.synthetic_shapes import SyntheticShapesConfig, generate_synthetic_shapes
from transformers_glip.data.transform import GLIPTrainingTransform, detection_to_grounding

TOKENIZER_PATH = "tests/fixtures/tiny_a/bert"


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizer.from_pretrained(TOKENIZER_PATH)


@pytest.fixture(scope="module")
def small_processor():
    return GLIPImageProcessor(min_size=64, max_size=128, train_min_sizes=[48, 64], horizontal_flip_probability=0.5)


def make_transform(tokenizer, processor, **kwargs):
    return GLIPTrainingTransform(tokenizer, processor, max_length=kwargs.pop("max_length", 32), **kwargs)


def write_image(path, width=64, height=48, rectangle=None, color=(220, 40, 40)):
    image = Image.new("RGB", (width, height), (120, 120, 120))
    if rectangle is not None:
        ImageDraw.Draw(image).rectangle(rectangle, fill=color)
    image.save(path)
    return path


def records(source):
    return list(source.dataset)


def stream_samples(sources, transform, count=None, **kwargs):
    kwargs.setdefault("shuffle_buffer_size", 0)
    kwargs.setdefault("max_epochs", 1)
    stream = GLIPTrainingStream(sources, transform, **kwargs)
    samples = []
    for sample in stream:
        samples.append(sample)
        if count is not None and len(samples) == count:
            break
    return stream, samples


@pytest.fixture(scope="module")
def synthetic_world(tmp_path_factory):
    directory = tmp_path_factory.mktemp("shapes")
    config = SyntheticShapesConfig(seed=3, num_train=24, num_validation=4, num_train_shards=4)
    generate_synthetic_shapes(directory, config)
    return directory


# ------------------------------------------------------------------------------------------------ readers


def test_coco_reader(tmp_path):
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "b.png")
    data = {
        "images": [
            {"id": 7, "file_name": "a.png", "width": 64, "height": 48},
            {"id": 9, "file_name": "b.png", "width": 64, "height": 48},
        ],
        "annotations": [
            {"id": 1, "image_id": 7, "bbox": [10, 5, 20, 10], "category_id": 3},
            {"id": 2, "image_id": 7, "bbox": [0, 0, 5, 5], "category_id": 1, "iscrowd": 1},
            {"id": 3, "image_id": 9, "bbox": [1.5, 2, 4, 6], "category_id": 1},
        ],
        "categories": [{"id": 3, "name": "dog_(animal)"}, {"id": 1, "name": "cat"}],
    }
    (tmp_path / "coco.json").write_text(json.dumps(data))
    source = coco_detection_source(tmp_path / "coco.json", tmp_path, name="coco", num_shards=2)
    assert source.vocabulary == ["cat", "dog_(animal)"]  # ordered by category id
    assert source.dataset.n_shards == 2
    by_id = {record["sample_id"]: record for record in records(source)}
    assert set(by_id) == {"coco:7", "coco:9"}
    first = by_id["coco:7"]
    assert first["task"] == "detection" and first["labels"] == ["dog_(animal)"]  # crowd box dropped
    assert first["boxes"] == [[10.0, 5.0, 29.0, 14.0]]  # x2 = x + w - 1
    assert first["image"]["path"].endswith("a.png") and first["width"] == 64
    assert by_id["coco:9"]["boxes"] == [[1.5, 2.0, 4.5, 7.0]]  # COCO [1.5, 2, 4, 6]: x2 = x + w - 1


def test_mdetr_reader(tmp_path):
    write_image(tmp_path / "a.png")
    caption = "a red car next to a man"
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48, "caption": caption}],
        "annotations": [
            {"id": 1, "image_id": 1, "bbox": [2, 3, 10, 10], "tokens_positive": [[2, 9]], "category_id": 1},
            {"id": 2, "image_id": 1, "bbox": [20, 3, 10, 20], "tokens_positive": [[18, 23]], "category_id": 1},
        ],
        "categories": [{"id": 1, "name": "object"}],
    }
    (tmp_path / "mdetr.json").write_text(json.dumps(data))
    (record,) = records(mdetr_grounding_source(tmp_path / "mdetr.json", tmp_path, name="goldg"))
    assert record["task"] == "grounding" and record["caption"] == caption
    assert record["tokens_positive"] == [[[2, 9]], [[18, 23]]]
    assert [caption[2:9], caption[18:23]] == ["red car", "a man"]
    assert record["boxes"][1] == [20.0, 3.0, 29.0, 22.0]


def test_odvg_readers(tmp_path):
    write_image(tmp_path / "a.png")
    detection_lines = [
        {
            "filename": "a.png",
            "height": 48,
            "width": 64,
            "detection": {
                "instances": [
                    {"bbox": [1, 2, 30, 40], "label": 0, "category": "person"},
                    {"bbox": [5, 5, 9, 9], "label": 1},
                ]
            },
        }
    ]
    (tmp_path / "det.jsonl").write_text("\n".join(json.dumps(line) for line in detection_lines) + "\n")
    (tmp_path / "label_map.json").write_text(json.dumps({"1": "bicycle", "0": "person"}))
    source = odvg_source(
        tmp_path / "det.jsonl", tmp_path, task="detection", label_map_file=tmp_path / "label_map.json"
    )
    assert source.vocabulary == ["person", "bicycle"]
    (record,) = records(source)
    assert record["labels"] == ["person", "bicycle"] and record["boxes"][0] == [1.0, 2.0, 30.0, 40.0]
    # Without a label map, the vocabulary is scanned from the categories in the file.
    assert odvg_source(tmp_path / "det.jsonl", tmp_path, task="detection").vocabulary == ["person"]

    caption = "two dogs and a ball"
    grounding_line = {
        "filename": "a.png",
        "height": 48,
        "width": 64,
        "grounding": {
            "caption": caption,
            "regions": [
                {"bbox": [[1, 1, 10, 10], [20, 1, 30, 10]], "phrase": "two dogs", "tokens_positive": [[0, 8]]},
                {"bbox": [40, 30, 50, 40], "phrase": "a ball", "tokens_positive": [[13, 19]]},
            ],
        },
    }
    (tmp_path / "grounding.jsonl").write_text(json.dumps(grounding_line) + "\n")
    (record,) = records(odvg_source(tmp_path / "grounding.jsonl", tmp_path, task="grounding", name="odvg_g"))
    assert record["caption"] == caption and len(record["boxes"]) == 3
    assert record["tokens_positive"] == [[[0, 8]], [[0, 8]], [[13, 19]]]  # every box of a region shares its spans


def test_pseudo_label_reader_keeps_boxes_above_threshold(tmp_path, tokenizer, small_processor):
    write_image(tmp_path / "a.png")
    caption = "a cat on a mat"
    version_1 = {
        "file_name": "a.png",
        "caption": caption,
        "img_w": 64,
        "img_h": 48,
        "bboxes": [[1, 1, 20, 20], [30, 10, 60, 40], [5, 5, 15, 15]],
        "scores": [0.9, 0.3, 0.6],
        "tokens_positive": [[[0, 5]], [[9, 14]], [[0, 5]]],
    }
    version_2 = {  # boxes and scores nested per entity
        "file_name": "a.png",
        "caption": caption,
        "img_w": 64,
        "img_h": 48,
        "bboxes": [[[1, 1, 20, 20], [2, 2, 10, 10]], [[30, 10, 60, 40]]],
        "scores": [[0.9, 0.4], [0.2]],
        "tokens_positive": [[[0, 5]], [[9, 14]]],
    }
    all_low = {**version_1, "scores": [0.1, 0.2, 0.3]}
    lines = [version_1, version_2, all_low]
    (tmp_path / "pseudo.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    source = pseudo_label_source(tmp_path / "pseudo.jsonl", tmp_path, score_threshold=0.5)
    raw = records(source)
    assert [len(record["boxes"]) for record in raw] == [3, 3, 3]
    assert raw[1]["tokens_positive"] == [[[0, 5]], [[0, 5]], [[9, 14]]] and raw[1]["scores"] == [0.9, 0.4, 0.2]
    stream, samples = stream_samples([source], make_transform(tokenizer, small_processor))
    assert [len(sample["boxes"]) for sample in samples] == [2, 1]
    assert stream.counter.dropped_boxes["low_score"] == 1 + 2 + 3
    assert stream.counter.skipped == {"no_boxes": 1}


def test_synthetic_label_granularities(synthetic_world):
    combination, color, shape = (
        records(synthetic_shapes_source(synthetic_world, "train", "detection", granularity=granularity))
        for granularity in ("combination", "color", "shape")
    )
    for first, second, third in zip(combination, color, shape):
        assert first["boxes"] == second["boxes"] == third["boxes"]
        assert [f"{c} {s}" for c, s in zip(second["labels"], third["labels"])] == first["labels"]
    source = synthetic_shapes_source(synthetic_world, "train", "detection", granularity="color")
    assert source.name == "synthetic_color" and source.vocabulary == ["red", "green", "blue", "yellow"]
    with pytest.raises(ValueError, match="granularity"):
        synthetic_shapes_source(synthetic_world, granularity="size")


def test_synthetic_reader(synthetic_world):
    detection = synthetic_shapes_source(synthetic_world, "train", task="detection")
    grounding = synthetic_shapes_source(synthetic_world, "train", task="grounding")
    assert detection.dataset.n_shards == 4
    assert "red triangle" not in detection.vocabulary and "blue circle" not in detection.vocabulary
    detection_records, grounding_records = records(detection), records(grounding)
    assert len(detection_records) == len(grounding_records) == 24
    for record in detection_records:
        assert set(record["labels"]) <= set(detection.vocabulary) and len(record["labels"]) == len(record["boxes"])
    for record in grounding_records:
        assert record["image"]["path"].endswith(".png")
        for spans in record["tokens_positive"]:
            for begin, end in spans:
                assert 0 <= begin < end <= len(record["caption"])


# ------------------------------------------------------------------------------------------------ prompts


def test_detection_to_grounding_spans_and_negatives(tokenizer):
    vocabulary = [f"class_{index}" for index in range(30)] + ["traffic light", "dog_(animal)"]
    box_labels = ["traffic light", "class_3", "traffic light", "dog_(animal)"]

    def token_count(text):
        return len(tokenizer.tokenize(text))

    for seed in range(20):
        caption, spans = detection_to_grounding(
            box_labels, vocabulary, random.Random(seed), token_count, max_length=256
        )
        assert all(span is not None for span in spans)
        for label, box_spans in zip(box_labels, spans):
            ((begin, end),) = box_spans
            assert caption[begin:end] == clean_label_name(label)
        entries = caption.split(". ")
        assert len(entries) == len(set(entries))  # every category once; positives never repeated as negatives
        assert {"traffic light", "class 3", "dog "} <= set(entries)
        assert len(tokenizer(caption)["input_ids"]) <= 256
    # Same generator state -> same prompt (exact resume relies on it).
    first = detection_to_grounding(box_labels, vocabulary, random.Random(5), token_count)
    assert first == detection_to_grounding(box_labels, vocabulary, random.Random(5), token_count)
    # With probability 0.5 all negatives are used: 30 classes + background fit in 256 tokens.
    counts = [
        len(detection_to_grounding(box_labels, vocabulary, random.Random(seed), token_count)[0].split(". "))
        for seed in range(40)
    ]
    assert max(counts) == len(vocabulary) + 1 and min(counts) < len(vocabulary)


def test_detection_to_grounding_token_budget(tokenizer):
    def token_count(text):
        return len(tokenizer.tokenize(text))

    vocabulary = [f"thing{index}" for index in range(20)]
    box_labels = vocabulary[:12]
    for seed in range(10):
        caption, spans = detection_to_grounding(
            box_labels, vocabulary, random.Random(seed), token_count, max_length=16
        )
        kept = [span for span in spans if span is not None]
        assert 0 < len(kept) < len(box_labels)  # positives beyond the budget are dropped (their boxes too)
        assert len(tokenizer(caption)["input_ids"]) <= 16
        assert not any(caption[span[0][0] : span[0][1]] != label for span, label in zip(spans, box_labels) if span)


# ------------------------------------------------------------------------------------------------ box math


def test_flip_and_resize_box_math():
    boxes = torch.tensor([[10.0, 5.0, 29.0, 14.0]])
    assert flip_boxes(boxes, 64).tolist() == [[34.0, 5.0, 53.0, 14.0]]  # x1' = W - x2 - 1, x2' = W - x1 - 1
    assert torch.equal(flip_boxes(flip_boxes(boxes, 64), 64), boxes)
    assert resize_boxes(boxes, (48, 64), (96, 32)).tolist() == [[5.0, 10.0, 14.5, 28.0]]
    assert get_resize_output_size(48, 64, 32, 1333) == (32, 42)  # long side truncated: int(32 * 64 / 48)
    assert get_resize_output_size(100, 400, 800, 1333) == (333, 1332)  # cap: round(1333 / 4), then int(333 * 4)


@pytest.mark.parametrize("flip", [False, True])
def test_transform_boxes_follow_the_pixels(tmp_path, tokenizer, flip):
    """Draw a red rectangle, run the training transform (resize + optional flip) and find the rectangle again."""
    write_image(tmp_path / "a.png", width=80, height=40, rectangle=[10, 8, 29, 27])
    record = {
        "sample_id": "s:0",
        "source": "s",
        "task": "grounding",
        "image": {"bytes": None, "path": str(tmp_path / "a.png")},
        "width": 80,
        "height": 40,
        "boxes": [[10.0, 8.0, 29.0, 27.0]],
        "labels": [],
        "caption": "a red square",
        "tokens_positive": [[[2, 12]]],
        "scores": [1.0],
        "error": "",
    }
    processor = GLIPImageProcessor(
        min_size=80, max_size=400, train_min_sizes=[80], horizontal_flip_probability=float(flip)
    )
    sample = make_transform(tokenizer, processor)(
        record, GroundingSource("s", None), random.Random(0), SkippedRecordCounter()
    )
    assert sample["image_size"] == (80, 160) and sample["flipped"] is flip
    box = sample["boxes"][0]
    expected = torch.tensor([20.0, 16.0, 58.0, 54.0])
    if flip:
        expected = torch.tensor([160 - 58.0 - 1, 16.0, 160 - 20.0 - 1, 54.0])
    assert torch.allclose(box, expected)
    red = sample["pixel_values"][2] > 1.0  # channel 2 is R (BGR input)
    ys, xs = torch.nonzero(red, as_tuple=True)
    found = torch.tensor([xs.min(), ys.min(), xs.max(), ys.max()], dtype=torch.float32)
    assert (found - box).abs().max() <= 1.0
    tokens = tokenizer.convert_ids_to_tokens(sample["input_ids"][sample["positive_map"][0].bool()])
    assert tokens == ["red", "square"]  # the caption is unchanged by the flip


def test_collator_pads_to_multiple_of_32(tokenizer, synthetic_world):
    processor = GLIPImageProcessor(min_size=64, max_size=128, train_min_sizes=[40, 70])
    source = synthetic_shapes_source(synthetic_world, "train", task="grounding")
    _, samples = stream_samples([source], make_transform(tokenizer, processor), count=4)
    batch = GLIPTrainingCollator()(samples)
    assert batch["pixel_values"].shape[2] % 32 == 0 and batch["pixel_values"].shape[3] % 32 == 0
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (4, 32)
    assert batch["image_sizes"].tolist() == [list(sample["image_size"]) for sample in samples]
    for label, sample in zip(batch["labels"], samples):
        assert label["boxes"].shape == (label["positive_map"].shape[0], 4)
        assert label["positive_map"].shape[1] == 32 and set(label["positive_map"].unique().tolist()) <= {0.0, 1.0}
        height, width = sample["image_size"]
        assert (label["boxes"][:, 2] <= width).all() and (label["boxes"][:, 3] <= height).all()
    assert batch["sample_ids"] == [sample["sample_id"] for sample in samples]
    assert batch["stream_state"] == samples[-1]["stream_state"]


# ------------------------------------------------------------------------------------------------ corrupt records


def test_corrupt_records_are_skipped_and_counted(tmp_path, tokenizer, small_processor):
    write_image(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    caption = "a cat and a dog"
    base = {"filename": "good.png", "height": 48, "width": 64}

    def line(regions, **overrides):
        return json.dumps({**base, **overrides, "grounding": {"caption": caption, "regions": regions}})

    good_region = {"bbox": [1, 1, 20, 20], "tokens_positive": [[2, 5]]}
    lines = [
        line([good_region]),
        line([good_region], filename="broken.png"),
        line([good_region], filename="missing.png"),
        line([good_region], width=100),
        line([{"bbox": [1, 1, 200, 20], "tokens_positive": [[2, 5]]}]),
        line([{"bbox": [10, 10, 10, 20], "tokens_positive": [[2, 5]]}]),
        line([{"bbox": [1, 1, "x", 20], "tokens_positive": [[2, 5]]}]),
        line([{"bbox": [1, 1, 20, 20], "tokens_positive": [[12, 40]]}]),
        "{this is not json",
        json.dumps({"caption": "no file name"}),
        line([{"bbox": [2, 2, 30, 30], "tokens_positive": [[12, 15]]}]),
    ]
    (tmp_path / "mixed.jsonl").write_text("\n".join(lines) + "\n")
    source = odvg_source(tmp_path / "mixed.jsonl", tmp_path, task="grounding", shards_per_file=3)
    stream, samples = stream_samples([source], make_transform(tokenizer, small_processor))
    assert len(samples) == 2
    assert stream.counter.skipped == {
        "unreadable_image": 2,
        "image_size_mismatch": 1,
        "box_outside_image": 1,
        "no_boxes": 1,  # its only box is empty: the box is dropped (counted below), then the record has none
        "invalid_box": 1,
        "span_outside_caption": 1,
        "parse_error": 2,
    }
    assert stream.counter.records_seen == len(lines)
    assert stream.counter.dropped_boxes["empty_box"] == 1
    assert "skipped 9" in stream.counter.summary()
    for sample in samples:
        assert torch.isfinite(sample["pixel_values"]).all() and sample["positive_map"].sum() > 0
    # The counts travel with every sample, so a training loop can report them from the batch.
    assert SkippedRecordCounter.from_state_dict(samples[-1]["stream_state"]["counter"]).num_skipped <= 9


def test_unknown_category_and_truncated_phrases(tmp_path, tokenizer, small_processor):
    write_image(tmp_path / "a.png")
    detection = {
        "filename": "a.png",
        "height": 48,
        "width": 64,
        "detection": {"instances": [{"bbox": [1, 1, 20, 20], "label": 5, "category": "zebra"}]},
    }
    long_caption = "word " * 40 + "a cat"
    grounding = {
        "filename": "a.png",
        "height": 48,
        "width": 64,
        "grounding": {
            "caption": long_caption,
            "regions": [
                {"bbox": [1, 1, 20, 20], "tokens_positive": [[0, 4]]},
                {"bbox": [2, 2, 20, 20], "tokens_positive": [[len(long_caption) - 3, len(long_caption)]]},
            ],
        },
    }
    (tmp_path / "det.jsonl").write_text(json.dumps(detection) + "\n")
    (tmp_path / "label_map.json").write_text(json.dumps({"0": "cat"}))
    (tmp_path / "grounding.jsonl").write_text(json.dumps(grounding) + "\n")
    sources = [
        odvg_source(tmp_path / "det.jsonl", tmp_path, label_map_file=tmp_path / "label_map.json", name="det"),
        odvg_source(tmp_path / "grounding.jsonl", tmp_path, task="grounding", name="grounding"),
    ]
    stream, samples = stream_samples(sources, make_transform(tokenizer, small_processor))
    assert stream.counter.skipped == {"unknown_category": 1}
    assert stream.counter.dropped_boxes == {"truncated_phrase": 1}  # "cat" lies beyond 32 tokens
    assert [len(sample["boxes"]) for sample in samples] == [1]


# ------------------------------------------------------------------------------------------------ stream


def test_mixing_ratios(tokenizer, small_processor, synthetic_world):
    sources = [
        synthetic_shapes_source(synthetic_world, "train", task="detection"),
        synthetic_shapes_source(synthetic_world, "train", task="grounding"),
    ]
    transform = make_transform(tokenizer, small_processor)
    stream = GLIPTrainingStream(sources, transform, probabilities=[4, 1], seed=0, shuffle_buffer_size=8)
    counts = Counter(sample["source"] for _, sample in zip(range(300), stream))
    assert abs(counts["synthetic_detection"] / 300 - 0.8) < 0.08
    # Detection samples carry category prompts, grounding samples the captions.
    sample = next(sample for sample in stream if sample["source"] == "synthetic_detection")
    assert ". " in sample["caption"]
    with pytest.raises(ValueError, match="one non-negative ratio per source"):
        GLIPTrainingStream(sources, transform, probabilities=[1.0])


def test_split_by_node_gives_disjoint_complete_parts(tokenizer, small_processor, synthetic_world):
    transform = make_transform(tokenizer, small_processor)
    parts = []
    for rank in range(2):
        source = synthetic_shapes_source(synthetic_world, "train", task="detection")
        _, samples = stream_samples([source], transform, rank=rank, world_size=2, shuffle_buffer_size=4, seed=1)
        parts.append({sample["sample_id"] for sample in samples})
    assert parts[0].isdisjoint(parts[1])
    assert len(parts[0] | parts[1]) == 24 and len(parts[0]) == len(parts[1]) == 12


@pytest.mark.parametrize("shuffle_buffer_size", [0, 6])
def test_resume_continues_exactly(tokenizer, small_processor, synthetic_world, shuffle_buffer_size):
    """Stop after k samples, restore the saved position in a new stream: the rest is identical (ids, prompts,
    augmentation), across an epoch boundary, with no repeats and no skips."""

    def make_stream():
        sources = [
            synthetic_shapes_source(synthetic_world, "train", task="detection"),
            synthetic_shapes_source(synthetic_world, "train", task="grounding"),
        ]
        transform = make_transform(tokenizer, small_processor)
        return GLIPTrainingStream(
            sources, transform, probabilities=[0.5, 0.5], seed=7, shuffle_buffer_size=shuffle_buffer_size, max_epochs=2
        )

    full = list(make_stream())
    assert len({sample["stream_state"]["epoch"] for sample in full}) == 2
    for stop in (5, len(full) // 2 + 3):
        interrupted = make_stream()
        iterator = iter(interrupted)
        consumed = [next(iterator) for _ in range(stop)]
        saved = json.loads(json.dumps(consumed[-1]["stream_state"]))  # as written to a checkpoint
        resumed = make_stream()
        resumed.load_state_dict(saved)
        rest = list(resumed)
        assert [sample["sample_id"] for sample in consumed + rest] == [sample["sample_id"] for sample in full]
        for mine, reference in zip(rest[:3], full[stop : stop + 3]):
            assert mine["caption"] == reference["caption"] and mine["flipped"] == reference["flipped"]
            assert torch.equal(mine["pixel_values"], reference["pixel_values"])
            assert torch.equal(mine["boxes"], reference["boxes"])
        assert rest[-1]["stream_state"] == full[-1]["stream_state"]  # same final position and counts
    with pytest.raises(ValueError, match="seed"):
        make_stream().load_state_dict({**full[0]["stream_state"], "seed": 99})


def test_stream_refuses_several_workers(tokenizer, small_processor, synthetic_world):
    source = synthetic_shapes_source(synthetic_world, "train", task="detection")
    stream = GLIPTrainingStream([source], make_transform(tokenizer, small_processor), shuffle_buffer_size=0)
    loader = torch.utils.data.DataLoader(stream, batch_size=2, collate_fn=GLIPTrainingCollator(), num_workers=2)
    with pytest.raises(RuntimeError, match="num_workers"):
        next(iter(loader))
