"""Visual backbone of GLIP: the detection variant of the Swin Transformer and the RetinaNet-style FPN.

Both modules reproduce the official microsoft/GLIP code numerically:

* `GLIPSwinBackbone` <- `maskrcnn_benchmark/modeling/backbone/swint.py` (`VERSION = "v1"`, itself derived from
  Swin-Transformer-Object-Detection). It differs from Hugging Face's `SwinModel` in ways that change the outputs:
  the feature map is zero-padded to a multiple of the window size *after* `layernorm_before` and the padded tokens
  are attended to (never masked) in non-shifted windows; the shifted-window mask is built over the padded size with
  the value -100; the window size is never shrunk for small feature maps.
* `GLIPFeaturePyramid` <- `maskrcnn_benchmark/modeling/backbone/fpn.py` (`FPN`, `LastLevelP6P7`) as built by
  `modeling/backbone/__init__.py::build_retinanet_swint_fpn_backbone`, with `layers/dropblock.py::DropBlock2D`.

Inside the Swin stages the tokens are kept as channels-last maps `(batch, height, width, channels)`; the official
code keeps `(batch, height * width, channels)` sequences, which is the same memory layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from torchvision.ops import StochasticDepth
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BackboneOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .configuration_glip import GLIPConfig

__all__ = [
    "GLIPDropBlock2d",
    "GLIPFeaturePyramid",
    "GLIPSwinAttention",
    "GLIPSwinBackbone",
    "GLIPSwinBlock",
    "GLIPSwinEmbeddings",
    "GLIPSwinMLP",
    "GLIPSwinPatchMerging",
    "GLIPSwinStage",
    "build_shifted_window_attention_mask",
    "swin_eager_attention",
    "window_partition",
    "window_reverse",
]

# Additive attention score between tokens of different regions of a shifted window (official `swint.py` uses -100,
# not -inf: after softmax the cross-region weights are ~e-100 relative, not exactly 0).
SHIFTED_WINDOW_MASK_VALUE = -100.0


def window_partition(hidden_states: torch.Tensor, window_size: int) -> torch.Tensor:
    """Split a padded map into non-overlapping windows (official `swint.py::window_partition`).

    Args:
        hidden_states: `(batch, height, width, channels)`, height and width multiples of `window_size`.
    Returns:
        `(batch * num_windows, window_size * window_size, channels)`, windows ordered batch-major then row-major.
    """
    batch_size, height, width, channels = hidden_states.shape
    # (batch, height / window, window, width / window, window, channels)
    hidden_states = hidden_states.view(
        batch_size, height // window_size, window_size, width // window_size, window_size, channels
    )
    # (batch, height / window, width / window, window, window, channels)
    hidden_states = hidden_states.permute(0, 1, 3, 2, 4, 5)
    # (batch * num_windows, window * window, channels)
    return hidden_states.reshape(-1, window_size * window_size, channels)


def window_reverse(windows: torch.Tensor, window_size: int, height: int, width: int) -> torch.Tensor:
    """Inverse of [`window_partition`] (official `swint.py::window_reverse`).

    Args:
        windows: `(batch * num_windows, window_size * window_size, channels)`.
        height, width: size of the padded map (multiples of `window_size`).
    Returns:
        `(batch, height, width, channels)`.
    """
    channels = windows.shape[-1]
    # (batch, height / window, width / window, window, window, channels)
    windows = windows.view(-1, height // window_size, width // window_size, window_size, window_size, channels)
    # (batch, height / window, window, width / window, window, channels)
    windows = windows.permute(0, 1, 3, 2, 4, 5)
    # (batch, height, width, channels)
    return windows.reshape(-1, height, width, channels)


def build_shifted_window_attention_mask(
    padded_height: int,
    padded_width: int,
    window_size: int,
    shift_size: int,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Additive attention mask of the shifted windows (official `swint.py::BasicLayer.forward`).

    The padded map is cut into three bands per axis, `[0, H - window)`, `[H - window, H - shift)` and
    `[H - shift, H)` (same for the width); after the cyclic shift by `-shift` a window can hold tokens of several
    bands, which must not attend to each other. The mask is built over the **padded** size, as in the official code.

    Args:
        padded_height, padded_width: size of the zero-padded map (multiples of `window_size`).
    Returns:
        `(num_windows, window_size * window_size, window_size * window_size)` with 0 inside a region and
        `SHIFTED_WINDOW_MASK_VALUE` across regions; `num_windows = (padded_height / window) * (padded_width / window)`.
    """
    row_region = torch.zeros(padded_height, dtype=torch.long, device=device)
    row_region[padded_height - window_size : padded_height - shift_size] = 1
    row_region[padded_height - shift_size :] = 2
    column_region = torch.zeros(padded_width, dtype=torch.long, device=device)
    column_region[padded_width - window_size : padded_width - shift_size] = 1
    column_region[padded_width - shift_size :] = 2
    # (1, padded_height, padded_width, 1): region id 0..8, numbered as the official nested slice loop does
    region_map = (row_region[:, None] * 3 + column_region[None, :])[None, :, :, None]
    # (num_windows, window * window)
    window_regions = window_partition(region_map, window_size).squeeze(-1)
    different_region = window_regions[:, None, :] != window_regions[:, :, None]
    mask = torch.zeros(different_region.shape, dtype=dtype, device=device)
    return mask.masked_fill(different_region, SHIFTED_WINDOW_MASK_VALUE)


def swin_eager_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Window attention in the official operation order: `softmax((query * scale) @ key^T + mask) @ value`.

    The signature is that of transformers' attention interface (`ALL_ATTENTION_FUNCTIONS`).

    Args:
        query, key, value: `(batch * num_windows, num_heads, window * window, head_dim)`.
        attention_mask: additive `(batch * num_windows or 1, num_heads, window * window, window * window)` mask
            (relative position bias, plus the shifted-window mask for shifted blocks).
        scaling: `head_dim ** -0.5`.

    Returns:
        `(batch * num_windows, window * window, num_heads, head_dim)` context and the
        `(batch * num_windows, num_heads, window * window, window * window)` attention probabilities.
    """
    # (batch * num_windows, num_heads, window * window, window * window)
    attention_scores = (query * scaling) @ key.transpose(-2, -1)
    if attention_mask is not None:
        attention_scores = attention_scores + attention_mask
    attention_probs = attention_scores.softmax(dim=-1)
    attention_probs = F.dropout(attention_probs, p=dropout, training=module.training)
    # (batch * num_windows, num_heads, window * window, head_dim) -> (batch * num_windows, window * window, heads, dim)
    context = (attention_probs @ value).transpose(1, 2).contiguous()
    return context, attention_probs


class GLIPSwinEmbeddings(nn.Module):
    """Patch embedding: 4x4 stride-4 conv then LayerNorm (official `swint.py::PatchEmbed`, `patch_norm=True`)."""

    def __init__(self, config: GLIPConfig):
        super().__init__()
        backbone_config = config.backbone_config
        self.patch_size = backbone_config.patch_size
        self.projection = nn.Conv2d(
            backbone_config.num_channels,
            backbone_config.embed_dim,
            kernel_size=self.patch_size,
            stride=self.patch_size,
        )
        self.norm = nn.LayerNorm(backbone_config.embed_dim, eps=backbone_config.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """
        Args:
            pixel_values: `(batch, num_channels, height, width)`; padded right/bottom with zeros to a multiple of
                the patch size if needed.
        Returns:
            `(batch, ceil(height / patch), ceil(width / patch), embed_dim)`.
        """
        height, width = pixel_values.shape[-2:]
        pad_bottom = (self.patch_size - height % self.patch_size) % self.patch_size
        pad_right = (self.patch_size - width % self.patch_size) % self.patch_size
        if pad_bottom or pad_right:
            pixel_values = F.pad(pixel_values, (0, pad_right, 0, pad_bottom))
        embeddings = self.projection(pixel_values)
        # (batch, height / patch, width / patch, embed_dim)
        embeddings = embeddings.permute(0, 2, 3, 1)
        return self.norm(embeddings)


class GLIPSwinAttention(nn.Module):
    """Window multi-head self-attention with relative position bias (official `swint.py::WindowAttention`).

    The query/key/value projection stays fused (`qkv`, output rows ordered q, k, v) as in the official checkpoint.
    The attention itself goes through transformers' attention interface, `config._attn_implementation`: "eager"
    ([`swin_eager_attention`], the official operation order, returns the probabilities) or "sdpa"
    (`torch.nn.functional.scaled_dot_product_attention`, the default; same results to float rounding: on the parity
    fixtures the Swin outputs move by at most 2e-6 and the token logits by 2e-5, within the parity tolerances).
    Both get the relative position bias and the shifted-window mask as one additive mask: the shifted-window mask is
    0 inside a region, so the sum leaves every unmasked score bit-identical.
    """

    def __init__(self, config: GLIPConfig, dim: int, num_heads: int, window_size: int, qkv_bias: bool = True):
        super().__init__()
        self.config = config
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.window_size = window_size
        self.scale = self.head_dim**-0.5
        self.is_causal = False
        num_relative_positions = (2 * window_size - 1) ** 2
        self.relative_position_bias_table = nn.Parameter(torch.zeros(num_relative_positions, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", self._relative_position_index(window_size), persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.projection = nn.Linear(dim, dim)

    @staticmethod
    def _relative_position_index(window_size: int) -> torch.Tensor:
        """`(window * window, window * window)` index into the bias table (standard Swin relative index)."""
        coordinates = torch.stack(
            torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
        )  # (2, window, window)
        # (2, window * window)
        coordinates = coordinates.flatten(1)
        # (window * window, window * window, 2)
        relative_coordinates = (coordinates[:, :, None] - coordinates[:, None, :]).permute(1, 2, 0)
        relative_coordinates = relative_coordinates + (window_size - 1)
        return relative_coordinates[..., 0] * (2 * window_size - 1) + relative_coordinates[..., 1]

    def relative_position_bias(self) -> torch.Tensor:
        """`(num_heads, window * window, window * window)` bias added to the attention scores."""
        num_tokens = self.window_size * self.window_size
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        # (window * window, window * window, num_heads)
        bias = bias.view(num_tokens, num_tokens, self.num_heads)
        # (num_heads, window * window, window * window)
        return bias.permute(2, 0, 1)

    def forward(
        self,
        window_tokens: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        Args:
            window_tokens: `(batch * num_windows, window * window, dim)`.
            attention_mask: additive `(num_windows, window * window, window * window)` mask of shifted windows, or
                `None` for non-shifted windows (padded tokens are then attended to, as in the official code).
            output_attentions: also return the attention probabilities (eager attention only).

        Returns:
            `(batch * num_windows, window * window, dim)` and the `(batch * num_windows, num_heads, window * window,
            window * window)` probabilities (or `None`).
        """
        num_window_batches, num_tokens, dim = window_tokens.shape
        # (batch * num_windows, window * window, 3, num_heads, head_dim)
        qkv = self.qkv(window_tokens).view(num_window_batches, num_tokens, 3, self.num_heads, self.head_dim)
        # (3, batch * num_windows, num_heads, window * window, head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)

        # (1, num_heads, window * window, window * window)
        additive_mask = self.relative_position_bias().unsqueeze(0).to(query.dtype)
        if attention_mask is not None:
            num_windows = attention_mask.shape[0]
            # (1, num_windows, num_heads, N, N) -> (batch * num_windows, num_heads, N, N), N = window * window
            additive_mask = additive_mask.unsqueeze(1) + attention_mask[None, :, None].to(query.dtype)
            additive_mask = additive_mask.expand(num_window_batches // num_windows, -1, -1, -1, -1)
            additive_mask = additive_mask.reshape(num_window_batches, self.num_heads, num_tokens, num_tokens)

        attention_function = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, swin_eager_attention
        )
        if output_attentions:
            attention_function = swin_eager_attention
        # (batch * num_windows, window * window, num_heads, head_dim)
        context, attention_probs = attention_function(
            self, query, key, value, additive_mask, scaling=self.scale, dropout=0.0
        )
        # (batch * num_windows, window * window, dim)
        context = context.reshape(num_window_batches, num_tokens, dim)
        return self.projection(context), attention_probs if output_attentions else None


class GLIPSwinMLP(nn.Module):
    """Linear -> GELU -> Linear (official `swint.py::Mlp`, dropout 0)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.activation = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(hidden_states)))


class GLIPSwinBlock(GradientCheckpointingLayer):
    """Pre-norm Swin block with (shifted) window attention (official `swint.py::SwinTransformerBlock`).

    Gradient checkpointing: `gradient_checkpointing = True` (set by `PreTrainedModel.gradient_checkpointing_enable()`
    or through `GLIPSwinBackbone.gradient_checkpointing = True`); it only acts in training mode.
    """

    # Used when the flag is set directly rather than through `PreTrainedModel.gradient_checkpointing_enable`, which
    # installs its own function on the instance.
    @staticmethod
    def _gradient_checkpointing_func(function, *args, **kwargs):
        return checkpoint(function, *args, use_reentrant=False, **kwargs)

    def __init__(
        self,
        config: GLIPConfig,
        dim: int,
        num_heads: int,
        window_size: int,
        shift_size: int,
        mlp_ratio: float,
        drop_path: float,
        layer_norm_eps: float,
        qkv_bias: bool = True,
    ):
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size={shift_size} must be in [0, window_size={window_size}).")
        self.window_size = window_size
        self.shift_size = shift_size
        self.layernorm_before = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.attention = GLIPSwinAttention(config, dim, num_heads, window_size, qkv_bias=qkv_bias)
        # Stochastic depth per sample (timm `DropPath` in the official `swint.py`); identity in eval mode.
        self.drop_path = StochasticDepth(drop_path, mode="row")
        self.layernorm_after = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.mlp = GLIPSwinMLP(dim, int(dim * mlp_ratio))

    def forward(
        self,
        hidden_states: torch.Tensor,
        shifted_window_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        Args:
            hidden_states: `(batch, height, width, dim)`.
            shifted_window_mask: `(num_windows, window * window, window * window)` from
                [`build_shifted_window_attention_mask`] for the padded size; only read when `shift_size > 0`.
            output_attentions: also return the window attention probabilities.
        Returns:
            `(batch, height, width, dim)` and the `(batch * num_windows, num_heads, window * window, window * window)`
            attention probabilities (or `None`).
        """
        _, height, width, _ = hidden_states.shape
        shortcut = hidden_states
        hidden_states = self.layernorm_before(hidden_states)

        # Zero padding AFTER the norm, right/bottom, to a multiple of the window size (never shrink the window).
        pad_bottom = (self.window_size - height % self.window_size) % self.window_size
        pad_right = (self.window_size - width % self.window_size) % self.window_size
        # (batch, padded_height, padded_width, dim)
        hidden_states = F.pad(hidden_states, (0, 0, 0, pad_right, 0, pad_bottom))
        padded_height, padded_width = height + pad_bottom, width + pad_right

        if self.shift_size > 0:
            hidden_states = torch.roll(hidden_states, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
            attention_mask = shifted_window_mask
        else:
            attention_mask = None

        # (batch * num_windows, window * window, dim)
        windows = window_partition(hidden_states, self.window_size)
        windows, attention_probs = self.attention(windows, attention_mask, output_attentions=output_attentions)
        # (batch, padded_height, padded_width, dim)
        hidden_states = window_reverse(windows, self.window_size, padded_height, padded_width)

        if self.shift_size > 0:
            hidden_states = torch.roll(hidden_states, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        # (batch, height, width, dim)
        hidden_states = hidden_states[:, :height, :width, :]

        hidden_states = shortcut + self.drop_path(hidden_states)
        hidden_states = hidden_states + self.drop_path(self.mlp(self.layernorm_after(hidden_states)))
        return hidden_states, attention_probs


class GLIPSwinPatchMerging(nn.Module):
    """2x2 patch merging: concat -> LayerNorm(4C) -> Linear(4C -> 2C, no bias) (official `swint.py::PatchMerging`).

    The four sub-grids are concatenated in the official order (even row, even col), (odd row, even col),
    (even row, odd col), (odd row, odd col); mmdetection's `nn.Unfold` order differs.
    """

    def __init__(self, dim: int, layer_norm_eps: float):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim, eps=layer_norm_eps)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """
        Args:
            hidden_states: `(batch, height, width, dim)`; odd sizes are zero-padded right/bottom.
        Returns:
            `(batch, ceil(height / 2), ceil(width / 2), 2 * dim)`.
        """
        height, width = hidden_states.shape[1:3]
        if height % 2 == 1 or width % 2 == 1:
            hidden_states = F.pad(hidden_states, (0, 0, 0, width % 2, 0, height % 2))
        # (batch, height / 2, width / 2, 4 * dim)
        hidden_states = torch.cat(
            [
                hidden_states[:, 0::2, 0::2, :],
                hidden_states[:, 1::2, 0::2, :],
                hidden_states[:, 0::2, 1::2, :],
                hidden_states[:, 1::2, 1::2, :],
            ],
            dim=-1,
        )
        return self.reduction(self.norm(hidden_states))


class GLIPSwinStage(nn.Module):
    """Blocks of one resolution, alternating shift 0 / window // 2, then optional patch merging
    (official `swint.py::BasicLayer`)."""

    def __init__(
        self,
        config: GLIPConfig,
        dim: int,
        depth: int,
        num_heads: int,
        drop_path_rates: list[float],
        downsample: bool,
    ):
        super().__init__()
        backbone_config = config.backbone_config
        self.window_size = backbone_config.window_size
        self.shift_size = self.window_size // 2
        self.blocks = nn.ModuleList(
            [
                GLIPSwinBlock(
                    config,
                    dim=dim,
                    num_heads=num_heads,
                    window_size=self.window_size,
                    shift_size=0 if block_index % 2 == 0 else self.shift_size,
                    mlp_ratio=backbone_config.mlp_ratio,
                    drop_path=drop_path_rates[block_index],
                    layer_norm_eps=backbone_config.layer_norm_eps,
                    qkv_bias=backbone_config.qkv_bias,
                )
                for block_index in range(depth)
            ]
        )
        self.downsample = GLIPSwinPatchMerging(dim, backbone_config.layer_norm_eps) if downsample else None

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, ...] | None]:
        """
        Args:
            hidden_states: `(batch, height, width, dim)`.
            output_attentions: also return every block's attention probabilities.
        Returns:
            `(stage_output, downsampled, attentions)`: `(batch, height, width, dim)` (before patch merging),
            `(batch, ceil(height / 2), ceil(width / 2), 2 * dim)` or `None` for the last stage, and one
            `(batch * num_windows, num_heads, window * window, window * window)` tensor per block (or `None`).
        """
        height, width = hidden_states.shape[1:3]
        shifted_window_mask = None
        if self.shift_size > 0 and len(self.blocks) > 1:
            padded_height = -(-height // self.window_size) * self.window_size
            padded_width = -(-width // self.window_size) * self.window_size
            shifted_window_mask = build_shifted_window_attention_mask(
                padded_height,
                padded_width,
                self.window_size,
                self.shift_size,
                device=hidden_states.device,
                dtype=hidden_states.dtype,
            )
        attentions = []
        for block in self.blocks:
            hidden_states, attention_probs = block(hidden_states, shifted_window_mask, output_attentions)
            attentions.append(attention_probs)
        downsampled = self.downsample(hidden_states) if self.downsample is not None else None
        return hidden_states, downsampled, tuple(attentions) if output_attentions else None


class GLIPSwinBackbone(nn.Module):
    """Detection Swin Transformer of GLIP (official `maskrcnn_benchmark/modeling/backbone/swint.py`, v1).

    Returns the outputs of stages 2..4 (C3, C4, C5; strides 8, 16, 32), each through its output LayerNorm
    (official `norm1`, `norm2`, `norm3`). The stage-1 output (official `norm0`, Identity for `*-RETINANET`) is not
    consumed by the FPN and is not returned. No absolute position embedding (`APE=False`), dropout 0.

    Attributes:
        gradient_checkpointing (`bool`): setting it switches activation checkpointing of every Swin block on or off
            (active in training mode only). `PreTrainedModel.gradient_checkpointing_enable()` also reaches the
            blocks directly because they are `GradientCheckpointingLayer`s.
    """

    def __init__(self, config: GLIPConfig):
        super().__init__()
        backbone_config = config.backbone_config
        depths = list(backbone_config.depths)
        stage_channels = config.backbone_stage_channels
        self.embeddings = GLIPSwinEmbeddings(config)
        # Stochastic depth decay rule: linear 0 -> drop_path_rate over all blocks of all stages.
        drop_path_rates = torch.linspace(0, backbone_config.drop_path_rate, sum(depths), device="cpu").tolist()
        self.stages = nn.ModuleList()
        for stage_index, depth in enumerate(depths):
            first_block = sum(depths[:stage_index])
            self.stages.append(
                GLIPSwinStage(
                    config,
                    dim=stage_channels[stage_index],
                    depth=depth,
                    num_heads=backbone_config.num_heads[stage_index],
                    drop_path_rates=drop_path_rates[first_block : first_block + depth],
                    downsample=stage_index < len(depths) - 1,
                )
            )
        self.output_norms = nn.ModuleList(
            [nn.LayerNorm(channels, eps=backbone_config.layer_norm_eps) for channels in stage_channels[1:]]
        )

    @property
    def gradient_checkpointing(self) -> bool:
        return any(block.gradient_checkpointing for stage in self.stages for block in stage.blocks)

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, enable: bool) -> None:
        for stage in self.stages:
            for block in stage.blocks:
                block.gradient_checkpointing = enable

    def forward(self, pixel_values: torch.Tensor, output_attentions: bool = False) -> BackboneOutput:
        """
        Args:
            pixel_values: `(batch, 3, height, width)` normalized BGR image (padded to a multiple of 32 by the image
                processor; any size works).
            output_attentions: also return the attention probabilities of every Swin block.
        Returns:
            `BackboneOutput` with `feature_maps` `(C3, C4, C5)`: `(batch, 2 * embed_dim, H / 8, W / 8)`,
            `(batch, 4 * embed_dim, H / 16, W / 16)`, `(batch, 8 * embed_dim, H / 32, W / 32)` (sizes rounded up at
            every halving), NCHW, contiguous; and `attentions` (one tensor per block, all stages, when requested).
        """
        # (batch, height / 4, width / 4, embed_dim)
        hidden_states = self.embeddings(pixel_values)
        feature_maps, attentions = [], []
        for stage_index, stage in enumerate(self.stages):
            stage_output, hidden_states, stage_attentions = stage(hidden_states, output_attentions)
            if output_attentions:
                attentions.extend(stage_attentions)
            if stage_index == 0:
                continue
            stage_output = self.output_norms[stage_index - 1](stage_output)
            # (batch, channels, height, width)
            feature_maps.append(stage_output.permute(0, 3, 1, 2).contiguous())
        return BackboneOutput(
            feature_maps=tuple(feature_maps), attentions=tuple(attentions) if output_attentions else None
        )


class GLIPDropBlock2d(nn.Module):
    """DropBlock on NCHW features, training only (official `maskrcnn_benchmark/layers/dropblock.py::DropBlock2D`).

    A Bernoulli seed mask with rate `drop_prob / block_size**2` per (sample, position), shared by all channels, is
    dilated by a `block_size` max-pool (stride 1) and the kept features are rescaled by `numel / kept`.
    Identity in eval mode or when `drop_prob == 0`.
    """

    def __init__(self, drop_prob: float, block_size: int):
        super().__init__()
        self.drop_prob = drop_prob
        self.block_size = block_size

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(batch, channels, height, width)` -> same shape."""
        if not self.training or self.drop_prob == 0.0:
            return hidden_states
        gamma = self.drop_prob / (self.block_size**2)
        batch_size, _, height, width = hidden_states.shape
        # (batch, 1, height, width)
        seed_mask = (torch.rand(batch_size, 1, height, width, device=hidden_states.device) < gamma).float()
        dropped = F.max_pool2d(seed_mask, kernel_size=self.block_size, stride=1, padding=self.block_size // 2)
        if self.block_size % 2 == 0:
            dropped = dropped[:, :, :-1, :-1]
        keep_mask = 1.0 - dropped
        # The official code divides by keep_mask.sum() unguarded (NaN when every position is dropped).
        scale = keep_mask.numel() / keep_mask.sum().clamp(min=1.0)
        return hidden_states * (keep_mask * scale).to(hidden_states.dtype)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}, block_size={self.block_size}"


class GLIPFeaturePyramid(nn.Module):
    """RetinaNet-style FPN of GLIP: C3..C5 -> P3..P7 (official `modeling/backbone/fpn.py::FPN` + `LastLevelP6P7`).

    Plain convs with bias (no GN, no ReLU). Top-down pathway with nearest interpolation to the lateral's size;
    P6 = `extra_convs[0](P5)` (stride-2 3x3 conv on the FPN output P5, not on C5), P7 = `extra_convs[1](relu(P6))`.
    In training, DropBlock (`config.fpn_drop_block_prob`, `config.fpn_drop_block_size`) is applied to the merged
    top-down features of P4 and P3 before their output conv; set `drop_block.drop_prob = 0` (or build with
    `fpn_drop_block_prob=0`) to disable it.
    """

    def __init__(self, config: GLIPConfig):
        super().__init__()
        in_channels = config.backbone_stage_channels[1:]
        out_channels = config.fpn_channels
        self.lateral_convs = nn.ModuleList([nn.Conv2d(channels, out_channels, 1) for channels in in_channels])
        self.output_convs = nn.ModuleList([nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels])
        self.extra_convs = nn.ModuleList(
            [nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1) for _ in range(2)]
        )
        self.drop_block = GLIPDropBlock2d(config.fpn_drop_block_prob, config.fpn_drop_block_size)
        # Official init (`make_layers.py::conv_with_kaiming_uniform`, `LastLevelP6P7`); irrelevant when loading.
        for conv in [*self.lateral_convs, *self.output_convs, *self.extra_convs]:
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)

    def forward(self, feature_maps: tuple[torch.Tensor, ...] | list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """
        Args:
            feature_maps: `(C3, C4, C5)` NCHW maps of [`GLIPSwinBackbone`].
        Returns:
            `(P3, P4, P5, P6, P7)`, each `(batch, fpn_channels, height_l, width_l)` with P3..P5 of the sizes of
            C3..C5, `P6 = ceil(P5 / 2)`, `P7 = ceil(P6 / 2)`.
        """
        last_inner = self.lateral_convs[-1](feature_maps[-1])
        outputs = [self.output_convs[-1](last_inner)]
        for level in range(len(feature_maps) - 2, -1, -1):
            lateral = self.lateral_convs[level](feature_maps[level])
            top_down = last_inner
            if top_down.shape[-2:] != lateral.shape[-2:]:
                top_down = F.interpolate(top_down, size=lateral.shape[-2:], mode="nearest")
            last_inner = lateral + top_down
            # The un-dropped `last_inner` feeds the next level, as in the official loop.
            outputs.insert(0, self.output_convs[level](self.drop_block(last_inner)))
        p6 = self.extra_convs[0](outputs[-1])
        p7 = self.extra_convs[1](F.relu(p6))
        return (*outputs, p6, p7)
