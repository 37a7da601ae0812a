"""The demo site's production shape: settings from the environment, and docker-compose.yml."""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import urllib.request

import yaml

from tests.browser import free_port
from tests.conftest import ROOT
from tests.support import wait_until

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


def test_the_web_service_serves_the_static_files_the_image_collected(tmp_path, settings):
    """The Dockerfile's collectstatic, then the compose web service's daphne, DEBUG off: the
    admin's and the console's CSS and scripts are served (by WhiteNoise, in the settings)."""
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
    web = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["web"]
    command = shlex.split(web["command"])
    assert command[:2] == ["sh", "-c"], command
    (serve,) = [shlex.split(part) for part in command[2].split("&&") if "daphne" in part]
    assert serve[0] == "daphne" and serve[-1] == "apps.project.asgi:application", serve

    # As the image does: built without the runtime environment, run with web's (local
    # services in place of the compose ones), each with STATIC_ROOT under tmp_path.
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "AGENTFLOW_"))}
    base.update(DJANGO_SETTINGS_MODULE="apps.project.settings", AGENTFLOW_VAR_DIR=str(tmp_path))
    built = subprocess.run(
        [sys.executable, *collect[0][1:]], cwd=ROOT, env=base, capture_output=True, text=True
    )
    assert built.returncode == 0, built.stdout + built.stderr
    runtime = {**base, **{k: str(v) for k, v in web["environment"].items()}}
    runtime.update(DATABASE_URL=PRODUCTION["DATABASE_URL"], REDIS_URL=PRODUCTION["REDIS_URL"])
    port = free_port()
    options = [*serve[1:-1], "-b", "127.0.0.1", "-p", str(port)]  # the last -b and -p win
    log_path = tmp_path / "daphne.log"
    with open(log_path, "w") as log:
        daphne = subprocess.Popen(
            [sys.executable, "-m", "daphne", *options, serve[-1]],
            cwd=ROOT, env=runtime, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:

        def listening() -> bool:
            assert daphne.poll() is None, log_path.read_text()
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        wait_until(listening, timeout=60, what="daphne to listen")
        for path, kind in (
            ("admin/css/base.css", "text/css"),
            ("agentflow/console.css", "text/css"),
            ("agentflow/run_page.js", "javascript"),
        ):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/static/{path}", timeout=10) as r:
                assert r.status == 200 and kind in r.headers["Content-Type"], (path, r.headers)
                assert r.read() == (tmp_path / "static" / path).read_bytes(), path
    finally:
        daphne.terminate()
        daphne.wait(10)


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
