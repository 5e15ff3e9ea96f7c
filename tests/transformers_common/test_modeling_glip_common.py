"""transformers' own `ModelTesterMixin` and `ConfigTester` run on GLIP, as for a model in the transformers repo.

The mixins are imported from the transformers source distribution named by `TRANSFORMERS_TESTS_SOURCE` (see
`transformers_test_source.py`; `tools/run_transformers_common_tests.sh` sets it up); without it this module is
skipped. Template: `tests/models/grounding_dino/test_modeling_grounding_dino.py` of transformers. Like GroundingDino,
GLIP overrides the three mixin tests that read model-specific output names (`test_hidden_states_output`,
`test_attention_outputs`, `test_retain_grad_hidden_states_attentions`) with versions for GLIP's outputs, and builds
the labels of its head model in `_prepare_for_class`; it skips nothing that GroundingDino runs. GroundingDino has
no SDPA, so the mixin's eager-vs-SDPA test skips itself there; GLIP has, and runs a version of it for its outputs
(`test_eager_matches_sdpa_inference`, same parameterization and tolerances).
"""

from __future__ import annotations

import math
import tempfile
import unittest
from unittest import mock

import torch
from transformers_test_source import import_transformers_test_module

from transformers_glip import GLIPConfig, GLIPForGrounding, GLIPModel

modeling_common = import_transformers_test_module("test_modeling_common")
configuration_common = import_transformers_test_module("test_configuration_common")
ModelTesterMixin = modeling_common.ModelTesterMixin
ConfigTester = configuration_common.ConfigTester
floats_tensor = modeling_common.floats_tensor
ids_tensor = modeling_common.ids_tensor
torch_device = modeling_common.torch_device
parameterized = modeling_common.parameterized


class GLIPModelTester:
    """A tiny GLIP-T-like model (deep fusion in every head block) on 64x64 images and 7-token prompts."""

    def __init__(
        self,
        parent,
        batch_size=2,
        image_size=64,
        sequence_length=7,
        vocab_size=30,
        embed_dim=8,
        depths=(1, 1, 2, 1),
        num_heads=(1, 1, 2, 2),
        window_size=4,
        text_hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        fpn_channels=16,
        num_head_blocks=2,
        fusion_num_heads=2,
        num_boxes=2,
    ):
        self.parent = parent
        self.batch_size = batch_size
        self.image_size = image_size
        self.sequence_length = sequence_length
        self.vocab_size = vocab_size
        self.embed_dim = embed_dim
        self.depths = list(depths)
        self.num_heads = list(num_heads)
        self.window_size = window_size
        self.text_hidden_size = text_hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.fpn_channels = fpn_channels
        self.num_head_blocks = num_head_blocks
        self.fusion_num_heads = fusion_num_heads
        self.num_boxes = num_boxes
        self.is_training = True
        # P3..P7 of a 64x64 image: strides 8..128, sizes rounded up.
        self.level_sizes = [math.ceil(image_size / 2**level) for level in range(3, 8)]
        self.num_positions = sum(size * size for size in self.level_sizes)

    def get_config(self) -> GLIPConfig:
        return GLIPConfig(
            backbone_config={
                "embed_dim": self.embed_dim,
                "depths": self.depths,
                "num_heads": self.num_heads,
                "window_size": self.window_size,
                "drop_path_rate": 0.0,
            },
            text_config={
                "vocab_size": self.vocab_size,
                "hidden_size": self.text_hidden_size,
                "num_hidden_layers": self.num_hidden_layers,
                "num_attention_heads": self.num_attention_heads,
                "intermediate_size": 24,
                "max_position_embeddings": 32,
            },
            fpn_channels=self.fpn_channels,
            num_head_blocks=self.num_head_blocks,
            head_group_norm_groups=4,
            fusion_hidden_size=16,
            fusion_num_heads=self.fusion_num_heads,
            max_text_length=self.sequence_length,
        )

    def prepare_config_and_inputs(self):
        pixel_values = floats_tensor([self.batch_size, 3, self.image_size, self.image_size])
        input_ids = ids_tensor([self.batch_size, self.sequence_length], self.vocab_size)
        attention_mask = torch.ones_like(input_ids)
        attention_mask[-1, -2:] = 0  # one padded prompt
        return self.get_config(), pixel_values, input_ids, attention_mask

    def prepare_config_and_inputs_for_common(self):
        config, pixel_values, input_ids, attention_mask = self.prepare_config_and_inputs()
        return config, {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask}

    def labels(self) -> list[dict[str, torch.Tensor]]:
        """Per image `num_boxes` xyxy boxes (network-input pixels) and their token maps."""
        generator = torch.Generator().manual_seed(0)  # the same labels on every call
        labels = []
        for _ in range(self.batch_size):
            corners = torch.rand(self.num_boxes, 2, generator=generator).to(torch_device) * self.image_size / 2
            sizes = 8 + torch.rand(self.num_boxes, 2, generator=generator).to(torch_device) * self.image_size / 2
            positive_map = torch.zeros(self.num_boxes, self.sequence_length, device=torch_device)
            positive_map[torch.arange(self.num_boxes), 1 + torch.arange(self.num_boxes)] = 1.0
            labels.append({"boxes": torch.cat([corners, corners + sizes], dim=1), "positive_map": positive_map})
        return labels

    def create_and_check_grounding(self, config, pixel_values, input_ids, attention_mask):
        model = GLIPForGrounding(config).to(torch_device).eval()
        with torch.no_grad():
            result = model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask)
        self.parent.assertEqual(result.logits.shape, (self.batch_size, self.num_positions, self.sequence_length))
        self.parent.assertEqual(result.pred_boxes.shape, (self.batch_size, self.num_positions, 4))
        model.train()
        result = model(pixel_values=pixel_values, input_ids=input_ids, labels=self.labels())
        self.parent.assertEqual(result.loss.shape, ())
        self.parent.assertEqual(set(result.loss_dict), {"loss_reg", "loss_centerness", "loss_dot_product_token"})


class GLIPModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (GLIPModel, GLIPForGrounding)
    _is_composite = True  # BERT text model and Swin backbone sub-configs

    def setUp(self):
        self.model_tester = GLIPModelTester(self)
        self.config_tester = ConfigTester(
            self,
            config_class=GLIPConfig,
            has_text_modality=False,
            common_properties=["fpn_channels", "num_head_blocks", "fusion_num_heads"],
        )
        # The mixins tell base models from head models by transformers' table of the models it ships; `AutoModel.
        # register` (done by `import transformers_glip`) does not reach that table, so enter GLIP as a model in the
        # transformers repo would be.
        patcher = mock.patch.dict(modeling_common.MODEL_MAPPING_NAMES, {"glip": "GLIPModel"})
        patcher.start()
        self.addCleanup(patcher.stop)

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
        if return_labels and model_class is GLIPForGrounding:
            inputs_dict["labels"] = self.model_tester.labels()
        return inputs_dict

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_grounding_head(self):
        self.model_tester.create_and_check_grounding(*self.model_tester.prepare_config_and_inputs())

    # ------------------------------------------------------------------ overrides for GLIP's output names
    def test_hidden_states_output(self):
        tester = self.model_tester

        def check_hidden_states_output(inputs_dict, config, model_class):
            model = model_class(config).to(torch_device).eval()
            with torch.no_grad():
                outputs = model(**self._prepare_for_class(inputs_dict, model_class))

            backbone_states = outputs.backbone_hidden_states
            self.assertEqual(len(backbone_states), 3)
            for stage, state in enumerate(backbone_states, start=1):
                size = math.ceil(tester.image_size / 2 ** (stage + 2))
                expected = [tester.batch_size, tester.embed_dim * 2**stage, size, size]
                self.assertListEqual(list(state.shape), expected)

            pyramid_states = outputs.feature_pyramid_hidden_states
            self.assertListEqual(
                [list(state.shape) for state in pyramid_states],
                [[tester.batch_size, tester.fpn_channels, size, size] for size in tester.level_sizes],
            )

            text_states = outputs.text_hidden_states
            self.assertEqual(len(text_states), tester.num_hidden_layers + 1)
            for state in text_states:
                expected = [tester.batch_size, tester.sequence_length, tester.text_hidden_size]
                self.assertListEqual(list(state.shape), expected)

            for name in ("dyconv_hidden_states", "fusion_vision_hidden_states", "fusion_text_hidden_states"):
                self.assertEqual(len(getattr(outputs, name)), tester.num_head_blocks, name)
            for block_levels in outputs.dyconv_hidden_states:
                self.assertListEqual(
                    [list(level.shape[-2:]) for level in block_levels], [[size, size] for size in tester.level_sizes]
                )

        config, inputs_dict = tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            inputs_dict["output_hidden_states"] = True
            check_hidden_states_output(inputs_dict, config, model_class)

            # check that output_hidden_states also work using config
            del inputs_dict["output_hidden_states"]
            config.output_hidden_states = True
            check_hidden_states_output(inputs_dict, config, model_class)
            config.output_hidden_states = False

    def check_glip_attentions(self, outputs):
        tester = self.model_tester
        window_tokens = tester.window_size**2
        backbone_attentions = outputs.backbone_attentions
        self.assertEqual(len(backbone_attentions), sum(tester.depths))
        expected_heads = [heads for heads, depth in zip(tester.num_heads, tester.depths) for _ in range(depth)]
        for attention, heads in zip(backbone_attentions, expected_heads):
            self.assertListEqual(list(attention.shape[-3:]), [heads, window_tokens, window_tokens])

        text_attentions = outputs.text_attentions
        self.assertEqual(len(text_attentions), tester.num_hidden_layers)
        text_shape = [tester.batch_size, tester.num_attention_heads, tester.sequence_length, tester.sequence_length]
        for attention in text_attentions:
            self.assertListEqual(list(attention.shape), text_shape)

        self.assertEqual(len(outputs.fusion_attentions), tester.num_head_blocks)
        for vision_to_text, text_to_vision in outputs.fusion_attentions:
            self.assertListEqual(
                list(vision_to_text.shape),
                [tester.batch_size, tester.fusion_num_heads, tester.num_positions, tester.sequence_length],
            )
            self.assertListEqual(
                list(text_to_vision.shape),
                [tester.batch_size, tester.fusion_num_heads, tester.sequence_length, tester.num_positions],
            )
        self.assertEqual(len(outputs.head_text_attentions), tester.num_head_blocks)
        for attention in outputs.head_text_attentions:
            self.assertListEqual(list(attention.shape), text_shape)

        probabilities = [*backbone_attentions, *text_attentions, *outputs.head_text_attentions]
        probabilities += [tensor for pair in outputs.fusion_attentions for tensor in pair]
        for attention in probabilities:
            torch.testing.assert_close(attention.sum(-1), torch.ones_like(attention.sum(-1)))

    def test_attention_outputs(self):
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        config.return_dict = True
        # force eager attention to support output attentions (as the mixin's own test does)
        config._attn_implementation = "eager"
        for model_class in self.all_model_classes:
            inputs_dict["output_attentions"] = True
            inputs_dict["output_hidden_states"] = False
            model = model_class(config).to(torch_device).eval()
            with torch.no_grad():
                outputs = model(**self._prepare_for_class(inputs_dict, model_class))
            self.check_glip_attentions(outputs)
            self.assertIsNone(outputs.text_hidden_states)
            out_len = len(outputs)

            # check that output_attentions also work using config
            del inputs_dict["output_attentions"]
            attention_config = GLIPConfig.from_dict(config.to_dict())
            attention_config.output_attentions = True
            model = model_class(attention_config).to(torch_device).eval()
            with torch.no_grad():
                outputs = model(**self._prepare_for_class(inputs_dict, model_class))
            self.check_glip_attentions(outputs)
            self.assertEqual(len(outputs), out_len)

            # attentions come last, after the hidden states
            inputs_dict["output_attentions"] = True
            inputs_dict["output_hidden_states"] = True
            with torch.no_grad():
                outputs = model(**self._prepare_for_class(inputs_dict, model_class))
            self.check_glip_attentions(outputs)
            self.assertGreater(len(outputs), out_len)
            self.assertEqual(
                list(outputs.keys())[-4:],
                ["backbone_attentions", "text_attentions", "fusion_attentions", "head_text_attentions"],
            )

    def test_retain_grad_hidden_states_attentions(self):
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        config.output_hidden_states = True
        config.output_attentions = True

        # no need to test all models as different heads yield the same functionality
        model_class = self.all_model_classes[0]
        model = model_class(config).to(torch_device)
        outputs = model(**self._prepare_for_class(inputs_dict, model_class))

        backbone_hidden_states = outputs.backbone_hidden_states[0]
        text_hidden_states = outputs.text_hidden_states[0]
        backbone_attentions = outputs.backbone_attentions[0]
        vision_to_text, text_to_vision = outputs.fusion_attentions[0]
        head_text_attentions = outputs.head_text_attentions[0]
        retained = [
            backbone_hidden_states,
            text_hidden_states,
            backbone_attentions,
            vision_to_text,
            text_to_vision,
            head_text_attentions,
        ]
        for tensor in retained:
            tensor.retain_grad()

        outputs[0].flatten()[0].backward(retain_graph=True)

        for tensor in retained:
            self.assertIsNotNone(tensor.grad)

    # ------------------------------------------------------------------ eager vs SDPA
    @parameterized.expand(modeling_common.TEST_EAGER_MATCHES_SDPA_INFERENCE_PARAMETERIZATION)
    def test_eager_matches_sdpa_inference(
        self, name, dtype, padding_side, use_attention_mask, output_attentions, enable_kernels
    ):
        """The mixin's eager-vs-SDPA test for GLIP's outputs: its shared `_test_eager_matches_sdpa_inference` reads
        `outputs["hidden_states"]`, a field GLIP does not have. Same parameterization (dtype, padding side, with and
        without attention mask, SDPA kernels on/off, `output_attentions`) and the mixin's CPU/CUDA tolerances; it
        compares BERT's last layer and the token logits at the real (unpadded) token positions of the padded prompt,
        and every level of the FPN (the Swin attention runs through SDPA too)."""
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
        device = "cuda" if torch_device == "cuda" else "cpu"
        atol = {torch.float32: 1e-6, torch.float16: 5e-3, torch.bfloat16: 1e-2}[dtype]
        rtol = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 1e-2}[dtype]
        if device == "cuda" and enable_kernels and dtype == torch.bfloat16:
            rtol = 3e-2
        tester = self.model_tester
        # As the mixin's own test: a fixed seed (the inputs and weights do not depend on the tests run before) and
        # norm epsilons of 1.0, so that near-zero activations of the tiny random model do not turn the float
        # rounding of the two attention kernels into a flaky 1e-6 failure.
        modeling_common.set_seed(42)
        config, inputs_dict = tester.prepare_config_and_inputs_for_common()
        modeling_common.set_config_for_less_flaky_test(config)
        attention_mask = torch.ones_like(inputs_dict["input_ids"])
        real_tokens = torch.ones_like(attention_mask, dtype=torch.bool)
        if use_attention_mask:
            padded = slice(0, 2) if padding_side == "left" else slice(tester.sequence_length - 2, None)
            attention_mask[-1, padded] = 0
            real_tokens[-1, padded] = False
        inputs = {
            "pixel_values": inputs_dict["pixel_values"].to(dtype),
            "input_ids": inputs_dict["input_ids"],
            "attention_mask": attention_mask if use_attention_mask else None,
            "output_hidden_states": True,
            "output_attentions": output_attentions,
        }
        # GLIPModel only: GLIPForGrounding runs it and then decodes boxes, with no attention of its own.
        for model_class in (GLIPModel,):
            model = model_class(config)
            with tempfile.TemporaryDirectory() as directory:
                model.save_pretrained(directory)
                model_eager = model_class.from_pretrained(directory, dtype=dtype, attn_implementation="eager")
                model_sdpa = model_class.from_pretrained(directory, dtype=dtype, attn_implementation="sdpa")
            model_eager, model_sdpa = model_eager.to(torch_device).eval(), model_sdpa.to(torch_device).eval()
            modeling_common.set_model_for_less_flaky_test(model_eager)
            modeling_common.set_model_for_less_flaky_test(model_sdpa)
            self.assertEqual(model_sdpa.text_model.config._attn_implementation, "sdpa")
            with (
                torch.no_grad(),
                modeling_common.sdpa_kernel(
                    enable_flash=enable_kernels, enable_math=True, enable_mem_efficient=enable_kernels
                ),
            ):
                prepared = {
                    key: value.to(torch_device) if isinstance(value, torch.Tensor) else value
                    for key, value in inputs.items()
                }
                outputs_eager = model_eager(**prepared)
                outputs_sdpa = model_sdpa(**prepared)

            compared = {
                "text_last_hidden_state": (
                    outputs_eager.text_last_hidden_state[real_tokens],
                    outputs_sdpa.text_last_hidden_state[real_tokens],
                ),
                # (batch, num_anchors, seq_len) -> (num_anchors, num_real_tokens) over the batch
                "logits": (
                    outputs_eager.logits.transpose(1, 2)[real_tokens],
                    outputs_sdpa.logits.transpose(1, 2)[real_tokens],
                ),
            }
            for level, (eager_level, sdpa_level) in enumerate(
                zip(outputs_eager.feature_pyramid_hidden_states, outputs_sdpa.feature_pyramid_hidden_states)
            ):
                compared[f"P{level + 3}"] = (eager_level, sdpa_level)
            for key, (eager_values, sdpa_values) in compared.items():
                eager_values, sdpa_values = eager_values.float().cpu(), sdpa_values.float().cpu()
                key_atol = atol
                if dtype == torch.bfloat16:  # as the mixin: bf16 tolerance scales with the output magnitude
                    key_atol = max(atol, 3e-2 * float(torch.max(eager_values.abs().amax(), sdpa_values.abs().amax())))
                torch.testing.assert_close(
                    sdpa_values,
                    eager_values,
                    atol=key_atol,
                    rtol=rtol,
                    msg=lambda message, key=key: f"{key}: {message}",
                )
