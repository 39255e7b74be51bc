"""Experiment tracking with MLflow (`--track mlflow`, train.track=mlflow), next to the
always-on metrics.jsonl.

A run logs its whole config as params, the training and val figures as metrics (by step),
and at the end its model folder, eval.json and curves as artifacts. The tracking URI is
MLFLOW_TRACKING_URI when set, else a SQLite store inside the run folder
(``sqlite:///RUN/mlflow.db``, artifacts in RUN/mlflow-artifacts); `mlflow ui
--backend-store-uri sqlite:///RUN/mlflow.db` shows it. The run's MLflow id is kept in
RUN/mlflow.json, so that evaluation after training logs into the same MLflow run.

MLflow is an optional extra: pip install "seemore[mlflow]".
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from seemore.errors import UserError

EXPERIMENT = "seemore"


def _mlflow():
    try:
        import mlflow
    except ImportError:
        raise UserError('--track mlflow needs MLflow: pip install "seemore[mlflow]" (or '
                        "pip install mlflow-skinny sqlalchemy alembic)") from None
    return mlflow


def flatten(d: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


class MLflowRun:
    """One seemore run as one MLflow run: started, or taken up again, from a run folder."""

    def __init__(self, run_dir: Path, params: dict | None = None):
        self.mlflow = _mlflow()
        self.run_dir = Path(run_dir)
        record = self.run_dir / "mlflow.json"
        if record.is_file():
            saved = json.loads(record.read_text())
            uri, run_id = saved["tracking_uri"], saved["run_id"]
        else:
            uri, run_id = (os.environ.get("MLFLOW_TRACKING_URI")
                           or f"sqlite:///{self.run_dir.resolve() / 'mlflow.db'}"), None
        self.client = self.mlflow.MlflowClient(tracking_uri=uri)
        if run_id is None:
            experiment = self.client.get_experiment_by_name(EXPERIMENT)
            experiment_id = experiment.experiment_id if experiment else (
                self.client.create_experiment(EXPERIMENT, artifact_location=(
                    None if "MLFLOW_TRACKING_URI" in os.environ
                    else (self.run_dir.resolve() / "mlflow-artifacts").as_uri())))
            run_id = self.client.create_run(experiment_id, run_name=self.run_dir.name).info.run_id
            record.write_text(json.dumps({"tracking_uri": uri, "run_id": run_id}) + "\n")
            entities = self.mlflow.entities
            pairs = sorted(flatten(params or {}).items())
            for i in range(0, len(pairs), 100):  # MLflow takes 100 params per batch
                self.client.log_batch(run_id, params=[
                    entities.Param(k, str(v)[:6000]) for k, v in pairs[i:i + 100]])
        self.run_id = run_id

    def log_metrics(self, metrics: dict, step: int) -> None:
        """Every number in metrics (nested keys joined with dots) at this step."""
        now = int(time.time() * 1000)
        batch = [self.mlflow.entities.Metric(k, float(v), now, step)
                 for k, v in flatten(metrics).items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[i:i + 1000])

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def finish(self) -> None:
        self.client.set_terminated(self.run_id)
