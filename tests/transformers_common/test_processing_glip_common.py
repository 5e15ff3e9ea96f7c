"""transformers' own `ProcessorTesterMixin` run on `GLIPProcessor` (template: GroundingDino's test).

Needs `TRANSFORMERS_TESTS_SOURCE` (see `transformers_test_source.py`); skipped with the reason when it is unset.
"""

import sys
import types
import unittest
from pathlib import Path

from transformers_test_source import import_transformers_test_module

# The sdist's common tests import `fetch_hub_objects_for_ci.url_to_local_path` from transformers' `utils/` folder,
# which the sdist does not ship; it maps Hub URLs to a CI cache. Stand-in: the identity (the URLs are only read by
# the chat-template tests, which skip: GLIP has no chat template).
if "fetch_hub_objects_for_ci" not in sys.modules:
    sys.modules["fetch_hub_objects_for_ci"] = types.ModuleType("fetch_hub_objects_for_ci")
    sys.modules["fetch_hub_objects_for_ci"].url_to_local_path = lambda url: url

processing_common = import_transformers_test_module("test_processing_common")

from transformers import BertTokenizer  # noqa: E402

from transformers_glip import GLIPImageProcessor, GLIPProcessor  # noqa: E402

# The BERT (bert-base-uncased vocabulary) tokenizer of the official fixture.
TOKENIZER_FOLDER = Path(__file__).resolve().parents[1] / "fixtures" / "tiny_a" / "bert"


class GLIPProcessorTest(processing_common.ProcessorTesterMixin, unittest.TestCase):
    processor_class = GLIPProcessor

    @classmethod
    def _setup_image_processor(cls):
        # A small evaluation size keeps the 30x400 test images fast.
        return GLIPImageProcessor(size={"shortest_edge": 32, "longest_edge": 320})

    @classmethod
    def _setup_tokenizer(cls):
        return BertTokenizer.from_pretrained(TOKENIZER_FOLDER)

    def prepare_text_inputs(self, batch_size: int | None = None, **kwargs):
        # As GroundingDino's test: GLIP's text is a label list per image (a flat list = one image's labels).
        labels = ["a cat", "remote control"]
        labels_longer = ["a person", "a car", "a dog", "a cat"]
        if batch_size is None:
            return labels
        if batch_size < 1:
            raise ValueError("batch_size must be greater than 0")
        if batch_size == 1:
            return [labels]
        return [labels, labels_longer] + [labels] * (batch_size - 2)

    def _prepare_modality_input(self, modality: str, batch_size: int | None = None):
        if modality == "text" and batch_size is None:
            # `test_subprocessor_defaults` compares the processor with the bare tokenizer on the same text: give
            # both the prompt GLIP builds from the labels (a flat label list is one image's labels for GLIP, as for
            # GroundingDino, but a batch of two texts for the tokenizer).
            return "a cat. remote control"
        return super()._prepare_modality_input(modality, batch_size)

    def test_processor_text_has_no_visual(self):
        # Overwritten, as GroundingDino's test overwrites it: GLIP's text is nested (label lists), and every prompt
        # is the prompt of ONE image, so a batch where a sample has no image is refused (the images would shift
        # onto the wrong prompts) while a text-only call works.
        processor = self.get_processor()
        text = self.prepare_text_inputs(batch_size=3)
        image_inputs_nested = [[image] for image in self.prepare_images_inputs(batch_size=3)]
        processing_kwargs = {"return_tensors": "pt", "padding": True}
        inputs = processor(text=text, images=image_inputs_nested, **processing_kwargs)
        self.assertIn(self.text_input_name, inputs)
        self.assertEqual(inputs[self.images_input_name].shape[0], 3)

        text_only = processor(text=[["lower newer"]] + text[1:], **processing_kwargs)
        self.assertListEqual(inputs[self.text_input_name][1:].tolist(), text_only[self.text_input_name][1:].tolist())
        self.assertNotIn(self.images_input_name, text_only)

        image_inputs_nested[0] = []
        with self.assertRaisesRegex(ValueError, "2 images but 3 prompts"):
            processor(text=[["lower newer"]] + text[1:], images=image_inputs_nested, **processing_kwargs)
