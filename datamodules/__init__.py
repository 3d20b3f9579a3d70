"""Data modules for the paper's two data sets, each split held as one in-memory tensor and served
as :class:`Batch` minibatches (datapoints and their rows). This package imports nothing else of
``lit_vae``: it is the bottom layer."""

from lit_vae.datamodules.batches import Batch, TensorBatches
from lit_vae.datamodules.files import CorruptDataError, DataNotFoundError
from lit_vae.datamodules.frey_face import FreyFaceDataModule
from lit_vae.datamodules.mnist import MNISTDataModule

__all__ = ["Batch", "CorruptDataError", "DataNotFoundError", "FreyFaceDataModule", "MNISTDataModule", "TensorBatches"]
