"""The training engine on CPU with tiny specs (issue: training engine)."""

import math
import subprocess
import sys

import pytest
import torch
from PIL import Image

from resnet_space import Recipe, ResNetSpec
from search.data import (CIFAR10_MEAN, CIFAR10_STD, DataError, ImageSet, TrainingSet, load_cifar10, normalize,
                         random_cutout, random_grayscale, stratified_order)
from search.train import DeviceError, Diverged, learning_rate, resolve_device, train

from .conftest import DATA, needs_data

TINY = ResNetSpec((1, 1), (16, 32), 3, 1, 4)
QUICK = Recipe(epochs=2, batch_size=128, lr=0.2, schedule="onecycle", warmup=0.2, nesterov=True,
               weight_decay=5e-4, label_smoothing=0.1)


@pytest.fixture(scope="module")
def real():
    if not (DATA / "train").is_dir():
        pytest.skip(f"real CIFAR-10 images not found at {DATA} (set RESNET_SEARCH_DATA)")
    return load_cifar10(DATA, val_size=1000, limit_train=4000, seed=0)


def synthetic(n=256, classes=10, seed=0):
    """Class-dependent colour blobs: learnable, so training on them must make progress."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    images = torch.randint(0, 60, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    for c in range(classes):
        images[labels == c, c % 3, 4 * (c // 3):4 * (c // 3) + 12, :] += 150
    return ImageSet(images, labels)


def synthetic_data(n=512):
    from search.data import Cifar10

    return Cifar10(synthetic(n), synthetic(200, seed=1), synthetic(200, seed=2), [str(c) for c in range(10)],
                   "synthetic", "-")


@needs_data
def test_real_splits_are_stratified_disjoint_and_seeded():
    data = load_cifar10(DATA, val_size=5000, limit_train=1000, seed=3)
    assert len(data.val) == 5000 and len(data.train) == 1000 and len(data.test) == 10_000
    assert data.val.labels.bincount().tolist() == [500] * 10
    assert data.train.labels.bincount().tolist() == [100] * 10
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape[1:] == (3, 32, 32)
    assert "JPEG" in data.name
    full = load_cifar10(DATA, val_size=5000, seed=3)
    assert len(full.train) == 45_000
    # Validation images never appear in training: compare the two sets by content hash.
    train_keys = {hash(img.numpy().tobytes()) for img in full.train.images[:45_000:9]}
    assert not train_keys & {hash(img.numpy().tobytes()) for img in full.val.images}
    again = load_cifar10(DATA, val_size=5000, limit_train=1000, seed=3)
    assert torch.equal(again.val.images, data.val.images)
    other = load_cifar10(DATA, val_size=5000, limit_train=1000, seed=4)
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
    x = normalize(images)
    index = torch.arange(64)
    plain = TrainingSet(images, Recipe(crop_padding=0, flip=False)).batch(index, g)
    assert plain.shape == images.shape and plain.dtype == torch.float32 and torch.equal(plain, x)

    out = TrainingSet(images, Recipe(crop_padding=4, flip=True)).batch(index, g)
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

    gray = random_grayscale(x, 1.0, g)
    raw = gray * torch.tensor(CIFAR10_STD).view(1, 3, 1, 1) + torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    assert torch.allclose(raw[:, 0], raw[:, 1], atol=1e-5) and torch.allclose(raw[:, 1], raw[:, 2], atol=1e-5)
    holes = random_cutout(torch.ones(64, 3, 32, 32), 8, g)
    zeros = (holes[:, 0] == 0).flatten(1).sum(1)
    assert zeros.max() == 64 and zeros.min() > 0
    full = TrainingSet(images, Recipe(crop_padding=4, flip=True, grayscale=0.5, cutout=8)).batch(index, g)
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
        train(TINY, data, Recipe(epochs=2, batch_size=64, lr=1e12, schedule="constant"), device="cpu",
              progress=False)


@needs_data
def test_a_few_epochs_on_real_images_lower_the_loss_and_beat_chance(real):
    losses = []
    result = train(TINY, real, QUICK, device="cpu", seed=0, progress=False,
                   on_epoch=lambda record: losses.append(record.loss))
    assert losses[1] < losses[0]
    assert result.best_val_acc > 0.28  # chance is 0.10; 0.386 measured on this recipe


def write_image_folder(root, corrupt=None):
    for split in ("train", "test"):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True)
            for i in range(12):
                Image.new("RGB", (32, 32), (i * 10, 50, 200 if c == "cat" else 0)).save(root / split / c / f"{i}.png")
    if corrupt:
        (root / corrupt).write_bytes(b"not an image at all")


def test_image_folder_layout_reads(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_SEARCH_CACHE", str(tmp_path / "cache"))
    write_image_folder(tmp_path / "data")
    data = load_cifar10(tmp_path / "data", val_size=4, seed=0)
    assert data.classes == ["cat", "dog"] and len(data.train) == 20 and len(data.test) == 24
    assert data.val.labels.bincount().tolist() == [2, 2]
    assert list((tmp_path / "cache" / "decoded").glob("*.pt"))  # cached outside the data dir


def test_corrupt_image_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_SEARCH_CACHE", str(tmp_path / "cache"))
    write_image_folder(tmp_path / "data", corrupt="train/dog/broken.jpg")
    with pytest.raises(DataError, match=r"cannot read image .*broken\.jpg"):
        load_cifar10(tmp_path / "data", val_size=4)


def test_missing_data_says_where_it_looked(tmp_path):
    with pytest.raises(DataError, match=f"no CIFAR-10 found at {tmp_path}.*--data PATH"):
        load_cifar10(tmp_path, download=False)


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
    code = ("import sys, search.train, search.data, resnet_space.space; "
            "bad = [m for m in sys.modules if m.split('.')[0] == 'optuna' or m in ('search.cli', 'search.study')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
