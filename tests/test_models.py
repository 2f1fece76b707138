"""Models: shapes, side-feature pooling, cold ids, inner-loop parameter split, factory errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from metarec._errors import ConfigError
from metarec.data.features import FeatureSpec
from metarec.data.table import InteractionTable
from metarec.models import (
    GMF,
    IdConfig,
    MeLU,
    MeLUConfig,
    NeuMF,
    TwoTower,
    build_model,
    split_params,
)
from metarec.models.features import FeatureEmbedding

pytestmark = pytest.mark.usefixtures("f64")  # float64 throughout (tests/conftest.py)


def tiny_table() -> InteractionTable:
    """5 users x 6 items; user features: gender, age; item features: genre (multi), director."""
    rng = np.random.default_rng(0)
    pairs = [(u, i) for u in range(1, 6) for i in range(1, 7) if (u + i) % 3]
    frame = pd.DataFrame(pairs, columns=["user", "item"])
    frame["rating"] = rng.integers(1, 6, len(frame)).astype(float)
    users = pd.DataFrame(
        {"user": range(1, 6), "gender": list("MFMFM"), "age": [20, 31, 45, 52, 18]}
    )
    items = pd.DataFrame(
        {
            "item": range(1, 8),  # item 7 has features but no interactions
            "genre": ["a|b", "b", "c|a|b", "", "a", "c", "b|c"],
            "director": ["x", "y", "x", "z", "y", "z", "x"],
        }
    )
    return InteractionTable.from_frame(
        frame,
        user_features=users,
        user_feature_specs=[FeatureSpec("gender"), FeatureSpec("age", "numeric")],
        item_features=items,
        item_feature_specs=[FeatureSpec("genre", "multi"), FeatureSpec("director")],
    )


def idx(*rows: list[int]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.int64)


@pytest.mark.parametrize("name", ["melu", "gmf", "neumf", "two_tower"])
def test_forward_shapes_and_dtype(name: str) -> None:
    table = tiny_table()
    model = build_model(name, table, embedding_dim=4, hidden=(5, 3))
    users, items = idx([1, 2, 3, 0], [4, 5, 1, 2]), idx([1, 2, 3, 4], [5, 6, 7, 0])  # (T=2, N=4)
    out = model(users, items)
    assert out.shape == (2, 4) and out.dtype == torch.float64
    assert model(users[0], items[0]).shape == (4,)
    assert torch.allclose(model(users[0], items[0]), out[0])


def test_melu_default_sizes_follow_the_paper() -> None:
    model = MeLU.from_table(tiny_table(), MeLUConfig())
    assert [tuple(layer.weight.shape)[0] for layer in model.decision] == [64, 64]
    assert model.head.weight.shape == (1, 64)
    assert model.item_features.embeddings["genre"].weight.shape[1] == 32
    fast, slow = split_params(model)
    assert set(fast) == {
        "decision.0.weight",
        "decision.0.bias",
        "decision.1.weight",
        "decision.1.bias",
        "head.weight",
        "head.bias",
    }
    assert all(k.startswith(("user_features.", "item_features.")) for k in slow)


def test_melu_pooling_ignores_padding() -> None:
    table = tiny_table()
    feats = table.item_features
    emb = FeatureEmbedding(feats, dim=3)
    genre = emb.embeddings["genre"].weight
    codes = torch.as_tensor(feats.categorical["genre"])
    assert codes.shape[1] == 3  # widest genre list: 3 values; shorter lists are 0-padded
    out = emb(torch.arange(feats.n_entities))  # (n_items, 3 * 2)
    genre_block = out[:, 3:6] if emb.features == ["director", "genre"] else out[:, :3]
    for i in range(1, feats.n_entities):
        real = codes[i][codes[i] > 0]
        expect = genre[real].mean(0) if len(real) else torch.zeros(3)
        assert torch.allclose(genre_block[i], expect)
    item4 = table.item_ids.encode(np.array([4]))[0]
    assert (codes[item4] == 0).all()  # empty genre: all padding -> zero vector
    with torch.no_grad():
        genre[0] += 100.0  # the padding row never contributes
    assert torch.allclose(emb(torch.arange(feats.n_entities)), out)


def test_many_lookups_embed_each_entity_once_with_the_same_values() -> None:
    """More lookups than entities (catalogue ranking) take the embed-once-and-gather path: the
    values equal per-lookup embedding exactly, and the gradients agree."""
    emb = FeatureEmbedding(tiny_table().item_features, dim=3).double()
    n = emb.n_entities
    few = torch.arange(n).flip(0)  # n lookups: the direct path
    many = torch.randint(0, n, (4, 3 * n), generator=torch.Generator().manual_seed(0))
    assert torch.equal(
        emb(many), torch.stack([emb(row) for row in many.reshape(-1, n)]).reshape(*many.shape, -1)
    )
    assert torch.equal(emb(many)[0, :n], emb(many[0, :n]))
    w = torch.randn(*many.shape, emb.out_dim, dtype=torch.float64)
    (emb(many) * w).sum().backward()
    fast = {k: p.grad.clone() for k, p in emb.named_parameters()}
    emb.zero_grad()
    sum(
        (emb(row) * w.reshape(-1, n, emb.out_dim)[j]).sum()
        for j, row in enumerate(many.reshape(-1, n))
    ).backward()
    for k, p in emb.named_parameters():
        assert torch.allclose(fast[k], p.grad, atol=1e-12), k
    assert emb(few).shape == (n, emb.out_dim)


def test_melu_needs_features() -> None:
    table = tiny_table()
    with pytest.raises(
        ConfigError,
        match=r"MeLU\(user_features=None, item_features=None\).*build_model\('gmf', table\)",
    ):
        MeLU(None, None)
    only_items = MeLU(None, table.item_features, MeLUConfig(embedding_dim=2, hidden=(3,)))
    assert only_items(idx([1, 2]), idx([3, 4])).shape == (1, 2)


@pytest.mark.parametrize("cls", [GMF, NeuMF, TwoTower])
def test_cold_ids_map_to_the_unknown_embedding(cls: type) -> None:
    model = cls(6, 7, IdConfig(embedding_dim=4, hidden=(5, 3)))
    model.set_known(users=[1, 2, 3], items=np.array([1, 2, 3, 4, 5, 6]))
    assert model.known_users.tolist() == [False, True, True, True, False, False]
    cold, zero, warm = (
        model(idx([4, 5]), idx([1, 2])),
        model(idx([0, 0]), idx([1, 2])),
        model(idx([1, 2]), idx([1, 2])),
    )
    assert torch.allclose(cold, zero) and not torch.allclose(cold, warm)
    unknown = "user_gmf.unknown" if cls is NeuMF else "user.unknown"
    table = unknown.replace("unknown", "weight")
    with torch.no_grad():
        dict(model.named_parameters())[table][4:] += 1.0  # cold rows are never read
    assert torch.allclose(model(idx([4, 5]), idx([1, 2])), cold)
    with torch.no_grad():
        dict(model.named_parameters())[unknown] += 1.0  # ... the shared unknown vector is
    assert not torch.allclose(model(idx([4, 5]), idx([1, 2])), cold)
    fast, _ = split_params(model)
    assert unknown in fast  # the inner loop adapts it by default


def test_set_known_validates_and_empty_means_all_cold() -> None:
    model = GMF(4, 4, IdConfig(embedding_dim=2))
    assert model.known_users.tolist() == [False, True, True, True]  # default: all but 0 known
    model.set_known(users=[])
    assert not model.known_users.any() and model.known_items[1:].all()
    with pytest.raises(ConfigError, match=r"set_known\(items=...\): index 9 is outside \[0, 4\)"):
        model.set_known(items=[1, 9])


def test_two_tower_scores_cold_items_by_features() -> None:
    table = tiny_table()
    model = build_model("two_tower", table, embedding_dim=3, hidden=(4,), features=True)
    model.set_known(items=[])
    out = model(idx([1, 1]), idx([1, 2]))  # two cold items with different features
    assert not torch.isclose(out[0, 0], out[0, 1])


def test_split_params_errors_name_the_pattern_and_suggest() -> None:
    model = build_model("melu", tiny_table(), embedding_dim=2, hidden=(3,))
    with pytest.raises(
        ConfigError,
        match=r"adapt pattern 'decison\.\*' matches no parameter of MeLU.*did you mean 'decision\.0\.\*'",
    ):
        split_params(model, ("decison.*",))
    with pytest.raises(
        ConfigError, match=r"adapt='head\.\*': expected a tuple .* pass adapt=\('head\.\*',\)"
    ):
        split_params(model, "head.*")
    with pytest.raises(ConfigError, match=r"adapt=\(\): no parameter would adapt"):
        split_params(model, ())
    fast, slow = split_params(model, ("head.*",))
    assert set(fast) == {"head.weight", "head.bias"} and not set(fast) & set(slow)
    params = {k: v.detach() * 2 for k, v in model.named_parameters()}
    fast, _ = split_params(model, ("head.*",), params)
    assert fast["head.bias"] is params["head.bias"]


def test_build_model_errors() -> None:
    table = tiny_table()
    with pytest.raises(
        ConfigError, match=r"model name='two-tower': unknown model.*did you mean 'two_tower'"
    ):
        build_model("two-tower", table)
    with pytest.raises(
        ConfigError, match=r"unknown config field 'embeding_dim'.*did you mean 'embedding_dim'"
    ):
        build_model("gmf", table, embeding_dim=4)
    with pytest.raises(
        ConfigError, match=r"hidden=\(64, 0\): layer widths must be .*pass e.g. hidden="
    ):
        build_model("melu", table, hidden=(64, 0))
    with pytest.raises(ConfigError, match=r"dropout=1.5: must be in \[0, 1\)"):
        MeLUConfig(dropout=1.5)
    assert build_model("melu", table, hidden=[8]).config.hidden == (8,)  # lists from TOML


def test_custom_adapt_and_seeded_init() -> None:
    table = tiny_table()
    state = torch.random.get_rng_state()
    a = build_model("neumf", table, embedding_dim=3, hidden=(4,), seed=7, adapt=("mlp.*",))
    b = build_model("neumf", table, embedding_dim=3, hidden=(4,), seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert set(split_params(a)[0]) == {"mlp.0.weight", "mlp.0.bias"}
    assert type(b).adapt == b.adapt
