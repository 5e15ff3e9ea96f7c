"""A grounding world the project generates itself: coloured shapes on varied backgrounds.

Every image shows one to four non-overlapping shapes (circle, square, triangle, ...) in one of several colours
and sizes, on a solid, gradient or noise background whose colours are grey-ish so they never look like a shape
colour. Each record carries both annotation styles GLIP trains on:

* detection: one category name per box (`"red circle"`), the vocabulary being all colour-shape combinations seen
  in the split;
* grounding: a caption such as `"a small red circle to the left of a blue square"` with the exact character span
  of every mentioned box's phrase (`"small red circle"`, `"blue square"`), MDETR style (`tokens_positive`, end
  exclusive); some captions mention only some of the objects (the others are background for that caption).

Some colour-shape combinations (`held_out_combinations`) never appear in the training split, neither in images
nor in captions; the validation split draws from all combinations, so it measures both ordinary held-out
accuracy and compositional generalisation.

Records are written as jsonl shards next to png files, so training streams them with
`load_dataset("json", data_files=..., streaming=True)` (see `transformers_glip.data.sources.synthetic_shapes_source`).
(Not parquet: datasets 5.2 sleeps 5 s whenever a parquet stream's reader threads shut down, i.e. at every epoch end.)
Generation is deterministic given the seed: sample `i` of a split is drawn from its own generator seeded with
`(seed, split, i)`, independent of sharding.

Boxes are xyxy in original image pixels with the legacy inclusive convention of the official code (a shape
covering pixel columns 10..19 has `x1 = 10, x2 = 19`, width `x2 - x1 + 1 = 10`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "COLOR_VALUES",
    "NOVEL_SHAPE_NAMES",
    "SHAPE_NAMES",
    "SIZE_RANGES",
    "SyntheticShapesConfig",
    "category_names",
    "draw_shape",
    "generate_caption_only_split",
    "generate_synthetic_shapes",
    "make_caption",
    "novel_shapes_config",
    "read_synthetic_metadata",
    "render_sample",
    "synthetic_features",
]

SHAPE_NAMES = ("circle", "square", "triangle")
# Shapes the default world never draws (not even as distractors): the categories of a "novel task" world for
# transfer experiments (`novel_shapes_config`, `examples/transfer.py`).
NOVEL_SHAPE_NAMES = ("star", "diamond", "cross")

# Saturated, mutually distinct colours (RGB); backgrounds are drawn with low saturation so they never match.
COLOR_VALUES = {
    "red": (220, 40, 40),
    "green": (40, 175, 60),
    "blue": (45, 85, 225),
    "yellow": (235, 210, 40),
}

# Colours of unlabelled distractor shapes (never named in any prompt): purple, orange, cyan.
DISTRACTOR_COLOR_VALUES = ((150, 60, 200), (245, 140, 30), (40, 200, 210))

# Side length in pixels of the shape's bounding square, per size word, for images of 128-192 pixels.
SIZE_RANGES = {
    "small": (16, 24),
    "medium": (28, 38),
    "large": (42, 56),
}

SPLIT_INDEX = {"train": 0, "validation": 1}
METADATA_FILE = "metadata.json"
FORMAT_VERSION = 5


@dataclass
class SyntheticShapesConfig:
    """What to generate.

    Args:
        seed: Base seed; sample `i` of split `s` uses `numpy.random.default_rng([seed, s, i])`.
        num_train: Number of training images.
        num_validation: Number of held-out validation images.
        num_train_shards: jsonl files of the training split (>= the number of training processes, so
            `split_dataset_by_node` can hand whole shards to each process).
        num_validation_shards: jsonl files of the validation split.
        min_image_size / max_image_size: Width and height are drawn independently in this range (pixels).
        min_objects / max_objects: Shapes per image.
        shapes / colors / sizes: The vocabularies (names must be keys of the drawing tables).
        held_out_combinations: `(color, shape)` pairs that never appear in the training split.
        caption_mention_all_probability: Probability that a caption mentions every object (otherwise some
            colour-shape combinations are left out, and their objects are background for that caption).
        max_distractors: Up to this many unlabelled shapes per image in colours outside the vocabulary.
    """

    seed: int = 0
    num_train: int = 4000
    num_validation: int = 200
    num_train_shards: int = 4
    num_validation_shards: int = 1
    min_image_size: int = 128
    max_image_size: int = 192
    min_objects: int = 1
    max_objects: int = 4
    shapes: tuple[str, ...] = SHAPE_NAMES
    colors: tuple[str, ...] = tuple(COLOR_VALUES)
    sizes: tuple[str, ...] = tuple(SIZE_RANGES)
    held_out_combinations: tuple[tuple[str, str], ...] = field(
        default_factory=lambda: (("red", "triangle"), ("blue", "circle"))
    )
    caption_mention_all_probability: float = 0.5
    max_distractors: int = 2

    def __post_init__(self):
        self.shapes = tuple(self.shapes)
        self.colors = tuple(self.colors)
        self.sizes = tuple(self.sizes)
        self.held_out_combinations = tuple(tuple(pair) for pair in self.held_out_combinations)
        for name in self.shapes:
            if name not in _SHAPE_DRAWERS:
                raise ValueError(f"Unknown shape {name!r}; known shapes: {sorted(_SHAPE_DRAWERS)}.")
        for name in self.colors:
            if name not in COLOR_VALUES:
                raise ValueError(f"Unknown colour {name!r}; known colours: {sorted(COLOR_VALUES)}.")
        for name in self.sizes:
            if name not in SIZE_RANGES:
                raise ValueError(f"Unknown size {name!r}; known sizes: {sorted(SIZE_RANGES)}.")
        for color, shape in self.held_out_combinations:
            if color not in self.colors or shape not in self.shapes:
                raise ValueError(f"Held-out combination {(color, shape)} uses an unknown colour or shape.")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(f"Need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}.")
        largest_shape = max(SIZE_RANGES[name][1] for name in self.sizes)
        if self.min_image_size < 2 * largest_shape or self.max_image_size < self.min_image_size:
            raise ValueError(
                f"min_image_size={self.min_image_size} must be >= 2 x the largest shape ({largest_shape}) and "
                f"<= max_image_size={self.max_image_size}."
            )
        if self.num_train_shards < 1 or self.num_validation_shards < 1:
            raise ValueError("num_train_shards and num_validation_shards must be >= 1.")


def novel_shapes_config(
    seed: int = 0, num_train: int = 400, num_validation: int = 100, shapes: tuple[str, ...] = NOVEL_SHAPE_NAMES
) -> SyntheticShapesConfig:
    """A "novel task" world for transfer experiments: the default world's colours, sizes, backgrounds and
    distractors, but shapes the default world never draws (`NOVEL_SHAPE_NAMES`: star, diamond, cross), so its
    categories (`"red star"`, ...) are new to a model pre-trained on the default world. No held-out combinations
    (every category appears in the training pool), one shard per split. The images are drawn with seed
    `1000 + seed`, so their layouts differ from those of a default world generated with `seed`.
    """
    return SyntheticShapesConfig(
        seed=1000 + seed,
        num_train=num_train,
        num_validation=num_validation,
        num_train_shards=1,
        num_validation_shards=1,
        shapes=shapes,
        held_out_combinations=(),
    )


def category_names(config: SyntheticShapesConfig, split: str = "validation") -> list[str]:
    """Detection vocabulary of a split: `"<colour> <shape>"` for every combination that can appear in it.

    The training vocabulary excludes the held-out combinations (they are never mentioned during training, not even
    as negative prompt entries); the validation vocabulary has all of them, colour-major order.
    """
    held_out = set(config.held_out_combinations)
    return [
        f"{color} {shape}"
        for color in config.colors
        for shape in config.shapes
        if split != "train" or (color, shape) not in held_out
    ]


def _split_combinations(config: SyntheticShapesConfig, split: str) -> list[tuple[str, str]]:
    return [tuple(name.split(" ", 1)) for name in category_names(config, split)]


# ----------------------------------------------------------------------------------------------- drawing


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A low-saturation solid colour, linear gradient or smoothed noise field (uint8 RGB)."""

    def dull_color() -> np.ndarray:
        gray = rng.uniform(50, 205)
        return np.clip(gray + rng.uniform(-18, 18, size=3), 0, 255)

    kind = rng.integers(3)
    if kind == 0:
        pixels = np.broadcast_to(dull_color(), (height, width, 3)).copy()
    elif kind == 1:
        start, end = dull_color(), dull_color()
        angle = rng.uniform(0, 2 * math.pi)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        projection = xs * math.cos(angle) + ys * math.sin(angle)
        projection = (projection - projection.min()) / max(float(projection.max() - projection.min()), 1e-6)
        pixels = start[None, None, :] * (1 - projection[..., None]) + end[None, None, :] * projection[..., None]
    else:
        base = dull_color()
        coarse = rng.normal(0, 1, size=(height // 8 + 2, width // 8 + 2)).astype(np.float32)
        coarse_image = Image.fromarray(((coarse - coarse.min()) / (np.ptp(coarse) + 1e-6) * 255).astype(np.uint8))
        smooth = np.asarray(coarse_image.resize((width, height), Image.BILINEAR), dtype=np.float32) / 255.0 - 0.5
        fine = rng.normal(0, 10, size=(height, width, 1))
        pixels = base[None, None, :] + 70 * smooth[..., None] + fine
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")


def _draw_circle(draw: ImageDraw.ImageDraw, x1: int, y1: int, side: int, color: tuple[int, int, int]) -> None:
    draw.ellipse([x1, y1, x1 + side - 1, y1 + side - 1], fill=color)


def _draw_square(draw: ImageDraw.ImageDraw, x1: int, y1: int, side: int, color: tuple[int, int, int]) -> None:
    draw.rectangle([x1, y1, x1 + side - 1, y1 + side - 1], fill=color)


def _draw_triangle(draw: ImageDraw.ImageDraw, x1: int, y1: int, side: int, color: tuple[int, int, int]) -> None:
    last = side - 1
    draw.polygon([(x1 + last / 2.0, y1), (x1, y1 + last), (x1 + last, y1 + last)], fill=color)


def _draw_star(draw: ImageDraw.ImageDraw, x1: int, y1: int, side: int, color: tuple[int, int, int]) -> None:
    # A five-pointed star (inner radius 0.45 x outer) stretched to touch all four sides of the square, so its box
    # is the square: the top point, the two side points and the two bottom points reach the edges.
    last = side - 1
    points = []
    for index in range(10):
        angle = -math.pi / 2 + index * math.pi / 5
        radius = 1.0 if index % 2 == 0 else 0.45
        points.append((radius * math.cos(angle), radius * math.sin(angle)))
    min_x, max_x = min(x for x, _ in points), max(x for x, _ in points)
    min_y, max_y = min(y for _, y in points), max(y for _, y in points)
    draw.polygon(
        [(x1 + last * (x - min_x) / (max_x - min_x), y1 + last * (y - min_y) / (max_y - min_y)) for x, y in points],
        fill=color,
    )


def _draw_diamond(draw: ImageDraw.ImageDraw, x1: int, y1: int, side: int, color: tuple[int, int, int]) -> None:
    # A square standing on a corner, its corners at the middles of the box's sides.
    last = side - 1
    draw.polygon(
        [(x1 + last / 2.0, y1), (x1 + last, y1 + last / 2.0), (x1 + last / 2.0, y1 + last), (x1, y1 + last / 2.0)],
        fill=color,
    )


def _draw_cross(draw: ImageDraw.ImageDraw, x1: int, y1: int, side: int, color: tuple[int, int, int]) -> None:
    # A plus sign: a horizontal and a vertical bar a third of the side thick, spanning the whole square.
    thickness = max(1, round(side / 3))
    begin = x1 + (side - thickness) // 2
    top = y1 + (side - thickness) // 2
    draw.rectangle([begin, y1, begin + thickness - 1, y1 + side - 1], fill=color)
    draw.rectangle([x1, top, x1 + side - 1, top + thickness - 1], fill=color)


_SHAPE_DRAWERS = {
    "circle": _draw_circle,
    "square": _draw_square,
    "triangle": _draw_triangle,
    "star": _draw_star,
    "diamond": _draw_diamond,
    "cross": _draw_cross,
}


def draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, x1: int, y1: int, side: int, color: tuple[int, int, int] | int
) -> None:
    """Draw `shape` (a key of the drawing table: `SHAPE_NAMES` + `NOVEL_SHAPE_NAMES`) filling the `side` x `side`
    square at `(x1, y1)`: its tight box is `[x1, y1, x1 + side - 1, y1 + side - 1]` (inclusive pixels).

    Raises:
        ValueError: unknown `shape`.
    """
    if shape not in _SHAPE_DRAWERS:
        raise ValueError(f"Unknown shape {shape!r}; known shapes: {sorted(_SHAPE_DRAWERS)}.")
    _SHAPE_DRAWERS[shape](draw, x1, y1, side, color)


def _place(rng: np.random.Generator, side: int, width: int, height: int, taken: list[list[float]]) -> list[int] | None:
    """Top-left corner for a `side` x `side` shape that keeps a 3-pixel gap to the shapes already placed."""
    gap = 3
    for _ in range(50):
        x1 = int(rng.integers(1, width - side))
        y1 = int(rng.integers(1, height - side))
        x2, y2 = x1 + side - 1, y1 + side - 1
        if all(x2 + gap < bx1 or bx2 + gap < x1 or y2 + gap < by1 or by2 + gap < y1 for bx1, by1, bx2, by2 in taken):
            return [x1, y1, x2, y2]
    return None


def render_sample(
    rng: np.random.Generator, config: SyntheticShapesConfig, combinations: list[tuple[str, str]]
) -> tuple[Image.Image, list[dict]]:
    """Draw one image.

    Returns:
        The RGB image and its objects, each `{"box": [x1, y1, x2, y2], "color", "shape", "size"}` with the box in
        inclusive xyxy pixels (the tight box of the drawn shape).
    """
    width = int(rng.integers(config.min_image_size, config.max_image_size + 1))
    height = int(rng.integers(config.min_image_size, config.max_image_size + 1))
    image = _background(rng, width, height)
    draw = ImageDraw.Draw(image)
    num_objects = int(rng.integers(config.min_objects, config.max_objects + 1))
    objects: list[dict] = []
    for _ in range(num_objects):
        color, shape = combinations[int(rng.integers(len(combinations)))]
        size = config.sizes[int(rng.integers(len(config.sizes)))]
        low, high = SIZE_RANGES[size]
        side = int(rng.integers(low, high + 1))
        box = _place(rng, side, width, height, [item["box"] for item in objects])
        if box is None:
            continue
        jitter = rng.integers(-18, 19, size=3)
        fill = tuple(int(value) for value in np.clip(np.array(COLOR_VALUES[color]) + jitter, 0, 255))
        _SHAPE_DRAWERS[shape](draw, box[0], box[1], side, fill)
        objects.append({"box": [float(value) for value in box], "color": color, "shape": shape, "size": size})
    # Unlabelled distractors: shapes in colours outside the vocabulary (background for every prompt), so telling
    # the named colours apart matters for localisation too, as with unlabelled objects in real detection data.
    taken = [item["box"] for item in objects]
    for _ in range(int(rng.integers(config.max_distractors + 1))):
        side = int(rng.integers(SIZE_RANGES["small"][0], SIZE_RANGES["large"][1] + 1))
        box = _place(rng, side, width, height, taken)
        if box is None:
            continue
        base = DISTRACTOR_COLOR_VALUES[int(rng.integers(len(DISTRACTOR_COLOR_VALUES)))]
        fill = tuple(int(value) for value in np.clip(np.array(base) + rng.integers(-12, 13, size=3), 0, 255))
        _SHAPE_DRAWERS[SHAPE_NAMES[int(rng.integers(len(SHAPE_NAMES)))]](draw, box[0], box[1], side, fill)
        taken.append(box)
    return image, objects


# ----------------------------------------------------------------------------------------------- captions


def _relation(subject: dict, reference: dict) -> str:
    """Spatial relation of `subject` to `reference` along the axis where their centres differ most."""
    subject_x = (subject["box"][0] + subject["box"][2]) / 2
    subject_y = (subject["box"][1] + subject["box"][3]) / 2
    reference_x = (reference["box"][0] + reference["box"][2]) / 2
    reference_y = (reference["box"][1] + reference["box"][3]) / 2
    if abs(subject_x - reference_x) >= abs(subject_y - reference_y):
        return "to the left of" if subject_x < reference_x else "to the right of"
    return "above" if subject_y < reference_y else "below"


def make_caption(
    rng: np.random.Generator, objects: list[dict], mention_all_probability: float = 1.0
) -> tuple[str, list[list[list[int]]]]:
    """A grounding caption about the objects, with the character span of each mentioned object's phrase.

    With probability `mention_all_probability` every object is mentioned; otherwise a random non-empty proper subset
    of the colour-shape combinations present is, and every object of those combinations (so an unmentioned object
    never matches a mentioned phrase). Like Flickr30K / GoldG, only mentioned objects are annotated: the others are
    background for this caption. Phrases are `"[size] color shape"` (the size word with probability 0.5) preceded by
    `"a "`; mentioned objects are paired with spatial relations (`"a small red circle to the left of a blue
    square"`), pairs joined by `", and "`; an optional lead-in (`"there is "`, `"a picture of "`) varies the start.

    Returns:
        `(caption, tokens_positive)` with `tokens_positive[i] = [[begin, end]]` (end exclusive) for object `i`, or
        `[]` when object `i` is not mentioned.
    """
    combinations = list(dict.fromkeys((item["color"], item["shape"]) for item in objects))
    chosen = set(combinations)
    if len(combinations) > 1 and rng.random() >= mention_all_probability:
        count = int(rng.integers(1, len(combinations)))
        chosen = {combinations[int(index)] for index in rng.permutation(len(combinations))[:count]}
    mentioned = [index for index, item in enumerate(objects) if (item["color"], item["shape"]) in chosen]
    order = [mentioned[int(index)] for index in rng.permutation(len(mentioned))]
    lead_ins = ["", "", "there is ", "a picture of ", "we can see "]
    caption = lead_ins[int(rng.integers(len(lead_ins)))]
    spans: list[list[list[int]]] = [[] for _ in objects]

    def add_phrase(index: int) -> None:
        nonlocal caption
        item = objects[index]
        words = ([item["size"]] if rng.random() < 0.5 else []) + [item["color"], item["shape"]]
        caption += "a "
        begin = len(caption)
        caption += " ".join(words)
        spans[index] = [[begin, len(caption)]]

    for pair_start in range(0, len(order), 2):
        if pair_start > 0:
            caption += ", and "
        add_phrase(order[pair_start])
        if pair_start + 1 < len(order):
            caption += f" {_relation(objects[order[pair_start]], objects[order[pair_start + 1]])} "
            add_phrase(order[pair_start + 1])
    return caption, spans


# ----------------------------------------------------------------------------------------------- writing


def synthetic_features():
    """🤗 datasets features of a synthetic-shapes jsonl record (`image` is the png path relative to the split)."""
    from datasets import Features, List, Value

    return Features(
        {
            "image_id": Value("string"),
            "image": Value("string"),
            "width": Value("int32"),
            "height": Value("int32"),
            "boxes": List(List(Value("float32"), length=4)),
            "categories": List(Value("string")),
            "colors": List(Value("string")),
            "shapes": List(Value("string")),
            "sizes": List(Value("string")),
            "caption": Value("string"),
            "tokens_positive": List(List(List(Value("int64"), length=2))),
        }
    )


def _generate_record(config: SyntheticShapesConfig, split: str, index: int, split_dir: str) -> dict:
    """Draw sample `index` of `split`, write its png under `split_dir/images/` and return its jsonl record."""
    rng = np.random.default_rng([config.seed, SPLIT_INDEX[split], index])
    image, objects = render_sample(rng, config, _split_combinations(config, split))
    caption, tokens_positive = make_caption(rng, objects, config.caption_mention_all_probability)
    image_id = f"{split}-{index:06d}"
    image.save(os.path.join(split_dir, "images", f"{image_id}.png"), format="PNG", compress_level=1)
    return {
        "image_id": image_id,
        "image": f"images/{image_id}.png",
        "width": image.width,
        "height": image.height,
        "boxes": [item["box"] for item in objects],
        "categories": [f"{item['color']} {item['shape']}" for item in objects],
        "colors": [item["color"] for item in objects],
        "shapes": [item["shape"] for item in objects],
        "sizes": [item["size"] for item in objects],
        "caption": caption,
        "tokens_positive": tokens_positive,
    }


def _coco_ground_truth(config: SyntheticShapesConfig, split: str, records: list[dict]) -> dict:
    """COCO detection json of a split (file names relative to the split folder, `bbox` xywh with the +1 width rule;
    every category has a `held_out` flag), for `pycocotools` evaluation and the COCO reader."""
    held_out = {f"{color} {shape}" for color, shape in config.held_out_combinations}
    names = category_names(config, split)
    category_ids = {name: index + 1 for index, name in enumerate(names)}
    images, annotations = [], []
    for image_index, record in enumerate(records):
        images.append(
            {"id": image_index, "file_name": record["image"], "width": record["width"], "height": record["height"]}
        )
        for box, name in zip(record["boxes"], record["categories"]):
            width, height = box[2] - box[0] + 1, box[3] - box[1] + 1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_index,
                    "category_id": category_ids[name],
                    "bbox": [box[0], box[1], width, height],
                    "area": width * height,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": category_ids[name], "name": name, "held_out": name in held_out} for name in names]
    return {"images": images, "annotations": annotations, "categories": categories}


def _config_to_json(config: SyntheticShapesConfig) -> dict:
    data = asdict(config)
    data["shapes"] = list(config.shapes)
    data["colors"] = list(config.colors)
    data["sizes"] = list(config.sizes)
    data["held_out_combinations"] = [list(pair) for pair in config.held_out_combinations]
    return data


def read_synthetic_metadata(data_dir: str | os.PathLike) -> dict:
    """The `metadata.json` of a generated world: config, vocabularies, shard files, record counts."""
    with open(os.path.join(data_dir, METADATA_FILE), encoding="utf-8") as handle:
        return json.load(handle)


def generate_synthetic_shapes(
    output_dir: str | os.PathLike, config: SyntheticShapesConfig | None = None, overwrite: bool = False
) -> dict:
    """Generate (or reuse) the synthetic grounding world under `output_dir`.

    Layout: `train/data-00000-of-0000N.jsonl` (one record per line) + `train/images/train-000000.png`, ... +
    `train/coco.json` (the detection annotations in COCO format), the same under `validation/`, and
    `metadata.json`. If a world
    generated with the same config already exists it is reused (the metadata is returned unchanged), so scripts can
    call this unconditionally. Writing goes to a temporary folder renamed into place at the end, so an interrupted
    run never leaves a half-written world behind.

    Returns:
        The metadata dict (also written to `metadata.json`): `config`, `format_version`, `categories` (validation
        vocabulary), `train_categories`, `held_out_categories`, `splits: {name: {"files": [...], "num_records",
        "coco_annotations"}}` (paths relative to `output_dir`).
    """
    config = config or SyntheticShapesConfig()
    output_dir = os.fspath(output_dir)
    expected = {"format_version": FORMAT_VERSION, "config": _config_to_json(config)}
    if os.path.exists(os.path.join(output_dir, METADATA_FILE)) and not overwrite:
        metadata = read_synthetic_metadata(output_dir)
        if {key: metadata.get(key) for key in expected} == expected:
            return metadata
        raise FileExistsError(
            f"{output_dir} holds a synthetic world generated with another config; pass overwrite=True or choose "
            "another folder."
        )

    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    temporary_dir = os.path.join(parent, f".tmp-{os.path.basename(os.path.abspath(output_dir))}-{os.getpid()}")
    shutil.rmtree(temporary_dir, ignore_errors=True)
    splits = {}
    for split, num_records, num_shards in (
        ("train", config.num_train, config.num_train_shards),
        ("validation", config.num_validation, config.num_validation_shards),
    ):
        split_dir = os.path.join(temporary_dir, split)
        os.makedirs(os.path.join(split_dir, "images"))
        files, records = [], []
        for shard_index in range(num_shards):
            file_name = f"{split}/data-{shard_index:05d}-of-{num_shards:05d}.jsonl"
            # Contiguous shards: shard k holds records [k * n / num_shards, (k + 1) * n / num_shards).
            begin, end = shard_index * num_records // num_shards, (shard_index + 1) * num_records // num_shards
            shard_records = [_generate_record(config, split, index, split_dir) for index in range(begin, end)]
            with open(os.path.join(temporary_dir, file_name), "w", encoding="utf-8") as handle:
                handle.writelines(json.dumps(record) + "\n" for record in shard_records)
            files.append(file_name)
            records.extend(shard_records)
        splits[split] = {"files": files, "num_records": num_records, "coco_annotations": f"{split}/coco.json"}
        with open(os.path.join(split_dir, "coco.json"), "w", encoding="utf-8") as handle:
            json.dump(_coco_ground_truth(config, split, records), handle)

    held_out = [f"{color} {shape}" for color, shape in config.held_out_combinations]
    metadata = {
        **expected,
        "categories": category_names(config, "validation"),
        "train_categories": category_names(config, "train"),
        "held_out_categories": held_out,
        "splits": splits,
    }
    with open(os.path.join(temporary_dir, METADATA_FILE), "w", encoding="utf-8") as handle:
        json.dump(metadata, handle, indent=2)
    if os.path.exists(output_dir):
        shutil.rmtree(output_dir)
    os.replace(temporary_dir, output_dir)
    return metadata


# ----------------------------------------------------------------------------------------------- caption-only split

# Seed slot of the caption-only split (`train` is 0, `validation` 1): its images differ from both.
CAPTION_SPLIT_INDEX = 2
CAPTION_SPLIT_GROUND_TRUTH = "hidden_ground_truth.jsonl"


def generate_caption_only_split(
    output_dir: str | os.PathLike,
    config: SyntheticShapesConfig,
    num_images: int,
    num_shards: int = 4,
    overwrite: bool = False,
) -> dict:
    """Render image-caption pairs WITHOUT boxes, stored like web data: webdataset tar shards in the img2dataset
    layout (`000000042.png` + `000000042.txt` caption + `000000042.json` `{"key", "caption"}`), the input of
    self-training (`data.pseudo_labeling.pseudo_label_stream` over `data.streaming.image_caption_source`).

    The images draw from ALL colour-shape combinations of `config`, the held-out ones included: the combinations a
    labelled `train` split of the same config never shows appear here in images and captions. Image `i` uses
    `numpy.random.default_rng([config.seed, CAPTION_SPLIT_INDEX, i])`, so it differs from every `train` and
    `validation` image. The boxes are written apart, in `hidden_ground_truth.jsonl` (`{"key", "boxes",
    "categories", "caption", "tokens_positive"}`, boxes inclusive xyxy), to MEASURE pseudo labels; training must not
    read them. The default world of [`generate_synthetic_shapes`] is unchanged by this function.

    Layout: `output_dir/shard-00000.tar`, ..., `hidden_ground_truth.jsonl`, `metadata.json` (`config`, `files`,
    `num_images`). An existing folder with the same settings is reused; writing goes to a temporary folder renamed
    into place.

    Returns:
        The metadata dict.
    """
    import io
    import tarfile

    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"num_images must be an integer >= 1, got {num_images!r}.")
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or not 1 <= num_shards <= num_images:
        raise ValueError(f"num_shards must be an integer in [1, num_images={num_images}], got {num_shards!r}.")
    output_dir = os.fspath(output_dir)
    expected = {
        "format_version": FORMAT_VERSION,
        "kind": "caption_only",
        "config": _config_to_json(config),
        "num_images": num_images,
        "num_shards": num_shards,
    }
    if os.path.exists(os.path.join(output_dir, METADATA_FILE)) and not overwrite:
        metadata = read_synthetic_metadata(output_dir)
        if {key: metadata.get(key) for key in expected} == expected:
            return metadata
        raise FileExistsError(
            f"{output_dir} holds a caption-only split made with other settings; pass overwrite=True or choose "
            "another folder."
        )
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    temporary_dir = os.path.join(parent, f".tmp-{os.path.basename(os.path.abspath(output_dir))}-{os.getpid()}")
    shutil.rmtree(temporary_dir, ignore_errors=True)
    os.makedirs(temporary_dir)
    combinations = _split_combinations(config, "validation")  # every combination, held-out ones included
    files, hidden = [], []
    for shard_index in range(num_shards):
        file_name = f"shard-{shard_index:05d}.tar"
        begin, end = shard_index * num_images // num_shards, (shard_index + 1) * num_images // num_shards
        with tarfile.open(os.path.join(temporary_dir, file_name), "w") as tar:
            for index in range(begin, end):
                rng = np.random.default_rng([config.seed, CAPTION_SPLIT_INDEX, index])
                image, objects = render_sample(rng, config, combinations)
                caption, tokens_positive = make_caption(rng, objects, config.caption_mention_all_probability)
                key = f"{index:09d}"
                buffer = io.BytesIO()
                image.save(buffer, format="PNG", compress_level=1)
                members = {
                    "png": buffer.getvalue(),
                    "txt": caption.encode("utf-8"),
                    "json": json.dumps({"key": key, "caption": caption}).encode("utf-8"),
                }
                for extension, data in members.items():
                    info = tarfile.TarInfo(f"{key}.{extension}")
                    info.size = len(data)  # mtime stays 0: the same settings give the same bytes
                    tar.addfile(info, io.BytesIO(data))
                hidden.append(
                    {
                        "key": key,
                        "shard": file_name,
                        "width": image.width,
                        "height": image.height,
                        "boxes": [item["box"] for item in objects],
                        "categories": [f"{item['color']} {item['shape']}" for item in objects],
                        "caption": caption,
                        "tokens_positive": tokens_positive,
                    }
                )
        files.append(file_name)
    with open(os.path.join(temporary_dir, CAPTION_SPLIT_GROUND_TRUTH), "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in hidden)
    metadata = {
        **expected,
        "files": files,
        "held_out_categories": [f"{color} {shape}" for color, shape in config.held_out_combinations],
        "hidden_ground_truth": CAPTION_SPLIT_GROUND_TRUTH,
    }
    with open(os.path.join(temporary_dir, METADATA_FILE), "w", encoding="utf-8") as handle:
        json.dump(metadata, handle, indent=2)
    if os.path.exists(output_dir):
        shutil.rmtree(output_dir)
    os.replace(temporary_dir, output_dir)
    return metadata
