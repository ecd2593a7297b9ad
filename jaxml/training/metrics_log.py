"""Metrics to a JSON-lines file and TensorBoard event files (tensorboardX: no TensorFlow)."""

import json
import math
import os
import time

import jax
from etils import epath


class MetricsLog:
    """Writes on process 0 only; `path/metrics.jsonl` gets one object per call."""

    def __init__(self, workdir: str | os.PathLike, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._jsonl = self._tb = None
        if self.enabled:
            workdir = epath.Path(workdir)  # local or gs://
            workdir.mkdir(parents=True, exist_ok=True)
            self._jsonl = (workdir / "metrics.jsonl").open("a")
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(workdir / "tensorboard"))

    def write(self, step: int, metrics: dict, prefix: str = ""):
        if not self.enabled:
            return
        row = {f"{prefix}{k}": float(v) for k, v in metrics.items()}
        self._jsonl.write(json.dumps({"step": int(step), "time": time.time(), **row}) + "\n")
        self._jsonl.flush()
        for k, v in row.items():
            if math.isfinite(v):
                self._tb.add_scalar(k, v, int(step))

    def close(self):
        if self.enabled:
            self._jsonl.close()
            self._tb.close()
