"""The demo site's production shape: settings from the environment, and docker-compose.yml."""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import urllib.request

import yaml

from agentflow.management._exit_codes import ExitCode
from tests import readme_steps
from tests.browser import approve_in_the_console, chromium, free_port
from tests.conftest import POSTGRES, ROOT
from tests.support import Process

PASSWORD = "compose-admin-password"

PRODUCTION = {
    "DJANGO_SETTINGS_MODULE": "apps.project.settings",
    "DJANGO_DEBUG": "0",
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "DJANGO_ALLOWED_HOSTS": "agents.example.com",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres",
    "REDIS_URL": "redis://127.0.0.1:6379/9",
}


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, **PRODUCTION, **env}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_settings_pass_check_deploy_without_a_warning():
    result = manage("check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_settings_refuse_the_demo_secret_key():
    result = manage("check", DJANGO_SECRET_KEY="insecure-demo-key-change-me-in-production")
    assert result.returncode != 0
    assert "DJANGO_DEBUG=0 needs DJANGO_SECRET_KEY" in result.stderr


def test_compose_runs_every_service_with_a_health_check():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "web", "worker", "beat"}
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
    for name in ("web", "worker", "beat"):
        environment = services[name]["environment"]
        assert environment["DJANGO_DEBUG"] == "0" and environment["REDIS_URL"], name
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_the_compose_web_and_worker_serve_a_styled_live_console_through_an_approval(
    tmp_path, settings, database, private_redis
):
    """The image as the Dockerfile builds it (collectstatic, without the runtime environment),
    run as docker-compose.yml's web and worker services with their environment (DEBUG off):
    web's migrate, then its daphne, serves the admin's and the console's static files (by
    WhiteNoise, in the settings); in Chromium the console is styled and live, and an approval
    given there lets the worker finish the run.

    A new database and a Redis server of the test's own stand in for the compose services.
    """
    middleware = settings.MIDDLEWARE
    security = middleware.index("django.middleware.security.SecurityMiddleware")
    assert middleware[security + 1] == "whitenoise.middleware.WhiteNoiseMiddleware", middleware

    runs = [
        line.removeprefix("RUN ").strip()
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("RUN ")
    ]
    collect = [shlex.split(run) for run in runs if "collectstatic" in run]
    assert collect == [["python", "manage.py", "collectstatic", "--noinput"]], runs
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    web, worker = services["web"], services["worker"]
    command = shlex.split(web["command"])
    assert command[:2] == ["sh", "-c"], command
    migrate, serve = [shlex.split(part) for part in command[2].split("&&")]
    assert migrate == ["python", "manage.py", "migrate", "--noinput"], migrate
    assert serve[0] == "daphne" and serve[-1] == "apps.project.asgi:application", serve
    work = shlex.split(worker["command"])
    assert work[:4] == ["celery", "-A", "apps.project", "worker"], work
    assert worker["environment"] == web["environment"]  # one runtime environment (x-site)

    # As the image does: built without the runtime environment, run with web's (local
    # services in place of the compose ones), each with STATIC_ROOT under tmp_path.
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "AGENTFLOW_"))}
    base.update(DJANGO_SETTINGS_MODULE="apps.project.settings", AGENTFLOW_VAR_DIR=str(tmp_path))
    built = subprocess.run(
        [sys.executable, *collect[0][1:]], cwd=ROOT, env=base, capture_output=True, text=True
    )
    assert built.returncode == 0, built.stdout + built.stderr
    runtime = {**base, **{k: str(v) for k, v in web["environment"].items()}}
    runtime.update(
        DATABASE_URL=f"{POSTGRES.rsplit('/', 1)[0]}/{database}", REDIS_URL=private_redis.url
    )
    migrated = manage(*migrate[2:], **runtime)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    made = manage(
        "createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com",
        **runtime, DJANGO_SUPERUSER_PASSWORD=PASSWORD,
    )  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr

    port = free_port()
    options = [*serve[1:-1], "-b", "127.0.0.1", "-p", str(port)]  # the last -b and -p win
    daphne = Process(
        "daphne", [sys.executable, "-m", serve[0], *options, serve[-1]], ROOT, runtime, tmp_path
    )
    # The compose file's 4 pool processes only slow the start on a 2-core test machine; 2 (the
    # last --concurrency wins) still run the agent's fan-out side by side.
    celery = [sys.executable, "-m", *work, "--concurrency", "2"]
    pool = Process("worker", celery, ROOT, runtime, tmp_path)
    try:
        url = daphne.listening(port)
        for path, kind in (
            ("admin/css/base.css", "text/css"),
            ("agentflow/console.css", "text/css"),
            ("agentflow/run_page.js", "javascript"),
        ):
            with urllib.request.urlopen(f"{url}/static/{path}", timeout=10) as r:
                assert r.status == 200 and kind in r.headers["Content-Type"], (path, r.headers)
                assert r.read() == (tmp_path / "static" / path).read_bytes(), path
        pool.wait_for(" ready.", timeout=90)

        # The README's `agentflow start --wait`: the demo's billing agent stops at a payment
        # over 250 (a Policy row the migrations load) until a person approves it.
        start = readme_steps.read().cli_command("start")
        assert start[:2] == ["python", "manage.py"] and start[4] == "billing.reconcile", start
        waiting = manage(*start[2:], "--timeout", "90", **runtime)
        assert waiting.returncode == ExitCode.NEEDS_A_PERSON, waiting.stdout + waiting.stderr
        run_id = re.search(r"^run ([0-9a-f-]{36}) ", waiting.stdout, re.M)
        assert run_id and "waiting for approval" in waiting.stdout, waiting.stdout

        with chromium() as browser:
            approve_in_the_console(browser, url, run_id[1], "admin", PASSWORD)
    finally:
        for process in (pool, daphne):
            process.stop()
            print(f"----- {process.name} log -----\n{process.log()[-20000:]}")


def compose_command() -> list[str]:
    """Docker's ``docker compose`` plugin, else Debian's ``docker-compose`` (``make compose``)."""
    docker = shutil.which("docker")
    plugin = docker and subprocess.run([docker, "compose", "version"], capture_output=True)
    if plugin and plugin.returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    assert legacy, "no Compose to validate docker-compose.yml: run `make compose` (apt-get)"
    return [legacy]


def test_docker_compose_accepts_the_file(tmp_path):
    compose = compose_command()
    result = subprocess.run(
        [*compose, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    # And Compose does refuse a broken file: a health check interval that is not a duration.
    broken = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    broken["services"]["web"]["healthcheck"]["interval"] = 5
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(broken))
    refused = subprocess.run(
        [*compose, "-f", str(tmp_path / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0 and "interval" in refused.stderr, refused.stderr


def test_the_image_installs_the_tested_versions():
    """The image gets what the suite passed with, as `make test` and the README do."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    copied = next(line for line in lines if line.startswith("COPY") and "pyproject.toml" in line)
    assert "constraints.txt" in copied
    (install,) = [line for line in lines if line.startswith("RUN pip install")]
    assert "-c constraints.txt" in install
