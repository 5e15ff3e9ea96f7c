"""GLIP COCO box AP,
for `evaluate.load(path_to_this_file, annotation_file=...)` (the ground truth json path or dict).

The metric itself is [`GLIPCocoEvaluationMetric`] of `transformers_glip.evaluation.evaluate_metrics`."""

from transformers_glip.evaluation.evaluate_metrics import GLIPCocoEvaluationMetric

__all__ = ["GLIPCocoEvaluationMetric"]
