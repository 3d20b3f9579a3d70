"""lit-vae: Auto-Encoding Variational Bayes (Kingma & Welling, 2013) in PyTorch Lightning."""

from lit_vae.estimators import kl_to_standard_normal, reparameterize, sgvb_a, sgvb_b
from lit_vae.model import VAE

__all__ = ["VAE", "kl_to_standard_normal", "reparameterize", "sgvb_a", "sgvb_b"]
