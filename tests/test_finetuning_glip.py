"""Fine-tuning modes (official parameter sets, eval-mode freezing), prompt offsets (model, converter round trip),
official few-shot sampling, and 3-step `examples/finetune.py` runs per mode."""

import copy
import importlib.util
import json
import os
import random
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState
from transformers import AutoTokenizer

from transformers_glip import GLIPConfig, GLIPForGrounding
from transformers_glip.conversion import convert_checkpoint, rename_state_dict
from transformers_glip.data import SyntheticShapesConfig, generate_synthetic_shapes
from transformers_glip.finetuning_glip import (
    apply_tuning_mode,
    normalize_tuning_mode,
    sample_few_shot_coco,
    tuning_parameter_groups,
)
from transformers_glip.image_processing_glip import GLIPImageProcessor
from transformers_glip.processing_glip import GLIPProcessor

TESTS = Path(__file__).parent
REPOSITORY = TESTS.parent
TINY_A = TESTS / "fixtures" / "tiny_a"


def load_example(name):
    specification = importlib.util.spec_from_file_location(f"{name}_example", REPOSITORY / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(specification)
    specification.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def official_state_dict():
    checkpoint = torch.load(TINY_A / "checkpoint.pth", map_location="cpu", weights_only=True)
    state_dict = {key.removeprefix("module."): value for key, value in checkpoint["model"].items()}
    hidden = state_dict["language_backbone.body.model.embeddings.word_embeddings.weight"].shape[1]
    state_dict["rpn.tunable_linear.weight"] = torch.zeros(1000, hidden)
    return state_dict


@pytest.fixture(scope="module")
def tiny_a_config(tiny_a_dir):
    return GLIPConfig.from_pretrained(tiny_a_dir)


# The official rule (`GeneralizedVLRCNN.train` after `tuning_highlevel_override`), on official key names.
OFFICIAL_LINEAR_PROBE_SUBSTRINGS = (
    "bbox_pred",
    "cls_logits",
    "centerness",
    "cosine_scale",
    "dot_product_projection_text",
    "head.log_scale",
    "head.bias_lang",
    "head.bias0",
)


def officially_trainable(key: str, official_mode: str) -> bool:
    if "cls_logits" in key:  # USE_DOT_PRODUCT_TOKEN_LOSS freezes it in every mode
        return False
    if official_mode == "full":
        return "tunable_linear" not in key  # ADD_LINEAR_LAYER False: not built
    if official_mode == "linear_prob":
        return key.startswith("rpn.") and any(part in key[len("rpn.") :] for part in OFFICIAL_LINEAR_PROBE_SUBSTRINGS)
    if official_mode == "language_prompt_v2":
        return "tunable_linear" in key
    raise AssertionError(official_mode)


@pytest.mark.parametrize("mode", ["full", "linear_probe", "prompt_tuning"])
def test_modes_train_exactly_the_official_parameter_sets(mode, official_state_dict, tiny_a_config):
    config = copy.deepcopy(tiny_a_config)
    config.prompt_tuning_length = 1000
    renamed, _ = rename_state_dict(official_state_dict, config)
    official_key_of = {id(tensor): key for key, tensor in official_state_dict.items()}
    our_to_official = {ours: official_key_of[id(tensor)] for ours, tensor in renamed.items()}
    model = GLIPForGrounding(config)
    parameter_names = [name for name, _ in model.named_parameters()]
    assert set(parameter_names) <= set(our_to_official), "every parameter has an official counterpart"

    trainable = apply_tuning_mode(model, mode)
    official_mode = {"full": "full", "linear_probe": "linear_prob", "prompt_tuning": "language_prompt_v2"}[mode]
    expected = [name for name in parameter_names if officially_trainable(our_to_official[name], official_mode)]
    assert trainable == expected
    assert [name for name, parameter in model.named_parameters() if parameter.requires_grad] == expected
    if mode == "linear_probe":
        assert not any(".scales." in name for name in trainable) and len(trainable) == 9
    if mode == "prompt_tuning":
        assert trainable == ["model.prompt_offsets"]


@pytest.mark.parametrize(
    ("mode", "eval_modules"),
    [
        ("full", []),
        ("linear_probe", ["backbone", "feature_pyramid", "text_model"]),
        ("prompt_tuning", ["backbone", "feature_pyramid", "text_model", "head"]),
    ],
)
def test_frozen_modules_stay_in_eval_mode_after_train(mode, eval_modules, tiny_a_config):
    model = GLIPForGrounding(tiny_a_config)
    apply_tuning_mode(model, mode)
    model.eval()
    model.train()
    assert model.training
    for name in ("backbone", "feature_pyramid", "text_model", "head"):
        submodule = getattr(model.model, name)
        expect_training = name not in eval_modules
        assert all(module.training == expect_training for module in submodule.modules()), name
    model.train(False)
    assert not any(module.training for module in model.modules())


def test_official_mode_names_and_bad_input(tiny_a_config):
    assert normalize_tuning_mode("linear_prob") == "linear_probe"
    assert normalize_tuning_mode("language_prompt_v2") == "prompt_tuning"
    model = GLIPForGrounding(tiny_a_config)
    with pytest.raises(ValueError, match="Unknown fine-tuning mode 'language_prompt_v1'"):
        apply_tuning_mode(model, "language_prompt_v1")
    with pytest.raises(TypeError, match="GLIPForGrounding or a GLIPModel"):
        apply_tuning_mode(torch.nn.Linear(2, 2), "full")
    with pytest.raises(ValueError, match="only applies to mode 'prompt_tuning'"):
        apply_tuning_mode(model, "full", prompt_tuning_length=10)
    with pytest.raises(ValueError, match="positive integer"):
        apply_tuning_mode(model, "prompt_tuning", prompt_tuning_length=1.5)
    with pytest.raises(ValueError, match="prompt_tuning_length must be >= 0"):
        GLIPConfig(prompt_tuning_length=-1)


def test_parameter_groups_follow_make_optimizer(tiny_a_config):
    model = GLIPForGrounding(tiny_a_config)
    apply_tuning_mode(model, "prompt_tuning")
    (group,) = tuning_parameter_groups(model, learning_rate=0.05, weight_decay=0.25)
    assert group["name"] == "model.prompt_offsets" and group["lr"] == 0.05 and group["weight_decay"] == 0.25
    apply_tuning_mode(model, "full")
    groups = {group["name"]: group for group in tuning_parameter_groups(model, 1e-4, 0.05, 1e-5, 2.0)}
    assert "model.prompt_offsets" not in groups
    assert groups["model.head.bias_lang"]["lr"] == 2e-4 and groups["model.head.bias_lang"]["weight_decay"] == 0.0
    text_bias = "model.text_model.encoder.layer.0.output.dense.bias"
    assert groups[text_bias]["lr"] == pytest.approx(2e-5) and groups[text_bias]["weight_decay"] == 0.0
    text_norm = "model.text_model.encoder.layer.0.output.LayerNorm.weight"
    assert groups[text_norm]["lr"] == 1e-5 and groups[text_norm]["weight_decay"] == 0.05  # norm factor 1.0
    assert groups["model.head.token_projection.weight"]["weight_decay"] == 0.05


def detection_inputs(config, sequence_length=12):
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(1, 3, 64, 96, generator=generator)
    input_ids = torch.randint(1000, 2000, (1, sequence_length), generator=generator)
    input_ids[0, 0], input_ids[0, -1] = 101, 102
    return pixel_values, input_ids


def test_zero_offsets_change_nothing_and_sit_before_the_head(tiny_a_dir):
    plain = GLIPForGrounding.from_pretrained(tiny_a_dir).eval()
    prompted = GLIPForGrounding.from_pretrained(tiny_a_dir)
    apply_tuning_mode(prompted, "prompt_tuning", prompt_tuning_length=20)
    prompted.eval()
    assert prompted.config.prompt_tuning_length == 20 and torch.count_nonzero(prompted.model.prompt_offsets) == 0
    pixel_values, input_ids = detection_inputs(plain.config)
    with torch.no_grad():
        reference = plain(pixel_values=pixel_values, input_ids=input_ids).logits
        assert torch.equal(prompted(pixel_values=pixel_values, input_ids=input_ids).logits, reference)
        offsets = torch.randn(20, plain.config.text_hidden_size, generator=torch.Generator().manual_seed(1))
        prompted.model.prompt_offsets.copy_(offsets)
        changed = prompted(pixel_values=pixel_values, input_ids=input_ids).logits
        # With no padding the official placement (added to both `embedded` and `hidden`) equals adding the offsets
        # to BERT's last hidden state.
        hook = plain.model.text_model.register_forward_hook(
            lambda module, inputs, outputs: outputs.__setitem__(
                "last_hidden_state", outputs.last_hidden_state + offsets[: input_ids.shape[1]]
            )
        )
        hooked = plain(pixel_values=pixel_values, input_ids=input_ids).logits
        hook.remove()
    assert not torch.allclose(changed, reference, atol=1e-3)
    torch.testing.assert_close(changed, hooked, rtol=1e-5, atol=1e-5)
    too_long = torch.full((1, 21), 1000)
    with pytest.raises(ValueError, match="prompt offsets cover 20"):
        prompted(pixel_values=pixel_values, input_ids=too_long)


def test_prompt_tuned_official_checkpoint_round_trip(tmp_path, tiny_a_dir):
    checkpoint = torch.load(TINY_A / "checkpoint.pth", map_location="cpu", weights_only=True)
    hidden = checkpoint["model"]["module.language_backbone.body.model.embeddings.word_embeddings.weight"].shape[1]
    weight = torch.randn(1000, hidden, generator=torch.Generator().manual_seed(2)) * 0.5
    checkpoint["model"]["module.rpn.tunable_linear.weight"] = weight
    torch.save(checkpoint, tmp_path / "prompt_tuned.pth")
    output = tmp_path / "converted"
    convert_checkpoint(
        checkpoint_path=tmp_path / "prompt_tuned.pth",
        output_dir=output,
        original_config=TINY_A / "config.yaml",
        text_model=TINY_A / "bert",
    )
    model = GLIPForGrounding.from_pretrained(output).eval()
    assert model.config.prompt_tuning_length == 1000
    assert torch.equal(model.model.prompt_offsets, weight)
    plain = GLIPForGrounding.from_pretrained(tiny_a_dir).eval()
    pixel_values, input_ids = detection_inputs(model.config)
    with torch.no_grad():
        tuned = model(pixel_values=pixel_values, input_ids=input_ids).logits
        reference = plain(pixel_values=pixel_values, input_ids=input_ids).logits
        model.model.prompt_offsets.zero_()
        zeroed = model(pixel_values=pixel_values, input_ids=input_ids).logits
    # The offsets are the only difference; 1e-5: float32 rounding of the reordered sums of the factorised fusion
    # (observed 1.2e-6 on logits of magnitude ~10), far below the > 1e-2 change the random offsets make.
    torch.testing.assert_close(zeroed, reference, rtol=0, atol=1e-5)
    assert (tuned - reference).abs().max() > 1e-2


# ---------------------------------------------------------------------------------------------------------------
# few-shot sampling
# ---------------------------------------------------------------------------------------------------------------
def small_coco(categories_per_image, num_categories=3):
    images, annotations = [], []
    for image_id, categories in categories_per_image.items():
        images.append({"id": image_id, "file_name": f"{image_id}.png", "width": 50, "height": 50})
        for category in categories:
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": category, "bbox": [1, 1, 10, 10]}
            )
    categories = [{"id": index, "name": f"c{index}"} for index in range(1, num_categories + 1)]
    return {"images": images, "annotations": annotations, "categories": categories}


def test_few_shot_hand_checked_selection():
    coco = small_coco({5: [1], 2: [1, 2], 3: [2], 4: [3], 1: [1], 6: [2]})
    coco["annotations"].append({"id": 99, "image_id": 6, "category_id": 2, "bbox": [1, 1, 1, 10]})
    coco["annotations"] = [a for a in coco["annotations"] if not (a["image_id"] == 6 and a["bbox"][2] == 10)]
    # seed 0: sorted ids 1..5 (6 holds only a 1-pixel box: dropped); 1 takes c1, 2 takes c2 (c1 again), 3 is not
    # needed, 4 takes c3, 5 is not needed.
    subset = sample_few_shot_coco(coco, shots=1, seed=0)
    assert [image["id"] for image in subset["images"]] == [1, 2, 4]
    assert sorted(a["id"] for a in subset["annotations"]) == sorted(
        a["id"] for a in coco["annotations"] if a["image_id"] in (1, 2, 4)
    )
    assert subset["categories"] == coco["categories"] and subset["info"]["few_shot"]["shots"] == 1
    two = sample_few_shot_coco(coco, shots=2, seed=0)
    assert [image["id"] for image in two["images"]] == [1, 2, 3, 4]


def official_reference_selection(coco, shots, seed):
    """The official loop, written out with its list indexed by `category_id - 1`."""
    ids = sorted(image["id"] for image in coco["images"])
    annotations_of = {image_id: [a for a in coco["annotations"] if a["image_id"] == image_id] for image_id in ids}
    ids = [i for i in ids if annotations_of[i] and not all(min(a["bbox"][2:]) <= 1 for a in annotations_of[i])]
    if seed != 0:
        random.Random(seed).shuffle(ids)
    frequencies = [shots] * len(coco["categories"])
    kept = []
    for image_id in ids:
        categories = {a["category_id"] for a in annotations_of[image_id]}
        if sum(frequencies[c - 1] > 0 for c in categories):
            kept.append(image_id)
            for c in categories:
                frequencies[c - 1] -= 1
    return kept


@pytest.mark.parametrize("seed", [0, 3, 7])
@pytest.mark.parametrize("shots", [1, 3, 5])
def test_few_shot_is_the_official_selection_deterministic_and_k_per_category(tmp_path, seed, shots):
    rng = random.Random(123)
    coco = small_coco({i: rng.sample(range(1, 6), rng.randint(1, 3)) for i in range(1, 61)}, num_categories=5)
    subset = sample_few_shot_coco(coco, shots=shots, seed=seed, output_file=tmp_path / "subset.json")
    selected = [image["id"] for image in subset["images"]]
    assert selected == official_reference_selection(coco, shots, seed)
    assert json.loads((tmp_path / "subset.json").read_text()) == subset
    assert sample_few_shot_coco(coco, shots=shots, seed=seed) == subset
    for category in range(1, 6):
        images_with = {a["image_id"] for a in subset["annotations"] if a["category_id"] == category}
        assert len(images_with) >= shots
    if seed:
        assert selected != [image["id"] for image in sample_few_shot_coco(coco, shots=shots, seed=seed + 1)["images"]]


def test_few_shot_bad_input():
    coco = small_coco({1: [1]})
    with pytest.raises(ValueError, match="`shots` must be an integer >= 1"):
        sample_few_shot_coco(coco, shots=0, seed=1)
    with pytest.raises(ValueError, match="`seed` must be an integer"):
        sample_few_shot_coco(coco, shots=1, seed="a")
    with pytest.raises(ValueError, match=r"lacks \['categories'\]"):
        sample_few_shot_coco({"images": [], "annotations": []}, shots=1, seed=1)
    coco["annotations"][0]["category_id"] = 9
    with pytest.raises(ValueError, match="category_id 9, which is not in `categories`"):
        sample_few_shot_coco(coco, shots=1, seed=1)


# ---------------------------------------------------------------------------------------------------------------
# examples/finetune.py
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    world = root / "shapes"
    generate_synthetic_shapes(world, SyntheticShapesConfig(num_train=8, num_validation=2, num_train_shards=1))
    pretrain = load_example("pretrain")
    torch.manual_seed(0)
    model = GLIPForGrounding(pretrain.tiny_config(48))
    tokenizer = AutoTokenizer.from_pretrained(pretrain.DEFAULT_TOKENIZER)
    image_processor = GLIPImageProcessor(min_size=64, max_size=96, train_min_sizes=[64])
    model.save_pretrained(root / "model")
    GLIPProcessor(image_processor, tokenizer, max_text_length=48).save_pretrained(root / "model")
    return root, world


@pytest.mark.parametrize("mode", ["full", "linear_probe", "prompt_tuning"])
def test_three_step_finetune_run_per_mode(tiny_setup, tmp_path, mode):
    root, world = tiny_setup
    finetune = load_example("finetune")
    arguments = [
        "--model_name_or_path",
        str(root / "model"),
        "--mode",
        mode,
        "--train_annotation_file",
        str(world / "train" / "coco.json"),
        "--train_image_dir",
        str(world / "train"),
        "--eval_annotation_file",
        str(world / "validation" / "coco.json"),
        "--eval_image_dir",
        str(world / "validation"),
        "--shots",
        "1",
        "--shot_seed",
        "3",
        "--max_train_steps",
        "3",
        "--per_device_train_batch_size",
        "2",
        *(["--prompt_tuning_length", "48"] if mode == "prompt_tuning" else []),
        "--output_dir",
        str(tmp_path / "out"),
    ]
    try:
        finetune.main(arguments)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["mode"] == mode and "ap50" in summary
    few_shot = json.loads((tmp_path / "out" / "train_few_shot.json").read_text())
    assert few_shot["images"] and summary["train_images"] == len(few_shot["images"])
    start = dict(GLIPForGrounding.from_pretrained(root / "model").named_parameters())
    tuned = GLIPForGrounding.from_pretrained(tmp_path / "out")
    changed = {name for name, parameter in tuned.named_parameters() if name not in start}
    changed |= {
        name
        for name, parameter in tuned.named_parameters()
        if name in start and not torch.equal(parameter, start[name])
    }
    assert changed, "training changed nothing"
    assert changed <= set(summary["trainable_parameters"])  # frozen parameters are untouched
    if mode == "prompt_tuning":
        assert changed == {"model.prompt_offsets"} and tuned.config.prompt_tuning_length == 48
    if mode == "full":
        assert any(name.startswith("model.backbone.") for name in changed)


def test_finetune_rejects_bad_arguments(tiny_setup):
    root, world = tiny_setup
    finetune = load_example("finetune")
    base = ["--model_name_or_path", str(root / "model"), "--train_image_dir", str(world / "train")]
    with pytest.raises(SystemExit):
        finetune.parse_args([*base, "--train_annotation_file", str(world / "missing.json")])
    with pytest.raises(SystemExit):
        finetune.parse_args([*base, "--train_annotation_file", str(world / "train" / "coco.json"), "--mode", "x"])
    assert os.path.isfile(world / "train" / "coco.json")
