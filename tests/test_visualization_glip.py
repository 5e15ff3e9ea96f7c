"""draw_detections draws boxes where the detections are and rejects what it cannot draw."""

import PIL.Image
import pytest
import torch

from transformers_glip.visualization_glip import draw_detections


def test_draws_processor_output_inside_boxes_only():
    image = PIL.Image.new("RGB", (100, 80), (0, 0, 0))
    detections = {
        "boxes": torch.tensor([[40.0, 30.0, 90.0, 70.0]]),
        "scores": torch.tensor([0.9]),
        "text_labels": ["a cat"],
    }
    drawn = draw_detections(image, detections, line_width=2)
    assert drawn.size == image.size and image.getpixel((40, 50)) == (0, 0, 0)  # input untouched
    assert drawn.getpixel((40, 50)) != (0, 0, 0)  # left edge of the box
    assert drawn.getpixel((5, 5)) == (0, 0, 0)  # far from the box


def test_draws_pipeline_output_and_applies_threshold():
    image = PIL.Image.new("RGB", (60, 60), (0, 0, 0))
    detections = [{"score": 0.2, "label": "dog", "box": {"xmin": 10, "ymin": 20, "xmax": 50, "ymax": 55}}]
    assert draw_detections(image, detections, score_threshold=0.5).getpixel((10, 40)) == (0, 0, 0)
    assert draw_detections(image, detections).getpixel((10, 40)) != (0, 0, 0)


def test_label_near_the_right_edge_stays_inside_and_font_size_scales_it():
    """A box at the right edge gets its label shifted left (not cut off); `font_size` sets the label height."""
    image = PIL.Image.new("RGB", (200, 100), (0, 0, 0))
    detections = [
        {"score": 0.9, "label": "a long label name", "box": {"xmin": 180, "ymin": 40, "xmax": 199, "ymax": 90}}
    ]

    def label_rows_and_columns(drawn):
        # The label box is filled above the detection box (rows < 40); the outline itself starts at row 40.
        pixels = [(x, y) for y in range(40) for x in range(200) if drawn.getpixel((x, y)) != (0, 0, 0)]
        return {y for _, y in pixels}, {x for x, _ in pixels}

    rows, columns = label_rows_and_columns(draw_detections(image, detections, line_width=1))
    assert min(columns) < 150 and max(columns) <= 199  # shifted left of xmin=180, inside the image
    large_rows, _ = label_rows_and_columns(draw_detections(image, detections, line_width=1, font_size=24))
    assert len(large_rows) > len(rows) + 8


def test_bad_input():
    image = PIL.Image.new("RGB", (10, 10))
    with pytest.raises(TypeError, match="image"):
        draw_detections("image.png", [])
    with pytest.raises(TypeError, match="detections"):
        draw_detections(image, 3)
    with pytest.raises(TypeError, match=r"detections\[0\]"):
        draw_detections(image, [{"box": [1, 2, 3, 4]}])
