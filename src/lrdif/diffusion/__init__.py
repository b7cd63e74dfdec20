"""Stage-2 diffusion on the EPR (paper Sec. 3.3): a weight-free schedule and the denoiser."""

from lrdif.diffusion.denoiser import Denoiser, reverse_process
from lrdif.diffusion.schedule import NoiseSchedule, make_betas

__all__ = ["Denoiser", "NoiseSchedule", "make_betas", "reverse_process"]
