"""metarec's tasks and parameter split in other libraries' terms: a ``torch.utils.data``
dataset of meta-batches (:class:`TaskDataset`) and learn2learn interop
(:func:`metarec.interop.learn2learn.maml_step`)."""

from metarec.interop.learn2learn import fast_parameters, l2l_maml, maml_step
from metarec.interop.torch_data import TaskDataset

__all__ = ["TaskDataset", "fast_parameters", "l2l_maml", "maml_step"]
