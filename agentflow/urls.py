"""URLs a site includes under ``path("agentflow/", include("agentflow.urls"))``.

The approval and live-event views arrive here; runs are managed in the admin meanwhile.
"""

app_name = "agentflow"
urlpatterns: list = []
