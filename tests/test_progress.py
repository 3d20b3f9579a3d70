"""The console's progress bar: samples evaluated among its numbers."""

from types import SimpleNamespace

from lit_vae.callbacks import SamplesProgressBar


def test_the_bar_shows_samples_evaluated_beside_the_logged_numbers():
    trainer = SimpleNamespace(progress_bar_metrics={"lower_bound/test": -101.5}, loggers=[])
    metrics = SamplesProgressBar().get_metrics(trainer, SimpleNamespace(samples_evaluated=1_234_500))
    assert metrics == {"samples": "1,234,500", "lower_bound/test": -101.5}
