"""The demo site's settings on a PostgreSQL database of the benchmark's own."""

import os

import dj_database_url

from apps.project.settings import *  # noqa: F403

DATABASES = {
    "default": dj_database_url.parse(
        os.environ["BENCH_DATABASE_URL"], conn_max_age=None, conn_health_checks=False
    )
}
INSTALLED_APPS = [*INSTALLED_APPS, "bench"]  # noqa: F405
LOGGING = {"version": 1, "disable_existing_loggers": False}
AGENTFLOW = {
    "RECONCILE_EVERY": 2.0,
    "LEASE_SECONDS": 15.0,
    # bench.llm_overhead's local server.
    "LLM": {
        "default": {
            "BACKEND": "agentflow.llm.OpenAIProvider",
            "MODEL": "gpt-test",
            "OPTIONS": {"base_url": os.environ.get("BENCH_LLM_URL", "http://127.0.0.1:9/v1")},
        }
    },
}
DEBUG = False
