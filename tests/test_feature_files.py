"""Side-feature files from the scenario ([[data.user_features]] / [[data.item_features]]) and the
Python scenario without a TOML file (dicts or keywords)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import metarec as mr
from metarec._errors import ConfigError, DataError
from metarec.cli.main import main
from metarec.config import DataConfig, FeatureFile, load_scenario
from metarec.data.feature_files import read_feature_files
from metarec.data.load import load_table

ROOT = Path(__file__).resolve().parent.parent


def _files(tmp: Path) -> dict[str, Path]:
    (tmp / "ratings.csv").write_text(
        "user,item,rating\n" + "".join(f"u{u},i{i},{1 + (u + i) % 5}\n" for u in range(30) for i in range(25))
    )  # fmt: skip
    (tmp / "users.csv").write_text(
        "uid,age,job\n" + "".join(f"u{u},{20 + u},{'ab'[u % 2]}\n" for u in range(32))
    )
    (tmp / "items.tsv").write_text(
        "".join(f"i{i}\tTitle {i}\t{i % 2}\t{(i // 2) % 2}\n" for i in range(25))
    )
    return {p.stem: p for p in tmp.iterdir()}


def _feature_params(run: Path) -> set[str]:
    """Names of the feature-embedding parameters of a run's best checkpoint."""
    state = torch.load(run / "checkpoints" / "best.pt", weights_only=False)
    return {k for k in state["params"] if k.startswith(("user_features.", "item_features."))}


def _data(tmp: Path, **extra) -> dict:
    f = _files(tmp)
    return {
        "source": "csv",
        "path": str(f["ratings"]),
        "user_features": [
            {
                "path": str(f["users"]),
                "id": "uid",
                "columns": {"age": "numeric", "job": "categorical"},
            }
        ],
        "item_features": [
            {
                "path": str(f["items"]),
                "id": "item",
                "header": False,
                "names": ["item", "title", "drama", "comedy"],
                "flags": {"genre": ["drama", "comedy"]},
            }
        ],
        **extra,
    }


def test_feature_files_load_with_the_interactions(tmp_path):
    sc = load_scenario(data=_data(tmp_path))
    t = load_table(sc.data)
    assert sorted(t.user_features.vocabs) == ["job"] and t.user_features.numeric_names == ["age"]
    # two users have features and no interactions: they still get an index (cold users)
    assert t.n_users - 1 == 32 and t.user_features.present[1:].all()
    genre = t.item_features.categorical["genre"]  # (items, 2) codes of the flags set
    vocab = t.item_features.vocabs["genre"]
    i3 = int(t.item_ids.encode(["i3"])[0])  # 3 % 2 = 1 (drama), (3 // 2) % 2 = 1 (comedy)
    i0 = int(t.item_ids.encode(["i0"])[0])
    assert sorted(vocab.decode(genre[i3][genre[i3] > 0])) == ["comedy", "drama"]
    assert (genre[i0] == 0).all()  # no flag set: no genre


def test_feature_file_keys_are_checked_like_the_rest(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"unknown key 'data.user_features\[0\].colums' \(did you mean 'columns'\?\)",
    ):
        load_scenario(data={"source": "csv", "path": "r.csv",
                            "user_features": [{"path": "u.csv", "id": "u", "colums": {}}]})  # fmt: skip
    with pytest.raises(
        ConfigError,
        match=r"columns.age='numerical': unknown feature kind \(did you mean 'numeric'\?\)",
    ):
        FeatureFile("u.csv", id="u", columns={"age": "numerical"})  # fmt: skip
    with pytest.raises(ConfigError, match=r"header=false: a file without a header needs names"):
        FeatureFile("u.csv", id="u", header=False, columns={"age": "numeric"})
    with pytest.raises(ConfigError, match=r"names=.*no column 'gender'.*name every column"):
        FeatureFile("u.csv", id="u", names=("u", "age"), columns={"gender": "categorical"})
    with pytest.raises(ConfigError, match=r"'u' is the id column"):
        FeatureFile("u.csv", id="u", columns={"u": "categorical"})
    with pytest.raises(
        ConfigError, match=r'read with source = "csv", not source=\'movielens-100k\''
    ):
        DataConfig(source="movielens-100k", path="x",
                   user_features=[{"path": "u.csv", "id": "u", "columns": {"a": "numeric"}}])  # fmt: skip
    with pytest.raises(
        ConfigError, match=r"user_features\[1\].columns.age: feature 'age' is already read"
    ):
        DataConfig(source="csv", path="r.csv", user_features=[
            {"path": "a.csv", "id": "u", "columns": {"age": "numeric"}},
            {"path": "b.csv", "id": "u", "columns": {"age": "numeric"}}])  # fmt: skip


def test_feature_file_errors_name_the_file_and_the_fix(tmp_path):
    f = _files(tmp_path)
    with pytest.raises(
        DataError,
        match=r"users.csv: data.user_features\[0\].columns.jobb: column 'jobb' not found.*did you mean 'job'",
    ):
        read_feature_files(
            [FeatureFile(str(f["users"]), id="uid", columns={"jobb": "categorical"})], "user"
        )
    dup = tmp_path / "dup.csv"
    dup.write_text("uid,age\nu1,3\nu1,4\n")
    with pytest.raises(
        DataError, match=r"dup.csv: 1 duplicated user id\(s\) in column 'uid', first 'u1'"
    ):
        read_feature_files([FeatureFile(str(dup), id="uid", columns={"age": "numeric"})], "user")
    bad = tmp_path / "bad.csv"
    bad.write_text("item,drama\ni1,yes\ni2,maybe\n")
    with pytest.raises(
        DataError, match=r"flags.genre: column 'drama' holds 'maybe' at row 1, not a 0/1 flag"
    ):
        read_feature_files([FeatureFile(str(bad), id="item", flags={"genre": ("drama",)})], "item")
    with pytest.raises(
        DataError, match=r"data.item_features\[0\].domain: data.namespace names 'item'"
    ):
        read_feature_files(
            [FeatureFile(str(bad), id="item", columns={"drama": "categorical"})],
            "item",
            namespace=("item",),
        )
    with pytest.raises(
        DataError, match=r"file not found: .*missing.csv; check data.user_features\[0\].path"
    ):
        read_feature_files(
            [FeatureFile(str(tmp_path / "missing.csv"), id="u", columns={"a": "numeric"})], "user"
        )


def test_numeric_and_namespaced_ids_match_the_interactions(tmp_path):
    (tmp_path / "r.csv").write_text("user,item,rating,domain\n01,7,5,books\n2,7,4,films\n")
    (tmp_path / "u.csv").write_text("id,age\n1,30\n2,40\n")
    (tmp_path / "b.csv").write_text("id,kind\n7,novel\n")
    sc = load_scenario(
        data={
            "source": "csv",
            "path": str(tmp_path / "r.csv"),
            "ids": "numeric",
            "namespace": ["item"],
            "columns": {"domain": "domain"},
            "user_features": [{"path": str(tmp_path / "u.csv"), "id": "id", "columns": {"age": "numeric"}}],
            "item_features": [{"path": str(tmp_path / "b.csv"), "id": "id", "domain": "books",
                               "columns": {"kind": "categorical"}}],
        }
    )  # fmt: skip
    t = load_table(sc.data)
    assert t.n_users - 1 == 2 and t.user_features.present[1:].all()  # "01" is user 1
    books7 = int(t.item_ids.encode(["books:7"])[0])
    films7 = int(t.item_ids.encode(["films:7"])[0])
    kind = t.item_features.categorical["kind"]
    assert kind[books7, 0] > 0 and kind[films7, 0] == 0


def test_scenario_from_dicts_and_keywords_equals_the_file():
    path = ROOT / "tasks" / "synthetic-cold-start.toml"
    from_file = load_scenario(path)
    import tomllib

    raw = tomllib.loads(path.read_text())
    assert load_scenario(raw) == from_file
    assert mr.Scenario(**raw) == from_file
    assert load_scenario(path, train={"steps": 7}).train.steps == 7
    assert load_scenario(raw, ["train.steps=9"], train={"steps": 7}).train.steps == 9  # --set wins
    with pytest.raises(
        ConfigError, match=r"unknown key 'protocol.n_suport' \(did you mean 'n_support'\?\)"
    ):
        mr.Scenario(protocol={"n_suport": 5})
    with pytest.raises(ConfigError, match=r"scenario: unknown key 'algorithm.nme'"):
        load_scenario({"algorithm": {"nme": "maml"}})
    with pytest.raises(ConfigError, match=r"expected a Scenario or a dict of sections"):
        mr.train_method(["maml"], "out")  # type: ignore[arg-type]


def test_train_method_takes_a_dict_with_feature_files(tmp_path):
    data = _data(tmp_path)
    sc = {
        "data": data,
        "protocol": {
            "n_support": 5,
            "n_query": 5,
            "min_interactions": 10,
            "max_interactions": "none",
        },
        "model": {"name": "melu", "embedding_dim": 4, "hidden": [8]},
        "algorithm": {"name": "maml", "inner_steps": 1, "meta_batch": 4},
        "train": {"steps": 2, "val_every": 1, "val_tasks": 4, "progress": False},
    }
    mr.train_method(sc, tmp_path / "run", evaluate_test=False)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["name"] == "scenario" and config["data"]["user_features"][0]["id"] == "uid"
    assert _feature_params(tmp_path / "run") >= {
        "user_features.embeddings.job.weight",
        "item_features.embeddings.genre.weight",
    }


@pytest.mark.data
def test_ml100k_raw_files_train_a_feature_model_from_the_scenario_alone(
    shared_data, tmp_path, capsys
):
    run = tmp_path / "run"
    rc = main(["train", "ml100k-raw-features", "--out", str(run), "--data-root", str(shared_data),
               "--set", "train.progress=false"])  # fmt: skip
    assert rc == 0
    test = json.loads((run / "test_metrics.json").read_text())["states"]["meta-test"]
    # cold users (never trained on) with 10 ratings each; the best constant predictor (the
    # median rating) scores MAE 0.894 over ML-100K (the mean 0.945): the feature model beats it
    assert test["n_tasks"] > 150 and test["mae"] < 0.88
    assert _feature_params(run) >= {
        "user_features.embeddings.occupation.weight",
        "user_features.embeddings.gender.weight",
        "item_features.embeddings.genre.weight",
    }


@pytest.mark.data
def test_ml100k_raw_files_train_the_same_from_python(shared_data, tmp_path):
    root = shared_data / "movielens-100k" / "ml-100k"
    genres = ["unknown", "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary",
              "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
              "Thriller", "War", "Western"]  # fmt: skip
    sc = mr.Scenario(
        name="ml100k-raw-features",
        description="MovieLens-100K from its raw files with user and item features: cold users, MeLU + MAML",
        data={
            "source": "csv", "path": str(root / "u.data"), "format": "tsv", "header": False,
            "names": ["user", "item", "rating", "timestamp"], "columns": {"timestamp": "timestamp"},
            "user_features": [mr.FeatureFile(str(root / "u.user"), id="user", format="csv", sep="|", header=False,
                                             names=("user", "age", "gender", "occupation", "zip"),
                                             columns={"age": "numeric", "gender": "categorical",
                                                      "occupation": "categorical"})],
            "item_features": [{"path": str(root / "u.item"), "id": "item", "format": "csv", "sep": "|",
                               "header": False, "encoding": "latin-1",
                               "names": ["item", "title", "release", "video_release", "url", *genres],
                               "flags": {"genre": genres}}],
        },
        protocol={"max_interactions": "none"},
        metrics={"names": ["mae", "rmse", "ndcg@10"]},
        model={"name": "melu", "embedding_dim": 16, "hidden": [32, 32]},
        algorithm={"name": "maml", "inner_steps": 2, "inner_lr": 0.05, "meta_batch": 32},
        train={"steps": 300, "outer_lr": 0.003, "val_every": 50, "val_tasks": 256},
        bench={"algorithms": ["global", "finetune", "popularity", "maml", "anil"], "shots": [1, 5, 10]},
    )  # fmt: skip
    # the same scenario as the file, so the same training (its result is tested above)
    assert sc == load_scenario(ROOT / "tasks" / "ml100k-raw-features.toml", data_root=shared_data)
    short = dataclasses.replace(
        sc, train=dataclasses.replace(sc.train, steps=20, val_every=10, progress=False)
    )
    mr.train_method(short, tmp_path / "run", evaluate_test=False)
    assert _feature_params(tmp_path / "run") >= {
        "user_features.embeddings.occupation.weight",
        "item_features.embeddings.genre.weight",
    }
    t = load_table(sc.data)
    assert t.summary()["user_features"] == ["gender", "occupation", "age"]
    assert (
        np.count_nonzero(t.item_features.categorical["genre"][1:, 0]) == 1682
    )  # every movie has a genre
