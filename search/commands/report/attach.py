"""The report's PNGs as study artifacts, so that optuna-dashboard lists them."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import optuna

from ...private import artifacts_attr_prefix, study_id, study_storage
from ...study.record import ARTIFACT_ID, StudyRecord, write_study
from .figures import PLOTS, placeholder


def attach_to_study(study: optuna.Study, out_dir: Path, artifacts: str | Path) -> dict[str, str]:
    """Upload the report's PNGs to the artifact store at `artifacts` as study artifacts, so
    optuna-dashboard lists them.

    A refresh writes over the files of the artifacts it uploaded before (same artifact id, same
    name), so the dashboard shows one copy of each plot however often the report is refreshed.
    A plot this refresh could not draw (no importances yet, say) is replaced by a PNG that says so.
    Returns {filename: artifact id}, also kept in the study user attr `report_artifacts`."""
    from optuna.artifacts import upload_artifact

    from ...study.artifacts import open_artifact_store

    recorded = StudyRecord.of(study)
    store = open_artifact_store(artifacts)
    out_dir = Path(out_dir)
    listed = _listed_artifacts(study)
    ours = {k: v for k, v in recorded.report_artifacts.items() if v in listed.values()}
    ids = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in PLOTS:
            path = out_dir / name
            previous = ours.get(name) or listed.get(name)
            if not path.exists():
                if previous is None:
                    continue
                path = Path(tmp) / name
                placeholder(path, f"{name}: not drawn at the last refresh (see the report)")
            if previous is not None:
                with open(path, "rb") as f:
                    store.write(previous, f)
                ids[name] = previous
            else:
                ids[name] = upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=study,
                                            mimetype="image/png")
    write_study(study, report_artifacts=ids)
    return ids


def _listed_artifacts(study: optuna.Study) -> dict[str, str]:
    """filename -> artifact id of the report PNGs the study lists as its artifacts.

    An artifact deleted in optuna-dashboard stays in the study's system attrs as a null, which the
    public optuna.artifacts.get_all_artifact_meta does not skip (it fails on it), so the attrs are
    read directly (search.private), under the key prefix optuna's own upload writes them with."""
    found = {}
    prefix = artifacts_attr_prefix()
    for key, value in study_storage(study).get_study_system_attrs(study_id(study)).items():
        if not key.startswith(prefix):
            continue
        try:
            meta = json.loads(value)
        except (TypeError, ValueError):
            continue
        if (isinstance(meta, dict) and meta.get("filename") in PLOTS and isinstance(meta.get("artifact_id"), str)
                and ARTIFACT_ID.fullmatch(meta["artifact_id"])):
            found[meta["filename"]] = meta["artifact_id"]
    return found
