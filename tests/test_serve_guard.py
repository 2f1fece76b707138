"""The finite-output rule on the serving paths: a diverged adaptation (``lr=1e30``) or scores
of non-finite weights are answered with the library's error (HTTP 500, the message of
``metarec recommend``) or, with ``on_diverge="fallback"``, the meta-learned initialisation and a
``warnings`` field; never a 200 with an empty or NaN list; one user's failure stays its own."""

from __future__ import annotations

import http.client
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_serve_engine import TWO_TOWER, train_small

from metarec._errors import CheckpointError, ConfigError
from metarec.cli.main import main
from metarec.recommend.load import load_run
from metarec.runs.guard import Diverged
from metarec.serve import Engine, Job, ServeConfig, ServerThread


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return train_small(tmp_path_factory, "two_tower", TWO_TOWER)


def _post(url: str, body: dict) -> tuple[int, dict]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request("POST", "/recommend", body=json.dumps(body).encode())
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def _body(meta, user: str = "cold-diverge") -> dict:
    items = meta.item_ids.values
    return {
        "user": user,
        "k": 10,
        "support": [{"item": items[i], "rating": r} for i, r in [(1, 5), (4, 1), (9, 4)]],
    }


def _cli_error(run: Path, body: dict, tmp_path: Path, capsys, *extra: str) -> str:
    csv = tmp_path / "support.csv"
    csv.write_text(
        "user,item,rating\n"
        + "".join(f"{body['user']},{r['item']},{r['rating']}\n" for r in body["support"])
    )
    code = main(
        ["recommend", "--run", str(run), "--user", body["user"], "--support", str(csv), "--json"]
        + list(extra)
    )
    err = capsys.readouterr().err
    assert code != 0
    return err.strip().removeprefix("metarec: error: ")


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel", "library"])
def test_diverged_adaptation_is_a_500_with_the_cli_message(run, kernel, tmp_path, capsys) -> None:
    meta = load_run(run)
    body = _body(meta)
    with ServerThread(meta, ServeConfig(lr=1e30, batched_kernel=kernel)) as srv:
        code, out = _post(srv.url, body)
        assert srv.app.engine.path == ("two-tower-batched" if kernel else "library")
    assert code == 500 and "items" not in out
    assert out["error"].startswith("adaptation diverged for 1 of 1 task(s) (user 'cold-diverge')")
    assert out["error"] == _cli_error(run, body, tmp_path, capsys, "--lr", "1e30")


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel", "library"])
def test_fallback_serves_the_initialisation_with_a_warning(run, kernel) -> None:
    meta = load_run(run)
    body = _body(meta, "cold-fallback")
    cfg = ServeConfig(lr=1e30, batched_kernel=kernel, on_diverge="fallback")
    with ServerThread(meta, cfg) as srv:
        code, out = _post(srv.url, body)
    with ServerThread(meta, ServeConfig(steps=0, batched_kernel=kernel)) as srv:
        code0, init = _post(srv.url, body)
    assert code == code0 == 200 and "warnings" not in init
    (warning,) = out["warnings"]
    assert "served the meta-learned initialisation (on_diverge='fallback')" in warning
    assert "user 'cold-fallback'" in warning
    assert [x["item"] for x in out["items"]] == [x["item"] for x in init["items"]]
    assert len(out["items"]) == 10 and all(np.isfinite([x["score"] for x in out["items"]]))


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel", "library"])
def test_one_diverged_user_does_not_fail_its_batch(run, kernel) -> None:
    meta = load_run(run)
    eng = Engine(meta, steps=5, lr=1e30, batched=kernel)
    jobs = [
        Job("diverges", 0, np.array([1, 2, 3]), np.array([5.0, 1.0, 4.0]), k=5),
        Job("no-support", 0, np.zeros(0, np.int64), np.zeros(0), k=5),  # nothing to adapt
    ]
    bad, good = eng.run(jobs)
    assert isinstance(bad, Diverged) and isinstance(bad, ConfigError)
    assert "user 'diverges'" in str(bad)
    assert isinstance(good, dict) and len(good["items"]) == 5


def test_non_finite_run_weights_are_a_500_not_an_empty_list(run) -> None:
    meta = load_run(run)
    with torch.no_grad():
        meta.params["item_tower.0.weight"][0, 0] = torch.nan  # every item vector turns NaN
    eng = Engine(meta, steps=0)
    (ans,) = eng.run([Job("u", 0, np.array([1, 2]), np.array([5.0, 1.0]), k=10)])
    assert isinstance(ans, CheckpointError)
    assert "score(s) for user 'u' are not finite" in str(ans) and "re-train" in str(ans)
    with ServerThread(meta, ServeConfig(steps=5)) as srv:  # NaN support vectors: NaN gradients
        code, out = _post(srv.url, _body(meta))
    assert code == 500 and "not finite" in out["error"] and "items" not in out


def test_serve_refuses_a_bad_on_diverge() -> None:
    with pytest.raises(ConfigError, match=r"on_diverge='ignore': choose 'error' or 'fallback'"):
        ServeConfig(on_diverge="ignore")
