"""Websocket routes; a site puts them behind its session and Origin checks in ``asgi.py``."""

from django.urls import path

from agentflow.consumers import RunEventsConsumer, RunListConsumer

websocket_urlpatterns = [
    path("ws/agentflow/runs/", RunListConsumer.as_asgi()),
    # Any segment reaches the consumer, which refuses a malformed id like an unknown one.
    path("ws/agentflow/runs/<str:run_id>/", RunEventsConsumer.as_asgi()),
]
