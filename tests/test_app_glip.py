"""Tests of the demo app (`app_glip.py`, `glip app`): its request handler, Gradio's own client against the launched
page, the `glip app` command as a subprocess, and a real headless Chromium driving the page.

The model is the converted random-weight fixture `tiny_a` (GLIP-T architecture, scores ~0.5-0.66). The Gradio tests
are skipped where Gradio is not installed (`pip install "transformers-glip[app]"`); the browser test where no
Chromium + chromedriver (Debian: `apt-get install chromium chromium-driver`) or no selenium is installed.
"""

import importlib.util
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transformers_glip import GLIPForGrounding, GLIPProcessor, cli, detect, draw_detections
from transformers_glip.app_glip import (
    API_NAME,
    DEFAULT_MODEL_DIRECTORY,
    TABLE_HEADERS,
    GLIPDemo,
    build_app,
    format_detection_rows,
    label_font_size,
    launch_app,
    load_glip_folder,
    parse_labels,
)

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # no telemetry, no version check: nothing leaves the machine

REPOSITORY = Path(__file__).resolve().parents[1]
IMAGE = REPOSITORY / "tests" / "fixtures" / "tiny_a" / "image.png"
LABELS = ["red circle", "blue square", "green triangle", "person"]
LABEL_TEXT = "red circle, blue square , green triangle,person,"
CAPTION = "a red circle next to a blue square"
THRESHOLD = 0.55  # keeps a handful of the random-weight fixture's detections

SCREENSHOT_SCRIPT = REPOSITORY / "examples" / "app_screenshot.py"
HAS_GRADIO = importlib.util.find_spec("gradio") is not None
needs_gradio = pytest.mark.skipif(not HAS_GRADIO, reason='needs Gradio (pip install "transformers-glip[app]")')


def load_screenshot_script():
    """examples/app_screenshot.py as a module: its browser helpers drive the page here too."""
    specification = importlib.util.spec_from_file_location("app_screenshot_example", SCREENSHOT_SCRIPT)
    module = importlib.util.module_from_spec(specification)
    specification.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo(tiny_a_dir):
    return GLIPDemo.from_folder(tiny_a_dir, "cpu")


@pytest.fixture(scope="module")
def image():
    return Image.open(IMAGE).convert("RGB")


@pytest.fixture(scope="module")
def expected(tiny_a_dir, image):
    """What the page must show for LABEL_TEXT at THRESHOLD: the library's `detect` and `draw_detections`."""
    model = GLIPForGrounding.from_pretrained(tiny_a_dir).eval()
    processor = GLIPProcessor.from_pretrained(tiny_a_dir)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        detections = detect(model, processor, image, LABELS, threshold=THRESHOLD)[0]
    finally:
        torch.set_num_threads(previous)
    assert len(detections["scores"]) > 0  # the comparisons below compare something
    drawn = draw_detections(image, detections, font_size=label_font_size(image))
    return {"detections": detections, "drawn": drawn}


@pytest.fixture(scope="module")
def gradio_temporary_files(tmp_path_factory):
    """Gradio's uploads and outputs under pytest's temporary folder."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(tmp_path_factory.mktemp("gradio")))
        yield


@pytest.fixture(scope="module")
def launched(demo, gradio_temporary_files):
    """The demo page served on localhost (a free port from 7860), closed after the module."""
    app = build_app(demo)
    app.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    yield app
    app.close()


def pixels(picture: Image.Image) -> np.ndarray:
    return np.asarray(picture.convert("RGB"))


def assert_rows_match(rows, detections):
    assert [row[0] for row in rows] == list(detections["text_labels"])
    assert np.allclose([row[1] for row in rows], detections["scores"].numpy(), atol=1e-3)
    boxes = [[float(value) for value in row[2].strip("()").split(", ")] for row in rows]
    assert np.allclose(boxes, detections["boxes"].numpy(), atol=0.051)


# ---------------------------------------------------------------------------------------------- without Gradio
def test_label_font_size_scales_with_the_image():
    assert label_font_size(Image.new("RGB", (160, 120))) == 12
    assert label_font_size(Image.new("RGB", (1333, 800))) == 42


def test_parse_labels():
    assert parse_labels(LABEL_TEXT) == LABELS
    assert parse_labels("cat, cat,dog") == ["cat", "dog"]
    assert parse_labels(" , ,") == []
    with pytest.raises(TypeError, match="comma-separated"):
        parse_labels(["cat"])


def test_labels_request_is_the_library_detect(demo, image, expected, single_torch_thread):
    drawn, rows, detections = demo.predict(image, LABEL_TEXT, mode="labels", threshold=THRESHOLD)
    assert torch.equal(detections["boxes"], expected["detections"]["boxes"])
    assert torch.equal(detections["scores"], expected["detections"]["scores"])
    assert np.array_equal(pixels(drawn), pixels(expected["drawn"]))
    assert not np.array_equal(pixels(drawn), pixels(image))  # boxes were drawn
    assert rows == format_detection_rows(expected["detections"])
    assert_rows_match(rows, expected["detections"])
    assert all(row[1] > THRESHOLD for row in rows)


def test_caption_request_matches_glip_detect_caption(demo, image, tiny_a_dir, capsys, single_torch_thread):
    _, rows, detections = demo.predict(image, CAPTION, mode="caption", threshold=0.5)
    status = cli.main(
        ["detect", str(IMAGE), "--model", str(tiny_a_dir), "--caption", CAPTION, "--threshold", "0.5", "--json"]
    )
    assert status == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert len(rows) == len(entry["detections"]) > 0
    assert [row[0] for row in rows] == [item["label"] for item in entry["detections"]]
    assert np.allclose(detections["scores"].numpy(), [item["score"] for item in entry["detections"]], atol=1e-5)


def test_higher_threshold_keeps_fewer_detections(demo, image, single_torch_thread):
    _, low, _ = demo.predict(image, LABEL_TEXT, threshold=THRESHOLD)
    _, high, _ = demo.predict(image, LABEL_TEXT, threshold=0.99)
    assert len(high) < len(low) and high == []


@pytest.mark.parametrize(
    ("arguments", "error", "fragment"),
    [
        ({"image": None}, ValueError, "upload an image"),
        ({"image": np.zeros((8, 8, 3), dtype=np.uint8)}, TypeError, "PIL.Image.Image"),
        ({"prompt": "   "}, ValueError, "the prompt is empty"),
        ({"prompt": " , ,"}, ValueError, "no labels"),
        ({"mode": "sentence"}, ValueError, "prompt mode"),
        ({"threshold": 1.5}, ValueError, "threshold"),
        ({"threshold": "high"}, TypeError, "threshold"),
        ({"prompt": "of the and", "mode": "caption"}, ValueError, "caption"),
    ],
)
def test_bad_requests_say_what_is_wrong(demo, image, arguments, error, fragment):
    request = {"image": image, "prompt": LABEL_TEXT, "mode": "labels", "threshold": THRESHOLD, **arguments}
    with pytest.raises(error, match=fragment):
        demo.predict(request["image"], request["prompt"], mode=request["mode"], threshold=request["threshold"])


def test_missing_default_model_says_run_make_demo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="make demo") as raised:
        load_glip_folder()
    assert "--model" in str(raised.value) and str(DEFAULT_MODEL_DIRECTORY) in str(raised.value)


def test_bad_model_folders_are_named(tmp_path, tiny_a_dir):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="no config.json"):
        load_glip_folder(tmp_path / "empty")
    with pytest.raises(ValueError, match="is a file"):
        load_glip_folder(tmp_path / "file.bin")
    with pytest.raises(ValueError, match="no such folder"):
        load_glip_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="--device"):
        load_glip_folder(tiny_a_dir, device="not-a-device")


def test_launch_checks_the_port():
    with pytest.raises(ValueError, match="port"):
        launch_app(port=70000)


def test_glip_app_without_gradio_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` raises ImportError
    status = cli.main(["app", "--model", "whatever"])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err
    assert "glip app: error:" in err and "transformers-glip[app]" in err


def test_glip_app_help(capsys):
    assert cli.main(["app", "--help"]) == 0
    out = capsys.readouterr().out
    for fragment in ("--model", "--port", "--share", "out/demo", "transformers-glip[app]"):
        assert fragment in out


@pytest.mark.parametrize("port", ["0", "70000", "http"])
def test_glip_app_bad_port_exits_2(port, capsys):
    assert cli.main(["app", "--port", port]) == 2
    err = capsys.readouterr().err
    assert "--port" in err and "[1, 65535]" in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------------- with Gradio
@needs_gradio
def test_glip_app_without_a_model_exits_2_and_says_run_make_demo(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["app"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "glip app: error:" in err
    assert "make demo" in err and "--model" in err


@needs_gradio
def test_build_app_needs_a_demo():
    with pytest.raises(TypeError, match="GLIPDemo"):
        build_app("out/demo")


@needs_gradio
def test_gradio_client_detects_through_the_page(launched, expected):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(launched.local_url, analytics_enabled=False, verbose=False)
    assert list(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == [f"/{API_NAME}"]
    drawn_path, summary, table = client.predict(
        handle_file(str(IMAGE)), "labels", LABEL_TEXT, THRESHOLD, api_name=f"/{API_NAME}"
    )
    assert np.array_equal(pixels(Image.open(drawn_path)), pixels(expected["drawn"]))  # png: lossless
    assert table["headers"] == TABLE_HEADERS
    assert_rows_match(table["data"], expected["detections"])
    count = len(expected["detections"]["scores"])
    assert summary.startswith(f"**{count} detection")
    with pytest.raises(AppError, match="no labels"):
        client.predict(handle_file(str(IMAGE)), "labels", " , ", THRESHOLD, api_name=f"/{API_NAME}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@needs_gradio
def test_glip_app_command_serves_the_page(tiny_a_dir, tmp_path, expected):
    """`glip app --model DIR --port N` in its own process, asked through gradio_client, then stopped."""
    from gradio_client import Client, handle_file

    port = free_port()
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPOSITORY / "src"), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "GRADIO_TEMP_DIR": str(tmp_path / "gradio"),
    }
    command = [sys.executable, "-m", "transformers_glip.cli", "app", "--model", str(tiny_a_dir), "--port", str(port)]
    command += ["--device", "cpu"]
    log_path = tmp_path / "app.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
        try:
            url = f"http://127.0.0.1:{port}/"
            deadline = time.monotonic() + 180
            while True:
                assert process.poll() is None, log_path.read_text()
                try:
                    with urllib.request.urlopen(url, timeout=5) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                assert time.monotonic() < deadline, f"no page on {url} after 180 s:\n{log_path.read_text()}"
                time.sleep(1)
            client = Client(url, analytics_enabled=False, verbose=False)
            _, summary, table = client.predict(
                handle_file(str(IMAGE)), "labels", LABEL_TEXT, THRESHOLD, api_name=f"/{API_NAME}"
            )
            assert_rows_match(table["data"], expected["detections"])
        finally:
            process.terminate()
            process.wait(timeout=30)
    assert f"http://127.0.0.1:{port}" in log_path.read_text()  # it printed where to look


# ----------------------------------------------------------------------------------------------- a real browser
SCREENSHOT = load_screenshot_script()
BROWSER, DRIVER, NO_BROWSER = SCREENSHOT.find_browser()


@pytest.mark.skipif(not HAS_GRADIO, reason='needs Gradio (pip install "transformers-glip[app]")')
@pytest.mark.skipif(bool(NO_BROWSER), reason=NO_BROWSER or "a browser is installed")
def test_headless_chromium_drives_the_page(launched, expected, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = SCREENSHOT.start_browser(BROWSER, DRIVER)
    try:
        source = SCREENSHOT.drive_detection(driver, launched.local_url, IMAGE, LABEL_TEXT, THRESHOLD)
        assert source.startswith(launched.local_url.rstrip("/"))  # served by the app itself
        with urllib.request.urlopen(source, timeout=30) as response:
            shown = Image.open(io.BytesIO(response.read()))
        assert np.array_equal(pixels(shown), pixels(expected["drawn"]))  # the picture with the boxes
        count = len(expected["detections"]["scores"])
        summary = driver.find_element(By.CSS_SELECTOR, "#glip-summary")
        WebDriverWait(driver, 30).until(lambda page: f"{count} detection" in summary.text)
        table = driver.find_element(By.CSS_SELECTOR, "#glip-detections").text
        best = format_detection_rows(expected["detections"])[0]
        assert best[0] in table and best[2] in table
        screenshot = tmp_path / "app.png"
        assert driver.save_screenshot(str(screenshot))
        with Image.open(screenshot) as picture:
            assert picture.size[0] >= 1000 and picture.format == "PNG"
        # A bad request shows its message on the page.
        textbox = driver.find_element(By.CSS_SELECTOR, "#glip-prompt textarea")
        textbox.clear()
        textbox.send_keys(" , ")
        driver.find_element(By.CSS_SELECTOR, "#glip-detect").click()
        WebDriverWait(driver, 60).until(lambda page: "no labels" in page.find_element(By.TAG_NAME, "body").text)
    finally:
        driver.quit()
