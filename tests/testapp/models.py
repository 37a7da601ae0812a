from django.db import models


class SideEffect(models.Model):
    """What a tool did to the outside world; the unique key proves it happened once."""

    key = models.CharField(max_length=300, unique=True)
    tool = models.CharField(max_length=100)


class Execution(models.Model):
    """One row each time a step or tool body runs (no uniqueness: it counts re-runs)."""

    key = models.CharField(max_length=300, db_index=True)
    pid = models.IntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)


class Flag(models.Model):
    """A switch a test flips to release a tool that waits for it."""

    name = models.CharField(max_length=100, unique=True)


class Call(models.Model):
    """When a tool body started and ended (epoch seconds), for rate and overlap checks."""

    tool = models.CharField(max_length=100, db_index=True)
    key = models.CharField(max_length=300)
    started = models.FloatField()
    ended = models.FloatField(null=True)
    pid = models.IntegerField(default=0)


class LedgerEntry(models.Model):
    """A site's own table that a tool writes to (no uniqueness: a double write shows)."""

    invoice = models.CharField(max_length=100, db_index=True)
