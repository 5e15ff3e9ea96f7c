"""Pseudo-labelling captions with a teacher GLIP: noun phrases, filters, shards, resume, several processes."""

import builtins
import copy
import json
import os

import pytest
import torch
from datasets import Dataset, Features, Value
from datasets import Image as ImageFeature
from test_data_streaming import image_bytes, write_caption_parquet, write_webdataset

import transformers_glip.data.pseudo_labeling as pseudo_labeling
from transformers_glip import GLIPForGrounding, GLIPProcessor
from transformers_glip.data import GLIPTrainingStream, GLIPTrainingTransform, pseudo_label_source
from transformers_glip.data.pseudo_labeling import (
    PseudoLabelFilters,
    extract_noun_phrases,
    filter_pseudo_labels,
    nltk_noun_phrases,
    pseudo_label_output_source,
    pseudo_label_shard_files,
    pseudo_label_stream,
    read_pseudo_label_run,
)
from transformers_glip.data.streaming import image_caption_source
from transformers_glip.image_processing_glip import GLIPImageProcessor

pytestmark = pytest.mark.usefixtures("single_torch_thread")

# Low enough for the random-weight teacher (its scores reach ~0.5), high enough to drop some boxes.
FILTERS = PseudoLabelFilters(score_threshold=0.2, max_boxes=4)


@pytest.fixture(scope="module")
def teacher(tiny_a_dir):
    model = GLIPForGrounding.from_pretrained(tiny_a_dir).eval()
    processor = GLIPProcessor.from_pretrained(tiny_a_dir)
    small = GLIPProcessor(GLIPImageProcessor(min_size=64, max_size=107), processor.tokenizer)
    return model, small


@pytest.fixture(scope="module")
def captions(tmp_path_factory):
    """Two parquet shards of five image-caption pairs."""
    directory = tmp_path_factory.mktemp("captions")
    write_caption_parquet(directory, num_shards=2, per_shard=5)
    return directory


def run(teacher, source, output_dir, **kwargs):
    model, processor = teacher
    kwargs.setdefault("filters", FILTERS)
    kwargs.setdefault("shard_size", 2)
    kwargs.setdefault("batch_size", 2)
    kwargs.setdefault("progress", False)
    return pseudo_label_stream(model, processor, source, output_dir, **kwargs)


def read_rows(output_dir) -> dict[str, dict]:
    rows = {}
    for path in pseudo_label_shard_files(output_dir):
        with open(path) as handle:
            for line in handle:
                row = json.loads(line)
                assert row["sample_id"] not in rows, f"{row['sample_id']} written twice"
                rows[row["sample_id"]] = row
    return rows


@pytest.fixture(scope="module")
def reference_run(teacher, captions, tmp_path_factory):
    """One uninterrupted 1-process run over the caption shards."""
    output_dir = tmp_path_factory.mktemp("reference")
    summary = run(teacher, image_caption_source(captions, name="cc"), output_dir)
    return output_dir, summary


# ------------------------------------------------------------------------------------------------ noun phrases


def test_offline_noun_phrases_and_extractor_flag():
    caption = "A red circle next to the blue square, and a red circle."
    phrases = extract_noun_phrases(caption)
    assert phrases == [("A red circle", (0, 12)), ("the blue square", (21, 36)), ("a red circle", (42, 54))]
    assert all(caption[begin:end] == phrase for phrase, (begin, end) in phrases)
    with pytest.raises(ValueError, match="noun_phrase_extractor"):
        extract_noun_phrases(caption, "spacy")


def test_nltk_flag_without_nltk_says_what_to_install(monkeypatch, teacher, captions, tmp_path):
    real_import = builtins.__import__

    def no_nltk(name, *args, **kwargs):
        if name == "nltk" or name.startswith("nltk."):
            raise ImportError("No module named 'nltk'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_nltk)
    with pytest.raises(ImportError, match="pip install nltk"):
        nltk_noun_phrases("a dog")
    # The labeller refuses before writing anything.
    with pytest.raises(ImportError, match="averaged_perceptron_tagger"):
        run(teacher, image_caption_source(captions), tmp_path / "out", noun_phrase_extractor="nltk")
    assert not (tmp_path / "out").exists()


def test_nltk_noun_phrases_when_installed():
    pytest.importorskip("nltk")
    caption = "A man riding a horse near the old barn."
    try:
        phrases = nltk_noun_phrases(caption)
    except LookupError:
        pytest.skip("NLTK data (punkt, tagger) not installed")
    assert ("A man", (0, 5)) in phrases and ("the old barn", (26, 38)) in phrases
    assert all(caption[begin:end] == phrase for phrase, (begin, end) in phrases)


# ------------------------------------------------------------------------------------------------ filters


def boxes_and_scores():
    boxes = torch.tensor(
        [[0, 0, 19, 19], [1, 1, 20, 20], [50, 50, 51, 60], [30, 0, 49, 19], [0, 30, 9, 39]], dtype=torch.float32
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.4])
    return boxes, scores


def test_filter_score_threshold_is_strict():
    boxes, scores = boxes_and_scores()
    assert filter_pseudo_labels(boxes, scores, PseudoLabelFilters(score_threshold=0.6)).tolist() == [0, 1, 2]
    assert filter_pseudo_labels(boxes, scores, PseudoLabelFilters(score_threshold=0.0)).tolist() == [0, 1, 2, 3, 4]


def test_filter_minimum_box_size_uses_plus_one_sides():
    boxes, scores = boxes_and_scores()
    # Box 2 is 2 x 11 pixels ("+1" convention), box 4 is 10 x 10.
    kept = filter_pseudo_labels(boxes, scores, PseudoLabelFilters(score_threshold=0.0, min_box_size=10))
    assert kept.tolist() == [0, 1, 3, 4]
    kept = filter_pseudo_labels(boxes, scores, PseudoLabelFilters(score_threshold=0.0, min_box_size=10.5))
    assert kept.tolist() == [0, 1, 3]
    kept = filter_pseudo_labels(boxes, scores, PseudoLabelFilters(score_threshold=0.0, min_box_size=2))
    assert kept.tolist() == [0, 1, 2, 3, 4]


def test_filter_nms_is_class_agnostic_and_optional():
    boxes, scores = boxes_and_scores()
    kept = filter_pseudo_labels(boxes, scores, PseudoLabelFilters(score_threshold=0.0, nms_threshold=0.5))
    assert kept.tolist() == [0, 2, 3, 4]  # box 1 overlaps box 0 (IoU ~0.82)
    kept = filter_pseudo_labels(boxes, scores, PseudoLabelFilters(score_threshold=0.0, nms_threshold=0.9))
    assert kept.tolist() == [0, 1, 2, 3, 4]


def test_filter_max_boxes_keeps_highest_scores():
    boxes, scores = boxes_and_scores()
    order = torch.tensor([4, 2, 0, 3, 1])  # unsorted input
    kept = filter_pseudo_labels(boxes[order], scores[order], PseudoLabelFilters(score_threshold=0.0, max_boxes=2))
    assert order[kept].tolist() == [0, 1]


@pytest.mark.parametrize(
    "arguments",
    [{"score_threshold": 1.0}, {"nms_threshold": 0.0}, {"min_box_size": -1}, {"max_boxes": 0}, {"min_boxes": -1}],
)
def test_filter_settings_are_checked(arguments):
    with pytest.raises(ValueError, match=next(iter(arguments))):
        PseudoLabelFilters(**arguments)


def test_min_boxes_drops_images_and_records_their_ids(teacher, captions, tmp_path):
    source = image_caption_source(captions, name="cc")
    run(teacher, source, tmp_path, filters=PseudoLabelFilters(score_threshold=0.2, min_boxes=1000))
    assert read_rows(tmp_path) == {}
    skipped = []
    for path in pseudo_label_shard_files(tmp_path):
        with open(path[: -len(".jsonl")] + ".meta.json") as handle:
            metadata = json.load(handle)
        skipped += [sample_id for ids in metadata["skipped_sample_ids"].values() for sample_id in ids]
    assert sorted(skipped) == sorted(record["sample_id"] for record in source.dataset)


def test_unusable_records_are_counted_not_labelled(teacher, tmp_path):
    rows = {
        "id": ["good", "pixel", "corrupt", "empty", "verbs"],
        "image": [
            {"bytes": image_bytes((200, 0, 0)), "path": None},
            {"bytes": image_bytes((1, 1, 1), size=(1, 1), image_format="PNG"), "path": None},
            {"bytes": b"not an image", "path": None},
            {"bytes": image_bytes((0, 0, 0)), "path": None},
            {"bytes": image_bytes((0, 0, 0)), "path": None},
        ],
        "caption": ["a red square", "a tracking pixel", "a broken file", "", "is running and was going"],
    }
    features = Features({"id": Value("string"), "image": ImageFeature(), "caption": Value("string")})
    Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "mixed.parquet"))
    summary = run(teacher, image_caption_source(tmp_path / "mixed.parquet", name="m"), tmp_path / "out", shard_size=8)
    assert summary["images_labelled"] == 1 and list(read_rows(tmp_path / "out")) == ["m:good"]
    with open(tmp_path / "out" / "shard-00000-00000.meta.json") as handle:
        metadata = json.load(handle)
    assert metadata["skipped_sample_ids"] == {
        "image_too_small": ["m:pixel"],
        "unreadable_image": ["m:corrupt"],
        "no_noun_phrase": ["m:empty", "m:verbs"],
    }
    assert metadata["num_records"] == 5 and metadata["num_rows"] == 1


# ------------------------------------------------------------------------------------------------ shards


def test_shards_hold_pseudo_labels_the_reader_takes(teacher, captions, reference_run):
    output_dir, summary = reference_run
    files = pseudo_label_shard_files(output_dir)
    assert [os.path.basename(path) for path in files] == [
        f"shard-{shard:05d}-{chunk:05d}.jsonl" for shard in range(2) for chunk in range(3)
    ]
    rows = read_rows(output_dir)
    assert summary["images_labelled"] == 10 and summary["rows_written"] == len(rows) > 0
    for row in rows.values():
        assert 1 <= len(row["bboxes"]) <= FILTERS.max_boxes
        assert all(score > FILTERS.score_threshold for score in row["scores"])
        assert row["scores"] == sorted(row["scores"], reverse=True)
        for phrase, spans in zip(row["phrases"], row["tokens_positive"]):
            assert all(row["caption"][begin:end].lower() == phrase.lower() for begin, end in spans)
        for x1, y1, x2, y2 in row["bboxes"]:
            assert 0 <= x1 <= x2 <= row["img_w"] - 1 and 0 <= y1 <= y2 <= row["img_h"] - 1
        assert os.path.isfile(os.path.join(output_dir, row["file_name"]))
    # Teacher and thresholds are recorded with every shard.
    with open(files[0][: -len(".jsonl")] + ".meta.json") as handle:
        metadata = json.load(handle)
    assert metadata["filters"]["score_threshold"] == 0.2 and metadata["filters"]["max_boxes"] == 4
    assert metadata["teacher"]["class"] == "GLIPForGrounding" and metadata["teacher"]["name"]
    assert metadata["noun_phrase_extractor"] == "offline" and metadata["num_records"] == 2
    assert read_pseudo_label_run(output_dir)["shard_size"] == 2

    # `pseudo_label_source` reads them, and the training transform turns them into samples.
    source = pseudo_label_source(files, output_dir, score_threshold=0.2)
    records = list(source.dataset)
    assert len(records) == len(rows) and all(record["error"] == "" for record in records)
    assert sorted(record["caption"] for record in records) == sorted(row["caption"] for row in rows.values())
    _, processor = teacher
    transform = GLIPTrainingTransform(processor.tokenizer, processor.image_processor, max_length=32)
    stream = GLIPTrainingStream(
        [pseudo_label_output_source(output_dir)], transform, shuffle_buffer_size=0, max_epochs=1
    )
    samples = list(stream)
    assert len(samples) == len(rows) and stream.counter.num_skipped == 0


def test_webdataset_images_are_stored_and_read_back(teacher, tmp_path):
    write_webdataset(tmp_path / "wds", num_shards=1, per_shard=3)
    run(teacher, image_caption_source(tmp_path / "wds", name="web"), tmp_path / "out", shard_size=10)
    rows = read_rows(tmp_path / "out")
    assert set(rows) <= {f"web:00000.tar:00000{index:04d}" for index in range(3)} and rows
    assert all(row["file_name"].startswith("images/shard-00000-00000/") for row in rows.values())
    assert all(record["error"] == "" for record in pseudo_label_output_source(tmp_path / "out").dataset)


def test_two_processes_split_the_work_and_union_equals_one_process(teacher, captions, reference_run, tmp_path):
    reference_dir, _ = reference_run
    source = image_caption_source(captions, name="cc")
    summaries = [run(teacher, source, tmp_path, process_index=index, num_processes=2) for index in range(2)]
    assert [summary["images_labelled"] for summary in summaries] == [5, 5]  # one input shard each
    assert read_rows(tmp_path) == read_rows(reference_dir)


def test_fewer_shards_than_processes_split_chunks(teacher, captions, reference_run, tmp_path):
    reference_dir, _ = reference_run
    source = image_caption_source(captions, name="cc")
    summaries = [run(teacher, source, tmp_path, process_index=index, num_processes=3) for index in range(3)]
    assert sum(summary["images_labelled"] for summary in summaries) == 10
    assert all(summary["images_labelled"] > 0 for summary in summaries)
    assert read_rows(tmp_path) == read_rows(reference_dir)


def test_restart_skips_complete_shards_without_duplicates(teacher, captions, reference_run, tmp_path, monkeypatch):
    reference_dir, _ = reference_run
    source = image_caption_source(captions, name="cc")
    real_detect = pseudo_labeling.detect
    calls = []

    def crashing_detect(*args, **kwargs):
        calls.append(len(args[2]))
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real_detect(*args, **kwargs)

    monkeypatch.setattr(pseudo_labeling, "detect", crashing_detect)
    with pytest.raises(KeyboardInterrupt):
        run(teacher, source, tmp_path)
    written = pseudo_label_shard_files(tmp_path)
    assert len(written) == 2  # the crash hit the third unit: it left no (partial) shard
    monkeypatch.setattr(pseudo_labeling, "detect", real_detect)
    summary = run(teacher, source, tmp_path)
    assert summary["units_already_complete"] == 2 and summary["images_labelled"] == 10 - 4
    assert read_rows(tmp_path) == read_rows(reference_dir)
    # A finished run restarted labels nothing (finished input shards are not even read).
    again = run(teacher, source, tmp_path)
    assert again["images_labelled"] == 0 and again["units_written"] == 0
    # ... also when restarted with another number of processes.
    assert run(teacher, source, tmp_path, process_index=1, num_processes=2)["images_labelled"] == 0


def test_restart_with_other_settings_is_refused(teacher, captions, reference_run):
    output_dir, _ = reference_run
    source = image_caption_source(captions, name="cc")
    with pytest.raises(ValueError, match="filters"):
        run(teacher, source, output_dir, filters=PseudoLabelFilters(score_threshold=0.3))
    with pytest.raises(ValueError, match="shard_size"):
        run(teacher, source, output_dir, shard_size=3)
    model, processor = teacher
    retrained = copy.deepcopy(model)
    with torch.no_grad():
        next(retrained.parameters()).add_(1.0)
    with pytest.raises(ValueError, match="weights_fingerprint"):
        run((retrained, processor), source, output_dir)
    # The same teacher under another name (moved folder) continues the run.
    assert run(teacher, source, output_dir, teacher_name="moved/teacher")["images_labelled"] == 0


@pytest.mark.parametrize(
    "arguments, error",
    [
        ({"process_index": 2, "num_processes": 2}, "process_index"),
        ({"shard_size": 0}, "shard_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"noun_phrase_extractor": "spacy"}, "noun_phrase_extractor"),
    ],
)
def test_bad_arguments(teacher, captions, tmp_path, arguments, error):
    with pytest.raises(ValueError, match=error):
        run(teacher, image_caption_source(captions), tmp_path, **arguments)
    model, processor = teacher
    with pytest.raises(TypeError, match="GroundingSource"):
        pseudo_label_stream(model, processor, [], tmp_path)


def test_example_script_labels_and_resumes(tiny_a_dir, captions, reference_run, tmp_path):
    """`examples/pseudo_label.py` (Accelerate, one process here) writes the same shards as the library call and a
    summary; rerun, it labels nothing."""
    import importlib.util

    from accelerate.state import AcceleratorState

    script = os.path.join(os.path.dirname(__file__), "..", "examples", "pseudo_label.py")
    specification = importlib.util.spec_from_file_location("pseudo_label_example", script)
    example = importlib.util.module_from_spec(specification)
    specification.loader.exec_module(example)
    arguments = [
        "--teacher", str(tiny_a_dir), "--data", str(captions), "--name", "cc", "--output_dir", str(tmp_path),
        "--score_threshold", "0.2", "--max_boxes", "4", "--shard_size", "2", "--batch_size", "2",
        "--min_size", "64", "--max_size", "107", "--cpu", "--no_progress",
    ]  # fmt: skip
    for expected_images in (10, 0):
        try:
            example.main(arguments)
        finally:
            AcceleratorState._reset_state(reset_partial_state=True)
        with open(tmp_path / "pseudo_label_summary.json") as handle:
            summary = json.load(handle)
        assert summary["images_labelled"] == expected_images and summary["shards"] == 6
    rows, reference = read_rows(tmp_path), read_rows(reference_run[0])
    assert rows.keys() == reference.keys()
    for sample_id, row in rows.items():  # the teacher is named differently, the labels are the same
        assert row == reference[sample_id]
    assert read_pseudo_label_run(tmp_path)["teacher"]["name"] == str(tiny_a_dir)
