"""The research demo's scripted model: search, read the top three hits, write the brief.

It answers from the conversation alone (deterministic, no network): turn 1 searches for the
topic, turn 2 reads the first three hits at once, turn 3 writes one cited bullet per note.
"""

from __future__ import annotations

import json
from typing import Any

READ = 3


def brief(messages: list[dict[str, Any]], tools: list[str]) -> dict[str, Any]:
    """The next response of the research loop, from the messages so far."""
    turn = sum(1 for message in messages if message.get("role") == "assistant")
    topic = messages[1]["content"].removeprefix("Write a brief on: ")
    results = [json.loads(m["content"]) for m in messages if m.get("role") == "tool"]
    if turn == 0:
        return {"tool_calls": [{"name": "research.search", "arguments": {"query": topic}}]}
    if turn == 1:
        hits = results[-1] if isinstance(results[-1], list) else []
        calls = [{"name": "research.read", "arguments": {"id": hit["id"]}} for hit in hits[:READ]]
        if calls:
            return {"tool_calls": calls}
        return {"text": f"Brief: {topic}\n\nThe corpus has no note on this topic."}
    notes = [r for r in results if isinstance(r, dict) and "body" in r]
    made: list[str] = []
    bullets = []
    for note in notes:
        point = _point(note["body"], made)
        made.append(point)
        bullets.append(f"- {point} [{note['id']}]")
    return {"text": f"Brief: {topic}\n\n" + "\n".join(bullets)}


def _point(body: str, made: list[str]) -> str:
    """The note's first sentence after its introduction that no bullet made yet."""
    sentences = [s.strip().rstrip(".") + "." for s in body.split(". ") if s.strip()]
    fresh = [s for s in sentences[1:] if s not in made]
    return (fresh or sentences)[0]
