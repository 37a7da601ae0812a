"""The demo site's ASGI application with static files served, for the browser benchmark.

daphne serves no static files; the console's JavaScript must load for a real browser.
"""

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

from apps.project.asgi import application as site

mapping = dict(site.application_mapping)
mapping["http"] = ASGIStaticFilesHandler(mapping["http"])
application = type(site)(mapping)
