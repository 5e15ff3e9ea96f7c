"""Tests of the model card generation (`model_card_glip.py`): metadata, template rendering, offline validation."""

import math
from pathlib import Path

import pytest
from huggingface_hub import ModelCard, metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results

from transformers_glip import GLIPConfig
from transformers_glip.model_card_glip import (
    REQUIRED_TAGS,
    build_model_card,
    check_model_card,
    default_template_path,
    eval_results_from_summary,
)

REPOSITORY = Path(__file__).resolve().parents[1]

COCO_SUMMARY = {
    "dataset": {"name": "COCO 2017", "type": "detection-datasets/coco", "split": "val2017"},
    "metrics": {"AP": 46.7, "AP50": 62.1, "AP50_per_category": {"person": 70.2}},
    "source": {"name": "GLIP paper, Table 2", "url": "https://arxiv.org/abs/2112.03857"},
}
LVIS_SUMMARY = {"dataset": "LVIS minival", "metrics": {"AP": 26.0}, "task": "object-detection"}


@pytest.fixture(scope="module")
def full_card() -> ModelCard:
    return build_model_card(
        GLIPConfig(),
        base_model="GLIPModel/GLIP",
        datasets=["objects365", "goldg"],
        evaluation_summary=[COCO_SUMMARY, LVIS_SUMMARY],
        repo_id="someone/glip-tiny",
        tags=["my-tag"],
    )


def test_card_metadata(full_card):
    data = full_card.data.to_dict()
    assert data["license"] == "mit"
    assert data["library_name"] == "transformers"
    assert data["pipeline_tag"] == "zero-shot-object-detection"
    assert set(REQUIRED_TAGS) <= set(data["tags"]) and "my-tag" in data["tags"]
    assert data["base_model"] == "GLIPModel/GLIP"
    assert data["datasets"] == ["objects365", "goldg"]
    (entry,) = data["model-index"]
    assert entry["name"] == "GLIP-T"
    name, results = model_index_to_eval_results(data["model-index"])
    found = {(result.dataset_name, result.metric_type): result for result in results}
    # the numeric metrics, not the per-category breakdown
    assert set(found) == {("COCO 2017", "AP"), ("COCO 2017", "AP50"), ("LVIS minival", "AP")}
    assert found[("COCO 2017", "AP")].metric_value == 46.7
    assert found[("COCO 2017", "AP50")].dataset_type == "detection-datasets/coco"
    assert found[("COCO 2017", "AP50")].dataset_split == "val2017"
    assert found[("COCO 2017", "AP")].source_url == "https://arxiv.org/abs/2112.03857"
    assert found[("COCO 2017", "AP")].task_type == "zero-shot-object-detection"
    assert found[("LVIS minival", "AP")].task_type == "object-detection"
    assert found[("LVIS minival", "AP")].dataset_type == "LVIS minival"


def test_card_body(full_card):
    text = full_card.text
    assert text.lstrip().startswith("# GLIP-T\n")
    assert "| COCO 2017 | val2017 | zero-shot-object-detection | AP50 | 62.1 |" in text
    assert "| LVIS minival |  | object-detection | AP | 26 | measured |" in text
    assert 'model="someone/glip-tiny"' in text
    assert "[GLIPModel/GLIP](https://huggingface.co/GLIPModel/GLIP)" in text
    assert "| pre-training data | objects365, goldg |" in text
    assert "Swin-T (embed_dim 96, depths 2-2-6-2, window 7)" in text
    assert "{{" not in text and "{%" not in text and "{#" not in text


def test_card_validates_offline_and_round_trips(full_card, tmp_path):
    data = check_model_card(full_card)
    assert data.to_dict() == full_card.data.to_dict()
    path = tmp_path / "README.md"
    full_card.save(path)
    assert metadata_load(path) == full_card.data.to_dict()  # the Hub's metadata parse of the written file
    reloaded = ModelCard.load(path)
    assert reloaded.data.to_dict() == full_card.data.to_dict()
    assert [result.metric_value for result in reloaded.data.eval_results] == [46.7, 62.1, 26.0]


def test_minimal_card_has_no_evaluation_section():
    card = build_model_card(GLIPConfig.glip_t_a(), license="apache-2.0")
    data = check_model_card(card).to_dict()
    assert data["license"] == "apache-2.0"
    assert "model-index" not in data and "base_model" not in data and "datasets" not in data
    assert "model_name" not in data
    assert "## Evaluation" not in card.text
    assert card.text.lstrip().startswith("# GLIP-T (A)\n")
    assert "| deep fusion | no |" in card.text
    assert 'model="<this repo>"' in card.text
    assert "converted from the official microsoft/GLIP release" in card.text


def test_variant_name_description_and_model_name():
    large = build_model_card(GLIPConfig.glip_l(), description="Fine-tuned on the demo world.")
    assert large.text.lstrip().startswith("# GLIP-L\n")
    assert "Fine-tuned on the demo world." in large.text
    assert "converted from the official" not in large.text
    named = build_model_card(GLIPConfig(), model_name="My GLIP", evaluation_summary=LVIS_SUMMARY)
    assert named.data.to_dict()["model-index"][0]["name"] == "My GLIP"
    assert named.text.lstrip().startswith("# My GLIP\n")


def test_base_model_list_and_custom_template(tmp_path):
    template = tmp_path / "card.md"
    template.write_text("---\n{{ card_data }}\n---\n\n# {{ model_name }} for {{ repo_id }}\n", encoding="utf-8")
    card = build_model_card(
        GLIPConfig(), base_model=["GLIPModel/GLIP", "bert-base-uncased"], template_path=template, repo_id="a/b"
    )
    assert card.data.base_model == ["GLIPModel/GLIP", "bert-base-uncased"]
    assert card.text.strip() == "# GLIP-T for a/b"
    check_model_card(card)


def test_default_template_is_the_repository_model_card():
    assert default_template_path() == (REPOSITORY / "model_card.md").resolve()


def test_eval_results_from_summary_single_dict():
    results = eval_results_from_summary({"dataset": "ODinW-13", "split": "test", "metrics": {"AP": 52}})
    assert [(result.metric_type, result.metric_value, result.dataset_split) for result in results] == [
        ("AP", 52, "test")
    ]


@pytest.mark.parametrize(
    ("summary", "error", "message"),
    [
        ("COCO", TypeError, "evaluation_summary"),
        ([], TypeError, "evaluation_summary"),
        ([42], TypeError, r"evaluation_summary\[0\]"),
        ({"dataset": "COCO", "metric": {"AP": 1.0}}, ValueError, "unknown keys"),
        ({"metrics": {"AP": 1.0}}, ValueError, "dataset"),
        ({"dataset": {"type": "coco"}, "metrics": {"AP": 1.0}}, ValueError, "dataset"),
        ({"dataset": {"name": "COCO", "splitt": "val"}, "metrics": {"AP": 1.0}}, ValueError, "unknown keys"),
        ({"dataset": "COCO"}, ValueError, "metrics"),
        ({"dataset": "COCO", "metrics": {}}, ValueError, "metrics"),
        ({"dataset": "COCO", "metrics": {"AP": "high"}}, ValueError, "finite number"),
        ({"dataset": "COCO", "metrics": {"AP": math.nan}}, ValueError, "finite number"),
        ({"dataset": "COCO", "metrics": {"AP": True}}, ValueError, "finite number"),
        ({"dataset": "COCO", "metrics": {"per_category": {"a": 1.0}}}, ValueError, "no number"),
        ({"dataset": "COCO", "metrics": {"AP": 1.0}, "source": {"url": "x"}}, ValueError, "source"),
        ({"dataset": "COCO", "metrics": {"AP": 1.0}, "split": ""}, ValueError, "split"),
    ],
)
def test_bad_evaluation_summary(summary, error, message):
    with pytest.raises(error, match=message):
        build_model_card(GLIPConfig(), evaluation_summary=summary)


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"config": {"model_type": "glip"}}, TypeError, "GLIPConfig"),
        ({"base_model": "not a repo id!"}, ValueError, "base_model"),
        ({"base_model": []}, TypeError, "base_model"),
        ({"datasets": ["coco", ""]}, ValueError, r"datasets\[1\]"),
        ({"license": "MIT License"}, ValueError, "license"),
        ({"tags": "glip"}, None, None),
        ({"model_name": ""}, ValueError, "model_name"),
        ({"template_path": "/nonexistent/model_card.md"}, FileNotFoundError, "template_path"),
    ],
)
def test_bad_arguments(arguments, error, message):
    arguments = {"config": GLIPConfig(), **arguments}
    if error is None:  # a single string is accepted where a list is
        check_model_card(build_model_card(**arguments))
        return
    with pytest.raises(error, match=message):
        build_model_card(**arguments)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("pipeline_tag: zero-shot-object-detection", "pipeline_tag: object-detection", "pipeline_tag"),
        ("library_name: transformers", "library_name: timm", "library_name"),
        ("- glip\n", "", "tags"),
        ("license: mit", "license: My License", "license"),
        ("base_model: GLIPModel/GLIP", "base_model: not a repo id!", "base_model"),
        ("value: 46.7", "value: .nan", "model-index metric"),
        ("- name: GLIP-T\n", "- results_only: true\n", "does not parse"),
        ("# GLIP-T\n", "# {{ model_name }}\n", "unrendered"),
    ],
)
def test_check_model_card_rejects(full_card, old, new, message):
    text = str(full_card)
    assert old in text
    with pytest.raises(ValueError, match=message):
        check_model_card(text.replace(old, new, 1))


def test_check_model_card_rejects_the_raw_template_and_a_card_without_metadata():
    with pytest.raises(ValueError, match="unrendered"):
        check_model_card(default_template_path().read_text(encoding="utf-8"))
    with pytest.raises(ValueError, match="YAML metadata"):
        check_model_card("# GLIP\n\nNo metadata.\n")
