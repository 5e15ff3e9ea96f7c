"""`examples/source_formats.py`: a tiny shard of every format, two records streamed through each library reader."""

import importlib.util
import os

import pytest

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPOSITORY, "examples", "source_formats.py")


@pytest.fixture(scope="module")
def source_formats():
    specification = importlib.util.spec_from_file_location("source_formats_example", SCRIPT)
    module = importlib.util.module_from_spec(specification)
    specification.loader.exec_module(module)
    return module


def test_every_format_streams_two_records(source_formats, tmp_path, capsys):
    streamed = source_formats.main(["--output_dir", str(tmp_path)])
    assert set(streamed) == set(source_formats.FORMATS) and len(streamed) == 7
    boxes = source_formats.BOXES
    for name, result in streamed.items():
        records = result["records"]
        assert len(records) == 2, name
        assert all("error" not in record for record in records), (name, records)
        assert len({record["sample_id"] for record in records}) == 2, name  # two distinct images
        if name.startswith("image-caption"):  # image-caption pairs: a caption, an image, no boxes
            assert all(record["caption"].startswith(source_formats.CAPTION) for record in records)
            assert all(record["boxes"] == [] and record["image"].endswith("bytes>") for record in records)
        else:  # every labelled format reads the same two boxes (xywh formats converted with the +1 rule)
            assert all(record["boxes"] == boxes for record in records), (name, records)
        if result["vocabulary"] is not None:
            assert result["vocabulary"] == source_formats.CATEGORIES, name
            assert all(record["labels"] == source_formats.CATEGORIES for record in records), name
    grounding = streamed["MDETR grounding json"]["records"][0]
    caption = grounding["caption"]
    assert [caption[begin:end] for ((begin, end),) in grounding["tokens_positive"]] == ["red square", "blue circle"]
    # The pseudo-label reader keeps the teacher's scores (the transform applies the threshold).
    assert streamed["GLIP pseudo-label jsonl"]["records"][0]["scores"] == [0.9, 0.4]
    output = capsys.readouterr().out
    assert 'image_caption_source("captions-wds/")' in output and output.count("## ") == 7


def test_bad_record_count_is_refused(source_formats, tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        source_formats.main(["--output_dir", str(tmp_path), "--num_records", "0"])
    assert raised.value.code == 2 and "--num_records must be >= 1" in capsys.readouterr().err
