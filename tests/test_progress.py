"""The console's progress bar: samples evaluated among its numbers, and one bar for a fit
bounded by steps."""

from types import SimpleNamespace

import lightning.pytorch as pl
import torch

from datamodules.base import InMemoryDataModule
from lit_vae.callbacks import SamplesProgressBar
from lit_vae.model import VAE


def test_the_bar_shows_samples_evaluated_beside_the_logged_numbers():
    trainer = SimpleNamespace(progress_bar_metrics={"lower_bound/test": -101.5}, loggers=[])
    metrics = SamplesProgressBar().get_metrics(trainer, SimpleNamespace(samples_evaluated=1_234_500))
    assert metrics == {"samples": "1,234,500", "lower_bound/test": -101.5}


class Points(InMemoryDataModule):
    """200 random points in [0, 1]^8: four minibatches of 50 a pass."""

    def __init__(self) -> None:
        super().__init__(batch_size=50, eval_batch_size=50, seed=0)
        self.image_shape = (1, 8)

    def load_splits(self):
        points = torch.rand(200, 8, generator=torch.Generator().manual_seed(0))
        return {"train": points, "test": points}


class BarAtEpochStart(pl.Callback):
    """Where the training bar stands when each epoch starts (after the bar's own hooks)."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int | None, int]] = []

    def on_train_epoch_start(self, trainer, pl_module):
        bar = trainer.progress_bar_callback.train_progress_bar
        self.seen.append((id(bar), bar.total, bar.n))


def fit(tmp_path, bar, seen, **bounds):
    torch.manual_seed(0)
    model = VAE(input_dim=8, latent_dim=2, hidden_dim=4, train_size=200, likelihood="bernoulli")
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_model_summary=False,
                         callbacks=[bar, seen], default_root_dir=tmp_path, **bounds)
    trainer.fit(model, datamodule=Points())
    return trainer


def test_a_fit_bounded_by_steps_has_one_bar_that_counts_to_max_steps(tmp_path):
    bar, seen = SamplesProgressBar(), BarAtEpochStart()
    fit(tmp_path, bar, seen, max_steps=10)
    assert [(total, n) for _, total, n in seen.seen] == [(10, 0), (10, 4), (10, 8)]
    assert len({ident for ident, _, _ in seen.seen}) == 1
    assert bar.train_progress_bar.n == 10
    assert bar.train_progress_bar.desc.startswith("Training")


def test_a_fit_bounded_by_epochs_keeps_lightnings_bar_per_epoch(tmp_path):
    bar, seen = SamplesProgressBar(), BarAtEpochStart()
    fit(tmp_path, bar, seen, max_epochs=2)
    assert [(total, n) for _, total, n in seen.seen] == [(4, 0), (4, 0)]
    assert bar.train_progress_bar.desc.startswith("Epoch 1")
