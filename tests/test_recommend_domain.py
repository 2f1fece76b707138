"""``recommend --domain`` on a cross-domain method's run (trained through ``metarec train`` on a
two-domain table): only the domain's items, distinct unclipped scores; the same answer through
``metarec serve``'s ``POST /recommend`` with ``"domain"``."""

from __future__ import annotations

import http.client
import json
from pathlib import Path

import numpy as np
import pytest
from test_methods import CD_BUDGET, _cli_json, cd_scenario  # noqa: F401

from metarec.cli.main import main
from metarec.recommend.load import MethodModel, load_run
from metarec.serve import ServerThread


@pytest.fixture(scope="module")
def cd_run(cd_scenario, tmp_path_factory) -> Path:  # noqa: F811
    run = tmp_path_factory.mktemp("cd-run") / "run"
    sets = sum((["--set", s] for s in ["train.progress=false", *CD_BUDGET]), [])
    argv = ["train", str(cd_scenario), "--out", str(run), "--set", "algorithm.name=emcdr"]
    assert main([*argv, *sets]) == 0
    return run


def _post(url: str, body: dict) -> tuple[int, dict]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request("POST", "/recommend", body=json.dumps(body).encode())
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_recommend_domain_on_a_crossdomain_run(cd_run, tmp_path, capsys) -> None:
    meta = load_run(cd_run)
    assert isinstance(meta, MethodModel) and meta.name == "emcdr"
    domain_of = dict(
        zip(meta.item_ids.values, meta.table.domain_ids.decode(meta.item_domains[1:]), strict=True)
    )
    source = [i for i, d in domain_of.items() if d == "source"]
    target = [i for i, d in domain_of.items() if d == "target"]
    assert source and target
    user = "cold-shopper"  # a user the run has never seen, with ratings in both domains
    rows = [(source[0], 5), (source[1], 1), (target[0], 4)]
    csv = tmp_path / "support.csv"
    csv.write_text("user,item,rating\n" + "".join(f"{user},{i},{r}\n" for i, r in rows))
    k = 12
    base = ["recommend", "--run", str(cd_run), "--user", user, "--support", str(csv), "--json"]
    out = _cli_json(capsys, [*base, "--k", str(k), "--domain", "target"])
    items = [x["item"] for x in out["items"]]
    scores = [x["score"] for x in out["items"]]
    assert len(items) == k and all(domain_of[i] == "target" for i in items)
    assert target[0] not in items  # the user's own support item is left out
    assert len(set(scores)) == k and scores == sorted(scores, reverse=True)  # distinct, ranked
    # unclipped: the raw model scores, as predict(clip=False) gives them (not the rating scale)
    rec = meta.adapt(rows, user=user)
    np.testing.assert_allclose(scores, rec.predict(user, items, clip=False), rtol=0, atol=1e-5)
    # the whole catalogue mixes the domains; --domain is what restricts it
    every = _cli_json(capsys, [*base, "--k", str(len(domain_of))])
    assert {domain_of[x["item"]] for x in every["items"]} == {"source", "target"}
    # the same through the service
    body = {
        "user": user,
        "k": k,
        "domain": "target",
        "support": [{"item": i, "rating": r} for i, r in rows],
    }
    with ServerThread(cd_run) as srv:
        code, got = _post(srv.url, body)
        bad, err = _post(srv.url, {**body, "domain": "books"})
    assert code == 200 and [x["item"] for x in got["items"]] == items
    np.testing.assert_allclose([x["score"] for x in got["items"]], scores, rtol=0, atol=1e-5)
    assert bad == 400 and "domain='books': not a domain of this run" in err["error"]


def test_warm_predefined_split_names_the_key_and_the_fix(tmp_path) -> None:
    from test_splits_predefined import _scenario_text, _two_domains

    from metarec._errors import ConfigError
    from metarec.bench.crossdomain_rows import QUICK_CROSSDOMAIN, quick_defaults
    from metarec.config import load_scenario
    from metarec.data.load import load_table
    from metarec.episodes.build import build_splits
    from metarec.methods.crossdomain import cross_domain_view

    paths = _two_domains(tmp_path / "d")
    cold = tmp_path / "cold.toml"
    cold.write_text(_scenario_text(paths, 'target_domain = "movies"'))
    assert quick_defaults(load_scenario(cold)) == (QUICK_CROSSDOMAIN, 3)  # its own cold users
    # warm: the test users (1..20) also train in movies, as in a leave-one-out split
    extra = "".join(f"{u}\t{i}\t3\n" for u in range(1, 21) for i in range(41, 49))
    paths["movies_train"].write_text(paths["movies_train"].read_text() + extra)
    warm = tmp_path / "warm.toml"
    warm.write_text(_scenario_text(paths, 'target_domain = "movies"'))
    sc = load_scenario(warm)
    table = load_table(sc.data)
    splits = build_splits(table, sc.protocol)
    assert len(splits.warm_units["meta-test"])
    with pytest.raises(
        ConfigError,
        match=r"protocol.split = 'predefined': the dataset's own split is warm .*target domain "
        r"'movies'.*--algorithms maml,finetune,global,popularity.*protocol.split = 'cold_domain_users'",
    ):
        cross_domain_view(table, splits)
    assert quick_defaults(sc) is None  # the quick suite leaves the cross-domain methods out


def test_bench_refuses_cross_domain_methods_on_a_warm_predefined_split_before_any_run(
    tmp_path,
) -> None:
    from test_splits_predefined import _scenario_text, _two_domains

    from metarec._errors import ConfigError
    from metarec.bench import run_bench
    from metarec.config import load_scenario

    paths = _two_domains(tmp_path / "d")
    extra = "".join(f"{u}\t{i}\t3\n" for u in range(1, 21) for i in range(41, 49))
    paths["movies_train"].write_text(paths["movies_train"].read_text() + extra)
    warm = tmp_path / "warm.toml"
    warm.write_text(_scenario_text(paths, 'target_domain = "movies"'))
    out = tmp_path / "bench"
    with pytest.raises(
        ConfigError,
        match=r"--algorithms: \['lightgcn'\] are cross-domain methods, which need cold target "
        r"users.*predefined.*warm.*--algorithms popularity\).*cold_domain_users",
    ):
        run_bench(load_scenario(warm), out=out, algorithms=["popularity", "lightgcn"], seeds=1)
    assert not (out / "results.jsonl").exists()  # refused before the first run
