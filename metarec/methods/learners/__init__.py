"""The field's cold-start meta-learners, each a :class:`~metarec.methods.Method` registered by name.

Importing this package registers ``tanp``, ``mamo``, ``lwa``, ``nlba``, ``metaemb``, ``mwuf``,
``warmup-base``, ``metabridge``, ``maml-source-init``, ``reptile-source-init``, ``content-bias``,
``r2d2``, ``r2d2-source``, ``elae`` and ``metatower`` with
:func:`metarec.methods.register_method`; build one with
``build_method(name, scenario, **settings)`` and train it with ``fit(FitData(table, splits))``.

* :mod:`~metarec.methods.learners.tanp`: TaNP (amortised neural process, FiLM-modulated decoder).
* :mod:`~metarec.methods.learners.r2d2`: R2-D2 (a meta-learned body, the per-user head solved in closed form).
* :mod:`~metarec.methods.learners.r2d2_source`: the same head solved over a cold target user's support and
  their source-domain history together.
* :mod:`~metarec.methods.learners.elae`: an episodic linear autoencoder meta-trained in closed form
  on k-shot tasks to rank the catalogue for a cold user.
* :mod:`~metarec.methods.learners.metatower`: a two-tower retrieval meta-learner (the user tower reads
  the support set), meta-trained with a ranking loss; ranks cold items through their features.
* :mod:`~metarec.methods.learners.mamo`: MAMO (feature- and task-specific memories around MAML).
* :mod:`~metarec.methods.learners.lwa`: LWA and NLBA (class-conditioned amortised adaptation, implicit feedback).
* :mod:`~metarec.methods.learners.metaemb`: MetaEmb and MWUF (cold item embeddings over a base model).
* :mod:`~metarec.methods.learners.content_bias`: a rating baseline whose cold items are placed by their
  content (text embeddings first) through a ridge prior, adapted by a per-task offset.
* :mod:`~metarec.methods.learners.metabridge`: the TMCDR meta-bridge and MAML / Reptile with a
  source-history initialisation (users cold in a target domain).
"""

from metarec.methods.learners._loop import (
    LearnerAdapted,
    LearnerFitted,
    LearnerMethod,
    TrainSettings,
    evaluate_fitted,
    fit_learner,
)
from metarec.methods.learners.baseline import FeatureGlobal, GlobalSettings, make_feature_global
from metarec.methods.learners.content_bias import ContentBiasMethod, make_content_bias
from metarec.methods.learners.elae import ElaeFitted, ElaeMethod, ElaeSettings, make_elae
from metarec.methods.learners.lwa import LWA, NLBA, LWASettings, make_lwa, make_nlba
from metarec.methods.learners.mamo import MAMO, MAMOSettings, make_mamo
from metarec.methods.learners.metabridge import (
    BridgeSettings,
    SourceInit,
    TMCDRBridge,
    make_maml_source_init,
    make_metabridge,
    make_reptile_source_init,
)
from metarec.methods.learners.metaemb import (
    MWUF,
    ItemWarmup,
    MetaEmb,
    WarmupBase,
    WarmupSettings,
    make_metaemb,
    make_mwuf,
    make_warmup_base,
)
from metarec.methods.learners.metatower import (
    MetaTowerFitted,
    MetaTowerMethod,
    MetaTowerSettings,
    make_metatower,
)
from metarec.methods.learners.r2d2 import R2D2, R2D2Settings, make_r2d2
from metarec.methods.learners.r2d2_source import SourceR2D2, SourceR2D2Settings, make_r2d2_source
from metarec.methods.learners.tanp import TaNP, TaNPSettings, make_tanp

LEARNER_METHODS = (
    "feature-global",
    "tanp",
    "mamo",
    "lwa",
    "nlba",
    "warmup-base",
    "metaemb",
    "mwuf",
    "metabridge",
    "maml-source-init",
    "reptile-source-init",
    "content-bias",
    "r2d2",
    "r2d2-source",
    "elae",
    "metatower",
)
"""The methods this package registers: opt-in in ``metarec bench`` (``--algorithms tanp,...``),
since each needs a scenario of its kind (explicit or implicit feedback, cold items, two domains)."""

__all__ = [
    "LEARNER_METHODS",
    "ElaeFitted",
    "ElaeMethod",
    "ElaeSettings",
    "make_elae",
    "MetaTowerFitted",
    "MetaTowerMethod",
    "MetaTowerSettings",
    "make_metatower",
    "ContentBiasMethod",
    "make_content_bias",
    "LearnerAdapted",
    "LearnerFitted",
    "LearnerMethod",
    "TrainSettings",
    "evaluate_fitted",
    "fit_learner",
    "FeatureGlobal",
    "GlobalSettings",
    "make_feature_global",
    "LWA",
    "NLBA",
    "LWASettings",
    "make_lwa",
    "make_nlba",
    "BridgeSettings",
    "SourceInit",
    "TMCDRBridge",
    "make_maml_source_init",
    "make_metabridge",
    "make_reptile_source_init",
    "MAMO",
    "MAMOSettings",
    "make_mamo",
    "MWUF",
    "ItemWarmup",
    "MetaEmb",
    "WarmupBase",
    "WarmupSettings",
    "make_metaemb",
    "make_mwuf",
    "make_warmup_base",
    "R2D2",
    "R2D2Settings",
    "make_r2d2",
    "SourceR2D2",
    "SourceR2D2Settings",
    "make_r2d2_source",
    "TaNP",
    "TaNPSettings",
    "make_tanp",
]
