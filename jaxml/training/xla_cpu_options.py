"""XLA:CPU compiler options for the train step, set per compilation (not process flags).

XLA:CPU hands dots, reductions and convolutions to YNNPACK by default. For a convolution's
weight gradient (batch and space contracted: a "convolution" whose kernel is the whole
feature map) YNNPACK is 5-20x slower than XLA's own Eigen convolution: 3.7 s vs 0.3 s for
one 3x3, 256-channel conv of CIFAR-10's DDPM++ at batch 8 (32x32) on a 2-core CPU
(benchmarks/diffusion_throughput.py has the whole-step numbers). So the train step keeps
YNNPACK for dots and reductions and leaves convolutions to Eigen.

These are `jax.jit(compiler_options=...)`: they change only the programs they are given,
enter the compilation-cache key, and need nothing set before JAX starts.
"""

from __future__ import annotations

import functools
import logging

import jax

log = logging.getLogger(__name__)

# The default YNNPACK fusion list less LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION.
CPU_TRAIN_STEP_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": (
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
    ),
}


@functools.cache
def _accepted(platform: str) -> bool:
    """Whether this jaxlib's compiler for `platform` knows the options (an older or newer
    XLA may not: then the step compiles with XLA's defaults)."""
    try:
        x = jax.device_put(0.0, jax.devices(platform)[0])  # compile for that backend
        jax.jit(lambda v: v + 1, compiler_options=CPU_TRAIN_STEP_OPTIONS).lower(x).compile()
        return True
    except Exception as e:  # noqa: BLE001 - any rejection means "use the defaults"
        log.info("XLA:CPU train-step options not accepted (%s); using XLA's defaults", e)
        return False


def train_step_compiler_options(platform: str) -> dict | None:
    """Options for a train step that runs on `platform` (a device's .platform): the CPU
    options above when the compiler accepts them, else None (XLA's defaults)."""
    if platform != "cpu" or not _accepted(platform):
        return None
    return dict(CPU_TRAIN_STEP_OPTIONS)
