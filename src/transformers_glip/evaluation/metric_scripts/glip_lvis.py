"""GLIP LVIS box AP (APr/APc/APf, FixedAP),
for `evaluate.load(path_to_this_file, annotation_file=...)` (the ground truth json path or dict).

The metric itself is [`GLIPLvisEvaluationMetric`] of `transformers_glip.evaluation.evaluate_metrics`."""

from transformers_glip.evaluation.evaluate_metrics import GLIPLvisEvaluationMetric

__all__ = ["GLIPLvisEvaluationMetric"]
