"""`evaluate.load` scripts of the GLIP metrics (see `transformers_glip.evaluation_metrics_glip.metric_script_path`).

Each script imports exactly one `evaluate.Metric` subclass: `evaluate.load` takes the first one it finds."""

__all__: list[str] = []
