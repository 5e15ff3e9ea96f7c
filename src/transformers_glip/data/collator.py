"""Batching of training samples for `GLIPForGrounding`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..box_geometry_glip import padded_size

__all__ = ["GLIPTrainingCollator"]


@dataclass
class GLIPTrainingCollator:
    """Batch samples of `GLIPTrainingTransform` (`transformers_glip.data.transform`) for `GLIPForGrounding`.

    Returns a dict with
    * `pixel_values`: `(batch, 3, height, width)`, zero-padded bottom/right to a multiple of `size_divisibility`;
    * `input_ids`, `attention_mask`: `(batch, max_length)`;
    * `labels`: list (one per image) of `{"boxes": (n, 4) xyxy network-input pixels, "positive_map":
      (n, max_length) binary float}`;
    * `image_sizes`: `(batch, 2)` unpadded `(height, width)` of every image;
    * `sample_ids`: list of str; `stream_state`: the stream position after the last sample (for checkpoints).

    Args:
        size_divisibility: Padded sizes are multiples of this (official 32; 0 pads to the largest image only).
    """

    size_divisibility: int = 32

    def __post_init__(self):
        value = self.size_divisibility
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"size_divisibility must be an integer >= 0 (official 32), got {value!r}.")

    def __call__(self, samples: list[dict]) -> dict:
        max_height = max(sample["pixel_values"].shape[1] for sample in samples)
        max_width = max(sample["pixel_values"].shape[2] for sample in samples)
        padded_height, padded_width = padded_size(max_height, max_width, self.size_divisibility)
        pixel_values = torch.zeros((len(samples), 3, padded_height, padded_width), dtype=torch.float32)
        for index, sample in enumerate(samples):
            _, height, width = sample["pixel_values"].shape  # (3, height, width)
            pixel_values[index, :, :height, :width] = sample["pixel_values"]
        return {
            "pixel_values": pixel_values,
            "input_ids": torch.stack([sample["input_ids"] for sample in samples]),
            "attention_mask": torch.stack([sample["attention_mask"] for sample in samples]),
            "labels": [{"boxes": sample["boxes"], "positive_map": sample["positive_map"]} for sample in samples],
            "image_sizes": torch.tensor([sample["image_size"] for sample in samples], dtype=torch.long),
            "sample_ids": [sample["sample_id"] for sample in samples],
            "stream_state": samples[-1].get("stream_state"),
        }
