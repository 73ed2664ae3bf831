"""Synthetic problems with known structure: a noisy quadratic, an ill-conditioned linear
regression, and two 2-D test functions.

* ``quadratic_deep`` — DeepOBS's noisy quadratic with a deep-learning-like Hessian spectrum.
* ``recht_regression`` — the ill-conditioned two-layer linear regression of L4 (Rolinek &
  Martius 2018, Sec. 3.1, after Rahimi & Recht's notebook); both variants of its matrix
  are described at :func:`recht_regression`.
* ``beale`` and ``bukin6`` — the 2-D test functions of MARTHE's Fig. 1 (Donini et al.,
  Sec. 3); the smoothing of Bukin N.6 is described at :func:`smoothed_bukin6`.

Models whose output *is* the loss (the quadratic and the test functions) return one value per
input row, and ``per_example_loss`` passes those values through.

The regression and the test functions are built in float64 (``build_model`` keeps a
model's own dtype unless asked for another), and their data is float64.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, partial

import numpy as np
import torch
from torch import nn

from lrkit.tasks import register_task
from lrkit.tasks.base import Task, TaskData


def output_is_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-example loss of a model whose forward pass already returns one loss per row."""
    if outputs.shape[0] != targets.shape[0]:
        raise ValueError(
            f"model returned {outputs.shape[0]} losses for a batch of {targets.shape[0]} rows; "
            "a loss-valued model must return one value per input row"
        )
    return outputs


def _mean_loss(task: Task, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    dtype = next(model.parameters()).dtype
    return float(task.per_example_loss(model(inputs.to(dtype)), targets.to(dtype)).double().mean())


# --------------------------------------------------------------------------------------------
# quadratic_deep


def _random_rotation(dim: int, rng: np.random.RandomState) -> np.ndarray:
    """A Haar-random rotation: Q of the QR factorisation of a Gaussian matrix, with the signs
    of R's diagonal moved into Q (so the draw is uniform) and det(Q) = +1."""
    q, r = np.linalg.qr(rng.normal(size=(dim, dim)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


@lru_cache(maxsize=8)
def quadratic_deep_hessian(seed: int = 42) -> torch.Tensor:
    """Hessian Q = Rᵀ·D·R of ``quadratic_deep`` (float64, 100×100): D holds 90 eigenvalues
    drawn from U(0, 1) and 10 from U(30, 60) (the spectrum DeepOBS borrows from Chaudhari et
    al. 2016), R a random rotation; both from ``numpy.random.RandomState(seed)``."""
    rng = np.random.RandomState(seed)
    eigenvalues = np.concatenate([rng.uniform(0.0, 1.0, 90), rng.uniform(30.0, 60.0, 10)])
    rotation = _random_rotation(eigenvalues.size, rng)
    hessian = rotation.T @ np.diag(eigenvalues) @ rotation
    return torch.from_numpy(0.5 * (hessian + hessian.T))


class NoisyQuadratic(nn.Module):
    """θ ∈ R^d, output ½·(θ − x)ᵀ·Q·(θ − x) for every row x of the input."""

    def __init__(self, hessian: torch.Tensor, init_value: float = 1.0) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.full((hessian.shape[0],), init_value, dtype=torch.float32))
        self.register_buffer("hessian", hessian.to(torch.float32).clone())

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        residual = self.theta - inputs
        return 0.5 * ((residual @ self.hessian) * residual).sum(dim=-1)


@lru_cache(maxsize=8)
def _quadratic_samples(seed: int, size: int, dim: int, noise_level: float) -> torch.Tensor:
    rng = np.random.RandomState(seed)
    return torch.from_numpy(rng.normal(0.0, noise_level, (size, dim)).astype(np.float32))


@register_task(
    "quadratic_deep",
    "DeepOBS noisy quadratic, 100-d, Hessian spectrum 90×U(0,1) + 10×U(30,60); batch 128",
)
def quadratic_deep(
    seed: int = 42, noise_level: float = 0.6, batch_size: int = 128, steps: int = 700
) -> Task:
    """DeepOBS ``quadratic_deep`` (Schneider et al. 2019): per example
    ℓ(θ; x) = ½·(θ − x)ᵀ·Q·(θ − x), x ~ N(0, noise_level²·I), Q from
    :func:`quadratic_deep_hessian` (``seed`` is the problem seed; DeepOBS used 42).

    As in DeepOBS: 1000 training points drawn with ``RandomState(42)`` and 1000 test points
    with ``RandomState(43)``, noise level 0.6 (DeepOBS's default, not 1), θ initialised to the
    all-ones vector for every run seed (so runs differ only in the batch order), batch 128 and
    100 epochs (≈ 700 steps). The validation split (1000 points, ``RandomState(44)``) is an
    addition for methods that need one. The minimiser of the expected loss is θ = 0.
    """
    dim, size = 100, 1000

    def data_factory(_: int) -> TaskData:
        train = _quadratic_samples(42, size, dim, noise_level)
        validation = _quadratic_samples(44, size, dim, noise_level)
        test = _quadratic_samples(43, size, dim, noise_level)
        return TaskData(
            train_inputs=train,
            train_targets=torch.zeros(size),
            validation_inputs=validation,
            validation_targets=torch.zeros(size),
            test_inputs=test,
            test_targets=torch.zeros(size),
            extras={"hessian": quadratic_deep_hessian(seed)},
        )

    def metrics_fn(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> dict:
        return {"loss": _mean_loss(task, model, inputs, targets)}

    task = Task(
        name="quadratic_deep",
        description=quadratic_deep.__doc__ or "",
        model_factory=lambda generator: NoisyQuadratic(quadratic_deep_hessian(seed)),
        data_factory=data_factory,
        per_example_loss=output_is_loss,
        batch_size=batch_size,
        steps=steps,
        eval_every=50,
        primary_metric="test_loss",
        maximize=False,
        metrics_fn=metrics_fn,
        evaluation_splits=("train", "validation", "test"),
    )
    return task


# --------------------------------------------------------------------------------------------
# recht_regression

RECHT_ROW_SCALES: dict[str, Callable[[int], torch.Tensor]] = {
    "linspace": lambda rows: torch.linspace(1.0, 1e-5, rows, dtype=torch.float64),
    "logspace": lambda rows: torch.logspace(0.0, -5.0, rows, dtype=torch.float64),
}
RECHT_OUT, RECHT_IN = 10, 6


class TwoLayerLinear(nn.Module):
    """ŷ = W1·W2·x with W1 ∈ R^{out×in}, W2 ∈ R^{in×in} (default 10×6 and 6×6), entries
    ~ N(0, 1) from ``generator`` (float64)."""

    def __init__(self, generator: torch.Generator, out_dim: int = 10, in_dim: int = 6) -> None:
        super().__init__()
        self.w1 = nn.Parameter(
            torch.randn(out_dim, in_dim, generator=generator, dtype=torch.float64)
        )
        self.w2 = nn.Parameter(
            torch.randn(in_dim, in_dim, generator=generator, dtype=torch.float64)
        )

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs @ self.w2.T @ self.w1.T


def squared_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-example ‖ŷ − y‖² (summed over output coordinates)."""
    return (outputs - targets).pow(2).flatten(1).sum(dim=1)


def _recht_problem(
    variant: str, seed: int, rows: int = RECHT_OUT, columns: int = RECHT_IN
) -> TaskData:
    generator = torch.Generator().manual_seed(seed)
    scales = RECHT_ROW_SCALES[variant](rows)
    matrix = scales[:, None] * torch.rand(rows, columns, generator=generator, dtype=torch.float64)

    def split(size: int) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = torch.randn(size, columns, generator=generator, dtype=torch.float64)
        return inputs, inputs @ matrix.T

    train, validation, test = split(1000), split(1000), split(1000)
    singular_values = torch.linalg.svdvals(matrix)
    return TaskData(
        train_inputs=train[0],
        train_targets=train[1],
        validation_inputs=validation[0],
        validation_targets=validation[1],
        test_inputs=test[0],
        test_targets=test[1],
        extras={
            "matrix": matrix,
            "condition_number": float(singular_values[0] / singular_values[-1]),
        },
    )


@register_task(
    "recht_regression",
    "L4's ill-conditioned 2-layer linear regression (Recht's notebook), SSE, full batch, float64",
)
def recht_regression(
    variant: str = "linspace", steps: int = 3000, out_dim: int = RECHT_OUT, in_dim: int = RECHT_IN
) -> Task:
    """Ill-conditioned regression of L4 Sec. 3.1 (Rahimi & Recht's shallow-linear-net
    notebook): ŷ = W1·W2·x, W1 ∈ R^{10×6}, W2 ∈ R^{6×6}, W ~ N(0, 1); X ~ N(0, I) with 1000
    columns, Y = A·X; the loss is the *sum* of squared errors over all 1000 points, full batch,
    in float64.

    ``variant="linspace"``: A = linspace(1, 1e-5, 10)[:, None] * rand(10, 6), what the notebook's
    code does (condition number κ(A) ≈ 20). ``variant="logspace"``: A = logspace(0, -5, 10)[:,
    None] * rand(10, 6), the notebook's stated intent (κ(A) ≈ 1e3–1e4). Every run seed draws
    a new A and X (``data_seed_from_run``); ``TaskData.extras`` holds ``matrix`` and
    ``condition_number``. Validation and test sets are 1000 more noiseless points each.
    ``out_dim``/``in_dim`` size the problem (W1 out×in, W2 in×in, A out×in; default 10 and 6,
    96 weights). L4's Table 2 also runs "an instance of twice the size (all dimensions
    doubled)" with "192 trainable weights"; doubling every dimension would give 384, so the
    two statements disagree: 16 and 8 give the table's 192 weights.
    """
    if out_dim < 1 or in_dim < 1:
        raise ValueError(f"recht_regression: dimensions must be >= 1, got {out_dim}, {in_dim}")
    if variant not in RECHT_ROW_SCALES:
        raise ValueError(
            f"unknown recht_regression variant {variant!r}; expected one of "
            f"{sorted(RECHT_ROW_SCALES)} (linspace: the notebook's code, logspace: its intent)"
        )

    def metrics_fn(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> dict:
        dtype = next(model.parameters()).dtype
        outputs = model(inputs.to(dtype))
        return {"loss": float(squared_error(outputs, targets.to(dtype)).double().sum())}

    return Task(
        name="recht_regression",
        description=recht_regression.__doc__ or "",
        model_factory=lambda generator: TwoLayerLinear(generator, out_dim, in_dim),
        data_factory=lambda seed: _recht_problem(variant, seed, out_dim, in_dim),
        per_example_loss=squared_error,
        batch_size=None,
        steps=steps,
        eval_every=50,
        primary_metric="train_loss",
        maximize=False,
        reduction="sum",
        metrics_fn=metrics_fn,
        evaluation_splits=("train", "validation", "test"),
        data_seed_from_run=True,
    )


# --------------------------------------------------------------------------------------------
# 2-D test functions


def beale_function(position: torch.Tensor) -> torch.Tensor:
    """f(x, y) = (1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)²; minimum 0 at
    (3, 0.5)."""
    x, y = position[0], position[1]
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


BUKIN_SMOOTHING = 0.01


def smoothed_bukin6(position: torch.Tensor, smoothing: float = BUKIN_SMOOTHING) -> torch.Tensor:
    """Smoothed Bukin N.6 with minimum 0 at (−10, 1).

    The original f = 100·sqrt(|y − 0.01x²|) + 0.01·|x + 10| has kinks on the valley floor
    y = 0.01x² and at x = −10. With u = y − 0.01x² and s = ``smoothing``:
    f_s = 100·[(u² + s)^{1/4} − s^{1/4}] + 0.01·[sqrt((x + 10)² + s) − sqrt(s)],
    i.e. sqrt|u| → (u² + s)^{1/4} and |x + 10| → sqrt((x + 10)² + s), shifted so that the
    minimum value is 0. Both terms are minimised on the same point (−10, 1), and the narrow
    curved valley y = 0.01x² with its almost flat floor (slope 0.01) is kept.
    """
    x, y = position[0], position[1]
    valley = y - 0.01 * x**2
    s = torch.as_tensor(smoothing, dtype=position.dtype)
    across = (valley**2 + s) ** 0.25 - s**0.25
    along = torch.sqrt((x + 10.0) ** 2 + s) - torch.sqrt(s)
    return 100.0 * across + 0.01 * along


class TestFunctionModel(nn.Module):
    """A 2-vector parameter at a fixed start; the output is f(position) for every input row."""

    def __init__(self, objective: Callable[[torch.Tensor], torch.Tensor], start: tuple) -> None:
        super().__init__()
        self.objective = objective
        self.position = nn.Parameter(torch.tensor(start, dtype=torch.float64))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.objective(self.position).expand(inputs.shape[0])


def _single_dummy_row() -> TaskData:
    row, target = torch.zeros(1, 1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    return TaskData(row, target, row, target, row, target)


def _test_function_task(
    name: str,
    objective: Callable[[torch.Tensor], torch.Tensor],
    start: tuple[float, float],
    minimum: tuple[float, float],
    steps: int,
    description: str,
) -> Task:
    if len(start) != 2:
        raise ValueError(f"{name}: start must be a point (x, y), got {start!r}")
    start = (float(start[0]), float(start[1]))

    def metrics_fn(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> dict:
        position = model.position.detach().double()
        return {
            "loss": float(objective(position)),
            "x": float(position[0]),
            "y": float(position[1]),
            "distance_to_minimum": float(
                torch.linalg.vector_norm(position - torch.tensor(minimum, dtype=torch.float64))
            ),
        }

    return Task(
        name=name,
        description=description,
        model_factory=lambda generator: TestFunctionModel(objective, start),
        data_factory=lambda seed: _single_dummy_row(),
        per_example_loss=output_is_loss,
        batch_size=None,
        steps=steps,
        eval_every=10,
        primary_metric="train_loss",
        maximize=False,
        metrics_fn=metrics_fn,
        evaluation_splits=("train",),
    )


BEALE_START = (1.0, 1.5)
BUKIN_START = (-7.0, 2.0)


@register_task("beale", "Beale function from a fixed start, 500 full-batch steps (MARTHE Fig. 1)")
def beale(start: tuple[float, float] = BEALE_START, steps: int = 500) -> Task:
    """Beale's function (MARTHE Fig. 1, Donini et al. Sec. 3) as a model: the parameter is the
    point (x, y), starting at ``start`` (default (1, 1.5), on the plateau north-west of the
    minimum; the paper's start point is not legible in our copy) for every run seed; the
    data is one dummy row; the loss is :func:`beale_function`, minimum 0 at (3, 0.5).
    Metrics: ``train_loss``, ``train_distance_to_minimum`` and the position ``train_x``,
    ``train_y``. Float64."""
    return _test_function_task(
        "beale", beale_function, start, (3.0, 0.5), steps, beale.__doc__ or ""
    )


@register_task(
    "bukin6", "smoothed Bukin N.6 from a fixed start, 500 full-batch steps (MARTHE Fig. 1)"
)
def bukin6(
    start: tuple[float, float] = BUKIN_START,
    smoothing: float = BUKIN_SMOOTHING,
    steps: int = 500,
) -> Task:
    """Smoothed Bukin N.6 (MARTHE Fig. 1, Donini et al. Sec. 3; the paper's exact smoothing is
    not legible in our copy, see :func:`smoothed_bukin6`), minimum 0 at (−10, 1). The parameter
    is the point (x, y), starting at ``start`` (default (−7, 2)) for every run seed; the data
    is one dummy row. Metrics: ``train_loss``, ``train_distance_to_minimum`` and the position
    ``train_x``, ``train_y``. Float64."""
    if smoothing <= 0:
        raise ValueError(f"bukin6 smoothing must be positive, got {smoothing}")

    objective = partial(smoothed_bukin6, smoothing=smoothing)
    return _test_function_task(
        "bukin6", objective, start, (-10.0, 1.0), steps, bukin6.__doc__ or ""
    )
