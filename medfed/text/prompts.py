"""MOSAIC-style prompts for the ``llm`` backend: pure functions from a taxonomy and a report to model input.

One user turn holds, in order (the MOSAIC recipe: zero/few-shot prompting of a compact open LLM such as
MedGemma-4B-it with the label list spelled out):

1. the instruction (classify every label, one allowed value each, any report language, answer in JSON);
2. the taxonomy: each label's name, its one-line definition, its allowed values and, where the taxonomy has
   them, its synonyms in the report's language; the meaning of the standard values;
3. optional few-shot examples: labelled reports with their gold JSON answer, chosen per report by
   :func:`select_examples` (seeded; same language first);
4. the report, between triple quotes;
5. the demand: one JSON object, exactly one key per label, each mapped to one of that label's values.

:func:`render` lays the conversation out with the tokenizer's chat template when it has one, else as plain
``### User`` / ``### Assistant`` blocks ending with an open assistant block. :func:`correction_messages`
appends the model's invalid answer and a short corrective user turn (the backend's single retry).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from medfed.seeding import rng_for
from medfed.text.base import Report
from medfed.text.taxonomy import Taxonomy

Message = dict[str, str]
#: a labelled report for few-shot prompting: the report and its gold value per label
Example = tuple[Report, Mapping[str, str]]

INSTRUCTION = (
    "You are an expert radiologist. Read the radiology report below and classify it for every label of the "
    "taxonomy. For each label choose exactly one of its allowed values. The report may be written in any "
    "language; always answer with the label names and the values exactly as written in the taxonomy."
)

#: what the standard values mean (shown for the values a taxonomy uses)
VALUE_MEANINGS: dict[str, str] = {
    "present": "the report states the finding",
    "absent": "the report explicitly rules the finding out",
    "uncertain": "the report says the finding is possible, suspected or cannot be excluded",
    "not_mentioned": "the report does not discuss the finding",
}

PLAIN_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}


def answer_json(taxonomy: Taxonomy, values: Mapping[str, str]) -> str:
    """The canonical answer: a one-line JSON object, one key per label in taxonomy order (the gold answer of
    few-shot examples and LoRA training)."""
    return json.dumps({name: values[name] for name in taxonomy.names}, ensure_ascii=False)


def answer_skeleton(taxonomy: Taxonomy) -> str:
    """The answer's shape with placeholders: ``{"Label": "<value>", ...}``."""
    return json.dumps({name: "<value>" for name in taxonomy.names}, ensure_ascii=False)


def describe_taxonomy(taxonomy: Taxonomy, language: str = "en") -> str:
    """Each label as ``- name: definition Allowed values: a, b.``, plus its synonyms in ``language``, then the
    meaning of the standard values the taxonomy uses."""
    lines = [f"Taxonomy '{taxonomy.name}' ({len(taxonomy.labels)} labels):"]
    for label in taxonomy.labels:
        line = f"- {label.name}: {label.definition.strip()} Allowed values: {', '.join(taxonomy.allowed(label.name))}."
        synonyms = label.synonyms.get(language)
        if synonyms:
            line += f" Also written ({language}): {', '.join(synonyms)}."
        lines.append(line)
    used = {v for name in taxonomy.names for v in taxonomy.allowed(name)}
    meanings = [f"{value} = {meaning}" for value, meaning in VALUE_MEANINGS.items() if value in used]
    if meanings:
        lines.append("Values: " + "; ".join(meanings) + ".")
    return "\n".join(lines)


def _quoted(report: Report) -> str:
    return f'Report (language: {report.language}):\n"""\n{report.text.strip()}\n"""'


def select_examples(report: Report, pool: Sequence[Example], k: int, seed: int = 0) -> list[Example]:
    """``k`` labelled examples for ``report``: those in its language first, then the others, each group in a
    seeded order that depends only on ``(seed, report_id)``; the report itself is never its own example."""
    if k <= 0:
        return []
    candidates = [ex for ex in pool if ex[0].report_id != report.report_id]
    rng = rng_for(seed, "few-shot", report.report_id)
    order = rng.permutation(len(candidates))
    same = [candidates[i] for i in order if candidates[i][0].language == report.language]
    other = [candidates[i] for i in order if candidates[i][0].language != report.language]
    return (same + other)[:k]


def build_messages(taxonomy: Taxonomy, report: Report, examples: Sequence[Example] = ()) -> list[Message]:
    """The conversation for ``report``: one user turn (module docstring)."""
    parts = [INSTRUCTION, describe_taxonomy(taxonomy, report.language)]
    for i, (example, values) in enumerate(examples, start=1):
        parts.append(f"Example {i}. {_quoted(example)}\nAnswer: {answer_json(taxonomy, values)}")
    parts.append(_quoted(report))
    parts.append(
        f"Answer with one JSON object and nothing else. It must have exactly one key per label "
        f"({', '.join(taxonomy.names)}), each mapped to one of that label's allowed values: "
        f"{answer_skeleton(taxonomy)}"
    )
    return [{"role": "user", "content": "\n\n".join(parts)}]


def correction_messages(
    messages: Sequence[Message], answer: str, problems: Sequence[str], taxonomy: Taxonomy, max_problems: int = 3,
) -> list[Message]:
    """``messages`` + the model's invalid ``answer`` + a short corrective user turn naming what was wrong."""
    shown = list(problems[:max_problems]) + ([f"and {len(problems) - max_problems} more"]
                                              if len(problems) > max_problems else [])
    correction = (
        f"That answer is not valid: {'; '.join(shown)}. Reply with only one JSON object with exactly these keys: "
        f"{', '.join(taxonomy.names)}; each value must be one of that label's allowed values."
    )
    return [*messages, {"role": "assistant", "content": answer}, {"role": "user", "content": correction}]


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None)) and hasattr(tokenizer, "apply_chat_template")


def render(messages: Sequence[Message], tokenizer: Any = None) -> str:
    """The prompt text with an open assistant turn: the tokenizer's chat template when it has one
    (``add_generation_prompt=True``), else plain ``### Role`` blocks ending with ``### Assistant``."""
    if tokenizer is not None and has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    blocks = [f"### {PLAIN_ROLES.get(m['role'], m['role'].title())}\n{m['content']}\n" for m in messages]
    return "\n".join(blocks) + "\n### Assistant\n"


def build_prompt(
    taxonomy: Taxonomy, report: Report, tokenizer: Any = None, examples: Sequence[Example] = (),
) -> str:
    """:func:`build_messages` rendered by :func:`render`."""
    return render(build_messages(taxonomy, report, examples), tokenizer)
