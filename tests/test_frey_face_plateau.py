"""The paper's wake-sleep Frey Face curve is flat at about 578.6 (train) / 569.3 (test) nats
(``shared/paper/figure2.csv``). That is the lower bound of a model whose decoder ignores z: an
independent Gaussian per pixel fitted to the training pixels / 256, with the usual log(2 pi)
constant (its q(z|x) can equal the prior, so the KL term is 0), on the paper's split (numpy's
seeded shuffle, the default). The project's earlier ``torch_randperm`` split gives another test
set, easier by 6.7 nats. The closed forms are computed here in float64 from the splits."""

import math

import numpy as np
import pytest
import torch

from lit_vae.datamodules import FreyFaceDataModule
from lit_vae.networks import GaussianMLPDecoder


@pytest.mark.parametrize(("split", "plateau_train", "plateau_test"),
                         [("numpy_shuffle", 578.62, 569.34), ("torch_randperm", 577.08, 575.99)])
def test_the_plateau_is_the_bound_of_a_decoder_that_ignores_z(data_dir, split, plateau_train, plateau_test):
    data = FreyFaceDataModule(data_dir=str(data_dir), download=False, split=split)
    data.setup()
    train, test = data.splits["train"].double().numpy(), data.splits["test"].double().numpy()
    mean, var = train.mean(0), train.var(0)  # the maximum-likelihood Gaussian of each pixel
    # At its own maximum-likelihood fit, a Gaussian's mean log density is -(log(2 pi var) + 1) / 2.
    closed_train = float(np.sum(-0.5 * (np.log(2 * math.pi * var) + 1)))
    closed_test = float((-0.5 * (np.log(2 * math.pi * var) + (test - mean) ** 2 / var)).sum(1).mean())
    assert closed_train == pytest.approx(plateau_train, abs=0.01)
    assert closed_test == pytest.approx(plateau_test, abs=0.01)
    # The project's Eq. 12 density gives the same numbers for that decoder (KL = 0: q = prior).
    params = (torch.from_numpy(mean), torch.from_numpy(np.log(var)))
    assert GaussianMLPDecoder.log_prob(torch.from_numpy(train), params).mean().item() == pytest.approx(closed_train, abs=1e-6)
    assert GaussianMLPDecoder.log_prob(torch.from_numpy(test), params).mean().item() == pytest.approx(closed_test, abs=1e-6)
