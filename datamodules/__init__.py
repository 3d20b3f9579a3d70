"""Data modules for the paper's two data sets and for your own (:class:`ArrayDataModule`), each
split held as one in-memory tensor and served as :class:`Batch` minibatches (datapoints and
their rows). Of ``lit_vae`` this package imports only the core's :mod:`lit_vae.checkout` and
:mod:`lit_vae.atomic`."""

from lit_vae.checkout import one_package
from lit_vae.datamodules.array import ArrayDataModule
from lit_vae.datamodules.batches import Batch, TensorBatches
from lit_vae.datamodules.files import CorruptDataError, DataNotFoundError
from lit_vae.datamodules.frey_face import FreyFaceDataModule
from lit_vae.datamodules.mnist import MNISTDataModule

__all__ = ["ArrayDataModule", "Batch", "CorruptDataError", "DataNotFoundError", "FreyFaceDataModule", "MNISTDataModule", "TensorBatches"]

one_package(__name__, "lit_vae.datamodules")  # `import datamodules` from the checkout's root: this package
