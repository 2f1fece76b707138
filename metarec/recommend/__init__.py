"""The fast-adapt API: a trained run + a sparse support set -> an adapted recommender.

:func:`~metarec.recommend.load.load_run` opens a run directory of any method,
``.adapt(support)`` fits it to cold users or a new domain, and the recommender predicts and
recommends by raw id (:mod:`metarec.recommend.recommender`); support input of every form is
parsed by :mod:`metarec.recommend.support`."""
