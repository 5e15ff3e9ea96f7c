"""Pseudo-labelling image-caption pairs with a teacher GLIP (self-training, spec §11.1).

GLIP's third idea: a teacher grounds the noun phrases of web image-caption pairs and a student learns from those
boxes. The official repository only ships the reader of pre-computed labels (`CaptionTSV`, spec §11.2); this
module makes them. [`pseudo_label_stream`] takes any [`GroundingSource`] (usually [`image_caption_source`] over
parquet / webdataset shards or a Hub id) and, per image:

1. extracts the noun phrases of the caption ([`extract_noun_phrases`]: the project's offline chunker
   `prompts_glip.find_noun_phrases`, or the official NLTK chunker `<DT>?<JJ.*>*<NN.*>+` with
   `noun_phrase_extractor="nltk"`); identical phrases (case-insensitive) form one entity holding all their spans;
2. grounds them with the teacher through [`detect`] (its batching by padded size, chunking of long prompts and
   official post-processing). `detect` takes label lists, not phrase spans of a caption, so the teacher's prompt
   is the extracted phrases joined like detection labels (`"a red circle. a blue square"`), not the caption
   itself as in the official demo's `run_on_web_image`; each box is then mapped back to the spans of its phrase
   in the ORIGINAL caption, which is what the pseudo-label rows store;
3. filters the boxes ([`PseudoLabelFilters`], [`filter_pseudo_labels`]): the official `CAPTION_CONF` threshold
   (`score > score_threshold`), optional class-agnostic NMS (official `CAPTION_NMS`, off by default), a minimum
   box side, at most `max_boxes` boxes, and images with fewer than `min_boxes` boxes (official `CAPTION_MIN_BOX`)
   are not written;
4. writes GLIP pseudo-label jsonl rows (format v1, one box per entry) that `data.sources.pseudo_label_source`
   reads: `{"sample_id", "file_name", "caption", "img_w", "img_h", "bboxes": [[x1, y1, x2, y2], ...] (inclusive
   xyxy, original pixels), "scores": [...], "tokens_positive": [[[begin, end], ...] per box], "phrases": [...]}`.
   Images that came as bytes (parquet, tar) are written once under `images/`; `file_name` is relative to the
   output folder (pass it as `image_dir`), or the original absolute path for images read from disk.

Layout of `output_dir` (the reader counts a metadata first line as a parse error, so metadata lives beside):

    pseudo_label_run.json                  teacher, filters, extractor, shard size, source (checked on restart)
    shard-SSSSS-CCCCC.jsonl                rows of chunk CCCCC (`shard_size` records) of input shard SSSSS
    shard-SSSSS-CCCCC.meta.json            its sidecar: run settings + counts + ids of the records not written
    images/shard-SSSSS-CCCCC/RRRRRRRR.jpg  image bytes of the rows

Scaling and restarts: a work unit is one chunk of one input shard (`source.dataset.shard`); with at least as many
input shards as processes, process `p` of `P` takes the input shards `s % P == p` (reading only those), else every
process reads every shard and takes the chunks `c % P == p`. Each unit is written atomically (temporary file +
rename, sidecar first, rows last), so a unit exists completely or not at all; a restarted run (with any number
of processes) skips the complete units without decoding their images, so no record is labelled twice or missed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch
from PIL import Image

from ..box_geometry_glip import LEGACY_PIXEL_OFFSET, class_aware_nms
from ..inference_glip import detect
from ..prompts_glip import clean_label_name, find_noun_phrases
from .records import IMAGE_ERRORS, GroundingSource, load_record_image
from .sources import pseudo_label_source

__all__ = [
    "NOUN_PHRASE_EXTRACTORS",
    "PSEUDO_LABEL_FORMAT",
    "PseudoLabelFilters",
    "extract_noun_phrases",
    "filter_pseudo_labels",
    "nltk_noun_phrases",
    "pseudo_label_output_source",
    "pseudo_label_shard_files",
    "pseudo_label_stream",
    "read_pseudo_label_run",
]

NOUN_PHRASE_EXTRACTORS = ("offline", "nltk")
PSEUDO_LABEL_FORMAT = "glip-pseudo-label-v1"
RUN_FILE = "pseudo_label_run.json"
UNIT_PATTERN = re.compile(r"^shard-(\d{5,})-(\d{5,})\.jsonl$")
NLTK_INSTALL_HINT = (
    "pip install nltk && python -m nltk.downloader punkt_tab averaged_perceptron_tagger_eng "
    "(older NLTK: punkt averaged_perceptron_tagger)"
)
# The official grammar (`predictor_glip.py::find_noun_phrases`) and the characters its `remove_punctuation` drops.
NLTK_NOUN_PHRASE_GRAMMAR = "NP: {<DT>?<JJ.*>*<NN.*>+}"
# The image processor refuses images with a side under 2 pixels (web data has 1x1 tracking pixels).
MIN_IMAGE_SIDE = 2
OFFICIAL_PUNCTUATION = "|:;@()[]{}^'\"’`?$%#!&*+,."


# ----------------------------------------------------------------------------------------------- noun phrases


def _nltk_module():
    """`nltk`, with its tokenizer and tagger data, or a clear error saying what to install."""
    try:
        import nltk
    except ImportError as error:
        raise ImportError(
            f"noun_phrase_extractor='nltk' needs NLTK and its data: {NLTK_INSTALL_HINT}. Or use the offline "
            "extractor (noun_phrase_extractor='offline')."
        ) from error
    for alternatives in (
        ("tokenizers/punkt_tab", "tokenizers/punkt"),
        ("taggers/averaged_perceptron_tagger_eng", "taggers/averaged_perceptron_tagger"),
    ):
        found = False
        for resource in alternatives:
            try:
                nltk.data.find(resource)
                found = True
                break
            except LookupError:
                continue
        if not found:
            raise LookupError(f"NLTK is installed but its data {alternatives[0]!r} is missing: {NLTK_INSTALL_HINT}.")
    return nltk


def nltk_noun_phrases(caption: str) -> list[tuple[str, tuple[int, int]]]:
    """The official NLTK noun phrases of a caption (`GLIPDemo.run_ner`), with character spans.

    As the official demo: the caption is lower-cased, word-tokenised and POS-tagged, chunked with
    `<DT>?<JJ.*>*<NN.*>+`, the chunks' punctuation removed, and EVERY occurrence of a phrase in the lower-cased
    caption becomes a span (the official `re.finditer(entity, ...)` without escaping; escaped here). Phrases the
    tokeniser changed (e.g. `"dog 's"`) are not found in the caption and are dropped, as officially.

    Returns:
        `list[(phrase, (begin, end))]` sorted by `begin`; `phrase = caption[begin:end]` (original case).
    """
    nltk = _nltk_module()
    lowered = caption.lower()
    tree = nltk.RegexpParser(NLTK_NOUN_PHRASE_GRAMMAR).parse(nltk.pos_tag(nltk.word_tokenize(lowered)))
    phrases = []
    for subtree in tree.subtrees():
        if subtree.label() == "NP":
            phrase = " ".join(word for word, _ in subtree.leaves())
            phrase = phrase.translate(str.maketrans("", "", OFFICIAL_PUNCTUATION)).strip()
            if phrase:
                phrases.append(phrase)
    spans = sorted(
        {(match.start(), match.end()) for phrase in set(phrases) for match in re.finditer(re.escape(phrase), lowered)}
    )
    return [(caption[begin:end], (begin, end)) for begin, end in spans]


def extract_noun_phrases(caption: str, extractor: str = "offline") -> list[tuple[str, tuple[int, int]]]:
    """Noun phrases of `caption` with character spans: `extractor="offline"` (`find_noun_phrases`, no
    dependencies) or `"nltk"` ([`nltk_noun_phrases`], the official chunker; needs NLTK and its data)."""
    if extractor == "offline":
        return find_noun_phrases(caption)
    if extractor == "nltk":
        return nltk_noun_phrases(caption)
    raise ValueError(f"`noun_phrase_extractor` must be one of {NOUN_PHRASE_EXTRACTORS}, got {extractor!r}.")


def _caption_entities(caption: str, extractor: str) -> tuple[list[str], list[list[list[int]]]]:
    """Entities of a caption: one per distinct phrase (case-insensitive, in order of first occurrence), each with
    the spans of all its occurrences. Phrases that clean to nothing as detection labels are dropped."""
    labels: list[str] = []
    spans: list[list[list[int]]] = []
    index_of: dict[str, int] = {}
    for phrase, (begin, end) in extract_noun_phrases(caption, extractor):
        if not clean_label_name(phrase).strip():
            continue
        key = phrase.lower()
        if key not in index_of:
            index_of[key] = len(labels)
            labels.append(phrase)
            spans.append([])
        spans[index_of[key]].append([begin, end])
    return labels, spans


# ----------------------------------------------------------------------------------------------- filters


@dataclass
class PseudoLabelFilters:
    """Which teacher boxes become pseudo labels.

    Args:
        score_threshold: Keep boxes with `score > score_threshold` (official `DATASETS.CAPTION_CONF`: 0.5 in the
            GLIP-L config, 0.9 by default).
        nms_threshold: Class-agnostic NMS ("+1" IoU) across the phrases of an image at this IoU (official
            `CAPTION_NMS`; `None` = off, like its -1). The teacher's post-processing already ran per-phrase NMS.
        min_box_size: Drop boxes whose shorter side (`x2 - x1 + 1`, `y2 - y1 + 1`) is below this many pixels.
        max_boxes: Keep at most this many boxes per image (highest scores); `None` = no cap.
        min_boxes: Images left with fewer boxes are not written (official `CAPTION_MIN_BOX` = 1).
    """

    score_threshold: float = 0.5
    nms_threshold: float | None = None
    min_box_size: float = 0.0
    max_boxes: int | None = None
    min_boxes: int = 1

    def __post_init__(self):
        number = (int, float)
        if isinstance(self.score_threshold, bool) or not isinstance(self.score_threshold, number):
            raise TypeError(f"`score_threshold` must be a number in [0, 1), got {self.score_threshold!r}.")
        if not 0.0 <= self.score_threshold < 1.0:
            raise ValueError(f"`score_threshold` must be in [0, 1), got {self.score_threshold!r}.")
        if self.nms_threshold is not None and (
            isinstance(self.nms_threshold, bool)
            or not isinstance(self.nms_threshold, number)
            or not 0.0 < self.nms_threshold <= 1.0
        ):
            raise ValueError(f"`nms_threshold` must be None (off) or in (0, 1], got {self.nms_threshold!r}.")
        if isinstance(self.min_box_size, bool) or not isinstance(self.min_box_size, number) or self.min_box_size < 0:
            raise ValueError(f"`min_box_size` must be a number >= 0 (pixels), got {self.min_box_size!r}.")
        if self.max_boxes is not None and (
            isinstance(self.max_boxes, bool) or not isinstance(self.max_boxes, int) or self.max_boxes < 1
        ):
            raise ValueError(f"`max_boxes` must be None or a positive int, got {self.max_boxes!r}.")
        if isinstance(self.min_boxes, bool) or not isinstance(self.min_boxes, int) or self.min_boxes < 0:
            raise ValueError(f"`min_boxes` must be an int >= 0, got {self.min_boxes!r}.")


def filter_pseudo_labels(boxes: torch.Tensor, scores: torch.Tensor, filters: PseudoLabelFilters) -> torch.Tensor:
    """Indices of the teacher boxes of ONE image that pass `filters` (all but `min_boxes`, which is per image).

    Order: score threshold, minimum box side, class-agnostic NMS, then the `max_boxes` highest scores.

    Args:
        boxes (`torch.Tensor` of shape `(num_boxes, 4)`): inclusive xyxy in image pixels.
        scores (`torch.Tensor` of shape `(num_boxes,)`).

    Returns:
        `torch.LongTensor` of kept indices, by decreasing score.
    """
    keep = torch.nonzero(scores > filters.score_threshold).flatten()
    sides = torch.minimum(boxes[keep, 2] - boxes[keep, 0], boxes[keep, 3] - boxes[keep, 1]) + LEGACY_PIXEL_OFFSET
    keep = keep[sides >= filters.min_box_size]
    keep = keep[torch.argsort(scores[keep], descending=True, stable=True)]
    if filters.nms_threshold is not None and keep.numel() > 0:
        same_label = torch.zeros(keep.numel(), dtype=torch.long)
        keep = keep[class_aware_nms(boxes[keep], scores[keep], same_label, filters.nms_threshold)]
    if filters.max_boxes is not None:
        keep = keep[: filters.max_boxes]
    return keep


# ----------------------------------------------------------------------------------------------- output files


def _write_atomically(path: str, data: bytes) -> None:
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _unit_stem(shard_index: int, chunk_index: int) -> str:
    return f"shard-{shard_index:05d}-{chunk_index:05d}"


def pseudo_label_shard_files(output_dir: str | os.PathLike) -> list[str]:
    """The complete pseudo-label shards (`shard-SSSSS-CCCCC.jsonl`) of `output_dir`, sorted."""
    output_dir = os.fspath(output_dir)
    if not os.path.isdir(output_dir):
        return []
    return sorted(os.path.join(output_dir, name) for name in os.listdir(output_dir) if UNIT_PATTERN.match(name))


def read_pseudo_label_run(output_dir: str | os.PathLike) -> dict:
    """The run settings of `output_dir` (`pseudo_label_run.json`: teacher, filters, extractor, shard size)."""
    path = os.path.join(os.fspath(output_dir), RUN_FILE)
    if not os.path.isfile(path):
        raise ValueError(f"{os.fspath(output_dir)!r} holds no pseudo-label run ({RUN_FILE} is missing).")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def pseudo_label_output_source(
    output_dir: str | os.PathLike, score_threshold: float | None = None, name: str = "pseudo", shards_per_file: int = 4
) -> GroundingSource:
    """`pseudo_label_source` over the complete shards of a [`pseudo_label_stream`] output folder (images relative
    to it); `score_threshold=None` uses the threshold the labels were made with."""
    run = read_pseudo_label_run(output_dir)
    files = pseudo_label_shard_files(output_dir)
    if not files:
        raise ValueError(f"{os.fspath(output_dir)!r} holds no complete pseudo-label shard yet.")
    if score_threshold is None:
        score_threshold = float(run["filters"]["score_threshold"])
    return pseudo_label_source(
        files, os.fspath(output_dir), score_threshold, name=name, shards_per_file=shards_per_file
    )


def _teacher_description(model, teacher_name: str | None) -> dict:
    config = model.config
    # The architecture and settings identify the teacher; where it was loaded from and the library version do not.
    settings = {
        key: value for key, value in config.to_dict().items() if key not in ("_name_or_path", "transformers_version")
    }
    config_json = json.dumps(settings, sort_keys=True, default=str)
    # A cheap fingerprint of the weights (per-tensor sums, 6 significant digits so a restart on another device
    # matches): a restart with a retrained teacher of the same configuration is refused.
    with torch.no_grad():
        sums = ";".join(
            f"{name}:{float(tensor.double().sum()):.6g}"
            for name, tensor in model.state_dict().items()
            if tensor.numel()
        )
    parameter = next(model.parameters())
    return {
        "name": teacher_name or getattr(config, "_name_or_path", "") or type(model).__name__,
        "class": type(model).__name__,
        "config_sha256": hashlib.sha256(config_json.encode("utf-8")).hexdigest(),
        "weights_fingerprint": hashlib.sha256(sums.encode("utf-8")).hexdigest(),
        "dtype": str(parameter.dtype).replace("torch.", ""),
    }


def _check_run_settings(output_dir: str, settings: dict) -> None:
    """Write the run settings, or check that a restart uses the same ones (else units would mix settings)."""
    path = os.path.join(output_dir, RUN_FILE)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as handle:
            existing = json.load(handle)
        # The teacher's name is where it was loaded from: the same teacher may move.
        comparable = {**settings, "teacher": {**settings["teacher"], "name": None}}
        existing["teacher"] = {**existing.get("teacher", {}), "name": None}
        differing = sorted(key for key in comparable if existing.get(key) != comparable[key])
        if differing:
            details = "; ".join(f"{key}: {existing.get(key)!r} -> {comparable[key]!r}" for key in differing)
            raise ValueError(
                f"{output_dir!r} holds a pseudo-label run with other settings ({details}); resume it with the same "
                "settings or write to a new output_dir."
            )
        return
    # Every process may get here at once; they write the same content, atomically.
    _write_atomically(path, json.dumps(settings, indent=2, sort_keys=True).encode("utf-8"))


# ----------------------------------------------------------------------------------------------- labelling


def _image_extension(image: Image.Image) -> str:
    extension = (image.format or "").lower()
    return {"jpeg": "jpg", "": "img"}.get(extension, extension)


class _Unit:
    """One chunk of one input shard being labelled: its rows, skipped ids and counts."""

    def __init__(self, shard_index: int, chunk_index: int):
        self.shard_index = shard_index
        self.chunk_index = chunk_index
        self.rows: list[dict] = []
        self.skipped: dict[str, list[str]] = {}
        self.num_records = 0
        self.pending: list[tuple[dict, Image.Image, bytes | None, list[str], list[list[list[int]]]]] = []

    @property
    def stem(self) -> str:
        return _unit_stem(self.shard_index, self.chunk_index)

    def skip(self, reason: str, sample_id: str) -> None:
        self.skipped.setdefault(reason, []).append(sample_id)


def _unit_owner(shard_index: int, chunk_index: int, num_shards: int, num_processes: int) -> int:
    return shard_index % num_processes if num_shards >= num_processes else chunk_index % num_processes


def _iterate_shard(dataset, num_shards: int, shard_index: int) -> Iterator[dict]:
    yield from (dataset if num_shards == 1 else dataset.shard(num_shards=num_shards, index=shard_index))


def pseudo_label_stream(
    model,
    processor,
    source: GroundingSource,
    output_dir: str | os.PathLike,
    filters: PseudoLabelFilters | None = None,
    noun_phrase_extractor: str = "offline",
    batch_size: int = 8,
    shard_size: int = 1000,
    process_index: int = 0,
    num_processes: int = 1,
    teacher_name: str | None = None,
    progress: bool = True,
    on_unit_written: Callable[[str], None] | None = None,
) -> dict:
    """Pseudo-label the captions of `source` with a teacher GLIP and write shards (see the module docstring).

    Args:
        model ([`GLIPForGrounding`]): the teacher (in eval mode; its device is used).
        processor ([`GLIPProcessor`]): the teacher's processor (its image processor sets the inference resize).
        source: records with `image` and `caption` (boxes, if any, are ignored).
        output_dir: where shards, sidecars and images go; shared by all processes of a run.
        filters: [`PseudoLabelFilters`] (default: the official `CAPTION_CONF` 0.5, no NMS, `CAPTION_MIN_BOX` 1).
        noun_phrase_extractor: `"offline"` or `"nltk"` (see [`extract_noun_phrases`]).
        batch_size: images per `detect` call (and at most per forward; `detect` batches same-size images only).
        shard_size: records per output shard (a restart redoes at most one incomplete shard per process).
        process_index, num_processes: this process and the number of processes splitting the stream.
        teacher_name: recorded in the metadata (default: the model's `name_or_path`).
        progress: show a tqdm bar with images/s (hidden when stderr is not a terminal).
        on_unit_written: called with the path of each shard written (e.g. for logging).

    Returns:
        `dict` with this process's `units_written`, `units_already_complete`, `images_labelled`, `rows_written`,
        `boxes_written`, `skipped` (reason -> count) and `seconds`.
    """
    from tqdm.auto import tqdm

    if not isinstance(source, GroundingSource):
        raise TypeError(f"`source` must be a GroundingSource, got {type(source).__name__}.")
    filters = PseudoLabelFilters() if filters is None else filters
    if not isinstance(filters, PseudoLabelFilters):
        raise TypeError(f"`filters` must be a PseudoLabelFilters, got {type(filters).__name__}.")
    if noun_phrase_extractor not in NOUN_PHRASE_EXTRACTORS:
        raise ValueError(
            f"`noun_phrase_extractor` must be one of {NOUN_PHRASE_EXTRACTORS}, got {noun_phrase_extractor!r}."
        )
    if noun_phrase_extractor == "nltk":
        _nltk_module()  # fail before any work when NLTK or its data is missing
    for argument, value in (("batch_size", batch_size), ("shard_size", shard_size), ("num_processes", num_processes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{argument}` must be a positive int, got {value!r}.")
    if isinstance(process_index, bool) or not isinstance(process_index, int) or not 0 <= process_index < num_processes:
        raise ValueError(f"`process_index` must be an int in [0, {num_processes}), got {process_index!r}.")

    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    num_shards = int(getattr(source.dataset, "num_shards", 1) or 1)
    settings = {
        "format": PSEUDO_LABEL_FORMAT,
        "source": source.name,
        "num_input_shards": num_shards,
        "shard_size": shard_size,
        "teacher": _teacher_description(model, teacher_name),
        "filters": asdict(filters),
        "noun_phrase_extractor": noun_phrase_extractor,
        "prompt": "phrases",  # detect's label-list prompt of the extracted phrases (see the module docstring)
    }
    _check_run_settings(output_dir, settings)
    labelling = _LabellingRun(
        model, processor, filters, noun_phrase_extractor, batch_size, output_dir, settings, on_unit_written
    )
    complete = {os.path.basename(path) for path in pseudo_label_shard_files(output_dir)}
    start = time.monotonic()
    labelling.bar = tqdm(
        unit="img",
        desc=f"pseudo-label {process_index}/{num_processes}" if num_processes > 1 else "pseudo-label",
        disable=None if progress else True,  # None: hidden when stderr is not a terminal
        position=process_index if num_processes > 1 else None,
        dynamic_ncols=True,
    )
    try:
        for shard_index in range(num_shards):
            if num_shards >= num_processes and shard_index % num_processes != process_index:
                continue
            if _shard_is_complete(output_dir, shard_index, num_shards, num_processes, process_index, complete):
                continue
            unit: _Unit | None = None
            seen_chunks: set[int] = set()
            for row, record in enumerate(_iterate_shard(source.dataset, num_shards, shard_index)):
                chunk_index = row // shard_size
                if unit is not None and chunk_index != unit.chunk_index:
                    labelling.write_unit(unit, final=False)
                    unit = None
                if chunk_index not in seen_chunks:
                    seen_chunks.add(chunk_index)
                    mine = _unit_owner(shard_index, chunk_index, num_shards, num_processes) == process_index
                    if mine and _unit_stem(shard_index, chunk_index) + ".jsonl" in complete:
                        labelling.summary["units_already_complete"] += 1
                    elif mine:
                        unit = _Unit(shard_index, chunk_index)
                if unit is None or unit.chunk_index != chunk_index:
                    continue  # another process's unit, or one already complete: not decoded
                _add_record(unit, record, noun_phrase_extractor)
                if len(unit.pending) >= batch_size:
                    labelling.label_pending(unit)
            if unit is not None:
                labelling.write_unit(unit, final=True)
    finally:
        labelling.bar.close()
    return {**labelling.summary, "seconds": time.monotonic() - start}


class _LabellingRun:
    """The teacher calls and shard writing of one process (see [`pseudo_label_stream`])."""

    def __init__(self, model, processor, filters, extractor, batch_size, output_dir, settings, on_unit_written):
        self.model = model
        self.processor = processor
        self.filters = filters
        self.extractor = extractor
        self.batch_size = batch_size
        self.output_dir = output_dir
        self.settings = settings
        self.on_unit_written = on_unit_written
        self.bar = None
        self.summary = {
            "units_written": 0,
            "units_already_complete": 0,
            "images_labelled": 0,
            "rows_written": 0,
            "boxes_written": 0,
            "skipped": {},
        }

    def label_pending(self, unit: _Unit) -> None:
        """Ground the queued images of `unit` with the teacher (one `detect` call) and keep their rows."""
        if not unit.pending:
            return
        results = detect(
            self.model,
            self.processor,
            [image.convert("RGB") for _, image, _, _, _ in unit.pending],
            [labels for _, _, _, labels, _ in unit.pending],
            threshold=self.filters.score_threshold,
            batch_size=self.batch_size,
        )
        for (record, image, data, labels, spans), result in zip(unit.pending, results):
            keep = filter_pseudo_labels(result["boxes"].float().cpu(), result["scores"].float().cpu(), self.filters)
            if keep.numel() < self.filters.min_boxes:
                unit.skip("too_few_boxes", record["sample_id"])
                continue
            row_index = len(unit.rows) + sum(len(ids) for ids in unit.skipped.values())
            row = _pseudo_label_row(record, image, labels, spans, result, keep)
            if data is not None:  # bytes from a parquet / tar shard: store the image beside the rows
                row["file_name"] = f"images/{unit.stem}/{row_index:08d}.{_image_extension(image)}"
                os.makedirs(os.path.join(self.output_dir, "images", unit.stem), exist_ok=True)
                _write_atomically(os.path.join(self.output_dir, row["file_name"]), data)
            unit.rows.append(row)
        self.bar.update(len(unit.pending))
        self.summary["images_labelled"] += len(unit.pending)
        unit.pending.clear()

    def write_unit(self, unit: _Unit, final: bool) -> None:
        """Label what is left of `unit`, then write its sidecar and its rows (each atomically, rows last)."""
        self.label_pending(unit)
        metadata = {
            **self.settings,
            "input_shard": unit.shard_index,
            "chunk": unit.chunk_index,
            "final_chunk_of_input_shard": final,
            "num_records": unit.num_records,
            "num_rows": len(unit.rows),
            "num_boxes": sum(len(row["bboxes"]) for row in unit.rows),
            "skipped_sample_ids": unit.skipped,
        }
        path = os.path.join(self.output_dir, unit.stem + ".jsonl")
        sidecar = os.path.join(self.output_dir, unit.stem + ".meta.json")
        _write_atomically(sidecar, json.dumps(metadata, indent=1).encode("utf-8"))
        _write_atomically(path, "".join(json.dumps(row) + "\n" for row in unit.rows).encode("utf-8"))
        self.summary["units_written"] += 1
        self.summary["rows_written"] += len(unit.rows)
        self.summary["boxes_written"] += metadata["num_boxes"]
        for reason, ids in unit.skipped.items():
            self.summary["skipped"][reason] = self.summary["skipped"].get(reason, 0) + len(ids)
        if self.on_unit_written is not None:
            self.on_unit_written(path)


def _shard_is_complete(output_dir, shard_index, num_shards, num_processes, process_index, complete) -> bool:
    """Whether every unit of an input shard that this process owns is complete, known from the sidecar of the
    shard's final chunk (so a restart does not even read finished shards)."""
    final_chunk = None
    for name in complete:
        match = UNIT_PATTERN.match(name)
        if match and int(match.group(1)) == shard_index:
            sidecar = os.path.join(output_dir, name[: -len(".jsonl")] + ".meta.json")
            try:
                with open(sidecar, encoding="utf-8") as handle:
                    if json.load(handle).get("final_chunk_of_input_shard"):
                        final_chunk = int(match.group(2))
            except (OSError, ValueError):
                continue
    if final_chunk is None:
        return False
    return all(
        _unit_stem(shard_index, chunk) + ".jsonl" in complete
        for chunk in range(final_chunk + 1)
        if _unit_owner(shard_index, chunk, num_shards, num_processes) == process_index
    )


def _add_record(unit: _Unit, record: dict, extractor: str) -> None:
    """Decode one record and queue it for the teacher, or count why it cannot be labelled."""
    unit.num_records += 1
    sample_id = record["sample_id"]
    if record.get("error"):
        unit.skip("parse_error", sample_id)
        return
    caption = record.get("caption") or ""
    labels, spans = _caption_entities(caption, extractor) if caption.strip() else ([], [])
    if not labels:
        unit.skip("no_noun_phrase", sample_id)
        return
    try:
        image, data = load_record_image(record)
    except IMAGE_ERRORS:
        unit.skip("unreadable_image", sample_id)
        return
    if min(image.size) < MIN_IMAGE_SIDE:
        unit.skip("image_too_small", sample_id)
        return
    unit.pending.append((record, image, data, labels, spans))


def _pseudo_label_row(record, image, labels, spans, result, keep) -> dict:
    """One pseudo-label jsonl row (format v1: one box per entry, each with the spans of its phrase)."""
    boxes = result["boxes"][keep].float().cpu()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, image.width - LEGACY_PIXEL_OFFSET)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, image.height - LEGACY_PIXEL_OFFSET)
    entity_indices = result["labels"][keep].tolist()
    row = {
        "sample_id": record["sample_id"],
        "caption": record["caption"],
        "img_w": image.width,
        "img_h": image.height,
        "bboxes": [[round(value, 2) for value in box] for box in boxes.tolist()],
        "scores": [round(float(score), 4) for score in result["scores"][keep].tolist()],
        "tokens_positive": [spans[index] for index in entity_indices],
        "phrases": [labels[index] for index in entity_indices],
    }
    if record["image"].get("path") and not record["image"].get("bytes"):
        row["file_name"] = os.path.abspath(record["image"]["path"])
    return row
