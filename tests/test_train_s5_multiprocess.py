"""Multi-host: 2 processes (jax.distributed over gloo, 2 CPU devices each) match 1 process."""

import jax
import numpy as np
import s5_runs


def test_two_processes_match_one(tmp_path):
    data_dir = tmp_path / "tfds"
    single = tmp_path / "single"
    s5_runs.run(single, data_dir, "--config.total_steps=8", devices=1)
    multi = tmp_path / "multi"
    outputs = s5_runs.finish(s5_runs.start_processes(multi, data_dir, "--config.total_steps=8"))
    assert "over 2 processes" in outputs[0] and "'data': 4" in outputs[0]
    a, b = s5_runs.load_state(single, 8), s5_runs.load_state(multi, 8)
    for x, y in zip(jax.tree.leaves(a["params"]), jax.tree.leaves(b["params"])):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    # Not trivially equal: training moved the parameters away from step 4.
    c = s5_runs.load_state(single, 4)
    assert any(
        not np.allclose(x, y)
        for x, y in zip(jax.tree.leaves(a["params"]), jax.tree.leaves(c["params"]))
    )
