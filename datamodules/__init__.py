"""Data modules for the paper's two data sets, each split held as one in-memory tensor."""

from datamodules.batches import TensorBatches
from datamodules.files import CorruptDataError, DataNotFoundError
from datamodules.frey_face import FreyFaceDataModule
from datamodules.mnist import MNISTDataModule

__all__ = ["CorruptDataError", "DataNotFoundError", "FreyFaceDataModule", "MNISTDataModule", "TensorBatches"]
