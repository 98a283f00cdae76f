"""A PostgreSQL server of the tests' own: a cluster in a temporary folder, on a Unix socket there
(no TCP port), started by Debian's ``initdb`` / ``pg_ctl`` and stopped at the end. PostgreSQL
refuses to run as root, so as root the cluster belongs to the ``postgres`` user. Where no server
can be started, tests that need one skip with the reason; with ``DLAGRAPH_REQUIRE_POSTGRES=1``
(CI) that is a failure instead."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REQUIRED = os.environ.get("DLAGRAPH_REQUIRE_POSTGRES") == "1"


def _unavailable(why: str) -> None:
    if REQUIRED:
        pytest.fail(f"DLAGRAPH_REQUIRE_POSTGRES=1 but {why}")
    pytest.skip(why)


def _bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@contextmanager
def server() -> Iterator[str]:
    """A running cluster; yields the folder of its socket (also its data's parent)."""
    bindir = _bin()
    if bindir is None:
        _unavailable("no PostgreSQL server here (apt-get install postgresql)")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        _unavailable("no PostgreSQL driver (pip install psycopg2-binary: the fit extra)")
    root = os.geteuid() == 0
    run_as: list[str] = []
    if root:
        if shutil.which("runuser") is None:
            _unavailable("running as root without runuser to start PostgreSQL as postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    folder = tempfile.mkdtemp(prefix="dlagraph_pg_", dir="/tmp")
    os.chmod(folder, 0o777)
    if root:
        shutil.chown(folder, "postgres")
    data = os.path.join(folder, "data")
    log = os.path.join(folder, "log")

    def call(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*run_as, *args], capture_output=True, text=True, timeout=120)

    r = call(str(bindir / "initdb"), "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")
    if r.returncode:
        shutil.rmtree(folder, ignore_errors=True)
        _unavailable(f"initdb failed: {r.stderr.strip().splitlines()[-1:]}")
    options = f"-k {folder} -c listen_addresses='' -c fsync=off -c max_connections=100"
    r = call(str(bindir / "pg_ctl"), "-D", data, "-l", log, "-o", options, "-w", "start")
    if r.returncode:
        text = Path(log).read_text() if os.path.exists(log) else r.stderr
        shutil.rmtree(folder, ignore_errors=True)
        _unavailable(f"PostgreSQL did not start: {text.strip().splitlines()[-1:]}")
    try:
        yield folder
    finally:
        call(str(bindir / "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def new_database(folder: str) -> str:
    """A fresh database on the cluster; its SQLAlchemy URL."""
    import psycopg2

    name = "t_" + uuid.uuid4().hex[:12]
    conn = psycopg2.connect(dbname="postgres", user="postgres", host=folder)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    conn.close()
    return f"postgresql+psycopg2://postgres@/{name}?host={folder}"
