"""Files under a folder, as readers of partitioned data list them.

`Path.rglob` left out, without a word, a folder it could not read and a folder reached
through a link (a partition linked in from another disk), and it listed a writer's
unfinished attempts (Spark's `_temporary`) beside the data, which counted them twice.
"""

from __future__ import annotations

import os
from pathlib import Path

from distillguard.errors import InputError

NOT_DATA = (".", "_")  # hidden files, _SUCCESS, _temporary/: as Spark and Arrow skip them


def files_under(folder: Path, skip: tuple[str, ...] = NOT_DATA) -> list[Path]:
    """Every file under `folder`, sorted, but those whose name or folder's name begins
    with one of `skip`, and sockets and pipes. Linked folders are followed, each once; a
    folder that cannot be read is an InputError naming it."""
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    for root, folders, names in os.walk(folder, onerror=_unreadable, followlinks=True):
        place = os.stat(root)
        if (place.st_dev, place.st_ino) in seen:  # a link back up the tree
            folders.clear()
            continue
        seen.add((place.st_dev, place.st_ino))
        folders[:] = [f for f in folders if not f.startswith(skip)]
        files = (Path(root, n) for n in names if not n.startswith(skip))
        found += [f for f in files if f.is_file() or not f.exists()]  # a dead link, named later
    return sorted(found)


def _unreadable(exc: OSError) -> None:
    raise InputError(f"{exc.filename}: cannot be read ({exc.strerror or exc})")
