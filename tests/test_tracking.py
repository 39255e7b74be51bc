"""--track mlflow: params, metrics and artifacts in a local MLflow store."""

import json
import sys

import pytest

from seemore.cli import main
from seemore.errors import UserError
from seemore.tracking import MLflowRun, flatten

mlflow = pytest.importorskip("mlflow")


def test_a_tracked_run_logs_params_metrics_and_artifacts(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run"
    assert main(["train", "--preset", "tiny", "--track", "mlflow", "--out", str(out),
                 "--no-progress", "train.steps=6", "train.log_every=2",
                 "train.final_eval_scenes=2"]) == 0
    saved = json.loads((out / "mlflow.json").read_text())
    assert saved["tracking_uri"] == f"sqlite:///{(out / 'mlflow.db').resolve()}"
    client = mlflow.MlflowClient(tracking_uri=saved["tracking_uri"])
    run = client.get_run(saved["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.steps"] == "6" and run.data.params["preset"] == "tiny"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [0, 2, 4, 5]
    assert "eval.test.vqa_accuracy.overall" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model.safetensors", "config.json", "eval.json", "curves.png"} <= artifacts


def test_the_tracking_uri_obeys_the_environment(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    (tmp_path / "run0").mkdir()
    tracker = MLflowRun(tmp_path / "run0", {"a": {"b": 1}})
    assert json.loads((tmp_path / "run0" / "mlflow.json").read_text())["tracking_uri"] == uri
    tracker.log_metrics({"val": {"accuracy": 0.5, "note": "text is skipped"}}, step=3)
    history = mlflow.MlflowClient(tracking_uri=uri).get_metric_history(tracker.run_id,
                                                                       "val.accuracy")
    assert [(m.step, m.value) for m in history] == [(3, 0.5)]
    assert flatten({"a": {"b": 1, "c": {"d": 2}}}) == {"a.b": 1, "a.c.d": 2}


def test_a_clear_message_without_mlflow(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now fails
    with pytest.raises(UserError, match=r'pip install "seemore\[mlflow\]"'):
        MLflowRun(tmp_path)


def test_a_tracked_vq_run_logs_its_folder_without_a_tokenizer(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "vq"
    assert main(["train", "--preset", "tiny", "--recipe", "vq", "--track", "mlflow", "--out",
                 str(out), "--no-progress", "train.steps=4", "train.final_eval_scenes=2"]) == 0
    saved = json.loads((out / "mlflow.json").read_text())
    client = mlflow.MlflowClient(tracking_uri=saved["tracking_uri"])
    artifacts = {a.path for a in client.list_artifacts(saved["run_id"])}
    assert {"model.safetensors", "config.json", "metrics.jsonl"} <= artifacts
    assert "eval.test.psnr" in client.get_run(saved["run_id"]).data.metrics
