"""GLIP Flickr30K Entities phrase grounding Recall@k,
for `evaluate.load(path_to_this_file, annotation_file=...)` (the ground truth json path or dict).

The metric itself is [`GLIPFlickrGroundingEvaluationMetric`] of `transformers_glip.evaluation.evaluate_metrics`."""

from transformers_glip.evaluation.evaluate_metrics import GLIPFlickrGroundingEvaluationMetric

__all__ = ["GLIPFlickrGroundingEvaluationMetric"]
