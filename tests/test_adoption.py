"""Adopting agentflow: its wheel, in a new virtualenv, in a new `django-admin startproject` site.

The site is set up by the README's "Using agentflow in your site" steps, read from README.md
(``tests/readme_steps.py``), so a step the README forgets fails here. The site then runs an
agent with a fan-out and a tool that needs approval on a real `celery worker` and `celery
beat`, started and approved with `manage.py agentflow`, once on a Redis broker and once on
RabbitMQ. On Redis it also serves the site both ways the README gives (daphne's `runserver`
in development; `collectstatic`, then `daphne` with DEBUG off and WhiteNoise, in production)
and approves a run in the console in Chromium. What the test adds is only what every site
has of its own: its database's name (the README's `DATABASES` block, with `"NAME"` pointed
at a new database), its app, its DEBUG and ALLOWED_HOSTS, its Redis (a server on a free
port), and a Celery queue name unique to the test run, so that nothing left on RabbitMQ by an
earlier run (queues persist there) can reach it.
"""

from __future__ import annotations

import contextlib
import email.parser
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from tests import readme_steps
from tests.browser import approve_in_the_console, chromium, free_port
from tests.conftest import POSTGRES
from tests.support import Process, wait_until

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "site_a"
# The README's service URLs; Redis is a server of the test's own (see `redis_url`).
README_REDIS = "redis://127.0.0.1:6379/0"
README_AMQP = "amqp://guest:guest@127.0.0.1:5672//"
AMQP_URL = README_AMQP
# The README's DATABASES names its database after the project; the test's is a new one.
README_DATABASE_NAME = f'"NAME": "{readme_steps.PLACEHOLDER}"'
FAN_OUT = 6
PASSWORD = "adopt-admin-password"
WAITS_FOR_A_PERSON = 5  # `start --wait`'s exit code for a run at an approval (README)


def _run(
    argv: list[str], *, timeout: float, expect: int = 0, **kwargs
) -> subprocess.CompletedProcess:
    """Run a command to completion; fail with its output unless it exits ``expect``."""
    started = time.monotonic()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(
            f"{' '.join(argv)} did not finish in {timeout:g}s\n"
            f"stdout:\n{exc.stdout}\nstderr:\n{exc.stderr}"
        ) from None
    assert done.returncode == expect, (
        f"{' '.join(argv)} exited {done.returncode} after {time.monotonic() - started:.1f}s\n"
        f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    )
    return done


# -- the wheel and the virtualenv (built once for the module) ------------------------------


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """The working tree's files (tracked or new, not ignored), without build/ or egg-info.

    Building from a copy keeps a stale ``build/lib`` of an earlier editable install out of
    the wheel, and leaves the shared working tree alone.
    """
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    target = tmp_path_factory.mktemp("source")
    for name in filter(None, listed.split("\0")):
        path = ROOT / name
        if path.is_file():  # a tracked file deleted in the working tree is not copied
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / name)
    return target


@pytest.fixture(scope="module")
def wheel(source, tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(source)],
        timeout=300,
    )
    (built,) = dist.glob("django_agentflow-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(source, tmp_path_factory) -> Path:
    """A new virtualenv (no system site-packages) with agentflow installed as the README says."""
    steps = readme_steps.read()
    home = tmp_path_factory.mktemp("venv") / "env"
    _run([sys.executable, "-m", "venv", str(home)], timeout=120)
    install = steps.command("pip install")
    assert any(arg.startswith("<checkout>[") for arg in install), (
        f"README: {install} does not install the checkout with an extra"
    )
    # The checkout is this working tree's copy: pip builds the wheel from it, as a user's does.
    argv = [arg.replace("<checkout>", str(source)) for arg in install[1:]]
    _run([str(home / "bin" / "python"), "-m", "pip", *argv, "-q"], timeout=600)
    installed = _run([str(home / "bin" / "python"), "-m", "pip", "freeze"], timeout=60).stdout
    assert "django-agentflow @ file://" in installed or "django_agentflow" in installed, installed
    pinned = (ROOT / "constraints.txt").read_text()
    for name in ("celery", "redis", "channels[-_]redis", "openai"):
        version = re.search(rf"^{name}==(\S+)", installed, re.M | re.I)
        tested = re.search(rf"^{name}==(\S+)", pinned, re.M | re.I)
        assert version and tested and version[1] == tested[1], f"{name}: not the tested version"
    return home


def test_the_wheel_ships_the_app_with_its_templates_static_and_migrations(wheel, source):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(archive.read(metadata_name).decode())
    shipped = {
        path.relative_to(source).as_posix()
        for path in (source / "agentflow").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert shipped - names == set(), "files of agentflow/ missing from the wheel"
    for kind in ("templates/", "static/", "migrations/0001"):
        assert any(n.startswith(f"agentflow/{kind}") for n in names), kind
    tops = {name.split("/")[0] for name in names}
    assert tops == {"agentflow", metadata_name.split("/")[0]}, tops  # no tests, bench, apps
    extras = set(metadata.get_all("Provides-Extra"))
    assert {"openai", "anthropic", "otel"} <= extras
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), "no LICENSE shipped"
    required = [r for r in metadata.get_all("Requires-Dist") if "extra ==" not in r]
    pulled = {re.split(r"[\s<>=!~\[;]", r, maxsplit=1)[0].lower() for r in required}
    leaked = pulled & {"pytest", "pytest-django", "playwright", "ruff", "mkdocs", "dbos"}
    assert not leaked, f"test or bench dependencies installed by default: {leaked}"
    assert {"django", "celery", "channels", "django-celery-beat"} <= pulled


# -- a site of its own: database, Redis, queue, processes ------------------------------------


AGENTS = '''\
"""The site's agents: a fan-out over a tool, then a tool that asks for approval."""

import os

from django.conf import settings

from agentflow import RunContext, agent, tool


@tool
def square(n: int) -> dict:
    return {"n": n, "square": n * n, "pid": os.getpid()}


@tool(requires_approval=True)
def publish(total: int, *, idempotency_key: str) -> dict:
    with open(settings.BASE_DIR / "published.log", "a") as log:
        log.write(f"{idempotency_key} {total} {os.getpid()}\\n")
    return {"published": total}


@agent(name="adopt.fanout")
def fanout(ctx: RunContext, n: int) -> dict:
    results = ctx.map(square, [{"n": i} for i in range(n)])
    receipt = ctx.call(publish, total=sum(r["square"] for r in results))
    return {
        "squares": [r["square"] for r in results],
        "pids": sorted({r["pid"] for r in results}),
        "receipt": receipt,
    }


@agent(name="adopt.tick")
def tick(ctx: RunContext) -> str:
    return "tick"
'''


class Site:
    """A `startproject` site in the new virtualenv: commands run as a user would run them."""

    def __init__(self, root: Path, venv: Path) -> None:
        self.root, self.venv = root, venv
        drop = ("DJANGO_", "AGENTFLOW_", "CELERY_", "PYTHON", "VIRTUAL_ENV")
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(drop) and key not in ("REDIS_URL", "DATABASE_URL")
        }
        self.env.update(
            PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            VIRTUAL_ENV=str(venv),
            PYTHONUNBUFFERED="1",
        )
        self.processes: list[Process] = []

    def argv(self, command: list[str]) -> list[str]:
        """A README command line in this site: its programs from the virtualenv."""
        program, *args = (arg.replace(readme_steps.PLACEHOLDER, PROJECT) for arg in command)
        return [str(self.venv / "bin" / program), *args]

    def run(
        self, command: list[str], timeout: float = 120, env: dict | None = None, expect: int = 0
    ) -> str:
        env = {**self.env, **(env or {})}
        argv = self.argv(command)
        return _run(argv, timeout=timeout, expect=expect, cwd=self.root, env=env).stdout

    def manage(self, *args: str, timeout: float = 120, env: dict | None = None) -> str:
        return self.run(["python", "manage.py", *args], timeout=timeout, env=env)

    def start(self, name: str, command: list[str], env: dict | None = None) -> Process:
        process = Process(name, self.argv(command), self.root, {**self.env, **(env or {})})
        self.processes.append(process)
        return process


@pytest.fixture
def redis_url(tmp_path) -> Iterator[str]:
    """A `redis-server` of this test's own on a free port: nothing to flush, nothing shared."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with open(tmp_path / "redis.log", "w") as log:
        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(tmp_path)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=1)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return server.poll() is not None  # exited: stop waiting, fail below

    wait_until(answers, timeout=30, what="redis-server to answer")
    assert server.poll() is None, (tmp_path / "redis.log").read_text()
    yield url
    client.close()
    server.kill()
    server.wait(10)


def _rabbitmq_answers() -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 5672), timeout=2):
        return True
    return False


@pytest.fixture
def queue(broker) -> Iterator[str]:
    """A Celery queue of this run's own; on RabbitMQ, deleted at the end (queues persist)."""
    name = f"adopt-{uuid.uuid4().hex[:12]}"
    yield name
    if broker == "rabbitmq":
        import kombu

        with kombu.Connection(AMQP_URL, connect_timeout=5) as connection:
            connection.default_channel.queue_delete(name)  # fine if it was never declared


@pytest.fixture
def site(venv, tmp_path, database, queue, redis_url, broker) -> Iterator[Site]:
    """`django-admin startproject site_a`, then the README's steps for ``broker``."""
    if broker == "rabbitmq":
        assert _rabbitmq_answers(), (
            "RabbitMQ does not answer on 127.0.0.1:5672: `bash scripts/services.sh` starts it"
        )
    site = Site(tmp_path / PROJECT, venv)
    _run(
        [str(venv / "bin" / "django-admin"), "startproject", PROJECT],
        timeout=60,
        cwd=tmp_path,
        env=site.env,
    )
    apply_readme(site.root, broker=broker, database=database, queue=queue, redis_url=redis_url)
    (site.root / "adopt").mkdir()
    (site.root / "adopt" / "__init__.py").write_text("")
    (site.root / "adopt" / "agents.py").write_text(AGENTS)
    yield site
    for process in reversed(site.processes):
        process.stop()
    for process in site.processes:  # shown by pytest only when the test failed
        print(f"----- {process.name} log -----\n{process.log()[-20000:]}")


def apply_readme(root: Path, *, broker: str, database: str, queue: str, redis_url: str) -> None:
    """Apply the README's blocks for ``broker`` to the project in ``root``, as written.

    Only the README's service URLs and database name are pointed at this test's; the site's
    own settings (its app, its queue name) go around the README's, as in any site. The
    database is the README's ``DATABASES`` block (PostgreSQL on 127.0.0.1, user postgres,
    the test's server), named ``database``.
    """
    blocks = readme_steps.read().files_for(broker)
    assert any(b.path.endswith("settings.py") for b in blocks), "README: no settings block"
    settings_before = textwrap.dedent("""

        # -- the site's own (not from the README) --
        import os

        DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"  # production: DJANGO_DEBUG=0
        ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
        INSTALLED_APPS += ["adopt"]

        # -- from the README --
    """)
    settings_after = f'\n# -- the test\'s own queue --\nCELERY_TASK_DEFAULT_QUEUE = "{queue}"\n'
    appended: dict[Path, list[str]] = {}
    databases = [b for b in blocks if "DATABASES = {" in b.code]
    assert len(databases) == 1, "README: no settings block (or more than one) sets DATABASES"
    for block in blocks:
        target = root / block.target(PROJECT)
        text = block.code
        if block in databases:
            assert README_DATABASE_NAME in text, (
                f"README: DATABASES names no {README_DATABASE_NAME}"
            )
            assert "django.db.backends.postgresql" in text, "README: DATABASES is not PostgreSQL"
            text = text.replace(README_DATABASE_NAME, f'"NAME": "{database}"')
        text = text.replace(readme_steps.PLACEHOLDER, PROJECT)
        if target.name == "settings.py":
            assert README_REDIS in text or block.broker, f"README: {block.label} has no Redis URL"
            text = text.replace(README_REDIS, redis_url)
            if block.broker == "rabbitmq":
                assert README_AMQP in text, f"README: {block.label} has no RabbitMQ URL"
                text = text.replace(README_AMQP, AMQP_URL)
        if block.mode == "append":
            assert target.exists(), f"README: {block.label}, but startproject made no such file"
            appended.setdefault(target, []).append(text)
        elif "a new file" in block.label:
            assert not target.exists(), f"README: {block.label}, but startproject made one"
            target.write_text(text)
        else:
            assert target.exists(), f"README: {block.label}, but startproject made no such file"
            target.write_text(text)
    for target, texts in appended.items():
        body = "\n\n".join(texts)
        if target.name == "settings.py":
            body = settings_before + body + settings_after
        target.write_text(target.read_text() + "\n" + body)


# -- the test --------------------------------------------------------------------------------


def _parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def _start_command(readme_start: list[str], key: str) -> list[str]:
    """The README's `agentflow start --wait`, for this site's agent, under ``key``."""
    return [
        *readme_start[:4],
        "adopt.fanout",
        "--input",
        json.dumps({"n": FAN_OUT}),
        "--wait",
        "--idempotency-key",
        key,
        "--timeout",
        "90",
    ]


def _waiting_run(site: Site, start: list[str]) -> str:
    """Start a run with the README's `start --wait`; return its id once it waits for approval."""
    waiting = site.run(start, timeout=120, expect=WAITS_FOR_A_PERSON)
    run_id = re.search(r"^run ([0-9a-f-]{36}) ", waiting, re.M)
    assert run_id and "waiting for approval" in waiting, f"no approval to decide:\n{waiting}"
    return run_id[1]


def _serve_and_approve_in_chromium(
    site: Site, steps, readme_start: list[str], database: str
) -> None:
    """Serve the site both ways the README gives, and approve a run in the console each time.

    Each web process starts while `start --wait` takes a run to its approval.
    """
    with chromium() as browser:
        # Development (DEBUG on): daphne's runserver serves pages, static files, websockets.
        port = free_port()
        runserver = [*steps.command("python manage.py runserver"), "--noreload"]
        web = site.start("runserver", [*runserver, f"127.0.0.1:{port}"])
        run_id = _waiting_run(site, _start_command(readme_start, "adopt-development"))
        _approve_in_the_console(browser, web.listening(port), run_id, database)
        web.stop()

        # Production (DEBUG off): collectstatic, then daphne; WhiteNoise serves the files.
        production = {"DJANGO_DEBUG": "0"}
        site.run(steps.command("python manage.py collectstatic"), env=production)
        port = free_port()
        daphne = [*steps.command("daphne <project>.asgi:application"), "-p", str(port)]
        web = site.start("daphne", daphne, env=production)
        checked = site.manage("check", "--fail-level", "WARNING", env=production)
        assert "System check identified no issues" in checked, checked
        run_id = _waiting_run(site, _start_command(readme_start, "adopt-production"))
        _approve_in_the_console(browser, web.listening(port), run_id, database)
        web.stop()


def _approve_in_the_console(browser, url: str, run_id: str, database: str) -> None:
    """Approve the run in the console (tests/browser.py), then read its status in the database."""
    approve_in_the_console(browser, url, run_id, "admin", PASSWORD)
    with psycopg.connect(POSTGRES.rsplit("/", 1)[0] + f"/{database}") as connection:
        row = connection.execute("SELECT status FROM agentflow_run WHERE id = %s", [run_id])
        assert row.fetchone() == ("succeeded",)


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_a_startproject_site_runs_a_fan_out_and_an_approval_on_a_real_worker(
    site, broker, database
):
    steps = readme_steps.read()
    started = time.monotonic()

    site.run(steps.command("python manage.py migrate"), timeout=180)
    checked = site.manage("check", "--fail-level", "WARNING")  # a warning fails, and shows
    assert "System check identified no issues" in checked, checked
    site.manage(
        "createsuperuser", "--noinput", "--username", "admin", "--email", "a@b.example",
        env={"DJANGO_SUPERUSER_PASSWORD": PASSWORD},
    )  # fmt: skip
    site.manage(
        "shell",
        "-v",
        "0",
        "-c",
        "import agentflow; agentflow.schedule('adopt.tick', every=2, name='adopt tick')",
    )

    worker = site.start("worker", [*steps.command("celery -A <project> worker"), "-l", "INFO"])
    beat = site.start("beat", [*steps.command("celery -A <project> beat"), "-l", "INFO"])
    worker.wait_for(" ready.", timeout=60)
    beat.wait_for("beat: Starting", timeout=60)

    # `agentflow start --wait` as the README's Commands show it, for this site's agent.
    readme_start = steps.cli_command("start")
    assert readme_start[4:] == ["billing.reconcile", "--input", '{"period": "2026-10"}', "--wait"]
    start = _start_command(readme_start, key=f"adopt-{broker}")
    waiting = site.run(start, timeout=120, expect=WAITS_FOR_A_PERSON)
    run_id = re.search(r"^run ([0-9a-f-]{36}) ", waiting, re.M)
    approval = re.search(r"waiting for approval (\d+):", waiting)
    assert run_id and approval, f"the run did not stop at the approval:\n{waiting}"
    assert not (site.root / "published.log").exists(), "the tool ran before its approval"

    approve = [
        arg.replace("<approval_id>", approval[1]).replace("<username>", "admin")
        for arg in steps.cli_command("approve")
    ]
    approved = site.run(approve)
    assert f"approval {approval[1]} approved by admin: run {run_id[1]}" in approved, approved

    # The same key returns the same run; --wait follows it to its end.
    finished = site.run(start, timeout=120)
    assert f"run {run_id[1]} " in finished, finished
    assert "output: " in finished, f"the run did not succeed:\n{finished}"
    output = json.loads(finished.split("output: ", 1)[1])
    total = sum(i * i for i in range(FAN_OUT))
    assert output["squares"] == [i * i for i in range(FAN_OUT)]
    assert output["receipt"] == {"published": total}
    # The fan-out ran in the worker's pool processes, not in a `manage.py` process.
    assert all(_parent_pid(pid) == worker.process.pid for pid in output["pids"]), (
        output["pids"],
        worker.process.pid,
    )
    published = (site.root / "published.log").read_text().splitlines()
    assert len(published) == 1, published  # the approved tool ran once
    assert published[0].startswith(f"{run_id[1]}:"), published  # with the run's stable key
    assert published[0].split()[1] == str(total)

    # Beat (django-celery-beat's scheduler, as the README sets it) starts the scheduled agent.
    count = (
        "from agentflow.models import Run; "
        "print(Run.objects.filter(agent='adopt.tick', status='succeeded').count())"
    )
    wait_until(
        lambda: int(site.manage("shell", "-v", "0", "-c", count).split()[-1]) >= 1,
        timeout=60,
        interval=1,
        what="beat to start a scheduled run that succeeds",
    )
    print(f"{broker}: the site ran its agent in {time.monotonic() - started:.1f}s")

    if broker == "redis":  # how the site is served does not depend on the broker
        started = time.monotonic()
        _serve_and_approve_in_chromium(site, steps, readme_start, database)
        print(f"the console worked in Chromium, both ways, in {time.monotonic() - started:.1f}s")
