"""A PostgreSQL restart under a running worker: runs finish, nothing is dropped, no pool
process keeps a dead connection.

The test starts a PostgreSQL cluster of its own on a free port (so the suite's database
is never stopped), migrates it, and points a real worker at it with the settings the
README recommends (CELERY_DB_REUSE_MAX, persistent connections).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.conftest import ROOT
from tests.support import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Cluster:
    """A PostgreSQL server in a directory of its own, stopped and started by the test."""

    bin_dir: Path
    data_dir: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/agentflow"

    def pg(self, *args: str) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.data_dir / "server.log")
        self.pg(
            "pg_ctl", "-D", str(self.data_dir / "data"), "-o", options, "-l", log, "-w", "start"
        )

    def stop(self) -> None:
        self.pg("pg_ctl", "-D", str(self.data_dir / "data"), "-m", "immediate", "-w", "stop")

    def query(self, sql: str, *params: object) -> list[tuple]:
        with psycopg.connect(self.url, connect_timeout=5) as conn:
            return conn.execute(sql, params).fetchall()


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL's server binaries are missing: run `make services` first")
    base = Path(tempfile.mkdtemp(prefix="agentflow-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    server = Cluster(Path(found[-1]).parent, base, free_port())
    server.pg("initdb", "-D", str(base / "data"), "-U", "postgres", "-A", "trust")
    server.start()
    with psycopg.connect(server.url.replace("/agentflow", "/postgres"), autocommit=True) as conn:
        conn.execute("CREATE DATABASE agentflow")
    yield server
    try:
        server.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def site(cluster: Cluster) -> dict[str, str]:
    """The environment of a process of the test site on the private cluster."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": cluster.url,
        "AGENTFLOW_TEST_WORKER": "",
    }


def in_site(cluster: Cluster, *args: str) -> str:
    """Run ``python <args>`` as a process of the site on the private cluster; its stdout."""
    done = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=site(cluster),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


START_RUNS = """
import json, sys, django
django.setup()
import agentflow
agent, inputs = sys.argv[1], json.loads(sys.argv[2])
print(json.dumps([str(agentflow.start(agent, value).id) for value in inputs]))
"""


def start_runs(cluster: Cluster, agent: str, inputs: list[dict]) -> list[str]:
    out = in_site(cluster, "-c", START_RUNS, agent, json.dumps(inputs))
    return json.loads(out.strip().splitlines()[-1])


def statuses(cluster: Cluster, run_ids: list[str]) -> dict[str, str]:
    rows = cluster.query(
        "SELECT id::text, status FROM agentflow_run WHERE id::text = ANY(%s)", run_ids
    )
    return dict(rows)


def all_finished(cluster: Cluster, run_ids: list[str]) -> bool:
    try:
        found = statuses(cluster, run_ids)
    except psycopg.OperationalError:
        return False  # the server is still coming back
    return len(found) == len(run_ids) and all(
        status in ("succeeded", "failed", "cancelled") for status in found.values()
    )


def test_a_database_restart_loses_no_task_and_leaves_no_dead_connection(workers, cluster):
    in_site(cluster, "manage.py", "migrate", "--noinput", "-v", "0")
    worker = workers("w1", concurrency=2, env=site(cluster))
    fans = start_runs(cluster, "tests.fan", [{"n": 30, "pause": 0.1}] * 4)
    wait_until(
        lambda: cluster.query("SELECT count(*) FROM testapp_execution")[0][0] >= 10,
        timeout=60,
        what="the fan-outs to be under way",
    )

    cluster.stop()  # -m immediate: every connection dies mid-flight
    wait_until(lambda: "OperationalError" in worker.log(), timeout=30, what="the worker to notice")
    cluster.start()
    wait_until(lambda: all_finished(cluster, fans), timeout=180, what="the fan-outs to finish")

    assert set(statuses(cluster, fans).values()) == {"succeeded"}
    for run_id in fans:
        children = cluster.query(
            "SELECT status, count(*) FROM agentflow_step WHERE run_id::text = %s "
            'AND "index" IS NOT NULL GROUP BY status',
            run_id,
        )
        assert children == [("succeeded", 30)]
        effects = cluster.query(
            "SELECT count(*) FROM testapp_sideeffect WHERE key LIKE %s", f"{run_id}:0:%"
        )
        assert effects == [(30,)]
    # A tool may run again only if its worker lost the database after running it.
    repeats = cluster.query(
        "SELECT count(*) FROM (SELECT key FROM testapp_execution GROUP BY key "
        "HAVING count(*) > 1) repeated"
    )[0][0]
    assert repeats <= 4
    # Nothing was dropped: each task that met the dead database was sent again.
    assert "raised unexpected" not in worker.log()

    # Later tasks start on fresh connections: no pool process keeps a dead one.
    seen = len(worker.log())
    later = start_runs(cluster, "tests.mixed", [{"n": 3}] * 10)
    wait_until(lambda: all_finished(cluster, later), timeout=60, what="the later runs")
    assert set(statuses(cluster, later).values()) == {"succeeded"}
    after = worker.log()[seen:]
    assert "OperationalError" not in after and "InterfaceError" not in after, after[-3000:]
