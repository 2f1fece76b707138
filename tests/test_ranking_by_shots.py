"""Hyper-parameters chosen per support size (metarec.methods.ranking.by_shots)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from metarec._errors import CheckpointError
from metarec.episodes.batch import EpisodeSet
from metarec.methods.ranking._common import ItemScoresAdapted
from metarec.methods.ranking.by_shots import ByShots, by_shots_loader, choose, nearest_shot


class _Member:
    """Scores every item with one constant (its ``c``): which member adapted a task shows."""

    def __init__(self, c: float, n_items: int = 4) -> None:
        self.c, self.n = c, n_items

    def adapt(self, support: EpisodeSet, *, steps: Any = None, lr: Any = None) -> ItemScoresAdapted:
        return ItemScoresAdapted(torch.full((support.n_tasks, self.n), self.c))

    def config(self) -> dict[str, Any]:
        return {"c": self.c}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"c": torch.tensor(self.c)}

    def load_state_dict(self, state) -> None:
        self.c = float(state["c"])

    @classmethod
    def build(cls, name, config, table) -> _Member:
        return cls(0.0)


def _support(sizes: list[int]) -> EpisodeSet:
    n = max(sizes)
    mask = torch.tensor([[j < s for j in range(n)] for s in sizes])
    z = torch.zeros(len(sizes), n, dtype=torch.long)
    return EpisodeSet(z, z + 1, torch.ones(len(sizes), n), mask)


def test_nearest_shot_in_log_scale_and_choice_per_size():
    assert nearest_shot([1, 5, 20], torch.tensor([1, 2, 3, 9, 11])).tolist() == [0, 0, 1, 1, 2]
    assert choose([[0.1, 0.5], [0.2, 0.4], [float("nan"), 0.9]]) == [1, 2]


def test_each_task_is_adapted_by_the_member_of_its_size_in_task_order():
    m = ByShots("ease", None, [1, 5, 20], [0, 1, 1], [_Member(1.0), _Member(2.0)])
    out = m.adapt(_support([20, 1, 5, 2, 30]))
    assert out.rows[:, 0].tolist() == [2.0, 1.0, 2.0, 1.0, 2.0]


def test_round_trip_through_the_loader_and_a_foreign_state():
    m = ByShots("ease", None, [1, 5], [0, 1], [_Member(1.0), _Member(2.0)])
    shell = by_shots_loader(_Member.build)("ease", m.config(), None)
    assert isinstance(shell, ByShots) and shell.which == [0, 1]
    shell.load_state_dict(m.state_dict())
    assert [x.c for x in shell.members] == [1.0, 2.0]
    with pytest.raises(CheckpointError, match="belong to no member"):
        shell.load_state_dict({**m.state_dict(), "member7.c": torch.tensor(1.0)})
    single = by_shots_loader(_Member.build)("ease", {"c": 3.0}, None)
    assert isinstance(single, _Member)
