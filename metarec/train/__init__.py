"""Meta-training: the outer loop (:mod:`metarec.train.loop`), what a run is built from
(:mod:`metarec.train.setup`), its files (:mod:`metarec.train.files`), the hold on the run
directory (:mod:`metarec.train.session`), data-parallel training
(:mod:`metarec.train.distributed`) and the optional loggers (:mod:`metarec.train.loggers`)."""
