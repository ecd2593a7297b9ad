"""The private JAX names jaxml uses (all in jaxml/parallel/jax_internals.py) still exist, and
the public ones that replaced private uses behave as jaxml assumes."""

import jax
import pytest

from jaxml.parallel import jax_internals


def test_cloud_tpu_detector_is_where_jaxml_expects_it():
    # Raises JaxInternalsMoved, whose message says what moved and which file to update.
    module = jax_internals.cloud_tpu_cluster_module()
    assert isinstance(module.running_in_cloud_tpu_vm, bool)


def test_no_cloud_tpu_slice_on_this_machine():
    assert jax.default_backend() != "tpu" or pytest.skip("on a TPU VM the answer may be True")
    assert jax_internals.on_cloud_tpu_vm_slice() is False


def test_a_moved_module_fails_loudly_but_detection_degrades(monkeypatch, caplog):
    monkeypatch.setattr(jax_internals, "_CLOUD_TPU_MODULE", "jax._src.clusters.moved_away")
    with pytest.raises(jax_internals.JaxInternalsMoved, match="update jaxml/parallel/jax_int"):
        jax_internals.cloud_tpu_cluster_module()
    assert jax_internals.on_cloud_tpu_vm_slice() is False
    assert "cannot detect a Cloud TPU VM slice" in caplog.text


def test_public_apis_that_replace_private_ones():
    # jaxml.training.loop: the preemption sync manager exists iff these say so.
    assert isinstance(jax.config.jax_enable_preemption_service, bool)
    assert jax.distributed.is_initialized() is False
