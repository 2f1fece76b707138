"""The field's strong ranking baselines, each a :class:`~metarec.methods.Method` registered by name.

Importing this package registers ``itemknn``, ``ease``, ``mf-foldin`` and ``content-knn`` with
:func:`metarec.methods.register_method` (``popularity``, whose ``by = "count"`` form is the
ranking baseline, is a built-in method: :mod:`metarec.methods.popularity`). Each one:

* fits in closed form (or a few ALS sweeps) on **meta-train** interactions only, and chooses its
  hyper-parameters on **meta-val** only, by ``ndcg@10_all`` of the catalogue ranking at the
  scenario's shots (grids in each module; a scenario overrides them in
  ``[learners.<method>]``);
* adapts to a cold user from the support with **no gradient step** (the support is read: a
  sum of item-item rows, or a closed-form fold-in);
* scores a catalogue through the fast path ``score_catalogue(items) -> (T, C)``
  (:mod:`metarec.methods.catalogue`), and trains, benches, saves, loads and serves like every
  method.

Their scores rank items; they are not ratings (``score_kind = "rank"``): the benchmark leaves
out their error metrics (MAE).

* :mod:`~metarec.methods.ranking.itemknn`: item-item shrunk cosine, top-K neighbourhoods.
* :mod:`~metarec.methods.ranking.ease`: EASE^R (Steck, WWW 2019); ``ease-source`` adds a cold
  user's source-domain history to their row (cross-domain scenarios).
* :mod:`~metarec.methods.ranking.mf_foldin`: iALS item factors, a closed-form user fold-in.
* :mod:`~metarec.methods.ranking.content_knn`: content similarity to the support (cold items).
"""

from metarec.methods.base import MethodTags, register_method
from metarec.methods.ranking.by_shots import ByShots, by_shots_loader, nearest_shot
from metarec.methods.ranking.content_knn import (
    ContentKNNFitted,
    ContentKNNMethod,
    ContentKNNSettings,
    content_similarity,
    make_content_knn,
)
from metarec.methods.ranking.ease import (
    EASEFitted,
    EASEMethod,
    EASESettings,
    ease_weights,
    make_ease,
    make_ease_source,
)
from metarec.methods.ranking.itemknn import (
    ItemKNNFitted,
    ItemKNNMethod,
    ItemKNNSettings,
    make_itemknn,
)
from metarec.methods.ranking.mf_foldin import (
    MFFoldInFitted,
    MFFoldInMethod,
    MFSettings,
    fold_in,
    ials,
    make_mf_foldin,
)

RANKING_METHODS = ("itemknn", "ease", "ease-source", "mf-foldin", "content-knn")
"""The methods this package registers: opt-in in ``metarec bench`` (``--algorithms ease,...``)."""

__all__ = [
    "ByShots",
    "by_shots_loader",
    "nearest_shot",
    "RANKING_METHODS",
    "RANKING_TAGS",
    "ItemKNNMethod",
    "ItemKNNFitted",
    "ItemKNNSettings",
    "make_itemknn",
    "EASEMethod",
    "EASEFitted",
    "EASESettings",
    "ease_weights",
    "make_ease",
    "make_ease_source",
    "MFFoldInMethod",
    "MFFoldInFitted",
    "MFSettings",
    "fold_in",
    "ials",
    "make_mf_foldin",
    "ContentKNNMethod",
    "ContentKNNFitted",
    "ContentKNNSettings",
    "content_similarity",
    "make_content_knn",
]

RANKING_TAGS = MethodTags(family="baseline")
"""Both feedback kinds, user tasks, no inner loop (the support is read, not stepped on)."""

register_method(
    "itemknn",
    make_itemknn,
    loader=by_shots_loader(ItemKNNFitted.build),
    tags=RANKING_TAGS,
    replace=True,
)
register_method(
    "ease", make_ease, loader=by_shots_loader(EASEFitted.build), tags=RANKING_TAGS, replace=True
)
register_method(
    "ease-source",
    make_ease_source,
    loader=by_shots_loader(EASEFitted.build),
    tags=MethodTags(family="baseline", source_history=True),
    replace=True,
)
register_method(
    "mf-foldin",
    make_mf_foldin,
    loader=by_shots_loader(MFFoldInFitted.build),
    tags=RANKING_TAGS,
    replace=True,
)
register_method(
    "content-knn",
    make_content_knn,
    loader=by_shots_loader(ContentKNNFitted.build),
    tags=MethodTags(item_features=True, family="baseline"),
    replace=True,
)
