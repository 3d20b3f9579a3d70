"""Lower-bound curves of Figure 2: train and test, per datapoint, against samples evaluated."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lit_vae.callbacks.schedule import DEFAULT_MANTISSAS, LogSpacedSchedule
from lit_vae.interfaces import model_of, recognition_of, require_model
from lit_vae.logging import log_end_of_fit, log_evaluation


class LowerBoundCallback(pl.Callback):
    """Logs ``lower_bound/train`` and ``lower_bound/test`` with step = training samples evaluated.

    - ``lower_bound/train``: at the end of every complete pass through the training set, the
      mean per datapoint of that pass's minibatch estimates (a running estimate, like the
      paper's train curve; it lags the test curve early in training because the parameters
      improve during the pass). A pass cut short by the end of training is carried in the
      checkpoint and completed by a resumed run.
    - ``lower_bound/test``: the mean over the whole test split (``datamodule.test_dataloader()``)
      in eval mode, whenever training passes a point of the log-spaced schedule (1, 2, 5 x 10^k
      samples by default): the model's own :meth:`evaluate` and :meth:`log_evaluation`, so it
      is the number ``train.py test`` gives for the same state. A fit that ends off the schedule
      logs its final test evaluation too, into an event file of its own
      (:func:`~lit_vae.logging.log_end_of_fit`) that a resume from that end removes: TensorBoard
      and its HPARAMS tab show the number the console prints, and a run stopped there and resumed
      shows the points of the run that never stopped.

    Models without a recognition model (``has_encoder`` false: ``MCEM``) have no lower bound;
    for them it does nothing. Per step it only adds two tensors; means are reduced with
    torchmetrics, so they are over all ranks under DDP. The evaluation noise comes from the
    model's evaluation stream, never from the training one.

    Args:
        mantissas: the schedule's points are ``m x 10^k`` for each mantissa ``m``.
    """

    def __init__(self, mantissas: Sequence[float] = DEFAULT_MANTISSAS) -> None:
        self.schedule = LogSpacedSchedule(mantissas)
        self._sum = torch.zeros((), dtype=torch.float64)
        self._kl_sum = torch.zeros((), dtype=torch.float64)
        self._kl_known = True  # false for the pass that a checkpoint without its KL sums resumes
        self._count = 0
        self._last_test = -1
        self._active = True
        #: The latest test evaluation (the model's ``Evaluation``), on the schedule or at the fit's end.
        self.latest: Any = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        require_model(pl_module, type(self).__name__)
        self._strategy = trainer.strategy  # to reduce the pass means over ranks, and gather the sums into checkpoints
        self._rank_of_world = trainer.global_rank, trainer.world_size
        self._active = model_of(pl_module).has_encoder
        if not self._active:
            rank_zero_info(f"{type(pl_module).__name__} has no recognition model q(z|x), hence no lower bound: "
                           "lower_bound/* is not logged (the marginal likelihood is).")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self._active:
            return
        model = model_of(pl_module)
        bound, kl = outputs["lower_bound"], outputs.get("kl")
        if self._sum.device != bound.device:
            self._sum, self._kl_sum = self._sum.to(bound.device), self._kl_sum.to(bound.device)
        self._sum += bound.sum()
        if kl is not None:
            self._kl_sum += kl.sum()
        self._count += bound.numel()
        # The pass ends here, not in on_train_epoch_end: checkpoints written after this batch
        # (ModelCheckpoint runs after other callbacks) then hold the next pass's empty sums.
        if batch_idx + 1 == trainer.num_training_batches:
            value = self._pass_mean(self._sum)
            log_evaluation(pl_module, {"lower_bound/train": value}, model.samples_evaluated, prog_bar=True)
            if kl is not None and self._kl_known:
                kl_mean = self._pass_mean(self._kl_sum)
                log_evaluation(pl_module, {"kl/train": kl_mean, "reconstruction/train": value + kl_mean},
                               model.samples_evaluated)
            self._sum.zero_()
            self._kl_sum.zero_()
            self._count = 0
            self._kl_known = True
        if self.schedule.due(model.samples_before_step, model.samples_evaluated):
            evaluation = self.evaluate_test(trainer, pl_module)
            if evaluation is not None:
                recognition_of(pl_module).log_evaluation("test", evaluation)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        samples = model_of(pl_module).samples_evaluated
        if self._active and self._last_test != samples:
            evaluation = self.evaluate_test(trainer, pl_module)
            if evaluation is not None:
                log_end_of_fit(trainer, {"lower_bound/test": evaluation.lower_bound, **evaluation.terms("test")}, samples)
                rank_zero_info(f"lower_bound/test = {evaluation.lower_bound:.2f} nats per datapoint at the end of the fit "
                               f"({samples:,} samples)")

    def _pass_mean(self, total: torch.Tensor) -> float:
        """The pass's mean per datapoint of ``total`` (this rank's sum), over all ranks: one
        summing reduction of (sum, count), a no-op in one process (a tenth of a torchmetrics
        ``MeanMetric``'s cost, which showed at every Frey Face epoch of 16 minibatches)."""
        count = torch.tensor(float(self._count), dtype=total.dtype, device=total.device)
        summed = self._strategy.reduce(torch.stack([total, count]), reduce_op="sum")
        return (summed[0] / summed[1]).item()

    def evaluate_test(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Any:
        """The model's evaluation of the test split (``None``, with a warning, without a data
        module to give it); the latest one is :attr:`latest`."""
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None:
            rank_zero_warn("LowerBoundCallback needs a LightningDataModule for the test split; lower_bound/test is not logged.")
            return None
        self._last_test = model_of(pl_module).samples_evaluated
        self.latest = recognition_of(pl_module).evaluate(datamodule.test_dataloader())
        return self.latest

    def state_dict(self) -> dict[str, Any]:
        """The running sums of the pass in progress, one per rank (gathered: Lightning saves
        checkpoints from rank 0, and every rank called this), so that a resumed run continues
        each rank's sums and logs the pass's mean as the run that never stopped."""
        local = torch.stack([self._sum.to(torch.float64), torch.tensor(self._count, dtype=torch.float64, device=self._sum.device),
                             self._kl_sum.to(torch.float64)])
        gathered = self._strategy.all_gather(local).reshape(-1, 3).cpu()
        return {"sum": gathered[:, 0].tolist(), "count": [int(c) for c in gathered[:, 1]], "kl_sum": gathered[:, 2].tolist(),
                "last_test": self._last_test}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # A checkpoint written before the KL term was logged has no kl_sum: that pass's KL is not logged.
        self._kl_known = "kl_sum" in state_dict
        sums, counts = ([value] if not isinstance(value, list) else value for value in (state_dict["sum"], state_dict["count"]))
        kl_sums = state_dict.get("kl_sum", [0.0] * len(sums))
        rank, world_size = self._rank_of_world
        if len(sums) != world_size:  # saved by another number of processes: the pass's whole sums on rank 0
            sums, counts, kl_sums = ([sum(values)] + [0] * (world_size - 1) for values in (sums, counts, kl_sums))
        self._sum = torch.tensor(sums[rank], dtype=torch.float64)
        self._kl_sum = torch.tensor(kl_sums[rank], dtype=torch.float64)
        self._count = counts[rank]
        self._last_test = state_dict["last_test"]
