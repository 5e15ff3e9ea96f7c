"""GLIP (Grounded Language-Image Pre-training, Li et al., CVPR 2022, arXiv 2112.03857) for Hugging Face transformers.

Pipeline: Swin backbone -> FPN (P3..P7) and BERT text encoder -> dynamic head (per block: bi-directional fusion,
one extra BERT layer on the text, DyConv on the pyramid) -> per-anchor token logits, box deltas and centerness.

Official sources (microsoft/GLIP): `maskrcnn_benchmark/modeling/rpn/vldyhead.py` (`DyConv`, `VLDyHead`,
`VLDyHeadModule`), `maskrcnn_benchmark/layers/dyrelu.py`, `maskrcnn_benchmark/layers/deform_conv.py`,
`maskrcnn_benchmark/modeling/detector/generalized_vl_rcnn.py`, `maskrcnn_benchmark/modeling/language_backbone/`.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import deform_conv2d
from transformers import BertModel, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput, can_return_tuple

from .box_geometry_glip import GLIPBoxCoder, generate_anchors
from .configuration_glip import GLIPConfig
from .hub_glip import add_remote_code_files, pop_hub_arguments, push_folder_to_hub
from .loss_glip import GLIPLoss
from .modeling_glip_backbone import GLIPFeaturePyramid, GLIPSwinAttention, GLIPSwinBackbone
from .modeling_glip_fusion import (
    ATTENTION_CLAMP_VALUE,
    GLIPBiAttentionBlock,
    GLIPBiMultiHeadAttention,
    GLIPHeadTextLayer,
)

__all__ = [
    "GLIPConvNorm",
    "GLIPDyConv",
    "GLIPDynamicHead",
    "GLIPDynamicHeadOutput",
    "GLIPDynamicReLU",
    "GLIPForGrounding",
    "GLIPGroundingOutput",
    "GLIPHeadBlock",
    "GLIPModel",
    "GLIPModelOutput",
    "GLIPModulatedDeformConv",
    "GLIPPreTrainedModel",
    "GLIPScale",
    "hard_sigmoid",
    "reinterpret_offsets_for_output",
    "deformable_sampling_points",
    "gather_deform_conv2d",
]

# Modulated deformable 3x3 convs: 9 kernel taps, each with a (dy, dx) offset and a sigmoid modulation mask.
DEFORMABLE_KERNEL_SIZE = 3
NUM_KERNEL_TAPS = DEFORMABLE_KERNEL_SIZE * DEFORMABLE_KERNEL_SIZE
NUM_OFFSET_CHANNELS = 2 * NUM_KERNEL_TAPS

# DyReLU (official `DYReLU` with K2=True, use_bias=True, reduction 4): y in [0, 1] from a hard sigmoid is mapped to
# slopes `(y - 0.5) * lambda + init_a` and intercepts `y - 0.5 + init_b`.
DYNAMIC_RELU_REDUCTION = 4
DYNAMIC_RELU_LAMBDA = 2.0
DYNAMIC_RELU_INIT_SLOPES = (1.0, 0.0)
DYNAMIC_RELU_INIT_INTERCEPTS = (0.0, 0.0)

# Standard deviation of the official normal init of the scale-attention conv and the box/centerness predictors.
HEAD_CONV_INIT_STD = 0.01

# Standard deviation of the official truncated-normal init of the Swin linear layers and relative position tables.
SWIN_INIT_STD = 0.02


def hard_sigmoid(tensor: torch.Tensor) -> torch.Tensor:
    """`relu6(x + 3) / 6` (official `h_sigmoid`), computed by `torch.nn.functional.hardsigmoid`.

    Bit-identical to the official three-op form in float32; in bfloat16/float16 `hardsigmoid` rounds once instead of
    after every op (differences of one unit in the last place).
    """
    return F.hardsigmoid(tensor)


def reinterpret_offsets_for_output(
    offset: torch.Tensor, mask: torch.Tensor, output_height: int, output_width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Offsets/masks of one level as the official CUDA kernel reads them for a conv of another output size.

    `DyConv` computes one offset/mask map on level l and hands it to the convs on the neighbouring levels. The
    official `modulated_deformable_im2col` kernel does not check shapes: it indexes the per-image buffers with the
    strides of the conv OUTPUT. For an output of `(H', W')` it therefore reads the first `18 * H' * W'` offset values
    (and `9 * H' * W'` mask values) of each image in `(channel, y, x)` order. `torchvision.ops.deform_conv2d`
    validates shapes, so the reinterpreted tensors are built explicitly (`vldyhead.py::DyConv.forward`; GLIP spec
    section 6.4 step 3). Identity when the sizes already match.

    Args:
        offset: `(batch, 18, height, width)` offsets, (dy, dx) interleaved per kernel tap.
        mask: `(batch, 9, height, width)` modulation masks.
        output_height, output_width: output size of the conv that reuses them.

    Returns:
        `(batch, 18, output_height, output_width)` offsets and `(batch, 9, output_height, output_width)` masks.
    """
    batch_size, offset_channels, height, width = offset.shape
    if (height, width) == (output_height, output_width):
        return offset, mask
    if output_height * output_width > height * width:
        raise ValueError(
            f"Cannot reuse deformable offsets of a {height}x{width} map for a larger {output_height}x{output_width} "
            "output (the official kernel would read out of bounds)."
        )
    mask_channels = mask.shape[1]
    num_offsets = offset_channels * output_height * output_width
    num_masks = mask_channels * output_height * output_width
    offset = offset.reshape(batch_size, -1)[:, :num_offsets]  # (batch, 18 * H' * W') flat prefix per image
    offset = offset.reshape(batch_size, offset_channels, output_height, output_width)  # (batch, 18, H', W')
    mask = mask.reshape(batch_size, -1)[:, :num_masks]  # (batch, 9 * H' * W') flat prefix per image
    mask = mask.reshape(batch_size, mask_channels, output_height, output_width)  # (batch, 9, H', W')
    return offset, mask


class GLIPScale(nn.Module):
    """Learnable scalar multiplier of one level's box regression (official `layers/scale.py::Scale`)."""

    def __init__(self, init_value: float = 1.0):
        super().__init__()
        # The default dtype, so that `from_pretrained(dtype=...)` builds it in the requested dtype.
        self.scale = nn.Parameter(torch.tensor([init_value]))

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor * self.scale


def deformable_sampling_points(
    offset: torch.Tensor, stride: int, padding: int, kernel_height: int = 3, kernel_width: int = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where a deformable convolution samples its input, in input pixels, as torchvision computes it:
    `(output_y * stride - padding + tap_y) + dy` (and the same for x).

    Args:
        offset: `(batch, 2 * kernel_height * kernel_width, out_height, out_width)`, `(dy, dx)` interleaved per tap.

    Returns:
        `rows, columns`, each `(batch, taps, out_height, out_width)`.
    """
    batch_size, _, out_height, out_width = offset.shape
    dtype, device = offset.dtype, offset.device
    output_rows = torch.arange(out_height, dtype=dtype, device=device) * stride - padding  # (out_height,)
    output_columns = torch.arange(out_width, dtype=dtype, device=device) * stride - padding  # (out_width,)
    tap_rows = torch.arange(kernel_height, dtype=dtype, device=device).repeat_interleave(kernel_width)  # (taps,)
    tap_columns = torch.arange(kernel_width, dtype=dtype, device=device).repeat(kernel_height)  # (taps,)
    num_taps = kernel_height * kernel_width
    offset = offset.reshape(batch_size, num_taps, 2, out_height, out_width)  # (batch, taps, (dy, dx), H', W')
    rows = output_rows[None, None, :, None] + tap_rows[None, :, None, None] + offset[:, :, 0]
    columns = output_columns[None, None, None, :] + tap_columns[None, :, None, None] + offset[:, :, 1]
    return rows, columns


def gather_deform_conv2d(
    hidden_states: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    stride: int,
    padding: int,
) -> torch.Tensor:
    """Modulated deformable 3x3 convolution (`torchvision.ops.deform_conv2d` with one offset group, dilation 1) as
    a weighted row gather and one matrix product: the fast path's implementation
    (`config.deformable_conv_implementation = "gather"`).

    Every sampling point is a bag of its four integer neighbours, weighted by `bilinear weight * mask` (0 for a
    neighbour outside the map: zero padding), and `torch.nn.functional.embedding_bag` sums the neighbours' rows of a
    channels-last copy of the map, `(batch * height * width, channels)`, in one multithreaded kernel; the
    `(points, 9 * channels)` result times the weight is one large GEMM. torchvision's forward also returns 0 outside
    `(-1, height) x (-1, width)`; there every neighbour is outside the map or has weight exactly 0, so no separate
    test is needed, and without one autograd gives torchvision's one-sided offset gradients on the border too. The
    result is torchvision's up to float rounding: the mask multiplies each weight instead of the sum, and the
    product sums the `9 * channels` terms in another order (~1e-6 relative in float32; float64 outputs and
    gradients agree to ~1e-13, `tests/test_modeling_glip.py`). About 0.5x torchvision's CPU kernel on GLIP-T's
    800x1333 maps (see the README's speed section).

    Args:
        hidden_states: `(batch, channels, height, width)`.
        offset: `(batch, 18, out_height, out_width)`, `(dy, dx)` interleaved per tap.
        mask: `(batch, 9, out_height, out_width)`.
        weight: `(out_channels, channels, 3, 3)`; bias: `(out_channels,)`.

    Returns:
        `(batch, out_channels, out_height, out_width)`.
    """
    batch_size, channels, height, width = hidden_states.shape
    out_channels = weight.shape[0]
    out_height, out_width = offset.shape[-2:]
    dtype, device = hidden_states.dtype, hidden_states.device
    rows, columns = deformable_sampling_points(offset, stride, padding)  # (batch, taps, H', W') each
    # (batch, taps, H', W') -> (batch, H', W', taps): points in (b, y', x', tap) order
    rows, columns = rows.permute(0, 2, 3, 1), columns.permute(0, 2, 3, 1)
    row_low, column_low = torch.floor(rows), torch.floor(columns)
    row_fraction, column_fraction = rows - row_low, columns - column_low
    row_low, column_low = row_low.to(torch.int64), column_low.to(torch.int64)
    image_start = (torch.arange(batch_size, device=device) * (height * width)).reshape(batch_size, 1, 1, 1)
    mask = mask.permute(0, 2, 3, 1)  # (batch, taps, H', W') -> (batch, H', W', taps)
    corners = (
        (0, 0, (1 - row_fraction) * (1 - column_fraction)),
        (0, 1, (1 - row_fraction) * column_fraction),
        (1, 0, row_fraction * (1 - column_fraction)),
        (1, 1, row_fraction * column_fraction),
    )  # torchvision's corner order
    indices, weights = [], []
    for row_step, column_step, corner_weight in corners:
        corner_rows, corner_columns = row_low + row_step, column_low + column_step
        valid = (corner_rows >= 0) & (corner_rows <= height - 1) & (corner_columns >= 0)
        valid = valid & (corner_columns <= width - 1)
        indices.append(image_start + corner_rows.clamp(0, height - 1) * width + corner_columns.clamp(0, width - 1))
        weights.append(corner_weight * valid.to(dtype) * mask)
    num_points = batch_size * out_height * out_width * NUM_KERNEL_TAPS
    indices = torch.stack(indices, dim=-1).reshape(num_points, 4)  # (batch, H', W', taps, 4) -> (points, corners)
    weights = torch.stack(weights, dim=-1).reshape(num_points, 4)  # (points, corners)
    # (batch, channels, height, width) -> (batch * height * width, channels): one row of channels per pixel
    pixels = hidden_states.permute(0, 2, 3, 1).reshape(batch_size * height * width, channels)
    sampled = F.embedding_bag(indices, pixels, per_sample_weights=weights, mode="sum")  # (points, channels)
    # (points, channels) -> (batch, H' * W', taps * channels); the weight to (out_channels, taps * channels) to match
    sampled = sampled.reshape(batch_size, out_height * out_width, NUM_KERNEL_TAPS * channels)
    weight = weight.reshape(out_channels, channels, NUM_KERNEL_TAPS).transpose(1, 2)  # (out, taps, channels)
    weight = weight.reshape(out_channels, NUM_KERNEL_TAPS * channels)
    output = torch.matmul(weight, sampled.transpose(1, 2))  # (batch, out_channels, H' * W')
    output = output + bias[None, :, None]
    return output.reshape(batch_size, out_channels, out_height, out_width)


class GLIPModulatedDeformConv(nn.Module):
    """Modulated deformable 3x3 convolution with bias (official `layers/deform_conv.py::ModulatedDeformConv`).

    Runs in float32 whatever the input dtype (the official module is decorated with
    `custom_fwd(cast_inputs=torch.float32)`); the output is float32 under autocast and the input dtype otherwise.
    `config.deformable_conv_implementation` (read at every call, so official mode can switch a built model) picks
    [`gather_deform_conv2d`] (`"gather"`, the fast path) or `torchvision.ops.deform_conv2d` (`"torchvision"`).
    """

    def __init__(self, config: GLIPConfig, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.config = config
        self.in_channels = in_channels
        self.stride = stride
        self.padding = DEFORMABLE_KERNEL_SIZE // 2
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels, DEFORMABLE_KERNEL_SIZE, DEFORMABLE_KERNEL_SIZE)
        )
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) weights, zero bias."""
        bound = 1.0 / math.sqrt(self.in_channels * NUM_KERNEL_TAPS)
        init.uniform_(self.weight, -bound, bound)
        init.zeros_(self.bias)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        def size(length: int) -> int:
            return (length + 2 * self.padding - DEFORMABLE_KERNEL_SIZE) // self.stride + 1

        return size(height), size(width)

    def forward(self, hidden_states: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """
        Args:
            hidden_states: `(batch, in_channels, height, width)`.
            offset: `(batch, 18, out_height, out_width)`, (dy, dx) per kernel tap.
            mask: `(batch, 9, out_height, out_width)`.

        Returns:
            `(batch, out_channels, out_height, out_width)`.
        """
        input_dtype = hidden_states.dtype
        device_type = hidden_states.device.type
        autocast_enabled = torch.is_autocast_enabled(device_type)
        with torch.autocast(device_type=device_type, enabled=False):
            if self.config.deformable_conv_implementation == "gather":
                output = gather_deform_conv2d(
                    hidden_states.float(),
                    offset.float(),
                    mask.float(),
                    self.weight.float(),
                    self.bias.float(),
                    stride=self.stride,
                    padding=self.padding,
                )
            else:
                output = deform_conv2d(
                    hidden_states.float(),
                    offset.float(),
                    self.weight.float(),
                    self.bias.float(),
                    stride=self.stride,
                    padding=self.padding,
                    mask=mask.float(),
                )
        return output if autocast_enabled else output.to(input_dtype)


class GLIPConvNorm(nn.Module):
    """Modulated deformable 3x3 conv + GroupNorm (official `vldyhead.py::Conv3x3Norm` with GN); a plain 3x3 conv
    (with bias) when `config.head_use_deformable_conv` is off (`USE_DFCONV: False`)."""

    def __init__(self, config: GLIPConfig, stride: int):
        super().__init__()
        channels = config.fpn_channels
        self.deformable = config.head_use_deformable_conv
        if self.deformable:
            self.conv = GLIPModulatedDeformConv(config, channels, channels, stride)
        else:
            self.conv = nn.Conv2d(channels, channels, DEFORMABLE_KERNEL_SIZE, stride=stride, padding=1)
        self.norm = nn.GroupNorm(config.head_group_norm_groups, channels, eps=1e-5)

    def forward(
        self, hidden_states: torch.Tensor, offset: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`(batch, channels, height, width)` -> `(batch, channels, height / stride, width / stride)`. Offsets/masks
        of another level are reinterpreted as the official kernel reads them (deformable only)."""
        if not self.deformable:
            return self.norm(self.conv(hidden_states))
        output_height, output_width = self.conv.output_size(*hidden_states.shape[-2:])
        offset, mask = reinterpret_offsets_for_output(offset, mask, output_height, output_width)
        return self.norm(self.conv(hidden_states, offset, mask))


class GLIPDynamicReLU(nn.Module):
    """Dynamic ReLU "B" (official `layers/dyrelu.py::DYReLU`, K2, with bias, reduction 4, no spatial branch).

    `y = hard_sigmoid(fc2(relu(fc1(avgpool(x)))))` is split per channel into `(a1, b1, a2, b2)`;
    `out = max(x * a1' + b1', x * a2' + b2')` with `a1' = 2(a1 - 0.5) + 1`, `a2' = 2(a2 - 0.5)`, `b' = b - 0.5`.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.fc1 = nn.Linear(channels, channels // DYNAMIC_RELU_REDUCTION)
        self.fc2 = nn.Linear(channels // DYNAMIC_RELU_REDUCTION, 4 * channels)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(batch, channels, height, width)` -> same shape."""
        batch_size = hidden_states.shape[0]
        pooled = F.adaptive_avg_pool2d(hidden_states, 1).view(batch_size, self.channels)  # (batch, channels)
        coefficients = hard_sigmoid(self.fc2(F.relu(self.fc1(pooled))))  # (batch, 4 * channels)
        coefficients = coefficients.view(batch_size, 4 * self.channels, 1, 1)  # (batch, 4 * channels, 1, 1)
        slope1, intercept1, slope2, intercept2 = torch.split(coefficients, self.channels, dim=1)
        slope1 = (slope1 - 0.5) * DYNAMIC_RELU_LAMBDA + DYNAMIC_RELU_INIT_SLOPES[0]
        slope2 = (slope2 - 0.5) * DYNAMIC_RELU_LAMBDA + DYNAMIC_RELU_INIT_SLOPES[1]
        intercept1 = intercept1 - 0.5 + DYNAMIC_RELU_INIT_INTERCEPTS[0]
        intercept2 = intercept2 - 0.5 + DYNAMIC_RELU_INIT_INTERCEPTS[1]
        return torch.max(hidden_states * slope1 + intercept1, hidden_states * slope2 + intercept2)


class GLIPDyConv(nn.Module):
    """Scale-aware deformable convolution over neighbouring pyramid levels (official `vldyhead.py::DyConv`).

    For level l with offsets/masks predicted from level l:
    `a1 = convs[1](F_l)`, `a2 = convs[2](F_{l-1})` (stride 2, l > 0),
    `a3 = upsample(convs[0](F_{l+1}))` (bilinear, align_corners=True, l < last; offsets reused as a flat prefix),
    then `G_l = mean_k(hard_sigmoid(relu(scale_attention(avgpool(a_k)))) * a_k)` in the order a1, a2, a3, and
    DyReLU. Parameter names: `convs.{0,1,2}` = official `DyConv.{0,1,2}`.
    """

    def __init__(self, config: GLIPConfig):
        super().__init__()
        channels = config.fpn_channels
        # Index order of the official ModuleList: coarser level (stride 1), same level (stride 1), finer (stride 2).
        self.convs = nn.ModuleList(
            [
                GLIPConvNorm(config, stride=1),
                GLIPConvNorm(config, stride=1),
                GLIPConvNorm(config, stride=2),
            ]
        )
        self.scale_attention = nn.Conv2d(channels, 1, kernel_size=1)
        self.dynamic_relu = GLIPDynamicReLU(channels)
        self.offset_conv = (
            nn.Conv2d(channels, NUM_OFFSET_CHANNELS + NUM_KERNEL_TAPS, kernel_size=DEFORMABLE_KERNEL_SIZE, padding=1)
            if config.head_use_deformable_conv
            else None
        )

    def _scale_attention_weight(self, candidate: torch.Tensor) -> torch.Tensor:
        """`(batch, channels, height, width)` -> `(batch, 1, 1, 1)` relu(conv1x1(avgpool(x)))."""
        return F.relu(self.scale_attention(F.adaptive_avg_pool2d(candidate, 1)))

    def forward(self, visual_features: list[torch.Tensor]) -> list[torch.Tensor]:
        """
        Args:
            visual_features: per level `(batch, channels, height_l, width_l)`, P3 first.

        Returns:
            Per level `(batch, channels, height_l, width_l)`.
        """
        num_levels = len(visual_features)
        outputs = []
        for level, feature in enumerate(visual_features):
            offset = mask = None
            if self.offset_conv is not None:
                offset_and_mask = self.offset_conv(feature)  # (batch, 27, height_l, width_l)
                offset = offset_and_mask[:, :NUM_OFFSET_CHANNELS]
                mask = offset_and_mask[:, NUM_OFFSET_CHANNELS:].sigmoid()

            candidates = [self.convs[1](feature, offset, mask)]
            if level > 0:
                candidates.append(self.convs[2](visual_features[level - 1], offset, mask))
            if level < num_levels - 1:
                coarser = self.convs[0](visual_features[level + 1], offset, mask)
                candidates.append(F.interpolate(coarser, size=feature.shape[-2:], mode="bilinear", align_corners=True))

            stacked_candidates = torch.stack(candidates)  # (num_candidates, batch, channels, height_l, width_l)
            attention = hard_sigmoid(torch.stack([self._scale_attention_weight(c) for c in candidates]))
            outputs.append(torch.mean(stacked_candidates * attention, dim=0))
        return [self.dynamic_relu(output) for output in outputs]


class GLIPHeadBlock(GradientCheckpointingLayer):
    """One block of the dynamic head: [fusion -> text layer ->] DyConv (official tower modules 3i, 3i+1, 3i+2).

    `fusion` and `text_layer` are `None` without early fusion (GLIP-T (A)); `text_layer` is also `None` in the last
    block when the dot product does not use the fused text (the official `DummyLayer`).

    Every tensor goes in and out as a flat positional tuple so that activation checkpointing propagates gradients
    with both the non-reentrant and the reentrant `torch.utils.checkpoint`.
    """

    def __init__(self, config: GLIPConfig, block_index: int):
        super().__init__()
        is_last_block = block_index == config.num_head_blocks - 1
        has_text_layer = config.early_fusion and (not is_last_block or config.use_fused_text_for_dot_product)
        self.fusion = GLIPBiAttentionBlock(config) if config.early_fusion else None
        self.text_layer = GLIPHeadTextLayer(config) if has_text_layer else None
        self.dyconv = GLIPDyConv(config)

    def forward(
        self,
        text_hidden_states: torch.Tensor,
        text_attention_mask: torch.Tensor,
        *visual_features: torch.Tensor,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        """
        Args:
            text_hidden_states: `(batch, sequence_length, text_hidden_size)`.
            text_attention_mask: `(batch, sequence_length)`.
            visual_features: the pyramid levels, each `(batch, channels, height_l, width_l)`, P3 first.
            output_hidden_states: with fusion, also return the fusion outputs.
            output_attentions: also return the attention probabilities of the fusion and of the text layer.

        Returns:
            `(text_hidden_states, *dyconv_features)`, followed by `(fused_text_hidden_states, *fused_visual_features)`
            when `output_hidden_states` is set and the block has a fusion, then (with `output_attentions`) the
            fusion's `(vision_to_text, text_to_vision)` probabilities when it has a fusion and the text layer's
            probabilities when it has a text layer (see [`GLIPBiMultiHeadAttention`], [`GLIPHeadTextLayer`]).
        """
        fusion_outputs, attention_outputs = (), ()
        if self.fusion is not None:
            fused_visual_features, text_hidden_states, fusion_attentions = self.fusion(
                list(visual_features), text_hidden_states, text_attention_mask, output_attentions
            )
            visual_features = tuple(fused_visual_features)
            if output_hidden_states:
                fusion_outputs = (text_hidden_states, *visual_features)
            if output_attentions:
                attention_outputs = fusion_attentions
        if self.text_layer is not None:
            text_hidden_states, text_attentions = self.text_layer(
                text_hidden_states, text_attention_mask, output_attentions
            )
            if output_attentions:
                attention_outputs = (*attention_outputs, text_attentions)
        dyconv_features = self.dyconv(list(visual_features))
        return (text_hidden_states, *dyconv_features, *fusion_outputs, *attention_outputs)


@dataclass
class GLIPDynamicHeadOutput(ModelOutput):
    """Outputs of [`GLIPDynamicHead`]; anchors are ordered P3..P7, row-major `(y, x)` within a level.

    Args:
        logits (`torch.FloatTensor` of shape `(batch, num_anchors, sequence_length)`):
            Token logits clamped to +-50000 (all token positions, padding included).
        box_regression (`torch.FloatTensor` of shape `(batch, num_anchors, 4)`):
            `(dx, dy, dw, dh)` deltas for the box coder, already multiplied by the per-level scale.
        centerness (`torch.FloatTensor` of shape `(batch, num_anchors)`):
            Centerness logits.
        feature_map_sizes (`torch.LongTensor` of shape `(num_levels, 2)`):
            `(height, width)` of every pyramid level.
        projected_text_features (`torch.FloatTensor` of shape `(batch, sequence_length, fpn_channels)`):
            Text side of the dot product, `token_projection(normalize(text) / 2)`.
        fusion_vision_hidden_states, fusion_text_hidden_states, head_text_hidden_states, dyconv_hidden_states:
            Per block (when requested): fusion visual outputs (tuple of levels), fusion text output, head text-layer
            output, DyConv outputs (tuple of levels). `None` entries where a block has no such module.
        fusion_attentions, head_text_attentions:
            Per block (with `output_attentions`): the fusion's `(vision_to_text, text_to_vision)` probabilities,
            `(batch, fusion_num_heads, num_positions, sequence_length)` and `(batch, fusion_num_heads,
            sequence_length, num_positions)`; the text layer's `(batch, num_heads, sequence_length, sequence_length)`.
            `None` entries where a block has no such module.
    """

    logits: torch.FloatTensor | None = None
    box_regression: torch.FloatTensor | None = None
    centerness: torch.FloatTensor | None = None
    feature_map_sizes: torch.LongTensor | None = None
    projected_text_features: torch.FloatTensor | None = None
    fusion_vision_hidden_states: tuple | None = None
    fusion_text_hidden_states: tuple | None = None
    head_text_hidden_states: tuple | None = None
    dyconv_hidden_states: tuple | None = None
    fusion_attentions: tuple | None = None
    head_text_attentions: tuple | None = None


class GLIPDynamicHead(nn.Module):
    """The vision-language dynamic head (official `vldyhead.py::VLDyHead`, dot-product token head).

    After the blocks, per level: `box_regression = scales[l] * bbox_pred(x)`, `centerness = centerness(x)` and token
    logits `x . token_projection(E_hat / 2)^T / exp(log_scale) + (E_hat . bias_lang + bias0)`, clamped to +-50000,
    with `E_hat = normalize(E)`. `E` is the head-updated text (`use_fused_text_for_dot_product`) or BERT's masked last
    layer (GLIP-T (A)).
    """

    def __init__(self, config: GLIPConfig):
        super().__init__()
        channels = config.fpn_channels
        self.use_fused_text_for_dot_product = config.use_fused_text_for_dot_product
        self.blocks = nn.ModuleList([GLIPHeadBlock(config, index) for index in range(config.num_head_blocks)])
        self.bbox_pred = nn.Conv2d(channels, 4, kernel_size=1)
        self.centerness = nn.Conv2d(channels, 1, kernel_size=1)
        self.scales = nn.ModuleList([GLIPScale(1.0) for _ in range(config.num_feature_levels)])
        self.token_projection = nn.Linear(config.text_hidden_size, channels)
        # Scalars in the default dtype, so that `from_pretrained(dtype=...)` builds them in the requested dtype.
        self.log_scale = nn.Parameter(torch.tensor([config.log_scale_init]))
        self.bias_lang = nn.Parameter(torch.zeros(config.text_hidden_size))
        prior_bias = -math.log((1 - config.prior_prob) / config.prior_prob)
        self.bias0 = nn.Parameter(torch.tensor([prior_bias]))

    def forward(
        self,
        visual_features: list[torch.Tensor] | tuple[torch.Tensor, ...],
        text_hidden_states: torch.Tensor,
        text_embedded: torch.Tensor,
        text_attention_mask: torch.Tensor,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> GLIPDynamicHeadOutput:
        """
        Args:
            visual_features: FPN levels P3..P7, each `(batch, fpn_channels, height_l, width_l)`.
            text_hidden_states: `(batch, sequence_length, text_hidden_size)` BERT last layer (unmasked): the text
                input of the first fusion.
            text_embedded: the same times the attention mask (used for the dot product without fused text).
            text_attention_mask: `(batch, sequence_length)`, 1 for real tokens.
            output_hidden_states: also return every block's intermediate tensors.
            output_attentions: also return every block's attention probabilities.
        """
        num_levels = len(visual_features)
        fusion_vision_states, fusion_text_states, head_text_states, dyconv_states = [], [], [], []
        fusion_attentions, head_text_attentions = [], []
        for block in self.blocks:
            block_outputs = block(
                text_hidden_states,
                text_attention_mask,
                *visual_features,
                output_hidden_states=output_hidden_states,
                output_attentions=output_attentions,
            )
            text_hidden_states = block_outputs[0]
            visual_features = block_outputs[1 : 1 + num_levels]
            extra_outputs = block_outputs[1 + num_levels :]  # see `GLIPHeadBlock.forward` for the layout
            has_fusion_outputs = output_hidden_states and block.fusion is not None
            fusion_text_states.append(extra_outputs[0] if has_fusion_outputs else None)
            fusion_vision_states.append(extra_outputs[1 : 1 + num_levels] if has_fusion_outputs else None)
            head_text_states.append(text_hidden_states if block.text_layer is not None else None)
            dyconv_states.append(visual_features)
            if output_attentions:
                attention_outputs = extra_outputs[1 + num_levels :] if has_fusion_outputs else extra_outputs
                fusion_attentions.append(tuple(attention_outputs[:2]) if block.fusion is not None else None)
                head_text_attentions.append(attention_outputs[-1] if block.text_layer is not None else None)

        text_embeddings = text_hidden_states if self.use_fused_text_for_dot_product else text_embedded
        normalized_text = F.normalize(text_embeddings, p=2, dim=-1)
        projected_text = self.token_projection(normalized_text / 2.0)  # (batch, seq_len, channels)
        token_bias = torch.matmul(normalized_text, self.bias_lang) + self.bias0  # (batch, seq_len)

        batch_size = visual_features[0].shape[0]
        box_regression, centerness, queries = [], [], []
        for level, feature in enumerate(visual_features):
            level_regression = self.scales[level](self.bbox_pred(feature))  # (batch, 4, height_l, width_l)
            level_regression = level_regression.permute(0, 2, 3, 1)  # (batch, height_l, width_l, 4)
            box_regression.append(level_regression.reshape(batch_size, -1, 4))  # (batch, height_l * width_l, 4)
            centerness.append(self.centerness(feature).reshape(batch_size, -1))  # (batch, height_l * width_l)
            queries.append(feature.flatten(2).transpose(1, 2))  # (batch, height_l * width_l, channels)
        queries = torch.cat(queries, dim=1)  # (batch, num_anchors, channels)

        logits = torch.matmul(queries, projected_text.transpose(-1, -2)) / self.log_scale.exp()
        logits = logits + token_bias[:, None, :]  # (batch, num_anchors, seq_len)
        logits = torch.clamp(logits, min=-ATTENTION_CLAMP_VALUE, max=ATTENTION_CLAMP_VALUE)

        feature_map_sizes = torch.tensor(
            [list(feature.shape[-2:]) for feature in visual_features], dtype=torch.long, device=logits.device
        )
        return GLIPDynamicHeadOutput(
            logits=logits,
            box_regression=torch.cat(box_regression, dim=1),
            centerness=torch.cat(centerness, dim=1),
            feature_map_sizes=feature_map_sizes,
            projected_text_features=projected_text,
            fusion_vision_hidden_states=tuple(fusion_vision_states) if output_hidden_states else None,
            fusion_text_hidden_states=tuple(fusion_text_states) if output_hidden_states else None,
            head_text_hidden_states=tuple(head_text_states) if output_hidden_states else None,
            dyconv_hidden_states=tuple(dyconv_states) if output_hidden_states else None,
            fusion_attentions=tuple(fusion_attentions) if output_attentions else None,
            head_text_attentions=tuple(head_text_attentions) if output_attentions else None,
        )


class GLIPPreTrainedModel(PreTrainedModel):
    """Weight initialisation and Hugging Face plumbing shared by [`GLIPModel`] and [`GLIPForGrounding`].

    (This module has no `from __future__ import annotations`: `PreTrainedModel` reads the `config` annotation below
    as a class to find `config_class`.)
    """

    config: GLIPConfig
    base_model_prefix = "model"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["GLIPSwinBlock", "GLIPHeadBlock", "BertLayer"]
    # The Swin window attention and the BERT text model go through transformers' attention interface (eager or SDPA,
    # SDPA by default); the fusion and the head text layers are always eager (official clamps, see
    # `modeling_glip_fusion.py`).
    _supports_sdpa = True
    # Names of submodules kept in eval mode by `train()` (frozen modules of a fine-tuning mode, official
    # `GeneralizedVLRCNN.train`); set by `finetuning_glip.apply_tuning_mode`, empty by default.
    frozen_module_names: tuple[str, ...] = ()

    def train(self, mode: bool = True):
        """`nn.Module.train`, then the submodules named in `frozen_module_names` go back to eval mode (their
        dropout, DropBlock and drop-path stay off while the rest trains)."""
        super().train(mode)
        for name in self.frozen_module_names:
            self.get_submodule(name).eval()
        return self

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, then the `auto_map` entries and `glip_shim.py` that let the folder load
        with `trust_remote_code=True` without `import transformers_glip` ([`add_remote_code_files`]). With
        `push_to_hub=True` the folder is uploaded after those files are written, so the Hub copy has them too."""
        hub_arguments = pop_hub_arguments(save_directory, kwargs)
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            add_remote_code_files(save_directory)
            if hub_arguments is not None:
                push_folder_to_hub(save_directory, **hub_arguments)
        return result

    def _initialize_weights(self, module: nn.Module, is_custom_code: bool = False) -> None:
        # For code outside the transformers package, `PreTrainedModel` skips every module whose direct parameters are
        # all flagged as loaded -- which includes containers without direct parameters (`all([])` is True), so the
        # container rules of `_init_weights` would never run. Our `_init_weights` only uses the guarded
        # `transformers.initialization` functions (or `reset_parameters`, guarded during `initialize_weights`), which
        # already leave loaded tensors alone, so the shortcut is not needed.
        super()._initialize_weights(module, is_custom_code=False)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Official initialisations (`swint.py`, `fpn.py`, `fuse_helper.py`, `vldyhead.py`); torch defaults where the
        official code keeps them. Children are visited before their parents, so container rules override leaf rules.
        The BERT text model is initialised by its own `_init_weights`."""
        config = self.config
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            module.reset_parameters()
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, GLIPModulatedDeformConv):
            module.reset_parameters()
        elif isinstance(module, GLIPScale):
            init.ones_(module.scale)
        elif isinstance(module, GLIPSwinAttention):
            init.trunc_normal_(module.relative_position_bias_table, std=SWIN_INIT_STD)
            init.copy_(module.relative_position_index, module._relative_position_index(module.window_size))
        elif isinstance(module, GLIPSwinBackbone):
            for submodule in module.modules():
                if isinstance(submodule, nn.Linear):
                    init.trunc_normal_(submodule.weight, std=SWIN_INIT_STD)
                    if submodule.bias is not None:
                        init.zeros_(submodule.bias)
        elif isinstance(module, GLIPFeaturePyramid):
            for submodule in module.modules():
                if isinstance(submodule, nn.Conv2d):
                    init.kaiming_uniform_(submodule.weight, a=1)
                    init.zeros_(submodule.bias)
        elif isinstance(module, GLIPBiMultiHeadAttention):
            for projection in (
                module.vision_proj,
                module.text_proj,
                module.values_vision_proj,
                module.values_text_proj,
                module.out_vision_proj,
                module.out_text_proj,
            ):
                init.xavier_uniform_(projection.weight)
                init.zeros_(projection.bias)
        elif isinstance(module, GLIPBiAttentionBlock):
            init.constant_(module.vision_gamma, config.layer_scale_init)
            init.constant_(module.text_gamma, config.layer_scale_init)
        elif isinstance(module, GLIPDyConv):
            init.normal_(module.scale_attention.weight, std=HEAD_CONV_INIT_STD)
            init.zeros_(module.scale_attention.bias)
            for conv_norm in module.convs:
                if isinstance(conv_norm.conv, nn.Conv2d):  # plain convs (`USE_DFCONV: False`): DyConv.init_weights
                    init.normal_(conv_norm.conv.weight, std=HEAD_CONV_INIT_STD)
                    init.zeros_(conv_norm.conv.bias)
        elif isinstance(module, GLIPDynamicHead):
            for predictor in (module.bbox_pred, module.centerness):
                init.normal_(predictor.weight, std=HEAD_CONV_INIT_STD)
                init.zeros_(predictor.bias)
            init.constant_(module.log_scale, config.log_scale_init)
            init.zeros_(module.bias_lang)
            init.constant_(module.bias0, -math.log((1 - config.prior_prob) / config.prior_prob))
        elif isinstance(module, GLIPModel) and module.prompt_offsets is not None:
            init.zeros_(module.prompt_offsets)  # official `tunable_linear.weight.data.fill_(0.0)`


@dataclass
class GLIPModelOutput(ModelOutput):
    """Outputs of [`GLIPModel`]. Anchors are ordered P3..P7, row-major `(y, x)` within a level.

    Args:
        logits (`torch.FloatTensor` of shape `(batch, num_anchors, sequence_length)`):
            Token logits of every anchor, clamped to +-50000 (all token positions, padding included).
        box_regression (`torch.FloatTensor` of shape `(batch, num_anchors, 4)`):
            Raw `(dx, dy, dw, dh)` deltas (after the per-level scale) for box-coder weights `(10, 10, 5, 5)`.
        centerness (`torch.FloatTensor` of shape `(batch, num_anchors)`):
            Centerness logits.
        feature_map_sizes (`torch.LongTensor` of shape `(num_levels, 2)`):
            `(height, width)` of P3..P7.
        text_attention_mask (`torch.LongTensor` of shape `(batch, sequence_length)`):
            The text attention mask that was used.
        text_last_hidden_state (`torch.FloatTensor` of shape `(batch, sequence_length, text_hidden_size)`):
            BERT's last layer (unmasked), the text input of the head.
        projected_text_features (`torch.FloatTensor` of shape `(batch, sequence_length, fpn_channels)`):
            Text side of the dot product.
        backbone_hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            Swin outputs C3, C4, C5, `(batch, channels_s, height_s, width_s)` (with `output_hidden_states=True`).
        feature_pyramid_hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            FPN outputs P3..P7, `(batch, fpn_channels, height_l, width_l)`.
        text_hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            BERT embedding output and every layer output, `(batch, sequence_length, text_hidden_size)`.
        fusion_vision_hidden_states (`tuple`, *optional*):
            Per head block, the fusion's visual outputs (a tuple of levels), `None` without fusion.
        fusion_text_hidden_states (`tuple`, *optional*):
            Per head block, the fusion's text output `(batch, sequence_length, text_hidden_size)` or `None`.
        head_text_hidden_states (`tuple`, *optional*):
            Per head block, the head text layer's output or `None`.
        dyconv_hidden_states (`tuple`, *optional*):
            Per head block, the DyConv outputs (a tuple of levels).
        backbone_attentions (`tuple(torch.FloatTensor)`, *optional*):
            Per Swin block (all stages), `(batch * num_windows, num_heads, window * window, window * window)`
            (with `output_attentions=True`).
        text_attentions (`tuple(torch.FloatTensor)`, *optional*):
            Per BERT layer, `(batch, num_heads, sequence_length, sequence_length)`.
        fusion_attentions (`tuple`, *optional*):
            Per head block, the fusion's `(vision_to_text, text_to_vision)` probabilities, `(batch, fusion_num_heads,
            num_positions, sequence_length)` and `(batch, fusion_num_heads, sequence_length, num_positions)` over
            the visual positions of all levels; `None` without fusion.
        head_text_attentions (`tuple`, *optional*):
            Per head block, the head text layer's `(batch, num_heads, sequence_length, sequence_length)` or `None`.
    """

    logits: torch.FloatTensor | None = None
    box_regression: torch.FloatTensor | None = None
    centerness: torch.FloatTensor | None = None
    feature_map_sizes: torch.LongTensor | None = None
    text_attention_mask: torch.LongTensor | None = None
    text_last_hidden_state: torch.FloatTensor | None = None
    projected_text_features: torch.FloatTensor | None = None
    backbone_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    feature_pyramid_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    text_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    fusion_vision_hidden_states: tuple | None = None
    fusion_text_hidden_states: tuple | None = None
    head_text_hidden_states: tuple | None = None
    dyconv_hidden_states: tuple | None = None
    backbone_attentions: tuple[torch.FloatTensor, ...] | None = None
    text_attentions: tuple[torch.FloatTensor, ...] | None = None
    fusion_attentions: tuple | None = None
    head_text_attentions: tuple | None = None


class GLIPModel(GLIPPreTrainedModel):
    """GLIP without box decoding: Swin + FPN, BERT, and the vision-language dynamic head.

    The Swin window attention and the BERT text model follow `config._attn_implementation` (SDPA by default, or
    `attn_implementation="eager"`); both give the official outputs to float rounding.
    """

    def __init__(self, config: GLIPConfig):
        super().__init__(config)
        self.backbone = GLIPSwinBackbone(config)
        self.feature_pyramid = GLIPFeaturePyramid(config)
        self.text_model = BertModel(config.text_config, add_pooling_layer=False)
        self.head = GLIPDynamicHead(config)
        # Prompt tuning (official `rpn.tunable_linear.weight`, `FUSE_CONFIG.ADD_LINEAR_LAYER`): learned offsets
        # (prompt_tuning_length, text_hidden_size), zero-initialised, added to the text features at each position.
        if config.prompt_tuning_length > 0:
            self.prompt_offsets = nn.Parameter(torch.zeros(config.prompt_tuning_length, config.text_hidden_size))
        else:
            self.register_parameter("prompt_offsets", None)  # `finetuning_glip.apply_tuning_mode` may add it
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        """The BERT word embeddings."""
        return self.text_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.text_model.set_input_embeddings(value)

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.FloatTensor,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        image_sizes: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> GLIPModelOutput | tuple:
        """
        Args:
            pixel_values: `(batch, 3, height, width)` BGR images normalised with the Detectron mean/std and zero-padded
                to a multiple of 32 (see `GLIPImageProcessor`); or `(1, 3, height, width)` for several prompts of
                ONE image (see below).
            input_ids: `(batch, sequence_length)` BERT token ids of the prompts (any length the text model accepts).
            attention_mask: `(batch, sequence_length)`, 1 for real tokens, 0 for padding; all ones if omitted.
            token_type_ids: `(batch, sequence_length)`; zeros if omitted (the official model never passes them).
            image_sizes: unused by the network (it sees the padded images); accepted for API symmetry.
            output_hidden_states: also return the intermediate tensors of every stage (default:
                `config.output_hidden_states`).
            output_attentions: also return the attention probabilities of every attention (default:
                `config.output_attentions`). As everywhere in transformers, BERT returns them only with eager
                attention (`attn_implementation="eager"`; setting `config.output_attentions=True` selects it); the
                Swin window attention computes them eagerly for that call, the fusion and head text layers always.
            return_dict: return a [`GLIPModelOutput`] (default: `config.return_dict`) or a tuple of its non-`None`
                fields.

        Several prompts for one image (large vocabularies split into label chunks): with `pixel_values` of batch 1
        and `input_ids` of batch `K > 1`, the Swin backbone and the FPN run ONCE and their feature maps are broadcast
        (`expand`, no copy) to the `K` prompts before the head, which runs as a batch of `K`. The outputs equal those
        of `K` separate forwards of the same image up to float rounding (the vision path does not see the text before
        the head); every output, `backbone_hidden_states` and `feature_pyramid_hidden_states` included, has batch `K`.
        """
        num_images, num_prompts = pixel_values.shape[0], input_ids.shape[0]
        if num_images != num_prompts and num_images != 1:
            raise ValueError(
                f"`pixel_values` holds {num_images} images but `input_ids` holds {num_prompts} prompts; pass one "
                "prompt per image, or ONE image with any number of prompts."
            )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if output_attentions is None:
            output_attentions = self.config.output_attentions

        backbone_outputs = self.backbone(pixel_values, output_attentions=output_attentions)
        backbone_features = backbone_outputs.feature_maps  # (C3, C4, C5)
        pyramid_features = self.feature_pyramid(backbone_features)  # (P3, ..., P7)
        if num_images != num_prompts:
            # One image, several prompts: the vision features are shared, not recomputed.
            # (1, channels, height_l, width_l) -> (num_prompts, channels, height_l, width_l) views
            backbone_features = [feature.expand(num_prompts, -1, -1, -1) for feature in backbone_features]
            pyramid_features = [feature.expand(num_prompts, -1, -1, -1) for feature in pyramid_features]

        text_outputs = self.text_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        text_hidden_states = text_outputs.last_hidden_state  # (batch, seq_len, text_hidden_size)
        text_embedded = text_hidden_states * attention_mask.unsqueeze(-1).to(text_hidden_states.dtype)
        if self.prompt_offsets is not None:
            # Official `VLDyHeadModule.forward`: the first T rows are added to both the masked (`embedded`) and the
            # unmasked (`hidden`) features, padding positions included; BERT's own output is left unchanged.
            sequence_length = input_ids.shape[1]
            if sequence_length > self.prompt_offsets.shape[0]:
                raise ValueError(
                    f"`input_ids` has {sequence_length} tokens but the prompt offsets cover "
                    f"{self.prompt_offsets.shape[0]} (config.prompt_tuning_length); shorten the prompt."
                )
            # (T, text_hidden_size) -> (1, T, text_hidden_size), broadcast over the batch
            offsets = self.prompt_offsets[:sequence_length].unsqueeze(0).to(text_hidden_states.dtype)
            text_embedded = text_embedded + offsets
            head_text_input = text_hidden_states + offsets
        else:
            head_text_input = text_hidden_states

        head_outputs = self.head(
            pyramid_features,
            head_text_input,
            text_embedded,
            attention_mask,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        backbone_attentions = backbone_outputs.attentions
        if output_attentions and num_images != num_prompts:
            # (1 * num_windows, heads, N, N) -> (num_prompts * num_windows, heads, N, N) views, like the features
            backbone_attentions = tuple(
                attention.unsqueeze(0).expand(num_prompts, *attention.shape).flatten(0, 1)
                for attention in backbone_attentions
            )
        return GLIPModelOutput(
            logits=head_outputs.logits,
            box_regression=head_outputs.box_regression,
            centerness=head_outputs.centerness,
            feature_map_sizes=head_outputs.feature_map_sizes,
            text_attention_mask=attention_mask,
            text_last_hidden_state=text_hidden_states,
            projected_text_features=head_outputs.projected_text_features,
            backbone_hidden_states=tuple(backbone_features) if output_hidden_states else None,
            feature_pyramid_hidden_states=tuple(pyramid_features) if output_hidden_states else None,
            text_hidden_states=text_outputs.hidden_states if output_hidden_states else None,
            fusion_vision_hidden_states=head_outputs.fusion_vision_hidden_states,
            fusion_text_hidden_states=head_outputs.fusion_text_hidden_states,
            head_text_hidden_states=head_outputs.head_text_hidden_states,
            dyconv_hidden_states=head_outputs.dyconv_hidden_states,
            backbone_attentions=backbone_attentions,
            text_attentions=text_outputs.attentions if output_attentions else None,
            fusion_attentions=head_outputs.fusion_attentions,
            head_text_attentions=head_outputs.head_text_attentions,
        )


@dataclass
class GLIPGroundingOutput(ModelOutput):
    """Outputs of [`GLIPForGrounding`] (same type in training and evaluation).

    Anchors are ordered P3..P7, row-major `(y, x)` within a level; boxes are xyxy in pixels of the PADDED network
    input with the legacy "+1" convention (width = x2 - x1 + 1).

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            Total training loss (sum of `loss_dict`), when `labels` are given.
        loss_dict (`dict[str, torch.FloatTensor]`, *optional*):
            `loss_reg`, `loss_centerness`, `loss_dot_product_token`.
        logits (`torch.FloatTensor` of shape `(batch, num_anchors, sequence_length)`):
            Token logits, clamped to +-50000 (padding positions included; mask them with `text_attention_mask`).
        pred_boxes (`torch.FloatTensor` of shape `(batch, num_anchors, 4)`):
            Decoded boxes, xyxy, pixels of the padded input (not clipped).
        box_regression (`torch.FloatTensor` of shape `(batch, num_anchors, 4)`):
            Raw deltas (after the per-level scale) for box-coder weights `(10, 10, 5, 5)`.
        centerness (`torch.FloatTensor` of shape `(batch, num_anchors)`):
            Centerness logits.
        anchors (`torch.FloatTensor` of shape `(num_anchors, 4)`):
            xyxy anchors (identical for every image of the batch).
        num_anchors_per_level (`list[int]`):
            Anchors of P3..P7, to split the anchor axis per level.
        text_attention_mask (`torch.LongTensor` of shape `(batch, sequence_length)`):
            The attention mask that was used.
        input_ids (`torch.LongTensor` of shape `(batch, sequence_length)`):
            The prompt token ids (for post-processing).
        image_sizes (`torch.LongTensor` of shape `(batch, 2)`, *optional*):
            Unpadded `(height, width)` of each image in network-input pixels, if given.
        text_last_hidden_state, projected_text_features, backbone_hidden_states, feature_pyramid_hidden_states,
        text_hidden_states, fusion_vision_hidden_states, fusion_text_hidden_states, head_text_hidden_states,
        dyconv_hidden_states:
            As in [`GLIPModelOutput`] (the tuples only with `output_hidden_states=True`).
        backbone_attentions, text_attentions, fusion_attentions, head_text_attentions:
            As in [`GLIPModelOutput`] (only with `output_attentions=True`).
    """

    loss: torch.FloatTensor | None = None
    loss_dict: dict[str, torch.FloatTensor] | None = None
    logits: torch.FloatTensor | None = None
    pred_boxes: torch.FloatTensor | None = None
    box_regression: torch.FloatTensor | None = None
    centerness: torch.FloatTensor | None = None
    anchors: torch.FloatTensor | None = None
    num_anchors_per_level: list[int] | None = None
    text_attention_mask: torch.LongTensor | None = None
    input_ids: torch.LongTensor | None = None
    image_sizes: torch.LongTensor | None = None
    text_last_hidden_state: torch.FloatTensor | None = None
    projected_text_features: torch.FloatTensor | None = None
    backbone_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    feature_pyramid_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    text_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    fusion_vision_hidden_states: tuple | None = None
    fusion_text_hidden_states: tuple | None = None
    head_text_hidden_states: tuple | None = None
    dyconv_hidden_states: tuple | None = None
    backbone_attentions: tuple[torch.FloatTensor, ...] | None = None
    text_attentions: tuple[torch.FloatTensor, ...] | None = None
    fusion_attentions: tuple | None = None
    head_text_attentions: tuple | None = None


class GLIPForGrounding(GLIPPreTrainedModel):
    """GLIP for phrase grounding / open-vocabulary detection: [`GLIPModel`] + anchors, box decoding and the loss.

    Post-processing (token -> phrase scores, NMS, rescaling) lives in the processor.
    """

    def __init__(self, config: GLIPConfig):
        super().__init__(config)
        self.model = GLIPModel(config)
        self.box_coder = GLIPBoxCoder(config.box_coder_weights)
        self.criterion = GLIPLoss(config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.FloatTensor,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        image_sizes: torch.LongTensor | None = None,
        labels: list[dict[str, torch.Tensor]] | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        positive_map: torch.Tensor | None = None,
        original_sizes: torch.LongTensor | None = None,
        text_labels: list[list[str]] | None = None,
        chunk_label_indices: list[list[int]] | None = None,
    ) -> GLIPGroundingOutput | tuple:
        """
        Args:
            pixel_values, input_ids, attention_mask, token_type_ids, image_sizes, output_hidden_states,
            output_attentions, return_dict:
                See [`GLIPModel.forward`] (including ONE image with several prompts: the vision features are computed
                once and shared by the prompts; `image_sizes` of that single image is then repeated per prompt).
            labels: one dict per image with `boxes` `(num_boxes, 4)` xyxy in network-input pixels and
                `positive_map` `(num_boxes, sequence_length)` binary token map; the loss is computed when given.
            positive_map, original_sizes, text_labels, chunk_label_indices:
                Accepted and ignored, so that `model(**processor(...))` and pipelines can pass the whole processor
                output; they are post-processing inputs (see `GLIPProcessor.post_process_grounded_object_detection`).
        """
        outputs = self.model(
            pixel_values,
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        level_sizes = [tuple(size) for size in outputs.feature_map_sizes.tolist()]
        num_anchors_per_level = [height * width for height, width in level_sizes]
        anchors = generate_anchors(
            level_sizes,
            self.config.anchor_strides,
            self.config.anchor_sizes,
            device=outputs.box_regression.device,
            dtype=torch.float32,
        )
        pred_boxes = self.box_coder.decode(outputs.box_regression, anchors)  # (batch, num_anchors, 4)
        num_prompts = outputs.logits.shape[0]
        if image_sizes is not None and image_sizes.shape[0] == 1 and num_prompts > 1:
            image_sizes = image_sizes.expand(num_prompts, -1)  # (1, 2) -> (num_prompts, 2): one image, K prompts

        loss = loss_dict = None
        if labels is not None:
            loss, loss_dict = self.criterion(
                outputs.logits,
                outputs.box_regression,
                outputs.centerness,
                anchors,
                num_anchors_per_level,
                outputs.text_attention_mask,
                labels,
            )

        return GLIPGroundingOutput(
            loss=loss,
            loss_dict=loss_dict,
            logits=outputs.logits,
            pred_boxes=pred_boxes,
            box_regression=outputs.box_regression,
            centerness=outputs.centerness,
            anchors=anchors,
            num_anchors_per_level=num_anchors_per_level,
            text_attention_mask=outputs.text_attention_mask,
            input_ids=input_ids,
            image_sizes=image_sizes,
            text_last_hidden_state=outputs.text_last_hidden_state,
            projected_text_features=outputs.projected_text_features,
            backbone_hidden_states=outputs.backbone_hidden_states,
            feature_pyramid_hidden_states=outputs.feature_pyramid_hidden_states,
            text_hidden_states=outputs.text_hidden_states,
            fusion_vision_hidden_states=outputs.fusion_vision_hidden_states,
            fusion_text_hidden_states=outputs.fusion_text_hidden_states,
            head_text_hidden_states=outputs.head_text_hidden_states,
            dyconv_hidden_states=outputs.dyconv_hidden_states,
            backbone_attentions=outputs.backbone_attentions,
            text_attentions=outputs.text_attentions,
            fusion_attentions=outputs.fusion_attentions,
            head_text_attentions=outputs.head_text_attentions,
        )
