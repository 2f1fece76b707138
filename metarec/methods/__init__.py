"""The method interface shared by every method (see :mod:`metarec.methods.base`)."""

from metarec.methods.base import (
    Adapted,
    FitData,
    Fitted,
    Method,
    MethodFactory,
    build_method,
    method_names,
    register_method,
)

__all__ = [
    "Adapted",
    "FitData",
    "Fitted",
    "Method",
    "MethodFactory",
    "build_method",
    "method_names",
    "register_method",
]
