"""Keeping paths and source ids out of messages that leave a site.

A message about a case can reach shared outputs (``rounds.jsonl``, checkpoints, the console, metrics); it
names the site, the hashed case id and the file's role (``t1``, ``seg``, ``image``), never a path or a
subject id. Readers map known library errors to fixed reasons; :func:`scrub_message` is the safety net for
any other text: it hides the site's root, the case's paths, their file names and the source id
(:meth:`medfed.sites.base.Site.private_texts`), puts the text on one line and cuts it to
:data:`MESSAGE_LIMIT` characters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from medfed.errors import MedfedError

#: an error message that may leave a site (round log, checkpoint, console) is cut after this many characters:
#: library messages can quote whole tensors
MESSAGE_LIMIT = 300
#: what :func:`scrub_message` puts where a path, file name or source id was
HIDDEN = "<hidden>"


def path_variants(path: Path | str, name: bool = True) -> list[str]:
    """The spellings of a path a library message may quote: as given, POSIX, resolved, and (``name``) its file
    name (a folder's own name is often a common word, so roots are passed with ``name=False``)."""
    text = str(path)
    if not text:
        return []
    variants = [text, Path(text).as_posix(), *([Path(text).name] if name else [])]
    try:
        variants.append(str(Path(text).resolve()))
    except (OSError, RuntimeError):
        pass
    return variants


def scrub_message(text: str, secrets: Iterable[str], limit: int | None = MESSAGE_LIMIT) -> str:
    """``text`` on one line with every occurrence of a secret (a path, file name or source id) replaced by
    :data:`HIDDEN`, then cut to ``limit`` characters.

    A secret matches where it is not part of a longer word (``BraTS_001`` is hidden in ``BraTS_001_t1.nii.gz``,
    not in ``BraTS_0012``); longer secrets are replaced first, so a whole path goes before its folder.
    """
    words = sorted({s for s in secrets if s and len(s) >= 2}, key=len, reverse=True)
    if words:
        pattern = "|".join(re.escape(w) for w in words)
        text = re.sub(rf"(?<![A-Za-z0-9])(?:{pattern})(?![A-Za-z0-9])", HIDDEN, text)
    text = " ".join(text.split())
    if limit is not None and len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def error_text(err: BaseException, secrets: Iterable[str] = (), limit: int | None = MESSAGE_LIMIT) -> str:
    """``"Type: message"`` of an exception, scrubbed of ``secrets`` and cut (:func:`scrub_message`)."""
    return scrub_message(f"{type(err).__name__}: {err}", secrets, limit)


class CaseLoadError(MedfedError):
    """One file of a case cannot be loaded. ``role`` names the file (``t1``, ``seg``, ``image``) and ``reason``
    says why without any path or source id; the site's loader adds the site and hashed case id."""

    def __init__(self, role: str, reason: str) -> None:
        self.role, self.reason = role, reason
        super().__init__(f"{role} file: {reason}")
