"""Where a fit's study lives: a journal file (workers on one machine) or a database URL (optuna's
RDB storage: SQLite, PostgreSQL, MySQL; workers on many machines), opened so that nothing is lost
and every mistake is one line.

* **A worker that dies loses nothing.** On a database, each running trial beats a heartbeat
  (optuna's ``heartbeat_interval``); a trial whose worker stopped beating for ``GRACE`` seconds is
  failed by the next live worker and its design queued again (optuna's
  ``RetryFailedTrialCallback``). optuna's journal storage has no heartbeat, so for a journal file
  (workers on one machine) each trial records its worker's host and process id, and a live worker
  fails the trials of a process that no longer exists and queues their designs again
  (:func:`fail_dead_workers`, ours: the one thing the library lacks here).
* **Start-up is safe.** A journal is opened by its absolute path (optuna's lock is a symlink to the
  path as given, which a relative path breaks: its stale-lock check then spun forever); workers
  starting together on a fresh database retry the schema's creation, which optuna does unlocked.
* **Every storage problem is one line**: a URL that names no database, a driver that is not
  installed, a file that is not a study, a FIFO or a device, a study another program made.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import functools
import os
import random
import re
import socket
import stat
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from ..base.errors import SpecError, clip

__all__ = ["open_storage", "shown_storage", "not_a_study", "fail_dead_workers", "worker_id"]

# seconds between a running trial's heartbeats (database storage), and how long a trial may go
# without one before it is taken for a dead worker's; the environment may shorten both (tests)
HEARTBEAT = 10
GRACE = 60
RETRIES = 3  # a dead worker's design is queued again at most this many times
# optuna's: a journal lock older than this is a killed worker's (tests: 3, its least)
LOCK_GRACE = 30
_SCHEMA_TRIES = 8  # workers starting together on a fresh database: retry the schema this often


def shown_storage(study: str | Path) -> str:
    """The study's place as it may be printed: a database URL without its password (in the
    user part or the query); a file path, and a SQLite URL's path, as given."""
    text = str(study)
    if "://" not in text or text.startswith("sqlite:"):
        return text
    scheme, _, rest = text.partition("://")
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, tail = rest[:cut], rest[cut:]
    creds, at, host = authority.rpartition("@")
    if at and ":" in creds:
        authority = f"{creds.split(':', 1)[0]}:***@{host}"
    return re.sub(r"(?i)(password=)[^&]*", r"\1***", f"{scheme}://{authority}{tail}")


def not_a_study(where: str | Path, e: BaseException) -> SpecError:
    return SpecError(
        f"{shown_storage(where)}: not an optuna study dlagraph fit can open ({type(e).__name__}: "
        f"{clip(' '.join(str(e).split()), 240)})"
    )


def worker_id() -> str:
    """This process, as a trial records it: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def open_storage(optuna: Any, study: str | Path) -> Any:
    """The optuna storage of ``study``: a database URL or a journal file path."""
    text = str(study)
    if "://" in text:
        return _database(optuna, text)
    return _journal(optuna, Path(text))


def _seconds(name: str, default: int) -> int:
    """A test knob's seconds: a whole number from 1 to a day (else the default)."""
    text = os.environ.get(name, "").strip()
    ok = text.isascii() and text.isdigit() and 0 < int(text) <= 86_400
    return int(text) if ok else default


def _retry() -> Any:
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():  # optuna calls its heartbeat API experimental
        warnings.simplefilter("ignore")
        retry = RetryHeartbeatStaleTrialCallback(max_retry=RETRIES)

    def queue_again(study: Any, trial: Any) -> None:
        # optuna's retry copies the trial's user attributes, the dead worker's id among them:
        # the copy, once a live worker takes it and before that worker writes its own id, would
        # look like the dead worker's and be failed again (and the live worker's answer refused)
        trial = copy.deepcopy(trial)
        trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k != "worker"}
        retry(study, trial)

    return queue_again


def _database(optuna: Any, url: str) -> Any:
    from optuna.storages import RDBStorage

    url = _with_driver(url)
    for attempt in range(_SCHEMA_TRIES):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    url,
                    heartbeat_interval=_seconds("DLAGRAPH_FIT_HEARTBEAT", HEARTBEAT),
                    grace_period=_seconds("DLAGRAPH_FIT_GRACE", GRACE),
                    heartbeat_stale_trial_callback=_retry(),
                )
        except ImportError as e:  # the URL's driver
            raise SpecError(
                f"{shown_storage(url)}: its database driver {e.name or ''} is not installed "
                f"({clip(str(e), 80)}); PostgreSQL's psycopg2-binary comes with "
                "pip install 'dlagraph[fit]', other databases need their dialect's driver"
            ) from None
        except Exception as e:  # sqlalchemy's errors, optuna's ValueError: one line each
            if _creating_schema_together(e) and attempt < _SCHEMA_TRIES - 1:
                time.sleep(0.1 + random.random() * 0.4)  # another worker is creating it
                continue
            raise not_a_study(url, e) from None
    raise AssertionError("unreachable")


def _with_driver(url: str) -> str:
    """``url`` checked to name a database, and ``postgresql://`` given the driver the ``fit``
    extra installs (SQLAlchemy 2.1 takes psycopg 3 for a bare ``postgresql://``)."""
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
    except Exception as e:
        raise not_a_study(url, e) from None
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise SpecError(
            f"{url}: names no database file (an in-memory study would be lost): give "
            "sqlite:///path/to/study.db"
        )
    if parsed.drivername == "postgresql":
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
            return parsed.set(drivername="postgresql+psycopg2").render_as_string(
                hide_password=False
            )
    return url


def _creating_schema_together(e: BaseException) -> bool:
    """Two workers creating optuna's tables at once: one fails on what the other made."""
    text = str(e).lower()
    return type(e).__name__ in ("IntegrityError", "OperationalError", "ProgrammingError") and (
        "already exists" in text or "unique" in text or "duplicate" in text or "locked" in text
    )


@functools.cache  # optuna is the fit extra's: the class is made when a journal is first opened
def _owned_lock_class() -> Any:
    from optuna.storages.journal import JournalFileSymlinkLock

    class OwnedLock(JournalFileSymlinkLock):  # type: ignore[misc]
        """optuna's symlink lock, releasing only the link it made. optuna's removes whatever link
        is there: a worker paused past the grace period (its link broken by another worker, who
        took it for dead) would, once woken, remove the lock that worker holds now, or fail on
        "did not possess lock". Ours: the link is known by its inode and change time."""

        _made: tuple[int, int] | None = None
        _breaking = False

        def acquire(self) -> bool:
            self._breaking = True  # optuna's acquire releases a stale lock: another's, on purpose
            try:
                got = super().acquire()
            finally:
                self._breaking = False
            st = os.lstat(self._lock_file)
            self._made = (st.st_ino, st.st_ctime_ns)
            return bool(got)

        def release(self) -> None:
            if self._breaking:
                return super().release()  # type: ignore[no-any-return]
            try:
                st = os.lstat(self._lock_file)
            except FileNotFoundError:  # broken while this worker was paused; nobody holds it
                return None
            if (st.st_ino, st.st_ctime_ns) != self._made:  # another worker's now
                return None
            return super().release()  # type: ignore[no-any-return]

    return OwnedLock


def _journal(optuna: Any, path: Path) -> Any:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    # the lock's symlink must not depend on the cwd, nor on the link a worker reached it by
    path = path.expanduser().resolve()
    try:
        kind = path.stat().st_mode if path.exists() else None
    except OSError as e:
        raise not_a_study(path, e) from None
    if kind is not None and not stat.S_ISREG(kind):
        what = "a folder" if stat.S_ISDIR(kind) else "not a regular file (a FIFO or a device?)"
        raise SpecError(f"{path}: {what}; give a journal file path or a database URL")
    lock = path.with_name(path.name + ".lock")
    expires = _seconds("DLAGRAPH_FIT_LOCK_GRACE", LOCK_GRACE)
    if lock.is_symlink() and not lock.exists():
        # a lock pointing nowhere (its study moved or copied after a kill) is no worker's: optuna
        # would stat it forever, spinning, without ever expiring it
        print(f"{lock}: a lock left by a killed worker of a moved study, removed", file=sys.stderr)
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
    if lock.is_symlink() or lock.exists():
        print(
            f"{lock} exists: another worker is writing the study (a moment), or a killed "
            f"worker left it (it expires after {expires} s)",
            file=sys.stderr,
            flush=True,
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        held = _owned_lock_class()(str(path), grace_period=expires)
        return JournalStorage(JournalFileBackend(str(path), lock_obj=held))
    # optuna's journal reader asserts on an unknown op code
    except (ValueError, KeyError, TypeError, OSError, AssertionError) as e:
        raise not_a_study(path, e) from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    try:  # a killed worker its launcher has not reaped yet (a zombie) answers signal 0 too
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):  # no /proc (macOS): signal 0 is all there is
        return True


def _age(start: datetime.datetime | None) -> float:
    """Seconds since ``start`` (optuna's storages give naive local times; aware ones too)."""
    if start is None:
        return 0.0
    return (datetime.datetime.now(tz=start.tzinfo) - start).total_seconds()


def fail_dead_workers(optuna: Any, st: Any) -> list[int]:
    """Fail the running trials of this host's workers that no longer exist, and queue their
    designs again (at most ``RETRIES`` times each); the numbers of the trials failed. On a
    database optuna's heartbeat does this for every host; this covers the journal file."""
    State = optuna.trial.TrialState
    host = socket.gethostname()
    failed = []
    for t in st.get_trials(deepcopy=False, states=(State.RUNNING,)):
        owner = t.user_attrs.get("worker")
        if owner is None:  # a worker writes its id first thing: one that never did, died
            if _age(t.datetime_start) < _seconds("DLAGRAPH_FIT_GRACE", GRACE):
                continue
        else:
            name, _, pid = str(owner).rpartition(":")
            if name != host or not pid.isdigit() or _alive(int(pid)):
                continue
        try:
            st._storage.set_trial_state_values(t._trial_id, State.FAIL)
        except Exception:  # another worker failed it first
            continue
        failed.append(t.number)
        _retry()(st, st._storage.get_trial(t._trial_id))
    return failed
