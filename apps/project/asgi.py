"""ASGI entry point: HTTP through Django, websockets through agentflow's routes."""

import os

from channels.routing import ProtocolTypeRouter
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "apps.project.settings")

application = ProtocolTypeRouter({"http": get_asgi_application()})
