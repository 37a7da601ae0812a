"""The operator console: the admin's run page, actions, approvals queue and schedules.

The views are admin views (``ModelAdmin.get_urls`` through ``admin_site.admin_view``);
they call only the public ``agentflow`` functions, so every change an operator makes goes
through the same checks, events and audit as the API.
"""
