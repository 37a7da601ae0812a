"""Load the corpus, and on SQLite the FTS5 index that searches it.

PostgreSQL ranks with to_tsvector at query time (300 notes need no index); SQLite gets an
external-content FTS5 table over the documents.
"""

import json
from pathlib import Path

from django.db import migrations

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "notes.jsonl"
FTS_TABLE = "research_document_fts"


def load(apps, schema_editor):
    Document = apps.get_model("research", "Document")
    with CORPUS.open() as notes:
        Document.objects.bulk_create(Document(**json.loads(line)) for line in notes)
    if schema_editor.connection.vendor == "sqlite":
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(
                f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5("
                "title, body, content='research_document', content_rowid='id')"
            )
            cursor.execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('rebuild')")


def unload(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {FTS_TABLE}")
    apps.get_model("research", "Document").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [("research", "0001_initial")]

    operations = [migrations.RunPython(load, unload)]
