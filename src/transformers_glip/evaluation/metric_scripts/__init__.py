"""`evaluate.load` scripts of the GLIP metrics (see `evaluation.evaluate_metrics.metric_script_path`).

Each script imports exactly one `evaluate.Metric` subclass: `evaluate.load` takes the first one it finds."""

__all__: list[str] = []
