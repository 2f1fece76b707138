"""The ``metarec`` command line (:mod:`metarec.cli.main`) and the main job, ``metarec demo``
(:mod:`metarec.cli.demo`)."""

from metarec.cli.main import main

__all__ = ["main"]
