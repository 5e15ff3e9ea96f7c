"""Configuration of GLIP (Grounded Language-Image Pre-training, Li et al., CVPR 2022, arXiv 2112.03857).

Field names follow the Hugging Face conventions; the matching key of the official yacs config
(`maskrcnn_benchmark/config/defaults.py` merged with `configs/pretrain/*.yaml`) is given in each docstring entry.
"""

from __future__ import annotations

import math

from transformers import BertConfig, PreTrainedConfig, SwinConfig

__all__ = ["BOOLEAN_FIELDS", "INTEGER_FIELDS", "NUMBER_FIELDS", "GLIPConfig"]

# Type of every scalar field, checked by `GLIPConfig.validate` (a JSON `1` is accepted for a float field).
INTEGER_FIELDS = (
    "fpn_channels",
    "num_head_blocks",
    "fusion_hidden_size",
    "fusion_num_heads",
    "head_group_norm_groups",
    "max_text_length",
    "pre_nms_top_n",
    "max_detections",
    "prompt_tuning_length",
    "atss_topk",
    "fpn_drop_block_size",
)
NUMBER_FIELDS = (
    "fusion_dropout",
    "prior_prob",
    "log_scale_init",
    "pre_nms_score_threshold",
    "nms_threshold",
    "focal_alpha",
    "focal_gamma",
    "token_loss_weight",
    "regression_loss_weight",
    "centerness_loss_weight",
    "fpn_drop_block_prob",
    "initializer_range",
)
# The top-level package name of the installed code; a folder's remote-code copy runs under another name.
PACKAGE_NAME = "transformers_glip"
BOOLEAN_FIELDS = ("early_fusion", "use_fused_text_for_dot_product", "head_use_deformable_conv")


def _swin_tiny_backbone_config() -> dict:
    """Swin-T of GLIP-T (`MODEL.SWINT.*` in `glip_Swin_T_O365_GoldG.yaml`)."""
    return {
        "model_type": "swin",
        "embed_dim": 96,
        "depths": [2, 2, 6, 2],
        "num_heads": [3, 6, 12, 24],
        "window_size": 7,
        "mlp_ratio": 4.0,
        "drop_path_rate": 0.2,
        "patch_size": 4,
        "num_channels": 3,
        "layer_norm_eps": 1e-5,
        "qkv_bias": True,
    }


def _swin_large_backbone_config() -> dict:
    """Swin-L of GLIP-L (`MODEL.SWINT.*` in `glip_Swin_L.yaml`)."""
    return {
        **_swin_tiny_backbone_config(),
        "embed_dim": 192,
        "depths": [2, 2, 18, 2],
        "num_heads": [6, 12, 24, 48],
        "window_size": 12,
        "drop_path_rate": 0.4,
    }


def _bert_base_uncased_text_config() -> dict:
    """A BertConfig of the size of `bert-base-uncased` (built locally, nothing is downloaded)."""
    return {
        "model_type": "bert",
        "vocab_size": 30522,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
    }


def _as_config(value, config_class, default: dict, name: str):
    if value is None:
        value = default
    if isinstance(value, config_class):
        return value
    if isinstance(value, PreTrainedConfig):
        raise TypeError(f"`{name}` must be a {config_class.__name__}, got {type(value).__name__}.")
    if not isinstance(value, dict):
        raise TypeError(f"`{name}` must be a dict or a {config_class.__name__}, got {type(value).__name__}.")
    value = {key: item for key, item in value.items() if key != "model_type"}
    return config_class(**value)


class GLIPConfig(PreTrainedConfig):
    r"""
    Configuration of [`GLIPModel`] / [`GLIPForGrounding`]. The defaults give the GLIP-T (B/C/T) architecture;
    use the presets [`GLIPConfig.glip_t`], [`GLIPConfig.glip_t_a`] and [`GLIPConfig.glip_l`].

    Args:
        backbone_config (`dict` or `SwinConfig`, *optional*):
            The Swin backbone (detection variant; see `modeling_glip_backbone.py`). Fields read: `embed_dim`,
            `depths`, `num_heads`, `window_size`, `mlp_ratio`, `patch_size`, `num_channels`, `layer_norm_eps`,
            `qkv_bias`, `drop_path_rate` (`MODEL.SWINT.*`). Stage widths are `embed_dim * 2**stage`.
        text_config (`dict` or `BertConfig`, *optional*):
            The BERT text encoder (`MODEL.LANGUAGE_BACKBONE`, bert-base-uncased). The head's text layers use
            the same sizes (the official code builds them from the language BertConfig).
        fpn_channels (`int`, *optional*, defaults to 256):
            Width of the FPN outputs and of the whole head (`MODEL.BACKBONE.OUT_CHANNELS` =
            `MODEL.DYHEAD.CHANNELS` = `FUSE_CONFIG.JOINT_EMB_SIZE`; the official code requires them equal).
        num_head_blocks (`int`, *optional*, defaults to 6):
            Number of head blocks (`MODEL.DYHEAD.NUM_CONVS`: 6 for GLIP-T, 8 for GLIP-L).
        early_fusion (`bool`, *optional*, defaults to `True`):
            Deep vision-language fusion in every head block (`FUSE_CONFIG.EARLY_FUSE_ON`; `False` for GLIP-T (A)).
        use_fused_text_for_dot_product (`bool`, *optional*, defaults to `True`):
            Score tokens with the head-updated text features (`FUSE_CONFIG.USE_FUSED_FEATURES_DOT_PRODUCT`);
            `False` uses BERT's masked last layer (GLIP-T (A)). Requires `early_fusion`.
        fusion_hidden_size (`int`, *optional*, defaults to 2048):
            Width of the bi-directional cross-attention (hard-coded 2048 in the official `VLFuse`).
        fusion_num_heads (`int`, *optional*, defaults to 8):
            Heads of the bi-directional cross-attention (hard-coded 8 in the official `VLFuse`).
        fusion_dropout (`float`, *optional*, defaults to 0.1):
            Dropout on both attention-probability tensors of the fusion (training only).
        fusion_layer_scale_init (`float`, *optional*):
            Initial layer-scale value of the fusion residuals; `None` means `1 / num_head_blocks` (official).
        fusion_implementation (`str`, *optional*, defaults to `"factorised"`):
            How the fusion attention is computed: `"factorised"` (the fast path) folds the query projection into the
            text keys and the output projection into the text values and applies the vision value projection after
            the attention (the official result up to float rounding, ~1e-6, see `GLIPBiMultiHeadAttention`);
            `"official"` is the official operation order (2048-wide vision projections), the computation the
            parity tests pin (`detect(..., official_mode=True)` selects it for one call). A saved config without
            this field (every folder saved while `"official"` was the default and not changed) loads with the
            current default, `"factorised"`.
        deformable_conv_implementation (`str`, *optional*, defaults to `"gather"`):
            How the head's modulated deformable convolutions run: `"gather"` (the fast path,
            `modeling_glip.gather_deform_conv2d`: torchvision's bilinear sampling, operation for operation, as row
            gathers on a channels-last copy of the map, then one matrix product; the official result up to the
            product's summation order, ~1e-6 relative) or `"torchvision"` (`torchvision.ops.deform_conv2d`, the
            official CUDA kernel's computation, what the parity tests pin; `detect(..., official_mode=True)` selects
            it for one call). Measured on 2 CPU cores at 800x1333, GLIP-T: see the README's speed table. A saved
            config without this field loads with the current default, `"gather"`.
        head_group_norm_groups (`int`, *optional*, defaults to 16):
            GroupNorm groups after each deformable conv (`MODEL.GROUP_NORM.NUM_GROUPS`).
        head_use_deformable_conv (`bool`, *optional*, defaults to `True`):
            Modulated deformable 3x3 convs with predicted offsets in the head's DyConv (`MODEL.DYHEAD.USE_DFCONV`,
            on in every released GLIP). `False` uses plain 3x3 convs and no offset branch, as the official code does
            with `USE_DFCONV: False`; on CPU that halves the training step of small models (deformable-conv backward
            dominates there).
        anchor_strides (`list[int]`, *optional*, defaults to `[8, 16, 32, 64, 128]`):
            Strides of P3..P7 (`MODEL.RPN.ANCHOR_STRIDE`).
        anchor_sizes (`list[int]`, *optional*, defaults to `[64, 128, 256, 512, 1024]`):
            One square anchor per location and level (`MODEL.RPN.ANCHOR_SIZES`).
        box_coder_weights (`list[float]`, *optional*, defaults to `[10.0, 10.0, 5.0, 5.0]`):
            Weights of the ATSS box coder (hard-coded in `vldyhead.py::BoxCoder`).
        prior_prob (`float`, *optional*, defaults to 0.01):
            Initial foreground probability; sets `bias0 = -log((1 - p) / p)` (`MODEL.DYHEAD.PRIOR_PROB`).
        log_scale_init (`float`, *optional*, defaults to 0.0):
            Initial value of the learnable logit temperature `log_scale` (`MODEL.DYHEAD.LOG_SCALE`).
        max_text_length (`int`, *optional*, defaults to 256):
            Token length the processor pads prompts to (`MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN`). The model itself
            accepts any length up to the text model's `max_position_embeddings`.
        pre_nms_score_threshold (`float`, *optional*, defaults to 0.05):
            Candidates must have a mean token probability above this (`MODEL.ATSS.INFERENCE_TH`).
        pre_nms_top_n (`int`, *optional*, defaults to 1000):
            Candidates kept per level before NMS (`MODEL.ATSS.PRE_NMS_TOP_N`).
        nms_threshold (`float`, *optional*, defaults to 0.6):
            IoU threshold of the class-aware NMS (`MODEL.ATSS.NMS_TH`).
        max_detections (`int`, *optional*, defaults to 100):
            Detections kept per image (`MODEL.ATSS.DETECTIONS_PER_IMG`).
        chunk_merge_mode (`str`, *optional*, defaults to `"cross_chunk_nms"`):
            How the detections of the prompts of one image are merged when its labels do not fit in one prompt
            (large vocabularies): `"cross_chunk_nms"` drops a detection that a better one of ANOTHER prompt overlaps
            (IoU > `nms_threshold`); `"concatenate"` is the official chunked evaluation (plain concatenation). The
            post-processing values above and this one are the defaults of every inference path ([`detect`], the
            pipeline, `GLIPProcessor.post_process_grounded_object_detection`).
        atss_topk (`int`, *optional*, defaults to 9):
            Candidate anchors per level and box in the ATSS assignment (`MODEL.ATSS.TOPK`).
        focal_alpha (`float`, *optional*, defaults to 0.25):
            Alpha of the token sigmoid focal loss (`FUSE_CONFIG.TOKEN_ALPHA`).
        focal_gamma (`float`, *optional*, defaults to 2.0):
            Gamma of the token sigmoid focal loss (`FUSE_CONFIG.TOKEN_GAMMA`).
        token_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the dot-product token loss (`FUSE_CONFIG.DOT_PRODUCT_TOKEN_LOSS_WEIGHT`).
        regression_loss_weight (`float`, *optional*, defaults to 2.0):
            Weight of the centerness-weighted GIoU loss (`MODEL.ATSS.REG_LOSS_WEIGHT`).
        centerness_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the centerness BCE loss (1 in the official code).
        fpn_drop_block_prob (`float`, *optional*, defaults to 0.3):
            DropBlock probability on the merged FPN features of P3/P4 during training (`MODEL.FPN.DROP_PROB`).
        fpn_drop_block_size (`int`, *optional*, defaults to 3):
            DropBlock block size (`MODEL.FPN.DROP_SIZE`).
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialiser of linear layers built from scratch.
        prompt_tuning_length (`int`, *optional*, defaults to 0):
            Rows of the learnable prompt offsets `prompt_offsets` `(prompt_tuning_length, text_hidden_size)`,
            zero-initialised and added position-wise to the BERT features before the head (official
            `FUSE_CONFIG.ADD_LINEAR_LAYER`, `rpn.tunable_linear.weight`, 1000 rows; prompt tuning,
            `finetuning_glip.py`). 0 means no offsets. Prompts may not be longer than this when it is set.
    """

    model_type = "glip"
    sub_configs = {"backbone_config": SwinConfig, "text_config": BertConfig}

    def __init__(
        self,
        backbone_config: dict | SwinConfig | None = None,
        text_config: dict | BertConfig | None = None,
        fpn_channels: int = 256,
        num_head_blocks: int = 6,
        early_fusion: bool = True,
        use_fused_text_for_dot_product: bool = True,
        fusion_hidden_size: int = 2048,
        fusion_num_heads: int = 8,
        fusion_dropout: float = 0.1,
        fusion_layer_scale_init: float | None = None,
        fusion_implementation: str = "factorised",
        deformable_conv_implementation: str = "gather",
        head_group_norm_groups: int = 16,
        head_use_deformable_conv: bool = True,
        anchor_strides: list[int] | tuple[int, ...] = (8, 16, 32, 64, 128),
        anchor_sizes: list[int] | tuple[int, ...] = (64, 128, 256, 512, 1024),
        box_coder_weights: list[float] | tuple[float, ...] = (10.0, 10.0, 5.0, 5.0),
        prior_prob: float = 0.01,
        log_scale_init: float = 0.0,
        max_text_length: int = 256,
        pre_nms_score_threshold: float = 0.05,
        pre_nms_top_n: int = 1000,
        nms_threshold: float = 0.6,
        max_detections: int = 100,
        chunk_merge_mode: str = "cross_chunk_nms",
        atss_topk: int = 9,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        token_loss_weight: float = 1.0,
        regression_loss_weight: float = 2.0,
        centerness_loss_weight: float = 1.0,
        fpn_drop_block_prob: float = 0.3,
        fpn_drop_block_size: int = 3,
        initializer_range: float = 0.02,
        prompt_tuning_length: int = 0,
        **kwargs,
    ):
        self.backbone_config = _as_config(backbone_config, SwinConfig, _swin_tiny_backbone_config(), "backbone_config")
        self.text_config = _as_config(text_config, BertConfig, _bert_base_uncased_text_config(), "text_config")
        self.fpn_channels = fpn_channels
        self.num_head_blocks = num_head_blocks
        self.early_fusion = early_fusion
        self.use_fused_text_for_dot_product = use_fused_text_for_dot_product
        self.fusion_hidden_size = fusion_hidden_size
        self.fusion_num_heads = fusion_num_heads
        self.fusion_dropout = fusion_dropout
        self.fusion_layer_scale_init = fusion_layer_scale_init
        self.fusion_implementation = fusion_implementation
        self.deformable_conv_implementation = deformable_conv_implementation
        self.head_group_norm_groups = head_group_norm_groups
        self.head_use_deformable_conv = head_use_deformable_conv
        self.anchor_strides = list(anchor_strides)
        self.anchor_sizes = list(anchor_sizes)
        self.box_coder_weights = [
            float(weight) if isinstance(weight, int) and not isinstance(weight, bool) else weight
            for weight in box_coder_weights
        ]
        self.prior_prob = prior_prob
        self.log_scale_init = log_scale_init
        self.max_text_length = max_text_length
        self.pre_nms_score_threshold = pre_nms_score_threshold
        self.pre_nms_top_n = pre_nms_top_n
        self.nms_threshold = nms_threshold
        self.max_detections = max_detections
        self.chunk_merge_mode = chunk_merge_mode
        self.atss_topk = atss_topk
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.token_loss_weight = token_loss_weight
        self.regression_loss_weight = regression_loss_weight
        self.centerness_loss_weight = centerness_loss_weight
        self.fpn_drop_block_prob = fpn_drop_block_prob
        self.fpn_drop_block_size = fpn_drop_block_size
        self.initializer_range = initializer_range
        self.prompt_tuning_length = prompt_tuning_length
        if __name__.split(".")[0] == PACKAGE_NAME:
            # `custom_pipelines` (written by `hub_glip.add_remote_code_files`) is for the copy of this code a saved
            # folder carries (`trust_remote_code=True`); the installed package already makes GLIP's pipeline the
            # task's default, and keeping the entry would make `pipeline(task, model=folder)` demand
            # `trust_remote_code=True`.
            kwargs.pop("custom_pipelines", None)
        super().__init__(**kwargs)
        self.validate()

    # ------------------------------------------------------------------ derived sizes
    @property
    def backbone_stage_channels(self) -> list[int]:
        """Channels of the four Swin stages (`MODEL.SWINT.OUT_CHANNELS` = embed_dim * 2**stage)."""
        embed_dim = self.backbone_config.embed_dim
        return [embed_dim * 2**stage for stage in range(len(self.backbone_config.depths))]

    @property
    def text_hidden_size(self) -> int:
        """Width of the text features (`MODEL.LANGUAGE_BACKBONE.LANG_DIM` = BERT hidden size)."""
        return self.text_config.hidden_size

    @property
    def num_feature_levels(self) -> int:
        return len(self.anchor_strides)

    @property
    def layer_scale_init(self) -> float:
        """Layer-scale init of the fusion residuals; the official code uses `1 / NUM_CONVS`."""
        if self.fusion_layer_scale_init is not None:
            return self.fusion_layer_scale_init
        return 1.0 / self.num_head_blocks

    # ------------------------------------------------------------------ validation
    def _validate_field_types(self) -> None:
        """Raise `ValueError` naming the field for a value of the wrong type (e.g. `nms_threshold="high"`)."""

        def is_integer(value) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        def is_number(value) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        for name in INTEGER_FIELDS:
            value = getattr(self, name)
            if not is_integer(value):
                raise ValueError(f"GLIPConfig.{name} must be an integer, got {value!r} ({type(value).__name__}).")
        for name in NUMBER_FIELDS:
            value = getattr(self, name)
            if not is_number(value) or not math.isfinite(value):
                raise ValueError(f"GLIPConfig.{name} must be a finite number, got {value!r} ({type(value).__name__}).")
        for name in BOOLEAN_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ValueError(f"GLIPConfig.{name} must be True or False, got {value!r} ({type(value).__name__}).")
        if self.fusion_layer_scale_init is not None and not is_number(self.fusion_layer_scale_init):
            raise ValueError(
                f"GLIPConfig.fusion_layer_scale_init must be a number or None, got {self.fusion_layer_scale_init!r}."
            )
        for name, check, kind in (
            ("anchor_strides", is_integer, "integers"),
            ("anchor_sizes", is_number, "numbers"),
            ("box_coder_weights", is_number, "numbers"),
        ):
            values = getattr(self, name)
            if not all(check(value) for value in values):
                raise ValueError(f"GLIPConfig.{name} must be a list of {kind}, got {values!r}.")

    def validate(self) -> None:
        """Raise `ValueError` naming the field for a value of the wrong type or out of range, and for inconsistent
        sizes the official code silently requires."""
        self._validate_field_types()
        backbone = self.backbone_config
        if len(backbone.depths) != 4 or len(backbone.num_heads) != 4:
            raise ValueError(
                f"backbone_config needs 4 stages: got depths={list(backbone.depths)} and "
                f"num_heads={list(backbone.num_heads)}."
            )
        for stage, (channels, heads) in enumerate(zip(self.backbone_stage_channels, backbone.num_heads)):
            if channels % heads != 0:
                raise ValueError(
                    f"Swin stage {stage} width {channels} (embed_dim {backbone.embed_dim} * 2**{stage}) is not "
                    f"divisible by num_heads[{stage}]={heads}."
                )
        if backbone.window_size < 1:
            raise ValueError(f"backbone_config.window_size must be >= 1, got {backbone.window_size}.")
        if self.fpn_channels % self.head_group_norm_groups != 0:
            raise ValueError(
                f"fpn_channels={self.fpn_channels} must be divisible by head_group_norm_groups="
                f"{self.head_group_norm_groups} (GroupNorm in the head)."
            )
        if self.fpn_channels % 4 != 0:
            raise ValueError(f"fpn_channels={self.fpn_channels} must be divisible by 4 (DyReLU reduction 4).")
        if self.fusion_hidden_size % self.fusion_num_heads != 0:
            raise ValueError(
                f"fusion_hidden_size={self.fusion_hidden_size} must be divisible by fusion_num_heads="
                f"{self.fusion_num_heads}."
            )
        if self.text_config.hidden_size % self.text_config.num_attention_heads != 0:
            raise ValueError(
                f"text_config.hidden_size={self.text_config.hidden_size} must be divisible by "
                f"text_config.num_attention_heads={self.text_config.num_attention_heads}."
            )
        if self.prompt_tuning_length < 0:
            raise ValueError(
                f"prompt_tuning_length must be >= 0 (0 = no prompt offsets), got {self.prompt_tuning_length}."
            )
        if self.num_head_blocks < 1:
            raise ValueError(f"num_head_blocks must be >= 1, got {self.num_head_blocks}.")
        if self.use_fused_text_for_dot_product and not self.early_fusion:
            raise ValueError(
                "use_fused_text_for_dot_product=True needs early_fusion=True (there are no fused text features "
                "without fusion); GLIP-T (A) sets both to False."
            )
        if len(self.anchor_strides) != 5 or len(self.anchor_sizes) != 5:
            raise ValueError(
                f"anchor_strides and anchor_sizes need 5 entries (P3..P7): got {self.anchor_strides} and "
                f"{self.anchor_sizes}."
            )
        expected_strides = [2 ** (level + 3) for level in range(5)]
        if self.anchor_strides != expected_strides:
            raise ValueError(
                f"anchor_strides={self.anchor_strides} must be {expected_strides}: the Swin/FPN levels P3..P7 have "
                "these strides."
            )
        if len(self.box_coder_weights) != 4:
            raise ValueError(f"box_coder_weights needs 4 entries, got {self.box_coder_weights}.")
        if not 0.0 < self.prior_prob < 1.0:
            raise ValueError(f"prior_prob must be in (0, 1), got {self.prior_prob}.")
        if self.max_text_length > self.text_config.max_position_embeddings:
            raise ValueError(
                f"max_text_length={self.max_text_length} exceeds text_config.max_position_embeddings="
                f"{self.text_config.max_position_embeddings}."
            )
        if self.fusion_implementation not in ("factorised", "official"):
            raise ValueError(
                f"fusion_implementation must be 'factorised' or 'official', got {self.fusion_implementation!r}."
            )
        if self.deformable_conv_implementation not in ("gather", "torchvision"):
            raise ValueError(
                "deformable_conv_implementation must be 'gather' or 'torchvision', got "
                f"{self.deformable_conv_implementation!r}."
            )
        if self.chunk_merge_mode not in ("concatenate", "cross_chunk_nms"):
            raise ValueError(
                f"chunk_merge_mode must be 'concatenate' or 'cross_chunk_nms', got {self.chunk_merge_mode!r}."
            )
        if not 0.0 <= self.nms_threshold <= 1.0:
            raise ValueError(f"nms_threshold must be in [0, 1], got {self.nms_threshold}.")
        if not 0.0 <= self.pre_nms_score_threshold <= 1.0:
            raise ValueError(f"pre_nms_score_threshold must be in [0, 1], got {self.pre_nms_score_threshold}.")
        for name in ("fusion_dropout", "fpn_drop_block_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}.")
        for name in ("fpn_channels", "fusion_hidden_size", "fusion_num_heads", "head_group_norm_groups", "atss_topk"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.pre_nms_top_n < 1 or self.max_detections < 1:
            raise ValueError(
                f"pre_nms_top_n ({self.pre_nms_top_n}) and max_detections ({self.max_detections}) must be >= 1."
            )

    # ------------------------------------------------------------------ presets
    @classmethod
    def glip_t(cls, **kwargs) -> GLIPConfig:
        """GLIP-T (B), (C) and GLIP-T: Swin-T, 6 head blocks with deep fusion (`glip_Swin_T_O365_GoldG.yaml`)."""
        return cls(backbone_config=_swin_tiny_backbone_config(), **kwargs)

    @classmethod
    def glip_t_a(cls, **kwargs) -> GLIPConfig:
        """GLIP-T (A): GLIP-T without deep fusion (`glip_A_Swin_T_O365.yaml`)."""
        kwargs.setdefault("early_fusion", False)
        kwargs.setdefault("use_fused_text_for_dot_product", False)
        return cls(backbone_config=_swin_tiny_backbone_config(), **kwargs)

    @classmethod
    def glip_l(cls, **kwargs) -> GLIPConfig:
        """GLIP-L: Swin-L (window 12), 8 head blocks with deep fusion (`glip_Swin_L.yaml`)."""
        kwargs.setdefault("num_head_blocks", 8)
        return cls(backbone_config=_swin_large_backbone_config(), **kwargs)
