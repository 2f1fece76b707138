"""Text features: deterministic, cached encoding; the encoder's absence; models scoring an item
with text but no interactions from its text alone."""

from __future__ import annotations

import socket
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import metarec.data.text as text_mod
from metarec._errors import ConfigError, DataError
from metarec.data.features import FeatureSpec
from metarec.data.table import Columns, InteractionTable
from metarec.data.text import encode_texts, get_encoder
from metarec.models import build_model


class CountingEncoder:
    """Bag of letters, counting its calls (a stand-in for a pretrained model)."""

    name = "letters-v1"

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), 26), dtype=np.float32)
        for k, t in enumerate(texts):
            for ch in t.lower():
                if "a" <= ch <= "z":
                    out[k, ord(ch) - 97] += 1.0
        return out


def test_encoding_is_cached_by_content(tmp_path) -> None:
    enc = CountingEncoder()
    texts = ["Toy Story", None, "  Heat  ", ""]
    a = encode_texts(texts, encoder=enc, cache_dir=tmp_path)
    assert enc.calls == 1 and a.shape == (4, 26) and a.dtype == np.float32
    assert not a[1].any() and not a[3].any()  # no text: the zero vector
    b = encode_texts(texts, encoder=enc, cache_dir=tmp_path)
    assert enc.calls == 1 and np.array_equal(a, b)  # served from the cache
    assert len(list(tmp_path.glob("*.npy"))) == 1
    encode_texts(["Toy Story 2"], encoder=enc, cache_dir=tmp_path)  # other content: a new entry
    assert enc.calls == 2 and len(list(tmp_path.glob("*.npy"))) == 2
    other = CountingEncoder()
    other.name = "letters-v2"
    encode_texts(texts, encoder=other, cache_dir=tmp_path)  # other encoder: a new entry
    assert other.calls == 1
    encode_texts(texts, encoder=enc, cache_dir=False)
    assert enc.calls == 3 and len(list(tmp_path.glob("*.npy"))) == 3


def test_non_string_text_is_refused(tmp_path) -> None:
    with pytest.raises(DataError, match=r"texts\[1\]=3.*astype\(str\)"):
        encode_texts(["a", 3], encoder=CountingEncoder(), cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="unknown text encoder"):
        get_encoder("word-llama")


def test_missing_wordllama_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "wordllama", None)  # as if not installed
    monkeypatch.setattr(text_mod, "_LOADED", {})
    with pytest.raises(ConfigError, match=r'pip install "metarec\[text\]"'):
        get_encoder("wordllama")
    with pytest.raises(ConfigError, match=r"metarec\[text\]"):
        encode_texts(["x"], cache_dir=False)


def test_sentence_transformers_path_must_exist(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no model folder"):
        get_encoder(f"sentence-transformers:{tmp_path / 'absent'}")


def test_wordllama_is_deterministic_and_offline(monkeypatch, tmp_path) -> None:
    pytest.importorskip("wordllama")

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access during text encoding")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(text_mod, "_LOADED", {})
    texts = ["Toy Story (1995)", "Heat (1995)", "A story of toys"]
    a = encode_texts(texts, cache_dir=False)
    monkeypatch.setattr(text_mod, "_LOADED", {})
    b = encode_texts(texts, cache_dir=tmp_path)
    assert a.shape == (3, 256) and np.array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-4)
    sim = a @ a.T
    assert (
        sim[0, 2] > sim[1, 2]
    )  # a pretrained model: "toys" is closer to "Toy Story" than to "Heat"


def _text_table(enc: CountingEncoder, extra_categorical: bool = False) -> InteractionTable:
    inter = pd.DataFrame(
        {"user": [1, 1, 2, 2, 3], "item": [1, 2, 1, 3, 2], "rating": [5.0, 1, 4, 2, 1]}
    )
    feats = pd.DataFrame(
        {
            "item": [1, 2, 3, 4, 5],
            "title": ["zzz space", "love", "comedy", None, "space zzz"],
            "genre": ["a", "b", "a", "b", "a"],
        }
    )
    specs = [FeatureSpec("title", "text", encoder=enc)] + (
        [FeatureSpec("genre")] if extra_categorical else []
    )  # type: ignore[arg-type]
    users = pd.DataFrame({"user": [1, 2, 3], "age": ["x", "y", "x"]})
    return InteractionTable.from_frame(
        inter,
        Columns(),
        item_features=feats,
        item_feature_specs=specs,
        user_features=users,
        user_feature_specs=[FeatureSpec("age")],
    )


@pytest.mark.parametrize("model_name", ["melu", "two_tower"])
def test_item_with_text_and_no_interactions_is_scored_by_its_text(
    model_name, monkeypatch, tmp_path
) -> None:
    monkeypatch.setenv("METAREC_CACHE", str(tmp_path))
    enc = CountingEncoder()
    table = _text_table(enc)
    f = table.item_features
    assert (
        f is not None and set(f.text) == {"title"} and f.text["title"].shape == (table.n_items, 26)
    )
    kw = {"hidden": (8,)} if model_name == "melu" else {"hidden": (8, 4), "features": True}
    model = build_model(model_name, table, embedding_dim=4, **kw)
    assert "item_features.text.title.weight" in dict(model.named_parameters())
    if model_name == "two_tower":
        model.set_known(users=table.users, items=table.items)
    enc_ids = table.item_ids.encode(np.array([4, 5]))
    no_text, cold = int(enc_ids[0]), int(enc_ids[1])  # item 5: never rated, text "space zzz"
    users = torch.tensor([1, 1])
    with torch.no_grad():
        s1 = model(users, torch.tensor([cold, no_text]))
        model.item_features.text["title"].weight.mul_(3.0)  # only the text path changes
        s2 = model(users, torch.tensor([cold, no_text]))
    assert not torch.isclose(s1[0], s2[0])  # the cold item's score depends on its text
    torch.testing.assert_close(s1[1], s2[1])  # an item without text: the text path gives nothing


def test_same_text_same_score_and_features_unchanged_without_text(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("METAREC_CACHE", str(tmp_path))
    table = _text_table(CountingEncoder(), extra_categorical=True)
    model = build_model("melu", table, embedding_dim=4, hidden=(8,))
    a, b = (
        int(x) for x in table.item_ids.encode(np.array([1, 5]))
    )  # "zzz space" and "space zzz": same letters
    with torch.no_grad():
        s = model(torch.tensor([2, 2]), torch.tensor([a, b]))
    torch.testing.assert_close(s[0], s[1])  # same genre, same bag of letters: same score
    inter = pd.DataFrame({"user": [1, 2], "item": [1, 2], "rating": [5.0, 1]})
    feats = pd.DataFrame({"item": [1, 2], "genre": ["a", "b"]})
    plain = InteractionTable.from_frame(
        inter, Columns(), item_features=feats, item_feature_specs=[FeatureSpec("genre")]
    )
    assert plain.item_features is not None and plain.item_features.text == {}
    assert "text_dims" not in plain.item_features.to_json()
    names = [
        n for n, _ in build_model("melu", plain, embedding_dim=4, hidden=(8,)).named_parameters()
    ]
    assert not any(".text." in n for n in names)


def test_text_feature_refuses_numbers(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("METAREC_CACHE", str(tmp_path))
    inter = pd.DataFrame({"user": [1], "item": [1], "rating": [5.0]})
    feats = pd.DataFrame({"item": [1], "title": [1995]})
    with pytest.raises(DataError, match=r"item_features\['title'\].*non-string value 1995"):
        InteractionTable.from_frame(
            inter,
            Columns(),
            item_features=feats,
            item_feature_specs=[FeatureSpec("title", "text", encoder=CountingEncoder())],
        )  # type: ignore[arg-type]


def test_movielens_titles_as_text(shared_data, tmp_path, monkeypatch) -> None:
    pytest.importorskip("wordllama")
    from metarec.data.readers import read_movielens_1m

    monkeypatch.setenv("METAREC_CACHE", str(tmp_path))
    t = read_movielens_1m(shared_data / "movielens-1m", melu_extra=False, item_text=["title"])
    assert t.item_features is not None and t.item_features.text["title"].shape == (t.n_items, 256)
    with pytest.raises(DataError, match="plots, directors and actors need melu_extra=True"):
        read_movielens_1m(shared_data / "movielens-1m", melu_extra=False, item_text=["plot"])
