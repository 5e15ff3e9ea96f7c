"""`pipeline("zero-shot-object-detection")` with GLIP (one prompt with all labels), registrations, the stock behaviour
for other models, and the remote-code files of a converted folder."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForZeroShotObjectDetection,
    AutoProcessor,
    pipeline,
)
from transformers.pipelines import SUPPORTED_TASKS
from transformers.pipelines.zero_shot_object_detection import ZeroShotObjectDetectionPipeline

from transformers_glip import (
    GLIPConfig,
    GLIPForGrounding,
    GLIPImageProcessor,
    GLIPModel,
    GLIPProcessor,
    GLIPZeroShotObjectDetectionPipeline,
    add_remote_code_files,
    detect,
)

FIXTURE = Path(__file__).parent / "fixtures" / "tiny_a"
TASK = "zero-shot-object-detection"
SCORE_TOLERANCE = 1e-5
LABELS = ["red circle", "blue square", "green triangle", "person"]

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def image():
    return Image.open(FIXTURE / "image.png").convert("RGB")


@pytest.fixture(scope="module")
def small_detector(tiny_a_dir):
    """The converted tiny_a pipeline with a 64-pixel short side (fast forwards, same code path)."""
    return pipeline(TASK, model=str(tiny_a_dir), image_processor=GLIPImageProcessor(min_size=64, max_size=107))


def count_forwards(model):
    calls = []
    handle = model.register_forward_hook(lambda module, args, kwargs, output: calls.append(1), with_kwargs=True)
    return calls, handle


# official parity -----------------------------------------------------------------------------------------------------


def test_pipeline_matches_official_detections(converted_fixture, match_detections):
    detector = pipeline(TASK, model=str(converted_fixture.model_dir))
    assert isinstance(detector, GLIPZeroShotObjectDetectionPipeline)
    keyword_arguments = {}
    if converted_fixture.chunk_size is not None:  # official chunked evaluation: chunks concatenated
        keyword_arguments = {"chunk_size": converted_fixture.chunk_size, "merge_mode": "concatenate"}
    calls, handle = count_forwards(detector.model)
    try:
        # Every official detection has a positive score; top_k=None keeps them all.
        results = detector(
            converted_fixture.image,
            candidate_labels=converted_fixture.labels,
            threshold=0.0,
            top_k=None,
            **keyword_arguments,
        )
    finally:
        handle.remove()
    assert len(calls) == 1  # ONE forward for all labels (the stock pipeline runs one per label)
    assert all(set(result) == {"score", "label", "box"} for result in results)
    assert all(isinstance(value, int) for result in results for value in result["box"].values())
    assert [result["score"] for result in results] == sorted((result["score"] for result in results), reverse=True)
    # Boxes are ints (truncated like the stock `_get_bounding_box`); the official float boxes truncated may differ
    # by 1 px where a coordinate lies within float rounding of an integer.
    match_detections(
        (
            [[result["box"][key] for key in ("xmin", "ymin", "xmax", "ymax")] for result in results],
            [result["score"] for result in results],
            [result["label"] for result in results],
        ),
        (
            converted_fixture.expected_boxes.trunc(),
            converted_fixture.expected_scores,
            [converted_fixture.labels[label] for label in converted_fixture.expected_labels.tolist()],
        ),
        SCORE_TOLERANCE,
        1.0,
    )


# registrations -------------------------------------------------------------------------------------------------------


def test_auto_classes_load_the_converted_folder(tiny_a_dir):
    assert isinstance(AutoConfig.from_pretrained(tiny_a_dir), GLIPConfig)
    assert type(AutoModel.from_pretrained(tiny_a_dir)) is GLIPModel
    assert type(AutoModelForZeroShotObjectDetection.from_pretrained(tiny_a_dir)) is GLIPForGrounding
    assert isinstance(GLIPForGrounding.from_pretrained(tiny_a_dir), GLIPForGrounding)
    image_processor = AutoImageProcessor.from_pretrained(tiny_a_dir)
    assert type(image_processor) is GLIPImageProcessor
    assert (image_processor.min_size, image_processor.max_size) == (320, 533)  # the fixture's INPUT.*_SIZE_TEST
    processor = AutoProcessor.from_pretrained(tiny_a_dir)
    assert type(processor) is GLIPProcessor and processor.image_processor.min_size == 320
    assert SUPPORTED_TASKS[TASK]["impl"] == "transformers_glip.pipeline_glip.GLIPZeroShotObjectDetectionPipeline"


def test_pipeline_class_argument(tiny_a_dir, image, small_detector):
    detector = pipeline(
        TASK,
        model=str(tiny_a_dir),
        image_processor=GLIPImageProcessor(min_size=64, max_size=107),
        pipeline_class=GLIPZeroShotObjectDetectionPipeline,
    )
    assert type(detector) is GLIPZeroShotObjectDetectionPipeline
    assert detector(image, candidate_labels=LABELS) == small_detector(image, candidate_labels=LABELS)


# behaviour -----------------------------------------------------------------------------------------------------------


def test_pipeline_output_threshold_and_top_k(small_detector, image):
    everything = small_detector(image, candidate_labels=LABELS, threshold=0.0)
    assert len(everything) > 5
    scores = [result["score"] for result in everything]
    assert scores == sorted(scores, reverse=True) and {result["label"] for result in everything} <= set(LABELS)
    # Same detections as `detect`, boxes truncated to ints.
    reference = detect(small_detector.model, small_detector._glip_processor(), image, LABELS, threshold=0.0)[0]
    assert scores == reference["scores"].tolist()
    assert [result["label"] for result in everything] == reference["text_labels"]
    boxes = [[result["box"][key] for key in ("xmin", "ymin", "xmax", "ymax")] for result in everything]
    assert boxes == reference["boxes"].int().tolist()

    threshold = scores[len(scores) // 2]
    above = small_detector(image, candidate_labels=LABELS, threshold=threshold)
    assert above == [result for result in everything if result["score"] > threshold]
    assert small_detector(image, candidate_labels=LABELS, threshold=0.0, top_k=3) == everything[:3]
    assert small_detector(image, candidate_labels=LABELS) == [r for r in everything if r["score"] > 0.1]  # default
    # `text_queries` alias; a string is split on "," and (unlike the stock pipeline) stripped.
    assert small_detector(image, text_queries=", ".join(LABELS), threshold=0.0) == everything
    # Thresholds given when building the pipeline are defaults of every call.
    detector = pipeline(
        TASK, model=small_detector.model, tokenizer=small_detector.tokenizer,
        image_processor=small_detector.image_processor, threshold=threshold, top_k=2,
    )  # fmt: skip
    assert detector(image, candidate_labels=LABELS) == above[:2]


def test_pipeline_call_forms_and_batching(small_detector, image):
    images = [image, image.crop((100, 0, 580, 480)), image.crop((0, 0, 480, 320))]
    label_lists = [LABELS, ["person", "red circle"], ["blue square"]]
    singles = [small_detector(item, candidate_labels=labels) for item, labels in zip(images, label_lists)]
    calls, handle = count_forwards(small_detector.model)
    try:
        batched = small_detector(images, candidate_labels=label_lists, batch_size=3)
    finally:
        handle.remove()
    assert len(calls) == 2  # images 0 and 2 share a padded size (64 x 96), image 1 (64 x 64) runs alone
    for actual, expected in zip(batched, singles):
        assert [result["label"] for result in actual] == [result["label"] for result in expected]
        assert [result["box"] for result in actual] == [result["box"] for result in expected]
        torch.testing.assert_close(
            [result["score"] for result in actual], [result["score"] for result in expected], atol=1e-4, rtol=0
        )
    # Shared labels, dict inputs, generators.
    assert small_detector([images[2], images[0]], candidate_labels=LABELS)[1] == singles[0]
    dictionaries = [{"image": item, "candidate_labels": labels} for item, labels in zip(images, label_lists)]
    assert small_detector(dictionaries[1]) == singles[1]
    assert small_detector(dictionaries[::2]) == singles[::2]
    streamed = small_detector(item for item in dictionaries[::2])
    assert not isinstance(streamed, list) and list(streamed) == singles[::2]


def test_pipeline_chunks_large_label_lists(small_detector, image):
    chunked = small_detector(image, candidate_labels=LABELS, threshold=0.0, chunk_size=2, merge_mode="concatenate")
    reference = detect(
        small_detector.model,
        small_detector._glip_processor(),
        image,
        LABELS,
        threshold=0.0,
        chunk_size=2,
        merge_mode="concatenate",
    )[0]
    assert [result["score"] for result in chunked] == reference["scores"].tolist()
    # Default merge: duplicates across chunks removed, so never more detections than the concatenation.
    merged = small_detector(image, candidate_labels=LABELS, threshold=0.0, chunk_size=2)
    assert 0 < len(merged) < len(chunked)


@pytest.mark.parametrize(
    "arguments, error, pattern",
    [
        ({"candidate_labels": []}, ValueError, "`candidate_labels` is an empty label list"),
        ({"candidate_labels": ["cat", "   "]}, ValueError, r"`candidate_labels\[1\]`"),
        ({"candidate_labels": ["cat", 7]}, TypeError, r"`candidate_labels\[1\]` must be a string"),
        ({"candidate_labels": "cat,,dog"}, ValueError, r"`candidate_labels\[1\]`"),
        ({}, ValueError, "`candidate_labels` is missing"),
        ({"candidate_labels": ["cat"], "chunk_size": 0}, ValueError, "`chunk_size`"),
        ({"candidate_labels": ["cat"], "threshold": "high"}, TypeError, "`threshold`"),
        ({"candidate_labels": ["cat"], "merge_mode": "nms"}, ValueError, "`merge_mode`"),
        ({"candidate_labels": ["cat"], "score_threshold": 0.5}, TypeError, "score_threshold"),
    ],
)
def test_pipeline_rejects_bad_inputs(small_detector, image, arguments, error, pattern):
    with pytest.raises(error, match=pattern):
        small_detector(image, **arguments)


def test_pipeline_rejects_bad_image_lists(small_detector, image):
    with pytest.raises(ValueError, match="2 images but 3 label lists in `candidate_labels`"):
        small_detector([image, image], candidate_labels=[["cat"], ["dog"], ["car"]])
    with pytest.raises(ValueError, match=r"`candidate_labels\[1\]` is an empty label list"):
        small_detector([image, image], candidate_labels=[["cat"], []])
    with pytest.raises(ValueError, match="`image` is an empty list"):
        small_detector([], candidate_labels=["cat"])
    with pytest.raises(TypeError, match=r"`image\[1\]`"):
        small_detector([image, 3], candidate_labels=["cat"])
    with pytest.raises(TypeError, match="`image` must be a path or URL"):
        small_detector(torch.zeros(3, 32, 32), candidate_labels=["cat"])
    with pytest.raises(ValueError, match=r"`image\[0\]\['candidate_labels'\]`"):
        small_detector([{"image": image, "candidate_labels": []}])


def test_processor_post_processing_rejects_wrong_target_sizes(small_detector, image):
    processor = small_detector._glip_processor()
    inputs = processor(images=image, text=LABELS)
    with torch.no_grad():
        outputs = small_detector.model(**inputs)
    with pytest.raises(ValueError, match="`target_sizes` has 2 entries"):
        processor.post_process_grounded_object_detection(
            outputs, target_sizes=[(480, 640), (480, 640)], text_labels=[LABELS]
        )


# other models keep the stock pipeline --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grounding_dino_dir(tmp_path_factory):
    """A tiny random Grounding DINO (with the fixture's BERT tokenizer) saved locally."""
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        SwinConfig,
    )

    torch.manual_seed(0)
    config = GroundingDinoConfig(
        backbone_config=SwinConfig(
            embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4, out_indices=[2, 3, 4]
        ),
        text_config=BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32),
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        num_queries=12,
        encoder_n_points=2,
        decoder_n_points=2,
        max_text_len=32,
    )
    directory = tmp_path_factory.mktemp("grounding_dino")
    GroundingDinoForObjectDetection(config).eval().save_pretrained(directory)
    BertTokenizer.from_pretrained(FIXTURE / "bert").save_pretrained(directory)
    GroundingDinoImageProcessor(size={"shortest_edge": 96, "longest_edge": 128}).save_pretrained(directory)
    return directory


def test_other_models_keep_the_stock_pipeline(grounding_dino_dir, image):
    stock = pipeline(TASK, model=str(grounding_dino_dir), pipeline_class=ZeroShotObjectDetectionPipeline)
    default = pipeline(TASK, model=str(grounding_dino_dir))
    assert type(stock) is ZeroShotObjectDetectionPipeline
    assert type(default) is GLIPZeroShotObjectDetectionPipeline and not default.is_glip
    calls, handle = count_forwards(default.model)
    try:
        result = default(image, candidate_labels=["cat", "remote control"], threshold=0.0)
    finally:
        handle.remove()
    assert len(calls) == 2  # stock behaviour: one forward per label
    assert result == stock(image, candidate_labels=["cat", "remote control"], threshold=0.0)
    assert len(result) > 0
    cases = [
        ((image,), {"candidate_labels": "cat, remote control", "top_k": 3}),
        (([image, image.crop((0, 0, 480, 320))],), {"candidate_labels": [["cat"], ["dog", "car"]]}),
        (({"image": image, "candidate_labels": ["cat"]},), {"threshold": 0.5}),
    ]
    for arguments, keyword_arguments in cases:
        assert default(*arguments, **keyword_arguments) == stock(*arguments, **keyword_arguments)


# trust_remote_code without the import -------------------------------------------------------------------------------
# (tests/test_hub_glip.py: the folder carries its code; model, processor and GLIP's pipeline load in a process
# where the package cannot be imported, with the in-process detections.)


def test_converted_folder_carries_the_remote_code(tiny_a_dir):
    assert (tiny_a_dir / "glip_shim.py").is_file() and (tiny_a_dir / "modeling_glip.py").is_file()
    config = json.loads((tiny_a_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModelForZeroShotObjectDetection"] == "glip_shim.GLIPForGrounding"
    assert config["custom_pipelines"][TASK]["impl"] == "glip_shim.GLIPZeroShotObjectDetectionPipeline"
    with pytest.raises(FileNotFoundError):
        add_remote_code_files(tiny_a_dir / "missing")


# bad call arguments are refused before any forward -------------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments, error, message",
    [
        ({"top_k": -1}, ValueError, "top_k"),
        ({"top_k": 2.5}, ValueError, "top_k"),
        ({"threshold": float("nan")}, ValueError, "threshold"),
        ({"threshold": 1.5}, ValueError, "threshold"),
        ({"threshold": "high"}, TypeError, "threshold"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"merge_mode": "nms"}, ValueError, "merge_mode"),
        ({"chunk_size": 0}, ValueError, "chunk_size"),
        ({"official_mode": 1}, TypeError, "official_mode"),
        ({"max_prompts_per_forward": 0}, ValueError, "max_prompts_per_forward"),
    ],
)
def test_bad_call_arguments_fail_before_the_forward(small_detector, image, arguments, error, message):
    calls, handle = count_forwards(small_detector.model)
    try:
        with pytest.raises(error, match=message):
            small_detector(image, candidate_labels=LABELS, **arguments)
    finally:
        handle.remove()
    assert calls == []


def test_merge_mode_default_comes_from_the_model_config(small_detector, image):
    labels = ["red circle", "blue square", "green triangle", "person", "red circle shape"]
    config = small_detector.model.config
    default = small_detector(image, candidate_labels=labels, chunk_size=2, threshold=0.0, top_k=None)
    assert config.chunk_merge_mode == "cross_chunk_nms"
    assert default == small_detector(
        image, candidate_labels=labels, chunk_size=2, threshold=0.0, top_k=None, merge_mode="cross_chunk_nms"
    )
    concatenated = small_detector(
        image, candidate_labels=labels, chunk_size=2, threshold=0.0, top_k=None, merge_mode="concatenate"
    )
    config.chunk_merge_mode = "concatenate"
    try:
        assert small_detector(image, candidate_labels=labels, chunk_size=2, threshold=0.0, top_k=None) == concatenated
    finally:
        config.chunk_merge_mode = "cross_chunk_nms"
    assert len(concatenated) > len(default)  # the random-weight model fires on every prompt: duplicates across chunks


def test_official_mode_is_one_call_argument_away(small_detector, tiny_a_dir, image):
    """The pipeline runs the fast path by default; `official_mode=True` (at call time or when the pipeline is built)
    runs `detect`'s official mode: full padding, official fusion order, one chunk per forward; same detections."""
    lengths = []
    handle = small_detector.model.model.text_model.register_forward_hook(
        lambda module, args, kwargs, output: lengths.append(kwargs["input_ids"].shape[-1]), with_kwargs=True
    )
    try:
        fast = small_detector(image, candidate_labels=LABELS, threshold=0.0, chunk_size=2)
        assert len(lengths) == 1 and lengths[0] < small_detector.model.config.max_text_length  # 2 chunks, 1 forward
        lengths.clear()
        official = small_detector(image, candidate_labels=LABELS, threshold=0.0, chunk_size=2, official_mode=True)
        assert lengths == [small_detector.model.config.max_text_length] * 2  # one chunk per forward, full padding
        lengths.clear()
        bounded = small_detector(
            image, candidate_labels=LABELS, threshold=0.0, chunk_size=2, max_prompts_per_forward=1
        )
        assert len(lengths) == 2
    finally:
        handle.remove()
    assert small_detector.model.config.fusion_implementation == "factorised"
    for results in (official, bounded):
        assert [result["label"] for result in results] == [result["label"] for result in fast]
        for actual, expected in zip(results, fast):
            assert actual["score"] == pytest.approx(expected["score"], abs=SCORE_TOLERANCE)
    official_detector = pipeline(
        TASK, model=str(tiny_a_dir), image_processor=GLIPImageProcessor(min_size=64, max_size=107), official_mode=True
    )
    assert official_detector(image, candidate_labels=LABELS, threshold=0.0, chunk_size=2) == official


# saving and pushing --------------------------------------------------------------------------------------------------


def test_push_to_hub_uploads_after_the_remote_code_files_are_written(tiny_a_dir, tmp_path, monkeypatch):
    """`save_pretrained(push_to_hub=True)`: the upload sees the finished folder (shim and auto_map included)."""
    import huggingface_hub

    uploads = []

    def create_repo(self, repo_id, **kwargs):  # the Hub puts a bare name under the user's namespace
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id if '/' in repo_id else 'user/' + repo_id}")

    def upload_folder(self, repo_id, folder_path, **kwargs):
        folder = Path(folder_path)
        uploads.append(
            {
                "repo_id": repo_id,
                "files": sorted(path.name for path in folder.iterdir()),
                "auto_map": json.loads((folder / "config.json").read_text()).get("auto_map")
                if (folder / "config.json").is_file()
                else None,
                "commit_message": kwargs.get("commit_message"),
            }
        )
        return "https://huggingface.co/commit"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    model = GLIPForGrounding.from_pretrained(tiny_a_dir)
    model.save_pretrained(tmp_path / "glip-out", push_to_hub=True, repo_id="someone/glip-tiny", commit_message="m")
    assert len(uploads) == 1 and uploads[0]["repo_id"] == "someone/glip-tiny" and uploads[0]["commit_message"] == "m"
    assert {"glip_shim.py", "config.json", "model.safetensors"} <= set(uploads[0]["files"])
    assert uploads[0]["auto_map"]["AutoModelForZeroShotObjectDetection"] == "glip_shim.GLIPForGrounding"

    uploads.clear()
    GLIPProcessor.from_pretrained(tiny_a_dir).save_pretrained(tmp_path / "processor-out", push_to_hub=True)
    assert uploads and uploads[0]["repo_id"] == "user/processor-out"  # the folder name, as transformers does
    assert {"glip_shim.py", "processor_config.json"} <= set(uploads[0]["files"])


# images that cannot be loaded ----------------------------------------------------------------------------------------


@pytest.fixture
def local_http_server():
    """A loopback server: `/missing.png` answers 404, `/slow.png` never answers, `/text.png` sends no image."""
    import http.server
    import threading

    release = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/slow.png":
                release.wait(10)  # bounded: the test's timeout is far shorter
                return
            if self.path == "/text.png":
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"this is not an image")
                return
            self.send_error(404)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    release.set()
    server.shutdown()
    server.server_close()


def test_unloadable_images_name_the_input(small_detector, local_http_server, tmp_path):
    with pytest.raises(ValueError, match=r"missing\.png' answered HTTP 404"):
        small_detector(f"{local_http_server}/missing.png", candidate_labels=LABELS)
    with pytest.raises(ValueError, match=r"could not download .*slow\.png"):
        small_detector(f"{local_http_server}/slow.png", candidate_labels=LABELS, timeout=0.5)
    with pytest.raises(ValueError, match=r"text\.png' is not a readable image"):
        small_detector(f"{local_http_server}/text.png", candidate_labels=LABELS)
    with pytest.raises(ValueError, match="neither an existing file nor an http"):
        small_detector(str(tmp_path / "nowhere.png"), candidate_labels=LABELS)
