"""When maybe_initialize_distributed() starts jax.distributed, and with what."""

import jax
import pytest

from jaxml.parallel import distributed

CLUSTER_VARS = [
    "TPU_WORKER_HOSTNAMES",
    "MEGASCALE_COORDINATOR_ADDRESS",
    "SLURM_NTASKS",
    "SLURM_JOB_ID",
    "OMPI_COMM_WORLD_SIZE",
    "JAXML_COORDINATOR_ADDRESS",
    "JAXML_NUM_PROCESSES",
    "JAXML_PROCESS_ID",
]


@pytest.fixture
def calls(monkeypatch):
    for var in CLUSTER_VARS:
        monkeypatch.delenv(var, raising=False)
    seen = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: seen.append(kw))
    monkeypatch.setattr(jax.config, "update", lambda *a: None)  # keep this process's settings
    return seen


def test_single_process_does_nothing(calls):
    assert distributed.maybe_initialize_distributed() is False
    assert calls == []


@pytest.mark.parametrize(
    "env",
    [
        {"TPU_WORKER_HOSTNAMES": "10.0.0.1,10.0.0.2"},
        {"SLURM_NTASKS": "4", "SLURM_JOB_ID": "123"},
        {"OMPI_COMM_WORLD_SIZE": "2"},
    ],
)
def test_clusters_are_detected_and_left_to_jax(calls, monkeypatch, env):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert distributed.maybe_initialize_distributed() is True
    assert calls[0]["coordinator_address"] is None  # jax's own cluster detection fills it in


def test_single_host_tpu_or_one_slurm_task_is_not_multihost(calls, monkeypatch):
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "localhost")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_ID", "1")
    assert distributed.maybe_initialize_distributed() is False


def test_explicit_flags_and_environment(calls, monkeypatch):
    assert distributed.maybe_initialize_distributed("127.0.0.1:1234", 2, 1) is True
    assert calls[-1]["coordinator_address"] == "127.0.0.1:1234"
    assert (calls[-1]["num_processes"], calls[-1]["process_id"]) == (2, 1)
    monkeypatch.setenv("JAXML_COORDINATOR_ADDRESS", "10.1.1.1:99")
    monkeypatch.setenv("JAXML_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAXML_PROCESS_ID", "3")
    assert distributed.maybe_initialize_distributed() is True
    assert (
        calls[-1]["coordinator_address"],
        calls[-1]["num_processes"],
        calls[-1]["process_id"],
    ) == ("10.1.1.1:99", 4, 3)


def test_incomplete_flags_are_an_error(calls):
    with pytest.raises(ValueError, match="needs all of"):
        distributed.maybe_initialize_distributed("127.0.0.1:1234", 2, None)
    assert calls == []
