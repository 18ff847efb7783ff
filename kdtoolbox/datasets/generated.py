"""Write a generated dataset folder once, safely: the protocol every generated dataset shares.

``generate_once(root, marker, is_complete, write, what)`` returns at once when ``root`` already holds
a complete dataset whose marker file (``root/VERSION``, JSON) equals ``marker``. Otherwise, under an
exclusive file lock on ``<parent>/.<name>.lock`` (concurrent processes generate it once), it writes
the dataset into a temporary sibling folder, writes the marker last (its presence means complete),
and renames the folder into place, so a crash never leaves a half dataset that looks complete.
Leftovers of a crashed generation are removed; a folder that exists but was not written by the
same generator is never overwritten (``FileExistsError``).
"""
from __future__ import annotations

import contextlib
import json
import os
import os.path as osp
import shutil
import tempfile
import warnings
from typing import Callable, Iterator, Optional

from mmengine.logging import print_log

MARKER = 'VERSION'


def read_marker(root: str, generator: str) -> Optional[dict]:
    """The marker of ``root`` if ``generator`` wrote it, else None."""
    try:
        with open(osp.join(root, MARKER)) as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get('generator') == generator else None


@contextlib.contextmanager
def locked(root: str) -> Iterator[None]:
    """An exclusive lock on ``<parent>/.<name>.lock`` (no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover (not Linux/macOS)
        yield
        return
    parent, name = osp.split(root)
    with open(osp.join(parent, f'.{name}.lock'), 'a') as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def is_current(root: str, marker: dict, is_complete: Callable[[str], bool]) -> bool:
    """``root`` holds a dataset written with exactly ``marker`` and ``is_complete(root)`` agrees."""
    return read_marker(root, marker['generator']) == marker and is_complete(root)


def generate_once(root: str, marker: dict, is_complete: Callable[[str], bool],
                  write: Callable[[str], None], what: str, force: bool = False) -> None:
    """Make ``root`` hold the dataset that ``write(folder)`` writes (see the module docstring).

    ``marker`` must carry ``'generator'`` (who writes it) and the arguments; ``what`` names the
    dataset in messages; ``force`` regenerates even a current dataset.
    """
    root = osp.abspath(root)
    if not force and is_current(root, marker, is_complete):
        return
    parent, name = osp.split(root)
    os.makedirs(parent, exist_ok=True)
    generator = marker['generator']
    with locked(root):
        if not force and is_current(root, marker, is_complete):
            return  # another process generated it while we waited for the lock
        previous = read_marker(root, generator)
        if osp.exists(root) and previous is None and (not osp.isdir(root) or os.listdir(root)):
            raise FileExistsError(f'{root} exists and is not a generated {what} (no {MARKER} file written '
                                  f'by {generator}); refusing to overwrite it: choose another root or remove it')
        # Leftovers of a crashed generation (we hold the lock: nobody else is writing them).
        for entry in os.listdir(parent):
            if entry.startswith((f'.{name}.tmp-', f'.{name}.old-')):
                shutil.rmtree(osp.join(parent, entry), ignore_errors=True)
        if previous is not None:
            warnings.warn(f'regenerating the {what} in {root}: it was generated with {previous.get("args")}, '
                          f'now {marker.get("args")}', stacklevel=3)
        print_log(f'generating the {what} in {root} ({marker.get("args")})', logger='current')
        tmp = tempfile.mkdtemp(prefix=f'.{name}.tmp-', dir=parent)
        try:
            write(tmp)
            with open(osp.join(tmp, MARKER), 'w') as f:  # last: its presence means complete
                json.dump(marker, f, sort_keys=True, indent=1)
                f.write('\n')
            os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
            if osp.exists(root):
                old = tempfile.mkdtemp(prefix=f'.{name}.old-', dir=parent)
                os.rename(root, osp.join(old, name))
                os.rename(tmp, root)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, root)
        finally:
            if osp.exists(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
