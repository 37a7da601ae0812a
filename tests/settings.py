"""Test settings: the demo site on real PostgreSQL and Redis, with short leases.

Worker processes started by the tests set AGENTFLOW_TEST_WORKER=1 so they connect to
the test database pytest-django created.
"""

import os

# The same switches a production site uses: PostgreSQL and Redis through their URLs.
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/agentflow")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/9")

from apps.project.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.testapp"]  # noqa: F405

# Separate names let two suites run side by side (each with its own REDIS_URL database).
TEST_DATABASE = os.environ.get("AGENTFLOW_TEST_DB", "test_agentflow")
DATABASES["default"]["TEST"] = {"NAME": TEST_DATABASE}  # noqa: F405
if os.environ.get("AGENTFLOW_TEST_WORKER"):
    DATABASES["default"]["NAME"] = DATABASES["default"]["TEST"]["NAME"]  # noqa: F405

AGENTFLOW = {
    # A test that runs workers on a queue of their own gives them its name.
    "QUEUE": os.environ.get("AGENTFLOW_TEST_QUEUE") or None,
    # A test may give its workers a shorter lease, to show a busy worker still renews it.
    "LEASE_SECONDS": float(os.environ.get("AGENTFLOW_TEST_LEASE_SECONDS", 3.0)),
    # A test worker may run its reconciler rarely, to show another path recovers a run.
    "RECONCILE_EVERY": float(os.environ.get("AGENTFLOW_TEST_RECONCILE_EVERY", 1.0)),
    "FAN_OUT_TASK_SECONDS": float(os.environ.get("AGENTFLOW_TEST_FAN_OUT_TASK_SECONDS", 0.25)),
    "VERSION_RETRY_SECONDS": 2.0,
    "REDISPATCH_SECONDS": 2.0,
    # The slack that absorbs the delay between a call's admission and its first line; a
    # test that measures first lines on a loaded machine gives its workers more.
    "RATE_LIMIT_GUARD_SECONDS": float(os.environ.get("AGENTFLOW_TEST_RATE_GUARD", 0.02)),
    # Workers read Policy rows on every call, so tests see admin changes at once.
    "POLICY_CACHE_SECONDS": 0.0,
    # Local servers the model-layer tests start; workers get their URLs in the environment.
    "LLM": {
        "default": {
            "BACKEND": "agentflow.llm.OpenAIProvider",
            "MODEL": "gpt-test",
            "OPTIONS": {
                "base_url": os.environ.get("AGENTFLOW_TEST_OPENAI_URL", "http://127.0.0.1:9/v1"),
                "api_key_env": "AGENTFLOW_TEST_LLM_KEY",
                "timeout": 30,
                "retry_backoff": 0.1,
            },
        },
        # The default alias's server, with a short total deadline per call and one retry.
        "slow": {
            "BACKEND": "agentflow.llm.OpenAIProvider",
            "MODEL": "gpt-test",
            "OPTIONS": {
                "base_url": os.environ.get("AGENTFLOW_TEST_OPENAI_URL", "http://127.0.0.1:9/v1"),
                "api_key_env": "AGENTFLOW_TEST_LLM_KEY",
                "timeout": 30,
                "deadline": 1.5,
                "retries": 1,
                "retry_backoff": 0.1,
            },
        },
        "claude": {
            "BACKEND": "agentflow.llm.AnthropicProvider",
            "MODEL": "claude-test",
            "OPTIONS": {
                "base_url": os.environ.get("AGENTFLOW_TEST_ANTHROPIC_URL", "http://127.0.0.1:9"),
                "api_key_env": "AGENTFLOW_TEST_LLM_KEY",
                "timeout": 30,
                "retry_backoff": 0.1,
            },
        },
    },
    "PRICES": {"gpt-test": {"input": "2.00", "output": "8.00"}},
}
# A test that restarts the channel layer's Redis gives the layer (only) a server of its own.
if os.environ.get("AGENTFLOW_TEST_LAYER_REDIS_URL"):
    CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]["address"] = os.environ[  # noqa: F405
        "AGENTFLOW_TEST_LAYER_REDIS_URL"
    ]
# Beat in tests keeps its schedule in a file: the database is flushed between tests.
CELERY_BEAT_SCHEDULER = "celery.beat:PersistentScheduler"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# pytest turns DEBUG off and nothing ran collectstatic: WhiteNoise finds the static files in
# the apps, as in development, instead of warning that STATIC_ROOT does not exist.
WHITENOISE_USE_FINDERS = WHITENOISE_AUTOREFRESH = True
