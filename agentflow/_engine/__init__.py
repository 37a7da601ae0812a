"""The execution engine: replay, context, leases, reconciler.

It knows nothing of Celery or Channels; it reaches the outside world through
``agentflow._engine.ports``.
"""
