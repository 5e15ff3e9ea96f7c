"""Streaming training data: readers, mixing, od -> grounding prompts, box math, corrupt records, resume."""

import json
import random
from collections import Counter

import pytest
import torch
from PIL import Image, ImageDraw
from transformers import BertTokenizer

from transformers_glip.box_geometry_glip import flip_boxes, get_resize_output_size, resize_boxes
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
from transformers_glip.image_processing_glip import GLIPImageProcessor
from transformers_glip.prompts_glip import clean_label_name

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


# ------------------------------------------------------------------------------------------------ no silent failure


def write_jsonl(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def grounding_line(filename):
    region = {"bbox": [1, 1, 20, 20], "tokens_positive": [[2, 5]]}
    return {"filename": filename, "height": 48, "width": 64, "grounding": {"caption": "a cat", "regions": [region]}}


def test_a_stream_of_only_invalid_records_stops_with_the_counts(tmp_path, tokenizer, small_processor):
    """Every record unusable: instead of looping forever over epochs, the first full epoch without a sample raises
    with the skip counts and examples (the stream is endless here: max_epochs=None)."""
    source = odvg_source(
        write_jsonl(tmp_path / "bad.jsonl", [grounding_line("missing.png") for _ in range(3)]),
        tmp_path,
        task="grounding",
    )
    stream = GLIPTrainingStream([source], make_transform(tokenizer, small_processor), shuffle_buffer_size=0)
    with pytest.raises(RuntimeError, match=r"Every one of the 3 records of epoch 0") as error:
        next(iter(stream))
    assert "unreadable_image=3" in str(error.value) and "missing.png" in str(error.value)


def test_some_invalid_records_never_stop_the_stream(tmp_path, tokenizer, small_processor):
    """One valid record among bad ones: epochs go on (the rule cannot trigger on usable data), also after a resume
    in the middle of an epoch whose valid record was already consumed."""
    write_image(tmp_path / "good.png")
    lines = [grounding_line("good.png")] + [grounding_line("missing.png") for _ in range(3)]
    source = odvg_source(write_jsonl(tmp_path / "mixed.jsonl", lines), tmp_path, task="grounding")
    transform = make_transform(tokenizer, small_processor)
    stream = GLIPTrainingStream([source], transform, shuffle_buffer_size=0)
    samples = [sample for _, sample in zip(range(5), stream)]
    assert [sample["stream_state"]["epoch"] for sample in samples] == [0, 1, 2, 3, 4]
    resumed = GLIPTrainingStream([source], transform, shuffle_buffer_size=0)
    resumed.load_state_dict(samples[0]["stream_state"])  # epoch 0, after its only valid record
    assert next(iter(resumed))["stream_state"]["epoch"] == 1


def test_a_source_without_any_valid_record_is_warned_about(tmp_path, tokenizer, small_processor, monkeypatch):
    from transformers_glip.data import stream as stream_module

    write_image(tmp_path / "good.png")
    good = odvg_source(write_jsonl(tmp_path / "good.jsonl", [grounding_line("good.png")]), tmp_path, "grounding")
    bad = odvg_source(
        write_jsonl(tmp_path / "bad.jsonl", [grounding_line("missing.png")]), tmp_path, "grounding", name="bad"
    )
    warnings = []
    monkeypatch.setattr(stream_module.logger, "warning", warnings.append)
    _, samples = stream_samples([good, bad], make_transform(tokenizer, small_processor))
    assert len(samples) == 1
    assert len(warnings) == 1 and "Source 'bad'" in warnings[0] and "unreadable_image=1" in warnings[0]


def coco_with_a_bad_image(tmp_path, image_fields=None, annotation_fields=None):
    """A COCO json of a good image and one whose image entry / annotation is updated with the given fields."""
    write_image(tmp_path / "a.png")
    images = [
        {"id": 1, "file_name": "a.png", "width": 64, "height": 48},
        {"id": 2, "file_name": "a.png", "width": 64, "height": 48, **(image_fields or {})},
    ]
    annotations = [
        {"id": 4, "image_id": 1, "bbox": [1, 2, 10, 10], "category_id": 1},
        {"id": 5, "image_id": 2, "bbox": [1, 2, 10, 10], "category_id": 1, **(annotation_fields or {})},
    ]
    data = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "cat"}]}
    (tmp_path / "coco.json").write_text(json.dumps(data))
    return coco_detection_source(tmp_path / "coco.json", tmp_path, num_shards=1)


@pytest.mark.parametrize(
    "image_fields, annotation_fields, reason, detail",
    [
        ({}, {"bbox": ["a", 1, 2, 3]}, "invalid_box", "bbox of annotation 5 must be 4 numbers, got ['a', 1, 2, 3]"),
        ({}, {"bbox": ["1", "2", "10", "10"]}, "invalid_box", "must be 4 numbers"),  # not coerced to numbers
        ({}, {"bbox": [1, 2, 10]}, "invalid_box", "must be 4 numbers"),
        ({"width": "64"}, {}, "invalid_field", "width must be a positive integer, got '64'"),
        ({"height": "abc"}, {}, "invalid_field", "height must be a positive integer, got 'abc'"),  # crashed before
        ({"width": 64.5}, {}, "invalid_field", "width must be a positive integer, got 64.5"),
        ({}, {"category_id": "x"}, "invalid_field", "category_id of annotation 5 must be an integer, got 'x'"),
        ({}, {"category_id": "1"}, "invalid_field", "category_id of annotation 5 must be an integer, got '1'"),
        ({}, {"category_id": 9}, "unknown_category", "not in the source's vocabulary"),
        ({}, {"iscrowd": "0"}, "invalid_field", "iscrowd of annotation 5 must be 0 or 1"),
        ({"file_name": 3}, {}, "invalid_field", "file_name must be a string"),
        ({"file_name": None}, {}, "parse_error", "file_name is missing"),
    ],
)
def test_wrong_typed_coco_fields_are_skipped_and_counted(
    tmp_path, tokenizer, small_processor, image_fields, annotation_fields, reason, detail
):
    """Not a crash, not a silent coercion: the record is skipped under a reason, the counts and an example with the
    detail are visible in the counter (and so in the training log)."""
    source = coco_with_a_bad_image(tmp_path, image_fields, annotation_fields)
    stream, samples = stream_samples([source], make_transform(tokenizer, small_processor))
    assert [sample["sample_id"] for sample in samples] == ["coco:1"]
    assert stream.counter.skipped == {reason: 1}
    assert f"{reason}=1" in stream.counter.summary()
    (example,) = stream.counter.examples[reason]
    assert example.startswith("coco:2 (") and detail in example


@pytest.mark.parametrize(
    "line, reason, detail",
    [
        ({"width": "64"}, "invalid_field", "width must be a positive integer, got '64'"),
        ({"bbox": ["a", 1, 2, 3]}, "invalid_box", "bbox of instance 0 must be 4 numbers"),
        ({"bbox": ["1", "1", "20", "20"]}, "invalid_box", "must be 4 numbers"),
        ({"label": "x", "category": None}, "invalid_field", "label of instance 0 must be an integer, got 'x'"),
        ({"category": 3}, "invalid_field", "category of instance 0 must be a string"),
        ({"instances": "none"}, "invalid_field", "detection.instances must be a list"),
        ({"filename": ["a.png"]}, "invalid_field", "filename must be a string"),
    ],
)
def test_wrong_typed_odvg_fields_are_skipped_and_counted(tmp_path, tokenizer, small_processor, line, reason, detail):
    write_image(tmp_path / "a.png")
    instance = {"bbox": [1, 1, 20, 20], "label": 0, "category": "cat"}
    good = {"filename": "a.png", "height": 48, "width": 64, "detection": {"instances": [instance]}}
    bad = json.loads(json.dumps(good))
    for key, value in line.items():
        if key in ("width", "filename"):
            bad[key] = value
        elif key == "instances":
            bad["detection"]["instances"] = value
        else:
            bad["detection"]["instances"][0][key] = value
    source = odvg_source(write_jsonl(tmp_path / "det.jsonl", [good, bad]), tmp_path, name="odvg")
    stream, samples = stream_samples([source], make_transform(tokenizer, small_processor))
    assert len(samples) == 1 and stream.counter.skipped == {reason: 1}
    (example,) = stream.counter.examples[reason]
    assert detail in example


def test_wrong_typed_grounding_fields_are_skipped_and_counted(tmp_path, tokenizer, small_processor):
    write_image(tmp_path / "a.png")
    spans_as_strings = grounding_line("a.png")
    spans_as_strings["grounding"]["regions"][0]["tokens_positive"] = [["2", "5"]]
    numeric_caption = grounding_line("a.png")
    numeric_caption["grounding"]["caption"] = 7
    pseudo_string_score = {
        "file_name": "a.png",
        "caption": "a cat",
        "bboxes": [[1, 1, 20, 20]],
        "scores": ["0.9"],
        "tokens_positive": [[[2, 5]]],
    }
    sources = [
        odvg_source(
            write_jsonl(tmp_path / "g.jsonl", [grounding_line("a.png"), spans_as_strings, numeric_caption]),
            tmp_path,
            task="grounding",
        ),
        pseudo_label_source(write_jsonl(tmp_path / "p.jsonl", [pseudo_string_score]), tmp_path, name="pseudo"),
    ]
    stream, samples = stream_samples(sources, make_transform(tokenizer, small_processor))
    # 3 odvg records, the one-record pseudo source twice ("all_exhausted" oversamples it): 4 skipped, 1 kept.
    assert len(samples) == 1 and stream.counter.skipped == {"invalid_field": 4}
    report = " ".join(stream.counter.examples["invalid_field"])
    assert "tokens_positive of region 0 must hold [begin, end] integer spans" in report
    assert "grounding.caption must be a string" in report and "scores of entity 0 must be numbers" in report


class _ImageServer:
    """A loopback-only http server (127.0.0.1, a free port): `/good.png` is an image, `/slow.png` answers after 2 s,
    everything else is 404."""

    def __init__(self, png_bytes):
        import http.server
        import threading
        import time

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/slow.png":
                    time.sleep(2)
                if self.path in ("/good.png", "/slow.png"):
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.send_header("Content-Length", str(len(png_bytes)))
                    self.end_headers()
                    self.wfile.write(png_bytes)
                else:
                    self.send_error(404, "Not Found")

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

            def handle_error(self, request, client_address):
                pass  # the slow answer goes to a client that timed out (broken pipe): expected

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_image_urls_404_and_timeouts_are_counted_not_hung(tmp_path, tokenizer, small_processor, monkeypatch):
    """Records whose image is an http URL: a 404 and a server slower than `image_timeout` are counted as
    `unreadable_image` (with the http error), in bounded time; a good URL trains."""
    import io
    import time

    for variable in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 120, 120)).save(buffer, format="PNG")
    server = _ImageServer(buffer.getvalue())
    try:
        lines = [grounding_line(f"{server.url}/{name}.png") for name in ("good", "missing", "slow")]
        source = odvg_source(write_jsonl(tmp_path / "urls.jsonl", lines), None, task="grounding")
        transform = make_transform(tokenizer, small_processor, image_timeout=0.5)
        start = time.monotonic()
        stream, samples = stream_samples([source], transform)
        elapsed = time.monotonic() - start
    finally:
        server.close()
    assert len(samples) == 1 and samples[0]["pixel_values"].shape[0] == 3
    assert stream.counter.skipped == {"unreadable_image": 2}
    report = " ".join(stream.counter.examples["unreadable_image"])
    assert "HTTP Error 404" in report and "timed out" in report
    assert elapsed < 10, elapsed


# ------------------------------------------------------------------------------------------------ argument checks


@pytest.fixture
def coco_file(tmp_path):
    write_image(tmp_path / "a.png")
    data = {"images": [{"id": 1, "file_name": "a.png"}], "annotations": [], "categories": [{"id": 1, "name": "a"}]}
    (tmp_path / "coco.json").write_text(json.dumps(data))
    return tmp_path / "coco.json"


def test_source_constructors_check_their_arguments(tmp_path, coco_file, synthetic_world):
    with pytest.raises(FileNotFoundError, match="annotation_file='.*nothing.json' is not a file"):
        coco_detection_source(tmp_path / "nothing.json", tmp_path)
    with pytest.raises(FileNotFoundError, match="image_dir='.*no_images' is not a folder"):
        coco_detection_source(coco_file, tmp_path / "no_images")
    with pytest.raises(ValueError, match="num_shards must be an integer >= 1, got 0"):
        coco_detection_source(coco_file, tmp_path, num_shards=0)
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        mdetr_grounding_source(coco_file, tmp_path, name="")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ValueError, match="must hold a COCO json object"):
        coco_detection_source(tmp_path / "list.json", tmp_path)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="broken.json is not valid json"):
        coco_detection_source(tmp_path / "broken.json", tmp_path)
    (tmp_path / "no_images.json").write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    with pytest.raises(ValueError, match="lists no images"):
        coco_detection_source(tmp_path / "no_images.json", tmp_path)
    bad_category = {"images": [{"id": 1}], "categories": [{"id": "1", "name": "cat"}]}
    (tmp_path / "bad_category.json").write_text(json.dumps(bad_category))
    with pytest.raises(ValueError, match=r"categories\[0\] needs an integer 'id'"):
        coco_detection_source(tmp_path / "bad_category.json", tmp_path)
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="task must be 'detection' or 'grounding'"):
        odvg_source(tmp_path / "empty.jsonl", tmp_path, task="segmentation")
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        odvg_source(tmp_path / "missing.jsonl", tmp_path)
    with pytest.raises(ValueError, match="files is empty"):
        odvg_source([], tmp_path)
    (tmp_path / "label_map.json").write_text(json.dumps({"person": 0}))
    with pytest.raises(ValueError, match="must map an integer label"):
        odvg_source(tmp_path / "empty.jsonl", tmp_path, label_map_file=tmp_path / "label_map.json")
    with pytest.raises(ValueError, match="shards_per_file must be an integer >= 1"):
        odvg_source(tmp_path / "empty.jsonl", tmp_path, shards_per_file=0)
    with pytest.raises(ValueError, match=r"score_threshold must be a number in \[0, 1\]"):
        pseudo_label_source(tmp_path / "empty.jsonl", tmp_path, score_threshold=5)
    with pytest.raises(FileNotFoundError, match="no metadata.json"):
        synthetic_shapes_source(tmp_path)
    with pytest.raises(ValueError, match="split must be one of"):
        synthetic_shapes_source(synthetic_world, split="test")


def test_stream_transform_and_collator_check_their_arguments(tokenizer, small_processor, synthetic_world):
    source = synthetic_shapes_source(synthetic_world, "train", task="detection")
    transform = make_transform(tokenizer, small_processor)
    other = synthetic_shapes_source(synthetic_world, "train", task="grounding")
    with pytest.raises(ValueError, match="sum to 0"):
        GLIPTrainingStream([source, other], transform, probabilities=[0, 0])
    with pytest.raises(ValueError, match="one non-negative ratio per source"):
        GLIPTrainingStream([source, other], transform, probabilities=[1, float("nan")])
    with pytest.raises(ValueError, match="rank must be < world_size"):
        GLIPTrainingStream([source], transform, rank=2, world_size=2)
    with pytest.raises(ValueError, match="max_epochs must be None"):
        GLIPTrainingStream([source], transform, max_epochs=0)
    with pytest.raises(ValueError, match="shuffle_buffer_size must be an integer >= 0"):
        GLIPTrainingStream([source], transform, shuffle_buffer_size=-1)
    with pytest.raises(ValueError, match="stopping_strategy must be one of"):
        GLIPTrainingStream([source, other], transform, stopping_strategy="never")
    with pytest.raises(TypeError, match=r"sources\[0\] must be a GroundingSource"):
        GLIPTrainingStream([source.dataset], transform)
    with pytest.raises(TypeError, match="transform must be"):
        GLIPTrainingStream([source], "transform")
    with pytest.raises(ValueError, match="Need at least one source"):
        GLIPTrainingStream([], transform)

    class SlowTokenizer:
        is_fast = False

    with pytest.raises(TypeError, match="fast tokenizer"):
        GLIPTrainingTransform(SlowTokenizer(), small_processor)
    with pytest.raises(TypeError, match="image_processor must be a GLIPImageProcessor"):
        GLIPTrainingTransform(tokenizer, object())
    for keyword, value, message in (
        ("max_length", 2, "max_length must be >= 3"),
        ("num_negatives", -1, "num_negatives must be >= 0"),
        ("full_negative_probability", 1.5, r"full_negative_probability must be in \[0, 1\]"),
        ("box_tolerance", float("nan"), "box_tolerance must be >= 0"),
        ("image_timeout", 0, "image_timeout must be > 0"),
        ("separator", "", "separator must be a non-empty string"),
    ):
        with pytest.raises(ValueError, match=message):
            GLIPTrainingTransform(tokenizer, small_processor, **{keyword: value})
    with pytest.raises(ValueError, match="size_divisibility must be an integer >= 0"):
        GLIPTrainingCollator(size_divisibility=-32)
