"""Figures: detections drawn where they are, the detection grid, training curves; what cannot be drawn is refused."""

import PIL.Image
import pytest
import torch

from transformers_glip.visualization_glip import (
    best_label_per_object,
    draw_detection_grid,
    draw_detection_tile,
    draw_detections,
    moving_average,
    plot_training_curves,
)


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


def pipeline_detection(label, score, xmin, ymin, xmax, ymax):
    return {"label": label, "score": score, "box": {"xmin": xmin, "ymin": ymin, "xmax": xmax, "ymax": ymax}}


def test_best_label_per_object_keeps_the_top_score_of_overlapping_boxes():
    detections = [
        pipeline_detection("red circle", 0.4, 10, 10, 30, 30),
        pipeline_detection("blue circle", 0.9, 11, 10, 30, 31),  # the same object, better label
        pipeline_detection("red square", 0.5, 50, 50, 60, 60),  # another object
    ]
    assert [item["label"] for item in best_label_per_object(detections)] == ["blue circle", "red square"]
    assert best_label_per_object([]) == []


def test_detection_tile_and_grid_layout():
    image = PIL.Image.new("RGB", (40, 20), (0, 0, 0))
    tile = draw_detection_tile(
        image, [pipeline_detection("x", 0.9, 2, 2, 8, 8)], [[30, 12, 6, 6]], title="t", scale=3, font_size=14
    )
    assert tile.size == (120, 60 + 20)  # x3 image below a 20-pixel header
    assert tile.getpixel((0, 0)) == (255, 255, 255)  # header background
    assert tile.getpixel((3 * 30 - 2, 20 + 3 * 14)) == (255, 255, 255)  # the white ground-truth outline (x - 2)
    assert tile.getpixel((3 * 2, 20 + 3 * 6)) not in ((0, 0, 0), (255, 255, 255))  # the detection, in colour
    assert tile.getpixel((3 * 20, 20 + 3 * 6)) == (0, 0, 0)  # nothing drawn elsewhere
    grid = draw_detection_grid([tile] * 4, columns=3, footer="footer")
    assert grid.size == (3 * (120 + 8), 2 * (80 + 8) + 22)
    with pytest.raises(ValueError, match="tiles must be a non-empty list"):
        draw_detection_grid([])
    with pytest.raises(ValueError, match="columns must be an integer >= 1"):
        draw_detection_grid([tile], columns=0)
    with pytest.raises(ValueError, match="scale must be an integer >= 1"):
        draw_detection_tile(image, [], scale=0)


def test_moving_average_and_training_curves(tmp_path):
    assert moving_average([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    assert moving_average([], 5) == []
    with pytest.raises(ValueError, match="window must be an integer >= 1"):
        moving_average([1.0], 0)
    points = [{"step": step, "loss": 1.0 / step, "loss_cls": 0.5 / step} for step in range(1, 31)]
    plot_training_curves(points, [{"step": 30, "ap50": 0.4, "ap": 0.2}], tmp_path / "curve.png", window=5)
    figure = PIL.Image.open(tmp_path / "curve.png")
    assert figure.width > figure.height  # two panels side by side
    plot_training_curves(points, [], tmp_path / "loss_only.png")
    assert PIL.Image.open(tmp_path / "loss_only.png").width < figure.width
    with pytest.raises(ValueError, match="points must be a non-empty list"):
        plot_training_curves([], [], tmp_path / "none.png")
