"""Which images crashed the process that prepared them: a native crash (a segmentation fault in a decoder or
a transform) becomes that image skipped on the retry, not an endless loop of retries.

Ray retries a decode task (and restarts a decode actor) whose process died.  Each process keeps a small
file in a folder of this host's, ``<pid>.preparing``, holding the key of the image it is preparing now and
blanked when done.  A process that finds the file of an ended process with a key in it knows that image was
being prepared when its process died, and counts a crash against it.  A process killed from outside (a
node's OOM killer, a chaos test) looks the same, so one crash only makes the image a suspect, cleared when
it is prepared without one; at ``CRASHES_BEFORE_SKIPPING`` every process of the host skips it
(``crashed_decoder``).  A batch with ``k`` such images costs ``2k`` retries.  On another host the image
crashes its processes again until that host has counted it too.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

_KEY_BYTES = 40  # a sha1 in hex
#: Crashes while preparing one image after which it is skipped.
CRASHES_BEFORE_SKIPPING = 2


def default_folder() -> Path:
    return Path(tempfile.gettempdir()) / f"raydet-crash-journal-{os.getuid()}"


def image_key(path: str | bytes) -> str:
    """An image's key: the sha1 of its path or URI (or, for an image held in the record, of its bytes)."""
    return hashlib.sha1(path if isinstance(path, bytes) else path.encode()).hexdigest()


def _process_ended(pid: int) -> bool:
    """Whether process ``pid`` of this host has ended (a zombie, exited but not yet reaped, has ended too)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            return file.read().rsplit(b")", 1)[-1].split()[0] in (b"Z", b"X")
    except FileNotFoundError:
        return True
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        return False


class CrashJournal:
    """This host's record of images that crashed the process preparing them (see the module's docstring).

    Args:
        folder: where the files are kept (default: ``<tmp>/raydet-crash-journal-<uid>``).
    """

    def __init__(self, folder: str | os.PathLike | None = None):
        self.folder = Path(folder) if folder is not None else default_folder()
        self._crashed = self.folder / "crashed"
        self._crashed.mkdir(parents=True, exist_ok=True)
        self._pid = -1
        self._fd = -1

    def collect(self) -> None:
        """Count a crash against the image each ended process was preparing when it ended; forget ended
        processes."""
        for entry in os.scandir(self.folder):
            pid_text, _, suffix = entry.name.partition(".")
            if suffix != "preparing" or not pid_text.isdigit() or int(pid_text) == os.getpid():
                continue
            if not _process_ended(int(pid_text)):
                continue
            try:
                key = Path(entry.path).read_text().strip()
                os.unlink(entry.path)
            except FileNotFoundError:  # another process collected it first
                continue
            if key:
                with open(self._crashed / key, "ab") as counts:  # one byte per crash
                    counts.write(b"x")

    def crashes(self, key: str) -> int:
        """How many processes of this host crashed while preparing the image ``key`` (after ``collect``)."""
        try:
            return os.stat(self._crashed / key).st_size
        except FileNotFoundError:
            return 0

    @contextlib.contextmanager
    def preparing(self, key: str, suspect: bool = True) -> Iterator[None]:
        """Hold ``key`` in this process's file while the block runs: if the process dies inside it, the next
        ``collect`` counts a crash against the image; if the block ends, a ``suspect`` image (one with a crash
        counted, ``crashes(key) > 0``) is cleared."""
        fd = self._own_file()
        os.pwrite(fd, key.encode().ljust(_KEY_BYTES), 0)
        try:
            yield
        finally:
            os.pwrite(fd, b" " * _KEY_BYTES, 0)
        if suspect:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._crashed / key)

    def _own_file(self) -> int:
        if self._pid != os.getpid():  # first use, or a forked child: a file of its own
            self._pid = os.getpid()
            self._fd = os.open(self.folder / f"{self._pid}.preparing", os.O_RDWR | os.O_CREAT, 0o600)
        return self._fd


_JOURNAL: CrashJournal | None = None


def process_journal() -> CrashJournal:
    """This process's ``CrashJournal`` on the default folder."""
    global _JOURNAL
    if _JOURNAL is None:
        _JOURNAL = CrashJournal()
    return _JOURNAL
