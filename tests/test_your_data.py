"""Data other than CIFAR-10: image folders of any square side from 16 to 128, colour or grayscale,
any number of classes, and the named torchvision data sets read from files written here in each
one's own on-disk format. End to end: run, best --export, retrain and report on new shapes."""

import hashlib
import json
import pickle
import re

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_space import Shape
from resnet_space.count import count
from resnet_space.model import build_model
from resnet_space.space import SpaceError, StudyFile
from resnet_space.spec import ResNetSpec, max_stages
from search.commands.cli import main
from search.engine.data import DataError, find_data, load_data

from .conftest import TINY_SPACE, onnx_accuracy


def write_folder(root, classes=3, side=32, mode="RGB", train=4, test=2, name=lambda c: f"c{c:04d}"):
    """train/<class>/*.png and test/<class>/*.png of `side` pixels in PIL `mode`; each class its own
    brightness pattern plus noise, so a tiny network learns something in an epoch."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("test", test)):
        for c in range(classes):
            folder = root / split / name(c)
            folder.mkdir(parents=True, exist_ok=True)
            base = np.array([(37 * c) % 256, (91 * c) % 256, (163 * c) % 256])
            for i in range(n):
                pixels = np.clip(base + rng.normal(0, 30, (side, side, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).convert(mode).save(folder / f"{i}.png")
    return root


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_SEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RESNET_SEARCH_DATA", raising=False)


# ---------------------------------------------------------------- folders of new shapes


@pytest.mark.parametrize("side, mode, classes, channels", [(16, "RGB", 2, 3), (28, "L", 10, 1), (64, "RGB", 100, 3),
                                                           (128, "L", 2, 1)])
def test_a_folder_is_described_by_what_it_holds(tmp_path, side, mode, classes, channels):
    write_folder(tmp_path / "data", classes, side, mode, train=3, test=1)
    data = load_data(tmp_path / "data", val_size=classes, seed=0)
    about = data.description
    assert about.shape == Shape(side, channels, classes) and len(about.classes) == classes
    assert data.train.images.shape[1:] == (channels, side, side) and data.test.images.dtype == torch.uint8
    pixels = data.train.images.double() / 255  # measured on the training split, per channel
    assert about.mean == pytest.approx(pixels.mean((0, 2, 3)).tolist(), abs=1e-9)
    assert about.std == pytest.approx(pixels.std((0, 2, 3)).tolist(), abs=1e-9)
    normalised = about.normalize(data.train.images)
    assert normalised.mean((0, 2, 3)).abs().max() < 1e-4 and (normalised.std((0, 2, 3)) - 1).abs().max() < 1e-3


def test_a_grayscale_image_in_a_colour_folder_is_read_as_colour_and_not_the_reverse(tmp_path):
    write_folder(tmp_path / "colour", side=16)
    Image.new("L", (16, 16), 200).save(tmp_path / "colour" / "train" / "c0001" / "9.png")
    data = load_data(tmp_path / "colour", val_size=3)
    assert data.description.channels == 3
    write_folder(tmp_path / "gray", side=16, mode="L")
    Image.new("RGB", (16, 16), (200, 10, 10)).save(tmp_path / "gray" / "train" / "c0001" / "9.png")
    with pytest.raises(DataError, match=r"c0001/9\.png is colour \(RGB\) but the first image, .*c0000/0\.png, is "
                                        "grayscale"):
        load_data(tmp_path / "gray", val_size=3)


def test_the_space_says_what_it_does_at_16_and_at_128_pixels(tmp_path):
    assert (max_stages(16), max_stages(28), max_stages(32), max_stages(128)) == (5, 6, 6, 8)
    path = tmp_path / "space.toml"
    path.write_text("[space]\nstages = [2, 6]\nblocks = 1\n")
    space = StudyFile.load(path)
    with pytest.raises(SpaceError, match="stages goes up to 6, but 16x16 images allow at most 5"):
        space.for_shape(Shape(16, 3, 10))
    fitted = space.for_shape(Shape(128, 1, 7))
    smallest = fitted.smallest_specs()
    assert all(s.shape == Shape(128, 1, 7) for s in smallest)
    # At 128 pixels, 2 stages end on a 64x64 map: the pool (P = 4, capped at the map) leaves 16x16.
    two = smallest[0]
    assert two.final_side == 64 and two.pool_kernel == 4
    assert count(two).params == sum(p.numel() for p in build_model(two).parameters())
    # MACs are counted at the data's side: 4 times the pixels, 4 times the MACs of every convolution.
    at_32 = two.for_shape(Shape(32, 1, 7))
    assert count(two).macs - 16 * 16 * two.channels[-1] * 7 == 16 * (count(at_32).macs - 4 * 4 * two.channels[-1] * 7)


def test_the_baseline_is_model_1_built_for_the_data(tmp_path):
    from search.study.plan import Plan, SearchSettings

    plan = Plan.of(SearchSettings(budget=5_000_000, device="cpu", artifacts=tmp_path / "a")).for_data(Shape(28, 1, 47))
    spec, label = plan.baseline
    assert spec.blocks == (8, 6, 4, 3) and spec.shape == Shape(28, 1, 47)
    assert label == "Model 1 for 28x28 grayscale, 47 classes"
    assert build_model(spec).stem[0][0].weight.shape[1] == 1


# ---------------------------------------------------------------- bad data: one line, exit 2, nothing decoded


def decoded(tmp_path) -> bool:
    return (tmp_path / "cache").exists()


def run_on(tmp_path, data, *more):
    return main(["run", "--device", "cpu", "--space", str(TINY_SPACE), "--study", "bad", "--epochs", "1",
                 "--val-size", "2", "--data", str(data), "--storage", f"sqlite:///{tmp_path}/s.db", "--quiet", *more])


@pytest.mark.parametrize("what, make, message, before_decoding", [
    ("one-pixel", lambda f: Image.new("RGB", (1, 1)).save(f), r"is 1x1: sides from 16 to 128 pixels", True),
    ("non-square", lambda f: Image.new("RGB", (32, 30)).save(f), r"is 32x30, not square", True),
    ("four-channels", lambda f: Image.new("RGBA", (32, 32)).save(f), r"has an alpha channel \(RGBA, 4 channels\)", True),
    ("other-side", lambda f: Image.new("RGB", (24, 24)).save(f), r"is 24x24 but the first image is 32x32", False),
])
def test_bad_images_are_refused_in_one_line(tmp_path, capsys, what, make, message, before_decoding):
    write_folder(tmp_path / "data")
    make(tmp_path / "data" / "train" / "c0000" / ("0.png" if before_decoding else "3.png"))
    assert run_on(tmp_path, tmp_path / "data") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert re.search(message, err), err
    assert not (tmp_path / "s.db").exists()
    assert decoded(tmp_path) is False  # the first image is read from its header; a refused decode caches nothing


def test_a_class_folder_with_one_image_is_refused_before_decoding(tmp_path, capsys):
    write_folder(tmp_path / "data")
    for extra in (tmp_path / "data" / "train" / "c0002").iterdir():
        if extra.name != "0.png":
            extra.unlink()
    assert run_on(tmp_path, tmp_path / "data") == 2
    err = capsys.readouterr().err.strip()
    assert "c0002 has 1 image, a training class needs at least 2" in err and len(err.splitlines()) == 1
    assert not decoded(tmp_path) and not (tmp_path / "s.db").exists()


def test_1001_classes_against_a_study_file_of_10_is_refused_before_decoding(tmp_path, capsys):
    for split in ("train", "test"):  # empty images are enough: the listing refuses first
        for c in range(1001):
            folder = tmp_path / "data" / split / f"k{c:04d}"
            folder.mkdir(parents=True)
            for i in range(2 if split == "train" else 1):
                (folder / f"{i}.png").write_bytes(b"")
    space = tmp_path / "ten.toml"
    space.write_text(TINY_SPACE.read_text().replace("[space]\n", "[space]\nclasses = 10\n"))
    assert main(["run", "--device", "cpu", "--space", str(space), "--data", str(tmp_path / "data"), "--storage",
                 f"sqlite:///{tmp_path}/s.db", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "has 1001 classes (k0000, k0001" in err and "study file states classes = 10" in err
    assert not decoded(tmp_path) and not (tmp_path / "s.db").exists()


def test_a_thousand_classes_are_taken_from_the_data(tmp_path):
    write_folder(tmp_path / "data", classes=1000, side=16, train=2, test=1)
    source = find_data(tmp_path / "data")
    assert source.shape == Shape(16, 3, 1000)
    data = source.load(val_size=1000)
    assert data.val.labels.bincount().tolist() == [1] * 1000  # stratified: one of each class held out


# ---------------------------------------------------------------- named data sets, in their own formats


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_cifar(root, hundred: bool, monkeypatch):
    import torchvision.datasets as tv

    kind, folder = (tv.CIFAR100, "cifar-100-python") if hundred else (tv.CIFAR10, "cifar-10-batches-py")
    base = root / folder
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    label_key, names_key = ("fine_labels", "fine_label_names") if hundred else ("labels", "label_names")
    classes = [f"class{c}" for c in range(100 if hundred else 10)]
    sums = {}
    for name, _ in kind.train_list + kind.test_list:
        n = len(classes) * 2
        entry = {"data": rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8), label_key: list(range(len(classes))) * 2}
        (base / name).write_bytes(pickle.dumps(entry))
        sums[name] = md5(base / name)
    (base / kind.meta["filename"]).write_bytes(pickle.dumps({names_key: classes}))
    # Published md5s cannot match files made here: the class is told the md5s of these files.
    monkeypatch.setattr(kind, "train_list", [[n, sums[n]] for n, _ in kind.train_list])
    monkeypatch.setattr(kind, "test_list", [[n, sums[n]] for n, _ in kind.test_list])
    monkeypatch.setattr(kind, "meta", {**kind.meta, "md5": md5(base / kind.meta["filename"])})
    return classes


def write_svhn(root, monkeypatch):
    import scipy.io
    import torchvision.datasets as tv

    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    table = {}
    for split, (url, name, _) in tv.SVHN.split_list.items():
        labels = np.arange(1, 11).repeat(3)[:, None]  # SVHN writes the digit 0 as 10
        scipy.io.savemat(root / name, {"X": rng.integers(0, 256, (32, 32, 3, 30), dtype=np.uint8), "y": labels})
        table[split] = [url, name, md5(root / name)]
    monkeypatch.setattr(tv.SVHN, "split_list", {**tv.SVHN.split_list, **table})


def write_fashion_mnist(root):
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 40), ("t10k", 20)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            np.array([2051, n, 28, 28], dtype=">i4").tobytes() + images.tobytes())
        labels = (np.arange(n) % 10).astype(np.uint8)
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(np.array([2049, n], dtype=">i4").tobytes() + labels.tobytes())


@pytest.mark.parametrize("name, title, shape", [
    ("cifar10", "CIFAR-10", Shape(32, 3, 10)), ("cifar100", "CIFAR-100", Shape(32, 3, 100)),
    ("svhn", "SVHN", Shape(32, 3, 10)), ("fashion-mnist", "Fashion-MNIST", Shape(28, 1, 10)),
])
def test_named_data_sets_are_read_by_torchvision_from_the_cache(tmp_path, monkeypatch, name, title, shape):
    where = tmp_path / "cache" / name
    if name.startswith("cifar"):
        write_cifar(where, name == "cifar100", monkeypatch)
    elif name == "svhn":
        write_svhn(where, monkeypatch)
    else:
        write_fashion_mnist(where)
    data = load_data(name, val_size=shape.classes, download=False)
    about = data.description
    assert (about.name, about.shape, about.root) == (title, shape, str(where))
    assert data.train.images.shape[1:] == (shape.channels, shape.side, shape.side)
    assert data.train.images.dtype == torch.uint8 and int(data.test.labels.max()) == shape.classes - 1
    if name == "svhn":
        assert about.classes == tuple("0123456789") and int(data.test.labels.min()) == 0
    # The same files named by their folder instead: the same data.
    assert load_data(where, val_size=shape.classes, download=False).description == about


def test_a_named_data_set_offline_says_where_it_looked(tmp_path, monkeypatch, capsys):
    import torchvision.datasets

    def offline(root, train, download):
        raise OSError("Name or service not known")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    assert run_on(tmp_path, "fashion-mnist") == 2
    err = capsys.readouterr().err.strip()
    where = tmp_path / "cache" / "fashion-mnist"
    assert err == (f"resnet-search: error: no Fashion-MNIST found in {where} (looked for {where / 'FashionMNIST'}) "
                   "and downloading it failed (OSError: Name or service not known); pass --data PATH or set "
                   "RESNET_SEARCH_DATA=PATH")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "s.db").exists()


# ---------------------------------------------------------------- end to end on new shapes


@pytest.mark.parametrize("side, mode, classes", [(64, "RGB", 100), (28, "L", 10), (16, "RGB", 2)])
def test_run_export_retrain_report_on_a_new_shape(tmp_path, monkeypatch, capsys, side, mode, classes):
    monkeypatch.chdir(tmp_path)
    write_folder(tmp_path / "data", classes, side, mode, train=3 if classes > 10 else 12, test=1 if classes > 10 else 4)
    channels = 1 if mode == "L" else 3
    shape = Shape(side, channels, classes)
    assert main(["run", "--budget", "2e5", "--trials", "2", "--study", "mine", "--device", "cpu", "--epochs", "1",
                 "--val-size", str(classes), "--finalists", "0", "--data", "data", "--space", str(TINY_SPACE),
                 "--quiet"]) == 0
    import optuna

    from search.study.record import StudyRecord, TrialRecord

    study = optuna.load_study(study_name="mine", storage="sqlite:///studies/resnet-search.db")
    recorded = StudyRecord.of(study)
    assert recorded.data["side"] == side and recorded.data["channels"] == channels
    assert len(recorded.data["classes"]) == classes and recorded.space["classes"] == classes
    trials = [TrialRecord.of(t) for t in study.trials]
    assert trials[0].baseline and all(ResNetSpec.from_dict(r.spec).shape == shape for r in trials)

    assert main(["best", "--export", "winner", "--data", "data"]) == 0
    metrics = json.loads((tmp_path / "winner" / "metrics.json").read_text())
    assert metrics["data"] == recorded.data
    assert metrics["input"].startswith(f"float (N, {channels}, {side}, {side}) in [0, 1]")
    program = torch.export.load(tmp_path / "winner" / "model.pt2").module()
    for batch in (1, 7):
        assert program(torch.rand(batch, channels, side, side)).shape == (batch, classes)
    # model.onnx in ONNX Runtime: the test split's accuracy exactly as recorded.
    test = load_data("data", val_size=classes, seed=recorded.split_seed).test
    assert metrics["onnx"] == "model.onnx"
    assert onnx_accuracy(tmp_path / "winner" / "model.onnx", test.images, test.labels) == metrics["test_acc"]

    assert main(["retrain", "--device", "cpu", "--seeds", "1", "--epochs", "1", "--data", "data"]) == 0
    assert len(StudyRecord.of(study).retrained) == 1

    assert main(["report"]) == 0
    page = (tmp_path / "studies" / "reports" / "mine" / "report.md").read_text()
    assert f"{classes} classes, {side}x{side} {'grayscale' if channels == 1 else 'colour'} images" in page
    capsys.readouterr()
