"""The ``rules`` backend: negation- and uncertainty-aware keyword matching from the taxonomy's synonyms.

A CheXpert-labeller-style baseline (Irvin et al. 2019; negation scopes after NegEx, Chapman et al. 2001):

1. the report is split into clauses at sentence ends, semicolons and contrastive conjunctions
   ("but", "however", "pero", "sin embargo", "mais", "men", ...), so a cue never crosses into the next clause;
2. a label is *mentioned* in a clause when one of its synonyms (for the report's language, else every
   language's) occurs as whole words, matched case- and accent-insensitively;
3. a mention is *uncertain* when an uncertainty cue of the language occurs in the clause before it ("possible",
   "cannot be excluded", "no se descarta", ...; checked first, since some contain a negation word), *negated*
   when a negation cue occurs at most :data:`NEGATION_WINDOW` words before it ("no", "without", "sin", "pas de",
   "ingen", ...), else *positive*;
4. per label over all its mentions: positive beats uncertain beats negated; no mention is ``not_mentioned``.

Values follow the taxonomy: uncertain becomes ``uncertain`` where allowed, else the ``uncertain_as`` option
(default ``present``, CheXpert's U-Ones policy); negated becomes ``absent``; not mentioned becomes
``not_mentioned`` where allowed, else ``absent``. Confidences are fixed per outcome (:data:`CONFIDENCE`), a
ranking aid, not a calibrated probability.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import pandas as pd

from medfed.text.base import Report, ReportBackend, prediction_frame
from medfed.text.taxonomy import Taxonomy

#: negation cues per language (lower case, accents stripped when matched)
NEGATION_CUES: dict[str, tuple[str, ...]] = {
    "en": ("no", "not", "without", "absence of", "absent", "negative for", "free of", "clear of", "resolved",
           "no evidence of", "no signs of", "rather than", "removed"),
    "es": ("no", "sin", "ausencia de", "negativo para", "libre de", "no hay", "no se observa", "no se observan",
           "no se aprecia", "no se aprecian", "descartado", "resuelto", "resuelta"),
    "fr": ("pas de", "pas d", "sans", "absence de", "aucun", "aucune", "ni", "non", "negatif pour"),
    "da": ("ingen", "ikke", "uden", "ej", "intet", "negativ for"),
}
#: uncertainty cues per language
UNCERTAINTY_CUES: dict[str, tuple[str, ...]] = {
    "en": ("possible", "possibly", "may", "might", "probable", "probably", "likely", "suspicious for", "suspected",
           "cannot be excluded", "cannot exclude", "can not be excluded", "not excluded", "questionable",
           "suggest", "suggests", "suggestive of", "versus", "borderline", "equivocal", "concern for",
           "could represent", "differential"),
    "es": ("posible", "posiblemente", "probable", "probablemente", "sugestivo de", "sugiere", "sugieren",
           "no se descarta", "no se puede descartar", "no descartar", "dudoso", "dudosa", "sospecha de",
           "sospechoso de", "a descartar", "valorar", "indeterminado",
           # PadChest ships its Spanish reports stemmed (Bustos et al. 2020): the stems of the cues above
           "posibl", "probabl", "sugest", "sugier", "no descart", "descart", "dudos", "sospech", "indetermin"),
    "fr": ("possible", "probable", "evoquant", "suspicion de", "douteux", "douteuse", "a exclure",
           "ne peut etre exclu", "ne peut etre exclue", "eventuel", "eventuelle"),
    "da": ("mulig", "muligvis", "sandsynlig", "sandsynligvis", "suspekt", "kan ikke udelukkes", "tvivlsom",
           "formentlig"),
}
#: clause boundaries besides punctuation
CLAUSE_BREAKS: tuple[str, ...] = ("but", "however", "although", "pero", "sin embargo", "aunque", "mais",
                                  "cependant", "men", "dog")
#: words between a negation cue and the mention it can still negate
NEGATION_WINDOW = 6
CONFIDENCE = {"positive": 0.9, "negated": 0.9, "uncertain": 0.5, "not_mentioned": 0.6}


def normalise(text: str) -> str:
    """Lower case, accents stripped, non-alphanumerics as single spaces (so matching is on whole words)."""
    text = unicodedata.normalize("NFKD", text.casefold())
    text = "".join(c for c in text if not unicodedata.combining(c))
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text).split())


def clauses(text: str) -> list[str]:
    """Normalised clauses: split at sentence ends, ``;``, ``:`` and newlines, then at contrastive conjunctions."""
    parts = re.split(r"[.;:!?\n]+", text)
    breaks = re.compile(r"\b(?:" + "|".join(re.escape(b) for b in CLAUSE_BREAKS) + r")\b")
    return [c for part in parts for piece in breaks.split(normalise(part)) if (c := piece.strip())]


def _phrase_pattern(phrases: Sequence[str]) -> re.Pattern[str] | None:
    words = sorted({normalise(p) for p in phrases if normalise(p)}, key=len, reverse=True)
    return re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b") if words else None


class RulesBackend(ReportBackend):
    """Keyword matching with negation and uncertainty scopes (module docstring)."""

    name = "rules"

    def __init__(self, taxonomy: Taxonomy, uncertain_as: str = "present") -> None:
        super().__init__(taxonomy)
        self.uncertain_as = uncertain_as
        self._synonyms: dict[tuple[str, str], re.Pattern[str] | None] = {}
        self._negation = {lang: _phrase_pattern(cues) for lang, cues in NEGATION_CUES.items()}
        self._uncertainty = {lang: _phrase_pattern(cues) for lang, cues in UNCERTAINTY_CUES.items()}
        self._all_negation = _phrase_pattern([c for cues in NEGATION_CUES.values() for c in cues])
        self._all_uncertainty = _phrase_pattern([c for cues in UNCERTAINTY_CUES.values() for c in cues])

    def _pattern(self, label: str, language: str) -> re.Pattern[str] | None:
        key = (label, language)
        if key not in self._synonyms:
            spec = self.taxonomy.label(label)
            words = spec.synonyms.get(language) or [w for ws in spec.synonyms.values() for w in ws] or [spec.name]
            self._synonyms[key] = _phrase_pattern([*words, spec.name] if language == "en" else words)
        return self._synonyms[key]

    def outcome(self, report: Report, label: str) -> str:
        """``positive``, ``uncertain``, ``negated`` or ``not_mentioned`` for one label of one report."""
        pattern = self._pattern(label, report.language)
        negation = self._negation.get(report.language, self._all_negation)
        uncertainty = self._uncertainty.get(report.language, self._all_uncertainty)
        found: set[str] = set()
        for clause in clauses(report.text) if pattern is not None else []:
            for match in pattern.finditer(clause):
                before = clause[:match.start()]
                if uncertainty is not None and uncertainty.search(before):
                    found.add("uncertain")
                elif negation is not None and any(
                    len(before[m.end():].split()) <= NEGATION_WINDOW for m in negation.finditer(before)
                ):
                    found.add("negated")
                else:
                    found.add("positive")
        for outcome in ("positive", "uncertain", "negated"):
            if outcome in found:
                return outcome
        return "not_mentioned"

    def value(self, label: str, outcome: str) -> str:
        """The taxonomy value of an outcome under the module's policy."""
        allowed = self.taxonomy.allowed(label)
        positive = next((v for v in allowed if self.taxonomy.is_positive(v)), allowed[0])
        absent = "absent" if "absent" in allowed else allowed[-1]
        if outcome == "positive":
            return positive
        if outcome == "uncertain":
            uncertain = next((v for v in allowed if v in self.taxonomy.uncertain), None)
            if uncertain is not None:
                return uncertain
            return positive if self.uncertain_as == "present" else absent
        if outcome == "negated":
            return absent
        return "not_mentioned" if "not_mentioned" in allowed else absent

    def predict(self, reports: Sequence[Report]) -> pd.DataFrame:
        values, confidences = [], []
        for report in reports:
            outcomes = {label: self.outcome(report, label) for label in self.taxonomy.names}
            values.append({label: self.value(label, o) for label, o in outcomes.items()})
            confidences.append({label: CONFIDENCE[o] for label, o in outcomes.items()})
        return prediction_frame(self.taxonomy, [r.report_id for r in reports], values, confidences)
