"""Safe sharing of directories between processes: a lock file, atomic publication, file checksums.

Two processes that prepare the same corpus, or train into the same run directory, must not
interleave their writes. The mechanics used for both live here:

- :func:`locked`: an exclusive ``fcntl.flock`` on a lock file (Linux and macOS). The kernel drops the
  lock when its process dies, so a killed holder never leaves a stale lock behind. The holder removes
  the file when it is done (a cache directory then holds complete entries only); a waiter that then
  gets the lock on the removed file sees that the path now names another file, or none, and starts
  over, so two processes can never both hold "the" lock.
- :func:`publish_directory`: an entry is built in a private temporary directory next to it and
  renamed into place, so a reader sees a complete entry or none, never a half-written one.
- :func:`file_record` / :func:`check_files`: sizes and sha256 digests, recorded when an entry is
  built and checked before it is used.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from probformer.data.errors import DataError

TEMP_MARK = ".tmp-"  # ".<entry>.tmp-XXXX": an entry being built (or left by a killed builder)
OLD_MARK = ".old-"  # ".<entry>.old-XXXX": a damaged entry moved aside, being removed


class LockHeld(OSError):
    """A non-blocking :func:`locked` found the lock taken; ``holder`` is what the holder wrote into it."""

    def __init__(self, path: Path, holder: str):
        super().__init__(errno.EWOULDBLOCK, f"{path} is locked by {holder or 'another process'}")
        self.path, self.holder = path, holder


def _same_file(handle: IO, path: Path) -> bool:
    """Whether ``path`` still names the file ``handle`` is open on (a holder may have removed it)."""
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(handle.fileno())
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


@contextmanager
def locked(path: Path, *, blocking: bool = True, holder: str = "") -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` for the block (created if missing, removed after).

    ``blocking=False`` raises :class:`LockHeld` instead of waiting. ``holder`` (e.g. a pid) is written
    into the file so that a process refused the lock can say who has it."""
    while True:
        handle = open(path, "a+")  # noqa: SIM115 -- kept open for as long as the lock is held
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.seek(0)
            text = handle.read().strip()
            handle.close()
            raise LockHeld(path, text) from None
        if _same_file(handle, path):
            break
        handle.close()  # the previous holder removed this file as we waited for it: lock the current one
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(holder)
        handle.flush()
        yield
    finally:
        path.unlink(missing_ok=True)  # still holding the lock: no one else can have this file locked
        handle.close()


def _fsync_tree(directory: Path) -> None:
    """Flush every file under ``directory`` (and the directory) to disk before it is published."""
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def leftovers(entry: Path) -> list[Path]:
    """Temporary directories a killed builder of ``entry`` may have left next to it."""
    prefixes = (f".{entry.name}{TEMP_MARK}", f".{entry.name}{OLD_MARK}")
    if not entry.parent.is_dir():
        return []
    return sorted(p for p in entry.parent.iterdir() if p.name.startswith(prefixes))


def publish_directory(entry: Path, build: Callable[[Path], None]) -> None:
    """Build ``entry`` atomically: ``build(tmp)`` fills a private directory next to it, which is then
    renamed to ``entry`` (an existing, e.g. damaged, ``entry`` is moved aside first and removed).

    Call it holding the entry's lock: the lock, not this function, keeps two builders apart. Left-overs
    of a killed builder (which no one else can be using, since we hold the lock) are removed first."""
    for path in leftovers(entry):
        shutil.rmtree(path, ignore_errors=True)
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}{TEMP_MARK}", dir=entry.parent))
    try:
        build(tmp)
        _fsync_tree(tmp)
        if entry.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{entry.name}{OLD_MARK}", dir=entry.parent))
            os.replace(entry, old / entry.name)
            os.replace(tmp, entry)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only left when build() failed


def file_record(path: Path) -> dict[str, int | str]:
    """Size and sha256 of ``path`` (what :func:`check_files` compares)."""
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    return {"size": path.stat().st_size, "sha256": digest}


def check_files(root: Path, recorded: dict[str, dict], names: Iterable[str]) -> str | None:
    """None if each of ``names`` under ``root`` has its recorded size and sha256, else what is wrong.
    Sizes are compared first: a truncated or missing file is found without reading anything."""
    names = list(names)
    for name in names:
        if name not in recorded:
            return f"meta.json records no checksum of {name}"
        path = root / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != recorded[name]["size"]:
            return f"{name} has {path.stat().st_size} bytes, not the {recorded[name]['size']} recorded"
    for name in names:
        if file_record(root / name)["sha256"] != recorded[name]["sha256"]:
            return f"{name} does not match its recorded sha256"
    return None


def make_directory(path: Path, what: str, hint: str, error: type[Exception] = DataError) -> Path:
    """``path``, made if missing; ``error``, one line naming ``what`` (with ``hint`` for the file case), if
    it or a parent is a file or it cannot be made. Shared by the corpus cache and the run directory."""
    if path.exists() and not path.is_dir():
        raise error(f"{what} {path} is a file, not a directory; {hint}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise error(f"{what} {path} cannot be made: {err.strerror}") from None
    return path
