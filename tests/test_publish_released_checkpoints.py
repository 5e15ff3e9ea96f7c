"""`tools/publish_released_checkpoints.py` run offline: the official downloads served by the tiny fixtures, the Hub
API by the recording stand-in (`hub_stand_in.RecordingHubApi`)."""

import importlib.util
import shutil
import sys
from pathlib import Path

import huggingface_hub
import pytest
from hub_stand_in import RecordingHubApi

from transformers_glip.model_card_glip import check_model_card

FIXTURES = Path(__file__).parent / "fixtures"
SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "publish_released_checkpoints.py"


@pytest.fixture(scope="module")
def publisher():
    specification = importlib.util.spec_from_file_location("publish_released_checkpoints", SCRIPT)
    module = importlib.util.module_from_spec(specification)
    sys.modules[specification.name] = module  # (dataclasses look their module up)
    specification.loader.exec_module(module)
    yield module
    sys.modules.pop(specification.name, None)


@pytest.fixture
def stand_in(publisher, tmp_path, monkeypatch):
    """A microsoft/GLIP checkout whose yamls are the tiny fixtures' (variant A's for GLIP-T (A)), and downloads of
    `GLIPModel/GLIP` files answered with the tiny checkpoints."""
    glip_repo = tmp_path / "GLIP"
    for item in publisher.RELEASED_CHECKPOINTS:
        source = FIXTURES / ("tiny_a_variant_a" if item.key == "glip-t-a" else "tiny_a") / "config.yaml"
        (glip_repo / item.original_config).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, glip_repo / item.original_config)
    downloads = []

    def download(repo_id, filename, revision=None):
        downloads.append((repo_id, filename))
        return str(
            FIXTURES / ("tiny_a_variant_a" if filename == "glip_a_tiny_o365.pth" else "tiny_a") / "checkpoint.pth"
        )

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    return glip_repo, downloads


def test_every_released_variant_is_converted_and_published(publisher, stand_in, tmp_path):
    glip_repo, downloads = stand_in
    api = RecordingHubApi()
    arguments = ["--glip_repo", str(glip_repo), "--namespace", "glip-org", "--work_dir", str(tmp_path / "work")]
    published = publisher.main([*arguments, "--text_model", str(FIXTURES / "tiny_a" / "bert"), "--private"], api=api)
    released = publisher.RELEASED_CHECKPOINTS
    assert [name for name, _ in downloads] == ["GLIPModel/GLIP"] * 5
    assert [file for _, file in downloads] == [
        "glip_a_tiny_o365.pth",
        "glip_tiny_model_o365.pth",
        "glip_tiny_model_o365_goldg.pth",
        "glip_tiny_model_o365_goldg_cc_sbu.pth",
        "glip_large_model.pth",
    ]
    assert list(published) == [f"glip-org/{item.repo_name}" for item in released]
    assert [call[2]["private"] for call in api.calls] == [True] * 5
    for item, upload in zip(released, api.uploads):
        assert upload["commit_message"] == f"{item.model_name}: convert {item.checkpoint} ({item.original_config})"
        assert {"model.safetensors", "config.json", "tokenizer.json", "glip_shim.py", "README.md"} <= set(
            upload["files"]
        )
        card = huggingface_hub.ModelCard(upload["files"]["README.md"].decode())
        data = check_model_card(card)
        assert data.base_model == "GLIPModel/GLIP" and data.datasets == list(item.datasets)
        assert card.text.lstrip().startswith(f"# {item.model_name}")
        figures = {(result.dataset_name, result.metric_type): result.metric_value for result in data.eval_results}
        expected = {
            (summary["dataset"]["name"], metric): value
            for summary in item.evaluation
            for metric, value in summary["metrics"].items()
        }
        assert figures == expected and all(result.source_url for result in data.eval_results)
    by_name = {item.model_name: item for item in released}
    assert by_name["GLIP-T (C)"].evaluation[0]["metrics"] == {"AP": 46.7}  # COCO zero-shot, paper Table 2
    assert by_name["GLIP-L"].evaluation[1]["metrics"] == {"AP": 37.3, "APr": 28.2}  # LVIS MiniVal, paper Table 3


def test_dry_run_writes_cards_and_uploads_nothing(publisher, stand_in, tmp_path):
    glip_repo, _ = stand_in
    api = RecordingHubApi()
    published = publisher.publish_released_checkpoints(
        glip_repo, "me", tmp_path / "work", variants=["glip-t-a"], text_model=str(FIXTURES / "tiny_a" / "bert"),
        dry_run=True, api=api,
    )  # fmt: skip
    assert api.uploads == [] and published == {"me/glip-tiny-a-o365": str(tmp_path / "work" / "glip-tiny-a-o365")}
    check_model_card((tmp_path / "work" / "glip-tiny-a-o365" / "README.md").read_text())


def test_bad_variants_and_a_missing_yaml_fail_before_downloading(publisher, stand_in, tmp_path):
    glip_repo, downloads = stand_in
    with pytest.raises(ValueError, match="glip-xl"):
        publisher.publish_released_checkpoints(glip_repo, "me", tmp_path, variants=["glip-xl"])
    (glip_repo / "configs" / "pretrain" / "glip_Swin_L.yaml").unlink()
    with pytest.raises(ValueError, match="glip_Swin_L.yaml.*microsoft/GLIP"):
        publisher.publish_released_checkpoints(glip_repo, "me", tmp_path)
    assert downloads == []
