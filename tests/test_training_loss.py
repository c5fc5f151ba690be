"""The training objective as pure functions: exact grids, per-row broadcasting and dtypes.

The upstream trainer builds its grid with float32 ``torch.linspace`` and the shift formula in float32;
these tests restate that computation and demand bit equality, so a change of precision, order of
operations or a dropped argument shows up.
"""

from __future__ import annotations

import pytest
import torch

from sparkle_video.training import flow_matching_loss, noisy_latents, timestep_weights, training_timesteps
from sparkle_video.training.loss import shifted_sigmas


def upstream_grid(num_steps: int, shift: float, sigma_min: float) -> tuple[torch.Tensor, ...]:
    """The upstream scheduler's ``set_timesteps(N, training=True)`` with ``extra_one_step``, restated."""
    s = torch.linspace(1.0, sigma_min, num_steps + 1, dtype=torch.float32)[:-1]
    sigmas = shift * s / (1 + (shift - 1) * s)
    timesteps = sigmas * 1000
    y = torch.exp(-2 * ((timesteps - num_steps / 2) / num_steps) ** 2)
    y = y - y.min()
    return sigmas, timesteps, y * (num_steps / y.sum())


def test_default_grid_is_bit_identical_to_upstream() -> None:
    grid = training_timesteps()
    sigmas, timesteps, weights = upstream_grid(1000, 5.0, 0.0)
    assert grid.sigmas.dtype == grid.timesteps.dtype == grid.weights.dtype == torch.float32
    assert torch.equal(grid.sigmas, sigmas)
    assert torch.equal(grid.timesteps, timesteps)
    assert torch.equal(grid.weights, weights)


def test_grid_stays_float32_under_a_float64_default_dtype() -> None:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        sigmas = shifted_sigmas()
    finally:
        torch.set_default_dtype(previous)
    assert sigmas.dtype == torch.float32
    assert torch.equal(sigmas, upstream_grid(1000, 5.0, 0.0)[0])


def test_every_grid_argument_is_used() -> None:
    # a coarse grid with another shift and sigma_min: each argument changes the result
    grid = training_timesteps(num_steps=10, shift=3.0, sigma_min=0.1)
    sigmas, _, _ = upstream_grid(10, 3.0, 0.1)
    assert len(grid) == 10
    assert torch.equal(grid.sigmas, sigmas)
    # the DiT's timestep scale does not depend on how many grid points there are
    assert torch.equal(grid.timesteps, sigmas * 1000)
    # the weights' bump is laid over the timestep scale (upstream's formula gives NaN on such a grid)
    y = torch.exp(-2 * ((sigmas * 1000 - 500) / 1000) ** 2)
    y = y - y.min()
    assert torch.equal(grid.weights, y * (10 / y.sum()))
    assert float(grid.weights.min()) == 0.0 and float(grid.weights.mean()) == pytest.approx(1.0)
    assert torch.equal(timestep_weights(grid.timesteps), grid.weights)  # the default scale is 1000
    assert torch.isnan(upstream_grid(10, 3.0, 0.1)[2]).all()
    assert float(grid.sigmas[-1]) == pytest.approx(3 * 0.19 / (1 + 2 * 0.19), rel=1e-6)


def test_lookup_accepts_any_integer_like_index() -> None:
    grid = training_timesteps()
    expected = grid.lookup(torch.tensor([3, 700]))
    for index in ([3, 700], torch.tensor([3.0, 700.0]), torch.tensor([[3], [700]], dtype=torch.int32)):
        got = grid.lookup(index)
        for a, b in zip(got, expected, strict=True):
            assert torch.equal(a, b)
    assert torch.equal(expected[1], grid.sigmas[[3, 700]])
    assert torch.equal(expected[0], grid.timesteps[[3, 700]])


def test_noisy_latents_use_one_sigma_per_batch_row() -> None:
    x0 = torch.arange(2 * 3 * 2 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2, 2)
    noise = torch.full_like(x0, -1.0)
    sigma = torch.tensor([0.25, 0.75])
    out = noisy_latents(x0, noise, sigma)
    assert out.shape == x0.shape
    assert torch.equal(out[0], 0.75 * x0[0] - 0.25)
    assert torch.equal(out[1], 0.25 * x0[1] - 0.75)


def test_noisy_latents_keep_the_latents_dtype() -> None:
    x0 = torch.ones(2, 4, dtype=torch.bfloat16)
    noise = torch.zeros(2, 4, dtype=torch.bfloat16)
    assert noisy_latents(x0, noise, 0.5).dtype == torch.bfloat16
    x0 = torch.ones(2, 4)
    out = noisy_latents(x0, torch.zeros(2, 4), torch.tensor([0.5, 0.25], dtype=torch.float64))
    assert out.dtype == torch.float32
    assert torch.equal(out, torch.tensor([[0.5] * 4, [0.75] * 4]))


def test_loss_weights_each_row_by_its_own_weight() -> None:
    x0 = torch.zeros(2, 2)
    noise = torch.zeros(2, 2)
    prediction = torch.tensor([[1.0, 1.0], [3.0, 3.0]])  # row mse 1 and 9
    assert float(flow_matching_loss(prediction, x0, noise)) == pytest.approx(5.0)  # default weight 1
    assert float(flow_matching_loss(prediction, x0, noise, torch.tensor([1.0, 0.0]))) == pytest.approx(0.5)
    assert float(flow_matching_loss(prediction, x0, noise, torch.tensor([0.0, 2.0]))) == pytest.approx(9.0)


def test_loss_is_float32_whatever_the_inputs() -> None:
    prediction = torch.ones(1, 3, dtype=torch.bfloat16)
    x0 = torch.zeros(1, 3, dtype=torch.bfloat16)
    noise = torch.zeros(1, 3, dtype=torch.bfloat16)
    assert flow_matching_loss(prediction, x0, noise).dtype == torch.float32
    weight = torch.tensor([0.5], dtype=torch.float64)
    loss = flow_matching_loss(prediction, x0, noise, weight)
    assert loss.dtype == torch.float32 and float(loss) == 0.5


def test_sigma_and_weights_follow_the_latents_device() -> None:
    # the meta device stands in for an accelerator: a sigma or weight left on the CPU would not mix
    x0 = torch.zeros(2, 3, device="meta")
    assert noisy_latents(x0, x0, 0.5).device.type == "meta"
    assert noisy_latents(x0, x0, torch.tensor([0.5, 0.25])).device.type == "meta"
    assert flow_matching_loss(x0, x0, x0, torch.tensor([1.0, 2.0])).device.type == "meta"
