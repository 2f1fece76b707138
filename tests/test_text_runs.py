"""Runs with text features: trained with an encoder, loaded, adapted, recommended from and served
with no encoder installed; a replaced text file or changed texts are refused."""

from __future__ import annotations

import http.client
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import metarec.data.text as text_mod
from metarec._errors import CheckpointError, DataError
from metarec.cli.main import main
from metarec.config import load_scenario
from metarec.data.features import FeatureSpec
from metarec.data.synthetic import make_synthetic
from metarec.data.table import Columns, InteractionTable
from metarec.models import build_model
from metarec.recommend.load import load_adapted, load_run
from metarec.runs.checkpoint import TEXT_FILE, load_best, save_tensors
from metarec.train.loop import train

ROOT = Path(__file__).resolve().parent.parent
SMALL = [
    "train.steps=6",
    "train.val_every=6",
    "train.val_tasks=16",
    "train.checkpoint_every=6",
    "train.progress=false",
    "algorithm.meta_batch=8",
    "protocol.n_support=5",
    "protocol.n_query=5",
    "protocol.min_interactions=10",
    "model.embedding_dim=4",
    "model.hidden=[8]",
]
WORDS = ["space", "love", "war", "toys", "crime", "music", "ghost", "sea"]


class LetterEncoder:
    """A deterministic stand-in for a pretrained model: a bag of letters."""

    name = "letters-test-v1"

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), 26), dtype=np.float32)
        for k, t in enumerate(texts):
            for ch in t.lower():
                if "a" <= ch <= "z":
                    out[k, ord(ch) - 97] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def text_table(titles: dict[int, str] | None = None) -> InteractionTable:
    base = make_synthetic(3, 40, 60, density=0.3, n_user_features=1, n_item_features=1, seed=0)
    frame = base.to_frame(raw_ids=True)
    items = np.unique(frame["item"].to_numpy())
    title = {int(i): f"{WORDS[int(i) % 8]} {WORDS[int(i) // 8 % 8]}" for i in items}
    title.update(titles or {})
    feats = pd.DataFrame(
        {"item": items, "title": [title[int(i)] for i in items], "genre": items % 5}
    )
    feats["genre"] = feats["genre"].astype(str)
    return InteractionTable.from_frame(
        frame[["user", "item", "rating"]],
        Columns(),
        rating_scale=(1.0, 5.0),
        item_features=feats,
        item_feature_specs=[
            FeatureSpec("genre"),
            FeatureSpec("title", "text", encoder=LetterEncoder()),
        ],  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("text-run")
    mp = pytest.MonkeyPatch()
    mp.setenv("METAREC_CACHE", str(tmp / "cache"))
    try:
        table = text_table()
        sc = load_scenario(ROOT / "tasks" / "synthetic-cold-start.toml", overrides=SMALL)
        train(sc, tmp / "run", table=table, evaluate_test=False)
    finally:
        mp.undo()
    return tmp / "run", table


@pytest.fixture
def no_encoder(monkeypatch):
    """As if no text encoder were installed: encoding anything fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a text encoder was used while loading a run")

    monkeypatch.setitem(sys.modules, "wordllama", None)
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    monkeypatch.setattr(text_mod, "_LOADED", {})
    monkeypatch.setattr(text_mod, "get_encoder", refuse)


def _reference_scores(run: Path, table: InteractionTable, users, items) -> torch.Tensor:
    """The trained model rebuilt from the training table (texts encoded) with best.pt's weights."""
    manifest = json.loads((run / "manifest.json").read_text())
    kw = dict(manifest["model"]["kwargs"])
    kw["hidden"] = tuple(kw["hidden"])
    model = build_model("melu", table, **kw)
    ck = load_best(run)
    model.load_state_dict({**ck["params"], **ck["buffers"]})
    with torch.no_grad():
        return model.eval()(users, items)


def test_text_run_loads_without_encoder_with_equal_scores(text_run, no_encoder) -> None:
    run, table = text_run
    assert (run / TEXT_FILE).is_file() and (run / f"{TEXT_FILE}.sha256").is_file()
    src = json.loads((run / "encoders.json").read_text())["item_features"]["text_sources"]
    assert src["title"]["encoder"] == "letters-test-v1" and len(src["title"]["texts_sha256"]) == 64
    meta = load_run(run)
    f = meta.table.item_features
    assert f is not None and np.array_equal(f.text["title"], table.item_features.text["title"])  # type: ignore[union-attr]
    users = torch.tensor([1, 2, 3, 4, 5])
    items = torch.tensor([1, 7, 13, 20, 31])
    with torch.no_grad():
        got = meta.model(users, items)
    torch.testing.assert_close(got, _reference_scores(run, table, users, items), rtol=0, atol=0)
    # an item's text changes its score: the text path is live in the loaded model
    with torch.no_grad():
        meta.model.item_features.text["title"].weight.mul_(2.0)
        assert not torch.allclose(meta.model(users, items), got)


def test_text_run_adapts_recommends_and_serves_without_encoder(
    text_run, no_encoder, tmp_path, capsys
) -> None:
    from metarec.serve import ServeConfig, ServerThread

    run, table = text_run
    frame = table.to_frame(raw_ids=True)
    user = frame["user"].iloc[0]
    rows = frame[frame["user"] == user].head(6)
    csv = tmp_path / "support.csv"
    rows[["user", "item", "rating"]].to_csv(csv, index=False)
    out = tmp_path / "adapted"
    assert main(["adapt", "--run", str(run), "--support", str(csv), "--out", str(out)]) == 0
    assert (out / TEXT_FILE).is_file()
    capsys.readouterr()
    assert main(["recommend", "--run", str(out), "--user", str(user), "--json", "--k", "4"]) == 0
    shown = [(x["item"], x["score"]) for x in json.loads(capsys.readouterr().out)["items"]]
    want = [(str(i), s) for i, s in load_adapted(out).recommend(user, k=4)]  # JSON ids: strings
    assert shown == want and len(shown) == 4
    meta = load_run(run)
    support = [(r.item, float(r.rating)) for r in rows.itertuples()]
    probe = list(meta.item_ids.values[:5])
    want = meta.adapt(support, user=user).predict(user, probe)
    srv = ServerThread(meta, ServeConfig(max_batch=8, max_wait_ms=5)).start()
    try:
        host, port = srv.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        body = {
            "user": _py(user),
            "support": [{"item": _py(i), "rating": r} for i, r in support],
            "items": [_py(i) for i in probe],
        }
        conn.request(
            "POST",
            "/predict",
            body=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        answer = json.loads(resp.read())
        conn.close()
    finally:
        srv.stop()
    assert resp.status == 200, answer
    np.testing.assert_allclose([x["score"] for x in answer["items"]], want, rtol=0, atol=1e-5)


def test_replaced_text_file_is_refused(text_run, tmp_path) -> None:
    run, _ = text_run
    bad = tmp_path / "run"
    shutil.copytree(run, bad)
    blob = torch.load(bad / TEXT_FILE, weights_only=True)
    blob["item/title"] = blob["item/title"].flip(0).contiguous()  # other texts, a valid file
    save_tensors(bad / TEXT_FILE, blob)  # with a matching .sha256: not damage, other content
    with pytest.raises(
        CheckpointError, match=r"text feature 'title' has fingerprint .*replaced or edited"
    ):
        load_run(bad)
    (bad / TEXT_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"text\.pt.*missing.*item text features \['title'\]"):
        load_run(bad)


def test_resume_with_changed_texts_is_refused(text_run, tmp_path, monkeypatch) -> None:
    run, _ = text_run
    monkeypatch.setenv("METAREC_CACHE", str(tmp_path / "cache"))
    changed = text_table({1: "a title that was rewritten"})
    part = tmp_path / "run"
    shutil.copytree(run, part)
    sc = load_scenario(ROOT / "tasks" / "synthetic-cold-start.toml", overrides=SMALL)
    with pytest.raises(DataError, match="item side features changed"):
        train(sc, part, table=changed, resume=True, evaluate_test=False)


def _py(x: object) -> object:
    return x.item() if isinstance(x, np.generic) else x
