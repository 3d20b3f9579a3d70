"""The dashboard in a logger other than TensorBoard: Lightning's ``CSVLogger``, ``MLFlowLogger``
(a real MLflow file store) and ``WandbLogger`` (offline, read back from W&B's own run file) get
the same scalars at the same steps (training samples evaluated), the hyperparameters, and the
pictures where the logger takes them; one line says what only TensorBoard shows, and each run's
files (config, checkpoints, pictures) go to the run's own folder, never the folder all of a
logger's runs share."""

import csv
import json
import logging
import subprocess
import sys

import pytest
import yaml

from lit_vae.cli import cli
from tests.helpers import REPO

pytestmark = pytest.mark.slow


def csv_fit(tmp_path, data_dir, *args):
    return cli(["fit", "--config", str(REPO / "configs" / "mnist.yaml"), f"--data.init_args.data_dir={data_dir}",
                "--trainer.logger=lightning.pytorch.loggers.CSVLogger", f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
                "--model.init_args.latent_dim=2", "--model.init_args.hidden_dim=50", "--progress_bar.refresh_rate=0",
                "--trainer.enable_model_summary=false", *args])


def read_rows(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_a_resume_keeps_the_csv_rows_up_to_its_checkpoint(tmp_path, data_dir):
    """Lightning's CSV writer deletes an existing metrics.csv when it starts: a resume lost every
    row before it. Rows past the checkpoint (a killed run's) are dropped; the resume logs them again."""
    csv_fit(tmp_path, data_dir, "--trainer.max_steps=500")
    metrics = tmp_path / "runs" / "mnist_nz2" / "version_0" / "metrics.csv"
    before = read_rows(metrics)
    with open(metrics, "a", newline="") as file:  # as if logged after the checkpoint, then killed
        csv.DictWriter(file, fieldnames=list(before[0])).writerow({**dict.fromkeys(before[0], ""), "step": "70000",
                                                                   "lower_bound/test": "-1.0"})
    csv_fit(tmp_path, data_dir, "--trainer.max_steps=1000", "--ckpt_path=last")
    after = read_rows(metrics)
    assert [{k: v for k, v in row.items() if v} for row in after[: len(before)]] == [
        {k: v for k, v in row.items() if v} for row in before]
    assert "-1.0" not in [row.get("lower_bound/test") for row in after]
    assert max(int(row["step"]) for row in after) == 100_000 and not list(metrics.parent.glob(".metrics.csv*"))


def test_csv_logger_gets_the_scalars_at_samples_evaluated_and_the_hyperparameters(tmp_path, data_dir, caplog):
    with caplog.at_level(logging.INFO):
        cli(["fit", "--config", str(REPO / "configs" / "mnist.yaml"), f"--data.init_args.data_dir={data_dir}",
             "--trainer.logger=lightning.pytorch.loggers.CSVLogger", f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
             "--model.init_args.latent_dim=2", "--model.init_args.hidden_dim=50", "--trainer.max_steps=500",
             "--progress_bar.refresh_rate=0", "--trainer.enable_model_summary=false"])
    run = tmp_path / "runs" / "mnist_nz2" / "version_0"
    with open(run / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    steps = {tag: {int(row["step"]) for row in rows if row.get(tag)} for tag in ("lower_bound/test", "lower_bound/train", "kl/test")}
    assert max(steps["lower_bound/test"]) == 50_000  # 500 steps of M = 100: the x axis is samples, not steps
    assert steps["lower_bound/test"] == steps["kl/test"] and steps["lower_bound/train"]
    assert all(step % 100 == 0 for step in steps["lower_bound/test"])
    assert yaml.safe_load((run / "hparams.yaml").read_text())["latent_dim"] == 2
    assert {p.name for p in (run / "images").iterdir()} >= {"samples_50000.png", "reconstructions_50000.png"}
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("CSVLogger:")]
    assert "TensorBoard's only" in line


def logger_fit(tmp_path, data_dir, logger, *args):
    return cli(["fit", "--config", str(REPO / "configs" / "mnist.yaml"), f"--data.init_args.data_dir={data_dir}",
                f"--trainer.logger=lightning.pytorch.loggers.{logger}", "--model.init_args.latent_dim=2",
                "--model.init_args.hidden_dim=50", "--trainer.max_steps=500", "--progress_bar.refresh_rate=0",
                "--trainer.enable_model_summary=false", *args])


def test_mlflow_file_store_gets_the_scalars_pictures_and_hyperparameters_of_each_run(tmp_path, data_dir, caplog, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for this to use a file store
    store = tmp_path / "mlruns"
    location = [f"--trainer.logger.init_args.tracking_uri=file:{store}", f"--trainer.logger.init_args.save_dir={store}"]
    with caplog.at_level(logging.INFO):
        logger_fit(tmp_path, data_dir, "MLFlowLogger", *location)
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("MLFlowLogger:")]
    assert "pictures are logged there" in line and "histograms and the projector are TensorBoard's only" in line
    logger_fit(tmp_path, data_dir, "MLFlowLogger", *location, "--trainer.max_steps=200")  # a second run, same store
    client = MlflowClient(tracking_uri=f"file:{store}")
    (experiment,) = client.search_experiments(filter_string="name = 'lightning_logs'")
    first, second = sorted(client.search_runs([experiment.experiment_id]), key=lambda run: run.info.start_time)
    steps = {tag: {m.step for m in client.get_metric_history(first.info.run_id, tag)} for tag in ("lower_bound/test", "kl/test")}
    assert max(steps["lower_bound/test"]) == 50_000 and steps["lower_bound/test"] == steps["kl/test"]
    assert all(step % 100 == 0 for step in steps["lower_bound/test"])
    assert first.data.params["latent_dim"] == "2"
    pictures = [f.path for f in client.list_artifacts(first.info.run_id, "images")]
    assert any("samples+step+50000" in path for path in pictures) and any("manifold+step+100+" in path for path in pictures)
    assert max(m.step for m in client.get_metric_history(second.info.run_id, "lower_bound/test")) == 20_000
    for run in (first, second):  # each run's own files in that run's folder of the store
        folder = store / experiment.experiment_id / run.info.run_id
        assert {"config.yaml", "checkpoints", "images"} <= {p.name for p in folder.iterdir()}
    assert not (store / "images").exists() and not (store / "config.yaml").exists()


def wandb_records(run_dir):
    """The records of an offline W&B run, read by W&B's own reader of its run file."""
    out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_dir)],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_wandb_offline_run_gets_the_scalars_pictures_and_hyperparameters(tmp_path, data_dir, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger_fit(tmp_path, data_dir, "WandbLogger", "--trainer.logger.init_args.offline=true",
               f"--trainer.logger.init_args.save_dir={tmp_path}")
    wandb.finish()  # as the end of `train.py fit`'s process does: the last records reach the file
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    records = wandb_records(run_dir)
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    steps = {item["trainer/global_step"] for item in history if "lower_bound/test" in item}
    assert max(steps) == 50_000 and all(step % 100 == 0 for step in steps)
    pictures = {item["trainer/global_step"] for item in history if "images/samples.filenames" in item}
    assert {100, 50_000} <= pictures
    config = {}
    for record in records:
        if record["type"] == "config":
            config.update(record["config"]["update"])
    assert config["latent_dim"] == 2
    run_id = run_dir.name.rpartition("-")[2]
    assert {"config.yaml", "checkpoints", "images"} <= {p.name for p in (tmp_path / "lightning_logs" / run_id).iterdir()}
