"""`--push_to_hub --hub_model_id --hub_token` of `examples/pretrain.py` and `examples/finetune.py`: the final output
folder is uploaded with a model card, checked offline against the Hub stand-in (`hub_stand_in.RecordingHubApi`)."""

import importlib.util
from pathlib import Path

import huggingface_hub
import pytest
import torch
from accelerate.state import AcceleratorState
from hub_stand_in import RecordingHubApi
from transformers import AutoTokenizer

from transformers_glip import GLIPForGrounding
from transformers_glip.data import SyntheticShapesConfig, generate_synthetic_shapes
from transformers_glip.image_processing_glip import GLIPImageProcessor
from transformers_glip.model_card_glip import check_model_card
from transformers_glip.processing_glip import GLIPProcessor

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name):
    specification = importlib.util.spec_from_file_location(f"{name}_push_example", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(specification)
    specification.loader.exec_module(module)
    return module


@pytest.fixture
def hub(monkeypatch):
    api = RecordingHubApi()

    def make_api(token=None):
        api.token = token
        return api

    monkeypatch.setattr(huggingface_hub, "HfApi", make_api)
    return api


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("push")
    world = root / "shapes"
    generate_synthetic_shapes(world, SyntheticShapesConfig(num_train=8, num_validation=2, num_train_shards=1))
    return world


def run(module, arguments):
    try:
        module.main(arguments)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def test_finetune_pushes_the_output_folder_with_a_card(hub, world, tmp_path):
    pretrain = load_example("pretrain")
    torch.manual_seed(0)
    model_dir = tmp_path / "model"
    GLIPForGrounding(pretrain.tiny_config(48)).save_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(pretrain.DEFAULT_TOKENIZER)
    image_processor = GLIPImageProcessor(min_size=64, max_size=96, train_min_sizes=[64])
    GLIPProcessor(image_processor, tokenizer, max_text_length=48).save_pretrained(model_dir)
    output = tmp_path / "ft-out"
    arguments = [
        "--model_name_or_path", str(model_dir), "--mode", "linear_probe",
        "--train_annotation_file", str(world / "train" / "coco.json"), "--train_image_dir", str(world / "train"),
        "--eval_annotation_file", str(world / "validation" / "coco.json"),
        "--eval_image_dir", str(world / "validation"),
        "--shots", "1", "--max_train_steps", "2", "--per_device_train_batch_size", "2", "--output_dir", str(output),
        "--push_to_hub", "--hub_model_id", "someone/glip-ft", "--hub_token", "secret",
    ]  # fmt: skip
    run(load_example("finetune"), arguments)
    (upload,) = hub.uploads
    assert hub.token == "secret" and upload["repo_id"] == "someone/glip-ft"
    assert upload["commit_message"] == "End of training"
    assert set(upload["files"]) == {path.name for path in output.iterdir()}
    assert {"model.safetensors", "config.json", "processor_config.json", "glip_shim.py", "README.md"} <= set(
        upload["files"]
    )
    card = hub.uploaded_card()
    data = check_model_card(card)
    assert "fine-tuned (`--mode linear_probe`)" in card.text and "converted from the official" not in card.text
    assert data.base_model is None  # a local starting folder is no Hub id
    assert {result.metric_type for result in data.eval_results} >= {"AP50"}
    assert all(result.dataset_name == "coco.json" for result in data.eval_results)


def test_pretrain_pushes_without_the_training_checkpoints(hub, world, tmp_path):
    output = tmp_path / "pt-out"
    arguments = [
        "--output_dir", str(output), "--synthetic_dir", str(world.parent / "pretrain-shapes"),
        "--synthetic_num_train", "8", "--synthetic_num_validation", "2", "--max_train_steps", "2",
        "--per_device_train_batch_size", "2", "--train_min_sizes", "64", "--min_size", "64", "--max_size", "96",
        "--max_length", "48", "--warmup_steps", "1", "--checkpointing_steps", "1", "--skip_final_evaluation",
        "--push_to_hub",
    ]  # fmt: skip
    run(load_example("pretrain"), arguments)
    (upload,) = hub.uploads
    assert upload["repo_id"] == "user/pt-out"  # the --output_dir name under the token's user
    assert (output / "checkpoints").is_dir()
    assert not any(name.startswith("checkpoints/") for name in upload["files"])
    assert {"model.safetensors", "modeling_glip.py", "README.md", "summary.json"} <= set(upload["files"])
    data = check_model_card(hub.uploaded_card())
    assert data.eval_results is None  # no evaluation ran
    assert "pre-trained with `examples/pretrain.py`" in hub.uploaded_card().text


@pytest.mark.parametrize("name", ["pretrain", "finetune"])
@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--hub_model_id", "someone/glip"], "--push_to_hub too"),
        (["--push_to_hub", "--hub_model_id", "not a valid id"], "--hub_model_id"),
    ],
)
def test_hub_arguments_are_checked_before_training(name, arguments, message, capsys, tmp_path):
    required = [] if name == "pretrain" else ["--model_name_or_path", "m", "--train_annotation_file", "a"]
    required += [] if name == "pretrain" else ["--train_image_dir", "i"]
    with pytest.raises(SystemExit) as exit_info:
        load_example(name).parse_args([*required, "--output_dir", str(tmp_path / "out"), *arguments])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
