"""The scheduler reproduces Kiwi-Edit's sampler: shifted linspace sigmas, t = 1000 sigma, Euler steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparkle_video.models import make_scheduler, sampler_sigmas
from sparkle_video.models.configs import SIGMA_MIN


@pytest.mark.parametrize("steps", [1, 4, 50])
def test_sigmas_and_timesteps_equal_formula(steps: int) -> None:
    s = 5.0
    raw = np.linspace(1.0, SIGMA_MIN, steps + 1)[:-1]
    shifted = s * raw / (1 + (s - 1) * raw)
    sched = make_scheduler()
    sched.set_timesteps(sigmas=sampler_sigmas(steps))
    np.testing.assert_allclose(sched.sigmas[:-1].numpy(), shifted, rtol=1e-5, atol=1e-6)
    assert float(sched.sigmas[-1]) == 0.0
    np.testing.assert_allclose(sched.timesteps.numpy(), 1000 * shifted, rtol=1e-5, atol=1e-3)


def test_euler_step() -> None:
    sched = make_scheduler()
    sched.set_timesteps(sigmas=sampler_sigmas(3))
    x = torch.ones(2, 3)
    v = torch.full((2, 3), 0.5)
    out = sched.step(v, sched.timesteps[0], x, return_dict=False)[0]
    expected = x + v * (sched.sigmas[1] - sched.sigmas[0])
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("sigma_min", [SIGMA_MIN, 0.0])
def test_whole_trajectory_equals_hand_written_euler(sigma_min: float) -> None:
    """Kiwi-Edit's loop, written out: sigma_i shifted, t = 1000 sigma_i, x += v (sigma_{i+1} - sigma_i), last to 0."""
    steps, s = 6, 5.0
    raw = np.linspace(1.0, sigma_min, steps + 1)[:-1]
    sig = [float(v) for v in s * raw / (1 + (s - 1) * raw)] + [0.0]

    def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
        return 0.1 * x + t / 1000.0

    x_ref = torch.linspace(-1, 1, 8, dtype=torch.float64)
    for i in range(steps):
        x_ref = x_ref + velocity(x_ref, 1000.0 * sig[i]) * (sig[i + 1] - sig[i])

    sched = make_scheduler()
    sched.set_timesteps(sigmas=sampler_sigmas(steps, sigma_min))
    x = torch.linspace(-1, 1, 8, dtype=torch.float32)
    for t in sched.timesteps:
        x = sched.step(velocity(x, float(t)), t, x, return_dict=False)[0]
    torch.testing.assert_close(x.double(), x_ref, atol=1e-5, rtol=1e-5)
