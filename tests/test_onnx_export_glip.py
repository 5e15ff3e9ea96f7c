"""Tests of the ONNX export (`onnx_export_glip.py`) and of `glip export`: onnxruntime against eager PyTorch.

Models: a tiny random GLIP with the deformable head convolutions ON (so the graph holds ONNX `DeformConv` and the
offset reuse between levels of different sizes), the converted official parity fixture `tiny_a` (GLIP-T
architecture, deformable convs on), and the demo-size model of `examples/pretrain.py` (`tiny_config`) with random
weights. Each graph is run with onnxruntime's CPU provider on the same padded tensor as eager PyTorch.

Tolerances (measured maxima in brackets, fixture `tiny_a` at 320x448):
* `LOGIT_ATOL` 1e-4 [1.8e-5, logits up to ~10]: onnxruntime's GEMM / convolution kernels sum in another order than
  torch's; the fused BERT/fusion attentions and `1 / exp(log_scale)` scale those float32 rounding differences.
* `BOX_ATOL` 1e-3 px [2.4e-4 px, boxes up to ~930 px]: the decoder's `exp` of the deltas amplifies the same rounding;
  float32 spacing at 1000 px is 6e-5.
* `CENTERNESS_ATOL` 1e-4 [4.1e-6].
* Detections: the same number, labels and names; scores within `SCORE_ATOL` 1e-5 and boxes within `BOX_ATOL` (the
  parity tests' detection tolerances).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer

pytest.importorskip("onnx", reason="the ONNX export tests need onnx (pip install 'transformers-glip[export]')")
pytest.importorskip("onnxruntime", reason="the ONNX export tests need onnxruntime (the `export` extra)")

import onnx  # noqa: E402

from transformers_glip import GLIPConfig, GLIPForGrounding, GLIPImageProcessor, GLIPProcessor, cli  # noqa: E402
from transformers_glip.onnx_export_glip import (  # noqa: E402
    MINIMUM_OPSET_VERSION,
    GLIPOnnxDetector,
    decomposed_deform_conv2d,
    default_export_image_size,
    export_glip_to_onnx,
    export_pretrained_glip_to_onnx,
    onnx_metadata_path,
)

REPOSITORY = Path(__file__).resolve().parents[1]
FIXTURE = REPOSITORY / "tests" / "fixtures" / "tiny_a"
TOKENIZER = FIXTURE / "bert"
PRETRAIN_SCRIPT = REPOSITORY / "examples" / "pretrain.py"
LABELS = ["red circle", "blue square", "person"]
CAPTION = "a red circle next to a blue square"

LOGIT_ATOL = 1e-4
BOX_ATOL = 1e-3
CENTERNESS_ATOL = 1e-4
SCORE_ATOL = 1e-5


@pytest.fixture(autouse=True)
def one_torch_thread(single_torch_thread):
    """Exports and forwards of these tiny models are as fast on one thread (the machine's cores are shared)."""


@pytest.fixture(scope="module")
def image():
    return Image.open(FIXTURE / "image.png").convert("RGB")


def tiny_deformable_model_and_processor() -> tuple[GLIPForGrounding, GLIPProcessor]:
    """A tiny random GLIP-T-like model, deformable convs ON, 2 head blocks; candidates from score 0 on, so that the
    random weights give detections to compare."""
    torch.manual_seed(0)
    config = GLIPConfig(
        backbone_config={"embed_dim": 16, "depths": [1, 1, 2, 1], "num_heads": [1, 2, 2, 4], "drop_path_rate": 0.0},
        text_config={
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
            "max_position_embeddings": 64,
        },
        fpn_channels=32,
        num_head_blocks=2,
        fusion_hidden_size=64,
        fusion_num_heads=4,
        fusion_dropout=0.0,
        fpn_drop_block_prob=0.0,
        head_use_deformable_conv=True,
        max_text_length=32,
        pre_nms_score_threshold=0.0,
    )
    model = GLIPForGrounding(config).eval()
    with torch.no_grad():  # offsets of a few pixels (the official init is zero: then the convs sample the grid)
        for block in model.model.head.blocks:
            block.dyconv.offset_conv.weight.normal_(0.0, 0.05)
            block.dyconv.offset_conv.bias.uniform_(-2.0, 2.0)
    processor = GLIPProcessor(
        GLIPImageProcessor(min_size=64, max_size=107), AutoTokenizer.from_pretrained(TOKENIZER), max_text_length=32
    )
    return model, processor


@pytest.fixture(scope="module")
def tiny_deformable():
    return tiny_deformable_model_and_processor()


@pytest.fixture(scope="module")
def tiny_deformable_directory(tiny_deformable, tmp_path_factory) -> Path:
    """The tiny random model and its processor saved as a folder (what `glip export --model` reads)."""
    model, processor = tiny_deformable
    directory = tmp_path_factory.mktemp("tiny_deformable")
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def eager_outputs(model, encoded) -> dict[str, np.ndarray]:
    with torch.no_grad():
        outputs = model(
            pixel_values=encoded["pixel_values"],
            input_ids=encoded["input_ids"],
            attention_mask=encoded["attention_mask"],
            token_type_ids=encoded["token_type_ids"],
        )
    return {name: getattr(outputs, name).numpy() for name in ("logits", "pred_boxes", "centerness")}, outputs


def assert_outputs_close(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    tolerances = {"logits": LOGIT_ATOL, "pred_boxes": BOX_ATOL, "centerness": CENTERNESS_ATOL}
    for name, tolerance in tolerances.items():
        assert actual[name].shape == expected[name].shape, name
        difference = float(np.abs(actual[name] - expected[name]).max())
        assert difference <= tolerance, f"{name}: max |onnxruntime - eager| = {difference:.3g} > {tolerance}"


def assert_same_detections(actual: list[dict], expected: list[dict], minimum: int = 1) -> None:
    assert len(actual) == len(expected)
    for actual_image, expected_image in zip(actual, expected):
        assert len(expected_image["scores"]) >= minimum, "the comparison needs detections"
        assert actual_image["labels"].tolist() == expected_image["labels"].tolist()
        assert actual_image.get("text_labels") == expected_image.get("text_labels")
        torch.testing.assert_close(actual_image["scores"], expected_image["scores"], atol=SCORE_ATOL, rtol=0)
        torch.testing.assert_close(actual_image["boxes"], expected_image["boxes"], atol=BOX_ATOL, rtol=0)


def check_both_forms(model, processor, images, tmp_path, threshold, image_size=None, minimum=1, labels=LABELS):
    """Export both forms (the fixed one for `labels`), run them with onnxruntime on `images` (padded to the graph
    size) and compare the raw outputs and the detections with eager PyTorch + the processor's post-processing, for
    the prompts `labels` and `CAPTION`. Returns the fixed graph's path."""
    text_path = export_glip_to_onnx(model, processor, tmp_path / "text.onnx", image_size=image_size)
    fixed_path = export_glip_to_onnx(model, processor, tmp_path / "fixed.onnx", labels=labels, image_size=image_size)
    for path in (text_path, fixed_path):
        onnx.checker.check_model(str(path))
        operators = {node.op_type for node in onnx.load(str(path)).graph.node}
        assert ("DeformConv" in operators) == model.config.head_use_deformable_conv

    text_detector, fixed_detector = GLIPOnnxDetector(text_path), GLIPOnnxDetector(fixed_path)
    assert text_detector.input_names == ["pixel_values", "input_ids", "attention_mask", "token_type_ids"]
    assert fixed_detector.input_names == ["pixel_values"]
    for prompt in (labels, CAPTION):
        # One prompt per image: a label list each, or a caption each (`phrase_spans` None: its noun phrases).
        prompts = {"text": [prompt] * len(images)}
        if isinstance(prompt, str):
            prompts["phrase_spans"] = [None] * len(images)
        encoded = processor(images=images, **prompts, pad_size=text_detector.pad_size, return_tensors="pt")
        expected_raw, outputs = eager_outputs(model, encoded)
        expected = processor.post_process_grounded_object_detection(
            outputs,
            threshold=threshold,
            target_sizes=encoded["original_sizes"],
            text_labels=encoded["text_labels"],
            positive_map=encoded["positive_map"],
            image_sizes=encoded["image_sizes"],
            config=model.config,
        )
        text_inputs = {name: encoded[name].numpy() for name in ("input_ids", "attention_mask", "token_type_ids")}
        assert_outputs_close(text_detector.run(encoded["pixel_values"].numpy(), **text_inputs), expected_raw)
        actual = text_detector(
            encoded["pixel_values"].numpy(),
            encoded["image_sizes"].numpy(),
            target_sizes=encoded["original_sizes"].numpy(),
            threshold=threshold,
            positive_map=encoded["positive_map"].numpy(),
            text_labels=encoded["text_labels"],
            **text_inputs,
        )
        assert_same_detections(actual, expected, minimum)
        if prompt is labels:  # the fixed graph holds this prompt
            assert_outputs_close(fixed_detector.run(encoded["pixel_values"].numpy()), expected_raw)
            actual = fixed_detector(
                encoded["pixel_values"].numpy(),
                encoded["image_sizes"].numpy(),
                target_sizes=encoded["original_sizes"].numpy(),
                threshold=threshold,
            )
            assert_same_detections(actual, expected, minimum)
    return fixed_path


# ------------------------------------------------------------------------------------------------ exported graphs
def test_tiny_random_model_with_deformable_convs_matches_eager(tiny_deformable, image, tmp_path):
    """Both forms, a batch of two images of different sizes padded to the graph's 64x128 (P3..P7 of 8x16 .. 1x1:
    every level reuses the offsets of a larger map), labels and a caption."""
    model, processor = tiny_deformable
    assert default_export_image_size(processor) == (64, 128)
    images = [image, image.crop((0, 0, 400, 300)).transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    check_both_forms(model, processor, images, tmp_path, threshold=None)


def test_official_fixture_matches_eager_and_the_official_detections(tiny_a_dir, image, tmp_path, match_detections):
    """The converted official fixture `tiny_a` at its own padded size 320x448 (so the graph sees the very tensor of
    the parity tests): ONNX == eager, and the fixed-vocabulary graph of the official label-list prompt reproduces
    the official detections."""
    from safetensors.torch import load_file

    model = GLIPForGrounding.from_pretrained(tiny_a_dir).eval()
    processor = GLIPProcessor.from_pretrained(tiny_a_dir)
    prompt = json.loads((FIXTURE / "detection_prompt.json").read_text())
    recorded = load_file(FIXTURE / "detection_outputs.safetensors")
    path = check_both_forms(
        model, processor, [image], tmp_path, threshold=None, image_size=(320, 448), labels=prompt["labels"]
    )
    detector = GLIPOnnxDetector(path)
    encoded = processor(images=image, return_tensors="pt")
    assert tuple(encoded["pixel_values"].shape[-2:]) == (320, 448)
    (result,) = detector(
        encoded["pixel_values"].numpy(), encoded["image_sizes"], target_sizes=encoded["original_sizes"], threshold=None
    )
    expected = (recorded["detections.boxes_xyxy"], recorded["detections.scores"], recorded["detections.labels"] - 1)
    match_detections((result["boxes"], result["scores"], result["labels"]), expected, SCORE_ATOL, BOX_ATOL)


def test_demo_size_model_with_random_weights_matches_eager(image, tmp_path):
    """The demo model of `examples/pretrain.py` (`tiny_config`, plain head convs) at the demo sizes 128/224."""
    if importlib.util.find_spec("accelerate") is None:
        pytest.skip("examples/pretrain.py imports accelerate (the `train` extra)")
    specification = importlib.util.spec_from_file_location("pretrain_example_for_onnx", PRETRAIN_SCRIPT)
    pretrain = importlib.util.module_from_spec(specification)
    specification.loader.exec_module(pretrain)
    demo = pretrain.DEMO_DEFAULTS
    torch.manual_seed(0)
    config = pretrain.tiny_config(demo["max_length"])
    config.pre_nms_score_threshold = 0.0  # random weights: every candidate counts
    model = GLIPForGrounding(config).eval()
    processor = GLIPProcessor(
        GLIPImageProcessor(min_size=demo["min_size"], max_size=demo["max_size"]),
        AutoTokenizer.from_pretrained(pretrain.DEFAULT_TOKENIZER),
        max_text_length=demo["max_length"],
    )
    assert default_export_image_size(processor) == (128, 224)
    check_both_forms(model, processor, [image], tmp_path, threshold=None)


@pytest.mark.parametrize("stride", [1, 2])
def test_decomposed_deform_conv_equals_torchvision(stride):
    """The decomposition (for runtimes without DeformConv) against `torchvision.ops.deform_conv2d`, with offsets of
    several pixels that sample outside the map on every side. Tolerance 1e-5: the same products summed in another
    order (measured ~1e-6)."""
    from torchvision.ops import deform_conv2d

    generator = torch.Generator().manual_seed(0)
    hidden_states = torch.randn(2, 5, 7, 9, generator=generator)
    weight, bias = torch.randn(4, 5, 3, 3, generator=generator), torch.randn(4, generator=generator)
    out_height, out_width = (7 + 2 - 3) // stride + 1, (9 + 2 - 3) // stride + 1
    offset = 3.0 * torch.randn(2, 18, out_height, out_width, generator=generator)
    mask = torch.rand(2, 9, out_height, out_width, generator=generator)
    expected = deform_conv2d(hidden_states, offset, weight, bias, stride=stride, padding=1, mask=mask)
    actual = decomposed_deform_conv2d(hidden_states, offset, mask, weight, bias, stride, 1)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


def test_decomposed_export_matches_eager_without_deform_conv_nodes(tiny_deformable, image, tmp_path):
    """`deformable_conv="decomposed"`: no DeformConv node, same outputs and detections as eager."""
    model, processor = tiny_deformable
    path = export_glip_to_onnx(model, processor, tmp_path / "decomposed.onnx", deformable_conv="decomposed")
    operators = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "DeformConv" not in operators and "GatherElements" in operators
    detector = GLIPOnnxDetector(path)
    encoded = processor(images=image, text=LABELS, pad_size=detector.pad_size, return_tensors="pt")
    expected_raw, outputs = eager_outputs(model, encoded)
    text_inputs = {name: encoded[name].numpy() for name in ("input_ids", "attention_mask", "token_type_ids")}
    assert_outputs_close(detector.run(encoded["pixel_values"].numpy(), **text_inputs), expected_raw)
    expected = processor.post_process_grounded_object_detection(
        outputs,
        threshold=None,
        positive_map=encoded["positive_map"],
        text_labels=encoded["text_labels"],
        image_sizes=encoded["image_sizes"],
        config=model.config,
    )
    actual = detector(
        encoded["pixel_values"].numpy(),
        encoded["image_sizes"],
        threshold=None,
        positive_map=encoded["positive_map"],
        text_labels=encoded["text_labels"],
        **text_inputs,
    )
    assert_same_detections(actual, expected)
    assert json.loads(onnx_metadata_path(path).read_text())["deformable_conv"] == "decomposed"


def test_metadata_holds_what_the_post_processing_needs(tiny_deformable, tmp_path):
    model, processor = tiny_deformable
    path = export_glip_to_onnx(model, processor, tmp_path / "fixed.onnx", labels=LABELS, opset_version=20)
    metadata = json.loads(onnx_metadata_path(path).read_text())
    assert onnx_metadata_path(path) == tmp_path / "fixed.json"
    assert metadata["form"] == "fixed_vocabulary" and metadata["opset_version"] == 20
    assert metadata["image_size"] == [64, 128]
    assert metadata["num_anchors_per_level"] == [128, 32, 8, 2, 1]
    assert metadata["text_labels"] == LABELS
    encoded = processor(text=LABELS, return_tensors="pt")
    assert metadata["positive_map"] == [torch.nonzero(row).flatten().tolist() for row in encoded["positive_map"][0]]
    assert metadata["post_processing"]["pre_nms_threshold"] == 0.0
    assert metadata["post_processing"]["max_detections"] == model.config.max_detections
    assert {opset.version for opset in onnx.load(str(path)).opset_import if opset.domain in ("", "ai.onnx")} == {20}


def test_export_leaves_the_model_unchanged(tiny_deformable, tmp_path):
    model, processor = tiny_deformable
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    model.train()
    assert model.config.deformable_conv_implementation == "gather"  # the fast path; the graph traces torchvision's
    export_glip_to_onnx(model, processor, tmp_path / "graph.onnx", labels=LABELS)
    assert model.training and model.config.deformable_conv_implementation == "gather"  # restored
    model.eval()
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


# ---------------------------------------------------------------------------------------------------- bad inputs
def test_export_rejects_bad_arguments(tiny_deformable, tmp_path):
    model, processor = tiny_deformable
    with pytest.raises(TypeError, match="`model` must be a GLIPForGrounding"):
        export_glip_to_onnx(model.model, processor, tmp_path / "a.onnx")
    with pytest.raises(TypeError, match="`processor` must be a GLIPProcessor"):
        export_glip_to_onnx(model, processor.tokenizer, tmp_path / "a.onnx")
    with pytest.raises(ValueError, match="`opset_version` must be an int >= 19"):
        export_glip_to_onnx(model, processor, tmp_path / "a.onnx", opset_version=17)
    with pytest.raises(ValueError, match="multiples of the processor's size_divisibility 32"):
        export_glip_to_onnx(model, processor, tmp_path / "a.onnx", image_size=(64, 100))
    with pytest.raises(ValueError, match="`image_size` must be a pair of positive ints"):
        export_glip_to_onnx(model, processor, tmp_path / "a.onnx", image_size=(64,))
    with pytest.raises(ValueError, match="`labels` must be a non-empty list"):
        export_glip_to_onnx(model, processor, tmp_path / "a.onnx", labels="cat")
    with pytest.raises(ValueError, match=r"`labels\[1\]`"):
        export_glip_to_onnx(model, processor, tmp_path / "a.onnx", labels=["cat", " "])
    with pytest.raises(ValueError, match="`deformable_conv` must be one of"):
        export_glip_to_onnx(model, processor, tmp_path / "a.onnx", deformable_conv="plain")
    with pytest.raises(ValueError, match="is a folder"):
        export_glip_to_onnx(model, processor, tmp_path)
    with pytest.raises(ValueError, match="holds no config.json"):
        export_pretrained_glip_to_onnx(tmp_path, tmp_path / "a.onnx")
    no_cap = GLIPProcessor(GLIPImageProcessor(min_size=64, max_size=None), processor.tokenizer, max_text_length=32)
    with pytest.raises(ValueError, match="no long-side cap"):
        export_glip_to_onnx(model, no_cap, tmp_path / "a.onnx")
    assert not list(tmp_path.glob("*.onnx"))


def test_detector_rejects_bad_inputs(tiny_deformable, tmp_path):
    model, processor = tiny_deformable
    path = export_glip_to_onnx(model, processor, tmp_path / "text.onnx")
    detector = GLIPOnnxDetector(path)
    encoded = processor(text=LABELS, return_tensors="pt")
    encoded = {name: encoded[name].numpy() for name in ("input_ids", "attention_mask", "token_type_ids")}
    with pytest.raises(ValueError, match=r"must have shape \(batch, 3, 64, 128\)"):
        detector.run(np.zeros((1, 3, 64, 96), dtype=np.float32), input_ids=encoded["input_ids"])
    with pytest.raises(ValueError, match="pass `input_ids`"):
        detector.run(np.zeros((1, 3, 64, 128), dtype=np.float32))
    with pytest.raises(ValueError, match=r"`input_ids` must have shape \(1, L\) with L <= 32"):
        detector.run(np.zeros((1, 3, 64, 128), dtype=np.float32), input_ids=np.zeros((1, 40), dtype=np.int64))
    with pytest.raises(ValueError, match="Pass the processor's `positive_map`"):
        detector(np.zeros((1, 3, 64, 128), dtype=np.float32), [[64, 85]], input_ids=encoded["input_ids"])
    with pytest.raises(ValueError, match="`threshold`"):
        detector(np.zeros((1, 3, 64, 128), dtype=np.float32), [[64, 85]], threshold=2.0)
    with pytest.raises(ValueError, match="does not exist"):
        GLIPOnnxDetector(tmp_path / "missing.onnx")
    onnx_metadata_path(path).unlink()
    with pytest.raises(ValueError, match="text.json is missing"):
        GLIPOnnxDetector(path)


# ----------------------------------------------------------------------------------------------------- glip export
def run_cli(arguments, capsys):
    status = cli.main([str(argument) for argument in arguments])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_cli_opset_constant_is_the_library_minimum():
    assert cli.ONNX_OPSET_VERSION == MINIMUM_OPSET_VERSION


def processor_token_count(directory, labels) -> int:
    return int(GLIPProcessor.from_pretrained(directory)(text=labels, return_tensors="pt")["input_ids"].shape[1])


def test_glip_export_writes_a_graph_that_runs(tiny_deformable_directory, tmp_path, capsys):
    output = tmp_path / "out" / "glip.onnx"
    arguments = ["export", "--model", tiny_deformable_directory, "--format", "onnx", "--output", output]
    status, _, error = run_cli([*arguments, "--labels", *LABELS, "--image-size", 64, 96], capsys)
    assert status == 0, error
    assert f"Wrote {output}" in error
    detector = GLIPOnnxDetector(output)
    assert detector.has_fixed_vocabulary and detector.image_size == (64, 96) and detector.text_labels == LABELS
    # P3..P7 of a 64x96 input: 8x12, 4x6, 2x3, 1x2, 1x1 anchors; batch 2 through the dynamic batch axis
    # The fixed graph holds the prompt's own tokens (no padding columns).
    prompt_length = processor_token_count(tiny_deformable_directory, LABELS)
    expected_shape = (2, 96 + 24 + 6 + 2 + 1, prompt_length)
    assert detector.run(np.zeros((2, 3, 64, 96), dtype=np.float32))["logits"].shape == expected_shape


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--format", "tensorrt"], "invalid choice: 'tensorrt'"),
        (["--deformable-conv", "mmcv"], "invalid choice: 'mmcv'"),
        (["--opset", "17"], "--opset 17: ONNX DeformConv"),
        (["--opset", "zero"], "expected a positive integer"),
        (["--labels", "cat", ""], "--labels: label 2 is empty"),
        (["--image-size", "64", "100"], "--image-size 64 100: the padded network input is a multiple of 32"),
        (["--output", "{tmp}"], "is a folder"),
        (["--output", "{tmp}/graph.txt"], "name the file FILE.onnx"),
        (["--model", "{tmp}/missing"], "no such folder"),
        (["--model", "{tmp}/file.txt"], "is a file"),
        (["--model", "{tmp}"], "the folder has no config.json"),
    ],
)
def test_glip_export_bad_arguments_exit_2_with_one_line(tiny_deformable_directory, tmp_path, capsys, extra, message):
    (tmp_path / "file.txt").write_text("not a model")
    defaults = {
        "--model": str(tiny_deformable_directory),
        "--format": "onnx",
        "--output": str(tmp_path / "graph.onnx"),
    }
    arguments = ["export"]
    extra = [value.format(tmp=tmp_path) for value in extra]
    for option, value in defaults.items():
        if option not in extra:
            arguments += [option, value]
    capsys.readouterr()
    status, output, error = run_cli([*arguments, *extra], capsys)
    assert status == 2
    assert output == ""
    lines = error.strip().splitlines()
    assert len(lines) == 1, error
    assert lines[0].startswith("glip export: error: ") and message in lines[0], lines[0]
    assert not (tmp_path / "graph.onnx").exists()
