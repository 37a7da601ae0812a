"""The demo site's ASGI application with static files served, for browser tests.

daphne serves no static files; the admin's CSS and the console's JavaScript must load
for a real browser, so HTTP goes through Django's static files handler first.
"""

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

from apps.project.asgi import application as site

mapping = dict(site.application_mapping)
mapping["http"] = ASGIStaticFilesHandler(mapping["http"])
application = type(site)(mapping)
