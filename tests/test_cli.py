"""The command line as a new user meets it: where the data come from (--data-dir), threads,
missing optional packages, Ctrl-C, and what `lrkit cost` says while it works."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import lrkit
from data_files import suite_dataset
from lrkit.cli import build_parser, main
from lrkit.data import load_digits
from lrkit.errors import MissingExtraError
from lrkit.methods import registry

SRC = Path(lrkit.__file__).resolve().parents[1]


def lrkit_process(*args: str, prelude: str = "") -> dict:
    """Popen/run arguments for ``lrkit ARGS`` in a fresh process (its own in-memory dataset
    caches) that runs ``prelude`` first."""
    code = f"import sys\n{prelude}\nfrom lrkit.cli import main\nsys.exit(main(sys.argv[1:]))"
    path = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    return {
        "args": [sys.executable, "-c", code, *args],
        "env": {**os.environ, "PYTHONPATH": path},
        "stdout": subprocess.PIPE,
        "stderr": subprocess.PIPE,
        "text": True,
    }


def run_lrkit(*args: str, prelude: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(**lrkit_process(*args, prelude=prelude), timeout=120)


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


# ---------------------------------------------------------------- --data-dir and --threads


@pytest.mark.parametrize(
    "argv",
    [
        ["--data-dir", "D", "--threads", "3", "cost", "--task", "t", "--methods", "m"],
        ["cost", "--task", "t", "--methods", "m", "--data-dir", "D", "--threads", "3"],
        ["--threads", "3", "cost", "--task", "t", "--methods", "m", "--data-dir", "D"],
    ],
)
def test_data_dir_and_threads_go_before_or_after_the_command(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert args.data_dir == "D" and args.threads == 3


@pytest.mark.parametrize("threads", ["0", "-1", "two"])
def test_threads_must_be_positive(threads: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["list", "--threads", threads])
    assert exit_info.value.code == 2
    assert f"--threads: expected a positive integer, got '{threads}'" in capsys.readouterr().err


def test_data_dir_must_exist(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--data-dir", str(tmp_path / "absent"), "list"])
    assert exit_info.value.code == 2
    assert f"--data-dir {tmp_path / 'absent'}: no such folder" in capsys.readouterr().err


def test_data_dir_reaches_the_loaders(tmp_path: Path) -> None:
    """`lrkit train --data-dir DIR` trains on DIR's Fashion-MNIST: 800 images per class, 100
    of them held out, leave 7000 training images, 109 full batches of 64 per epoch (the real
    data: 59,000 images, 921 batches)."""
    suite_dataset("fashion-mnist").write_small(tmp_path / "data" / "fashion-mnist")
    record = tmp_path / "run.json"
    result = run_lrkit(
        *("train", "--task", "fmnist_mlp2", "--method", "sgd", "--steps", "2", "--no-progress"),
        *("--data-dir", str(tmp_path / "data"), "--json", str(record)),
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(record.read_text())["steps_per_epoch"] == 7000 // 64


def test_threads_default_to_one_are_recorded_and_restored(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    before = torch.get_num_threads()
    common = ["train", "--task", "digits_mlp", "--method", "sgd", "--steps", "2", "--no-progress"]
    for extra, expected in (([], 1), (["--threads", "2"], 2)):
        assert main([*common, *extra]) == 0
        assert json.loads(capsys.readouterr().out)["threads"] == expected
        assert torch.get_num_threads() == before  # main() leaves the caller's setting alone
    out = tmp_path / "cost.json"
    cost = ["cost", "--task", "digits_mlp", "--methods", "adam", "--steps", "2", "--warmup", "1"]
    assert main([*cost, "--no-memory", "--no-progress", "--json", str(out)]) == 0
    assert [row["threads"] for row in json.loads(out.read_text())] == [1]


# ---------------------------------------------------------------- optional packages


def test_load_digits_without_scikit_learn_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("sklearn", "sklearn.datasets"):  # as if never installed, even if imported
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingExtraError, match=r"pip install 'lrkit\[sklearn\]'"):
        load_digits(test_fraction=0.3, seed=12345)  # arguments no other test caches


def test_train_without_scikit_learn_is_one_line() -> None:
    result = run_lrkit(
        *("train", "--task", "digits_mlp", "--method", "adam", "--no-progress"),
        prelude="sys.modules['sklearn'] = None",
    )
    assert result.returncode == 2
    line = one_line_error(result.stderr)
    assert line.startswith("lrkit train: ") and "pip install 'lrkit[sklearn]'" in line


def test_missing_data_is_an_error_message_not_a_traceback(tmp_path: Path) -> None:
    """Without Fashion-MNIST anywhere lrkit looks, the command says where it looked and how
    to get the files, with exit status 2 and no traceback."""
    empty = tmp_path / "empty"
    empty.mkdir()
    prelude = (
        "import lrkit.data.root as root\n"
        f"root._candidates = lambda root_, names: [__import__('pathlib').Path({str(empty)!r})]"
    )
    result = run_lrkit(
        *("train", "--task", "fmnist_mlp_subset", "--method", "adam", "--no-progress"),
        prelude=prelude,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("lrkit train: could not find the fashion-mnist data")
    assert "apt-get install dataset-fashion-mnist" in result.stderr


@pytest.mark.parametrize(
    ("method", "extra"), [("prodigy", "peers"), ("levenberg_marquardt", "scipy")]
)
def test_method_without_its_package_is_one_line(
    method: str, extra: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    spec = dataclasses.replace(registry.get_method(method), requires="lrkit_no_such_package")
    monkeypatch.setitem(registry.METHODS, method, spec)
    argv = ["train", "--task", "recht_regression", "--method", method, "--no-progress"]
    assert main([*argv, "--steps", "2"]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert f"pip install 'lrkit[{extra}]'" in line and "lrkit_no_such_package" in line


def test_bench_without_a_peer_package_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    spec = dataclasses.replace(registry.get_method("prodigy"), requires="lrkit_no_such_package")
    monkeypatch.setitem(registry.METHODS, "prodigy", spec)
    argv = ["bench", "quick", "--smoke", "--tasks", "beale", "--methods", "prodigy"]
    assert main([*argv, "--no-progress", "--out", str(tmp_path)]) == 2
    assert "pip install 'lrkit[peers]'" in one_line_error(capsys.readouterr().err)


def test_report_without_matplotlib_says_how_to_get_plots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    argv = [
        "bench",
        "quick",
        "--smoke",
        "--tasks",
        "beale",
        "--methods",
        "momentum",
        "--no-progress",
    ]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    assert "pip install 'lrkit[plots]'" in capsys.readouterr().err
    assert (tmp_path / "report.md").exists() and not list(tmp_path.glob("*.png"))


# ---------------------------------------------------------------- Ctrl-C


def test_ctrl_c_on_bench_says_how_to_resume(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    argv = [
        "bench",
        "quick",
        "--tasks",
        "recht_regression",
        "--methods",
        "momentum",
        "--seeds",
        "40",  # work left long after the first run file, however loaded the machine
        "--no-progress",
    ]
    process = subprocess.Popen(**lrkit_process(*argv, "--out", str(out)))
    deadline = time.monotonic() + 120
    while not list((out / "runs").glob("*.json")):  # interrupt once a run is finished
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    line = one_line_error(stderr)
    assert f"finished runs are kept in {out / 'runs'}" in line
    assert "the same command resumes from them: lrkit bench quick --tasks recht_regression" in line


# ---------------------------------------------------------------- lrkit cost


def test_cost_says_how_it_measures_and_shows_progress(capsys: pytest.CaptureFixture) -> None:
    argv = ["cost", "--task", "digits_mlp", "--methods", "polyak", "--steps", "3", "--warmup", "1"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    header = captured.out.splitlines()[0]
    assert "polyak (+ bases momentum)" in header
    assert "single worker" in header and "with 1 torch thread " in header
    assert "timing 2 methods on digits_mlp" in captured.err  # the tqdm bars
    assert "peak memory, one process per method" in captured.err


# ---------------------------------------------------------------- scripts/bench.sh


@pytest.mark.parametrize(
    ("extra", "expected_out"),
    [([], None), (["--out", "D"], "D"), (["--out=D"], "D")],
)
def test_bench_script_passes_out_once(
    tmp_path: Path, extra: list[str], expected_out: str | None
) -> None:
    """scripts/bench.sh hands lrkit exactly one output folder: its own fresh runs/quick-…
    folder, or the user's --out (passed twice, results.json recorded the command wrong)."""
    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "bench.sh"
    script.write_text((repo / "scripts" / "bench.sh").read_text())
    (tmp_path / "scripts" / "setup.sh").write_text("#!/usr/bin/env bash\n")  # no install here
    fake_lrkit = tmp_path / ".venv" / "bin" / "lrkit"
    fake_lrkit.parent.mkdir(parents=True)
    fake_lrkit.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')
    fake_python = tmp_path / ".venv" / "bin" / "python"  # "the data are there": no apt-get
    fake_python.write_text("#!/usr/bin/env bash\nexit 0\n")
    for path in (script, tmp_path / "scripts" / "setup.sh", fake_lrkit, fake_python):
        path.chmod(0o755)
    completed = subprocess.run(
        ["bash", str(script), *extra, "--no-progress"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    argv = completed.stdout.splitlines()[1:]  # after the "writing to" line
    out_flags = [arg for arg in argv if arg == "--out" or arg.startswith("--out=")]
    assert argv[0] == "bench" and argv[1] == "quick" and len(out_flags) == 1, argv
    if expected_out is None:
        assert argv[argv.index("--out") + 1].startswith("runs/quick-")
    else:
        assert expected_out in (argv[argv.index("--out") + 1] if "--out" in argv else out_flags[0])
    assert argv[-1] == "--no-progress"


@pytest.mark.skipif(os.geteuid() != 0, reason="the install branch runs as root (or sudo -n)")
def test_bench_script_installs_fashion_mnist_where_none_is_found(tmp_path: Path) -> None:
    """Where lrkit finds no Fashion-MNIST, scripts/bench.sh installs Debian's
    dataset-fashion-mnist (apt-get stubbed here) before it runs the suite."""
    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "bench.sh"
    script.write_text((repo / "scripts" / "bench.sh").read_text())
    stubs = {
        tmp_path / "scripts" / "setup.sh": "",
        tmp_path / ".venv" / "bin" / "lrkit": 'echo "lrkit $*"',
        tmp_path / ".venv" / "bin" / "python": "exit 1",  # no data found
        tmp_path / "bin" / "apt-get": f'echo "$*" >> {tmp_path / "apt.log"}',
    }
    for path, body in {script: None, **stubs}.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if body is not None:
            path.write_text(f"#!/usr/bin/env bash\n{body}\n")
        path.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    completed = subprocess.run(
        ["bash", str(script), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=env,
    )
    assert "installing Debian's dataset-fashion-mnist" in completed.stdout
    assert (tmp_path / "apt.log").read_text().splitlines() == [
        "install -y -q dataset-fashion-mnist"
    ]
    assert "lrkit bench quick" in completed.stdout
