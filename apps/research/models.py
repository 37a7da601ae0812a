from django.db import models


class Document(models.Model):
    """A short note of the demo corpus (apps/research/corpus/notes.jsonl, loaded by migration)."""

    slug = models.SlugField(max_length=100, unique=True)
    title = models.CharField(max_length=200)
    topic = models.CharField(max_length=100, db_index=True)
    body = models.TextField()

    def __str__(self) -> str:
        return self.title
