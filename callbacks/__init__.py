"""Callbacks: the paper's quantities logged against training samples evaluated, pictures, and
checkpoints. They know a model by the members of ``lit_vae.interfaces`` they read, never by its
class (a contract of the layers check)."""

from lit_vae.callbacks.checkpoint import RunCheckpoint, RunState
from lit_vae.callbacks.checkpoint_files import AtomicCheckpointIO
from lit_vae.callbacks.images import ImagesCallback
from lit_vae.callbacks.lower_bound import LowerBoundCallback
from lit_vae.callbacks.marginal_likelihood import MarginalLikelihoodCallback
from lit_vae.callbacks.predictions import PredictionWriter
from lit_vae.callbacks.progress import ProgressFile, SamplesProgressBar
from lit_vae.callbacks.schedule import LogSpacedSchedule
from lit_vae.checkout import one_package

__all__ = ["AtomicCheckpointIO", "ImagesCallback", "LogSpacedSchedule", "LowerBoundCallback", "MarginalLikelihoodCallback",
           "PredictionWriter", "ProgressFile", "RunCheckpoint", "RunState", "SamplesProgressBar"]

one_package(__name__, "lit_vae.callbacks")  # `import callbacks` from the checkout's root: this package
