"""Every private name of optuna and torch the project uses, each behind one function here and
nowhere else, so that a release that drops or renames one fails loudly in tests/test_private.py
instead of silently wherever it was used. Why each is needed is said beside it."""

from __future__ import annotations


def trial_id(trial) -> int:
    """A live trial's id in its storage: the storage's own methods take it (heartbeats, fail reasons)."""
    return trial._trial_id


def study_storage(study):
    """A study's storage: Study keeps it only privately, and the final stage lives in the same one."""
    return study._storage


def study_id(study) -> int:
    return study._study_id


def reseed(sampler, seed: int) -> None:
    """Reseed a sampler's generator: Optuna's public reseed_rng() takes fresh entropy, which would
    make a trial's draws depend on more than the study seed and its number."""
    sampler._rng.rng.seed(seed)


def tpe_random_sampler(sampler):
    """The RandomSampler TPE draws its start-up trials from, to reseed it per trial too."""
    return sampler._random_sampler


def artifacts_attr_prefix() -> str:
    """The key prefix optuna's upload_artifact writes artifact metadata under: the public
    get_all_artifact_meta fails on the null an artifact deleted in optuna-dashboard leaves."""
    from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX

    return ARTIFACTS_ATTR_PREFIX


def cpp_compiler() -> str:
    """The C++ compiler inductor would call on the CPU (it raises when it finds none)."""
    from torch._inductor.cpp_builder import get_cpp_compiler

    return get_cpp_compiler()


def unwrapped(model):
    """The plain module behind torch.compile's wrapper (whose state dict prefixes every key)."""
    return getattr(model, "_orig_mod", model)


def heartbeat_base():
    """Optuna's heartbeat interface, which a storage implements to have a dead worker's trial failed
    (fail_stale_trials checks for it): not exported, and its gRPC proxy does not implement it."""
    from optuna.storages._heartbeat import BaseHeartbeat

    return BaseHeartbeat
