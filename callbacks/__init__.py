"""Callbacks that log the paper's quantities against training samples evaluated."""

from callbacks.lower_bound import LowerBoundCallback
from callbacks.marginal_likelihood import MarginalLikelihoodCallback
from callbacks.schedule import LogSpacedSchedule

__all__ = ["LogSpacedSchedule", "LowerBoundCallback", "MarginalLikelihoodCallback"]
