"""S5 state-space models: HiPPO-N init, discretization, linear recurrences, the S5 SSM."""

from jaxml.ssm.discretize import discretize, discretize_bilinear, discretize_zoh
from jaxml.ssm.init import hippo_n_init, make_dplr_hippo, make_hippo
from jaxml.ssm.optimizer import s5_optimizer, s5_param_labels, s5_schedules
from jaxml.ssm.recurrence import linear_recurrence, register_impl
from jaxml.ssm.s5 import S5SSM

__all__ = [
    "S5SSM",
    "discretize",
    "discretize_bilinear",
    "discretize_zoh",
    "hippo_n_init",
    "linear_recurrence",
    "make_dplr_hippo",
    "make_hippo",
    "register_impl",
    "s5_optimizer",
    "s5_param_labels",
    "s5_schedules",
]
