"""The paper's baselines (Section 5): the wake-sleep algorithm and Monte Carlo EM (Appendix E)."""

from lit_vae.baselines.mcem import MCEM
from lit_vae.baselines.wake_sleep import WakeSleep

__all__ = ["MCEM", "WakeSleep"]
