"""The gradient-based meta-learners (the MAML family) as methods (:mod:`metarec.methods.engine.method`)
and their run directories (:mod:`metarec.methods.engine.run_files`)."""

from metarec.methods.engine.method import EngineAdapted, EngineFitted, EngineMethod, engine_scenario

__all__ = ["EngineAdapted", "EngineFitted", "EngineMethod", "engine_scenario"]
