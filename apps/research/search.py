"""Full-text search over the corpus: PostgreSQL's ranking, or SQLite's FTS5, by database.

Any word of the query may match (OR), and the best-ranked documents come first, so a
model's loosely worded query still finds something to read.
"""

from __future__ import annotations

import re

from django.db import connection

from apps.research.models import Document

FTS_TABLE = "research_document_fts"


def words(query: str) -> list[str]:
    """The query's words, lower-cased: nothing else reaches the search syntax."""
    return re.findall(r"[a-z0-9]+", query.lower())[:20]


def search(query: str, limit: int) -> list[Document]:
    """The documents that best match ``query``, best first."""
    terms = words(query)
    if not terms:
        return []
    if connection.vendor == "postgresql":
        from django.contrib.postgres.search import SearchQuery, SearchRank, SearchVector

        vector = SearchVector("title", "body", config="english")
        wanted = SearchQuery(" | ".join(terms), config="english", search_type="raw")
        return list(
            Document.objects.annotate(rank=SearchRank(vector, wanted))
            .filter(rank__gt=0)
            .order_by("-rank", "id")[:limit]
        )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH %s ORDER BY rank LIMIT %s",
            [" OR ".join(f'"{term}"' for term in terms), limit],
        )
        ids = [row[0] for row in cursor.fetchall()]
    found = Document.objects.in_bulk(ids)
    return [found[i] for i in ids if i in found]
