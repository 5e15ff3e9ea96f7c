"""Proof that a conversion is right: the strict `ConversionReport`, the non-finite check of the checkpoint tensors and
the comparison of a converted model with reference outputs recorded from the official code."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

__all__ = ["ConversionReport", "find_non_finite_tensors", "verify_against_reference"]

logger = logging.getLogger(__name__)


@dataclass
class ConversionReport:
    """Outcome of a conversion: every key that was not converted cleanly, by reason.

    Attributes:
        unmapped_keys: checkpoint keys that match no rule of the key table (and are not listed as dropped).
        unsupported_keys: checkpoint keys of features this package does not implement, with the reason.
        dropped_keys: checkpoint keys dropped on purpose (`DROPPED_KEY_PATTERNS`); informational only.
        duplicate_targets: model keys produced by more than one checkpoint key, with those keys.
        missing_keys: model keys that no checkpoint key maps to.
        unexpected_keys: converted keys that the model does not have.
        shape_mismatches: model key -> (converted shape, model shape).
        non_finite_keys: converted checkpoint key -> description of its NaN / Inf values (a checkpoint holding them
            gives a model whose outputs are NaN, i.e. no detections at all).
    """

    unmapped_keys: list[str] = field(default_factory=list)
    unsupported_keys: dict[str, str] = field(default_factory=dict)
    dropped_keys: list[str] = field(default_factory=list)
    duplicate_targets: dict[str, list[str]] = field(default_factory=dict)
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    shape_mismatches: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    non_finite_keys: dict[str, str] = field(default_factory=dict)

    @property
    def is_clean(self) -> bool:
        """Whether the conversion is complete and exact (dropped keys do not count as problems)."""
        return not (
            self.unmapped_keys
            or self.unsupported_keys
            or self.duplicate_targets
            or self.missing_keys
            or self.unexpected_keys
            or self.shape_mismatches
            or self.non_finite_keys
        )

    def format(self, max_keys_per_section: int = 50) -> str:
        """Human-readable report listing every problem (at most `max_keys_per_section` keys per section)."""

        def section(title: str, lines: list[str]) -> list[str]:
            if not lines:
                return []
            shown = lines[:max_keys_per_section]
            more = [f"    ... and {len(lines) - len(shown)} more"] if len(lines) > len(shown) else []
            return [f"  {title} ({len(lines)}):", *[f"    {line}" for line in shown], *more]

        parts = [
            *section("unmapped checkpoint keys (no rule in the key table)", sorted(self.unmapped_keys)),
            *section(
                "unsupported checkpoint keys",
                [f"{key}: {reason}" for key, reason in sorted(self.unsupported_keys.items())],
            ),
            *section(
                "model keys produced by several checkpoint keys",
                [f"{key} <- {sources}" for key, sources in sorted(self.duplicate_targets.items())],
            ),
            *section("missing model keys (no checkpoint key maps to them)", sorted(self.missing_keys)),
            *section("unexpected keys (converted, but the model has no such key)", sorted(self.unexpected_keys)),
            *section(
                "shape mismatches (model key: converted shape vs model shape)",
                [
                    f"{key}: {list(source_shape)} vs {list(model_shape)}"
                    for key, (source_shape, model_shape) in sorted(self.shape_mismatches.items())
                ],
            ),
            *section(
                "checkpoint tensors holding NaN or Inf (the checkpoint is damaged: use an intact copy)",
                [f"{key}: {description}" for key, description in sorted(self.non_finite_keys.items())],
            ),
        ]
        if not parts:
            return f"Conversion report: clean ({len(self.dropped_keys)} keys dropped on purpose)."
        return "\n".join(["Conversion report: the checkpoint does not convert cleanly.", *parts])


def find_non_finite_tensors(state_dict: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """Key -> `"<n> NaN, <m> Inf of <numel>"` for every floating-point tensor holding a non-finite value.

    Tensors on the meta device (shape-only schemas) and integer tensors are skipped.
    """
    found = {}
    for key, tensor in state_dict.items():
        if tensor.is_meta or not (tensor.is_floating_point() or tensor.is_complex()):
            continue
        if bool(torch.isfinite(tensor).all()):
            continue
        num_nan = int(torch.isnan(tensor).sum())
        num_inf = int(torch.isinf(tensor).sum())
        found[key] = f"{num_nan} NaN, {num_inf} Inf of {tensor.numel()} values"
    return found


def verify_against_reference(
    model,
    reference_outputs: str | Path,
    reference_inputs: str | Path | None = None,
    tolerance: float = 1e-3,
) -> dict[str, float]:
    """Run `model` on the inputs of an official reference run and compare its head outputs.

    Args:
        model: a `GLIPForGrounding` in eval mode.
        reference_outputs: safetensors with `head.dot_product_logits.P{3..7}` (batch, H*W, tokens),
            `head.centerness.P{3..7}` (batch, 1, H, W) and `head.box_regression.P{3..7}` (batch, 4, H, W) recorded
            from the official model (e.g. tests/fixtures/tiny_a/outputs.safetensors).
        reference_inputs: safetensors with `images.tensors`, `input_ids`, `attention_mask`; defaults to
            `inputs.safetensors` next to `reference_outputs`.
        tolerance: maximum absolute difference allowed for every compared tensor.

    Returns:
        Maximum absolute difference per compared output.

    Raises:
        ValueError: when a reference file is missing, or a difference exceeds `tolerance` (a NaN difference fails).
    """
    reference_outputs = Path(reference_outputs)
    reference_inputs = Path(reference_inputs) if reference_inputs else reference_outputs.parent / "inputs.safetensors"
    for path, option in ((reference_outputs, "--verify-against"), (reference_inputs, "--verify-inputs")):
        if not path.is_file():
            raise ValueError(f"Verification: {path} ({option}) is not a file.")
    inputs = load_file(str(reference_inputs))
    outputs = load_file(str(reference_outputs))
    levels = [f"P{level}" for level in range(3, 8)]
    expected = {
        # (batch, num_anchors, tokens), anchors P3..P7 row-major (y, x)
        "logits": torch.cat([outputs[f"head.dot_product_logits.{level}"] for level in levels], dim=1),
        # (batch, 1, H, W) -> (batch, H * W) per level -> (batch, num_anchors)
        "centerness": torch.cat([outputs[f"head.centerness.{level}"].flatten(1) for level in levels], dim=1),
        # (batch, 4, H, W) -> (batch, H * W, 4) per level -> (batch, num_anchors, 4)
        "box_regression": torch.cat(
            [outputs[f"head.box_regression.{level}"].flatten(2).transpose(1, 2) for level in levels], dim=1
        ),
    }
    with torch.no_grad():
        result = model(
            pixel_values=inputs["images.tensors"],
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
        )
    differences = {}
    for name, reference in expected.items():
        actual = getattr(result, name)
        if tuple(actual.shape) != tuple(reference.shape):
            raise ValueError(f"Verification: {name} has shape {list(actual.shape)}, reference {list(reference.shape)}")
        differences[name] = (actual.float() - reference.float()).abs().max().item()
    logger.info("Verification against %s: max |difference| %s", reference_outputs, differences)
    failed = {name: difference for name, difference in differences.items() if not difference <= tolerance}
    if failed:
        raise ValueError(f"Verification against {reference_outputs} failed (tolerance {tolerance}): {failed}")
    return differences
