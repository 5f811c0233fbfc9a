"""Files under an input folder, as Spark and Arrow list a partitioned dataset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from distillguard.detect.inputs import inputs
from distillguard.errors import InputError
from distillguard.listing import files_under


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_a_writers_attempts_and_hidden_files_are_not_data(tmp_path: Path) -> None:
    """A Spark job's `_temporary` attempt beside its output was read too, and counted
    every exchange twice; a half-written hidden file failed the run."""
    logs = tmp_path / "logs"
    data = [_touch(logs / "day=2026-04-22" / "part-0.parquet"), _touch(logs / "b.parquet")]
    _touch(logs / "_temporary" / "0" / "attempt_0" / "day=2026-04-22" / "part-0.parquet")
    _touch(logs / "_SUCCESS")
    _touch(logs / "day=2026-04-22" / ".part-1.parquet")
    _touch(logs / ".staging" / "x.parquet")
    assert files_under(logs) == sorted(data)
    assert files_under(logs, skip=(".",)) == sorted(
        [
            *data,
            logs / "_SUCCESS",
            *(logs / "_temporary" / "0" / "attempt_0" / "day=2026-04-22" / "part-0.parquet",),
        ]
    )


def test_linked_partitions_are_read_once(tmp_path: Path) -> None:
    """A partition linked in from another disk was left out without a word; a link
    back up the tree is followed once, not for ever."""
    elsewhere = _touch(tmp_path / "archive" / "day=2026-04-21" / "part-0.parquet").parent
    logs = tmp_path / "logs"
    here = _touch(logs / "day=2026-04-22" / "part-0.parquet")
    (logs / "day=2026-04-21").symlink_to(elsewhere, target_is_directory=True)
    (logs / "day=2026-04-22" / "up").symlink_to(logs, target_is_directory=True)
    assert files_under(logs) == [logs / "day=2026-04-21" / "part-0.parquet", here]


def test_a_folder_that_cannot_be_read_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It was left out without a word. (Its listing is refused here as a mode of 000
    would refuse it to anyone but root.)"""
    logs = tmp_path / "logs"
    _touch(logs / "a.parquet")
    locked = _touch(logs / "day=2026-04-22" / "part-0.parquet").parent
    scandir = os.scandir

    def refusing(path: object) -> object:
        if Path(str(path)) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)  # type: ignore[call-overload]

    monkeypatch.setattr(os, "scandir", refusing)
    with pytest.raises(InputError, match="day=2026-04-22: cannot be read"):
        files_under(logs)


def test_a_store_before_its_first_commit_is_not_read_as_a_folder(tmp_path: Path) -> None:
    """Its placed files are not data until the manifest names them."""
    store = tmp_path / "store"
    _touch(store / ".staging" / "run" / "mapped" / "x.parquet")
    _touch(store / "exchanges" / "day=2026-04-22" / "part-x.parquet")
    with pytest.raises(InputError, match="first ingest has not committed"):
        inputs(store)


def test_ingest_lists_linked_folders_and_keeps_underscored_names(tmp_path: Path) -> None:
    """Raw logs are not a Spark dataset: only hidden files are skipped there."""
    from distillguard.ingest.pipeline import expand

    elsewhere = _touch(tmp_path / "archive" / "old.jsonl").parent
    logs = tmp_path / "logs"
    kept = [_touch(logs / "_gateway.jsonl"), _touch(logs / "today.jsonl")]
    _touch(logs / ".partial.jsonl")
    (logs / "archive").symlink_to(elsewhere, target_is_directory=True)
    assert expand([logs]) == [kept[0], logs / "archive" / "old.jsonl", kept[1]]


def test_a_dead_link_among_the_logs_costs_only_itself(tmp_path: Path) -> None:
    """A link whose target is gone stopped the whole ingest with a traceback (the
    progress bar measured every file first); it is now quarantined as unreadable and
    the folder's other logs are stored."""
    from distillguard.cli import main
    from distillguard.store import Store
    from tests.conftest import quarantined, write_jsonl

    logs = tmp_path / "logs"
    logs.mkdir()
    record = {"request_id": "r1", "ts": "2026-04-22T10:00:00Z", "account_id": "a", "model": "m"}
    write_jsonl(logs / "today.jsonl", [record])
    (logs / "gone.jsonl").symlink_to(tmp_path / "nowhere.jsonl")
    assert main(["ingest", str(logs), "--store", str(tmp_path / "s"), "--quiet"]) == 0
    assert Store(tmp_path / "s").read().column("request_id").to_pylist() == ["r1"]
    (why,) = quarantined(tmp_path / "s")
    assert why["reason"] == "unreadable_file" and why["source"].endswith("gone.jsonl")
