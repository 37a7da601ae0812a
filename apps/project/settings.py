"""Settings of the demo site.

With no environment this is the embedded default: SQLite (WAL) and an in-process
Celery worker on the in-memory broker, no services needed. Set DATABASE_URL and
REDIS_URL to run the same site on PostgreSQL, a Redis broker and channels-redis.
"""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parents[2]
VAR_DIR = Path(os.environ.get("AGENTFLOW_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)  # the embedded database and static files live here

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "insecure-demo-key-change-me-in-production")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")

if not DEBUG:
    # Production: HTTPS only, behind a TLS-terminating proxy that sets X-Forwarded-Proto.
    # DJANGO_SECURE_SSL_REDIRECT=0 serves plain HTTP (docker-compose.yml on localhost).
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = os.environ.get("DJANGO_SECURE_SSL_REDIRECT", "1") == "1"
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = SECURE_SSL_REDIRECT
    SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_HSTS_SECONDS", "3600"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_PRELOAD = (
        os.environ.get("DJANGO_HSTS_SUBDOMAINS", "1") == "1"
    )
    if SECRET_KEY.startswith("insecure-"):
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured("DJANGO_DEBUG=0 needs DJANGO_SECRET_KEY (a long random value).")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_celery_beat",
    "django_celery_results",
    "agentflow",
    "apps.billing",
    "apps.research",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files in production (DEBUG off, after `collectstatic`): daphne serves none.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "apps.project.urls"
WSGI_APPLICATION = "apps.project.wsgi.application"
ASGI_APPLICATION = "apps.project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASE_URL = os.environ.get("DATABASE_URL")
if DATABASE_URL and not DATABASE_URL.startswith("sqlite"):
    # Workers keep their connections: opening one costs more than a whole step.
    DATABASES = {
        "default": dj_database_url.parse(DATABASE_URL, conn_max_age=None, conn_health_checks=True)
    }
else:
    sqlite_path = (
        DATABASE_URL.removeprefix("sqlite:///") if DATABASE_URL else VAR_DIR / "agentflow.sqlite3"
    )
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": sqlite_path,
            # WAL lets the web thread read while the worker writes; IMMEDIATE takes the write
            # lock up front so concurrent writers queue instead of failing.
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
            },
        }
    }

REDIS_URL = os.environ.get("REDIS_URL")
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_RESULT_BACKEND = REDIS_URL
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # No read timeout: the layer blocks 5 s waiting for messages, and redis-py 8's
            # default of 5 s would close every quiet websocket (agentflow.W011).
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": None}]},
        }
    }
else:
    CELERY_BROKER_URL = "memory://"
    CELERY_RESULT_BACKEND = "cache+memory://"
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# One message at a time per worker process, so a long run never hides others behind it.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Longer than any step's hard limit; runs recover through leases well before this.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TASK_TRACK_STARTED = False
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Keep worker database connections across tasks (Celery's Django fixup closes them otherwise).
CELERY_DB_REUSE_MAX = 10_000

# The demo's model: any OpenAI-compatible endpoint when one is set in the environment
# (AGENTFLOW_LLM_BASE_URL, OPENAI_API_KEY, AGENTFLOW_LLM_MODEL), else a scripted stand-in
# that answers from the prompt (labelled "scripted" wherever its answers show).
if os.environ.get("AGENTFLOW_LLM_BASE_URL") or os.environ.get("OPENAI_API_KEY"):
    DEMO_MODEL = {
        "BACKEND": "agentflow.llm.OpenAIProvider",
        "MODEL": os.environ.get("AGENTFLOW_LLM_MODEL", "gpt-4.1-mini"),
        "OPTIONS": {"base_url": os.environ.get("AGENTFLOW_LLM_BASE_URL") or None},
    }
else:
    DEMO_MODEL = {
        "BACKEND": "agentflow.llm.ScriptedProvider",
        "MODEL": "demo",
        "OPTIONS": {"responder": "apps.project.scripted.respond"},
    }

AGENTFLOW = {
    "LEASE_SECONDS": float(os.environ.get("AGENTFLOW_LEASE_SECONDS", 15)),
    "RECONCILE_EVERY": float(os.environ.get("AGENTFLOW_RECONCILE_EVERY", 5)),
    "LLM": {"default": DEMO_MODEL},
    "PRICES": {"gpt-4.1-mini": {"input": "0.40", "output": "1.60"}},
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "agentflow": {
            "handlers": ["console"],
            "level": os.environ.get("AGENTFLOW_LOG_LEVEL", "WARNING"),
        }
    },
}
