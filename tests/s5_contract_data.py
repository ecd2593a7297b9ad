"""Small synthetic records in the S5 data contract's format (what the paper datasets' sources
give): `inputs` int32 tokens (L,) / (2, L) or float32 (L, C), `lengths` int32 () / (2,),
`label` int32 (). Used to run jaxml.tasks.classification end to end without any dataset."""

import numpy as np

from jaxml.tasks import classification


def records(kind: str, n: int, *, length: int, seed: int, classes: int, vocab=6, channels=2):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        label = np.int32(rng.integers(classes))
        if kind == "continuous":
            x = rng.normal(size=(length, channels)).astype(np.float32)
            x[:, 0] += 0.5 * label  # a learnable signal
            out.append({"inputs": x, "lengths": np.int32(length), "label": label})
            continue
        docs = 2 if kind == "retrieval" else 1
        lengths = rng.integers(length // 3, length + 1, size=docs).astype(np.int32)
        tokens = np.zeros((docs, length), np.int32)  # 0 = padding
        for d, n_d in enumerate(lengths):
            tokens[d, :n_d] = rng.integers(1, vocab, size=n_d)
        if kind == "retrieval":
            out.append({"inputs": tokens, "lengths": lengths, "label": label})
        else:
            out.append({"inputs": tokens[0], "lengths": lengths[0], "label": label})
    return out


def use_fake_sources(monkeypatch, kind: str, splits: dict, **kw):
    """Makes classification read `splits` {name: (n, length)} of synthetic records."""
    made = {
        split: records(kind, n, length=length, seed=i, **kw)
        for i, (split, (n, length)) in enumerate(splits.items())
    }

    def fake(config, split):
        return made[split]

    monkeypatch.setattr(classification, "_data_source", fake)
    return made
