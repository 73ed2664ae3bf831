"""Where dataset files live on disk, and the errors raised when they are missing or malformed.

lrkit never downloads anything. A loader looks for its files, in this order:

1. an explicit ``root`` argument: the folder itself, or ``root/<folder_name>``;
2. the environment variable ``$LRKIT_DATA`` (what the CLI's ``--data-dir`` sets): the folder
   itself, or ``$LRKIT_DATA/<folder_name>``;
3. for lrkit run from a clone of its repository (an editable install, or ``src`` on the
   path), ``<clone>/../shared/data/<folder_name>``: the team's machines keep the offline
   data in a folder ``shared/data`` beside the clones;
4. the user's data folder ``$XDG_DATA_HOME/lrkit/<folder_name>``
   (``~/.local/share/lrkit/<folder_name>`` when ``$XDG_DATA_HOME`` is unset);
5. the system location ``/usr/share/datasets/<folder_name>`` (where Debian's
   ``dataset-*`` packages install, e.g. ``apt-get install dataset-fashion-mnist``).

The places after ``$LRKIT_DATA`` are searched for ``<folder_name>`` only, never for loose
files, since several datasets share file names (MNIST and Fashion-MNIST). An explicit
``root`` is final: when it lacks the files, the loader raises instead of falling back to
another place, so a run never silently trains on data it was not pointed at.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

ENV_VAR = "LRKIT_DATA"
SYSTEM_DATA_DIR = Path("/usr/share/datasets")


def checkout_data_dir(package: Path) -> Path | None:
    """``<clone>/../shared/data`` when the lrkit package folder ``package`` is
    ``<clone>/src/lrkit`` of a clone of the repository (``<clone>/pyproject.toml`` exists),
    else None (an installed wheel)."""
    clone = package.parents[1]
    if package.parent.name == "src" and (clone / "pyproject.toml").is_file():
        return clone.parent / "shared" / "data"
    return None


CHECKOUT_DATA_DIR = checkout_data_dir(Path(__file__).resolve().parents[1])


def user_data_dir() -> Path:
    """``$XDG_DATA_HOME/lrkit``, or ``~/.local/share/lrkit`` when ``$XDG_DATA_HOME`` is unset,
    empty or relative (the XDG Base Directory rule)."""
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return base / "lrkit"


_HOW_TO_GET = {
    "fashion-mnist": (
        "install the Debian package (`sudo apt-get install dataset-fashion-mnist`, which puts "
        "the files in /usr/share/datasets/fashion-mnist), or copy the four .gz files from "
        "https://github.com/zalandoresearch/fashion-mnist (folder data/fashion) into "
        f"${ENV_VAR}/fashion-mnist"
    ),
    "mnist": (
        "download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz from "
        "https://yann.lecun.com/exdb/mnist/ (or a mirror such as "
        f"https://ossci-datasets.s3.amazonaws.com/mnist/) into ${ENV_VAR}/mnist"
    ),
    "cifar10": (
        "download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and extract it "
        f"into ${ENV_VAR} (it unpacks to a folder cifar-10-batches-py)"
    ),
    "cifar100": (
        "download https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz and extract it "
        f"into ${ENV_VAR} (it unpacks to a folder cifar-100-python)"
    ),
    "ptb": (
        "download Mikolov's http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz and "
        f"copy data/ptb.train.txt, data/ptb.valid.txt and data/ptb.test.txt into ${ENV_VAR}/ptb"
    ),
    "tinyshakespeare": (
        "download https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
        f"tinyshakespeare/input.txt into ${ENV_VAR}/tinyshakespeare/input.txt"
    ),
}


class DataNotFoundError(FileNotFoundError):
    """A dataset's files are in none of the places lrkit looks (see :func:`find_data_dir`)."""


class CorruptDataError(ValueError):
    """A dataset file exists but is not in the expected format (wrong header, truncated,
    inconsistent counts, missing keys)."""


def search_key(root: str | Path | None) -> tuple[str | None, ...]:
    """Everything the search for a dataset depends on (the explicit root, ``$LRKIT_DATA``,
    the user's data folder): a cache of loaded data keyed on it never serves data from a
    place the current search would not look in."""
    return (
        None if root is None else str(root),
        os.environ.get(ENV_VAR),
        str(user_data_dir()),
    )


def _candidates(root: str | Path | None, folder_names: Sequence[str]) -> list[Path]:
    def with_subfolders(base: Path) -> list[Path]:
        return [base, *(base / name for name in folder_names)]

    if root is not None:
        return with_subfolders(Path(root).expanduser())
    places = []
    env_root = os.environ.get(ENV_VAR)
    if env_root:
        places += with_subfolders(Path(env_root).expanduser())
    shared = [CHECKOUT_DATA_DIR] if CHECKOUT_DATA_DIR is not None else []
    for base in (*shared, user_data_dir(), SYSTEM_DATA_DIR):
        places += [base / name for name in folder_names]
    return places


def _missing_files(folder: Path, required_files: Sequence[str]) -> list[str]:
    return [name for name in required_files if not (folder / name).is_file()]


def find_data_dir(
    dataset: str,
    required_files: Sequence[str],
    root: str | Path | None = None,
    *,
    folder_names: Sequence[str] = (),
) -> Path:
    """The first folder that holds every one of ``required_files``.

    Looks in ``root`` and ``root/<folder_name>`` when ``root`` is given (and nowhere else);
    otherwise in ``$LRKIT_DATA``, ``$LRKIT_DATA/<folder_name>``, then ``<folder_name>`` in
    ``<clone>/../shared/data`` (lrkit run from a clone), the user's data folder
    (:func:`user_data_dir`) and ``/usr/share/datasets``. Raises :class:`DataNotFoundError`
    naming every place looked, the files expected, and how to obtain ``dataset``.
    """
    places = _candidates(root, folder_names)
    for folder in places:
        if folder.is_dir() and not _missing_files(folder, required_files):
            return folder.resolve()

    lines = [f"could not find the {dataset} data; expected the files {', '.join(required_files)}"]
    lines.append("looked in:")
    for folder in places:
        if not folder.is_dir():
            status = "no such folder"
        else:
            status = "folder exists but lacks " + ", ".join(_missing_files(folder, required_files))
        lines.append(f"  {folder}  ({status})")
    if root is None and not os.environ.get(ENV_VAR):
        lines.append(f"  (${ENV_VAR} is not set)")
    how = _HOW_TO_GET.get(dataset, f"put the files in a folder under ${ENV_VAR}")
    lines.append(f"to get them: {how};")
    subfolders = " or ".join(f"<folder>/{name}" for name in folder_names)
    lines.append(
        f"then pass --data-dir <folder> (CLI) or root=<folder> (Python), or set "
        f"{ENV_VAR}=<folder>, where the files are in <folder>"
        + (f" or {subfolders}" if subfolders else "")
        + (f"; or put them in {user_data_dir() / folder_names[0]}" if folder_names else "")
        + ". lrkit never downloads data."
    )
    raise DataNotFoundError("\n".join(lines))


def file_signature(folder: Path, names: Sequence[str]) -> tuple[tuple[str, int, int], ...]:
    """(name, size, mtime in ns) of each file: part of the in-memory cache key, so that a
    file rewritten in place is read again rather than served stale from the cache."""
    signature = []
    for name in names:
        stat = (folder / name).stat()
        signature.append((name, stat.st_size, stat.st_mtime_ns))
    return tuple(signature)
