"""A run-folder lock: at most one process writes a run folder at a time.

The lock is a small JSON file in the folder (``medrobust.lock``) holding the owner's pid,
host, start time and a random token. It is created atomically (``O_CREAT | O_EXCL``): of
two processes starting together exactly one creates it; the other reads who holds it and
refuses with a message naming the folder, the owner and when it started.

A lock left behind by a process that died (killed, machine rebooted) is *stale*: when its
owner ran on this host and its pid is gone (or now belongs to a younger process, or the
machine rebooted since), the lock is taken over with a log warning. A lock written on another
host is never taken over (its process cannot be checked from here): the message says to
delete the file once that run is gone.

Generic on purpose (audits use it; training can): ``with RunLock(folder, "audit"): ...``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from medrobust.errors import ConfigError
from medrobust.utils.logging import get_logger

#: Name of the lock file inside the locked folder.
LOCK_NAME = "medrobust.lock"
#: An unreadable (empty, half-written) lock file older than this many seconds is stale:
#: its writer died between creating and filling it. A younger one is being written now.
UNREADABLE_STALE_SECONDS = 60.0

log = get_logger("utils.lock")


class LockedError(ConfigError):
    """The folder is locked by another live process (the message names it and the owner)."""


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip() or None
    except OSError:
        return None


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), or ``None``."""
    try:
        text = Path(f"/proc/{int(pid)}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (``kill(pid, 0)``)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OSError:
        return False
    return True


class RunLock:
    """An exclusive lock on a folder, held by this process between :meth:`acquire` and :meth:`release`.

    Args:
        folder: The folder to lock (must exist).
        purpose: What the owner does there, used in messages (``"audit"``, ``"training"``).
        name: File name of the lock inside ``folder``.

    Example:
        >>> with RunLock("runs/a", "audit"):  # doctest: +SKIP
        ...     ...  # write into runs/a
    """

    def __init__(self, folder: str | os.PathLike[str], purpose: str = "run", name: str = LOCK_NAME) -> None:
        self.folder = Path(folder)
        self.purpose = purpose
        self.path = self.folder / name
        self._token: str | None = None

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._token is not None

    def _info(self, token: str) -> dict[str, Any]:
        now = datetime.datetime.now(datetime.timezone.utc)
        return {
            "purpose": self.purpose,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": now.isoformat(timespec="seconds"),
            "started_unix": time.time(),
            "pid_start": _process_start(os.getpid()),
            "boot_id": _boot_id(),
            "token": token,
        }

    def _read(self) -> tuple[bytes | None, dict[str, Any] | None]:
        """The lock file's raw bytes and parsed owner (``None`` where absent or unreadable)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None, None
        try:
            owner = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return raw, None
        if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int):
            return raw, None
        return raw, owner

    def _stale_reason(self, owner: dict[str, Any] | None) -> str | None:
        """Why the current lock is stale, or ``None`` when its owner may still be running."""
        if owner is None:
            try:
                age = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:
                return "it was removed"
            return f"it is unreadable and {age:.0f} s old" if age > UNREADABLE_STALE_SECONDS else None
        if owner.get("host") != socket.gethostname():
            return None
        boot = _boot_id()
        if owner.get("boot_id") and boot and owner["boot_id"] != boot:
            return "the machine rebooted since"
        pid = int(owner["pid"])
        if not pid_alive(pid):
            return f"process {pid} is gone"
        start = owner.get("pid_start")
        if start is not None and _process_start(pid) not in (None, start):
            return f"pid {pid} now belongs to another process"
        return None

    def _describe_owner(self, owner: dict[str, Any] | None) -> str:
        if owner is None:
            return f"its lock file {self.path} is being written (or is unreadable)"
        return (
            f"pid {owner.get('pid')} on host {owner.get('host')!s}, started {owner.get('started')!s}, "
            f"lock file {self.path}"
        )

    def _take_over(self, raw: bytes | None, owner: dict[str, Any] | None, reason: str) -> None:
        """Remove a stale lock, unless another process replaced it meanwhile."""
        tomb = self.path.with_name(f".{self.path.name}.stale-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(self.path, tomb)
        except FileNotFoundError:
            return  # someone else removed it; try to create ours
        try:
            moved = tomb.read_bytes()
            if moved != raw:  # a fresh lock appeared between our read and the rename: put it back
                with contextlib.suppress(OSError):  # another lock exists again: the next attempt reads it
                    os.link(tomb, self.path)
                return
        finally:
            tomb.unlink(missing_ok=True)
        log.warning(
            "%s: taking over a stale %s lock (%s; %s)",
            self.folder,
            self.purpose,
            self._describe_owner(owner),
            reason,
        )

    def acquire(self) -> RunLock:
        """Take the lock (taking over a stale one).

        Returns:
            ``self``.

        Raises:
            LockedError: another live process holds it (the message names the folder, the
                owner's pid and host and when it started).
            OSError: the folder cannot be written (read-only, missing); callers name the folder.
        """
        if self.held:
            return self
        owner: dict[str, Any] | None = None
        for _ in range(5):
            token = uuid.uuid4().hex
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                raw, owner = self._read()
                if raw is None:
                    continue  # removed meanwhile
                reason = self._stale_reason(owner)
                if reason is None:
                    break
                self._take_over(raw, owner, reason)
                continue
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(self._info(token), fh)
                    fh.flush()
                    os.fsync(fh.fileno())
            except BaseException:
                self.path.unlink(missing_ok=True)
                raise
            self._token = token
            return self
        raise LockedError(
            f"{self.folder} is in use by another {self.purpose} ({self._describe_owner(owner)}); "
            f"wait for it to finish or use another folder, or delete {self.path} if that process is gone."
        )

    def release(self) -> None:
        """Remove the lock file if this object still holds it (never someone else's)."""
        token, self._token = self._token, None
        if token is None:
            return
        _, owner = self._read()
        if owner is None or owner.get("token") != token:
            log.warning(
                "%s: the %s lock %s was replaced by another process; left alone",
                self.folder,
                self.purpose,
                self.path,
            )
            return
        try:
            self.path.unlink()
        except OSError as exc:
            log.warning("%s: could not remove the lock file %s (%s)", self.folder, self.path, exc)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def claim_run_folder(out: Path, purpose: str) -> RunLock:
    """Make ``out`` a writable folder and lock it for this run; returns the acquired lock.

    Args:
        out: The run folder (created when missing).
        purpose: What runs there ("audit", "segmentation audit"), named in the lock and messages.

    Raises:
        ConfigError: ``out`` is a file, lies under a file, cannot be created or written, or is
            locked by another live run (naming the folder and the owner).
    """
    import errno

    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"The --out path {out} is a file; expected a folder for the {purpose}'s run "
            "(created when missing)."
        )
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(
                    f"The --out folder {out} cannot be created: {parent} is a file, not a folder."
                )
            break
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"The --out folder {out} cannot be created ({exc.strerror or exc}).") from None
    lock = RunLock(out, purpose)
    try:
        lock.acquire()
    except OSError as exc:
        why = "read-only file system" if exc.errno == errno.EROFS else (exc.strerror or str(exc))
        raise ConfigError(f"The --out folder {out} is not writable ({why}); choose another --out.") from None
    return lock
