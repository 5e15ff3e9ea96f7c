"""Streaming training data for GLIP, one module per role.

| module | role |
|---|---|
| `records` | the common record schema every reader produces ([`GroundingSource`], skip / drop reasons) |
| `sources` | readers: COCO, MDETR/GoldG, ODVG, GLIP pseudo labels, the synthetic shapes world |
| `transform` | validation, od -> grounding prompts (negative sampling), multi-scale resize + flip, positive maps |
| `stream` | mixing, shuffling, splitting across processes, exact resume, skip counts ([`SkippedRecordCounter`]) |
| `collator` | padding and batching for `GLIPForGrounding` |
| `synthetic_shapes` | the generated grounding world (coloured shapes, captions, held-out combinations) |
| `streaming` | 🤗 `datasets` streaming: caption parquet / webdataset shards / Hub ids, 🤗 object-detection data |
| `pseudo_labeling` | self-training: a teacher grounds caption phrases into pseudo-label shards (import explicitly) |

Data flow: reader -> `GroundingSource` (🤗 `datasets.IterableDataset` of records) -> `GLIPTrainingStream` (mix,
shuffle, split, `GLIPTrainingTransform`) -> `torch.utils.data.DataLoader(collate_fn=GLIPTrainingCollator())`.
Box math comes from `transformers_glip.box_geometry_glip`, shared with inference.
"""

from .collator import GLIPTrainingCollator
from .records import BOX_DROP_REASONS, RECORD_SKIP_REASONS, GroundingSource, grounding_record_features
from .sources import (
    coco_detection_source,
    mdetr_grounding_source,
    odvg_source,
    pseudo_label_source,
    synthetic_shapes_source,
)
from .stream import GLIPTrainingStream, SkippedRecordCounter
from .streaming import detection_dataset_source, image_caption_source, load_streaming_dataset
from .synthetic_shapes import SyntheticShapesConfig, generate_synthetic_shapes
from .transform import GLIPTrainingTransform, detection_to_grounding

__all__ = [
    "BOX_DROP_REASONS",
    "GLIPTrainingCollator",
    "GLIPTrainingStream",
    "GLIPTrainingTransform",
    "GroundingSource",
    "RECORD_SKIP_REASONS",
    "SkippedRecordCounter",
    "SyntheticShapesConfig",
    "coco_detection_source",
    "detection_dataset_source",
    "detection_to_grounding",
    "generate_synthetic_shapes",
    "grounding_record_features",
    "image_caption_source",
    "load_streaming_dataset",
    "mdetr_grounding_source",
    "odvg_source",
    "pseudo_label_source",
    "synthetic_shapes_source",
]
