"""The dashboard in a logger other than TensorBoard: Lightning's ``CSVLogger`` gets the same
scalars at the same steps (training samples evaluated) and the hyperparameters; one line says
what only TensorBoard shows, and the pictures are still saved in the run folder."""

import csv
import logging

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
