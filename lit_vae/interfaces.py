"""What the callbacks and the CLI rely on in a model and a data module, as protocols; the
evaluation-mode context they share; and the error that stops a run on a non-finite state.

Callbacks depend on these, never on ``VAE``, ``MCEM`` or a data module class, so a new model
or data set works with them by having these members.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

import torch
from torch import Tensor, nn


@runtime_checkable
class GenerativeModelLike(Protocol):
    """What every callback reads from a model: the x axis of Figures 2 and 3 (training samples
    evaluated, before and after the latest step) and p(x|z) p(z)."""

    samples_evaluated: int
    samples_before_step: int

    @property
    def device(self) -> torch.device: ...
    @property
    def latent_dim(self) -> int: ...
    @property
    def has_encoder(self) -> bool: ...
    @property
    def max_log_likelihood(self) -> float: ...
    def prior_sample(self, n: int, generator: torch.Generator | None = None) -> Tensor: ...
    def decode_mean(self, z: Tensor) -> Tensor: ...
    def log_joint(self, x: Tensor, z: Tensor) -> Tensor: ...


class RecognitionModel(Protocol):
    """What is read from a model with ``has_encoder``: q(z|x), the lower bound, and the test
    evaluation that ``test`` and the lower-bound callback share: measured as a value by
    ``evaluate``, logged by ``log_evaluation``."""

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]: ...
    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor: ...
    def log_joint(self, x: Tensor, z: Tensor) -> Tensor: ...
    def lower_bound(self, x: Tensor, num_samples: int = 1, generator: torch.Generator | None = None) -> Tensor: ...
    def evaluate(self, batches: Iterable[Any]) -> Any: ...
    def log_evaluation(self, split: str, evaluation: Any) -> None: ...


def model_of(module: object) -> GenerativeModelLike:
    """A callback's ``pl_module`` as the model it reads (checked once, at setup, by :func:`require_model`)."""
    return cast(GenerativeModelLike, module)


def recognition_of(module: object) -> RecognitionModel:
    """A model with ``has_encoder`` as a :class:`RecognitionModel`."""
    return cast(RecognitionModel, module)


def require_model(module: object, reader: str) -> None:
    """``TypeError`` saying what is missing if ``module`` is not :class:`GenerativeModelLike`."""
    if not isinstance(module, GenerativeModelLike):
        members = ("samples_evaluated, samples_before_step, latent_dim, has_encoder, max_log_likelihood, prior_sample, "
                   "decode_mean, log_joint")
        raise TypeError(f"{reader} reads {members} from the model, and {type(module).__name__} lacks some of them: "
                        "build it on lit_vae.generative.GenerativeModel (see lit_vae.interfaces)")


@runtime_checkable
class SplitData(Protocol):
    """A data module whose splits (``train``, ``test``, ...) are ``[N, D]`` tensors of images of
    ``image_shape`` (rows, columns), loaded by ``setup``, with their labels where it has them;
    ``predict`` serves ``predict_split``."""

    splits: dict[str, Tensor]
    image_shape: tuple[int, int]
    predict_split: str

    def setup(self, stage: str | None = None) -> None: ...
    def labels(self, split: str) -> Tensor | None: ...


@contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode for the block, then back in the mode it was in, also when the
    block raises."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


class NonFiniteError(RuntimeError):
    """Training met a non-finite loss or non-finite parameters. The run stops before the broken
    state is used for an update or written to a checkpoint, so the last checkpoint stays good."""


class TrainingModel(Protocol):
    """What :func:`non_finite_message` reads: a LightningModule with ``samples_evaluated``."""

    samples_evaluated: int

    @property
    def global_step(self) -> int: ...
    @property
    def trainer(self) -> Any: ...
    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]: ...


def non_finite_message(model: TrainingModel, what: str) -> str:
    """Which step of ``model``'s training (a LightningModule with ``samples_evaluated``), how far
    it got, what broke, and whether a good checkpoint exists to resume from, and where."""
    broken = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    cause = (f"the parameters {', '.join(broken)} are not finite: the update of step {model.global_step} "
             "had a non-finite gradient" if broken else what)
    writer = model.trainer.checkpoint_callback
    last = Path(writer.dirpath) / f"{writer.CHECKPOINT_NAME_LAST}{writer.FILE_EXTENSION}" if writer and writer.dirpath else None
    saved = (f"the last checkpoint written, {last}, holds the last good state (resume with --ckpt_path last)"
             if last is not None and last.is_file() else "no checkpoint was written before it, so there is none to resume from")
    return (f"training step {model.global_step + 1} (after {model.samples_evaluated:,} training samples): {cause}. "
            f"The run stops here without writing a checkpoint of this state; {saved}. "
            "A smaller --model.init_args.learning_rate usually avoids this.")
