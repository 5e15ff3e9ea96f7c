"""Publishing converted checkpoints: the converter's Hub input (`REPO_ID:FILENAME`), `--push_to_hub` with the model
card, checked offline against a local stand-in for the Hub API (`hub_stand_in.RecordingHubApi`)."""

import json
from pathlib import Path

import huggingface_hub
import pytest
from hub_stand_in import RecordingHubApi
from huggingface_hub import ModelCardData, metadata_load

from transformers_glip.conversion.cli import main, resolve_hub_file
from transformers_glip.model_card_glip import (
    check_model_card,
    load_evaluation_summary,
    publish_folder,
    summaries_from_evaluation_report,
)

FIXTURE = Path(__file__).parent / "fixtures" / "tiny_a"
EVALUATE_REPORT = {  # the shape of examples/evaluate.py's summary.json (fractions, -1 = no ground truth)
    "model": "glip-t",
    "num_processes": 1,
    "datasets": {
        "coco": {
            "task": "coco",
            "num_samples": 5000,
            "metrics": {"AP": 0.46612, "AP50": 0.62, "APs": -1.0, "per_category": {"person": 0.7}},
        },
        "flickr": {"task": "flickr", "num_samples": 10, "metrics": {"separate": {"Recall@1": 0.8}, "num_phrases": 3}},
    },
}


@pytest.fixture
def hub(monkeypatch):
    """`huggingface_hub.HfApi` replaced by one recording stand-in; `hf_hub_download` serves the tiny_a fixture."""
    api = RecordingHubApi()
    downloads = []

    def download(repo_id, filename, revision=None):
        downloads.append((repo_id, filename, revision))
        if filename != "glip_tiny_model_o365_goldg.pth":
            raise huggingface_hub.errors.EntryNotFoundError(f"{filename} is not in {repo_id}")
        return str(FIXTURE / "checkpoint.pth")

    monkeypatch.setattr(huggingface_hub, "HfApi", lambda token=None: api)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    api.downloads = downloads
    return api


def convert_arguments(output, *extra):
    return [
        "--original-config",
        str(FIXTURE / "config.yaml"),
        "--text-model",
        str(FIXTURE / "bert"),
        "--output",
        str(output),
        *extra,
    ]


def test_hub_checkpoint_is_downloaded_and_a_local_path_wins(hub, tmp_path):
    path, repo_id = resolve_hub_file("GLIPModel/GLIP:glip_tiny_model_o365_goldg.pth")
    assert (path, repo_id) == (FIXTURE / "checkpoint.pth", "GLIPModel/GLIP")
    resolve_hub_file("GLIPModel/GLIP@v1:glip_tiny_model_o365_goldg.pth")
    assert hub.downloads[-1] == ("GLIPModel/GLIP", "glip_tiny_model_o365_goldg.pth", "v1")
    local = tmp_path / "owner" / "name:file.pth"  # a local file that looks like a Hub reference
    local.parent.mkdir()
    local.write_bytes(b"")
    count = len(hub.downloads)
    assert resolve_hub_file(str(local)) == (local, None)
    assert resolve_hub_file("weights/model.pth") == (Path("weights/model.pth"), None)
    assert len(hub.downloads) == count
    with pytest.raises(ValueError, match="--checkpoint.*missing.pth.*REPO_ID:FILENAME"):
        resolve_hub_file("GLIPModel/GLIP:missing.pth", "--checkpoint")


def test_convert_from_the_hub_and_push_with_the_model_card(hub, tmp_path):
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps(EVALUATE_REPORT))
    output = tmp_path / "glip-t-c"
    main(
        [
            "--checkpoint",
            "GLIPModel/GLIP:glip_tiny_model_o365_goldg.pth",
            *convert_arguments(output),
            "--datasets",
            "objects365",
            "goldg",
            "--evaluation_summary",
            str(summary),
            "--push_to_hub",
            "someone/glip-tiny",
            "--private",
            "--revision",
            "converted",
        ]
    )
    assert hub.calls == [
        ("create_repo", "someone/glip-tiny", {"private": True, "exist_ok": True}),
        ("create_branch", "someone/glip-tiny", {"branch": "converted", "exist_ok": True}),
    ]
    (upload,) = hub.uploads
    assert upload["revision"] == "converted"
    assert upload["commit_message"] == "Convert GLIPModel/GLIP:glip_tiny_model_o365_goldg.pth with transformers-glip"
    files = set(upload["files"])
    assert {
        "model.safetensors",
        "config.json",
        "processor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "glip_shim.py",
        "modeling_glip.py",
        "pipeline_glip.py",
        "README.md",
    } <= files
    assert files == {path.name for path in output.iterdir()}  # the upload is the local folder
    assert hub.uploaded_json("config.json")["custom_pipelines"]["zero-shot-object-detection"]

    card = hub.uploaded_card()
    data = check_model_card(card)  # offline validation (ModelCard.validate posts to the Hub)
    metadata = metadata_load(output / "README.md")
    assert ModelCardData(**metadata).to_dict() == metadata  # the metadata round-trips through huggingface_hub
    assert metadata["license"] == "mit" and metadata["pipeline_tag"] == "zero-shot-object-detection"
    assert metadata["library_name"] == "transformers" and "glip" in metadata["tags"]
    assert metadata["base_model"] == "GLIPModel/GLIP"  # the repository of the Hub checkpoint
    assert metadata["datasets"] == ["objects365", "goldg"]
    results = {(result.dataset_name, result.metric_type): result.metric_value for result in data.eval_results}
    assert results == {("coco", "AP"): 46.61, ("coco", "AP50"): 62.0}  # percent; -1, breakdowns, flickr left out
    assert "someone/glip-tiny" in card.text and "trust_remote_code=True" in card.text


def test_local_conversion_writes_the_card_and_uploads_nothing(hub, tmp_path):
    output = tmp_path / "local"
    main(["--checkpoint", str(FIXTURE / "checkpoint.pth"), *convert_arguments(output, "--base_model", "me/base")])
    assert hub.downloads == [] and hub.uploads == [] and hub.calls == []
    metadata = metadata_load(output / "README.md")
    assert metadata["base_model"] == "me/base" and "model-index" not in metadata
    # a reconversion into the folder (README.md and the code files included) needs no --overwrite
    main(["--checkpoint", str(FIXTURE / "checkpoint.pth"), *convert_arguments(output)])
    assert "base_model" not in metadata_load(output / "README.md")


def test_converter_refuses_a_missing_hub_file_and_a_bad_summary(hub, tmp_path):
    with pytest.raises(ValueError, match="--checkpoint.*nothing.pth"):
        main(["--checkpoint", "GLIPModel/GLIP:nothing.pth", *convert_arguments(tmp_path / "a")])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json.*not json"):
        main(
            [
                "--checkpoint",
                str(FIXTURE / "checkpoint.pth"),
                *convert_arguments(tmp_path / "b"),
                "--evaluation_summary",
                str(bad),
            ]
        )
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # refused before converting


def test_evaluation_report_to_card_summaries(tmp_path):
    summaries = summaries_from_evaluation_report(EVALUATE_REPORT)
    assert summaries == [
        {
            "dataset": "coco",
            "task": "zero-shot-object-detection",
            "metrics": {"AP": 46.61, "AP50": 62.0},
        }
    ]
    card_format = tmp_path / "card.json"
    card_format.write_text(json.dumps({"dataset": "COCO 2017", "metrics": {"AP": 46.7}}))
    assert load_evaluation_summary(card_format) == {"dataset": "COCO 2017", "metrics": {"AP": 46.7}}
    for content, message in [
        ({"datasets": {"coco": {"metrics": {"AP": -1.0}}}}, "no figure"),
        ({"datasets": {}}, "summary.json"),
        ({"dataset": "COCO"}, "metrics"),
    ]:
        card_format.write_text(json.dumps(content))
        with pytest.raises(ValueError, match=message):
            load_evaluation_summary(card_format)
    with pytest.raises(ValueError, match="cannot be read"):
        load_evaluation_summary(tmp_path / "missing.json")


def test_publish_folder_refuses_a_bad_repo_id(tiny_a_dir):
    with pytest.raises(ValueError, match="repo_id"):
        publish_folder(tiny_a_dir, "not a repo id", api=RecordingHubApi())
