"""The method contract end to end: the three example methods (tests/toy_methods.py) trained
through the CLI's code path, their diagnostics reaching the results without harness code
that knows them, staged experiments with artifacts, and the layer contracts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import toy_methods
from lrkit.cli import main
from lrkit.harness import executors as executors_module
from lrkit.harness.bench import run_suite
from lrkit.harness.experiments import ArtifactRef, Contender, Experiment, Stage, Suite
from lrkit.methods import BuildContext, Capabilities, get_method

REPO = Path(__file__).resolve().parents[1]
TOYS = ["toy_validation", "toy_instance_table", "toy_meta_net"]


@pytest.mark.parametrize("name", TOYS)
def test_example_method_trains_through_the_cli(name: str, tmp_path: Path) -> None:
    record_file = tmp_path / "run.json"
    args = ["train", "--task", "digits_mlp", "--method", name, "--steps", "15"]
    assert main([*args, "--json", str(record_file), "--no-progress"]) == 0
    record = json.loads(record_file.read_text())
    assert not record["diverged"]
    assert record["curve"]["train_loss"][-1] < record["curve"]["train_loss"][0]
    reported = set(get_method(name).diagnostics(_built(name)))
    assert reported <= set(record["curve"]), "every diagnostic reaches the run record"


def _built(name: str) -> torch.optim.Optimizer:
    model = torch.nn.Linear(3, 1)
    context = BuildContext(
        model=model,
        num_train=4,
        num_classes=None,
        total_steps=1,
        steps_per_epoch=1,
        per_example_loss=lambda outputs, targets: (outputs - targets).pow(2).squeeze(-1),
    )
    return get_method(name).build_optimizer(model.parameters(), context)


def test_a_method_that_needs_a_build_context_says_so() -> None:
    model = torch.nn.Linear(3, 1)
    with pytest.raises(ValueError, match="needs a BuildContext"):
        get_method("toy_instance_table").build_optimizer(model.parameters())


def test_capabilities_are_checked() -> None:
    with pytest.raises(ValueError, match="validation_every"):
        Capabilities(validation_every=-1)
    with pytest.raises(ValueError, match="build_context"):
        Capabilities(initial_train_loss=True)
    assert Capabilities(validation_every=5).validation_due(10)
    assert not Capabilities(validation_every=5).validation_due(11)


def test_missing_validation_batch_is_a_clear_error() -> None:
    model = torch.nn.Linear(3, 1)
    optimizer = toy_methods.ValidationScaledSGD(model.parameters())

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = model(torch.ones(2, 3)).pow(2).mean()
        loss.backward()
        return loss

    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="validation batch"):
        optimizer.step(closure)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def _mean_lr_schedule(inputs) -> dict:
    """A toy stage: the LR trajectory of the first experiment's runs, halved."""
    runs = inputs.runs["source"]
    lrs = [value / 2 for value in runs[0]["curve"]["lr"]]
    return {"values": lrs, "from_runs": len(runs)}


def _staged_suite() -> Suite:
    return Suite(
        name="staged",
        description="a toy staged suite",
        seeds=1,
        plan=(
            Experiment(
                name="source",
                title="source",
                task="digits_mlp",
                steps=8,
                eval_every=8,
                log_every=1,
                contenders=(Contender("sgd", {"lr": 0.1, "schedule": "multistep"}),),
            ),
            Stage(
                name="halved_schedule",
                build=_mean_lr_schedule,
                experiments=("source",),
                title="the source's LR trajectory, halved",
            ),
            Experiment(
                name="replay",
                title="replay",
                task="digits_mlp",
                steps=8,
                eval_every=8,
                log_every=1,
                contenders=(
                    Contender(
                        "sgd",
                        {
                            "lr": 1.0,
                            "schedule": "replay",
                            "schedule_options": {
                                "values": ArtifactRef("halved_schedule", "values")
                            },
                        },
                        label="sgd+replayed",
                    ),
                ),
            ),
        ),
    )


def test_a_stage_makes_an_artifact_that_later_runs_consume_and_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite = _staged_suite()
    results = run_suite(suite, tmp_path, progress=False)
    artifact = results["artifacts"]["halved_schedule"]
    assert artifact["from_runs"] == 1
    assert (tmp_path / "artifacts" / "halved_schedule.json").exists()
    source = next(r for r in results["runs"] if r["experiment"] == "source")
    replayed = next(r for r in results["runs"] if r["experiment"] == "replay")
    # LambdaLR's factor at step t is values[t]; the logged lr after step t is factor(t)
    assert replayed["curve"]["lr"][:-1] == pytest.approx([v / 2 for v in source["curve"]["lr"][1:]])

    def must_not_run(*args, **kwargs):
        raise AssertionError("resumed work was redone")

    monkeypatch.setattr(executors_module, "train", must_not_run)
    again = run_suite(
        Suite(
            name=suite.name,
            description=suite.description,
            seeds=1,
            plan=tuple(
                Stage(item.name, must_not_run, item.experiments, item.artifacts, item.title)
                if isinstance(item, Stage)
                else item
                for item in suite.plan
            ),
        ),
        tmp_path,
        progress=False,
    )
    assert again["artifacts"] == results["artifacts"]
    assert again["resumed_runs"] == len(results["runs"])


def test_a_stage_must_come_after_what_it_reads() -> None:
    with pytest.raises(ValueError, match="do not come before it"):
        Suite(
            name="bad",
            description="",
            plan=(Stage("s", _mean_lr_schedule, experiments=("later",)),),
        )


# ------------------------------------------------------------------------------ layers


def _lint_imports(source_root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "lint-imports"),
            "--config",
            str(REPO / "pyproject.toml"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(source_root), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )


def test_layer_contracts_hold() -> None:
    result = _lint_imports(REPO / "src")
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_upward_import_breaks_the_layer_contracts(tmp_path: Path) -> None:
    copy = tmp_path / "src"
    shutil.copytree(REPO / "src" / "lrkit", copy / "lrkit")
    registry = copy / "lrkit" / "methods" / "registry.py"
    registry.write_text(registry.read_text() + "\nimport lrkit.harness.bench  # noqa\n")
    result = _lint_imports(copy)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout.upper()


MAX_MODULE_LINES = 400


def test_modules_stay_small_or_say_why() -> None:
    for path in sorted((REPO / "src" / "lrkit").rglob("*.py")):
        lines = path.read_text().splitlines()
        if len(lines) > MAX_MODULE_LINES:
            head = "\n".join(lines[:30]).lower()
            assert "this module is long" in head, (
                f"{path.relative_to(REPO)} has {len(lines)} lines; split it or say in its "
                "first lines why it is long ('This module is long because ...')"
            )


def test_graph_and_validation_closures_evaluate_at_given_parameters_without_touching_buffers():
    from lrkit.data.batches import Batch
    from lrkit.harness.closures import graph_closure, validation_closure
    from lrkit.tasks import get_task

    task = get_task("digits_mlp")
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 10)
    )
    data = task.load_data(0)
    batch = Batch(data.train_inputs[:16], data.train_targets[:16], torch.arange(16))
    running = model[2].running_mean.clone()
    shifted = {name: p.detach() + 0.5 for name, p in model.named_parameters()}
    train_closure = graph_closure(model, model, task, batch, per_example=True)
    losses = train_closure()
    assert losses.shape == (16,) and losses.requires_grad
    assert not torch.equal(model[2].running_mean, running), "the plain forward trains BN"
    at_shift = train_closure(shifted)
    assert not torch.allclose(at_shift, losses)
    validation = validation_closure(model, task, batch)
    before = model[2].running_mean.clone()
    value = validation()
    torch.autograd.grad(value, list(model.parameters()))
    assert torch.equal(model[2].running_mean, before), "validation touched BatchNorm statistics"
    assert float(validation(shifted)) == pytest.approx(float(task.reduce(at_shift)))
    # works inside torch.func transforms: a Hessian-vector product by forward over reverse
    params = {name: p.detach() for name, p in model.named_parameters()}
    tangent = {name: torch.ones_like(p) for name, p in params.items()}
    _, hvp = torch.func.jvp(torch.func.grad(lambda p: validation(p)), (params,), (tangent,))
    assert set(hvp) == set(params)


DOCS = REPO / "docs" / "contract.md"


@pytest.mark.parametrize(
    ("index", "printed"),
    [(0, "effective_lr"), (1, "instance_multiplier_mean"), (2, "meta_optimizer")],
)
def test_the_documented_loops_run(index: int, printed: str, capsys) -> None:
    import re

    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    assert len(blocks) == 3
    exec(compile(blocks[index], f"docs/contract.md block {index}", "exec"), {})
    assert printed in capsys.readouterr().out


def test_public_optimizers_document_every_argument():
    """Every public optimizer class has an ``Args:`` entry for each argument of its
    ``__init__``, as torch.optim's classes do."""
    import inspect

    import lrkit

    missing = {}
    for name in lrkit.__all__:
        obj = getattr(lrkit, name)
        if not (inspect.isclass(obj) and issubclass(obj, torch.optim.Optimizer)):
            continue
        doc = inspect.getdoc(obj) or ""
        args = doc.split("Args:", 1)[1] if "Args:" in doc else ""
        params = [p for p in inspect.signature(obj.__init__).parameters if p != "self"]
        absent = [p for p in params if f"\n{p}:" not in "\n" + args.replace("    ", "")]
        if absent:
            missing[name] = absent
    assert not missing, f"undocumented arguments: {missing}"
