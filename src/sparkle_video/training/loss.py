"""The flow-matching training objective of Kiwi-Edit, as small pure functions.

Training draws a timestep index uniformly from 1000 shifted training timesteps (shift 5, sigmas from 1
down to 0, the last one dropped), noises the target latents to ``x_t = (1 - sigma) x_0 + sigma * noise``,
and regresses the velocity ``noise - x_0`` with a float32 MSE weighted by ``w(t)``: a Gaussian bump
``exp(-2 ((t - 500) / 1000)^2)`` shifted to a minimum of 0 and normalised to mean 1 over the grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: Kiwi-Edit's training scheduler: 1000 steps, shift 5, sigma_min 0, the extra final step dropped.
NUM_TRAIN_TIMESTEPS = 1000
TRAIN_SHIFT = 5.0
TRAIN_SIGMA_MIN = 0.0


@dataclass(frozen=True)
class TrainingTimesteps:
    """The training grid: ``sigmas[i]``, ``timesteps[i] = 1000 * sigmas[i]`` and the loss weight of each."""

    sigmas: torch.Tensor
    timesteps: torch.Tensor
    weights: torch.Tensor

    def __len__(self) -> int:
        return len(self.sigmas)

    def lookup(
        self, index: torch.Tensor, timestep_dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, ...]:
        """``(timestep, sigma, weight)`` for grid indices ``index``, as the upstream trainer resolves them.

        Upstream casts the drawn timestep to the training dtype (bf16) before use and then takes the
        sigma and weight of the grid point nearest to that rounded value; in float32 this is the drawn
        index itself. The returned timestep is the rounded value (what the DiT sees).
        """
        index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        timestep = self.timesteps[index].to(timestep_dtype)
        nearest = (self.timesteps[None, :] - timestep.float()[:, None]).abs().argmin(dim=1)
        return timestep.float(), self.sigmas[nearest], self.weights[nearest]


def shifted_sigmas(
    num_steps: int = NUM_TRAIN_TIMESTEPS, shift: float = TRAIN_SHIFT, sigma_min: float = TRAIN_SIGMA_MIN
) -> torch.Tensor:
    """``linspace(1, sigma_min, N + 1)[:-1]`` shifted by ``shift * s / (1 + (shift - 1) * s)``.

    Computed in float32 with upstream's order of operations, so every grid point is bit-identical to
    the upstream trainer's (a float64 grid rounded to float32 differs in the last bit at ~40% of them).
    """
    s = torch.linspace(1.0, sigma_min, num_steps + 1, dtype=torch.float32)[:-1]
    return shift * s / (1 + (shift - 1) * s)


def timestep_weights(timesteps: torch.Tensor, num_steps: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """``w(t) ∝ exp(-2 ((t - N/2) / N)^2)`` with ``N = num_steps`` the timestep scale, shifted to minimum 0
    and normalised to mean 1 over the grid ``timesteps``."""
    y = torch.exp(-2 * ((timesteps.float() - num_steps / 2) / num_steps) ** 2)
    y = y - y.min()
    return y * (len(timesteps) / y.sum())


def training_timesteps(
    num_steps: int = NUM_TRAIN_TIMESTEPS, shift: float = TRAIN_SHIFT, sigma_min: float = TRAIN_SIGMA_MIN
) -> TrainingTimesteps:
    """The full training grid of Kiwi-Edit's scheduler (``set_timesteps(1000, training=True)``).

    Timesteps are always ``1000 * sigma``, the scale the DiT was trained on, and the weights' bump is
    laid over that scale, whatever ``num_steps``: a coarser grid has fewer points, not smaller
    timesteps. (Upstream lays the bump over ``num_steps``, the same thing at its only grid, 1000, and
    all-NaN weights at any other.)
    """
    sigmas = shifted_sigmas(num_steps, shift, sigma_min)
    timesteps = sigmas * NUM_TRAIN_TIMESTEPS
    return TrainingTimesteps(
        sigmas=sigmas, timesteps=timesteps, weights=timestep_weights(timesteps, NUM_TRAIN_TIMESTEPS)
    )


def noisy_latents(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """``x_t = (1 - sigma) x_0 + sigma * noise``; ``sigma`` a float or one value per batch row."""
    s = _per_row(sigma, x0)
    return (1 - s) * x0 + s * noise


def flow_matching_loss(
    prediction: torch.Tensor,
    x0: torch.Tensor,
    noise: torch.Tensor,
    weight: torch.Tensor | float = 1.0,
) -> torch.Tensor:
    """Weighted float32 MSE between the predicted velocity and ``noise - x_0``.

    Each batch row's mean squared error is multiplied by its weight and the rows are averaged (with one
    row, or one weight for all rows, this is ``mse(pred, target) * w`` exactly as upstream).
    """
    target = noise.float() - x0.float()
    per_row = (prediction.float() - target).pow(2).flatten(1).mean(dim=1)
    w = torch.as_tensor(weight, dtype=torch.float32, device=per_row.device).reshape(-1)
    return (per_row * w).mean()


def _per_row(value: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device).reshape(-1)
    return t.reshape(-1, *([1] * (like.ndim - 1)))
