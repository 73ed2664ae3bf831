"""Tests of the task registry: every task builds, is deterministic and trains; the synthetic
problems have the structure their papers describe."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from lrkit.data import DataNotFoundError
from lrkit.tasks import TASKS, Task, TaskData, get_task
from lrkit.tasks.sequence import IGNORE, masked_bit_cross_entropy, repeat_copy_sequences
from lrkit.tasks.synthetic import quadratic_deep_hessian, smoothed_bukin6

FLOAT64_TASKS = {"recht_regression", "beale", "bukin6"}
# Tasks whose model starts at a documented fixed point for every seed (DeepOBS's θ = 1 for
# the quadratic, MARTHE Fig. 1's fixed start for the test functions).
FIXED_START_TASKS = {"quadratic_deep", "beale", "bukin6"}


def load(name: str, **options) -> tuple[Task, TaskData]:
    task = get_task(name, **options)
    try:
        return task, task.load_data(0)
    except DataNotFoundError as error:
        pytest.skip(f"{name}: dataset not available here ({error})")


def as_model_input(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return tensor.to(dtype) if tensor.is_floating_point() else tensor


def small_test_split(data: TaskData, rows: int = 64) -> TaskData:
    return replace(data, test_inputs=data.test_inputs[:rows], test_targets=data.test_targets[:rows])


@pytest.mark.parametrize("name", sorted(TASKS))
def test_model_is_deterministic_per_seed(name: str) -> None:
    task, _ = load(name)
    rng_before = torch.get_rng_state()
    first, second, other = task.build_model(3), task.build_model(3), task.build_model(4)
    assert torch.equal(torch.get_rng_state(), rng_before), "building a model moved the global RNG"
    first_state, second_state = first.state_dict(), second.state_dict()
    assert first_state.keys() == second_state.keys()
    for key in first_state:
        assert torch.equal(first_state[key], second_state[key]), key
    params, other_params = list(first.parameters()), list(other.parameters())
    same = all(torch.equal(a, b) for a, b in zip(params, other_params, strict=True))
    assert same == (name in FIXED_START_TASKS)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_one_step_gives_finite_loss_and_gradients(name: str) -> None:
    task, data = load(name)
    model = task.build_model(0)
    dtype = next(model.parameters()).dtype
    assert dtype == (torch.float64 if name in FLOAT64_TASKS else torch.float32)
    batch_size = None if task.batch_size is None else 8
    batch = next(task.train_batches(data, torch.Generator().manual_seed(0), batch_size))

    assert torch.equal(batch.inputs, data.train_inputs[batch.indices])
    assert torch.equal(batch.targets, data.train_targets[batch.indices])
    assert int(batch.indices.max()) < data.num_train

    outputs = model(as_model_input(batch.inputs, dtype))
    targets = as_model_input(batch.targets, dtype)
    per_example = task.per_example_loss(outputs, targets)
    assert per_example.shape == (len(batch),)
    loss = task.loss(outputs, targets)
    expected = per_example.sum() if task.reduction == "sum" else per_example.mean()
    assert loss.dim() == 0 and torch.isfinite(loss)
    torch.testing.assert_close(loss, expected)

    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_evaluate_reports_the_primary_metric(name: str) -> None:
    task, data = load(name)
    model = task.build_model(0)
    model.train()
    metrics = task.evaluate(model, small_test_split(data))
    assert task.primary_metric in metrics
    assert all(math.isfinite(value) for value in metrics.values())
    assert model.training, "evaluate() must restore the training mode"
    assert data.validation_inputs.shape[0] == data.validation_targets.shape[0] > 0


def test_registry_rejects_unknown_names_and_bad_options() -> None:
    with pytest.raises(KeyError, match="known tasks"):
        get_task("no_such_task")
    with pytest.raises(ValueError, match="linspace"):
        get_task("recht_regression", variant="cubic")
    with pytest.raises(ValueError, match="multiple of 10"):
        get_task("fmnist_mlp_subset", num_train=7005)


# ---------------------------------------------------------------------------- vision data


def test_fashion_mnist_validation_is_balanced_and_held_out() -> None:
    _, data = load("fmnist_mlp")
    counts = torch.bincount(data.validation_targets, minlength=10)
    assert torch.equal(counts, torch.full((10,), 100))
    assert data.num_train + data.validation_inputs.shape[0] == 60000
    assert abs(float(data.train_inputs.mean())) < 1e-3
    assert abs(float(data.train_inputs.std()) - 1.0) < 1e-3


def test_fashion_mnist_subset_has_the_requested_balanced_sizes() -> None:
    _, data = load("fmnist_mlp_subset", num_train=500, num_validation=100)
    assert torch.equal(torch.bincount(data.train_targets, minlength=10), torch.full((10,), 50))
    assert torch.equal(torch.bincount(data.validation_targets, minlength=10), torch.full((10,), 10))


# ---------------------------------------------------------------------------- synthetic


def position_model(name: str, point: tuple[float, float]) -> tuple[Task, torch.nn.Module]:
    task = get_task(name, start=point)
    return task, task.build_model(0)


def test_beale_minimum_is_zero_with_zero_gradient() -> None:
    task, model = position_model("beale", (3.0, 0.5))
    data = task.load_data(0)
    loss = task.loss(model(data.train_inputs), data.train_targets)
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert torch.equal(model.position.grad, torch.zeros(2, dtype=torch.float64))
    assert task.evaluate(model, data)["train_distance_to_minimum"] == 0.0


def test_bukin6_minimum_location_and_smoothing() -> None:
    task, model = position_model("bukin6", (-10.0, 1.0))
    data = task.load_data(0)
    loss = task.loss(model(data.train_inputs), data.train_targets)
    loss.backward()
    assert float(loss.detach()) == 0.0
    torch.testing.assert_close(model.position.grad, torch.zeros(2, dtype=torch.float64))

    xs = torch.linspace(-15.0, -5.0, 201, dtype=torch.float64)
    ys = torch.linspace(-3.0, 3.0, 121, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="ij")).reshape(2, -1)
    values = smoothed_bukin6(grid)
    best = grid[:, int(values.argmin())]
    torch.testing.assert_close(best, torch.tensor([-10.0, 1.0], dtype=torch.float64))
    assert float(values.min()) == pytest.approx(0.0, abs=1e-12)

    far = torch.tensor([[-12.0, -8.0, -6.0], [-2.0, 2.5, -1.0]], dtype=torch.float64)
    valley = far[1] - 0.01 * far[0] ** 2
    original = 100 * valley.abs().sqrt() + 0.01 * (far[0] + 10).abs()
    # Off the valley (|u| ≥ 1) the smoothing only shifts f: (u² + s)^{1/4} − |u|^{1/2} lies
    # in [0, s/(4|u|^{3/2})], at most 100·0.01/4 = 0.25 after the factor 100.
    assert bool((valley.abs() >= 1).all())
    offset = original - smoothed_bukin6(far)
    torch.testing.assert_close(offset, offset[:1].expand(3), rtol=0.0, atol=0.25)


def test_quadratic_deep_hessian_spectrum_and_loss() -> None:
    hessian = quadratic_deep_hessian(42)
    torch.testing.assert_close(hessian, hessian.T)
    eigenvalues = torch.linalg.eigvalsh(hessian)
    assert int(((eigenvalues > 0) & (eigenvalues < 1)).sum()) == 90
    assert int(((eigenvalues > 30) & (eigenvalues < 60)).sum()) == 10
    assert not torch.equal(quadratic_deep_hessian(7), hessian)

    task, data = load("quadratic_deep")
    model = task.build_model(0, torch.float64)
    x = data.train_inputs[:5].double()
    residual = model.theta.detach() - x
    expected = 0.5 * torch.einsum("bi,ij,bj->b", residual, hessian, residual)
    torch.testing.assert_close(task.per_example_loss(model(x), data.train_targets[:5]), expected)


def test_recht_condition_numbers_follow_the_variant() -> None:
    def median_condition(variant: str) -> float:
        task = get_task("recht_regression", variant=variant)
        numbers = [task.load_data(seed).extras["condition_number"] for seed in range(9)]
        return float(torch.tensor(numbers).median())

    assert median_condition("linspace") < 100
    assert median_condition("logspace") > 1e3


def test_recht_problem_is_exact_and_drawn_per_seed() -> None:
    task = get_task("recht_regression", variant="logspace")
    data, other = task.load_data(0), task.load_data(1)
    matrix = data.extras["matrix"]
    torch.testing.assert_close(data.train_targets, data.train_inputs @ matrix.T)
    singular = torch.linalg.svdvals(matrix)
    assert data.extras["condition_number"] == pytest.approx(float(singular[0] / singular[-1]))
    assert not torch.equal(matrix, other.extras["matrix"])
    assert task.reduction == "sum" and task.batch_size is None
    model = task.build_model(0)
    residual = model(data.train_inputs) - data.train_targets
    sse = float((residual.detach() ** 2).sum())
    assert task.evaluate(model, data)["train_loss"] == pytest.approx(sse)


# ---------------------------------------------------------------------------- sequences


def test_repeat_copy_episodes_have_the_dnc_layout() -> None:
    num_bits, max_length, max_repeats = 3, 4, 3
    inputs, targets = repeat_copy_sequences(
        64, num_bits, max_length, max_repeats, torch.Generator().manual_seed(5)
    )
    for row in range(inputs.shape[0]):
        length = int(torch.nonzero(inputs[row, :, num_bits + 1]).flatten()[0]) - 1
        repeats = round(float(inputs[row, length + 1, num_bits + 1]) * max_repeats)
        assert inputs[row, 0, num_bits] == 1.0
        pattern = inputs[row, 1 : length + 1, :num_bits]
        target_steps = torch.nonzero((targets[row] != IGNORE).all(dim=1)).flatten()
        assert target_steps.numel() == repeats * length + 1
        assert torch.equal((targets[row] != IGNORE).any(dim=1), (targets[row] != IGNORE).all(dim=1))
        written = targets[row, target_steps]
        torch.testing.assert_close(written[:-1, :num_bits], pattern.repeat(repeats, 1))
        assert written[-1, num_bits] == 1.0 and written[:-1, num_bits].sum() == 0


def test_masked_bit_loss_ignores_non_target_positions() -> None:
    _, targets = repeat_copy_sequences(8, 4, 3, 2, torch.Generator().manual_seed(0))
    outputs = torch.randn(targets.shape, generator=torch.Generator().manual_seed(1))
    changed = torch.where(targets == IGNORE, outputs + 100.0, outputs)
    torch.testing.assert_close(
        masked_bit_cross_entropy(outputs, targets), masked_bit_cross_entropy(changed, targets)
    )


def test_shakespeare_targets_are_the_next_characters() -> None:
    task, data = load("shakespeare_char_lstm", seq_len=16)
    assert data.train_inputs.shape[1] == 16 and data.train_inputs.dtype == torch.int64
    assert torch.equal(data.train_inputs[:, 1:], data.train_targets[:, :-1])
    assert torch.equal(data.train_inputs[1:, 0], data.train_targets[:-1, -1])
    metrics = task.evaluate(task.build_model(0), small_test_split(data))
    assert metrics["test_bits_per_char"] == pytest.approx(metrics["test_loss"] / math.log(2))


# ---------------------------------------------------------------------------- training (slow)


def train(task: Task, data: TaskData, optimizer: str, lr: float, steps: int) -> torch.nn.Module:
    model = task.build_model(0)
    dtype = next(model.parameters()).dtype
    opt = getattr(torch.optim, optimizer)(model.parameters(), lr=lr)
    batches = task.train_batches(data, torch.Generator().manual_seed(0))
    for _ in range(steps):
        batch = next(batches)
        opt.zero_grad()
        outputs = model(as_model_input(batch.inputs, dtype))
        loss = task.loss(outputs, as_model_input(batch.targets, dtype))
        loss.backward()
        opt.step()
    return model


def quadratic_excess(task: Task, model: torch.nn.Module, data: TaskData) -> float:
    """Test loss above the best constant θ (the test inputs' mean)."""
    residual = data.test_inputs.double().mean(dim=0) - data.test_inputs.double()
    hessian = data.extras["hessian"]
    floor = 0.5 * torch.einsum("bi,ij,bj->b", residual, hessian, residual).mean()
    return task.evaluate(model, data)["test_loss"] - float(floor)


ACCURACY_RUNS = [
    ("digits_mlp", "Adam", 1e-3, 300, 0.90),
    ("fmnist_mlp", "Adam", 1e-3, 300, 0.80),
    ("fmnist_mlp_subset", "Adam", 1e-3, 300, 0.80),
    ("fmnist_mlp2", "Adam", 1e-3, 300, 0.80),
    ("fmnist_2c2d", "Adam", 1e-3, 100, 0.75),
    ("fmnist_resnet", "Adam", 1e-3, 150, 0.75),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "optimizer", "lr", "steps", "accuracy"), ACCURACY_RUNS)
def test_classifier_trains_to_a_sensible_accuracy(
    name: str, optimizer: str, lr: float, steps: int, accuracy: float
) -> None:
    task, data = load(name)
    model = train(task, data, optimizer, lr, steps)
    assert task.evaluate(model, data)["test_accuracy"] >= accuracy


@pytest.mark.slow
def test_shakespeare_lstm_learns_well_below_uniform() -> None:
    task, data = load("shakespeare_char_lstm")
    model = train(task, data, "Adam", 3e-3, 400)
    uniform = math.log(data.num_classes)
    assert task.evaluate(model, data)["test_loss"] < 0.6 * uniform


@pytest.mark.slow
def test_repeat_copy_beats_the_best_constant_guess() -> None:
    task, data = load("repeat_copy")
    model = train(task, data, "Adam", 3e-3, 500)
    targets = data.test_targets
    mask = targets != IGNORE
    ones = ((targets == 1) & mask).flatten(0, 1).sum(dim=0)
    zeros = ((targets == 0) & mask).flatten(0, 1).sum(dim=0)
    constant_accuracy = float(torch.maximum(ones, zeros).sum() / mask.sum())
    assert task.evaluate(model, data)["test_bit_accuracy"] > constant_accuracy + 0.05


LOSS_RUNS = [
    ("recht_regression", {"variant": "linspace"}, "Adam", 1e-2, 3000),
    ("recht_regression", {"variant": "logspace"}, "Adam", 1e-2, 3000),
    ("beale", {}, "Adam", 0.05, 500),
    ("bukin6", {}, "Adam", 0.05, 500),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "options", "optimizer", "lr", "steps"), LOSS_RUNS)
def test_synthetic_loss_drops_by_a_large_factor(
    name: str, options: dict, optimizer: str, lr: float, steps: int
) -> None:
    task, data = load(name, **options)
    initial = task.evaluate(task.build_model(0), data)["train_loss"]
    model = train(task, data, optimizer, lr, steps)
    assert task.evaluate(model, data)["train_loss"] < 1e-3 * initial


@pytest.mark.slow
def test_quadratic_deep_sgd_reaches_the_noise_floor() -> None:
    task, data = load("quadratic_deep")
    initial = quadratic_excess(task, task.build_model(0), data)
    model = train(task, data, "SGD", 0.01, 300)
    assert quadratic_excess(task, model, data) < 0.05 * initial


def test_a_full_batch_task_trains_on_the_whole_set_as_it_is() -> None:
    task = get_task("recht_regression")
    data = task.load_data(0)
    stream = task.train_batches(data, torch.Generator().manual_seed(0))
    first, second = next(stream), next(stream)
    assert torch.equal(first.inputs, data.train_inputs)
    assert torch.equal(second.indices, torch.arange(data.num_train))
