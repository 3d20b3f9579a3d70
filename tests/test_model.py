"""The generative model base as its users see it: prior draws, hyperparameters through the
subclass chain, the evaluation-mode context, and what the callbacks require of a model."""

import lightning.pytorch as pl
import pytest
import torch

from lit_vae import VAE
from lit_vae.baselines import MCEM, WakeSleep
from lit_vae.callbacks import ImagesCallback, LowerBoundCallback, MarginalLikelihoodCallback
from lit_vae.interfaces import evaluating


class TestGenerativeModel:
    def test_prior_draws_follow_the_model_dtype(self):
        model = VAE(input_dim=12, hidden_dim=8, latent_dim=3).double()
        assert model.prior_sample(5).dtype == torch.float64
        assert model.sample(2).dtype == torch.float64

    def test_evaluating_restores_the_mode_when_the_block_raises(self):
        model = VAE(input_dim=12, hidden_dim=8, latent_dim=3).train()
        with pytest.raises(RuntimeError), evaluating(model):
            assert not model.training
            raise RuntimeError("inside")
        assert model.training
        with evaluating(model.eval()):
            pass
        assert not model.training

    def test_every_hyperparameter_is_saved_through_the_subclasses(self):
        assert set(VAE().hparams) == {"input_dim", "latent_dim", "hidden_dim", "hidden_dims", "likelihood", "learning_rate",
                                      "adagrad_warmup_batches", "train_size", "parameter_prior", "prior_on", "init_std",
                                      "encoder_logvar_scale", "decoder_logvar_bounded", "estimator", "num_samples"}
        assert WakeSleep(latent_dim=5).hparams.latent_dim == 5
        mcem = MCEM(hidden_dim=7, input_dim=10)
        assert (mcem.hparams.latent_dim, mcem.hparams.hidden_dim, mcem.hparams.input_dim, mcem.hparams.num_leapfrog) == (3, 7, 10, 10)
        assert not mcem.has_encoder and not hasattr(mcem, "encoder") and VAE().has_encoder


@pytest.mark.parametrize("callback", [LowerBoundCallback(), MarginalLikelihoodCallback(), ImagesCallback()])
def test_callbacks_refuse_a_model_without_the_interface_they_read(callback):
    with pytest.raises(TypeError, match="lacks some of them"):
        callback.setup(None, pl.LightningModule(), "fit")
