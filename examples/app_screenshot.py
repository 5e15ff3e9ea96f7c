"""Screenshot of the demo app (`glip app`) driven by a real headless Chromium: docs/images/app_screenshot.png.

```
make demo                                  # trains the demo model into out/demo (else a tiny random model is used)
python examples/app_screenshot.py          # -> docs/images/app_screenshot.png
python examples/app_screenshot.py --model ./glip-t --image street.jpg --labels "person, bicycle, car"
```

The script serves the app on 127.0.0.1 (a free port), opens it in headless Chromium (the OS package: Debian
`apt-get install chromium chromium-driver`; driven with selenium through the system chromedriver, no browser
download), uploads the image, types the labels, sets the threshold, presses Detect, waits for the picture with the
boxes and saves a screenshot of the page. Without `--image`, the image is a held-out picture of the demo world
(`transformers_glip.data.synthetic_shapes`, 3x enlarged for the page) and the labels are all twelve colour-shape
names of that world. The browser resolves no host name but localhost: the page loads nothing from elsewhere.

`find_browser`, `start_browser` and `drive_detection` are also used by `tests/test_app_glip.py`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPOSITORY / "out" / "demo"
DEFAULT_OUTPUT = REPOSITORY / "docs" / "images" / "app_screenshot.png"
TOKENIZER_DIR = REPOSITORY / "examples" / "assets" / "bert-base-uncased-tokenizer"
WINDOW_SIZE = (1280, 1000)
ENLARGE = 3  # the demo world's images are 128-192 pixels; the page shows them 3x larger (nearest neighbour)

__all__ = ["drive_detection", "find_browser", "main", "start_browser"]


def find_browser() -> tuple[str | None, str | None, str]:
    """`(chromium binary, chromedriver, reason)` from the OS packages; `reason` says what is missing ('' if none)."""
    import importlib.util

    if importlib.util.find_spec("selenium") is None:
        return None, None, 'selenium is not installed (pip install "transformers-glip[app]")'
    binary = next((shutil.which(name) for name in ("chromium", "chromium-browser") if shutil.which(name)), None)
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        return binary, driver, "no Chromium + chromedriver (Debian: apt-get install chromium chromium-driver)"
    return binary, driver, ""


def start_browser(binary: str, driver: str, window_size: tuple[int, int] = WINDOW_SIZE):
    """Headless Chromium through the system chromedriver (selenium); it resolves only localhost."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        f"--window-size={window_size[0]},{window_size[1]}",
        "--hide-scrollbars",
        # Only this machine: every other host name fails to resolve, and no background traffic.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(driver), options=options)


def drive_detection(driver, url: str, image_path: Path, prompt: str, threshold: float, timeout: float = 120) -> str:
    """Open the page, upload `image_path`, type `prompt` (labels mode), set the threshold, press Detect; returns the
    `src` of the output image once the page shows it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, timeout)
    driver.get(url)
    upload = wait.until(lambda page: page.find_element(By.CSS_SELECTOR, "#glip-input-image input[type=file]"))
    upload.send_keys(str(Path(image_path).resolve()))
    wait.until(lambda page: page.find_elements(By.CSS_SELECTOR, "#glip-input-image img"))
    textbox = driver.find_element(By.CSS_SELECTOR, "#glip-prompt textarea")
    textbox.clear()
    textbox.send_keys(prompt)
    number = driver.find_element(By.CSS_SELECTOR, "#glip-threshold input[type=number]")
    number.send_keys(Keys.CONTROL, "a")
    number.send_keys(f"{threshold:g}", Keys.TAB)
    wait.until(lambda page: float(number.get_attribute("value")) == threshold)
    driver.find_element(By.CSS_SELECTOR, "#glip-detect").click()
    shown = wait.until(lambda page: page.find_elements(By.CSS_SELECTOR, "#glip-output-image img"))
    return shown[0].get_attribute("src")


def _tiny_random_model(directory: Path) -> Path:
    """A tiny random-weight GLIP (for a page without `make demo`; its boxes mean nothing)."""
    import torch
    from transformers import AutoTokenizer

    from transformers_glip import GLIPConfig, GLIPForGrounding, GLIPImageProcessor, GLIPProcessor

    torch.manual_seed(0)
    config = GLIPConfig(
        backbone_config={"embed_dim": 16, "depths": [1, 1, 2, 1], "num_heads": [1, 2, 2, 4], "drop_path_rate": 0.0},
        text_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
        fpn_channels=32,
        num_head_blocks=1,
        fusion_hidden_size=32,
        fusion_num_heads=2,
        max_text_length=64,
        head_use_deformable_conv=False,
        prior_prob=0.5,  # random scores near 0.5, so the threshold keeps some boxes
    )
    processor = GLIPProcessor(
        GLIPImageProcessor(min_size=128, max_size=224),
        AutoTokenizer.from_pretrained(TOKENIZER_DIR),
        max_text_length=64,
    )
    GLIPForGrounding(config).save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def _demo_world_image(path: Path, seed: int) -> list[str]:
    """Save a validation picture of the demo world (at least 3 objects, 3x enlarged) to `path`; returns the
    world's label names."""
    import numpy as np
    from PIL import Image

    from transformers_glip.data.synthetic_shapes import SyntheticShapesConfig, category_names, render_sample

    world = SyntheticShapesConfig()
    combinations = [tuple(name.split(" ", 1)) for name in category_names(world, "validation")]
    for index in range(1000):
        image, objects = render_sample(np.random.default_rng([seed, 7, index]), world, combinations)
        if len(objects) >= 3:
            break
    image.resize((image.width * ENLARGE, image.height * ENLARGE), Image.Resampling.NEAREST).save(path)
    return category_names(world, "validation")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help=f"a GLIP folder (default: {DEFAULT_MODEL} if it exists, else a tiny model)")
    parser.add_argument("--image", help="the image to upload (default: a picture of the demo world)")
    parser.add_argument("--labels", help="comma-separated labels (default: the demo world's twelve names)")
    parser.add_argument("--threshold", type=float, default=0.5, help="the slider's value (default: 0.5)")
    parser.add_argument("--seed", type=int, default=29, help="which demo-world picture (default: 29)")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), help=f"the PNG to write (default: {DEFAULT_OUTPUT})")
    arguments = parser.parse_args(argv)

    from transformers_glip.app_glip import GLIPDemo, build_app

    binary, driver_path, missing = find_browser()
    if missing:
        parser.error(missing)
    with tempfile.TemporaryDirectory() as temporary:
        temporary = Path(temporary)
        if arguments.model is not None:
            model = Path(arguments.model)
        elif DEFAULT_MODEL.is_dir():
            model = DEFAULT_MODEL
        else:
            print(f"{DEFAULT_MODEL} does not exist (run `make demo`): using a tiny random model", file=sys.stderr)
            model = _tiny_random_model(temporary / "tiny")
        image_path = Path(arguments.image) if arguments.image else temporary / "demo_world.png"
        world_labels = _demo_world_image(image_path, arguments.seed) if not arguments.image else None
        labels = arguments.labels or ", ".join(world_labels or [])
        if not labels:
            parser.error("--labels is needed with --image")
        demo = GLIPDemo.from_folder(model, "cpu")
        resolved = model.resolve()
        demo.model_name = str(resolved.relative_to(REPOSITORY)) if resolved.is_relative_to(REPOSITORY) else str(model)
        if resolved.is_relative_to(temporary.resolve()):
            demo.model_name = "a tiny random-weight GLIP (run `make demo` for the demo model)"
        app = build_app(demo)
        app.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
        driver = start_browser(binary, driver_path)
        try:
            drive_detection(driver, app.local_url, image_path, labels, arguments.threshold)
            from selenium.webdriver.common.by import By
            from selenium.webdriver.support.ui import WebDriverWait

            summary = driver.find_element(By.CSS_SELECTOR, "#glip-summary")
            WebDriverWait(driver, 60).until(lambda page: "detection" in summary.text)
            output = Path(arguments.output)
            output.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(output))
            print(f"{summary.text}\nWrote {output}")
        finally:
            driver.quit()
            app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
