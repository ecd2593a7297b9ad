"""Diffusion math core: EDM/VP/VE preconditioning and losses, PFGM++, samplers, ideal denoisers."""

from jaxml.diffusion import ideal, losses, pfgmpp, preconditioning, samplers
from jaxml.diffusion.ideal import finite_dataset_denoiser, gmm_denoiser, ideal_network
from jaxml.diffusion.losses import make_denoising_loss, weighted_denoising_error
from jaxml.diffusion.preconditioning import (
    EDMPrecond,
    VEPrecond,
    VPPrecond,
    get_preconditioner,
    make_denoiser,
    precondition,
)
from jaxml.diffusion.samplers import edm_sigmas, get_sampler

__all__ = [
    "ideal",
    "losses",
    "pfgmpp",
    "preconditioning",
    "samplers",
    "finite_dataset_denoiser",
    "gmm_denoiser",
    "ideal_network",
    "make_denoising_loss",
    "weighted_denoising_error",
    "EDMPrecond",
    "VEPrecond",
    "VPPrecond",
    "get_preconditioner",
    "make_denoiser",
    "precondition",
    "edm_sigmas",
    "get_sampler",
]
