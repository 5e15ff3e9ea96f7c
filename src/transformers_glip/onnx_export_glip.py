"""ONNX export of a GLIP model, and a runner that turns the ONNX outputs into the processor's detections.

Two forms of graph (see [`export_glip_to_onnx`]):

* **text as input** (default): inputs named like the processor's outputs, `pixel_values` `(batch, 3, height, width)`
  float32 and `input_ids` / `attention_mask` / `token_type_ids` `(batch, sequence_length)` int64; any prompt of the
  processor (labels or a caption) runs through the same graph.
* **fixed vocabulary** (`labels=[...]`, prompt-then-detect): the text tower (BERT) runs ONCE at export on the
  detection prompt of `labels` and its output is stored in the graph as a constant; the only input is
  `pixel_values`. The fusion and the head text layers still run per image (they mix the text with the image).

Both graphs output `logits` `(batch, num_anchors, sequence_length)` (token logits), `pred_boxes`
`(batch, num_anchors, 4)` (decoded xyxy boxes in pixels of the padded network input, legacy +1 coder) and
`centerness` `(batch, num_anchors)` (logits): what `GLIPProcessor.post_process_grounded_object_detection` reads.
A json file next to the `.onnx` (`<name>.json`, [`onnx_metadata_path`]) holds what the post-processing needs besides:
the anchors per level, the image size of the graph, the config's post-processing arguments, the input names, and
for the fixed form the label names and their positive map. [`GLIPOnnxDetector`] runs a graph with onnxruntime on
numpy inputs and returns the same list of detection dicts as the processor's post-processing.

The modulated deformable convolutions of the head (`head_use_deformable_conv=True`, every released GLIP) are
exported as the ONNX operator `DeformConv` (opset 19; onnxruntime's CPU provider runs it, measured equal to
`torchvision.ops.deform_conv2d` to 1e-6). torchvision registers no ONNX symbolic for `deform_conv2d`, so the export
registers one for the duration of the call. The GLIP offset-reuse quirk (the coarser neighbour's conv reads the
offsets of level l as a flat prefix, `reinterpret_offsets_for_output`) is traced as the reshape + slice it is.
For runtimes without `DeformConv` (onnxruntime before its CPU kernel, other execution providers),
`deformable_conv="decomposed"` exports an exact decomposition instead: bilinear sampling by `GatherElements` and one
`MatMul` per conv ([`decomposed_deform_conv2d`], equal to torchvision's kernel to float rounding; it holds the
sampled columns, `9 x channels x H' x W'` floats per image, so it needs more memory).
The graph is produced by the TorchScript exporter (`torch.onnx.export(..., dynamo=False)`, deprecated since torch
2.9 but present in 2.14): the dynamo exporter needs `onnxscript` (not a dependency) and its own translation of
`deform_conv2d`, and the model's shape arithmetic (Swin window padding, offset reuse) would become guards on
symbolic sizes; with one fixed image size the TorchScript trace is exact.

What does not export, and why:

* **The post-processing** (per-level candidate threshold and top-k, class-aware NMS, the `kthvalue` cut): the
  candidate counts depend on the data and NMS on the label grouping; it runs after the graph, in
  [`GLIPOnnxDetector`], through the library's own post-processing (which needs torch).
* **Other image sizes**: a graph takes ONE padded image size (`image_size`, by default the processor's landscape
  maximum `(padded(min_size), padded(max_size))`). The Swin window padding, the deformable-offset reuse between
  levels and the anchors are computed from the feature-map sizes while tracing and become constants. Images are
  zero-padded bottom/right to that size (the processor's `pad_size`); because GLIP has no padding mask, padding
  changes the GroupNorm and pooling statistics, so the results equal eager PyTorch on the same padded tensor (not
  on the processor's default `/32` padding unless the sizes coincide). Export once per size (e.g. a portrait one).
* **Other text lengths**: the sequence length is the processor's `max_text_length` (the official padding to 256).
* **Half precision, training, the loss, `output_hidden_states` / `output_attentions`**: not part of the graph.
* **Chunked label lists** (more labels than fit in one prompt, e.g. LVIS): the fixed form bakes in ONE prompt, so pass
  labels whose detection prompt fits in `max_text_length` tokens (export several graphs for more); the text-input
  form can run each chunk of `GLIPProcessor.encode_label_chunks` as a batch of prompts of one image
  repeated (not tested here).
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .box_geometry_glip import generate_anchors, padded_size
from .modeling_glip import GLIPConvNorm, GLIPForGrounding, GLIPModulatedDeformConv, deformable_sampling_points
from .postprocessing_glip import (
    DEFAULT_SCORE_THRESHOLD,
    check_score_threshold,
    post_process_grounded_detections,
    post_processing_arguments,
)
from .processing_glip import GLIPProcessor

__all__ = [
    "DEFORMABLE_CONV_EXPORTS",
    "DEFAULT_OPSET_VERSION",
    "MINIMUM_OPSET_VERSION",
    "ONNX_METADATA_FORMAT",
    "GLIPDecomposedDeformConv",
    "GLIPFixedVocabularyGraph",
    "GLIPOnnxDetector",
    "GLIPTextInputGraph",
    "decomposed_deform_conv2d",
    "default_export_image_size",
    "export_glip_to_onnx",
    "export_pretrained_glip_to_onnx",
    "onnx_metadata_path",
]

# How the modulated deformable convs are exported: the ONNX operator, or bilinear gathers + a matrix product.
DEFORMABLE_CONV_EXPORTS = ("onnx", "decomposed")
# ONNX `DeformConv` exists from opset 19 on.
MINIMUM_OPSET_VERSION = 19
DEFAULT_OPSET_VERSION = 19
# Written into the json next to the graph, so that a runner can refuse a file of another layout.
ONNX_METADATA_FORMAT = "transformers_glip.onnx/1"
OUTPUT_NAMES = ("logits", "pred_boxes", "centerness")
TEXT_INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# The operators Python's `//` on traced sizes is recorded as.
FLOOR_DIVISION_OPERATORS = ("aten::floordiv", "aten::floor_divide")


def onnx_metadata_path(onnx_path: str | Path) -> Path:
    """The post-processing json written next to an exported graph: `model.onnx` -> `model.json`."""
    return Path(onnx_path).with_suffix(".json")


def default_export_image_size(processor: GLIPProcessor) -> tuple[int, int]:
    """`(height, width)` that holds every landscape image the processor resizes: `(padded(min_size),
    padded(max_size))` (with the official GLIP-T sizes 800/1333: `(800, 1344)`).

    Raises:
        `ValueError` when the processor has no long-side cap (`max_size=None`): then no size holds every image.
    """
    image_processor = processor.image_processor
    if image_processor.max_size is None:
        raise ValueError(
            "The processor has no long-side cap (`max_size=None`), so no fixed graph size holds every image; pass "
            "`image_size=(height, width)`."
        )
    divisibility = image_processor.size_divisibility
    return padded_size(image_processor.min_size, image_processor.max_size, divisibility)


def _register_deform_conv_symbolic(opset_version: int) -> None:
    """Map `torchvision::deform_conv2d` to ONNX `DeformConv` in the TorchScript exporter."""
    from torch.onnx import register_custom_op_symbolic, symbolic_helper

    @symbolic_helper.parse_args("v", "v", "v", "v", "v", "i", "i", "i", "i", "i", "i", "i", "i", "b")
    def deform_conv2d_symbolic(
        graph,
        hidden_states,
        weight,
        offset,
        mask,
        bias,
        stride_height,
        stride_width,
        padding_height,
        padding_width,
        dilation_height,
        dilation_width,
        weight_groups,
        offset_groups,
        use_mask,
    ):
        inputs = [hidden_states, weight, offset, bias] + ([mask] if use_mask else [])
        return graph.op(
            "DeformConv",
            *inputs,
            strides_i=[stride_height, stride_width],
            pads_i=[padding_height, padding_width, padding_height, padding_width],
            dilations_i=[dilation_height, dilation_width],
            group_i=weight_groups,
            offset_group_i=offset_groups,
        )

    register_custom_op_symbolic("torchvision::deform_conv2d", deform_conv2d_symbolic, opset_version)


def _is_floating(value) -> bool:
    """Whether a TorchScript graph value holds floating-point numbers (False when its type is unknown)."""
    scalar_type = getattr(value.type(), "scalarType", lambda: None)()
    return scalar_type in ("Float", "Double", "Half", "BFloat16")


def _register_floor_division_symbolic(opset_version: int) -> None:
    """Export Python's `//` on traced integer sizes as a FLOOR division.

    The TorchScript exporter maps `aten::floordiv` / `aten::floor_divide` to a truncating ONNX `Div`, so
    `-(-height // window)` (the Swin stage's ceiling division) gives the floor instead of the ceiling for sizes that
    are not multiples of the window: the shifted-window mask then has fewer windows than the feature map and the
    graph fails at run time.
    """
    from torch.onnx import register_custom_op_symbolic

    def floor_division_symbolic(graph, dividend, divisor):
        if _is_floating(dividend) or _is_floating(divisor):
            return graph.op("Floor", graph.op("Div", dividend, divisor))
        quotient = graph.op("Div", dividend, divisor)  # truncated toward zero for integers
        zero = graph.op("Constant", value_t=torch.tensor(0, dtype=torch.int64))
        remainder = graph.op("Sub", dividend, graph.op("Mul", quotient, divisor))
        signs_differ = graph.op("Xor", graph.op("Less", dividend, zero), graph.op("Less", divisor, zero))
        inexact = graph.op("Not", graph.op("Equal", remainder, zero))
        correction = graph.op("Cast", graph.op("And", signs_differ, inexact), to_i=7)  # 7: ONNX int64
        return graph.op("Sub", quotient, correction)

    for name in FLOOR_DIVISION_OPERATORS:
        register_custom_op_symbolic(name, floor_division_symbolic, opset_version)


def decomposed_deform_conv2d(
    hidden_states: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    stride: int,
    padding: int,
) -> torch.Tensor:
    """Modulated deformable convolution (`torchvision.ops.deform_conv2d` with one offset group, dilation 1) in
    plain tensor ops: bilinear sampling by `gather` on the flattened map, then one matrix product.

    Sampling follows torchvision's kernel: a point `(y, x)` outside `(-1, height) x (-1, width)` reads 0; inside,
    each of its four integer neighbours contributes its bilinear weight when it lies in the map (zero padding).

    Args:
        hidden_states: `(batch, channels, height, width)`.
        offset: `(batch, 2 * kernel_taps, out_height, out_width)`, `(dy, dx)` interleaved per tap.
        mask: `(batch, kernel_taps, out_height, out_width)`.
        weight: `(out_channels, channels, kernel_height, kernel_width)`; bias: `(out_channels,)`.

    Returns:
        `(batch, out_channels, out_height, out_width)`.
    """
    batch_size, channels, height, width = hidden_states.shape
    out_channels, _, kernel_height, kernel_width = weight.shape
    out_height, out_width = offset.shape[-2:]
    num_taps = kernel_height * kernel_width
    dtype, device = hidden_states.dtype, hidden_states.device
    # (batch, taps, out_height, out_width) sampling points in input pixels
    rows, columns = deformable_sampling_points(offset, stride, padding, kernel_height, kernel_width)
    inside = (rows > -1) & (rows < height) & (columns > -1) & (columns < width)
    row_low, column_low = torch.floor(rows), torch.floor(columns)
    row_fraction, column_fraction = rows - row_low, columns - column_low
    flat_states = hidden_states.reshape(batch_size, channels, height * width)  # (batch, channels, H * W)
    sampled = torch.zeros(batch_size, channels, num_taps * out_height * out_width, dtype=dtype, device=device)
    corners = (
        (0, 0, (1 - row_fraction) * (1 - column_fraction)),
        (0, 1, (1 - row_fraction) * column_fraction),
        (1, 0, row_fraction * (1 - column_fraction)),
        (1, 1, row_fraction * column_fraction),
    )
    for row_step, column_step, corner_weight in corners:
        corner_rows, corner_columns = row_low + row_step, column_low + column_step
        valid = inside & (corner_rows >= 0) & (corner_rows <= height - 1)
        valid = valid & (corner_columns >= 0) & (corner_columns <= width - 1)
        index = corner_rows.clamp(0, height - 1) * width + corner_columns.clamp(0, width - 1)
        # (batch, taps, H', W') -> (batch, channels, taps * H' * W'): the same points for every channel
        index = index.to(torch.int64).reshape(batch_size, 1, -1).expand(batch_size, channels, -1)
        corner_scale = (corner_weight * valid.to(dtype)).reshape(batch_size, 1, -1)  # (batch, 1, taps * H' * W')
        sampled = sampled + torch.gather(flat_states, 2, index) * corner_scale
    sampled = sampled * mask.reshape(batch_size, 1, -1)  # modulation, (batch, channels, taps * H' * W')
    # (batch, channels * taps, H' * W'): row c * taps + tap, the order of `weight.reshape(out, channels * taps)`
    sampled = sampled.reshape(batch_size, channels * num_taps, out_height * out_width)
    output = torch.matmul(weight.reshape(out_channels, channels * num_taps), sampled)  # (batch, out, H' * W')
    output = output + bias[None, :, None]
    return output.reshape(batch_size, out_channels, out_height, out_width)  # (batch, out, H', W')


class GLIPDecomposedDeformConv(nn.Module):
    """Drop-in for `GLIPModulatedDeformConv` (same parameters, same call) that runs [`decomposed_deform_conv2d`]:
    for runtimes without ONNX `DeformConv` (`deformable_conv="decomposed"`)."""

    def __init__(self, deformable_conv: GLIPModulatedDeformConv):
        super().__init__()
        self.weight = deformable_conv.weight
        self.bias = deformable_conv.bias
        self.stride = deformable_conv.stride
        self.padding = deformable_conv.padding
        self.output_size = deformable_conv.output_size

    def forward(self, hidden_states: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`(batch, channels, height, width)`, offsets `(batch, 18, H', W')`, masks `(batch, 9, H', W')` ->
        `(batch, out_channels, H', W')`."""
        return decomposed_deform_conv2d(
            hidden_states.float(),
            offset.float(),
            mask.float(),
            self.weight.float(),
            self.bias.float(),
            self.stride,
            self.padding,
        ).to(hidden_states.dtype)


def _with_decomposed_deform_convs(model: GLIPForGrounding) -> GLIPForGrounding:
    """A copy of `model` whose modulated deformable convs run [`decomposed_deform_conv2d`] (same weights)."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, GLIPConvNorm) and isinstance(module.conv, GLIPModulatedDeformConv):
            module.conv = GLIPDecomposedDeformConv(module.conv)
    return model


class GLIPTextInputGraph(nn.Module):
    """The exported computation with the prompt as input: [`GLIPForGrounding`] up to the decoded boxes."""

    def __init__(self, model: GLIPForGrounding):
        super().__init__()
        self.model = model

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(batch, 3, height, width)` images and `(batch, sequence_length)` token tensors -> `logits`
        `(batch, num_anchors, sequence_length)`, `pred_boxes` `(batch, num_anchors, 4)`, `centerness`
        `(batch, num_anchors)`."""
        outputs = self.model(
            pixel_values=pixel_values,
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            return_dict=True,
        )
        return outputs.logits, outputs.pred_boxes, outputs.centerness


class GLIPFixedVocabularyGraph(nn.Module):
    """The exported computation for one fixed prompt: the text tower's outputs are constants (buffers).

    Mirrors `GLIPModel.forward` after its text model and `GLIPForGrounding.forward`'s box decoding, for a fixed
    padded image size (the anchors are a constant too).
    """

    def __init__(self, model: GLIPForGrounding, text_inputs: Mapping[str, torch.Tensor], image_size: tuple[int, int]):
        super().__init__()
        self.glip = model.model
        self.box_coder = model.box_coder
        config = model.config
        glip = model.model
        with torch.no_grad():
            attention_mask = text_inputs["attention_mask"]
            text_outputs = glip.text_model(
                input_ids=text_inputs["input_ids"],
                attention_mask=attention_mask,
                token_type_ids=text_inputs.get("token_type_ids"),
                return_dict=True,
            )
            text_hidden_states = text_outputs.last_hidden_state  # (1, sequence_length, text_hidden_size)
            text_embedded = text_hidden_states * attention_mask.unsqueeze(-1).to(text_hidden_states.dtype)
            head_text_input = text_hidden_states
            if glip.prompt_offsets is not None:
                sequence_length = text_hidden_states.shape[1]
                # (T, text_hidden_size) -> (1, T, text_hidden_size), as `GLIPModel.forward` adds them
                offsets = glip.prompt_offsets[:sequence_length].unsqueeze(0).to(text_hidden_states.dtype)
                text_embedded = text_embedded + offsets
                head_text_input = text_hidden_states + offsets
            level_sizes = _feature_map_sizes(model, image_size)
            anchors = generate_anchors(level_sizes, config.anchor_strides, config.anchor_sizes, dtype=torch.float32)
        self.register_buffer("text_attention_mask", attention_mask.clone(), persistent=False)
        self.register_buffer("text_embedded", text_embedded.clone(), persistent=False)
        self.register_buffer("head_text_input", head_text_input.clone(), persistent=False)
        self.register_buffer("anchors", anchors, persistent=False)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(batch, 3, height, width)` images -> `logits` `(batch, num_anchors, sequence_length)`, `pred_boxes`
        `(batch, num_anchors, 4)`, `centerness` `(batch, num_anchors)`."""
        batch_size = pixel_values.shape[0]
        backbone_features = self.glip.backbone(pixel_values).feature_maps  # (C3, C4, C5)
        pyramid_features = self.glip.feature_pyramid(backbone_features)  # (P3, ..., P7)
        # (1, sequence_length, ...) -> (batch, sequence_length, ...) views: one prompt for every image
        head_text_input = self.head_text_input.expand(batch_size, -1, -1)
        text_embedded = self.text_embedded.expand(batch_size, -1, -1)
        attention_mask = self.text_attention_mask.expand(batch_size, -1)
        head_outputs = self.glip.head(list(pyramid_features), head_text_input, text_embedded, attention_mask)
        pred_boxes = self.box_coder.decode(head_outputs.box_regression, self.anchors)  # (batch, num_anchors, 4)
        return head_outputs.logits, pred_boxes, head_outputs.centerness


def _feature_map_sizes(model: GLIPForGrounding, image_size: tuple[int, int]) -> list[tuple[int, int]]:
    """`(height, width)` of P3..P7 for a padded input of `image_size`, from one forward of the vision path."""
    parameter = next(model.parameters())
    with torch.no_grad():
        pixel_values = torch.zeros(1, 3, *image_size, dtype=parameter.dtype, device=parameter.device)
        features = model.model.feature_pyramid(model.model.backbone(pixel_values).feature_maps)
    return [tuple(feature.shape[-2:]) for feature in features]


def _check_image_size(image_size: Any, size_divisibility: int) -> tuple[int, int]:
    if (
        not isinstance(image_size, Sequence)
        or isinstance(image_size, (str, bytes))
        or len(image_size) != 2
        or not all(isinstance(value, int) and not isinstance(value, bool) and value > 0 for value in image_size)
    ):
        raise ValueError(f"`image_size` must be a pair of positive ints (height, width), got {image_size!r}.")
    height, width = image_size
    if size_divisibility > 0 and (height % size_divisibility or width % size_divisibility):
        raise ValueError(
            f"`image_size` {(height, width)} must be multiples of the processor's size_divisibility "
            f"{size_divisibility} (the padded network-input size), e.g. "
            f"{padded_size(height, width, size_divisibility)}."
        )
    return height, width


def _check_labels(labels: Any) -> list[str]:
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence) or not labels:
        raise ValueError(f"`labels` must be a non-empty list of object names, got {labels!r}.")
    for index, label in enumerate(labels):
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"`labels[{index}]` = {label!r}: every label must be a non-empty string.")
    return list(labels)


def export_glip_to_onnx(
    model: GLIPForGrounding,
    processor: GLIPProcessor,
    output_path: str | Path,
    labels: Sequence[str] | None = None,
    opset_version: int = DEFAULT_OPSET_VERSION,
    image_size: tuple[int, int] | None = None,
    deformable_conv: str = "onnx",
) -> Path:
    """Export `model` to an ONNX file and write the post-processing json next to it ([`onnx_metadata_path`]).

    Args:
        model ([`GLIPForGrounding`]): the model (float32; it is exported on the CPU, in eval mode, unchanged).
        processor ([`GLIPProcessor`]): its processor (sizes, text length, prompts of `labels`).
        output_path: the `.onnx` file to write (its folder is created).
        labels (`list[str]`, *optional*): bake the detection prompt of these names into the graph (its only input
            is then `pixel_values`); without it the prompt tokens are graph inputs.
        opset_version (`int`, defaults to 19): ONNX opset, at least 19 (`DeformConv`).
        image_size (`tuple[int, int]`, *optional*): padded `(height, width)` of the graph's input, multiples of the
            processor's `size_divisibility`; defaults to [`default_export_image_size`].
        deformable_conv (`str`, defaults to `"onnx"`): `"onnx"` exports the head's modulated deformable convs as
            ONNX `DeformConv`; `"decomposed"` as bilinear `GatherElements` + `MatMul` ([`decomposed_deform_conv2d`])
            for runtimes without `DeformConv` (onnxruntime before its CPU kernel, TensorRT, ...).

    Returns:
        `Path` of the written `.onnx` file.

    Raises:
        `TypeError` / `ValueError` naming the bad argument.
    """
    if not isinstance(model, GLIPForGrounding):
        raise TypeError(f"`model` must be a GLIPForGrounding, got {type(model).__name__}.")
    if not isinstance(processor, GLIPProcessor):
        raise TypeError(f"`processor` must be a GLIPProcessor, got {type(processor).__name__}.")
    if isinstance(opset_version, bool) or not isinstance(opset_version, int) or opset_version < MINIMUM_OPSET_VERSION:
        raise ValueError(
            f"`opset_version` must be an int >= {MINIMUM_OPSET_VERSION} (ONNX DeformConv), got {opset_version!r}."
        )
    if any(parameter.dtype != torch.float32 for parameter in model.parameters()):
        raise ValueError("Export a float32 model (`model.float()`): the graph's inputs and constants are float32.")
    size_divisibility = processor.image_processor.size_divisibility
    image_size = default_export_image_size(processor) if image_size is None else image_size
    image_size = _check_image_size(image_size, size_divisibility)
    labels = None if labels is None else _check_labels(labels)
    if deformable_conv not in DEFORMABLE_CONV_EXPORTS:
        raise ValueError(f"`deformable_conv` must be one of {DEFORMABLE_CONV_EXPORTS}, got {deformable_conv!r}.")
    output_path = Path(output_path)
    if output_path.is_dir():
        raise ValueError(f"`output_path` {output_path} is a folder; pass the .onnx file to write.")

    was_training, device = model.training, next(model.parameters()).device
    implementation = model.config.deformable_conv_implementation
    model.eval().to("cpu")
    # The graph's deformable convs come from torchvision's operator (ONNX `DeformConv`) or from the decomposed
    # modules, whatever the model's eager implementation (the fast path's `"gather"` would trace to row gathers).
    model.config.deformable_conv_implementation = "torchvision"
    try:
        exported = _with_decomposed_deform_convs(model) if deformable_conv == "decomposed" else model
        return _export(exported, processor, output_path, labels, opset_version, image_size, deformable_conv)
    finally:
        model.config.deformable_conv_implementation = implementation
        model.to(device).train(was_training)


def _export(
    model: GLIPForGrounding,
    processor: GLIPProcessor,
    output_path: Path,
    labels: list[str] | None,
    opset_version: int,
    image_size: tuple[int, int],
    deformable_conv: str,
) -> Path:
    sequence_length = processor.max_text_length
    level_sizes = _feature_map_sizes(model, image_size)
    pixel_values = torch.zeros(1, 3, *image_size)
    metadata: dict[str, Any] = {
        "format": ONNX_METADATA_FORMAT,
        "form": "text_input" if labels is None else "fixed_vocabulary",
        "image_size": list(image_size),
        "sequence_length": sequence_length,
        "num_anchors_per_level": [height * width for height, width in level_sizes],
        "post_processing": post_processing_arguments(model.config),
        "output_names": list(OUTPUT_NAMES),
        "opset_version": opset_version,
        "deformable_conv": deformable_conv if model.config.head_use_deformable_conv else None,
    }
    if labels is None:
        encoded = processor(text=["object"], return_tensors="pt", official_mode=True)  # max_text_length tokens
        text_inputs = {name: encoded[name] for name in TEXT_INPUT_NAMES if name in encoded}
        if "token_type_ids" not in text_inputs:  # a tokenizer without them: the model's default, zeros
            text_inputs["token_type_ids"] = torch.zeros_like(text_inputs["input_ids"])
        graph = GLIPTextInputGraph(model)
        example_inputs = (pixel_values, *(text_inputs[name] for name in TEXT_INPUT_NAMES))
        input_names = ["pixel_values", *TEXT_INPUT_NAMES]
        dynamic_axes = {name: {0: "batch"} for name in [*input_names, *OUTPUT_NAMES]}
    else:
        # The prompt's own tokens only (the processor's default, as `detect`): the padding is masked, so a fixed
        # vocabulary needs no padding columns in the graph.
        encoded = processor(text=labels, return_tensors="pt")
        text_inputs = {name: encoded[name] for name in TEXT_INPUT_NAMES if name in encoded}
        metadata["sequence_length"] = int(encoded["input_ids"].shape[1])
        graph = GLIPFixedVocabularyGraph(model, text_inputs, image_size)
        example_inputs = (pixel_values,)
        input_names = ["pixel_values"]
        dynamic_axes = {name: {0: "batch"} for name in [*input_names, *OUTPUT_NAMES]}
        metadata["text_labels"] = list(encoded["text_labels"][0])
        metadata["positive_map"] = [
            torch.nonzero(row > 0).flatten().tolist() for row in encoded["positive_map"][0]
        ]  # the tokens of each label
    metadata["input_names"] = input_names

    output_path.parent.mkdir(parents=True, exist_ok=True)
    _register_deform_conv_symbolic(opset_version)
    _register_floor_division_symbolic(opset_version)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # Expected for a graph of one image size: the feature-map sizes, the offset-reuse branch and the anchors
            # are constants of the trace (see the module docstring).
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings(
                "ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning
            )
            torch.onnx.export(
                graph,
                example_inputs,
                str(output_path),
                input_names=input_names,
                output_names=list(OUTPUT_NAMES),
                dynamic_axes=dynamic_axes,
                opset_version=opset_version,
                do_constant_folding=True,
                dynamo=False,
            )
    finally:
        torch.onnx.unregister_custom_op_symbolic("torchvision::deform_conv2d", opset_version)
        for name in FLOOR_DIVISION_OPERATORS:
            torch.onnx.unregister_custom_op_symbolic(name, opset_version)
    onnx_metadata_path(output_path).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    return output_path


def export_pretrained_glip_to_onnx(
    model_directory: str | Path,
    output_path: str | Path,
    labels: Sequence[str] | None = None,
    opset_version: int = DEFAULT_OPSET_VERSION,
    image_size: tuple[int, int] | None = None,
    deformable_conv: str = "onnx",
) -> Path:
    """[`export_glip_to_onnx`] of a saved / converted GLIP folder (`config.json`, weights, processor files)."""
    model_directory = Path(model_directory)
    if not (model_directory / "config.json").is_file():
        raise ValueError(
            f"`model_directory` {model_directory} holds no config.json; pass a folder written by save_pretrained or "
            "the converter."
        )
    model = GLIPForGrounding.from_pretrained(model_directory, dtype=torch.float32)
    processor = GLIPProcessor.from_pretrained(model_directory)
    return export_glip_to_onnx(model, processor, output_path, labels, opset_version, image_size, deformable_conv)


class GLIPOnnxDetector:
    """Runs an exported GLIP graph with onnxruntime and post-processes its outputs like the processor.

    Args:
        onnx_path: the `.onnx` file of [`export_glip_to_onnx`] (its json must lie next to it).
        providers (`list[str]`, *optional*): onnxruntime execution providers (default: the CPU provider).
    """

    def __init__(self, onnx_path: str | Path, providers: Sequence[str] | None = None):
        import onnxruntime

        onnx_path = Path(onnx_path)
        metadata_path = onnx_metadata_path(onnx_path)
        if not onnx_path.is_file():
            raise ValueError(f"`onnx_path` {onnx_path} does not exist; export a model first.")
        if not metadata_path.is_file():
            raise ValueError(f"{metadata_path} is missing: it is written next to the .onnx file by the export.")
        self.metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
        if self.metadata.get("format") != ONNX_METADATA_FORMAT:
            raise ValueError(f"{metadata_path} is not a GLIP ONNX metadata file ({ONNX_METADATA_FORMAT}).")
        self.session = onnxruntime.InferenceSession(
            str(onnx_path), providers=list(providers) if providers else ["CPUExecutionProvider"]
        )
        self.image_size = tuple(self.metadata["image_size"])
        self.input_names = list(self.metadata["input_names"])
        self.text_labels = self.metadata.get("text_labels")

    @property
    def pad_size(self) -> dict[str, int]:
        """The processor argument that pads images to the graph's size: `processor(images, pad_size=...)`."""
        return {"height": self.image_size[0], "width": self.image_size[1]}

    @property
    def has_fixed_vocabulary(self) -> bool:
        """True for a graph exported with `labels` (only `pixel_values` as input)."""
        return self.metadata["form"] == "fixed_vocabulary"

    def run(self, pixel_values: np.ndarray, **text_inputs: np.ndarray) -> dict[str, np.ndarray]:
        """The raw graph outputs `logits`, `pred_boxes`, `centerness` for `(batch, 3, height, width)` float32
        `pixel_values` (the graph's size) and, for the text-input form, the `(batch, length)` int64 `input_ids`,
        `attention_mask`, `token_type_ids` (zeros when omitted; `length` <= the exported text length: shorter prompts
        are padded with masked zeros, and the `logits` come back with `length` token columns)."""
        pixel_values = np.asarray(pixel_values, dtype=np.float32)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[-2:]) != self.image_size:
            raise ValueError(
                f"`pixel_values` must have shape (batch, 3, {self.image_size[0]}, {self.image_size[1]}) (the "
                f"exported size), got {pixel_values.shape}; pad with the processor's `pad_size`."
            )
        feeds = {"pixel_values": pixel_values}
        given_length = None
        if not self.has_fixed_vocabulary:
            if "input_ids" not in text_inputs:
                raise ValueError("This graph takes the prompt as input: pass `input_ids` (and `attention_mask`).")
            input_ids = np.asarray(text_inputs["input_ids"], dtype=np.int64)
            graph_length = self.metadata["sequence_length"]
            given_length = input_ids.shape[-1] if input_ids.ndim == 2 else -1
            for name in TEXT_INPUT_NAMES:
                value = text_inputs.get(name)
                if value is None:
                    value = np.ones_like(input_ids) if name == "attention_mask" else np.zeros_like(input_ids)
                value = np.asarray(value, dtype=np.int64)
                if value.ndim != 2 or value.shape[0] != pixel_values.shape[0] or not 0 < given_length <= graph_length:
                    raise ValueError(
                        f"`{name}` must have shape ({pixel_values.shape[0]}, L) with L <= {graph_length} (the "
                        f"exported text length), got {value.shape}."
                    )
                if value.shape[1] != given_length:
                    raise ValueError(f"`{name}` has {value.shape[1]} tokens, `input_ids` {given_length}.")
                # The processor pads to the longest prompt; the graph takes `graph_length` tokens. Right-padding
                # with masked zeros is exact (the text padding is masked everywhere).
                feeds[name] = np.pad(value, ((0, 0), (0, graph_length - given_length)))
        outputs = dict(zip(OUTPUT_NAMES, self.session.run(list(OUTPUT_NAMES), feeds)))
        if given_length is not None:
            outputs["logits"] = outputs["logits"][..., :given_length]  # (batch, num_anchors, given_length)
        return outputs

    def __call__(
        self,
        pixel_values: np.ndarray,
        image_sizes: Any,
        target_sizes: Any = None,
        threshold: float | None = DEFAULT_SCORE_THRESHOLD,
        positive_map: Any = None,
        text_labels: Sequence[Sequence[str]] | None = None,
        **text_inputs: np.ndarray,
    ) -> list[dict[str, Any]]:
        """Detections per image, as `GLIPProcessor.post_process_grounded_object_detection` returns them.

        Args:
            pixel_values: `(batch, 3, height, width)` float32, padded to the graph's size.
            image_sizes: `(batch, 2)` unpadded network-input `(height, width)` (the processor's `image_sizes`).
            target_sizes: `(batch, 2)` original `(height, width)` to rescale the boxes to (processor's
                `original_sizes`), or None for network-input pixels.
            threshold: keep detections with `score > threshold` (None: the official top `max_detections`).
            positive_map, text_labels: the processor's outputs for the prompt (text-input form only; the fixed form
                carries its own).
            text_inputs: `input_ids`, `attention_mask`, `token_type_ids` (text-input form).

        Returns:
            `list[dict]` per image: `boxes` `(num_detections, 4)` xyxy, `scores`, `labels` (0-based entity indices),
            `text_labels` when known (torch tensors, like the processor).
        """
        check_score_threshold(threshold)
        outputs = {
            name: torch.from_numpy(np.ascontiguousarray(value))
            for name, value in self.run(pixel_values, **text_inputs).items()
        }
        batch_size = outputs["logits"].shape[0]
        if self.has_fixed_vocabulary:
            if positive_map is not None or text_labels is not None:
                raise ValueError("This graph has a fixed vocabulary; do not pass `positive_map` / `text_labels`.")
            positive_map = torch.zeros(len(self.text_labels), self.metadata["sequence_length"])
            for row, tokens in enumerate(self.metadata["positive_map"]):
                positive_map[row, tokens] = 1.0
            text_labels = [self.text_labels] * batch_size
        elif positive_map is None:
            raise ValueError("Pass the processor's `positive_map` for the prompt (text-input graph).")
        if isinstance(positive_map, (list, tuple)):  # per-image maps, possibly of different label counts
            positive_map = [torch.as_tensor(np.asarray(image_map), dtype=torch.float32) for image_map in positive_map]
        else:
            positive_map = torch.as_tensor(np.asarray(positive_map), dtype=torch.float32)
        results = post_process_grounded_detections(
            outputs["logits"],
            outputs["pred_boxes"],
            outputs["centerness"],
            self.metadata["num_anchors_per_level"],
            positive_map,
            _as_pairs(image_sizes),
            target_sizes=None if target_sizes is None else _as_pairs(target_sizes),
            score_threshold=threshold,
            **self.metadata["post_processing"],
        )
        if text_labels is not None:
            for names, result in zip(text_labels, results):
                result["text_labels"] = [list(names)[label] for label in result["labels"].tolist()]
        return results


def _as_pairs(sizes: Any) -> list[tuple[float, float]]:
    array = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)  # (batch, 2) (height, width)
    return [(float(height), float(width)) for height, width in array]
