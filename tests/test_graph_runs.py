"""The meta-learnable LightGCN in a run: meta-trained over its meta-train edges, resumed
bit-exactly, loaded back exactly without data, and a tampered graph refused."""

from __future__ import annotations

import shutil

import pytest
import torch

from metarec._errors import CheckpointError
from metarec.config import load_scenario
from metarec.data.load import load_table
from metarec.episodes.build import build_splits
from metarec.models.graph import LightGCN, user_item_pairs
from metarec.recommend.load import load_run
from metarec.runs.checkpoint import load_best, load_tensors, save_tensors
from metarec.train.loop import build_training_model, train

OVER = [
    "data.synthetic.n_domains=4",
    "data.synthetic.n_users=40",
    "data.synthetic.n_items=60",
    "data.synthetic.density=0.3",
    "protocol.n_support=5",
    "protocol.n_query=5",
    "protocol.min_interactions=10",
    "model.name=lightgcn",
    "model.embedding_dim=4",
    "train.val_every=5",
    "train.val_tasks=16",
    "train.checkpoint_every=5",
    "train.progress=false",
    "algorithm.meta_batch=8",
]


@pytest.fixture(scope="module")
def data():
    sc = load_scenario("tasks/synthetic-cold-start.toml", [*OVER, "train.steps=10"])
    table = load_table(sc.data)
    return sc, table, build_splits(table, sc.protocol)


@pytest.fixture(scope="module")
def full_run(data, tmp_path_factory):
    sc, table, splits = data
    out = tmp_path_factory.mktemp("gcn") / "full"
    train(sc, out, table=table, splits=splits, evaluate_test=False)
    return out


def test_lightgcn_trains_over_meta_train_edges_and_resumes_bit_exact(
    data, full_run, tmp_path
) -> None:
    sc, table, splits = data
    rows = splits.pools[splits.train].rows
    ck = load_tensors(full_run / "checkpoints" / "last.pt")
    users, items = user_item_pairs(
        ck["buffers"]["edge_src"], ck["buffers"]["edge_dst"], table.n_users, table.n_items
    )
    want = set(zip(table.users[rows].tolist(), table.items[rows].tolist()))
    assert users.size and set(zip(users.tolist(), items.tolist())) == want  # meta-train pairs
    part = tmp_path / "part"
    train(sc, part, table=table, splits=splits, stop_after=5, evaluate_test=False)
    train(sc, part, table=table, splits=splits, resume=True, evaluate_test=False)
    a, b = ck, load_tensors(part / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 10
    for k in a["params"]:
        assert torch.equal(a["params"][k], b["params"][k]), k
    for k in a["buffers"]:
        assert torch.equal(a["buffers"][k], b["buffers"][k]), k


def test_lightgcn_run_loads_exactly_without_data(data, full_run) -> None:
    sc, table, splits = data
    meta = load_run(full_run)
    assert isinstance(meta.model, LightGCN) and len(meta.table) == 0  # no interactions at load
    ref = build_training_model(sc, table, splits)
    best = load_best(full_run)
    ref.load_state_dict({**best["params"], **best["buffers"]})
    for k, v in ref.state_dict().items():
        assert torch.equal(meta.model.state_dict()[k], v), k
    users = torch.tensor([[1, 2, 3, 4]])
    items = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(
            meta.model(users, items), ref.eval()(users, items), rtol=0, atol=0
        )
    # the graph matters: without the user-item edges the scores differ
    bare = LightGCN(table.n_users, table.n_items, ref.config, item_features=table.item_features)
    bare.load_state_dict(
        {
            **best["params"],
            **{k: v for k, v in best["buffers"].items() if not k.startswith("edge_")},
        },
        strict=False,
    )
    with torch.no_grad():
        assert not torch.allclose(bare.eval()(users, items), ref(users, items))


def test_tampered_graph_is_refused(full_run, tmp_path) -> None:
    bad = tmp_path / "run"
    shutil.copytree(full_run, bad)
    path = bad / "checkpoints" / "best.pt"
    ck = load_tensors(path)
    w = ck["buffers"]["edge_weight"].clone()
    w[0] *= 2.0
    ck["buffers"]["edge_weight"] = w
    save_tensors(path, ck)
    with pytest.raises(
        CheckpointError, match=r"best\.pt.*differ from the graph rebuilt.*re-create it"
    ):
        load_run(bad)
    ck["buffers"]["edge_dst"] = ck["buffers"]["edge_dst"][:-1]
    save_tensors(path, ck)
    with pytest.raises(CheckpointError, match="equal-length vectors"):
        load_run(bad)
