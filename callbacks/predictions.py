"""What ``predict`` leaves: each datapoint's posterior, reconstruction and bound in one file, and
the posterior means as a TensorBoard Projector embedding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info

from lit_vae.interfaces import SplitData, require_model
from lit_vae.run_folder import RunFolder

#: The embedding's tag in the Projector tab.
PROJECTOR_TAG = "latent_mu"


class PredictionWriter(BasePredictionWriter):
    """Writes ``predictions_<split>.pt`` into the run's log folder (``_1``, ``_2``, ... where that
    name is taken: nothing is overwritten). Load it with ``torch.load(path, weights_only=True)``:
    a dict of

    - ``mu``, ``logvar``: q(z|x)'s mean and log sigma^2, ``[N, Nz]``;
    - ``reconstruction``: the decoder's mean at ``mu``, ``[N, D]`` (D = rows x columns of the images);
    - ``lower_bound``: the per-datapoint bound, ``[N]``, with ``test``'s noise;
    - ``index``: each row's position in the split, ``[N]`` (rows are in split order: ``index`` is
      ``0 .. N-1``); ``labels``: the class of each point, ``[N]``, where the data set has labels;
    - ``split`` and ``samples_evaluated`` (the checkpoint's training samples).

    With a TensorBoard logger, ``mu`` also goes to the Projector tab (tag ``latent_mu``, at the
    checkpoint's samples evaluated), with the labels as metadata and the images as sprites.

    Args:
        projector: whether to write the Projector embedding.
    """

    def __init__(self, projector: bool = True) -> None:
        super().__init__(write_interval="epoch")
        self.projector = projector

    def write_on_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Any,
                           batch_indices: Any) -> None:
        require_model(pl_module, type(self).__name__)
        data = getattr(trainer, "datamodule", None)
        split = data.predict_split if isinstance(data, SplitData) else "predict"
        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        result: dict[str, Any] = {key: torch.cat([batch[key] for batch in batches]).cpu() for key in batches[0]}
        order = result["index"].argsort()
        result = {key: value[order] for key, value in result.items()}
        labels = data.labels(split) if isinstance(data, SplitData) else None
        if labels is not None:
            result["labels"] = labels[result["index"]]
        result.update(split=split, samples_evaluated=pl_module.samples_evaluated)
        folder = RunFolder.writing_to(trainer).path
        suffix = f"_rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        path = _free_path(folder / f"predictions_{split}{suffix}.pt")
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(result, path)
        rank_zero_info(f"predict: {len(order):,} {split} points written to {path}")
        if self.projector and trainer.is_global_zero and isinstance(data, SplitData):
            self._embed(trainer, result, data.splits[split][result["index"]], data.image_shape)

    @staticmethod
    def _embed(trainer: pl.Trainer, result: dict[str, Any], images: torch.Tensor, shape: tuple[int, int]) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                labels = result.get("labels")
                logger.experiment.add_embedding(
                    result["mu"], metadata=None if labels is None else labels.tolist(), label_img=_square(images, shape),
                    global_step=result["samples_evaluated"], tag=PROJECTOR_TAG)
                logger.experiment.flush()
                rank_zero_info(f"predict: the Projector tab of TensorBoard shows mu (tag {PROJECTOR_TAG}), from {logger.log_dir}")


def _square(images: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """``[N, D]`` images of ``shape`` as ``[N, 1, S, S]`` in [0, 1], S the longer side, padded with
    black on both sides of the shorter one: the Projector's sprites are square."""
    rows, columns = shape
    side = max(shape)
    top, left = (side - rows) // 2, (side - columns) // 2
    pad = (left, side - columns - left, top, side - rows - top)
    return torch.nn.functional.pad(images.reshape(-1, 1, rows, columns).clamp(0, 1), pad)


def _free_path(path: Path) -> Path:
    """``path``, or the first of ``<stem>_1<suffix>``, ``<stem>_2<suffix>``, ... that does not exist."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}_{n}{path.suffix}")
    return candidate
