#!/usr/bin/env python
"""One runnable example per training-data format: write a tiny local shard of it, stream two records through the
library reader, print them (the same calls the README shows).

    python examples/source_formats.py --output_dir out/source_formats
    python examples/source_formats.py --hub_dataset OWNER/NAME   # also a Hub id in the 🤗 detection schema (network)

Formats (reader call; the `examples/pretrain.py` or `examples/pseudo_label.py` argument that uses it):

* image-caption parquet shards: `image_caption_source("captions-parquet/")`; `pseudo_label.py --data DIR`
* image-caption webdataset tars (img2dataset layout): `image_caption_source("captions-wds/")`; `--data DIR`
* a Hub dataset id: `image_caption_source("owner/name")`, `detection_dataset_source("owner/name")`;
  `pseudo_label.py --data owner/name`, `pretrain.py --dataset hf_detection owner/name`
* the 🤗 object-detection schema: `detection_dataset_source("detection.parquet")`; `--dataset hf_detection FILE`
* GLIP pseudo-label jsonl: `pseudo_label_source("pseudo.jsonl", "images/", 0.5)`; `--dataset pseudo_label FILE DIR`
* COCO detection json: `coco_detection_source("coco.json", "images/")`; `--dataset coco FILE DIR`
* MDETR / GoldG grounding json: `mdetr_grounding_source("mdetr.json", "images/")`; `--dataset mdetr FILE DIR`
* ODVG jsonl: `odvg_source("odvg.jsonl", "images/", "detection", "label_map.json")`;
  `--dataset odvg_detection FILE DIR --odvg_label_map label_map.json`

Every reader returns a `GroundingSource` whose records share one schema (`transformers_glip.data.records`), so any
of them mix in `GLIPTrainingStream` / `pretrain.py --dataset ... --dataset_ratios ...`.
"""

import argparse
import io
import json
import os
import tarfile

from PIL import Image, ImageDraw

from transformers_glip.data import (
    coco_detection_source,
    detection_dataset_source,
    image_caption_source,
    mdetr_grounding_source,
    odvg_source,
    pseudo_label_source,
)

__all__ = ["FORMATS", "main", "write_all"]

CATEGORIES = ["red square", "blue circle"]
CAPTION = "a red square next to a blue circle"
# (begin, end) of the two phrases of CAPTION
RED_SQUARE, BLUE_CIRCLE = [2, 12], [23, 34]
# Inclusive xyxy boxes of the two shapes of every picture (x2 = x + w - 1).
BOXES = [[4.0, 6.0, 19.0, 21.0], [30.0, 8.0, 43.0, 21.0]]


def picture(index: int) -> Image.Image:
    """A 48 x 32 picture: a red square and a blue circle on grey (a different grey per index)."""
    image = Image.new("RGB", (48, 32), (100 + 20 * index, 100, 100))
    draw = ImageDraw.Draw(image)
    draw.rectangle(BOXES[0], fill=(220, 40, 40))
    draw.ellipse(BOXES[1], fill=(45, 85, 225))
    return image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def coco_box(box: list[float]) -> list[float]:
    """Inclusive xyxy -> COCO xywh (`w = x2 - x1 + 1`)."""
    return [box[0], box[1], box[2] - box[0] + 1, box[3] - box[1] + 1]


def write_images(directory: str, count: int = 2) -> list[str]:
    os.makedirs(directory, exist_ok=True)
    names = []
    for index in range(count):
        names.append(f"{index:06d}.png")
        picture(index).save(os.path.join(directory, names[-1]))
    return names


def write_caption_parquet(directory: str) -> None:
    """Two parquet shards of image-caption pairs (🤗 `Image` column + `caption`), as `Dataset.to_parquet` writes."""
    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature

    os.makedirs(directory, exist_ok=True)
    features = Features({"image": ImageFeature(), "caption": Value("string")})
    for shard in range(2):
        rows = {
            "image": [{"bytes": png_bytes(picture(shard)), "path": None}],
            "caption": [f"{CAPTION} ({shard})"],
        }
        path = os.path.join(directory, f"train-{shard:05d}-of-00002.parquet")
        Dataset.from_dict(rows, features=features).to_parquet(path)


def write_webdataset(directory: str) -> None:
    """Two tar shards in the img2dataset layout: `KEY.png` + `KEY.txt` (caption) + `KEY.json` (metadata)."""
    os.makedirs(directory, exist_ok=True)
    for shard in range(2):
        with tarfile.open(os.path.join(directory, f"{shard:05d}.tar"), "w") as tar:
            key = f"{shard:05d}0000"
            members = {
                "png": png_bytes(picture(shard)),
                "txt": CAPTION.encode("utf-8"),
                "json": json.dumps({"key": key, "caption": CAPTION, "status": "success"}).encode("utf-8"),
            }
            for extension, data in members.items():
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def write_hf_detection(path: str) -> None:
    """The 🤗 object-detection schema of the transformers detection guide: `image`, `image_id`, `width`, `height`,
    `objects: {"bbox": COCO xywh, "category": ClassLabel}`."""
    from datasets import ClassLabel, Dataset, Features, List, Value
    from datasets import Image as ImageFeature

    features = Features(
        {
            "image_id": Value("int64"),
            "image": ImageFeature(),
            "width": Value("int32"),
            "height": Value("int32"),
            "objects": {
                "bbox": List(List(Value("float32"), length=4)),
                "category": List(ClassLabel(names=CATEGORIES)),
            },
        }
    )
    rows = {
        "image_id": [0, 1],
        "image": [{"bytes": png_bytes(picture(index)), "path": None} for index in range(2)],
        "width": [48, 48],
        "height": [32, 32],
        "objects": [{"bbox": [coco_box(box) for box in BOXES], "category": [0, 1]} for _ in range(2)],
    }
    Dataset.from_dict(rows, features=features).to_parquet(path)


def write_pseudo_labels(path: str, names: list[str]) -> None:
    """GLIP pseudo-label jsonl (format v1, one entry per box, what `examples/pseudo_label.py` writes)."""
    with open(path, "w") as handle:
        for name in names:
            row = {
                "file_name": name,
                "caption": CAPTION,
                "img_w": 48,
                "img_h": 32,
                "bboxes": BOXES,
                "scores": [0.9, 0.4],  # the second box is below the 0.5 threshold: dropped and counted
                "tokens_positive": [[RED_SQUARE], [BLUE_CIRCLE]],
            }
            handle.write(json.dumps(row) + "\n")


def write_coco(path: str, names: list[str], grounding: bool) -> None:
    """COCO detection json, or (grounding) the MDETR / GoldG json: one caption per image and `tokens_positive`
    per annotation."""
    images, annotations = [], []
    for image_id, name in enumerate(names):
        image = {"id": image_id, "file_name": name, "width": 48, "height": 32}
        if grounding:
            image["caption"] = CAPTION
        images.append(image)
        for category_id, (box, span) in enumerate(zip(BOXES, [RED_SQUARE, BLUE_CIRCLE]), start=1):
            annotation = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "bbox": coco_box(box),
                "area": coco_box(box)[2] * coco_box(box)[3],
                "iscrowd": 0,
                "category_id": category_id,
            }
            if grounding:
                annotation["tokens_positive"] = [span]
            annotations.append(annotation)
    categories = [{"id": index, "name": name} for index, name in enumerate(CATEGORIES, start=1)]
    with open(path, "w") as handle:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, handle)


def write_odvg(path: str, label_map_path: str, names: list[str]) -> None:
    """ODVG detection jsonl (boxes xyxy) and its `label_map.json`."""
    with open(path, "w") as handle:
        for name in names:
            instances = [
                {"bbox": box, "label": label, "category": CATEGORIES[label]} for label, box in enumerate(BOXES)
            ]
            row = {"filename": name, "height": 32, "width": 48, "detection": {"instances": instances}}
            handle.write(json.dumps(row) + "\n")
    with open(label_map_path, "w") as handle:
        json.dump({str(index): name for index, name in enumerate(CATEGORIES)}, handle)


def write_all(output_dir: str) -> None:
    """A tiny shard of every local format under `output_dir`."""
    names = write_images(os.path.join(output_dir, "images"))
    write_caption_parquet(os.path.join(output_dir, "captions-parquet"))
    write_webdataset(os.path.join(output_dir, "captions-wds"))
    write_hf_detection(os.path.join(output_dir, "detection.parquet"))
    write_pseudo_labels(os.path.join(output_dir, "pseudo.jsonl"), names)
    write_coco(os.path.join(output_dir, "coco.json"), names, grounding=False)
    write_coco(os.path.join(output_dir, "mdetr.json"), names, grounding=True)
    write_odvg(os.path.join(output_dir, "odvg.jsonl"), os.path.join(output_dir, "label_map.json"), names)


# name -> (the reader call as the README shows it, the call itself on a folder written by `write_all`)
FORMATS = {
    "image-caption parquet shards": (
        'image_caption_source("captions-parquet/")',
        lambda root: image_caption_source(os.path.join(root, "captions-parquet")),
    ),
    "image-caption webdataset tar shards (img2dataset)": (
        'image_caption_source("captions-wds/")',
        lambda root: image_caption_source(os.path.join(root, "captions-wds")),
    ),
    "HF object-detection schema": (
        'detection_dataset_source("detection.parquet")',
        lambda root: detection_dataset_source(os.path.join(root, "detection.parquet")),
    ),
    "GLIP pseudo-label jsonl": (
        'pseudo_label_source("pseudo.jsonl", "images/", score_threshold=0.5)',
        lambda root: pseudo_label_source(os.path.join(root, "pseudo.jsonl"), os.path.join(root, "images"), 0.5),
    ),
    "COCO detection json": (
        'coco_detection_source("coco.json", "images/")',
        lambda root: coco_detection_source(os.path.join(root, "coco.json"), os.path.join(root, "images")),
    ),
    "MDETR grounding json": (
        'mdetr_grounding_source("mdetr.json", "images/")',
        lambda root: mdetr_grounding_source(os.path.join(root, "mdetr.json"), os.path.join(root, "images")),
    ),
    "ODVG jsonl": (
        'odvg_source("odvg.jsonl", "images/", task="detection", label_map_file="label_map.json")',
        lambda root: odvg_source(
            os.path.join(root, "odvg.jsonl"),
            os.path.join(root, "images"),
            task="detection",
            label_map_file=os.path.join(root, "label_map.json"),
        ),
    ),
}


def describe(record: dict) -> dict:
    """The fields of a record worth printing (the image as its path or its byte count)."""
    image = record["image"]
    shown = {key: record[key] for key in ("sample_id", "task", "caption", "labels", "boxes", "tokens_positive")}
    shown["image"] = image["path"] if not image.get("bytes") else f"<{len(image['bytes'])} bytes>"
    shown["scores"] = [round(score, 3) for score in record["scores"]]
    if record["error"]:
        shown["error"] = record["error"]
    return shown


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="out/source_formats")
    parser.add_argument("--num_records", type=int, default=2, help="Records streamed from each source.")
    parser.add_argument(
        "--hub_dataset", help="Also stream a Hub dataset id in the 🤗 detection schema (needs the network)."
    )
    args = parser.parse_args(argv)
    if args.num_records < 1:
        parser.error(f"--num_records must be >= 1, got {args.num_records}.")
    write_all(args.output_dir)
    formats = dict(FORMATS)
    if args.hub_dataset:
        formats[f"Hub dataset id {args.hub_dataset}"] = (
            f'detection_dataset_source("{args.hub_dataset}")',
            lambda root: detection_dataset_source(args.hub_dataset),
        )
    streamed = {}
    for name, (call, reader) in formats.items():
        source = reader(args.output_dir)
        records = [describe(record) for record in source.dataset.take(args.num_records)]
        streamed[name] = {"call": call, "vocabulary": source.vocabulary, "records": records}
        print(f"## {name}\n{call}   # vocabulary: {source.vocabulary}")
        for record in records:
            print("  " + json.dumps(record))
    return streamed


if __name__ == "__main__":
    main()
