"""URLs a site includes under ``path("agentflow/", include("agentflow.urls"))``."""

from django.urls import path

from agentflow import _views as views

app_name = "agentflow"
urlpatterns = [
    path("approvals/<int:approval_id>/decide/", views.decide, name="decide"),
]
