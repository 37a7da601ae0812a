"""Redaction patterns as RE2 reads them: compiled once, and refused with a reason.

Redaction runs over payloads an attacker may write, so its patterns are matched with RE2
(``google-re2``), whose time is linear in the text whatever the pattern. RE2 has no
backtracking, so it refuses what needs it: lookahead and lookbehind, backreferences,
possessive and atomic groups, conditionals. ``unusable`` says why in words a person can act
on, and the runtime refuses to redact with such a pattern; ``problem`` also refuses a pattern
that matches the empty string, for Policy forms and the system check of AGENTFLOW["REDACT"].
Syntax: https://github.com/google/re2/wiki/Syntax (``\\d``, ``\\w``, ``\\s`` and ``\\b`` are
ASCII there).
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import re2

# What RE2 says, and what to write instead.
_ADVICE = (
    ("(?=", "RE2 has no lookahead: match the text around the secret too (it is redacted with it)"),
    ("(?!", "RE2 has no negative lookahead: describe what may follow with a character class"),
    ("(?<", "RE2 has no lookbehind: match the text before the secret too (it is redacted with it)"),
    ("(?P", "RE2 has no backreferences: repeat the group's pattern instead"),
    ("(?>", "RE2 never backtracks, so atomic groups are not needed: write (?:...)"),
    ("(?(", "RE2 has no conditionals: write the alternatives with |"),
    ("(?#", "RE2 has no comments in patterns: remove (?#...)"),
    ("(?x", "RE2 has no verbose mode: remove (?x) and the spaces it ignored"),
    ("\\Z", "RE2 writes the end of the text \\z, not \\Z"),
    ("++", "RE2 never backtracks, so possessive quantifiers are not needed: drop the second +"),
    ("*+", "RE2 never backtracks, so possessive quantifiers are not needed: drop the +"),
    ("?+", "RE2 never backtracks, so possessive quantifiers are not needed: drop the +"),
    ("repetition size", "RE2 allows counts up to 1000 in {n,m} (nested counts multiply)"),
    ("pattern too large", "it compiles past RE2's memory budget: make it shorter or narrower"),
)
_BACKREFERENCE = re.compile(r"invalid escape sequence: \\[1-9]")
# Python reads a{,3} as a{0,3}; RE2 reads it as the text "a{,3}", silently.
_OPEN_COUNT = re.compile(r"(?<!\\)\{,\d*\}")
# Every context an empty-width assertion can see (text edges, word, non-word, newline).
_PROBES = ["".join(chars) for n in range(3) for chars in itertools.product("a \n", repeat=n)]


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # refusals are reported to the person, not printed by RE2
    return options


# What ``compile_pattern`` raises for a pattern RE2 refuses.
Error = re2.error


def compile_pattern(pattern: str) -> Any:
    """The RE2 pattern object; ``Error`` if RE2 refuses it."""
    return re2.compile(pattern, _options())


def literal(text: str) -> str:
    """A pattern that matches exactly ``text`` (an API key), whatever characters it holds."""
    return re2.escape(text)


def unusable(pattern: str) -> str | None:
    """Why RE2 cannot match ``pattern`` as written, in words a person can act on; else None."""
    if not isinstance(pattern, str) or not pattern:
        return f"{pattern!r} is not a non-empty string"
    if _OPEN_COUNT.search(pattern):
        return (
            f"{pattern!r} has a count with no lower bound, like {{,3}}, which RE2 reads as "
            "plain text: write {0,3}"
        )
    try:
        # Alone and as it is combined with the others: 'a)|(b' must not escape its group.
        compile_pattern(pattern)
        compile_pattern(f"(?:{pattern})")
    except Error as exc:
        reason = exc.args[0] if exc.args else "refused"
        reason = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        advice = next((a for token, a in _ADVICE if token in reason), None)
        if advice is None and _BACKREFERENCE.search(reason):
            advice = "RE2 has no backreferences: repeat the group's pattern instead"
        return f"{pattern!r} is not a pattern RE2 can match ({reason})" + (
            f"; {advice}" if advice else ""
        )
    return None


def problem(pattern: str) -> str | None:
    """Why ``pattern`` may not be entered as a redaction pattern; else None.

    Besides what RE2 cannot match, a pattern that matches the empty string is refused: it
    would put the replacement between every two characters.
    """
    why = unusable(pattern)
    if why is None:
        compiled = compile_pattern(f"(?:{pattern})")
        if any(m.start() == m.end() for probe in _PROBES for m in compiled.finditer(probe)):
            why = (
                f"{pattern!r} matches the empty string, so it would redact between every character"
            )
    return why


def asserts_text_edges(pattern: str) -> bool:
    """Whether ``pattern`` may test the start or end of the text (``^ $ \\A \\z``).

    Read conservatively: any ``^`` or ``$`` outside a character class counts, as in
    ``(?m)^``. Such a pattern depends on where each string starts and ends, so it is
    matched string by string rather than in one scan of a value's strings joined.
    """
    i, end, in_class = 0, len(pattern), False
    while i < end:
        char = pattern[i]
        if char == "\\":
            following = pattern[i + 1 : i + 2]
            if following == "Q" and not in_class:  # literal text up to \E
                close = pattern.find("\\E", i + 2)
                i = end if close < 0 else close + 2
                continue
            if following in ("A", "z") and not in_class:
                return True
            i += 2
        elif in_class:
            if pattern.startswith("[:", i):  # [:alpha:]
                close = pattern.find(":]", i + 2)
                i = end if close < 0 else close + 2
                continue
            in_class = char != "]"
            i += 1
        elif char == "[":
            in_class, i = True, i + 1
            i += pattern.startswith("^", i)
            i += pattern.startswith("]", i)  # a ']' first is a member, not the end
        elif char in "^$":
            return True
        else:
            i += 1
    return False
