"""System checks of how a site is served and run (agentflow/_site_checks.py): each fires on the
setup that breaks the console or the workers quietly, and the README's site passes them all."""

from __future__ import annotations

import subprocess
import sys
from io import StringIO
from pathlib import Path
from unittest import mock

import pytest
from daphne.checks import check_daphne_installed
from django.core.files.storage import Storage
from django.core.management import call_command, get_commands
from django.test import override_settings
from whitenoise.middleware import WhiteNoiseMiddleware

from tests.support import celery_conf
from tests.test_adoption import PROJECT, README_REDIS, Site, apply_readme

SQLITE = {"ENGINE": "django.db.backends.sqlite3", "NAME": "site.sqlite3"}


class BucketStorage(Storage):
    """A static files storage that is not a directory (S3 and the like): no STATIC_ROOT."""


class OwnWhiteNoise(WhiteNoiseMiddleware):
    """A site's own subclass of WhiteNoise's middleware."""


def test_a_runserver_that_serves_no_websockets_is_flagged_in_development(settings):
    from agentflow._site_checks import check_runserver

    settings.DEBUG = True
    assert check_runserver() == []  # the test site lists "daphne" first
    installed = [app for app in settings.INSTALLED_APPS if app != "daphne"]
    with override_settings(INSTALLED_APPS=installed):
        (missing,) = check_runserver()
    assert missing.id == "agentflow.W012"
    assert "runserver` comes from django.contrib.staticfiles, not daphne" in missing.msg
    assert "it is not installed" in missing.msg and "reconnecting…" in missing.msg
    assert 'Put "daphne" first in INSTALLED_APPS' in missing.hint
    # Listed after staticfiles, daphne's own check says so (an error), and this one does not.
    after = installed.index("django.contrib.staticfiles") + 1
    with override_settings(INSTALLED_APPS=[*installed[:after], "daphne", *installed[after:]]):
        assert check_runserver() == []
        assert [e.id for e in check_daphne_installed(None)] == ["daphne.E001"]
    # Another app's runserver, listed ahead of daphne's.
    with mock.patch.dict(get_commands(), runserver="tests.testapp"):
        (late,) = check_runserver()
    assert late.id == "agentflow.W012" and "listed after tests.testapp" in late.msg
    # WhiteNoise's runserver_nostatic runs the next app's runserver: daphne's, or not.
    nostatic = "whitenoise.runserver_nostatic"
    with override_settings(INSTALLED_APPS=[nostatic, *settings.INSTALLED_APPS]):
        assert check_runserver() == []
    with override_settings(INSTALLED_APPS=[nostatic, *installed]):
        (warning,) = check_runserver()
    assert "comes from django.contrib.staticfiles" in warning.msg
    settings.DEBUG = False  # production serves with daphne or uvicorn, not runserver
    with override_settings(INSTALLED_APPS=installed):
        assert check_runserver() == []


def test_a_production_site_that_serves_no_static_files_is_flagged(settings):
    from agentflow._site_checks import check_static_files, check_static_files_deployed

    settings.DEBUG = False
    assert check_static_files() == [] and check_static_files_deployed() == []
    with_whitenoise = settings.MIDDLEWARE
    settings.MIDDLEWARE = [m for m in with_whitenoise if "whitenoise" not in m]
    (warning,) = check_static_files()
    assert warning.id == "agentflow.W013" and "raw JSON page" in warning.msg
    assert "WhiteNoiseMiddleware" in warning.hint
    assert "proxy serves STATIC_ROOT at STATIC_URL" in warning.hint
    assert check_static_files_deployed() == []  # reported once

    # `check --deploy` asks it of a site whose DEBUG is still on, too.
    settings.DEBUG = True
    assert check_static_files() == []
    (warning,) = check_static_files_deployed()
    assert warning.id == "agentflow.W013"
    settings.DEBUG = False

    # A site's own WhiteNoise subclass serves them; so does a CDN at an absolute STATIC_URL.
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "tests.test_site_checks.OwnWhiteNoise"]
    assert check_static_files() == []
    settings.MIDDLEWARE = [m for m in with_whitenoise if "whitenoise" not in m]
    with override_settings(STATIC_URL="https://cdn.example.com/static/"):
        assert check_static_files() == []

    # The proxy's way: silenced as any check.
    settings.SILENCED_SYSTEM_CHECKS = ["agentflow.W013"]
    out, err = StringIO(), StringIO()
    call_command("check", "--tag", "agentflow", stdout=out, stderr=err)
    assert "agentflow.W013" not in out.getvalue() + err.getvalue()
    assert "1 silenced" in out.getvalue()


def test_a_production_site_without_static_root_is_flagged(settings):
    from agentflow._site_checks import check_static_files

    settings.DEBUG = False
    settings.STATIC_ROOT = None
    (warning,) = check_static_files()
    assert warning.id == "agentflow.W014" and "collectstatic` has nowhere" in warning.msg
    assert "STATIC_ROOT = BASE_DIR" in warning.hint
    # A storage that is no directory (a bucket) needs no STATIC_ROOT.
    storages = {**settings.STORAGES, "staticfiles": {"BACKEND": f"{__name__}.BucketStorage"}}
    with override_settings(STORAGES=storages):
        assert check_static_files() == []
    settings.DEBUG = True
    assert check_static_files() == []  # runserver serves them from the apps


def test_a_site_with_no_broker_at_all_is_flagged(settings, monkeypatch):
    from celery import Celery, current_app

    from agentflow._checks import check_celery_app
    from agentflow._site_checks import check_broker_configured

    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    assert check_broker_configured() == []
    assert current_app.conf.broker_url  # configured from the settings, as in a running site
    del settings.CELERY_BROKER_URL
    # The site's app read the setting when it was first configured (earlier tests may have
    # made it do so): it must have no broker of its own either.
    with celery_conf(broker_url=None):
        (warning,) = check_broker_configured()
        assert check_celery_app() == []  # W010 is for a configured broker the app ignores
    assert warning.id == "agentflow.W015" and "amqp://localhost" in warning.msg
    assert "CELERY_BROKER_URL" in warning.hint
    with celery_conf(broker_url="redis://127.0.0.1:6379/0"):  # set in the site's celery.py
        assert check_broker_configured() == []

    # A project whose __init__.py does not load its celery.py, and no broker in settings.
    site_app = current_app._get_current_object()
    Celery("unconfigured").set_current()
    try:
        (warning,) = check_broker_configured()
        monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")  # Celery reads it
        assert check_broker_configured() == []
    finally:
        site_app.set_current()
    assert warning.id == "agentflow.W015"


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_sqlite_shared_by_worker_processes_is_flagged():
    from agentflow._site_checks import check_database_for_workers

    assert check_database_for_workers() == []  # PostgreSQL
    with override_settings(DATABASES={"default": SQLITE}):
        (warning,) = check_database_for_workers()
        with celery_conf(broker_url="memory://"):  # the embedded demo: one process
            assert check_database_for_workers() == []
    assert warning.id == "agentflow.W016" and "tested on PostgreSQL" in warning.msg
    assert "memory://" in warning.hint


def _readme_site(tmp_path: Path, broker: str) -> Site:
    """A `startproject` site with the README's blocks, on this checkout's virtualenv."""
    site = Site(tmp_path / broker / PROJECT, Path(sys.prefix))
    site.root.parent.mkdir()
    subprocess.run(
        [sys.executable, "-m", "django", "startproject", PROJECT],
        cwd=site.root.parent, env=site.env, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    apply_readme(site.root, broker=broker, database="unused", queue="q", redis_url=README_REDIS)
    (site.root / "adopt").mkdir()  # the site's own app, which apply_readme installs
    (site.root / "adopt" / "__init__.py").write_text("")
    return site


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_the_readmes_site_passes_every_check_in_development_and_production(tmp_path, broker):
    """`check` of a site set up as the README says: DEBUG on (runserver) and off (daphne)."""
    site = _readme_site(tmp_path, broker)
    for debug in ("1", "0"):
        checked = site.manage("check", "--fail-level", "WARNING", env={"DJANGO_DEBUG": debug})
        assert "System check identified no issues (0 silenced)" in checked, (debug, checked)
