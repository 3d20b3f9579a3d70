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
