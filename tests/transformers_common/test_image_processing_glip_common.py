"""transformers' own `ImageProcessingTestMixin` run on `GLIPImageProcessor` (template: GroundingDino's test).

Needs `TRANSFORMERS_TESTS_SOURCE` (see `transformers_test_source.py`); skipped with the reason when it is unset.
"""

import sys
import types
import unittest

from transformers_test_source import import_transformers_test_module

# The sdist's common tests import `fetch_hub_objects_for_ci.url_to_local_path` from transformers' `utils/` folder,
# which the sdist does not ship; it maps Hub URLs to a CI cache. Stand-in: the identity (only the tests that download
# an image use it, and they skip for a single backend before reaching it).
if "fetch_hub_objects_for_ci" not in sys.modules:
    sys.modules["fetch_hub_objects_for_ci"] = types.ModuleType("fetch_hub_objects_for_ci")
    sys.modules["fetch_hub_objects_for_ci"].url_to_local_path = lambda url: url

image_processing_common = import_transformers_test_module("test_image_processing_common")

from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING  # noqa: E402

from transformers_glip import GLIPConfig  # noqa: E402  (importing the package registers GLIP)


class GLIPImageProcessingTester(image_processing_common.ImageProcessingTester):
    def __init__(self, parent, **kwargs):
        # A small short side keeps the 7 random 30-400 px images fast (as GroundingDino's tester does); no rounding
        # of the padded size to multiples of 32, so the mixin's expected shape (the batch maximum) applies as is.
        kwargs.setdefault("size", {"shortest_edge": 18, "longest_edge": 1333})
        kwargs.setdefault("size_divisibility", 0)
        super().__init__(parent, **kwargs)

    def _get_image_processing_classes(self):
        # The mixin finds the classes by the test folder's name in transformers' own mapping; GLIP is registered by
        # the package instead (`AutoImageProcessor.register` in `transformers_glip/__init__.py`).
        return dict(IMAGE_PROCESSOR_MAPPING[GLIPConfig])


class GLIPImageProcessingTest(image_processing_common.ImageProcessingTestMixin, unittest.TestCase):
    image_processor_tester_class = GLIPImageProcessingTester

    def test_from_dict_with_legacy_integer_size(self):
        for image_processing_class in self.image_processing_classes.values():
            image_processor = image_processing_class.from_dict(self.image_processor_dict, size=42)
            self.assertEqual(image_processor.size, {"shortest_edge": 42, "longest_edge": 1333})

    def test_new_models_require_torchvision_backend(self):
        if "torchvision" in self.image_processing_classes:
            return super().test_new_models_require_torchvision_backend()
        self.skipTest(
            reason="GLIP's image processor is PIL-only on purpose: the official GLIP transform is a PIL bilinear "
            "resize of uint8 images, which a torchvision resize does not reproduce bit for bit (parity fixtures). "
            "This policy test of transformers (new models in the transformers repo must ship a torchvision "
            "backend) is not skipped by GroundingDino, which has one; a torchvision GLIPImageProcessor is future "
            "work."
        )
