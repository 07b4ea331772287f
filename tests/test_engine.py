"""The training engine on CPU with tiny specs."""

import contextlib
import math
from pathlib import Path
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_space import Recipe, ResNetSpec
from search.engine.data import (DataError, ImageSet, TrainingSet, load_data, random_cutout,
                         random_grayscale, stratified_order)
from search.engine.train import DeviceError, Diverged, learning_rate, resolve_device, train

from .conftest import DATA, needs_data

TINY = ResNetSpec((1, 1), (16, 32), 3, 1, 4)
QUICK = Recipe(epochs=2, batch_size=128, lr=0.2, schedule="onecycle", warmup=0.2, nesterov=True,
               weight_decay=5e-4, label_smoothing=0.1)


@pytest.fixture(scope="module")
def real():
    if not (DATA / "train").is_dir():
        pytest.skip(f"real CIFAR-10 images not found at {DATA} (set RESNET_SEARCH_DATA)")
    return load_data(DATA, val_size=1000, limit_train=4000, seed=0)


def synthetic(n=256, classes=10, seed=0):
    """Class-dependent colour blobs: learnable, so training on them must make progress."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    images = torch.randint(0, 60, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    for c in range(classes):
        images[labels == c, c % 3, 4 * (c // 3):4 * (c // 3) + 12, :] += 150
    return ImageSet(images, labels)


def synthetic_data(n=512):
    from search.engine.data import Dataset

    return Dataset.of(synthetic(n), synthetic(200, seed=1), synthetic(200, seed=2), [str(c) for c in range(10)],
                   "synthetic", "-")


@needs_data
def test_real_splits_are_stratified_disjoint_and_seeded():
    data = load_data(DATA, val_size=5000, limit_train=1000, seed=3)
    assert len(data.val) == 5000 and len(data.train) == 1000 and len(data.test) == 10_000
    assert data.val.labels.bincount().tolist() == [500] * 10
    assert data.train.labels.bincount().tolist() == [100] * 10
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape[1:] == (3, 32, 32)
    assert "JPEG" in data.name
    full = load_data(DATA, val_size=5000, seed=3)
    assert len(full.train) == 45_000
    # Validation images never appear in training: compare the two sets by content hash.
    train_keys = {hash(img.numpy().tobytes()) for img in full.train.images[:45_000:9]}
    assert not train_keys & {hash(img.numpy().tobytes()) for img in full.val.images}
    again = load_data(DATA, val_size=5000, limit_train=1000, seed=3)
    assert torch.equal(again.val.images, data.val.images)
    other = load_data(DATA, val_size=5000, limit_train=1000, seed=4)
    assert not torch.equal(other.val.images, data.val.images)


def test_stratified_order_prefixes_are_balanced():
    labels = torch.arange(1000) % 10
    order = stratified_order(labels, seed=0)
    assert sorted(order.tolist()) == list(range(1000))
    for k in (10, 250, 730):
        counts = labels[order[:k]].bincount(minlength=10)
        assert counts.max() - counts.min() <= 1


def test_augmentation_keeps_shapes_and_really_changes_images():
    g = torch.Generator().manual_seed(0)
    images = synthetic(64).images
    about = synthetic_data().description
    x = about.normalize(images)
    index = torch.arange(64)
    plain = TrainingSet(images, Recipe(crop_padding=0, flip=False), about).batch(index, g)
    assert plain.shape == images.shape and plain.dtype == torch.float32 and torch.equal(plain, x)

    out = TrainingSet(images, Recipe(crop_padding=4, flip=True), about).batch(index, g)
    assert out.shape == images.shape and out.dtype == torch.float32
    # Every output is a 32x32 window of its zero-padded image, or of that image's mirror.
    padded = torch.nn.functional.pad(x, (4,) * 4)
    kinds = []
    for o, p in zip(out, padded):
        windows = {(dy, dx, m) for dy in range(9) for dx in range(9) for m in (0, 1)
                   if torch.equal(o, (p.flip(-1) if m else p)[:, dy:dy + 32, dx:dx + 32])}
        assert windows, "not a crop of the image or its mirror"
        kinds.append(windows)
    assert sum((4, 4, 0) not in k for k in kinds) > 40  # really changed: 1 in 162 draws is the identity
    assert 10 < sum(all(m for _, _, m in k) for k in kinds) < 54  # about half mirrored

    gray = random_grayscale(x, 1.0, g, about)
    raw = gray * torch.tensor(about.std).view(1, 3, 1, 1) + torch.tensor(about.mean).view(1, 3, 1, 1)
    assert torch.allclose(raw[:, 0], raw[:, 1], atol=1e-5) and torch.allclose(raw[:, 1], raw[:, 2], atol=1e-5)
    holes = random_cutout(torch.ones(64, 3, 32, 32), 8, g)
    zeros = (holes[:, 0] == 0).flatten(1).sum(1)
    assert zeros.max() == 64 and zeros.min() > 0
    full = TrainingSet(images, Recipe(crop_padding=4, flip=True, grayscale=0.5, cutout=8), about).batch(index, g)
    assert full.shape == images.shape and (full - x).abs().flatten(1).amax(1).gt(0.1).float().mean() > 0.9


def test_learning_rate_schedules():
    paper = Recipe(epochs=200, schedule="multistep", milestones=(0.5, 0.75), lr=0.1)
    per_epoch = 391
    lrs = [learning_rate(paper, e * per_epoch, 200 * per_epoch) for e in (0, 99, 100, 149, 150, 199)]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    cycle = Recipe(epochs=10, schedule="onecycle", warmup=0.2, lr=0.4)
    assert learning_rate(cycle, 0, 100) == pytest.approx(0.04)
    assert learning_rate(cycle, 20, 100) == pytest.approx(0.4)
    assert learning_rate(cycle, 99, 100) < 0.01


def test_training_on_synthetic_images_learns_and_resumes_exactly(tmp_path):
    data = synthetic_data()
    recipe = Recipe(epochs=3, batch_size=64, lr=0.1, schedule="onecycle", warmup=0.2)
    whole = train(TINY, data, recipe, device="cpu", seed=5, progress=False)
    assert whole.history[-1].loss < whole.history[0].loss
    assert whole.best_val_acc > 0.5

    seen = []

    def stop_after_first(record):
        seen.append((record.epoch, record.val_acc, record.loss, record.seconds))
        if record.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(TINY, data, recipe, device="cpu", seed=5, progress=False, on_epoch=stop_after_first,
              checkpoint_dir=tmp_path)
    assert seen[0][0] == 1 and seen[0][3] > 0
    resumed = train(TINY, data, recipe, device="cpu", seed=5, progress=False, on_epoch=stop_after_first,
                    checkpoint_dir=tmp_path)
    assert resumed.resumed_from == 1 and [e for e, *_ in seen] == [1, 2, 3]
    assert [e.val_acc for e in resumed.history] == [e.val_acc for e in whole.history]
    assert [e.loss for e in resumed.history] == pytest.approx([e.loss for e in whole.history], rel=1e-6)
    assert (tmp_path / "best.pt").exists()


def test_nan_loss_stops_with_a_reason():
    data = synthetic_data(256)
    with pytest.raises(Diverged, match="loss became"):
        train(TINY, data, Recipe(epochs=2, batch_size=64, lr=100.0, momentum=0.99, weight_decay=1.0,
                                schedule="constant"), device="cpu",
              progress=False)


@needs_data
def test_a_few_epochs_on_real_images_lower_the_loss_and_beat_chance(real):
    losses = []
    result = train(TINY, real, QUICK, device="cpu", seed=0, progress=False,
                   on_epoch=lambda record: losses.append(record.loss))
    assert losses[1] < losses[0]
    assert result.best_val_acc > 0.28  # chance is 0.10; 0.386 measured on this recipe


def write_image_folder(root, classes=("cat", "dog")):
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(12):
                Image.new("RGB", (32, 32), (i * 10, 50, 200 if c == "cat" else 0)).save(root / split / c / f"{i}.png")


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A two-class image folder of 24 images per split, and an empty cache of its own."""
    monkeypatch.setenv("RESNET_SEARCH_CACHE", str(tmp_path / "cache"))
    write_image_folder(tmp_path / "data")
    return tmp_path / "data"


def test_image_folder_layout_reads(folder, tmp_path):
    (folder / "train" / "cat" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # hidden files are not data
    (folder / "test" / ".ipynb_checkpoints").mkdir()  # nor hidden folders
    data = load_data(folder, val_size=4, seed=0)
    assert data.description.classes == ("cat", "dog") and len(data.train) == 20 and len(data.test) == 24
    assert data.val.labels.bincount().tolist() == [2, 2]
    assert data.test.labels.tolist() == [0] * 12 + [1] * 12
    assert data.test.images[13, :, 0, 0].tolist() == [10, 50, 0]  # dog/1.png, the second dog in name order
    assert list((tmp_path / "cache" / "decoded").glob("*.pt"))  # cached outside the data dir


def test_a_decode_is_shown_while_it_runs_and_a_cache_read_is_not(folder):
    said = []

    @contextlib.contextmanager
    def status(message):
        said.append(message)
        yield

    load_data(folder, val_size=4, status=status)
    assert [line.split(" (")[0] for line in said] == [f"decoding 24 images of {folder / s}" for s in ("train", "test")]
    said.clear()
    load_data(folder, val_size=4, status=status)
    assert said == []


@pytest.mark.parametrize("name, content, message, found_by_listing", [
    ("train/dog/broken.jpg", b"not an image at all", r"cannot read image .*train/dog/broken\.jpg", False),
    ("test/cat/notes.txt", b"a note", r"test/cat/notes\.txt is not an image \(\.bmp, \.gif, .*move it out of", True),
    ("test/cat/more", None, r"test/cat/more is not an image", True),
], ids=["undecodable-image", "text-file", "folder"])
def test_a_file_that_is_not_an_image_is_named(folder, tmp_path, name, content, message, found_by_listing):
    if content is None:
        (folder / name).mkdir()
    else:
        (folder / name).write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_data(folder, val_size=4)
    if found_by_listing:  # before either split is decoded and cached
        assert not (tmp_path / "cache" / "decoded").exists()


def test_an_empty_class_folder_is_named(folder):
    (folder / "train" / "bird").mkdir()
    (folder / "train" / "bird" / ".DS_Store").write_bytes(b"hidden")
    with pytest.raises(DataError, match=r"class folder .*train/bird has no images"):
        load_data(folder, val_size=4)


def test_train_and_test_need_the_same_classes(folder):
    (folder / "test" / "dog").rename(folder / "test" / "wolf")
    with pytest.raises(DataError, match="same class folders; only in train: dog; only in test: wolf$"):
        load_data(folder, val_size=4)


def test_data_with_another_number_of_classes_than_the_networks_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_SEARCH_CACHE", str(tmp_path / "cache"))
    write_image_folder(tmp_path / "data", classes=("ant", "bee", "cat"))
    with pytest.raises(DataError) as error:
        load_data(tmp_path / "data", val_size=6, classes=10)
    assert str(error.value) == (f"data at {tmp_path / 'data'} has 3 classes (ant, bee, cat) but the study file states "
                                "classes = 10; set classes = 3 in its [space], or remove the key to take the data's")
    assert not (tmp_path / "cache").exists()  # refused before a single image was decoded
    assert load_data(tmp_path / "data", val_size=6, classes=3).description.classes == ("ant", "bee", "cat")


def test_an_image_changed_in_place_is_decoded_again(folder, tmp_path):
    first = load_data(folder, val_size=4)
    assert first.test.images[0, :, 0, 0].tolist() == [0, 50, 200]  # test/cat/0.png
    cached = sorted((tmp_path / "cache" / "decoded").glob("test-*.pt"))
    assert len(cached) == 1
    assert torch.equal(load_data(folder, val_size=4).test.images, first.test.images)
    assert sorted((tmp_path / "cache" / "decoded").glob("test-*.pt")) == cached  # unchanged: read from the cache

    image = folder / "test" / "cat" / "0.png"
    before = image.stat()
    Image.new("RGB", (32, 32), (7, 8, 9)).save(image)  # same name, same count, same first and last names
    later = before.st_mtime_ns + 1_000_000_000  # a coarse-clock filesystem may not move mtime by itself
    os.utime(image, ns=(later, later))
    again = load_data(folder, val_size=4)
    assert again.test.images[0, :, 0, 0].tolist() == [7, 8, 9]
    assert torch.equal(again.test.images[1:], first.test.images[1:])


def test_missing_data_says_where_it_looked(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=f"data path {tmp_path} is neither an image folder .* nor a torchvision "
                                        r"data set \(looked for cifar-10-batches-py, cifar-100-python"):
        load_data(tmp_path, download=False, val_size=100)
    monkeypatch.setenv("RESNET_SEARCH_CACHE", str(tmp_path / "cache"))
    for name, title, marker in (("cifar10", "CIFAR-10", "cifar-10-batches-py"), ("svhn", "SVHN", "train_32x32.mat"),
                                ("fashion-mnist", "Fashion-MNIST", "FashionMNIST")):
        where = tmp_path / "cache" / name
        with pytest.raises(DataError, match=f"no {title} found in {where} \\(looked for {where / marker}\\) and "
                                            ".*downloading is off; pass --data PATH"):
            load_data(name, download=False, val_size=100)
    assert not (tmp_path / "cache").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_absent_cuda_is_a_clear_error():
    assert resolve_device("auto").type == "cpu"
    for name in ("cuda", "cuda:3", "tpu"):
        with pytest.raises(DeviceError):
            resolve_device(name)


def test_checkpoint_of_another_spec_is_not_resumed(tmp_path):
    data = synthetic_data(256)
    recipe = Recipe(epochs=1, batch_size=64, lr=0.05, schedule="constant")
    train(TINY, data, recipe, device="cpu", progress=False, checkpoint_dir=tmp_path)
    other = train(ResNetSpec((1,), (8,), 3, 1, 4), data, recipe, device="cpu", progress=False,
                  checkpoint_dir=tmp_path)
    assert other.resumed_from == 0 and math.isfinite(other.history[0].loss)


def test_engine_imports_neither_optuna_nor_the_cli():
    code = ("import sys, search.engine.train, search.engine.data, resnet_space.space; "
            "bad = [m for m in sys.modules if m.split('.')[0] == 'optuna' or m in ('search.commands.cli', 'search.study')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_failed_download_leaves_no_empty_folder_behind(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(root, train, download):
        Path(root).mkdir(parents=True, exist_ok=True)  # as torchvision does before it downloads
        raise OSError("Name or service not known")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    monkeypatch.setenv("RESNET_SEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RESNET_SEARCH_DATA", raising=False)
    with pytest.raises(DataError, match="downloading it failed"):
        load_data(val_size=100)
    assert not (tmp_path / "cache").exists()


def test_a_stale_temporary_file_of_a_dead_writer_is_removed(tmp_path):
    from search.engine.files import save_atomic

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale, live = tmp_path / f"x.pt.tmp{dead.pid}", tmp_path / f"x.pt.tmp{os.getpid()}9"
    stale.write_bytes(b"torn")
    save_atomic(tmp_path / "x.pt", lambda tmp: tmp.write_bytes(b"whole"))
    assert (tmp_path / "x.pt").read_bytes() == b"whole" and not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pt"]


def test_a_last_checkpoint_of_this_run_that_lacks_its_history_starts_over(tmp_path, synthetic_data):
    from search.engine.train import _checkpoint_identity, resumable_state

    recipe = Recipe(epochs=1, batch_size=32)
    torch.save({"identity": _checkpoint_identity(TINY, recipe, 0), "model": {}, "optimizer": {}},
               tmp_path / "last.pt")
    assert resumable_state(tmp_path, TINY, recipe, 0) is None


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    from search.engine.data import _decode

    levels = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)  # 0 to 65,472
    Image.fromarray(levels).save(tmp_path / "g.png")
    with Image.open(tmp_path / "g.png") as im:
        assert im.mode.startswith("I")
    pixels = _decode(tmp_path / "g.png", 32, 1, tmp_path / "g.png")
    assert pixels.dtype == np.uint8 and pixels.max() == 255 and (pixels == 255).mean() < 0.01
    assert np.abs(pixels.astype(int) - levels / 257).max() <= 0.5
