"""Sources streamed with 🤗 datasets: parquet / webdataset image-caption shards and the 🤗 object-detection schema."""

import io
import json
import tarfile

import pytest
import torch
from datasets import ClassLabel, Dataset, Features, List, Value
from datasets import Image as ImageFeature
from datasets.distributed import split_dataset_by_node
from PIL import Image, ImageDraw
from transformers import BertTokenizer

from transformers_glip.data import (
    GLIPTrainingStream,
    GLIPTrainingTransform,
    grounding_record_features,
    odvg_source,
)
from transformers_glip.data.streaming import (
    detection_dataset_source,
    image_caption_source,
    load_streaming_dataset,
)
from transformers_glip.image_processing_glip import GLIPImageProcessor

TOKENIZER_PATH = "tests/fixtures/tiny_a/bert"
CATEGORIES = ["cat", "dog", "traffic light"]


def image_bytes(color, size=(40, 30), image_format="JPEG") -> bytes:
    image = Image.new("RGB", size, (120, 120, 120))
    ImageDraw.Draw(image).rectangle((5, 5, 20, 15), fill=color)
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def write_caption_parquet(directory, num_shards=2, per_shard=3) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    features = Features({"image": ImageFeature(), "caption": Value("string")})
    paths = []
    for shard in range(num_shards):
        rows = {
            "image": [{"bytes": image_bytes((shard * 90, row * 60, 0)), "path": None} for row in range(per_shard)],
            "caption": [f"a red square on a grey wall {shard}-{row}" for row in range(per_shard)],
        }
        path = directory / f"train-{shard:05d}-of-{num_shards:05d}.parquet"
        Dataset.from_dict(rows, features=features).to_parquet(str(path))
        paths.append(str(path))
    return paths


def write_webdataset(directory, num_shards=2, per_shard=3, caption_in="txt") -> list[str]:
    """img2dataset layout: `<shard><index>.jpg` + `.txt` (caption) + `.json` (metadata with the caption)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for shard in range(num_shards):
        path = directory / f"{shard:05d}.tar"
        with tarfile.open(path, "w") as tar:
            for index in range(per_shard):
                key = f"{shard:05d}{index:04d}"
                members = {"jpg": image_bytes((0, 0, 40 + index * 60))}
                caption = f"a blue dog and a tree {shard}-{index}"
                metadata = {"key": key, "status": "success", "caption": caption, "width": 999}
                if caption_in == "txt":
                    members["txt"] = caption.encode()
                members["json"] = json.dumps(metadata).encode()
                for extension, data in members.items():
                    info = tarfile.TarInfo(f"{key}.{extension}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        paths.append(str(path))
    return paths


def write_detection_parquet(path, objects_as_list=False) -> None:
    """The 🤗 object-detection schema (cppe-5 style): ClassLabel categories, COCO xywh boxes."""
    category = ClassLabel(names=CATEGORIES)
    box = List(Value("float32"), length=4)
    if objects_as_list:
        objects = List({"bbox": box, "category": category})
    else:
        objects = {"bbox": List(box), "category": List(category)}
    features = Features(
        {
            "image_id": Value("int64"),
            "image": ImageFeature(),
            "width": Value("int32"),
            "height": Value("int32"),
            "objects": objects,
        }
    )
    boxes = [[[5.0, 5.0, 16.0, 11.0], [0.0, 0.0, 10.0, 10.0]], [[20.0, 10.0, 4.0, 8.0]]]
    labels = [[0, 2], [1]]
    if objects_as_list:
        object_rows = [
            [{"bbox": box_values, "category": label} for box_values, label in zip(image_boxes, image_labels)]
            for image_boxes, image_labels in zip(boxes, labels)
        ]
    else:
        object_rows = [
            {"bbox": image_boxes, "category": image_labels} for image_boxes, image_labels in zip(boxes, labels)
        ]
    rows = {
        "image_id": [11, 12],
        "image": [
            {"bytes": image_bytes((200, 0, 0)), "path": None},
            {"bytes": image_bytes((0, 200, 0)), "path": None},
        ],
        "width": [40, 40],
        "height": [30, 30],
        "objects": object_rows,
    }
    Dataset.from_dict(rows, features=features).to_parquet(str(path))


def records(source) -> list[dict]:
    return list(source.dataset)


def assert_common_schema(source) -> None:
    assert source.dataset.features == grounding_record_features()


# ------------------------------------------------------------------------------------------------ caption sources


def test_parquet_caption_shards(tmp_path):
    write_caption_parquet(tmp_path / "captions")
    source = image_caption_source(tmp_path / "captions", name="cc")
    assert_common_schema(source)
    assert source.dataset.num_shards == 2
    rows = records(source)
    assert [row["sample_id"] for row in rows] == [f"cc:{shard}:{row}" for shard in range(2) for row in range(3)]
    assert rows[4]["caption"] == "a red square on a grey wall 1-1"
    assert all(row["task"] == "grounding" and row["boxes"] == [] and row["error"] == "" for row in rows)
    decoded = Image.open(io.BytesIO(rows[0]["image"]["bytes"]))
    assert decoded.size == (40, 30)
    # Ids do not depend on which shards a process reads, nor on shuffling; processes get whole, disjoint files.
    second_shard = list(source.dataset.shard(num_shards=2, index=1))
    assert [row["sample_id"] for row in second_shard] == [f"cc:1:{row}" for row in range(3)]
    shuffled = source.dataset.shuffle(seed=0, buffer_size=4)
    by_id = {row["sample_id"]: row["caption"] for row in rows}
    assert {row["sample_id"]: row["caption"] for row in shuffled} == by_id
    parts = [
        [row["sample_id"] for row in split_dataset_by_node(shuffled, rank=rank, world_size=2)] for rank in range(2)
    ]
    assert sorted(parts[0] + parts[1]) == sorted(by_id) and {part[0].split(":")[1] for part in parts} == {"0", "1"}


def test_parquet_with_path_and_binary_columns(tmp_path):
    """Plain parquet (not written by 🤗 datasets): a path column relative to `image_dir`, or raw image bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(image_bytes((1, 2, 3), image_format="PNG"))
    pq.write_table(
        pa.table({"key": ["k0"], "file_name": ["a.png"], "text": ["one cat"]}), str(tmp_path / "paths.parquet")
    )
    source = image_caption_source(tmp_path / "paths.parquet", image_dir=tmp_path / "images", name="p")
    (row,) = records(source)
    assert row["sample_id"] == "p:k0" and row["caption"] == "one cat"
    assert row["image"]["path"] == str(tmp_path / "images" / "a.png")

    pq.write_table(
        pa.table({"jpg": [image_bytes((9, 9, 9))], "caption": ["two dogs"]}), str(tmp_path / "binary.parquet")
    )
    (row,) = records(image_caption_source(tmp_path / "binary.parquet", name="b"))
    assert Image.open(io.BytesIO(row["image"]["bytes"])).size == (40, 30)


def test_webdataset_img2dataset_layout(tmp_path):
    files = write_webdataset(tmp_path / "wds")
    source = image_caption_source(tmp_path / "wds", name="web")
    assert_common_schema(source)
    assert source.dataset.num_shards == 2
    rows = records(source)
    assert [row["sample_id"] for row in rows] == [
        f"web:{shard:05d}.tar:{shard:05d}{index:04d}" for shard in range(2) for index in range(3)
    ]
    assert rows[5]["caption"] == "a blue dog and a tree 1-2"
    assert rows[0]["width"] == -1  # img2dataset's json size is not trusted (checked against the decoded image)
    assert Image.open(io.BytesIO(rows[0]["image"]["bytes"])).format == "JPEG"
    # Same data through an explicit file list and builder.
    same = image_caption_source(files, name="web", builder="webdataset")
    assert [row["sample_id"] for row in records(same)] == [row["sample_id"] for row in rows]


def test_webdataset_caption_from_json_sidecar(tmp_path):
    write_webdataset(tmp_path / "wds", num_shards=1, caption_in="json")
    rows = records(image_caption_source(tmp_path / "wds", name="web"))
    assert [row["caption"] for row in rows] == [f"a blue dog and a tree 0-{index}" for index in range(3)]


def test_caption_source_errors(tmp_path):
    write_caption_parquet(tmp_path / "captions", num_shards=1)
    with pytest.raises(ValueError, match="caption_column"):
        image_caption_source(tmp_path / "captions", caption_column="alt")
    with pytest.raises(ValueError, match="neither an existing file"):
        image_caption_source(tmp_path / "missing" / "x.parquet")
    with pytest.raises(ValueError, match="matches no files"):
        image_caption_source(str(tmp_path / "*.tar"))
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "a.json").write_text("{}")
    (tmp_path / "mixed" / "b.tar").write_bytes(b"")
    with pytest.raises(ValueError, match="mixes formats"):
        load_streaming_dataset(tmp_path / "mixed")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="Cannot tell the format"):
        load_streaming_dataset(tmp_path / "notes.txt")


def test_hub_ids_go_to_load_dataset(monkeypatch):
    """A Hub id is passed to `load_dataset(id, streaming=True)` itself (no network in tests)."""
    import datasets

    calls = []

    def fake_load_dataset(path, **kwargs):
        calls.append((path, kwargs))
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    with pytest.raises(ConnectionError):
        image_caption_source("someone/cc3m-wds", revision="main")
    assert calls == [("someone/cc3m-wds", {"split": "train", "streaming": True, "revision": "main"})]


# ------------------------------------------------------------------------------------------------ detection schema


@pytest.mark.parametrize("objects_as_list", [False, True])
def test_hf_object_detection_schema(tmp_path, objects_as_list):
    write_detection_parquet(tmp_path / "cppe.parquet", objects_as_list=objects_as_list)
    source = detection_dataset_source(tmp_path / "cppe.parquet", name="cppe")
    assert_common_schema(source)
    assert source.vocabulary == CATEGORIES
    first, second = records(source)
    assert first["sample_id"] == "cppe:11" and first["task"] == "detection"
    # COCO xywh -> inclusive xyxy (x2 = x + w - 1), ClassLabel ids -> names.
    assert first["boxes"] == [[5.0, 5.0, 20.0, 15.0], [0.0, 0.0, 9.0, 9.0]]
    assert first["labels"] == ["cat", "traffic light"] and first["scores"] == [1.0, 1.0]
    assert (first["width"], first["height"]) == (40, 30)
    assert second["boxes"] == [[20.0, 10.0, 23.0, 17.0]] and second["labels"] == ["dog"]
    as_xyxy = detection_dataset_source(tmp_path / "cppe.parquet", name="cppe", bbox_format="xyxy")
    assert records(as_xyxy)[1]["boxes"] == [[20.0, 10.0, 4.0, 8.0]]


def test_detection_schema_with_string_categories_and_errors(tmp_path):
    (tmp_path / "det.jsonl").write_text(
        "\n".join(
            json.dumps(row)
            for row in [
                {"image": "a.png", "objects": {"bbox": [[1, 1, 4, 4]], "category": ["zebra"]}},
                {"image": "a.png", "objects": {"bbox": [[1, 1, 4, 4], [2, 2, 2]], "category": ["ant", "zebra"]}},
                {"image": "a.png", "objects": {"bbox": [[1, 1, 4, 4]], "category": ["ant", "zebra"]}},
            ]
        )
    )
    source = detection_dataset_source(tmp_path / "det.jsonl", name="det", image_dir=tmp_path)
    assert source.vocabulary == ["ant", "zebra"]
    first, second, third = records(source)
    assert first["labels"] == ["zebra"] and first["image"]["path"] == str(tmp_path / "a.png")
    assert all(value != value for value in second["boxes"][1])  # malformed box -> NaNs (counted as invalid_box)
    assert third["error"].startswith("parse_error")
    with pytest.raises(ValueError, match="bbox_format"):
        detection_dataset_source(tmp_path / "det.jsonl", bbox_format="cxcywh")
    with pytest.raises(ValueError, match="objects_column"):
        detection_dataset_source(tmp_path / "det.jsonl", objects_column="annotations")
    (tmp_path / "ids.jsonl").write_text(
        json.dumps({"image": "a.png", "objects": {"bbox": [[1, 1, 2, 2]], "category": [3]}})
    )
    with pytest.raises(ValueError, match="pass `categories`"):
        detection_dataset_source(tmp_path / "ids.jsonl")
    assert detection_dataset_source(tmp_path / "ids.jsonl", categories=["a", "b", "c", "d"]).vocabulary[3] == "d"


# ------------------------------------------------------------------------------------------------ mixing


def test_streamed_sources_mix_with_existing_readers(tmp_path):
    """Streamed detection + caption sources and an ODVG jsonl go through one `GLIPTrainingStream`; caption-only
    records have no boxes and are skipped as `no_boxes` (they feed the pseudo-labeller, not the student)."""
    write_detection_parquet(tmp_path / "cppe.parquet")
    write_caption_parquet(tmp_path / "captions", num_shards=1, per_shard=2)
    image = Image.new("RGB", (40, 30), (100, 100, 100))
    image.save(tmp_path / "odvg.png")
    line = {"filename": "odvg.png", "height": 30, "width": 40, "detection": {"instances": [
        {"bbox": [2, 2, 20, 20], "label": 0, "category": "cat"}]}}  # fmt: skip
    (tmp_path / "odvg.jsonl").write_text(json.dumps(line) + "\n")
    sources = [
        detection_dataset_source(tmp_path / "cppe.parquet", name="cppe"),
        image_caption_source(tmp_path / "captions", name="cc"),
        odvg_source(tmp_path / "odvg.jsonl", tmp_path, name="odvg"),
    ]
    transform = GLIPTrainingTransform(
        BertTokenizer.from_pretrained(TOKENIZER_PATH),
        GLIPImageProcessor(min_size=32, max_size=64, train_min_sizes=[32], horizontal_flip_probability=0.0),
        max_length=32,
    )
    stream = GLIPTrainingStream(sources, transform, shuffle_buffer_size=0, max_epochs=1)
    samples = list(stream)
    # (`all_exhausted` mixing repeats the smaller sources until every source was seen completely.)
    assert {sample["sample_id"] for sample in samples} == {"cppe:11", "cppe:12", "odvg:0:0"}
    assert set(stream.counter.skipped) == {"no_boxes"} and stream.counter.skipped["no_boxes"] >= 2
    cat = next(sample for sample in samples if sample["sample_id"] == "cppe:11")
    assert cat["boxes"].shape == (2, 4) and torch.isfinite(cat["boxes"]).all()
