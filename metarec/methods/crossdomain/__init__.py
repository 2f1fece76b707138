"""Cross-domain knowledge transfer for cold-start users: bridges, transfer learning and
domain-adaptation regularisers, scored on the same cold-user tasks as the meta-learners.

* :mod:`~metarec.methods.crossdomain.losses`: Gaussian KL, MMD, CORAL, sliced Wasserstein, gradient
  reversal and a domain discriminator (DANN), and :class:`JointLoss`.
* :mod:`~metarec.methods.crossdomain.bridges`: EMCDR's mapping and PTUPCDR's personalised bridge.
* :mod:`~metarec.methods.crossdomain.transfer`: pre-train + fine-tune, joint and DA-regularised training
  of a shared-user model.
* :func:`fit_and_evaluate`: one call per method (``"emcdr"``, ``"ptupcdr+adapt"``, ...): train on
  meta-train, select on meta-val, score the test pools with per-task metric arrays;
  :func:`fit_method` returns the trained :class:`FittedMethod` to score pools yourself (the
  benchmark's rows, :mod:`metarec.bench.crossdomain_rows`, use it).
"""

from metarec.methods.crossdomain.bridges import EMCDR, PTUPCDR, Mapping, MetaBridge, fit_mapping
from metarec.methods.crossdomain.data import (
    CrossDomainView,
    RowBatches,
    cross_domain_view,
    user_histories,
)
from metarec.methods.crossdomain.evaluate import (
    AdaptConfig,
    ColdStartScorer,
    adapt_user_vectors,
    evaluate_cold_pool,
)
from metarec.methods.crossdomain.losses import (
    REGULARISERS,
    DomainDiscriminator,
    GradientReversal,
    JointLoss,
    coral,
    dann_loss,
    gaussian_kl,
    grad_reverse,
    mmd_rbf,
    sliced_wasserstein,
)
from metarec.methods.crossdomain.methods import (
    METHODS,
    FittedMethod,
    fit_and_evaluate,
    fit_method,
    parse_method,
)
from metarec.methods.crossdomain.mf import MF, fit_mf
from metarec.methods.crossdomain.settings import CrossDomainConfig, config_from_scenario
from metarec.methods.crossdomain.transfer import (
    DomainScorer,
    SharedUserModel,
    fit_finetune,
    fit_joint,
)

__all__ = [
    "REGULARISERS",
    "gaussian_kl",
    "mmd_rbf",
    "coral",
    "sliced_wasserstein",
    "GradientReversal",
    "grad_reverse",
    "DomainDiscriminator",
    "dann_loss",
    "JointLoss",
    "Mapping",
    "fit_mapping",
    "EMCDR",
    "MetaBridge",
    "PTUPCDR",
    "MF",
    "fit_mf",
    "SharedUserModel",
    "DomainScorer",
    "fit_finetune",
    "fit_joint",
    "CrossDomainView",
    "cross_domain_view",
    "RowBatches",
    "user_histories",
    "ColdStartScorer",
    "AdaptConfig",
    "adapt_user_vectors",
    "evaluate_cold_pool",
    "CrossDomainConfig",
    "config_from_scenario",
    "METHODS",
    "parse_method",
    "FittedMethod",
    "fit_method",
    "fit_and_evaluate",
]
