"""Deprecated (0.1): ``MethodModel``, a run of a method outside the MAML family, is now the one
:class:`~metarec.recommend.run_model.RunModel` over any :class:`~metarec.methods.Fitted`; this
name goes in 0.3."""

from metarec.recommend.run_model import RunModel

__all__ = ["MethodModel"]

MethodModel = RunModel
