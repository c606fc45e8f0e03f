"""Strict reading of an LLM's answer against a taxonomy: pure functions, no model needed.

:func:`parse_answer` takes the *first* JSON object in the text (anything around it, e.g. a Markdown code
fence or a sentence, is ignored) and accepts it only when

* every label of the taxonomy is a key, spelt exactly as in the taxonomy, and no other key is present;
* no key occurs twice;
* every value is a string equal, ignoring case only (no trimming, no synonyms), to one of the label's
  allowed values; it is returned in the taxonomy's spelling.

Otherwise the result lists every reason it is invalid, and the backend retries or falls back. The result
also gives the character span of each value in the text, for token-level confidences.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from json.decoder import scanstring
from typing import Any

from medfed.text.taxonomy import Taxonomy

_WS = re.compile(r"[ \t\n\r]*")


@dataclass(frozen=True)
class ParsedAnswer:
    """``values`` (label -> allowed value; empty unless valid), ``problems`` (empty when valid) and ``spans``
    (label -> ``(start, end)`` character span of its value string's contents in the answer text)."""

    values: dict[str, str]
    problems: list[str]
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def find_json_object(text: str) -> tuple[dict[str, Any], int, int] | None:
    """The first JSON object in ``text``: ``(object, start, end)`` with ``text[start:end]`` its source, or
    ``None``. Each ``{`` is tried in turn, so prose or code fences around the object do not matter."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            obj, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        return obj, start, end
    return None


def _top_level_duplicates(text: str, start: int) -> list[str]:
    seen: set[str] = set()
    dups: list[str] = []
    for key, _ in _walk_members(text, start):
        if key in seen and key not in dups:
            dups.append(key)
        seen.add(key)
    return dups


def _walk_members(text: str, start: int) -> list[tuple[str, tuple[int, int] | None]]:
    """Keys of the (already validated) JSON object at ``text[start]`` in order, each with the span of its
    value's string contents (``None`` for a non-string value)."""
    members: list[tuple[str, tuple[int, int] | None]] = []
    decoder = json.JSONDecoder()
    i = _WS.match(text, start + 1).end()
    if text[i] == "}":
        return members
    while True:
        key, i = scanstring(text, i + 1)
        i = _WS.match(text, i).end() + 1  # past ':'
        i = _WS.match(text, i).end()
        if text[i] == '"':
            _, j = scanstring(text, i + 1)
            members.append((key, (i + 1, j - 1)))
        else:
            _, j = decoder.raw_decode(text, i)
            members.append((key, None))
        i = _WS.match(text, j).end()
        if text[i] == "}":
            return members
        i = _WS.match(text, i + 1).end()  # past ','


def match_value(value: str, allowed: list[str]) -> str | None:
    """The allowed value equal to ``value`` ignoring case, else ``None``."""
    folded = value.casefold()
    return next((a for a in allowed if a.casefold() == folded), None)


def parse_answer(text: str, taxonomy: Taxonomy) -> ParsedAnswer:
    """Read ``text`` strictly against ``taxonomy`` (module docstring)."""
    found = find_json_object(text)
    if found is None:
        return ParsedAnswer({}, ["no JSON object found in the answer"])
    obj, start, _end = found
    duplicates = _top_level_duplicates(text, start)
    problems = [f"label {key!r} appears more than once" for key in duplicates]
    spans = {key: span for key, span in _walk_members(text, start) if span is not None}
    values: dict[str, str] = {}
    for name in taxonomy.names:
        allowed = taxonomy.allowed(name)
        if name not in obj:
            problems.append(f"label {name!r} is missing")
            continue
        value = obj[name]
        if not isinstance(value, str):
            problems.append(f"label {name!r}: value must be a string, got {json.dumps(value, ensure_ascii=False)}")
            continue
        matched = match_value(value, allowed)
        if matched is None:
            problems.append(f"label {name!r}: {value!r} is not one of {', '.join(allowed)}")
            continue
        values[name] = matched
    extra = [key for key in obj if key not in taxonomy.names]
    problems.extend(f"unexpected key {key!r} (not a label)" for key in extra)
    if problems:
        return ParsedAnswer({}, problems)
    return ParsedAnswer(values, [], {name: spans[name] for name in taxonomy.names})
