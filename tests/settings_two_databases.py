"""Test settings with agentflow on a database of its own: the alias "agentflow".

A router puts agentflow's tables, and the tables its foreign keys point to (the user and
group models, django-celery-beat's periodic tasks, and what those need: contenttypes and
the admin's log), on that alias; the site's own apps stay on "default". Used by
tests/test_two_databases.py, which runs tests/two_databases.py under these settings.
"""

import copy
import os

from tests.settings import *  # noqa: F403

DATABASES["agentflow"] = copy.deepcopy(DATABASES["default"])  # noqa: F405
DATABASES["agentflow"]["NAME"] = f"{DATABASES['agentflow']['NAME']}_agentflow"  # noqa: F405
DATABASES["agentflow"]["TEST"] = {"NAME": f"{TEST_DATABASE}_agentflow"}  # noqa: F405
if os.environ.get("AGENTFLOW_TEST_WORKER"):
    DATABASES["agentflow"]["NAME"] = DATABASES["agentflow"]["TEST"]["NAME"]  # noqa: F405

DATABASE_ROUTERS = ["tests.settings_two_databases.AgentflowRouter"]


class AgentflowRouter:
    """agentflow, and the apps it has foreign keys to, on "agentflow"; the rest on "default"."""

    labels = frozenset({"agentflow", "auth", "contenttypes", "admin", "django_celery_beat"})

    def _alias(self, model: type) -> str:
        return "agentflow" if model._meta.app_label in self.labels else "default"

    def db_for_read(self, model: type, **hints: object) -> str:
        return self._alias(model)

    def db_for_write(self, model: type, **hints: object) -> str:
        return self._alias(model)

    def allow_relation(self, obj1: object, obj2: object, **hints: object) -> bool | None:
        return None  # Django's rule: only objects on one database may be related

    def allow_migrate(self, db: str, app_label: str, **hints: object) -> bool:
        return db == ("agentflow" if app_label in self.labels else "default")


# Workers log any wake-up or live event sent while a transaction is open (tests.two_databases
# asserts there is none).
CELERY_IMPORTS = ["tests.two_databases_probe"]
AGENTFLOW = {**AGENTFLOW, "PUBLISHER": "tests.two_databases_probe.CheckingPublisher"}  # noqa: F405
