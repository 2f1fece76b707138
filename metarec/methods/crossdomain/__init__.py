"""Cross-domain knowledge transfer for cold-start users: bridges, transfer learning and
domain-adaptation regularisers, scored on the same cold-user tasks as the meta-learners.

* :mod:`~metarec.methods.crossdomain.losses`: Gaussian KL, MMD, CORAL, sliced Wasserstein, gradient
  reversal and a domain discriminator (DANN), and :class:`JointLoss`.
* :mod:`~metarec.methods.crossdomain.bridges`: EMCDR's mapping and PTUPCDR's personalised bridge.
* :mod:`~metarec.methods.crossdomain.transfer`: pre-train + fine-tune, joint and DA-regularised training
  of a shared-user model.
* :class:`CrossDomainMethod` / :class:`CrossDomainFitted`: every method (``"emcdr"``,
  ``"ptupcdr+adapt"``, ...) through the method interface (``build_method(name, scenario)``):
  train on meta-train, select on meta-val, adapt and score like every other method;
  :func:`fit_method` is the family's trainer (a :class:`FittedMethod`);
  :func:`fit_and_evaluate` (deprecated) the old one-call wrapper over the interface.
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
from metarec.methods.crossdomain.legacy import fit_and_evaluate
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
from metarec.methods.crossdomain.method import CrossDomainFitted, CrossDomainMethod
from metarec.methods.crossdomain.methods import (
    METHODS,
    FittedMethod,
    fit_method,
    parse_method,
)
from metarec.methods.crossdomain.mf import MF, fit_mf
from metarec.methods.crossdomain.settings import CrossDomainConfig, as_config, config_from_scenario
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
    "as_config",
    "METHODS",
    "parse_method",
    "FittedMethod",
    "CrossDomainMethod",
    "CrossDomainFitted",
    "fit_method",
    "fit_and_evaluate",
]
