"""The research agent: search the corpus, read the best hits in parallel, write a cited brief.

One ``ctx.llm_loop``: the model calls ``research.search`` and then ``research.read`` for
several hits at once (a fan-out), and answers with a brief whose claims cite their notes as
``[id]``. The model is a scripted stand-in unless an endpoint is configured.
"""

import re

from agentflow import RunContext, agent, tool
from apps.research import search as corpus
from apps.research.models import Document

INSTRUCTIONS = (
    "You write short research briefs from a corpus of engineering notes. Search it with "
    "research.search, read the most relevant hits with research.read (several at once), then "
    "answer with a brief of a few bullet points, each citing the notes it rests on as [id]."
)


@tool(name="research.search")
def search(query: str, limit: int = 5) -> list[dict]:
    """Full-text search of the notes; the best matches first, with their ids and titles."""
    return [{"id": d.id, "title": d.title} for d in corpus.search(query, min(limit, 20))]


@tool(name="research.read")
def read(id: int) -> dict:
    """The full text of one note."""
    document = Document.objects.filter(id=id).first()
    if document is None:
        raise ValueError(f"there is no note {id}; use an id research.search returned")
    return {"id": document.id, "title": document.title, "body": document.body}


@agent(name="research.brief", version="1")
def brief(ctx: RunContext, topic: str, max_turns: int = 6) -> dict:
    """A cited brief on ``topic``."""
    result = ctx.llm_loop(
        [
            {"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": f"Write a brief on: {topic}"},
        ],
        tools=[search, read],
        max_turns=max_turns,
        max_tokens=600,
    )
    cited = sorted({int(n) for n in re.findall(r"\[(\d+)\]", result.text)})
    return {"topic": topic, "model": result.model, "brief": result.text, "cited": cited}
