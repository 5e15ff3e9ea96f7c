"""High-level detection (`detect`): official parity through the processor, chunking (vision once), batching with
parity, cross-chunk merging, the model's extra keyword arguments, and bad inputs."""

from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou

from transformers_glip import GLIPForGrounding, GLIPImageProcessor, GLIPProcessor, detect
from transformers_glip.inference_glip import encode_detection_prompts
from transformers_glip.postprocessing_glip import (
    cross_chunk_suppression,
    find_non_finite_parameters,
    merge_chunk_detections,
)

SCORE_TOLERANCE = 1e-5
BOX_TOLERANCE = 1e-3  # pixels
PARITY_TOLERANCE = 1e-4  # batched / chunked vs single-image runs

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def tiny_model(tiny_a_dir):
    return GLIPForGrounding.from_pretrained(tiny_a_dir).eval()


@pytest.fixture(scope="module")
def small_processor(tiny_a_dir):
    """The fixture's processor with a 64-pixel short side: same code path, much faster forwards."""
    processor = GLIPProcessor.from_pretrained(tiny_a_dir)
    return GLIPProcessor(GLIPImageProcessor(min_size=64, max_size=107), processor.tokenizer)


@pytest.fixture(scope="module")
def image():
    return Image.open(Path(__file__).parent / "fixtures" / "tiny_a" / "image.png").convert("RGB")


class CallCounter:
    """Records the batch size of the first input of every call of a module."""

    def __init__(self, module: torch.nn.Module):
        self.batch_sizes: list[int] = []
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        first = args[0][0] if isinstance(args[0], (list, tuple)) else args[0]  # the head takes a list of levels
        self.batch_sizes.append(first.shape[0])

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.handle.remove()


def assert_same_results(actual: dict, expected: dict, tolerance: float = PARITY_TOLERANCE) -> None:
    """Same detections in the same order (scores sorted; equal scores are not expected in these runs)."""
    assert actual["labels"].tolist() == expected["labels"].tolist()
    assert actual["text_labels"] == expected["text_labels"]
    torch.testing.assert_close(actual["scores"], expected["scores"], atol=tolerance, rtol=0)
    torch.testing.assert_close(actual["boxes"], expected["boxes"], atol=tolerance * 100, rtol=tolerance)


# official parity -----------------------------------------------------------------------------------------------------


def test_processor_path_matches_official_detections(converted_fixture, match_detections):
    """Fixture label list -> processor -> `model(**inputs)` (extra processor keys accepted) -> post-processing."""
    processor = GLIPProcessor.from_pretrained(converted_fixture.model_dir)
    model = GLIPForGrounding.from_pretrained(converted_fixture.model_dir).eval()
    config = model.config  # the official post-processing values, written by the converter
    with torch.no_grad():
        if converted_fixture.chunk_size is None:
            inputs = processor(images=converted_fixture.image, text=converted_fixture.labels)
            assert {"positive_map", "text_labels", "original_sizes"} <= set(inputs)
            outputs = model(**inputs)
            result = processor.post_process_grounded_object_detection(
                outputs,
                threshold=None,
                target_sizes=inputs["original_sizes"],
                positive_map=inputs["positive_map"],
                text_labels=inputs["text_labels"],
                config=config,
            )[0]
        else:  # official chunked evaluation: chunks concatenated
            inputs = processor.encode_label_chunks(
                converted_fixture.labels, images=converted_fixture.image, chunk_size=converted_fixture.chunk_size
            )
            outputs = model(**inputs)
            result = processor.post_process_chunked_object_detection(
                outputs,
                inputs["chunk_label_indices"],
                inputs["positive_map"],
                threshold=None,
                target_sizes=inputs["original_sizes"],
                config=config,
                merge_mode="concatenate",
            )
    match_detections(
        (result["boxes"], result["scores"], result["labels"]),
        (converted_fixture.expected_boxes, converted_fixture.expected_scores, converted_fixture.expected_labels),
        SCORE_TOLERANCE,
        BOX_TOLERANCE,
    )


def test_detect_matches_official_detections(converted_fixture, match_detections):
    processor = GLIPProcessor.from_pretrained(converted_fixture.model_dir)
    model = GLIPForGrounding.from_pretrained(converted_fixture.model_dir).eval()
    result = detect(
        model,
        processor,
        converted_fixture.image,
        converted_fixture.labels,
        threshold=None,
        chunk_size=converted_fixture.chunk_size,
        merge_mode="concatenate",
    )[0]
    match_detections(
        (result["boxes"], result["scores"], result["labels"]),
        (converted_fixture.expected_boxes, converted_fixture.expected_scores, converted_fixture.expected_labels),
        SCORE_TOLERANCE,
        BOX_TOLERANCE,
    )
    assert result["text_labels"] == [converted_fixture.labels[label] for label in result["labels"].tolist()]
    assert torch.all(result["scores"][:-1] >= result["scores"][1:])


# model: extra keys, one image with several prompts -----------------------------------------------------------------


def test_model_runs_vision_once_for_several_prompts(tiny_model, small_processor, image):
    labels = [["red circle", "person"], ["blue square"], ["green triangle", "person", "red circle"]]
    text = small_processor(text=labels)
    pixels = small_processor.image_processor(image)
    with torch.no_grad(), CallCounter(tiny_model.model.backbone) as backbone:
        shared = tiny_model(
            pixels["pixel_values"],
            text["input_ids"],
            text["attention_mask"],
            image_sizes=pixels["image_sizes"],
            positive_map=text["positive_map"],
            text_labels=text["text_labels"],
            chunk_label_indices=[[0, 1], [2], [3, 4, 5]],
            original_sizes=pixels["original_sizes"],
        )
    assert backbone.batch_sizes == [1]  # Swin ran once, on the single image
    assert shared.logits.shape[0] == 3 and shared.image_sizes.tolist() == pixels["image_sizes"].tolist() * 3
    with torch.no_grad():
        for index in range(3):
            single = tiny_model(
                pixels["pixel_values"], text["input_ids"][index : index + 1], text["attention_mask"][index : index + 1]
            )
            for name in ("logits", "pred_boxes", "centerness"):
                torch.testing.assert_close(
                    getattr(shared, name)[index], getattr(single, name)[0], atol=PARITY_TOLERANCE, rtol=0
                )


def test_model_rejects_mismatched_image_and_prompt_batches(tiny_model, small_processor, image):
    pixels = small_processor.image_processor([image, image])
    text = small_processor(text=[["person"], ["person"], ["person"]])
    with pytest.raises(ValueError, match="pixel_values"):
        tiny_model(pixels["pixel_values"], text["input_ids"], text["attention_mask"])


# chunks --------------------------------------------------------------------------------------------------------------


def test_chunked_concatenation_equals_per_chunk_single_prompts(tiny_model, small_processor, image):
    labels = ["red circle", "blue square", "green triangle", "person"]
    with CallCounter(tiny_model.model.backbone) as backbone:
        chunked = detect(
            tiny_model, small_processor, image, labels, threshold=None, chunk_size=2, merge_mode="concatenate"
        )[0]
    assert backbone.batch_sizes == [1]  # both chunks in one forward, vision once
    first = detect(tiny_model, small_processor, image, labels[:2], threshold=None)[0]
    second = detect(tiny_model, small_processor, image, labels[2:], threshold=None)[0]
    scores = torch.cat([first["scores"], second["scores"]])
    order = torch.argsort(scores, descending=True, stable=True)
    expected = {
        "scores": scores[order],
        "boxes": torch.cat([first["boxes"], second["boxes"]])[order],
        "labels": torch.cat([first["labels"], second["labels"] + 2])[order],
    }
    expected["text_labels"] = [labels[label] for label in expected["labels"].tolist()]
    assert_same_results(chunked, expected)

    # The default merge only removes duplicates ACROSS the chunks: fewer detections, every one from `chunked`.
    merged = detect(tiny_model, small_processor, image, labels, threshold=None, chunk_size=2)[0]
    assert 0 < merged["scores"].numel() < chunked["scores"].numel()
    chunk_of = torch.tensor([0, 0, 1, 1])
    for index in range(merged["scores"].numel()):
        same = (chunked["boxes"] - merged["boxes"][index]).abs().amax(-1) == 0
        assert torch.any(same & (chunked["labels"] == merged["labels"][index]))
    shifted = merged["boxes"].clone()
    shifted[:, 2:] += 1
    overlapping = box_iou(shifted, shifted) > tiny_model.config.nms_threshold
    across = chunk_of[merged["labels"]][:, None] != chunk_of[merged["labels"]][None, :]
    assert not torch.any(overlapping & across)


def test_one_chunk_equals_single_prompt(tiny_model, small_processor, image):
    labels = ["red circle", "blue square", "green triangle", "person"]
    single = detect(tiny_model, small_processor, image, labels, threshold=None)[0]
    one_chunk = detect(tiny_model, small_processor, image, labels, threshold=None, chunk_size=4)[0]
    assert_same_results(one_chunk, single, tolerance=0.0)
    # ... and equals the processor path.
    inputs = small_processor(images=image, text=labels)
    with torch.no_grad():
        outputs = tiny_model(**inputs)
    reference = small_processor.post_process_grounded_object_detection(
        outputs,
        threshold=None,
        target_sizes=inputs["original_sizes"],
        positive_map=inputs["positive_map"],
        text_labels=inputs["text_labels"],
    )[0]
    assert_same_results(single, reference)


def test_large_vocabularies_are_chunked_automatically(tiny_model, small_processor, image):
    labels = [f"thing number {index}" for index in range(100)]  # ~5 tokens per label: far beyond 256 tokens
    prompts = encode_detection_prompts(small_processor, labels)
    assert [len(indices) for indices in prompts["chunk_label_indices"]] == [40, 40, 20]  # official 40 a chunk
    assert sum(prompts["chunk_label_indices"], []) == list(range(100))
    assert len(encode_detection_prompts(small_processor, labels[:10])["chunk_label_indices"]) == 1
    with CallCounter(tiny_model.model.backbone) as backbone, CallCounter(tiny_model.model.head) as head:
        result = detect(tiny_model, small_processor, image, labels, threshold=None)[0]
    assert backbone.batch_sizes == [1] and head.batch_sizes == [3]  # vision once, the 3 chunks as one head batch
    assert result["scores"].numel() > 0 and int(result["labels"].max()) < 100
    assert result["text_labels"] == [labels[label] for label in result["labels"].tolist()]


def test_chunks_run_in_sub_batches_of_at_most_max_prompts_per_forward(tiny_model, small_processor, image):
    """The memory bound of large vocabularies: the 3 chunks run as forwards of at most `max_prompts_per_forward`
    prompts (the image encoded again for each), with the results of the single forward."""
    labels = [f"thing number {index}" for index in range(100)]  # 3 chunks of 40, 40, 20 labels
    with CallCounter(tiny_model.model.backbone) as backbone, CallCounter(tiny_model.model.head) as head:
        together = detect(tiny_model, small_processor, image, labels, threshold=None, max_prompts_per_forward=None)[0]
    assert backbone.batch_sizes == [1] and head.batch_sizes == [3]
    for bound, expected_batches in ((2, [2, 1]), (1, [1, 1, 1]), (3, [3])):
        with CallCounter(tiny_model.model.backbone) as backbone, CallCounter(tiny_model.model.head) as head:
            bounded = detect(
                tiny_model, small_processor, image, labels, threshold=None, max_prompts_per_forward=bound
            )[0]
        assert head.batch_sizes == expected_batches and backbone.batch_sizes == [1] * len(expected_batches)
        assert_same_results(bounded, together, tolerance=SCORE_TOLERANCE)


def test_official_mode_runs_the_official_computation_with_the_fast_path_detections(tiny_model, small_processor, image):
    """`official_mode=True`: full 256-token padding, the official fusion order for the call (restored afterwards)
    and one chunk per forward; the fast path (default) trims the padding, factorises the fusion and batches chunks.
    Both give the same detections."""
    assert tiny_model.config.fusion_implementation == "factorised"  # the default of a config without the field
    assert tiny_model.config.deformable_conv_implementation == "gather"
    labels = [f"thing number {index}" for index in range(100)]  # 3 chunks
    seen = []  # (text length, fusion implementation) of every fusion call
    deformable = []  # the deformable conv implementation of every call of one deformable conv
    attention = tiny_model.model.head.blocks[0].fusion.attention
    handles = [
        attention.register_forward_pre_hook(
            lambda module, args: seen.append((args[1].shape[1], module.config.fusion_implementation))
        ),
        tiny_model.model.head.blocks[0]
        .dyconv.convs[1]
        .conv.register_forward_pre_hook(
            lambda module, args: deformable.append(module.config.deformable_conv_implementation)
        ),
    ]
    try:
        with CallCounter(tiny_model.model.head) as head:
            official = detect(tiny_model, small_processor, image, labels, threshold=None, official_mode=True)[0]
        assert head.batch_sizes == [1, 1, 1]
        assert seen == [(small_processor.max_length, "official")] * 3
        assert deformable and set(deformable) == {"torchvision"}
        assert tiny_model.config.fusion_implementation == "factorised"  # restored
        assert tiny_model.config.deformable_conv_implementation == "gather"
        seen.clear()
        deformable.clear()
        with CallCounter(tiny_model.model.head) as head:
            fast = detect(tiny_model, small_processor, image, labels, threshold=None)[0]
        assert head.batch_sizes == [3]
        assert len(seen) == 1 and seen[0][0] < small_processor.max_length and seen[0][1] == "factorised"
        assert deformable and set(deformable) == {"gather"}
    finally:
        for handle in handles:
            handle.remove()
    assert_same_results(fast, official, tolerance=SCORE_TOLERANCE)


def test_official_mode_restores_the_implementations_on_error(tiny_model, small_processor, image):
    def failing_forward(*args, **kwargs):
        raise RuntimeError("forward failed")

    original_forward = tiny_model.forward
    tiny_model.forward = failing_forward
    try:
        with pytest.raises(RuntimeError, match="forward failed"):
            detect(tiny_model, small_processor, image, ["cat"], official_mode=True)
    finally:
        tiny_model.forward = original_forward
    assert tiny_model.config.fusion_implementation == "factorised"
    assert tiny_model.config.deformable_conv_implementation == "gather"


def test_cross_chunk_suppression_only_acts_across_chunks():
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # chunk 0, best
            [0.0, 0.0, 10.0, 10.0],  # chunk 0, same box: kept (same chunk)
            [1.0, 0.0, 10.0, 10.0],  # chunk 1: suppressed by the first
            [50.0, 50.0, 60.0, 60.0],  # chunk 1: alone, kept
            [50.0, 50.0, 60.0, 60.0],  # chunk 2: suppressed by the previous (kept) one
        ]
    )
    scores = torch.tensor([0.9, 0.8, 0.85, 0.5, 0.4])
    chunk_ids = torch.tensor([0, 0, 1, 1, 2])
    assert cross_chunk_suppression(boxes, scores, chunk_ids, 0.6).tolist() == [0, 1, 3]
    # Greedy: a suppressed detection suppresses nothing.
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 13.0], [0.0, 0.0, 10.0, 16.0]])
    keep = cross_chunk_suppression(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 1, 2]), 0.7)
    assert keep.tolist() == [0, 2]

    per_chunk = [
        {"boxes": boxes[:2], "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([0, 1])},
        {"boxes": boxes[2:], "scores": torch.tensor([0.7]), "labels": torch.tensor([0])},
    ]
    concatenated = merge_chunk_detections(per_chunk, [[0, 1], [2]], mode="concatenate")
    assert concatenated["labels"].tolist() == [0, 1, 2]
    merged = merge_chunk_detections(per_chunk, [[0, 1], [2]], nms_threshold=0.5, mode="cross_chunk_nms")
    assert merged["labels"].tolist() == [0, 1]
    alone = merge_chunk_detections(per_chunk[:1], [[0, 1]], nms_threshold=0.5, mode="cross_chunk_nms")
    assert alone["labels"].tolist() == [0, 1]  # one chunk: untouched
    with pytest.raises(ValueError, match="mode"):
        merge_chunk_detections(per_chunk, [[0, 1], [2]], mode="nms")


# batching ------------------------------------------------------------------------------------------------------------


def test_batched_results_equal_single_image_results(tiny_model, small_processor, image):
    images = [
        image,  # 480 x 640 -> 64 x 85, padded 64 x 96
        image.crop((0, 0, 480, 320)),  # 320 x 480 -> 64 x 96, padded 64 x 96 (same group as the first)
        image.crop((100, 0, 580, 480)),  # 480 x 480 -> 64 x 64, padded 64 x 64
        image.crop((200, 0, 520, 480)),  # 480 x 320 -> 96 x 64, padded 96 x 64
        image.resize((600, 450)),  # 450 x 600 -> 64 x 85, padded 64 x 96 (same group as the first)
    ]
    labels = [
        ["red circle", "blue square", "green triangle", "person"],
        ["person"],
        ["traffic_light", "red circle (round)"],
        ["blue square", "person", "red circle"],
        ["green triangle", "red circle"],
    ]
    with CallCounter(tiny_model.model.backbone) as backbone:
        batched = detect(tiny_model, small_processor, images, labels, threshold=0.2, batch_size=8)
    # Forwards grouped by padded size, in order of first appearance: {0, 1, 4}, {2}, {3}.
    assert backbone.batch_sizes == [3, 1, 1]
    for index, (single_image, single_labels) in enumerate(zip(images, labels)):
        single = detect(tiny_model, small_processor, single_image, single_labels, threshold=0.2)[0]
        assert single["scores"].numel() > 0
        assert_same_results(batched[index], single)
    # `batch_size` caps the images per forward.
    with CallCounter(tiny_model.model.backbone) as backbone:
        capped = detect(tiny_model, small_processor, images, labels, threshold=0.2, batch_size=2)
    assert backbone.batch_sizes == [2, 1, 1, 1]
    for index in range(len(images)):
        assert_same_results(capped[index], batched[index])


def test_trimmed_text_padding_gives_the_padded_results_with_fewer_tokens(tiny_model, small_processor, image):
    """`trim_text_padding` cuts each forward's prompts to the longest real prompt (here far below max_length=256);
    the padding is masked, so the detections equal those of the fully padded (official) forward."""
    labels = [["red circle", "person"], ["blue square", "green triangle", "person", "dog", "car"]]
    lengths = []
    handle = tiny_model.model.text_model.register_forward_hook(
        lambda module, args, kwargs, output: lengths.append(kwargs["input_ids"].shape[-1]), with_kwargs=True
    )
    try:
        trimmed = detect(tiny_model, small_processor, [image, image], labels, threshold=None, batch_size=2)
        padded = detect(
            tiny_model, small_processor, [image, image], labels, threshold=None, batch_size=2, trim_text_padding=False
        )
    finally:
        handle.remove()
    longest = max(int(encode_detection_prompts(small_processor, names)["attention_mask"].sum()) for names in labels)
    assert longest < 20
    assert lengths == [longest, small_processor.max_length]
    for actual, expected in zip(trimmed, padded):
        # Same real-token computation, other matrix sizes: float rounding only.
        assert_same_results(actual, expected, tolerance=SCORE_TOLERANCE)


def test_shared_label_list_and_target_sizes(tiny_model, small_processor, image):
    labels = ["red circle", "person"]
    shared, per_image = (
        detect(tiny_model, small_processor, [image, image], labels, batch_size=2),
        detect(tiny_model, small_processor, [image, image], [labels, labels], batch_size=2),
    )
    for first, second in zip(shared, per_image):
        assert_same_results(first, second, tolerance=0.0)
    halved = detect(tiny_model, small_processor, image, labels, target_sizes=[(240, 320)])[0]
    torch.testing.assert_close(halved["boxes"] * 2, shared[0]["boxes"], atol=1e-3, rtol=1e-5)


# bad inputs ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        ({"labels": []}, ValueError, "`labels` is an empty label list"),
        ({"labels": ["cat", "  "]}, ValueError, r"`labels\[1\]`"),
        ({"labels": ["cat", 3]}, TypeError, r"`labels\[1\]` must be a string"),
        ({"labels": "cat, dog"}, TypeError, "`labels` must be a list"),
        ({"labels": [["cat"], ["dog"], ["car"]]}, ValueError, "`labels` holds 3 label lists for 2 images"),
        ({"labels": [["cat"], []]}, ValueError, r"`labels\[1\]` is an empty label list"),
        ({"images": []}, ValueError, "`images` is empty"),
        ({"images": "image.png"}, TypeError, "`images` must be an image"),
        ({"target_sizes": [(480, 640)]}, ValueError, "`target_sizes` has 1 entries for 2 images"),
        ({"target_sizes": [(480, 640), (0, 640)]}, ValueError, r"`target_sizes\[1\]`"),
        ({"threshold": "0.5"}, TypeError, "`threshold`"),
        ({"chunk_size": 0}, ValueError, "`chunk_size`"),
        ({"batch_size": 0}, ValueError, "`batch_size`"),
        ({"merge_mode": "nms"}, ValueError, "`merge_mode`"),
        ({"max_detections": 0}, ValueError, "`max_detections`"),
        ({"trim_text_padding": 1}, TypeError, "`trim_text_padding`"),
        ({"official_mode": "yes"}, TypeError, "`official_mode` must be True"),
        ({"official_mode": True, "trim_text_padding": True}, ValueError, "contradicts `official_mode=True`"),
        ({"max_prompts_per_forward": 0}, ValueError, "`max_prompts_per_forward` must be a positive int"),
        ({"max_prompts_per_forward": 2.0}, ValueError, "`max_prompts_per_forward` must be a positive int"),
    ],
)
def test_detect_rejects_bad_inputs(tiny_model, small_processor, image, kwargs, error, pattern):
    arguments = {"images": [image, image], "labels": ["cat", "dog"], **kwargs}
    with pytest.raises(error, match=pattern):
        detect(tiny_model, small_processor, **arguments)


# non-finite values ---------------------------------------------------------------------------------------------------


def test_nan_weights_are_reported_not_returned_as_an_empty_result(tiny_a_dir, small_processor, image):
    model = GLIPForGrounding.from_pretrained(tiny_a_dir).eval()
    assert find_non_finite_parameters(model) == []
    with torch.no_grad():
        model.model.head.bias_lang.fill_(float("nan"))
    assert find_non_finite_parameters(model) == ["model.head.bias_lang"]
    with pytest.raises(ValueError, match=r"NaN or infinity in 1 tensors .*model\.head\.bias_lang"):
        detect(model, small_processor, image, ["red circle"])


def test_nan_outputs_are_refused_by_the_post_processing(tiny_model, small_processor, image):
    inputs = small_processor(images=image, text=["red circle", "person"])
    with torch.no_grad():
        outputs = tiny_model(**inputs)
    outputs.logits[0, 3, 1] = float("nan")
    with pytest.raises(ValueError, match="1 non-finite values .* `logits`"):
        small_processor.post_process_grounded_object_detection(
            outputs, positive_map=inputs["positive_map"], target_sizes=inputs["original_sizes"]
        )
