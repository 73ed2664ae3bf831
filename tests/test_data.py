"""Dataset loaders: the real Fashion-MNIST and Tiny Shakespeare, and MNIST, CIFAR-10/100 and
PTB from small files in their real formats written here; file discovery and error paths."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import lrkit.data.root as data_root
from data_files import idx_bytes, needs_real_data, real_data_folder
from lrkit.data import (
    CorruptDataError,
    DataNotFoundError,
    find_data_dir,
    load_cifar10,
    load_cifar100,
    load_fashion_mnist,
    load_mnist,
    load_ptb,
    load_tiny_shakespeare,
)
from lrkit.data.images import IDX_FILES

SHAKESPEARE_CHARACTERS = 1_115_394  # karpathy/char-rnn input.txt, as documented


@pytest.fixture
def no_default_places(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No $LRKIT_DATA; the clone's shared data folder, the user's data folder
    ($XDG_DATA_HOME/lrkit) and the system data folder are empty temporary folders.
    Returns the system data folder."""
    monkeypatch.delenv("LRKIT_DATA", raising=False)
    monkeypatch.setattr(data_root, "CHECKOUT_DATA_DIR", tmp_path / "clone-shared-data")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    system = tmp_path / "system-datasets"
    monkeypatch.setattr(data_root, "SYSTEM_DATA_DIR", system)
    return system


# ---------------------------------------------------------------- real data


@needs_real_data("fashion-mnist")
def test_real_fashion_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    folder = real_data_folder("fashion-mnist")
    monkeypatch.setenv("LRKIT_DATA", str(folder))
    data = load_fashion_mnist()
    assert data.train_images.shape == (60000, 1, 28, 28)
    assert data.test_images.shape == (10000, 1, 28, 28)
    assert data.train_images.dtype == torch.float32 and data.train_labels.dtype == torch.int64
    assert data.num_classes == 10 and len(data.class_names) == 10
    for images in (data.train_images, data.test_images):
        assert float(images.min()) == 0.0 and float(images.max()) == 1.0
    pixel_levels = data.test_images * 255
    assert torch.equal(pixel_levels, pixel_levels.round())
    assert torch.equal(data.train_labels.bincount(), torch.full((10,), 6000))
    assert torch.equal(data.test_labels.bincount(), torch.full((10,), 1000))

    start = time.perf_counter()
    again = load_fashion_mnist(folder)
    assert time.perf_counter() - start < 1.0
    assert again is data


@needs_real_data("tinyshakespeare")
def test_real_tiny_shakespeare(monkeypatch: pytest.MonkeyPatch) -> None:
    folder = real_data_folder("tinyshakespeare")
    monkeypatch.setenv("LRKIT_DATA", str(folder))
    corpus = load_tiny_shakespeare()
    sizes = [corpus.train.numel(), corpus.valid.numel(), corpus.test.numel()]
    assert sum(sizes) == SHAKESPEARE_CHARACTERS
    assert sizes[1] == int(SHAKESPEARE_CHARACTERS * 0.05) == sizes[2]
    assert len(corpus.vocab) == 65 and list(corpus.vocab) == sorted(corpus.vocab)
    assert corpus.train.dtype == torch.int64
    text = (folder / "input.txt").read_text(encoding="utf-8")
    every_id = torch.cat([corpus.train, corpus.valid, corpus.test])
    assert "".join(corpus.decode(every_id)) == text


# ---------------------------------------------------------------- idx (MNIST)


def write_mnist(folder: Path, num_train: int = 12, num_test: int = 5, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {
        IDX_FILES[0]: rng.integers(0, 256, (num_train, 28, 28), dtype=np.uint8),
        IDX_FILES[1]: rng.integers(0, 10, num_train, dtype=np.uint8),
        IDX_FILES[2]: rng.integers(0, 256, (num_test, 28, 28), dtype=np.uint8),
        IDX_FILES[3]: rng.integers(0, 10, num_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        (folder / name).write_bytes(idx_bytes(array))
    return arrays


def assert_mnist_matches(data, arrays: dict) -> None:
    expected_train = torch.from_numpy(arrays[IDX_FILES[0]]).unsqueeze(1).float() / 255
    expected_test = torch.from_numpy(arrays[IDX_FILES[2]]).unsqueeze(1).float() / 255
    assert torch.equal(data.train_images, expected_train)
    assert torch.equal(data.test_images, expected_test)
    assert torch.equal(data.train_labels, torch.from_numpy(arrays[IDX_FILES[1]]).long())
    assert torch.equal(data.test_labels, torch.from_numpy(arrays[IDX_FILES[3]]).long())


def test_mnist_from_explicit_root(tmp_path: Path) -> None:
    arrays = write_mnist(tmp_path / "mnist")
    for root in (tmp_path, tmp_path / "mnist"):
        data = load_mnist(root)
        assert data.name == "mnist" and data.class_names[3] == "3"
        assert_mnist_matches(data, arrays)


def test_mnist_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = write_mnist(tmp_path / "mnist", seed=1)
    monkeypatch.setenv("LRKIT_DATA", str(tmp_path))
    assert_mnist_matches(load_mnist(), arrays)


def test_idx_cache_hit_and_rewrite(tmp_path: Path) -> None:
    folder = tmp_path / "mnist"
    write_mnist(folder, seed=2)
    first = load_mnist(folder)
    assert load_mnist(folder) is first
    rewritten = write_mnist(folder, seed=3)
    for name in IDX_FILES:  # a rewrite within one clock tick may keep the mtime
        stat = (folder / name).stat()
        os.utime(folder / name, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert_mnist_matches(load_mnist(folder), rewritten)


def test_idx_wrong_magic(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    labels_as_images = idx_bytes(np.zeros(12, dtype=np.uint8))
    (tmp_path / IDX_FILES[0]).write_bytes(labels_as_images)
    with pytest.raises(CorruptDataError, match=r"train-images-idx3-ubyte\.gz.*magic.*2049.*2051"):
        load_mnist(tmp_path)


def test_idx_truncated_gzip(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    path = tmp_path / IDX_FILES[2]
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(CorruptDataError, match=r"t10k-images-idx3-ubyte\.gz.*gzip"):
        load_mnist(tmp_path)


def test_idx_payload_shorter_than_header(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    header = struct.pack(">IIII", 2051, 12, 28, 28)
    (tmp_path / IDX_FILES[0]).write_bytes(gzip.compress(header + bytes(100)))
    with pytest.raises(CorruptDataError, match=r"train-images.*\(12, 28, 28\)"):
        load_mnist(tmp_path)


def test_idx_count_mismatch(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    (tmp_path / IDX_FILES[1]).write_bytes(idx_bytes(np.zeros(11, dtype=np.uint8)))
    with pytest.raises(CorruptDataError, match=r"12 images.*11 labels"):
        load_mnist(tmp_path)


def test_idx_label_out_of_range(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    (tmp_path / IDX_FILES[3]).write_bytes(idx_bytes(np.full(5, 10, dtype=np.uint8)))
    with pytest.raises(CorruptDataError, match=r"t10k-labels.*\[0, 9\]"):
        load_mnist(tmp_path)


# ---------------------------------------------------------------- CIFAR pickles


def write_pickle(path: Path, content: dict) -> None:
    path.write_bytes(pickle.dumps(content, protocol=2))


def cifar_rows(rng: np.random.Generator, count: int) -> np.ndarray:
    return rng.integers(0, 256, (count, 3072), dtype=np.uint8)


def write_cifar10(folder: Path, per_batch: int = 3) -> dict:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        content = {
            b"batch_label": name.encode(),
            b"data": cifar_rows(rng, per_batch),
            b"labels": rng.integers(0, 10, per_batch).tolist(),
            b"filenames": [f"{name}_{i}.png".encode() for i in range(per_batch)],
        }
        write_pickle(folder / name, content)
        batches[name] = content
    names = [f"class{k}".encode() for k in range(10)]
    meta = {b"label_names": names, b"num_cases_per_batch": per_batch, b"num_vis": 3072}
    write_pickle(folder / "batches.meta", meta)
    return batches


def as_images(rows: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rows.reshape(-1, 3, 32, 32)).float() / 255


def assert_cifar10_matches(data, batches: dict) -> None:
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    assert torch.equal(data.train_images, as_images(np.concatenate([b[b"data"] for b in train])))
    assert data.train_labels.tolist() == sum((b[b"labels"] for b in train), [])
    assert torch.equal(data.test_images, as_images(batches["test_batch"][b"data"]))
    assert data.test_labels.tolist() == batches["test_batch"][b"labels"]
    assert data.class_names == tuple(f"class{k}" for k in range(10))


def test_cifar10_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    batches = write_cifar10(tmp_path / "cifar-10-batches-py")
    data = load_cifar10(tmp_path)
    assert data.train_images.shape == (15, 3, 32, 32) and data.num_classes == 10
    assert_cifar10_matches(data, batches)
    monkeypatch.setenv("LRKIT_DATA", str(tmp_path))
    assert_cifar10_matches(load_cifar10(), batches)


def test_cifar10_channel_layout(tmp_path: Path) -> None:
    batches = write_cifar10(tmp_path)
    row = np.concatenate([np.full(1024, 10), np.full(1024, 20), np.full(1024, 30)])
    batches["test_batch"][b"data"][0] = row.astype(np.uint8)
    write_pickle(tmp_path / "test_batch", batches["test_batch"])
    first = load_cifar10(tmp_path).test_images[0]
    for channel, value in enumerate((10, 20, 30)):
        assert torch.all(first[channel] == value / 255)


def test_cifar10_missing_key(tmp_path: Path) -> None:
    batches = write_cifar10(tmp_path)
    del batches["data_batch_3"][b"labels"]
    write_pickle(tmp_path / "data_batch_3", batches["data_batch_3"])
    with pytest.raises(CorruptDataError, match=r"data_batch_3.*\['labels'\]"):
        load_cifar10(tmp_path)


def test_cifar10_wrong_row_length(tmp_path: Path) -> None:
    batches = write_cifar10(tmp_path)
    batches["test_batch"][b"data"] = np.zeros((3, 1024), dtype=np.uint8)
    write_pickle(tmp_path / "test_batch", batches["test_batch"])
    with pytest.raises(CorruptDataError, match=r"test_batch.*\[N, 3072\]"):
        load_cifar10(tmp_path)


class _OpensAFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (str(self.path), "w"))


def test_cifar_pickle_cannot_run_code(tmp_path: Path) -> None:
    batches = write_cifar10(tmp_path)
    marker = tmp_path / "code-ran"
    write_pickle(tmp_path / "test_batch", {**batches["test_batch"], b"x": _OpensAFile(marker)})
    with pytest.raises(CorruptDataError, match=r"test_batch.*refusing"):
        load_cifar10(tmp_path)
    assert not marker.exists()


def write_cifar100(folder: Path, count: int = 6) -> dict:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    splits = {}
    for name in ("train", "test"):
        splits[name] = {
            b"data": cifar_rows(rng, count),
            b"fine_labels": rng.integers(0, 100, count).tolist(),
            b"coarse_labels": rng.integers(0, 20, count).tolist(),
        }
        write_pickle(folder / name, splits[name])
    meta = {
        b"fine_label_names": [f"fine{k}".encode() for k in range(100)],
        b"coarse_label_names": [f"coarse{k}".encode() for k in range(20)],
    }
    write_pickle(folder / "meta", meta)
    return splits


@pytest.mark.parametrize("label_kind, num_classes", [("fine", 100), ("coarse", 20)])
def test_cifar100_round_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, label_kind: str, num_classes: int
) -> None:
    splits = write_cifar100(tmp_path / "cifar-100-python")
    monkeypatch.setenv("LRKIT_DATA", str(tmp_path))
    for data in (load_cifar100(tmp_path, label_kind), load_cifar100(label_kind=label_kind)):
        assert data.num_classes == num_classes == len(data.class_names)
        assert data.class_names[1] == f"{label_kind}1"
        assert torch.equal(data.train_images, as_images(splits["train"][b"data"]))
        assert torch.equal(data.test_images, as_images(splits["test"][b"data"]))
        key = f"{label_kind}_labels".encode()
        assert data.train_labels.tolist() == splits["train"][key]
        assert data.test_labels.tolist() == splits["test"][key]


def test_cifar100_missing_key_and_bad_kind(tmp_path: Path) -> None:
    splits = write_cifar100(tmp_path)
    del splits["test"][b"coarse_labels"]
    write_pickle(tmp_path / "test", splits["test"])
    assert load_cifar100(tmp_path, "fine").test_labels.tolist() == splits["test"][b"fine_labels"]
    with pytest.raises(CorruptDataError, match=r"test.*\['coarse_labels'\]"):
        load_cifar100(tmp_path, "coarse")
    with pytest.raises(ValueError, match="'fine' or 'coarse'"):
        load_cifar100(tmp_path, "medium")  # type: ignore[arg-type]


# ---------------------------------------------------------------- text


PTB_TEXT = {
    "ptb.train.txt": " the cat sat on the mat \n the dog sat \n a <unk> ran \n",
    "ptb.valid.txt": " the cat ran \n",
    "ptb.test.txt": " a dog sat on <unk> \n the mat \n",
}


def write_ptb(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in PTB_TEXT.items():
        (folder / name).write_text(text)


def ptb_tokens(text: str) -> list[str]:
    return [word for line in text.splitlines() for word in [*line.split(), "<eos>"]]


def test_ptb_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_ptb(tmp_path / "ptb")
    monkeypatch.setenv("LRKIT_DATA", str(tmp_path))
    for corpus in (load_ptb(tmp_path), load_ptb()):
        train_tokens = ptb_tokens(PTB_TEXT["ptb.train.txt"])
        counts = {w: train_tokens.count(w) for w in train_tokens}
        assert list(corpus.vocab) == sorted(counts, key=lambda w: (-counts[w], w))
        for split, name in zip(("train", "valid", "test"), PTB_TEXT, strict=True):
            ids = getattr(corpus, split)
            assert ids.dtype == torch.int64
            assert corpus.decode(ids) == ptb_tokens(PTB_TEXT[name])


def test_ptb_missing_file_and_unknown_word(tmp_path: Path) -> None:
    write_ptb(tmp_path)
    (tmp_path / "ptb.test.txt").unlink()
    with pytest.raises(DataNotFoundError, match=r"(?s)ptb\.test\.txt.*lacks ptb\.test\.txt"):
        load_ptb(tmp_path)
    (tmp_path / "ptb.test.txt").write_text(" the zebra sat \n")
    with pytest.raises(CorruptDataError, match=r"ptb\.test\.txt.*zebra"):
        load_ptb(tmp_path)


def test_tiny_shakespeare_small_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = "ROMEO:\nBut, soft! what light through yonder window breaks? Æ\n" * 5
    (tmp_path / "tinyshakespeare").mkdir()
    (tmp_path / "tinyshakespeare" / "input.txt").write_text(text, encoding="utf-8")
    monkeypatch.setenv("LRKIT_DATA", str(tmp_path))
    corpus = load_tiny_shakespeare(valid_fraction=0.1, test_fraction=0.2)
    assert corpus.vocab == tuple(sorted(set(text)))
    assert [corpus.valid.numel(), corpus.test.numel()] == [
        int(len(text) * 0.1),
        int(len(text) * 0.2),
    ]
    joined = "".join(corpus.decode(torch.cat([corpus.train, corpus.valid, corpus.test])))
    assert joined == text
    assert "".join(corpus.decode(corpus.test)) == text[len(text) - int(len(text) * 0.2) :]
    with pytest.raises(ValueError, match="must be below 1"):
        load_tiny_shakespeare(tmp_path, valid_fraction=0.5, test_fraction=0.5)


# ---------------------------------------------------------------- finding data


def test_missing_data_message(tmp_path: Path, no_default_places: Path) -> None:
    with pytest.raises(DataNotFoundError) as caught:
        load_fashion_mnist()
    message = str(caught.value)
    for place in (
        tmp_path / "clone-shared-data" / "fashion-mnist",
        tmp_path / "xdg-data" / "lrkit" / "fashion-mnist",
        no_default_places / "fashion-mnist",
    ):
        assert f"{place}  (no such folder)" in message
    assert "LRKIT_DATA is not set" in message
    assert "--data-dir <folder>" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert all(name in message for name in IDX_FILES)

    nowhere = tmp_path / "nowhere"
    with pytest.raises(DataNotFoundError) as caught:
        load_cifar10(nowhere)
    message = str(caught.value)
    assert f"{nowhere}  (no such folder)" in message
    assert str(nowhere / "cifar-10-batches-py") in message
    assert "cifar-10-python.tar.gz" in message
    assert str(no_default_places) not in message  # an explicit root is the only place
    assert isinstance(caught.value, FileNotFoundError)


def test_search_order(tmp_path: Path, no_default_places: Path, monkeypatch) -> None:
    def put(place: str) -> Path:
        folder = tmp_path / place / "set"
        folder.mkdir(parents=True)
        (folder / "a.txt").write_text(place)
        return folder

    def found(root: Path | None = None) -> Path:
        return find_data_dir("set", ["a.txt"], root, folder_names=["set"])

    (tmp_path / "xdg-data" / "lrkit").mkdir(parents=True)
    (tmp_path / "xdg-data" / "lrkit" / "a.txt").write_text("loose")
    with pytest.raises(DataNotFoundError):
        found()  # a default place is searched for the dataset's folder, not loose files
    # each place, once it has the files, wins over the places after it
    system = put("system-datasets")
    assert found() == system
    user = put("xdg-data/lrkit")
    assert found() == user
    clone = put("clone-shared-data")
    assert found() == clone
    monkeypatch.setenv("LRKIT_DATA", str(tmp_path / "env"))
    env = put("env")
    assert found() == env
    explicit = put("explicit")
    assert found(tmp_path / "explicit") == explicit
    with pytest.raises(DataNotFoundError, match="b.txt"):
        find_data_dir("set", ["a.txt", "b.txt"], tmp_path / "env", folder_names=["set"])
    with pytest.raises(DataNotFoundError, match="explicit"):
        find_data_dir("set", ["a.txt"], tmp_path / "explicit", folder_names=["other"])


def test_user_data_dir_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert data_root.user_data_dir() == tmp_path / "home" / ".local" / "share" / "lrkit"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/data")  # ignored, as the XDG spec says
    assert data_root.user_data_dir() == tmp_path / "home" / ".local" / "share" / "lrkit"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert data_root.user_data_dir() == tmp_path / "xdg" / "lrkit"


def test_clone_data_folder_only_for_a_clone(tmp_path: Path) -> None:
    clone_package = tmp_path / "work" / "lrkit-clone" / "src" / "lrkit"
    clone_package.mkdir(parents=True)
    assert data_root.checkout_data_dir(clone_package) is None  # no pyproject.toml: no clone
    (tmp_path / "work" / "lrkit-clone" / "pyproject.toml").write_text("[project]\n")
    expected = tmp_path / "work" / "shared" / "data"
    assert data_root.checkout_data_dir(clone_package) == expected
    installed = tmp_path / "venv" / "lib" / "python3.11" / "site-packages" / "lrkit"
    installed.mkdir(parents=True)
    (installed.parents[1] / "pyproject.toml").write_text("[project]\n")
    assert data_root.checkout_data_dir(installed) is None
