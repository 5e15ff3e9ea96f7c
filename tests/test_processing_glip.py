"""GLIPProcessor (prompts, positive maps, grounded post-processing) against the official fixture `tiny_a`."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import BertTokenizer

from transformers_glip.box_geometry_glip import GLIPBoxCoder, class_aware_nms
from transformers_glip.configuration_glip import GLIPConfig
from transformers_glip.image_processing_glip import GLIPImageProcessor
from transformers_glip.postprocessing_glip import (
    compute_label_scores,
    keep_top_detections,
    merge_chunk_detections,
    positive_map_to_token_lists,
    post_process_grounded_detections,
    post_processing_arguments,
    token_lists_to_positive_map,
)
from transformers_glip.processing_glip import GLIPProcessor
from transformers_glip.prompts_glip import (
    build_detection_prompt,
    build_label_chunks,
    clean_label_name,
    create_positive_map,
    find_noun_phrases,
)

FIXTURE = Path(__file__).parent / "fixtures" / "tiny_a"
# The official values of MODEL.ATSS (0.05, 1000, 0.6, 100), read from their one home, the config defaults.
OFFICIAL_POST_PROCESSING = post_processing_arguments(GLIPConfig())
LEVELS = ["P3", "P4", "P5", "P6", "P7"]
SCORE_TOLERANCE = 1e-5
BOX_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizer.from_pretrained(FIXTURE / "bert")


@pytest.fixture(scope="module")
def processor(tokenizer):
    return GLIPProcessor(GLIPImageProcessor(min_size=320, max_size=533), tokenizer)


@pytest.fixture(scope="module")
def image():
    return Image.open(FIXTURE / "image.png").convert("RGB")


@pytest.fixture(scope="module")
def caption_info():
    return json.loads((FIXTURE / "inputs.json").read_text())


@pytest.fixture(scope="module")
def detection_prompt():
    return json.loads((FIXTURE / "detection_prompt.json").read_text())


@pytest.fixture(scope="module")
def inputs():
    return load_file(FIXTURE / "inputs.safetensors")


@pytest.fixture(scope="module")
def anchors():
    recorded = load_file(FIXTURE / "outputs.safetensors")
    return {level: recorded[f"anchors.{level}"] for level in LEVELS}


def _decode(deltas, anchor_boxes):
    """Legacy +1 box decoding (spec §7.2) of the recorded deltas."""
    return GLIPBoxCoder((10.0, 10.0, 5.0, 5.0)).decode(deltas, anchor_boxes)


def _model_outputs(recorded, anchors):
    """Recorded head tensors -> the `GLIPGroundingOutput` contract (batch 1, anchors P3..P7 row-major)."""
    logits = torch.cat([recorded[f"head.dot_product_logits.{level}"] for level in LEVELS], dim=1)
    deltas = torch.cat(
        # (1, 4, height, width) -> (1, height * width, 4)
        [recorded[f"head.box_regression.{level}"].permute(0, 2, 3, 1).reshape(1, -1, 4) for level in LEVELS],
        dim=1,
    )
    anchor_boxes = torch.cat([anchors[level] for level in LEVELS])
    centerness = torch.cat([recorded[f"head.centerness.{level}"].reshape(1, -1) for level in LEVELS], dim=1)
    return {
        "logits": logits,
        "pred_boxes": _decode(deltas, anchor_boxes[None]),
        "centerness": centerness,
        "num_anchors_per_level": [anchors[level].shape[0] for level in LEVELS],
        "image_sizes": torch.tensor([[320, 426]]),
    }


@pytest.fixture(scope="module")
def caption_run(anchors):
    recorded = load_file(FIXTURE / "outputs.safetensors")
    return recorded, _model_outputs(recorded, anchors)


@pytest.fixture(scope="module")
def detection_run(anchors):
    recorded = load_file(FIXTURE / "detection_outputs.safetensors")
    return recorded, _model_outputs(recorded, anchors)


def assert_same_detection_sets(boxes, scores, labels, expected_boxes, expected_scores, expected_labels):
    """Same multiset of (label, score, box): every expected detection matches a distinct actual one with the same
    label, |score difference| <= 1e-5 and max |box difference| <= 1e-3 px."""
    assert scores.shape == expected_scores.shape, (scores.shape, expected_scores.shape)
    score_difference = (expected_scores[:, None] - scores[None, :]).abs()  # (num_expected, num_actual)
    box_difference = (expected_boxes[:, None, :] - boxes[None, :, :]).abs().amax(-1)  # (num_expected, num_actual)
    compatible = (
        (expected_labels[:, None] == labels[None, :])
        & (score_difference <= SCORE_TOLERANCE)
        & (box_difference <= BOX_TOLERANCE)
    )
    taken = torch.zeros(scores.shape[0], dtype=torch.bool)
    for expected_index in range(expected_scores.shape[0]):
        candidates = torch.nonzero(compatible[expected_index] & ~taken).flatten()
        assert candidates.numel() > 0, (
            f"expected detection {expected_index} (label {int(expected_labels[expected_index])}, score "
            f"{float(expected_scores[expected_index]):.6f}) has no match"
        )
        best = candidates[torch.argmin(box_difference[expected_index, candidates])]
        taken[best] = True


# prompts -------------------------------------------------------------------------------------------------------------


def test_create_positive_map_matches_fixture(tokenizer, caption_info, inputs):
    encoding = tokenizer(caption_info["caption"])
    positive_map = create_positive_map(encoding, caption_info["tokens_positive"])
    assert positive_map.shape == (3, 256) and positive_map.dtype == torch.float32
    assert torch.equal(positive_map, inputs["train.positive_map"])
    assert torch.equal(positive_map.nonzero(), (inputs["positive_map"] > 0).nonzero())
    padded = tokenizer(caption_info["caption"], max_length=256, padding="max_length", return_tensors="pt")
    assert torch.equal(create_positive_map(padded, caption_info["tokens_positive"]), positive_map)


def test_create_positive_map_character_fallbacks(tokenizer):
    caption = "bow . cat"  # tokens: [CLS] bow . cat [SEP]
    encoding = tokenizer(caption)
    # (0, 4) ends on a space: end - 1 -> None, falls back to end - 2; (5, 9) starts on a space: begin + 1;
    # (3, 4) maps to first "." (token 2) and last "bow" (token 1): an empty slice, as in the official code.
    positive_map = create_positive_map(encoding, [[(0, 4)], [(5, 9)], [(3, 4)], []], max_length=8)
    assert positive_map_to_token_lists(positive_map) == [[1], [3], [], []]
    # Whitespace span: begin falls back to begin + 1 / + 2, end to end - 2 / - 3 -> "." only.
    assert positive_map_to_token_lists(create_positive_map(encoding, [[(3, 6)]])) == [[2]]
    # Token indices >= max_length are dropped, like the official 256-wide slice.
    assert positive_map_to_token_lists(create_positive_map(encoding, [[(0, 9)]], max_length=3)) == [[1, 2]]
    with pytest.raises(ValueError, match="spans_per_entity"):
        create_positive_map(encoding, [[(4, 2)]])
    with pytest.raises(TypeError, match="spans_per_entity"):
        create_positive_map(encoding, "cat")
    with pytest.raises(TypeError, match="encoding"):
        create_positive_map([101, 102], [[(0, 1)]])


def test_processor_caption_with_spans_matches_fixture(processor, image, caption_info, inputs):
    features = processor(
        images=image, text=caption_info["caption"], phrase_spans=caption_info["tokens_positive"], official_mode=True
    )
    assert torch.equal(features["input_ids"], inputs["input_ids"])
    assert torch.equal(features["attention_mask"], inputs["attention_mask"])
    assert torch.equal(features["token_type_ids"], torch.zeros_like(inputs["input_ids"]))
    assert torch.equal(features["positive_map"][0], inputs["train.positive_map"])
    assert torch.equal(features["pixel_values"], inputs["images.tensors"])
    assert features["image_sizes"].tolist() == [[320, 426]]
    assert features["text_labels"] == [["a red circle", "a blue square", "a person"]]
    # The fast path (default): the same prompt without the padding columns.
    fast = processor(images=image, text=caption_info["caption"], phrase_spans=caption_info["tokens_positive"])
    length = int(inputs["attention_mask"].sum())
    assert length < 256 and fast["input_ids"].shape == (1, length)
    for key in ("input_ids", "attention_mask", "positive_map"):
        assert torch.equal(fast[key], features[key][..., :length]), key
    assert torch.equal(fast["pixel_values"], features["pixel_values"])


def test_detection_prompt_from_label_list(processor, tokenizer, detection_prompt):
    caption, spans = build_detection_prompt(detection_prompt["labels"])
    assert caption == detection_prompt["caption"]
    assert spans == [[tuple(span) for span in label_spans] for label_spans in detection_prompt["tokens_positive"]]
    recorded = load_file(FIXTURE / "detection_outputs.safetensors")
    features = processor(text=detection_prompt["labels"], official_mode=True)
    assert torch.equal(features["input_ids"], recorded["input_ids"])
    assert torch.equal(features["attention_mask"], recorded["attention_mask"])
    assert torch.equal(features["positive_map"][0], recorded["positive_map_binary"])
    expected_tokens = [detection_prompt["positive_map_label_to_token"][str(label)] for label in range(1, 5)]
    assert positive_map_to_token_lists(features["positive_map"][0]) == expected_tokens
    assert tokenizer.convert_ids_to_tokens(features["input_ids"][0, :12]) == detection_prompt["tokens"]
    # The nested HF layout gives the same result.
    nested = processor(text=[detection_prompt["labels"]], text_kwargs={"official_mode": True})
    assert torch.equal(nested["positive_map"], features["positive_map"])


def test_clean_label_name_follows_official_rule():
    assert clean_label_name("bow_(weapon)") == "bow "
    assert clean_label_name("a (b) c (d)") == "a "  # greedy parentheses
    assert clean_label_name("traffic__light") == "traffic light"  # "__" -> "  " -> one pass -> " "
    assert clean_label_name("a   b") == "a  b"  # one pass of double -> single space
    caption, spans = build_detection_prompt(["bow_(weapon)", "cat"])
    assert caption == "bow . cat" and spans == [[(0, 4)], [(6, 9)]]


def test_training_targets_carry_box_positive_maps(processor, image, caption_info, inputs):
    targets = json.loads((FIXTURE / "targets.json").read_text())["gt"]
    objects = []
    for entry in targets:
        x1, y1, x2, y2 = entry["box_xyxy_original_image"]
        bbox = [x1, y1, x2 - x1 + 1, y2 - y1 + 1]  # COCO xywh, +1 convention
        objects.append({"bbox": bbox, "category_id": entry["label"], "phrase_index": entry["phrase_index"]})
    objects[1] = {**objects[1], "tokens_positive": caption_info["tokens_positive"][1]}  # spans instead of an index
    features = processor(
        images=image,
        text=caption_info["caption"],
        phrase_spans=caption_info["tokens_positive"],
        annotations={"image_id": 0, "annotations": objects},
        official_mode=True,
    )
    target = features["labels"][0]
    assert torch.equal(target["positive_map"], inputs["train.positive_map"])
    torch.testing.assert_close(target["boxes"], inputs["train.gt_boxes_xyxy"], rtol=0, atol=1e-4)
    # Without entity references the target has no token map.
    plain = [{"bbox": item["bbox"], "category_id": item["category_id"]} for item in objects]
    features = processor(images=image, text=["a"], annotations={"image_id": 0, "annotations": plain})
    assert "positive_map" not in features["labels"][0]
    with pytest.raises(ValueError, match="phrase_index"):
        processor(
            images=image, text=["a"], annotations={"image_id": 0, "annotations": [{**plain[0], "phrase_index": 3}]}
        )


def test_batched_label_lists_and_captions(processor, image):
    features = processor(images=[image, image], text=[["cat", "remote control"], ["dog"]])
    # [CLS] cat . remote control [SEP]: padded to the longest prompt (the fast path)
    assert features["input_ids"].shape == (2, 6) and features["positive_map"].shape == (2, 2, 6)
    official = processor(images=[image, image], text=[["cat", "remote control"], ["dog"]], official_mode=True)
    assert official["input_ids"].shape == (2, 256) and official["positive_map"].shape == (2, 2, 256)
    assert torch.equal(official["positive_map"][..., :6], features["positive_map"])
    assert positive_map_to_token_lists(features["positive_map"][0]) == [[1], [3, 4]]
    assert positive_map_to_token_lists(features["positive_map"][1]) == [[1], []]  # padding row
    assert features["text_labels"] == [["cat", "remote control"], ["dog"]]
    captions = processor(text=["a cat on a mat", "two dogs"], phrase_spans=[[[(0, 5)]], None])
    assert captions["text_labels"] == [["a cat"], ["two dogs"]]


def test_noun_phrases_offline(processor):
    phrases = find_noun_phrases("A man is riding a horse on the beach, next to two small dogs.")
    assert [phrase for phrase, _ in phrases] == ["A man", "a horse", "the beach", "two small dogs"]
    assert all(
        "A man is riding a horse on the beach, next to two small dogs."[begin:end] == phrase
        for phrase, (begin, end) in phrases
    )
    features = processor(text="a red circle. a blue square. a person.")
    assert features["text_labels"] == [["a red circle", "a blue square", "a person"]]
    assert positive_map_to_token_lists(features["positive_map"][0]) == [[1, 2, 3], [5, 6, 7], [9, 10]]


# post-processing parity ----------------------------------------------------------------------------------------------


def test_label_scores_match_official_od_scores(caption_run, detection_run):
    for (recorded, outputs), token_lists in [
        (caption_run, [[1, 2, 3], [5, 6, 7], [9, 10]]),
        (detection_run, [[1, 2], [4, 5], [7, 8], [10]]),
    ]:
        scores = compute_label_scores(outputs["logits"][0], token_lists_to_positive_map(token_lists))
        expected = torch.cat([recorded[f"postprocess.od_scores.{level}"] for level in LEVELS])
        torch.testing.assert_close(scores, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("run_name", ["caption_run", "detection_run"])
def test_grounded_post_processing_matches_official(request, run_name):
    recorded, outputs = request.getfixturevalue(run_name)
    positive_map = (
        token_lists_to_positive_map([[1, 2, 3], [5, 6, 7], [9, 10]])
        if run_name == "caption_run"
        else recorded["positive_map_binary"]
    )
    network_input, original = [
        post_process_grounded_detections(
            outputs["logits"],
            outputs["pred_boxes"],
            outputs["centerness"],
            outputs["num_anchors_per_level"],
            positive_map,
            outputs["image_sizes"],
            target_sizes=target_sizes,
            return_candidates=True,
            **OFFICIAL_POST_PROCESSING,
        )[0]
        for target_sizes in (None, [(480, 640)])
    ]
    for level_index, level in enumerate(LEVELS):
        candidates = network_input["candidates"][level_index]
        assert_same_detection_sets(
            candidates["boxes"],
            candidates["scores"],
            candidates["labels"] + 1,
            recorded[f"postprocess.candidates.{level}.boxes_xyxy"],
            recorded[f"postprocess.candidates.{level}.scores"],
            recorded[f"postprocess.candidates.{level}.labels"],
        )
    for result, prefix in [(network_input, "detections_network_input"), (original, "detections")]:
        assert result["scores"].shape == (100,)
        assert torch.all(result["scores"][:-1] >= result["scores"][1:])
        assert_same_detection_sets(
            result["boxes"],
            result["scores"],
            result["labels"] + 1,
            recorded[f"{prefix}.boxes_xyxy"],
            recorded[f"{prefix}.scores"],
            recorded[f"{prefix}.labels"],
        )


def test_processor_post_processing_end_to_end(
    processor, image, caption_info, caption_run, detection_prompt, detection_run
):
    recorded, outputs = caption_run
    features = processor(images=image, text=caption_info["caption"], phrase_spans=caption_info["tokens_positive"])
    results = processor.post_process_grounded_object_detection(
        outputs,
        threshold=None,
        target_sizes=features["original_sizes"],
        positive_map=features["positive_map"],
        text_labels=features["text_labels"],
    )
    assert len(results) == 1 and set(results[0]) == {"boxes", "scores", "labels", "text_labels"}
    assert_same_detection_sets(
        results[0]["boxes"],
        results[0]["scores"],
        results[0]["labels"] + 1,
        recorded["detections.boxes_xyxy"],
        recorded["detections.scores"],
        recorded["detections.labels"],
    )
    names = features["text_labels"][0]
    assert results[0]["text_labels"] == [names[label] for label in results[0]["labels"].tolist()]

    # Label-list prompt: the positive map is rebuilt from the label names; image sizes derived from target_sizes.
    recorded, outputs = detection_run
    outputs = {key: value for key, value in outputs.items() if key != "image_sizes"}
    results = processor.post_process_grounded_object_detection(
        outputs, threshold=0.5, target_sizes=[(480, 640)], text_labels=[detection_prompt["labels"]]
    )
    keep = recorded["detections.scores"] > 0.5
    assert_same_detection_sets(
        results[0]["boxes"],
        results[0]["scores"],
        results[0]["labels"] + 1,
        recorded["detections.boxes_xyxy"][keep],
        recorded["detections.scores"][keep],
        recorded["detections.labels"][keep],
    )
    assert set(results[0]["text_labels"]) <= set(detection_prompt["labels"])


def test_class_aware_nms_uses_plus_one_iou():
    # Two boxes 10 px wide (+1: 11), overlapping 6 columns (+1: 7): legacy IoU 77 / (121 + 121 - 77) = 0.467 ... make
    # a pair whose IoU is above 0.6 only with the +1 convention.
    boxes = torch.tensor([[0.0, 0.0, 9.0, 9.0], [3.0, 0.0, 12.0, 9.0], [3.0, 0.0, 12.0, 9.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    labels = torch.tensor([0, 0, 1])
    # Without +1: inter 6 * 9 = 54, union 81 + 81 - 54 = 108 -> 0.5; with +1: 7 * 10 = 70 / (100 + 100 - 70) = 0.538.
    assert class_aware_nms(boxes, scores, labels, 0.52).tolist() == [0, 2]
    assert class_aware_nms(boxes, scores, labels, 0.54).tolist() == [0, 1, 2]
    assert class_aware_nms(boxes[:0], scores[:0], labels[:0]).numel() == 0


def test_keep_top_detections_keeps_ties():
    scores = torch.tensor([0.9, 0.5, 0.5, 0.5, 0.1])
    assert keep_top_detections(scores, 2).tolist() == [True, True, True, True, False]
    assert keep_top_detections(scores, 10).all()


def test_post_processing_handles_a_full_size_anchor_set():
    generator = torch.Generator().manual_seed(0)
    num_anchors_per_level = [16700, 4200, 1050, 273, 70]  # an 800 x 1333 input
    num_anchors = sum(num_anchors_per_level)
    logits = torch.randn((1, num_anchors, 256), generator=generator) - 2
    xy = torch.rand((1, num_anchors, 2), generator=generator) * 700
    boxes = torch.cat([xy, xy + 10 + torch.rand((1, num_anchors, 2), generator=generator) * 200], dim=-1)
    centerness = torch.randn((1, num_anchors), generator=generator)
    positive_map = torch.zeros((80, 256))
    for label in range(80):
        positive_map[label, 1 + 3 * label : 3 + 3 * label] = 1
    result = post_process_grounded_detections(
        logits, boxes, centerness, num_anchors_per_level, positive_map, [(800, 1333)], **OFFICIAL_POST_PROCESSING
    )[0]
    assert result["scores"].shape[0] >= 100


# chunks --------------------------------------------------------------------------------------------------------------


def test_label_chunks_follow_official_chunking_and_fit(tokenizer):
    labels = [f"object number {index}" for index in range(100)]
    chunks = build_label_chunks(labels, tokenizer, chunk_size=40)
    assert [chunk.label_indices for chunk in chunks] == [list(range(0, 40)), list(range(40, 80)), list(range(80, 100))]
    small = build_label_chunks(labels, tokenizer, chunk_size=40, max_length=32)
    assert sum(len(chunk.label_indices) for chunk in small) == 100
    assert [index for chunk in small for index in chunk.label_indices] == list(range(100))
    for chunk in small:
        assert len(tokenizer(chunk.caption)["input_ids"]) <= 32
        assert chunk.caption == build_detection_prompt(chunk.labels)[0]
    with pytest.raises(ValueError, match="labels"):
        build_label_chunks(["word " * 300], tokenizer)


def test_encode_label_chunks_and_merge(processor, image, detection_run):
    labels = [f"label {index}" for index in range(90)]
    features = processor.encode_label_chunks(labels, images=image)
    assert features["input_ids"].shape == (3, 256)
    assert features["positive_map"].shape == (3, 40, 256)
    assert features["chunk_label_indices"][2] == list(range(80, 90))
    assert features["text_labels"][1] == labels[40:80]
    assert features["pixel_values"].shape == (1, 3, 320, 448)

    # Merge: two chunks of the fixture's label-list run (same outputs, disjoint labels) -> concatenation.
    recorded, outputs = detection_run
    chunk_maps = [recorded["positive_map_binary"][:2], recorded["positive_map_binary"][2:]]
    batched = {
        "logits": outputs["logits"].expand(2, -1, -1),
        "pred_boxes": outputs["pred_boxes"].expand(2, -1, -1),
        "centerness": outputs["centerness"].expand(2, -1),
        "num_anchors_per_level": outputs["num_anchors_per_level"],
        "image_sizes": outputs["image_sizes"],  # one image shared by the chunks
    }
    merged = processor.post_process_chunked_object_detection(
        batched,
        chunk_label_indices=[[0, 1], [2, 3]],
        positive_map=chunk_maps,
        threshold=None,
        target_sizes=[(480, 640)],
        text_labels=["red circle", "blue square", "green triangle", "person"],
        merge_mode="concatenate",
    )
    per_chunk = [
        post_process_grounded_detections(
            outputs["logits"],
            outputs["pred_boxes"],
            outputs["centerness"],
            outputs["num_anchors_per_level"],
            chunk_map,
            [(320, 426)],
            target_sizes=[(480, 640)],
            **OFFICIAL_POST_PROCESSING,
        )[0]
        for chunk_map in chunk_maps
    ]
    assert merged["scores"].shape[0] == sum(result["scores"].shape[0] for result in per_chunk)
    assert_same_detection_sets(
        merged["boxes"],
        merged["scores"],
        merged["labels"],
        torch.cat([per_chunk[0]["boxes"], per_chunk[1]["boxes"]]),
        torch.cat([per_chunk[0]["scores"], per_chunk[1]["scores"]]),
        torch.cat([per_chunk[0]["labels"], per_chunk[1]["labels"] + 2]),
    )
    assert merged["text_labels"][0] in {"red circle", "blue square", "green triangle", "person"}
    # Disjoint labels: a class-aware NMS across chunks changes nothing.
    with_nms = merge_chunk_detections(per_chunk, [[0, 1], [2, 3]], mode="concatenate", nms_threshold=0.6)
    assert with_nms["scores"].shape == merged["scores"].shape
    capped = merge_chunk_detections(per_chunk, [[0, 1], [2, 3]], mode="concatenate", max_detections=50)
    assert capped["scores"].shape[0] >= 50 and torch.all(capped["scores"][:-1] >= capped["scores"][1:])
    with pytest.raises(ValueError, match="chunk_label_indices"):
        merge_chunk_detections(per_chunk, [[0, 1]], mode="concatenate")


# errors --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "error", "pattern"),
    [
        ([], ValueError, "text"),
        ([[]], ValueError, r"text\[0\]"),
        (["cat", "  "], ValueError, r"text\[1\]"),
        (["cat", ""], ValueError, r"text\[1\]"),
        (["(only parentheses)"], ValueError, r"text\[0\]"),
        (["cat", 3], TypeError, "text"),
        ([["cat"], ["dog", None]], TypeError, r"text\[1\]\[1\]"),
        (["cat", ["dog"]], TypeError, "text"),
        (42, TypeError, "text"),
        (["word " * 300], ValueError, r"text\[0\]"),
        ([f"label {index}" for index in range(200)], ValueError, "encode_label_chunks"),
        (["cat", "\u200b"], ValueError, r"text\[1\].*never be\s+detected"),  # zero-width space: no token
        (["cat", "\x00"], ValueError, r"text\[1\]"),  # NUL: no token
        (["cat", "..."], ValueError, r"text\[1\]` = '\.\.\.'"),  # punctuation only
        (["cat", "dog", "Cat"], ValueError, r"text\[0\]` = 'cat' and `text\[2\]` = 'Cat'"),  # same tokens
        ([["cat"], ["dog", "dog "]], ValueError, r"text\[1\]\[0\].*text\[1\]\[1\]"),
    ],
)
def test_bad_text_is_rejected(processor, text, error, pattern):
    with pytest.raises(error, match=pattern):
        processor(text=text)


def test_bad_processor_arguments_are_rejected(processor, image, caption_info, detection_run):
    with pytest.raises(ValueError, match="text"):
        processor(images=[image, image], text=["cat", "dog"])  # one label list for two images
    with pytest.raises(ValueError, match="text"):
        processor(images=image, text=[["cat"], ["dog"]])
    with pytest.raises(ValueError, match="phrase_spans"):
        processor(text=caption_info["caption"], phrase_spans=[[(0, 400)]])
    with pytest.raises(ValueError, match="phrase_spans"):
        processor(text=["a cat", "a dog"], phrase_spans=[None])
    with pytest.raises(ValueError, match="text"):
        processor(text="of and the, with.")  # no noun phrase
    with pytest.raises(ValueError, match="images"):
        processor()
    _, outputs = detection_run
    with pytest.raises(ValueError, match="target_sizes"):
        processor.post_process_grounded_object_detection(
            outputs, target_sizes=[(480, 640), (480, 640)], text_labels=[["a"]]
        )
    with pytest.raises(ValueError, match="text_labels"):
        processor.post_process_grounded_object_detection(outputs, text_labels=[["a"], ["b"]])
    with pytest.raises(ValueError, match="positive_map"):
        processor.post_process_grounded_object_detection(outputs)
    with pytest.raises(ValueError, match="text_labels"):
        processor.post_process_grounded_object_detection(
            outputs, threshold=None, positive_map=torch.ones((1, 3, 256)), text_labels=[["only one"]]
        )


# serialisation -------------------------------------------------------------------------------------------------------


def test_processor_save_and_load_round_trip(tmp_path, processor, image, caption_info):
    custom = GLIPProcessor(processor.image_processor, processor.tokenizer, max_text_length=128, chunk_size=20)
    custom.save_pretrained(tmp_path)
    reloaded = GLIPProcessor.from_pretrained(tmp_path)
    assert isinstance(reloaded.image_processor, GLIPImageProcessor)
    assert reloaded.max_length == 128 and reloaded.chunk_size == 20
    reloaded_settings = reloaded.image_processor.to_dict()
    # `save_pretrained` adds the remote-code entry (see `pipeline_glip.add_remote_code_files`); all else round-trips.
    assert reloaded_settings.pop("auto_map") == {"AutoImageProcessor": "glip_shim.GLIPImageProcessor"}
    assert reloaded_settings == processor.image_processor.to_dict()
    spans = caption_info["tokens_positive"]
    first = custom(images=image, text=caption_info["caption"], phrase_spans=spans, official_mode=True)
    second = reloaded(images=image, text=caption_info["caption"], phrase_spans=spans, official_mode=True)
    assert first["input_ids"].shape == (1, 128)
    for key in ("input_ids", "attention_mask", "positive_map", "pixel_values", "image_sizes"):
        assert torch.equal(first[key], second[key]), key
    # The image processor alone loads from the processor folder (nested `processor_config.json`).
    assert GLIPImageProcessor.from_pretrained(tmp_path).min_size == 320


def test_auto_processor_loads_after_registration(tmp_path, processor):
    from transformers import AutoImageProcessor, AutoProcessor

    from transformers_glip.configuration_glip import GLIPConfig

    AutoImageProcessor.register(GLIPConfig, image_processor_classes={"pil": GLIPImageProcessor}, exist_ok=True)
    AutoProcessor.register(GLIPConfig, GLIPProcessor, exist_ok=True)
    processor.save_pretrained(tmp_path)
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(reloaded, GLIPProcessor) and reloaded.image_processor.max_size == 533


def test_empty_and_duplicate_labels_are_refused_everywhere(processor, tokenizer):
    with pytest.raises(ValueError, match="never be"):
        processor.encode_label_chunks(["cat", "\u200b"])
    with pytest.raises(ValueError, match="same label"):
        processor.encode_label_chunks(["cat", "dog", "cat"])
    with pytest.raises(ValueError, match="same label"):
        build_label_chunks(["cat", "cat"], tokenizer)
    # Labels that only look alike stay distinct.
    assert processor(text=["cat", "cats", "black cat"])["positive_map"].shape[1] == 3


def test_unified_kwargs(processor, image):
    default = processor(images=image, text=["cat", "dog"])
    assert default["input_ids"].shape == (1, 5)  # [CLS] cat . dog [SEP]: the fast path pads to the longest prompt
    official = processor(images=image, text=["cat", "dog"], official_mode=True)
    assert official["input_ids"].shape == (1, 256)  # official padding to max_text_length
    assert torch.equal(official["input_ids"][:, :5], default["input_ids"])
    explicit = processor(text=["cat", "dog"], official_mode=True, padding="max_length", max_length=256)
    assert torch.equal(explicit["input_ids"], official["input_ids"])
    longest = processor(text=[["cat"], ["a black dog"]], padding="longest")
    assert longest["input_ids"].shape == (2, 5) and longest["positive_map"].shape == (2, 1, 5)
    nested = processor(text=[["cat"], ["a black dog"]], text_kwargs={"padding": "longest"})
    assert torch.equal(nested["input_ids"], longest["input_ids"])
    short = processor(text=["cat", "dog"], padding="max_length", max_length=16)
    assert short["input_ids"].shape == (1, 16)
    assert torch.equal(short["positive_map"][0], official["positive_map"][0, :, :16])
    # Image options, flat or nested; common kwargs.
    small = processor(images=image, text=["cat"], size={"shortest_edge": 160, "longest_edge": 1000})
    nested_small = processor(
        images=image, text=["cat"], images_kwargs={"size": {"shortest_edge": 160, "longest_edge": 1000}}
    )
    assert small["image_sizes"].tolist() == nested_small["image_sizes"].tolist() == [[160, 213]]
    common = processor(images=image, text=["cat"], common_kwargs={"return_tensors": "pt"})
    assert torch.equal(common["pixel_values"], default["pixel_values"])
    with pytest.raises(TypeError, match="`official_mode` must be True"):
        processor(text=["cat"], official_mode="yes")
    with pytest.raises(ValueError, match="contradicts `official_mode=True`"):
        processor(text=["cat"], official_mode=True, padding="longest")
    with pytest.raises(ValueError, match="`max_length=16` contradicts `official_mode=True`"):
        processor(text=["cat"], official_mode=True, text_kwargs={"max_length": 16})
    # phrase_spans is a typed text kwarg.
    caption = "a cat and a dog"
    spans = processor(text=caption, phrase_spans=[[(0, 5)], [(10, 15)]])
    in_text_kwargs = processor(text=caption, text_kwargs={"phrase_spans": [[(0, 5)], [(10, 15)]]})
    assert spans["text_labels"] == in_text_kwargs["text_labels"] == [["a cat", "a dog"]]
    with pytest.raises(ValueError, match="two times"):
        processor(text=["cat"], padding="longest", text_kwargs={"padding": "max_length"})
    with pytest.raises(ValueError, match="return_tensors"):
        processor(text=["cat"], return_tensors="np")
    with pytest.raises(ValueError, match="max_length"):
        processor(text=["cat"], max_length=2)


def test_processor_signature_follows_transformers(processor):
    import inspect

    assert list(inspect.signature(GLIPProcessor.__call__).parameters)[:3] == ["self", "images", "text"]
    assert list(inspect.signature(GLIPProcessor.__init__).parameters)[:3] == ["self", "image_processor", "tokenizer"]
    assert processor.max_length == processor.max_text_length == 256


def test_corrupt_tokenizer_json_is_named(tmp_path, processor):
    processor.save_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "truncation": nul')
    with pytest.raises(ValueError, match=r"tokenizer\.json is not valid JSON"):
        GLIPProcessor.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0"}')  # valid JSON, not a tokenizer
    with pytest.raises(ValueError, match=r"tokenizer\.json could not be loaded"):
        GLIPProcessor.from_pretrained(tmp_path)
