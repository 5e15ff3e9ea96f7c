"""transformers' own `ModelTesterMixin` and `ConfigTester` run on GLIP (template: GroundingDino's test)."""

from __future__ import annotations

import unittest

import torch
from transformers_test_source import import_transformers_test_module

from transformers_glip import GLIPConfig, GLIPForGrounding, GLIPModel

modeling_common = import_transformers_test_module("test_modeling_common")
configuration_common = import_transformers_test_module("test_configuration_common")
ModelTesterMixin = modeling_common.ModelTesterMixin
ConfigTester = configuration_common.ConfigTester
floats_tensor = modeling_common.floats_tensor
ids_tensor = modeling_common.ids_tensor


class GLIPModelTester:
    def __init__(self, parent, batch_size=2, image_size=64, sequence_length=7, vocab_size=30, num_head_blocks=2):
        self.parent = parent
        self.batch_size = batch_size
        self.image_size = image_size
        self.sequence_length = sequence_length
        self.vocab_size = vocab_size
        self.num_head_blocks = num_head_blocks
        self.is_training = True

    def get_config(self) -> GLIPConfig:
        return GLIPConfig(
            backbone_config={
                "embed_dim": 8,
                "depths": [1, 1, 2, 1],
                "num_heads": [1, 1, 2, 2],
                "window_size": 4,
                "drop_path_rate": 0.0,
            },
            text_config={
                "vocab_size": self.vocab_size,
                "hidden_size": 16,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "intermediate_size": 24,
                "max_position_embeddings": 32,
            },
            fpn_channels=16,
            num_head_blocks=self.num_head_blocks,
            head_group_norm_groups=4,
            fusion_hidden_size=16,
            fusion_num_heads=2,
            max_text_length=self.sequence_length,
        )

    def prepare_config_and_inputs(self):
        pixel_values = floats_tensor([self.batch_size, 3, self.image_size, self.image_size])
        input_ids = ids_tensor([self.batch_size, self.sequence_length], self.vocab_size)
        attention_mask = torch.ones_like(input_ids)
        attention_mask[-1, -2:] = 0
        return self.get_config(), pixel_values, input_ids, attention_mask

    def prepare_config_and_inputs_for_common(self):
        config, pixel_values, input_ids, attention_mask = self.prepare_config_and_inputs()
        return config, {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask}


class GLIPModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (GLIPModel, GLIPForGrounding)

    def setUp(self):
        self.model_tester = GLIPModelTester(self)
        self.config_tester = ConfigTester(self, config_class=GLIPConfig, has_text_modality=False)

    def test_config(self):
        self.config_tester.run_common_tests()
