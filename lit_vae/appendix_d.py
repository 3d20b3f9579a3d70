"""The marginal-likelihood protocol of Appendix D as one frozen settings object, used by the
estimators (``lit_vae.marginal_likelihood``), the callback that logs them and the benchmark.
Its defaults are the paper's but for one addition of ours, the HMC step jitter; the paper's
protocol as printed is :data:`PAPER_APPENDIX_D`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MarginalLikelihoodSettings:
    """Settings of the Appendix D estimate of log p(x), and of its importance-sampling check.

    Args:
        num_datapoints: points of each split evaluated (the paper: 1,000).
        num_samples: posterior samples per datapoint from HMC (the paper: 50); each half fits the q(z)
            that scores the other.
        num_leapfrog: leapfrog steps per HMC iteration (the paper: 4).
        burn_in: HMC iterations that adapt the step size, then are discarded.
        target_accept: acceptance rate the step size is adapted toward (the paper: 0.9).
        step_jitter: each HMC iteration's step size is drawn from [1 - j, 1 + j] times the
            adapted one (ours, not the paper's: 4 leapfrog steps of a fixed size carry a chain
            on a near-Gaussian posterior to near its mirror point and back, so its samples
            cover little of the posterior; docs/results.md, "Figure 3").
        importance_samples: samples of the importance-sampling estimate with q(z|x).
        prior_draws: prior draws searched for the chains' starting points of a model without
            an encoder (MCEM).
    """

    num_datapoints: int = 1_000
    num_samples: int = 50
    num_leapfrog: int = 4
    burn_in: int = 50
    target_accept: float = 0.9
    step_jitter: float = 0.5
    importance_samples: int = 1_000
    prior_draws: int = 1_000

    def __post_init__(self) -> None:
        for name in ("num_datapoints", "num_leapfrog", "importance_samples", "prior_draws"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_samples < 4:
            raise ValueError(f"num_samples must be at least 4 (half to fit q, half to evaluate), got {self.num_samples}")
        if self.burn_in < 0:
            raise ValueError(f"burn_in must be >= 0, got {self.burn_in}")
        if not 0 <= self.step_jitter < 1:
            raise ValueError(f"step_jitter must be in [0, 1), got {self.step_jitter}")
        if not 0 < self.target_accept < 1:
            raise ValueError(f"target_accept must be in (0, 1), got {self.target_accept}")


#: What the estimators and the callback use unless told otherwise: Appendix D with the step jitter.
DEFAULT_SETTINGS = MarginalLikelihoodSettings()
#: Appendix D as printed: a fixed step size after the burn-in (no jitter).
PAPER_APPENDIX_D = MarginalLikelihoodSettings(step_jitter=0.0)
