"""Text side features: titles embedded once by a pretrained encoder, then a model scores an item
nobody rated from its text alone.

``FeatureSpec("title", "text")`` embeds the strings with WordLlama (weights inside its wheel,
``pip install "metarec[text]"``, no download) and caches the array on disk by content hash.
Here a tiny stand-in encoder keeps the example independent of the extra.

Run: python examples/text_features.py
"""

import os
import tempfile

import numpy as np
import pandas as pd
import torch

from metarec.data.features import FeatureSpec
from metarec.data.table import Columns, InteractionTable
from metarec.data.text import encode_texts
from metarec.models import build_model


class Letters:
    """A stand-in encoder (bag of letters); drop ``encoder=`` to use the pretrained default."""

    name = "letters"

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), 26), dtype=np.float32)
        for k, t in enumerate(texts):
            for ch in t.lower():
                if "a" <= ch <= "z":
                    out[k, ord(ch) - 97] += 1.0
        return out


with tempfile.TemporaryDirectory() as cache:
    vecs = encode_texts(["Toy Story", "Heat"], encoder=Letters(), cache_dir=cache)
    print(
        f"encoded {vecs.shape[0]} texts to {vecs.shape[1]} values each; {len(os.listdir(cache))} cache file(s)"
    )
    os.environ["METAREC_CACHE"] = cache  # where FeatureSpec text features cache their arrays
    inter = pd.DataFrame(
        {"user": [1, 1, 2, 2], "item": [1, 2, 1, 3], "rating": [5.0, 1.0, 4.0, 2.0]}
    )
    items = pd.DataFrame(
        {"item": [1, 2, 3, 4], "title": ["space war", "love story", "comedy", "space battle"]}
    )
    table = InteractionTable.from_frame(
        inter,
        Columns(),
        item_features=items,
        item_feature_specs=[FeatureSpec("title", "text", encoder=Letters())],
    )  # type: ignore[arg-type]
    model = build_model("melu", table, embedding_dim=4, hidden=(8,))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    u, i, y = (
        torch.from_numpy(table.users),
        torch.from_numpy(table.items),
        torch.from_numpy(table.ratings.astype(np.float32)),
    )
    for _ in range(200):
        loss = (model(u, i) - y).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    cold = int(table.item_ids.encode(np.array([4]))[0])  # "space battle": never rated
    with torch.no_grad():
        pred = model(u[:1], torch.tensor([cold])).item()
    print(f"never-rated 'space battle' scores {pred:.2f} for user 1, from its text alone")
