"""Vision-language fusion of the GLIP head: the bi-directional cross-attention and the head's text layer.

Official sources (microsoft/GLIP): `maskrcnn_benchmark/utils/fuse_helper.py` (`BiMultiHeadAttention`,
`BiAttentionBlockForCheckpoint`, fusion type "MHA-B") and `maskrcnn_benchmark/modeling/rpn/modeling_bert.py` +
`vldyhead.py::BertEncoderLayer` (the BERT layer with overflow clamps that updates the text features in every head
block).

Both attentions here stay eager, hand-written, by design: the official code clamps their scores to +-50000 before
the softmax (and the image->text direction subtracts the row maximum, clamps again and is unmasked), which no fused
kernel of transformers' attention interface (SDPA, flash, flex) can express. The parts of the head text layer
without a clamp are transformers' own `BertSelfOutput`.

The fusion attention has two exact implementations (`config.fusion_implementation`): `"factorised"` (the default,
the fast path), the official algebra with the wide vision projections folded into the text side, so that the visual
positions never pass through the 2048-wide attention space, and `"official"`, the official operation order (official
mode; see [`GLIPBiMultiHeadAttention`]).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.models.bert.modeling_bert import BertSelfOutput

from .configuration_glip import GLIPConfig

__all__ = [
    "ATTENTION_CLAMP_VALUE",
    "FUSION_IMPLEMENTATIONS",
    "TEXT_PADDING_MASK_VALUE",
    "GLIPBiAttentionBlock",
    "GLIPBiMultiHeadAttention",
    "GLIPHeadTextAttention",
    "GLIPHeadTextIntermediate",
    "GLIPHeadTextLayer",
    "GLIPHeadTextOutput",
    "GLIPHeadTextSelfAttention",
]

# The official code clamps attention scores, BERT activations and dot-product logits to +-50000 so that they stay
# finite in float16 ("Do not increase 50000, data type half has quite limited range"). Kept for parity.
ATTENTION_CLAMP_VALUE = 50000.0

# Additive mask of padded text tokens in the text->image direction of the fusion (official `masked_fill(-9e15)`).
# Real tokens keep the mask value 1, a constant shift that does not change the softmax.
TEXT_PADDING_MASK_VALUE = -9e15

# Values of `GLIPConfig.fusion_implementation`: the factorised operation order (the default) and the official one.
FUSION_IMPLEMENTATIONS = ("factorised", "official")


def _clamp(tensor: torch.Tensor) -> torch.Tensor:
    return torch.clamp(tensor, min=-ATTENTION_CLAMP_VALUE, max=ATTENTION_CLAMP_VALUE)


class GLIPBiMultiHeadAttention(nn.Module):
    """Bi-directional multi-head cross-attention between all visual positions and all text tokens.

    One score matrix `S = (W_q v / sqrt(head_dim)) (W_k t)^T` serves both directions
    (`fuse_helper.py::BiMultiHeadAttention`):

    * vision queries attend over text tokens: `softmax(S + mask_term)`, padded tokens get `-9e15`;
    * text queries attend over visual positions: `softmax(clamp(S^T - rowmax(S^T)))`, with NO mask (image padding and
      padded text rows take part, as in the official code).

    The attention width (`config.fusion_hidden_size`, 2048 with 8 heads in every released model) is independent of
    the visual and text widths.

    `config.fusion_implementation` picks the operation order (read at every call, so
    `model.config.fusion_implementation = "official"` switches a built model):

    * `"official"`: project the visual tokens to the 2048-wide query and value spaces, attend per head, project the
      2048-wide output back (`N x vision_dim x 2048` three times per block for `N` visual positions);
    * `"factorised"` (the default): per head `h`, `S_h = v (scale W_q,h^T k_h^T) + scale b_q,h k_h^T` (the query
      projection folded into the text keys), the text->image output `sum_h P_h (t_v,h W_o,h^T) + b_o` (the output
      projection folded into the text values) and the image->text output `(Q_h v) W_v,h^T + rowsum(Q_h) b_v,h` (the
      vision value projection applied after the attention). The visual side costs `N x T x heads x vision_dim` three
      times; the folded text-side products are `T`-sized. The scores are the official ones up to float rounding and
      both clamps are applied to them unchanged, so the clamps are kept exactly (a score beyond +-50000 is clamped to
      the same value; near the bound the two orders differ only by that rounding). With `output_attentions=True` the
      probabilities are returned in the official layout as views that the products read through, so they retain
      gradients as the official ones do.
    """

    def __init__(self, config: GLIPConfig):
        super().__init__()
        self.vision_dim = config.fpn_channels
        self.text_dim = config.text_hidden_size
        self.embed_dim = config.fusion_hidden_size
        self.num_heads = config.fusion_num_heads
        self.head_dim = self.embed_dim // self.num_heads
        self.scale = self.head_dim**-0.5
        self.dropout = config.fusion_dropout
        self.config = config

        self.vision_proj = nn.Linear(self.vision_dim, self.embed_dim)
        self.text_proj = nn.Linear(self.text_dim, self.embed_dim)
        self.values_vision_proj = nn.Linear(self.vision_dim, self.embed_dim)
        self.values_text_proj = nn.Linear(self.text_dim, self.embed_dim)
        self.out_vision_proj = nn.Linear(self.embed_dim, self.vision_dim)
        self.out_text_proj = nn.Linear(self.embed_dim, self.text_dim)

    def _split_heads(self, tensor: torch.Tensor) -> torch.Tensor:
        """(batch, length, embed_dim) -> (batch * num_heads, length, head_dim); head h owns channels [h*d, (h+1)*d)."""
        batch_size, length, _ = tensor.shape
        tensor = tensor.view(batch_size, length, self.num_heads, self.head_dim)  # (batch, length, heads, head_dim)
        tensor = tensor.transpose(1, 2).contiguous()  # (batch, heads, length, head_dim)
        return tensor.view(batch_size * self.num_heads, length, self.head_dim)  # (batch * heads, length, head_dim)

    def _merge_heads(self, tensor: torch.Tensor, batch_size: int) -> torch.Tensor:
        """(batch * num_heads, length, head_dim) -> (batch, length, embed_dim)."""
        length = tensor.shape[1]
        tensor = tensor.view(batch_size, self.num_heads, length, self.head_dim)  # (batch, heads, length, head_dim)
        tensor = tensor.transpose(1, 2)  # (batch, length, heads, head_dim)
        return tensor.reshape(batch_size, length, self.embed_dim)  # (batch, length, embed_dim)

    def forward(
        self,
        vision_features: torch.Tensor,
        text_features: torch.Tensor,
        text_attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """
        Args:
            vision_features: `(batch, num_positions, vision_dim)` LayerNorm-ed visual tokens of all levels.
            text_features: `(batch, sequence_length, text_dim)` LayerNorm-ed text tokens.
            text_attention_mask: `(batch, sequence_length)`, 1 for real tokens and 0 for padding.
            output_attentions: also return both attention-probability tensors (before dropout).

        Returns:
            `(vision_delta, text_delta, attentions)`: `(batch, num_positions, vision_dim)`,
            `(batch, sequence_length, text_dim)`, and `(vision_to_text (batch, num_heads, num_positions,
            sequence_length), text_to_vision (batch, num_heads, sequence_length, num_positions))` or `None`.
        """
        if self.config.fusion_implementation == "official":
            return self._forward_official(vision_features, text_features, text_attention_mask, output_attentions)
        return self._forward_factorised(vision_features, text_features, text_attention_mask, output_attentions)

    def _text_mask_term(self, text_attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """`(batch, seq_len)` 1/0 mask -> `(batch, seq_len)` additive term: 1 for real tokens, `-9e15` (or the dtype
        minimum) for padding, as the official `masked_fill`."""
        mask_value = max(TEXT_PADDING_MASK_VALUE, torch.finfo(dtype).min)
        return text_attention_mask.to(dtype).masked_fill(text_attention_mask == 0, mask_value)

    def _forward_factorised(
        self,
        vision_features: torch.Tensor,
        text_features: torch.Tensor,
        text_attention_mask: torch.Tensor | None,
        output_attentions: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """The official computation in the factorised order (see the class docstring); scores are kept in the
        `(batch, num_positions, heads, seq_len)` layout so that both directions read them without a transpose."""
        batch_size, num_positions, vision_dim = vision_features.shape
        sequence_length = text_features.shape[1]
        heads, head_dim = self.num_heads, self.head_dim

        # query projection folded into the text keys: per head (seq_len, head_dim) @ (head_dim, vision_dim)
        key_states = self.text_proj(text_features).view(batch_size, sequence_length, heads, head_dim)  # (b, T, H, d)
        query_weight = self.vision_proj.weight.view(heads, head_dim, vision_dim)  # (H, d, vision_dim)
        query_bias = self.vision_proj.bias.view(heads, head_dim)  # (H, d)
        folded_keys = torch.einsum("bthd,hdc->bcht", key_states, query_weight) * self.scale  # (b, vision_dim, H, T)
        folded_keys = folded_keys.reshape(batch_size, vision_dim, heads * sequence_length)  # (b, vision_dim, H * T)
        key_bias = torch.einsum("bthd,hd->bht", key_states, query_bias) * self.scale  # (b, H, T)
        key_bias = key_bias.reshape(batch_size, 1, heads * sequence_length)  # (b, 1, H * T)

        scores = torch.baddbmm(key_bias, vision_features, folded_keys)  # (b, N, H * T)
        scores = _clamp(scores.view(batch_size, num_positions, heads, sequence_length))  # (b, N, H, T)

        # image -> text direction: every text token attends over all visual positions (dim 1), unmasked.
        text_scores = _clamp(scores - torch.amax(scores, dim=1, keepdim=True))  # (b, N, H, T)
        text_attention_weights = text_scores.softmax(dim=1)  # (b, N, H, T), sums to 1 over N

        # text -> image direction: every visual position attends over the real text tokens (dim 3).
        vision_scores = scores
        if text_attention_mask is not None:
            mask_term = self._text_mask_term(text_attention_mask, scores.dtype)[:, None, None, :]  # (b, 1, 1, T)
            vision_scores = scores + mask_term
        vision_attention_weights = vision_scores.softmax(dim=-1)  # (b, N, H, T), sums to 1 over T

        attentions = None
        if output_attentions:
            # The returned probabilities are views in the official layout, and the products below read THROUGH
            # them (permuting back restores the original strides: no copy, same values), so that they are part of
            # the graph and can retain gradients (transformers' `test_retain_grad_hidden_states_attentions`).
            attentions = (
                vision_attention_weights.permute(0, 2, 1, 3),  # (b, H, N, T)
                text_attention_weights.permute(0, 2, 3, 1),  # (b, H, T, N)
            )
            vision_attention_weights = attentions[0].permute(0, 2, 1, 3)  # (b, H, N, T) -> (b, N, H, T)
            text_attention_weights = attentions[1].permute(0, 3, 1, 2)  # (b, H, T, N) -> (b, N, H, T)

        vision_attention_probs = nn.functional.dropout(
            vision_attention_weights, p=self.dropout, training=self.training
        )
        text_attention_probs = nn.functional.dropout(text_attention_weights, p=self.dropout, training=self.training)

        # output projection folded into the text values: per head (seq_len, head_dim) @ (head_dim, vision_dim)
        text_value_states = self.values_text_proj(text_features).view(batch_size, sequence_length, heads, head_dim)
        output_weight = self.out_vision_proj.weight.view(vision_dim, heads, head_dim)  # (vision_dim, H, d)
        folded_values = torch.einsum("bthd,chd->bhtc", text_value_states, output_weight)  # (b, H, T, vision_dim)
        folded_values = folded_values.reshape(batch_size, heads * sequence_length, vision_dim)  # (b, H*T, vision_dim)
        vision_delta = torch.baddbmm(
            self.out_vision_proj.bias,
            vision_attention_probs.view(batch_size, num_positions, heads * sequence_length),  # (b, N, H * T)
            folded_values,
        )  # (b, N, vision_dim)

        # vision value projection after the attention: (Q_h v) W_v,h^T + rowsum(Q_h) b_v,h
        text_probs_flat = text_attention_probs.view(batch_size, num_positions, heads * sequence_length)  # (b,N,H*T)
        attended_vision = torch.bmm(text_probs_flat.transpose(1, 2), vision_features)  # (b, H * T, vision_dim)
        attended_vision = attended_vision.view(batch_size, heads, sequence_length, vision_dim)  # (b, H, T, vision_dim)
        value_weight = self.values_vision_proj.weight.view(heads, head_dim, vision_dim)  # (H, d, vision_dim)
        text_output = torch.einsum("bhtc,hdc->bthd", attended_vision, value_weight)  # (b, T, H, d)
        probability_mass = text_attention_probs.sum(dim=1).transpose(1, 2)  # (b, T, H): 1 without dropout
        value_bias = self.values_vision_proj.bias.view(heads, head_dim)  # (H, d)
        text_output = text_output + probability_mass[..., None] * value_bias  # (b, T, H, d)
        text_delta = self.out_text_proj(text_output.reshape(batch_size, sequence_length, self.embed_dim))
        return vision_delta, text_delta, attentions

    def _forward_official(
        self,
        vision_features: torch.Tensor,
        text_features: torch.Tensor,
        text_attention_mask: torch.Tensor | None,
        output_attentions: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """The official operation order (`fuse_helper.py::BiMultiHeadAttention.forward`)."""
        batch_size, num_positions, _ = vision_features.shape
        sequence_length = text_features.shape[1]

        query_states = self._split_heads(self.vision_proj(vision_features) * self.scale)
        key_states = self._split_heads(self.text_proj(text_features))
        vision_value_states = self._split_heads(self.values_vision_proj(vision_features))
        text_value_states = self._split_heads(self.values_text_proj(text_features))

        scores = torch.bmm(query_states, key_states.transpose(1, 2))  # (batch * heads, num_positions, seq_len)
        scores = _clamp(scores)

        # image -> text direction: every text token attends over all visual positions, unmasked.
        text_scores = scores.transpose(1, 2)  # (batch * heads, seq_len, num_positions)
        text_scores = text_scores - torch.max(text_scores, dim=-1, keepdim=True)[0]
        text_scores = _clamp(text_scores)
        # (batch * heads, seq_len, positions) -> (batch, heads, seq_len, positions): the returned probabilities are
        # the tensor the product below reads (so they can retain gradients)
        text_attention_weights = text_scores.softmax(dim=-1).view(
            batch_size, self.num_heads, sequence_length, num_positions
        )

        # text -> image direction: every visual position attends over the real text tokens.
        if text_attention_mask is not None:
            mask_term = self._text_mask_term(text_attention_mask, scores.dtype)[:, None, None, :]  # (batch, 1, 1, T)
            scores = scores.view(batch_size, self.num_heads, num_positions, sequence_length) + mask_term
            scores = scores.view(batch_size * self.num_heads, num_positions, sequence_length)
        # (batch * heads, positions, seq_len) -> (batch, heads, positions, seq_len), as above
        vision_attention_weights = nn.functional.softmax(scores, dim=-1).view(
            batch_size, self.num_heads, num_positions, sequence_length
        )

        vision_attention_probs = nn.functional.dropout(
            vision_attention_weights, p=self.dropout, training=self.training
        )
        text_attention_probs = nn.functional.dropout(text_attention_weights, p=self.dropout, training=self.training)

        # (batch * heads, positions, head_dim) and (batch * heads, seq_len, head_dim)
        vision_output = torch.bmm(vision_attention_probs.flatten(0, 1), text_value_states)
        text_output = torch.bmm(text_attention_probs.flatten(0, 1), vision_value_states)

        vision_delta = self.out_vision_proj(self._merge_heads(vision_output, batch_size))
        text_delta = self.out_text_proj(self._merge_heads(text_output, batch_size))
        attentions = (vision_attention_weights, text_attention_weights) if output_attentions else None
        return vision_delta, text_delta, attentions


class GLIPBiAttentionBlock(nn.Module):
    """Pre-norm bi-directional fusion of the five pyramid levels with the text features (official `VLFuse`, MHA-B).

    All levels are flattened row-major `(y, x)` and concatenated into ONE visual sequence; both modalities are
    LayerNorm-ed, and the layer-scaled attention outputs are added to the NORMALISED inputs:
    `v' = LN(v) + vision_gamma * delta_v`, `t' = LN(t) + text_gamma * delta_t`
    (`fuse_helper.py::BiAttentionBlockForCheckpoint.single_attention_call`).
    """

    def __init__(self, config: GLIPConfig):
        super().__init__()
        self.vision_layer_norm = nn.LayerNorm(config.fpn_channels, eps=1e-5)
        self.text_layer_norm = nn.LayerNorm(config.text_hidden_size, eps=1e-5)
        self.attention = GLIPBiMultiHeadAttention(config)
        self.vision_gamma = nn.Parameter(torch.full((config.fpn_channels,), config.layer_scale_init))
        self.text_gamma = nn.Parameter(torch.full((config.text_hidden_size,), config.layer_scale_init))

    def forward(
        self,
        visual_features: list[torch.Tensor],
        text_hidden_states: torch.Tensor,
        text_attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[list[torch.Tensor], torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """
        Args:
            visual_features: per level `(batch, channels, height_l, width_l)`, P3 first.
            text_hidden_states: `(batch, sequence_length, text_dim)`.
            text_attention_mask: `(batch, sequence_length)`.
            output_attentions: also return the attention probabilities (see [`GLIPBiMultiHeadAttention`]).

        Returns:
            The fused visual features (same shapes as the input levels), the fused text features and the attention
            probabilities (or `None`).
        """
        level_sizes = [feature.shape[-2:] for feature in visual_features]
        flattened_levels = [
            feature.flatten(2).transpose(1, 2)  # (batch, height_l * width_l, channels)
            for feature in visual_features
        ]
        vision_tokens = torch.cat(flattened_levels, dim=1)  # (batch, num_positions, channels)

        vision_tokens = self.vision_layer_norm(vision_tokens)
        text_hidden_states = self.text_layer_norm(text_hidden_states)
        vision_delta, text_delta, attentions = self.attention(
            vision_tokens, text_hidden_states, text_attention_mask, output_attentions
        )
        vision_tokens = vision_tokens + self.vision_gamma * vision_delta
        text_hidden_states = text_hidden_states + self.text_gamma * text_delta

        batch_size, _, channels = vision_tokens.shape
        vision_tokens = vision_tokens.transpose(1, 2).contiguous()  # (batch, channels, num_positions)
        fused_levels = []
        start = 0
        for height, width in level_sizes:
            level = vision_tokens[:, :, start : start + height * width]  # (batch, channels, height_l * width_l)
            fused_levels.append(level.reshape(batch_size, channels, height, width))  # (batch, channels, h_l, w_l)
            start += height * width
        return fused_levels, text_hidden_states, attentions


class GLIPHeadTextSelfAttention(nn.Module):
    """BERT self-attention (eager) whose scaled scores are clamped to +-50000 BEFORE the padding mask is added
    (`modeling_bert.py::BertSelfAttention` with `CLAMP_BERTATTN_MIN/MAX_*` on)."""

    def __init__(self, config: GLIPConfig):
        super().__init__()
        text_config = config.text_config
        self.num_attention_heads = text_config.num_attention_heads
        self.attention_head_size = text_config.hidden_size // text_config.num_attention_heads
        self.all_head_size = self.num_attention_heads * self.attention_head_size
        self.query = nn.Linear(text_config.hidden_size, self.all_head_size)
        self.key = nn.Linear(text_config.hidden_size, self.all_head_size)
        self.value = nn.Linear(text_config.hidden_size, self.all_head_size)
        self.dropout = nn.Dropout(text_config.attention_probs_dropout_prob)

    def _split_heads(self, tensor: torch.Tensor) -> torch.Tensor:
        batch_size, length, _ = tensor.shape
        tensor = tensor.view(batch_size, length, self.num_attention_heads, self.attention_head_size)
        return tensor.permute(0, 2, 1, 3)  # (batch, heads, length, head_size)

    def forward(
        self, hidden_states: torch.Tensor, extended_attention_mask: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`(batch, length, hidden)` -> `(batch, length, hidden)` and the `(batch, heads, length, length)`
        probabilities (or `None`). Eager only: the clamp sits between the scaled scores and the padding mask."""
        query_layer = self._split_heads(self.query(hidden_states))
        key_layer = self._split_heads(self.key(hidden_states))
        value_layer = self._split_heads(self.value(hidden_states))

        attention_scores = torch.matmul(query_layer, key_layer.transpose(-1, -2))  # (batch, heads, length, length)
        attention_scores = attention_scores / math.sqrt(self.attention_head_size)
        attention_scores = _clamp(attention_scores)
        attention_scores = attention_scores + extended_attention_mask
        attention_weights = nn.functional.softmax(attention_scores, dim=-1)
        attention_probs = self.dropout(attention_weights)

        context_layer = torch.matmul(attention_probs, value_layer)  # (batch, heads, length, head_size)
        context_layer = context_layer.permute(0, 2, 1, 3).contiguous()  # (batch, length, heads, head_size)
        context_layer = context_layer.view(*context_layer.shape[:-2], self.all_head_size)  # (batch, length, hidden)
        return context_layer, attention_weights if output_attentions else None


class GLIPHeadTextAttention(nn.Module):
    """Clamped self-attention, then transformers' `BertSelfOutput` (dense -> dropout -> LayerNorm(x + input)),
    which the official code runs without a clamp."""

    def __init__(self, config: GLIPConfig):
        super().__init__()
        self.self = GLIPHeadTextSelfAttention(config)
        self.output = BertSelfOutput(config.text_config)

    def forward(
        self, hidden_states: torch.Tensor, extended_attention_mask: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        context, attention_weights = self.self(hidden_states, extended_attention_mask, output_attentions)
        return self.output(context, hidden_states), attention_weights


class GLIPHeadTextIntermediate(nn.Module):
    """dense -> clamp -> activation -> clamp (the clamps are unconditional in the official code, so transformers'
    `BertIntermediate` cannot be used)."""

    def __init__(self, config: GLIPConfig):
        super().__init__()
        text_config = config.text_config
        self.dense = nn.Linear(text_config.hidden_size, text_config.intermediate_size)
        self.intermediate_act_fn = ACT2FN[text_config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = _clamp(self.dense(hidden_states))
        return _clamp(self.intermediate_act_fn(hidden_states))


class GLIPHeadTextOutput(nn.Module):
    """dense -> dropout -> clamp -> LayerNorm(x + attention_output) -> clamp (transformers' `BertOutput` has no
    clamps)."""

    def __init__(self, config: GLIPConfig):
        super().__init__()
        text_config = config.text_config
        self.dense = nn.Linear(text_config.intermediate_size, text_config.hidden_size)
        self.LayerNorm = nn.LayerNorm(text_config.hidden_size, eps=text_config.layer_norm_eps)
        self.dropout = nn.Dropout(text_config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        hidden_states = _clamp(self.dropout(self.dense(hidden_states)))
        return _clamp(self.LayerNorm(hidden_states + input_tensor))


class GLIPHeadTextLayer(nn.Module):
    """The BERT layer applied to the text features after each fusion (official `vldyhead.py::BertEncoderLayer`).

    Same parameter names as Hugging Face's `BertLayer`; sizes and LayerNorm eps (1e-12) come from
    `config.text_config`. Attention is always eager so that the score clamp can be applied.
    """

    def __init__(self, config: GLIPConfig):
        super().__init__()
        self.attention = GLIPHeadTextAttention(config)
        self.intermediate = GLIPHeadTextIntermediate(config)
        self.output = GLIPHeadTextOutput(config)

    def forward(
        self, hidden_states: torch.Tensor, text_attention_mask: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        Args:
            hidden_states: `(batch, sequence_length, hidden_size)`.
            text_attention_mask: `(batch, sequence_length)`, 1 for real tokens and 0 for padding.
            output_attentions: also return the self-attention probabilities.

        Returns:
            `(batch, sequence_length, hidden_size)` and the `(batch, num_heads, sequence_length, sequence_length)`
            probabilities (or `None`).
        """
        # HF `get_extended_attention_mask`: (1 - mask) * dtype-min, broadcast over heads and query positions.
        extended_attention_mask = text_attention_mask[:, None, None, :].to(hidden_states.dtype)  # (batch, 1, 1, len)
        extended_attention_mask = (1.0 - extended_attention_mask) * torch.finfo(hidden_states.dtype).min
        attention_output, attention_weights = self.attention(hidden_states, extended_attention_mask, output_attentions)
        return self.output(self.intermediate(attention_output), attention_output), attention_weights
