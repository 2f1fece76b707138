"""No raw interaction leaves a client: what it sends is the model update and scalars only."""

from __future__ import annotations

import numpy as np
import pytest

try:
    from metarec.federated.flower import require_flwr

    require_flwr()
except ModuleNotFoundError:  # pragma: no cover - the federated extra is not installed
    pytest.skip("needs flwr: pip install 'metarec[federated]'", allow_module_level=True)

from federated_scenarios import fed_scenario as _scenario  # noqa: E402

from metarec.data.load import load_table  # noqa: E402
from metarec.federated.client import FederatedClient, init_params  # noqa: E402
from metarec.federated.data import client_data  # noqa: E402
from metarec.federated.flower import content_bytes, fit_content, hello, hello_content  # noqa: E402


def _decoded(content):
    from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
    from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict

    wire = recorddict_to_proto(content).SerializeToString()
    proto = ProtoRecordDict()
    proto.ParseFromString(wire)
    return wire, recorddict_from_proto(proto)


def test_a_clients_train_reply_holds_only_the_model_parameters_and_scalar_metrics():
    sc = _scenario(dp_clip=10.0)
    table = load_table(sc.data)
    client = FederatedClient(client_data(table, sc, 1), sc)
    res = client.fit(init_params(sc, client.data), 1)
    wire, back = _decoded(
        fit_content(res.params, res.num_examples, res.metrics)
    )  # what the ClientApp returns
    assert set(back.keys()) == {"arrays", "metrics"}
    assert not back.config_records  # no free-form record that could carry anything else
    shapes = {k: tuple(v.shape) for k, v in client.model.named_parameters()}
    arrays = {k: v.numpy() for k, v in back["arrays"].items()}
    assert {k: a.shape for k, a in arrays.items()} == shapes
    for k, a in arrays.items():
        np.testing.assert_array_equal(a, res.params[k])
    metrics = dict(back["metrics"])
    assert set(metrics) == {"num-examples", "loss", "skipped-steps", "update-norm", "seconds"}
    assert all(isinstance(v, (int, float)) for v in metrics.values())
    assert metrics["num-examples"] == client.data.n_train
    # the wire bytes are the parameter bytes plus a small fixed framing: there is no room for rows
    param_bytes = sum(a.nbytes for a in arrays.values())
    overhead = len(wire) - param_bytes
    assert 0 < overhead < 300 * len(arrays) + 400, overhead  # names, dtypes, shapes, digests
    assert content_bytes(fit_content(res.params, res.num_examples, res.metrics)) == len(wire)
    # and that framing does not grow with the client's data
    big = FederatedClient(client_data(table, sc, 0), sc)
    assert len(big.data.table) != len(client.data.table)
    res_big = big.fit(init_params(sc, big.data), 1)
    assert len(
        _decoded(fit_content(res_big.params, res_big.num_examples, res_big.metrics))[0]
    ) == pytest.approx(len(wire), abs=16)


def test_the_handshake_sends_names_and_counts_only():
    sc = _scenario()
    table = load_table(sc.data)
    client = FederatedClient(client_data(table, sc, 0), sc)
    info, init = hello(lambda i: client, 0)
    _, back = _decoded(hello_content(info, init))
    assert set(back.keys()) == {"info", "arrays"}
    fields = dict(back["info"])
    assert set(fields) == {
        "name",
        "index",
        "num-examples",
        "interactions",
        "meta-train-users",
        "meta-val-users",
        "meta-test-users",
    }
    assert fields["name"] == "d0" and all(
        isinstance(v, int) for k, v in fields.items() if k != "name"
    )
    assert {k: v.numpy().shape for k, v in back["arrays"].items()} == {
        k: tuple(v.shape) for k, v in client.model.named_parameters()
    }
