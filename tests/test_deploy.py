"""The demo site's production shape: settings from the environment, and docker-compose.yml."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys

import yaml

from tests.conftest import ROOT

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
