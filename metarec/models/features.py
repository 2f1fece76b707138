"""Side-feature embeddings looked up by entity index.

A :class:`FeatureEmbedding` holds one entity type's encoded features as buffers (so a batch
carries indices only) and one embedding table per categorical feature. Multi-valued features
(``L > 1`` codes per entity) are mean-pooled over their non-zero codes; code 0 is padding or an
unknown value and contributes nothing (an entity with no known value gets the zero vector).
Numeric features are appended as they are (already standardised by the data stage). Text
features (fixed pretrained embeddings, :mod:`metarec.data.text`) are mapped to ``dim`` values
each by a learned linear projection without bias, so an entity without text gets zeros there.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from metarec.data.features import FeatureTable

__all__ = ["FeatureEmbedding"]


class FeatureEmbedding(nn.Module):
    """Embed entity indices through their side features: ``(...,) -> (..., out_dim)``.

    Args:
        table: the encoded :class:`~metarec.data.features.FeatureTable`.
        dim: embedding size of each categorical feature.
        init_std: standard deviation of the normal initialisation.

    Attributes:
        features: original categorical feature names, in the order of the output blocks.
        text_features: text feature names; their blocks follow the categorical ones.
        out_dim: ``dim * (n_categorical + n_text) + n_numeric``.

    Parameters are named ``embeddings.<feature>.weight`` and ``text.<feature>.weight``
    ``(dim, D)`` (non-identifier characters of the feature name become ``_``); buffers
    ``codes_<feature>`` ``int64 (n_entities, L)``, ``text_<feature>`` ``(n_entities, D)`` and
    ``numeric`` ``(n_entities, d)``. Without text features the module is exactly the
    categorical-and-numeric one (same parameters, same initial values).
    """

    numeric: torch.Tensor  # buffer (n_entities, d)

    def __init__(self, table: FeatureTable, dim: int, init_std: float = 0.1) -> None:
        super().__init__()
        self.features: list[str] = sorted(table.categorical)
        self._keys: list[str] = _safe_keys(self.features)
        sizes = table.vocab_sizes()
        self.embeddings = nn.ModuleDict()
        for name, key in zip(self.features, self._keys, strict=True):
            emb = nn.Embedding(sizes[name], dim)
            nn.init.normal_(emb.weight, std=init_std)
            self.embeddings[key] = emb
            codes = torch.as_tensor(table.categorical[name], dtype=torch.int64)
            self.register_buffer(f"codes_{key}", codes)  # (n_entities, L)
        numeric = torch.as_tensor(table.numeric, dtype=torch.get_default_dtype())
        self.register_buffer("numeric", numeric)  # (n_entities, d)
        self.numeric_names: list[str] = list(table.numeric_names)
        self.text_features: list[str] = sorted(table.text)
        self._text_keys: list[str] = _safe_keys(self.text_features)
        if (
            self.text_features
        ):  # created after the categorical tables: their initial values do not move
            self.text = nn.ModuleDict()
            for name, key in zip(self.text_features, self._text_keys, strict=True):
                vecs = torch.as_tensor(table.text[name], dtype=torch.get_default_dtype())
                self.register_buffer(f"text_{key}", vecs)  # (n_entities, D)
                proj = nn.Linear(int(vecs.shape[1]), dim, bias=False)
                nn.init.normal_(proj.weight, std=init_std)
                self.text[key] = proj
        self.n_entities = table.n_entities
        self.out_dim = dim * (len(self.features) + len(self.text_features)) + int(numeric.shape[1])

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """``idx`` ``int64 (...,)`` entity indices -> ``(..., out_dim)``.

        With more lookups than entities (ranking a catalogue: tasks x items), every entity is
        embedded once and the rows are gathered: the same values, computed once per entity.
        """
        if idx.numel() > self.n_entities:
            return self._embed(torch.arange(self.n_entities, device=idx.device))[idx]
        return self._embed(idx)

    def _embed(self, idx: torch.Tensor) -> torch.Tensor:
        blocks = []
        for key in self._keys:
            codes = getattr(self, f"codes_{key}")[idx]  # (..., L)
            vecs = self.embeddings[key](codes)  # (..., L, dim)
            real = (codes != 0).unsqueeze(-1).to(vecs.dtype)  # (..., L, 1)
            count = real.sum(dim=-2).clamp_min(1.0)  # (..., 1)
            blocks.append((vecs * real).sum(dim=-2) / count)  # (..., dim)
        for key in self._text_keys:
            blocks.append(
                self.text[key](getattr(self, f"text_{key}")[idx])
            )  # (..., D) -> (..., dim)
        if self.numeric.shape[1]:
            blocks.append(self.numeric[idx])  # (..., d)
        return torch.cat(blocks, dim=-1)  # (..., out_dim)


def _safe_keys(names: list[str]) -> list[str]:
    keys: list[str] = []
    for name in names:
        key = re.sub(r"\W", "_", name) or "feature"
        base, k = key, 1
        while key in keys:
            key, k = f"{base}_{k}", k + 1
        keys.append(key)
    return keys
