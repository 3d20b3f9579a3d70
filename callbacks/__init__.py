"""Callbacks that log the paper's quantities against training samples evaluated."""

from callbacks.images import ImagesCallback
from callbacks.lower_bound import LowerBoundCallback
from callbacks.marginal_likelihood import MarginalLikelihoodCallback
from callbacks.schedule import LogSpacedSchedule

__all__ = ["ImagesCallback", "LogSpacedSchedule", "LowerBoundCallback", "MarginalLikelihoodCallback"]
