"""The run directory: its file format and checkpoints (:mod:`metarec.runs.checkpoint`), the data
fingerprint that binds a run to its data (:mod:`metarec.runs.fingerprint`) and the load-time
checks on what a run folder may ask for (:mod:`metarec.runs.guard`)."""
