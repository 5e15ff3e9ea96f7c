"""Evaluation of GLIP, one module per role (needs the `train` extras: pycocotools, 🤗 evaluate, datasets, matplotlib).

| module | role |
|---|---|
| `metrics` | COCO box AP, LVIS AP (APr/APc/APf, FixedAP), Flickr30K Recall@k by pycocotools (`add_batch`) |
| `evaluate_metrics` | the same metrics as 🤗 `evaluate.Metric`s (`evaluate.load(metric_script_path("coco"), ...)`) |
| `suite` | datasets (COCO, LVIS, Flickr, ODinW-style suites), prompts, process split, reports (`evaluate.py`) |
| `coco` | the training script's held-out COCO evaluation (AP, AP50, seen / never-seen shapes-world categories) |

Every path runs the inference post-processing (`GLIPProcessor.post_process_grounded_object_detection`), so what is
measured is what users get. Library code never imports accelerate: scripts split the images across processes and
gather the predictions.
"""

__all__: list[str] = []
