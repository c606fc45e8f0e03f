"""Taxonomy files and the rules backend (negation and uncertainty scopes, several languages)."""

from __future__ import annotations

import pytest
import yaml

from medfed.errors import ConfigError
from medfed.text.base import Report
from medfed.text.rules import RulesBackend, clauses, normalise
from medfed.text.taxonomy import load_taxonomy

TAXONOMY = {
    "name": "tiny",
    "labels": [
        {"name": "Effusion", "definition": "Fluid in the pleural space.",
         "synonyms": {"en": ["pleural effusion", "effusion"], "es": ["derrame pleural", "derrame"],
                      "fr": ["epanchement pleural"], "da": ["pleuraeffusion"]}},
        {"name": "Cardiomegaly", "definition": "Enlarged cardiac silhouette.",
         "synonyms": {"en": ["cardiomegaly", "enlarged heart"], "es": ["cardiomegalia"]}},
    ],
}


@pytest.fixture()
def taxonomy(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(TAXONOMY))
    return load_taxonomy(path)


def test_taxonomy_errors_are_listed_together(tmp_path):
    bad = {"name": "bad", "positive": ["yes"], "labels": [
        {"name": "Effusion", "definition": "Fluid."}, {"name": "effusion ", "definition": "  "},
        {"name": "Mass", "definition": "A lump.", "values": []}]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError) as err:
        load_taxonomy(path)
    text = str(err.value)
    assert str(path) in text and "4 problem(s)" in text
    for expected in ("duplicate label name (also labels[0])", "labels[1] ('effusion '): empty definition",
                     "labels[2] ('Mass'): values must be a non-empty list", "positive: yes not among values"):
        assert expected in text
    path.write_text(yaml.safe_dump({"name": "x", "labels": [{"name": "A"}]}))
    with pytest.raises(ConfigError, match="labels.0.definition"):
        load_taxonomy(path)


def test_normalise_and_clauses():
    assert normalise("Derrame PLEURAL, neumotórax!") == "derrame pleural neumotorax"
    assert clauses("No effusion; heart enlarged. Stable, but new opacity") == [
        "no effusion", "heart enlarged", "stable", "new opacity"]


@pytest.mark.parametrize(("text", "language", "effusion", "cardiomegaly"), [
    ("Small right pleural effusion. Heart size normal.", "en", "present", "not_mentioned"),
    ("No pleural effusion. Cardiomegaly.", "en", "absent", "present"),
    ("Possible small effusion. No cardiomegaly.", "en", "uncertain", "absent"),
    ("Effusion cannot be excluded.", "en", "present", "not_mentioned"),  # cue after the mention: not scoped
    ("No pneumothorax, but there is a pleural effusion.", "en", "present", "not_mentioned"),
    ("Sin derrame pleural. Cardiomegalia.", "es", "absent", "present"),
    ("No se descarta derrame pleural.", "es", "uncertain", "not_mentioned"),
    ("No se observa cardiomegalia ni derrame.", "es", "absent", "absent"),
    ("Pas d'épanchement pleural.", "fr", "absent", "not_mentioned"),
    ("Ingen pleuraeffusion.", "da", "absent", "not_mentioned"),
])
def test_rules_outcomes(taxonomy, text, language, effusion, cardiomegaly):
    frame = RulesBackend(taxonomy).predict([Report("r1", text, language)])
    assert frame.loc[0, "Effusion"] == effusion and frame.loc[0, "Cardiomegaly"] == cardiomegaly
    assert frame.loc[0, "status"] == "ok"


def test_negation_window_and_value_policy(taxonomy, tmp_path):
    far = "No acute osseous abnormality is seen in the visualised thoracic spine and there is an effusion."
    assert RulesBackend(taxonomy).outcome(Report("r", far), "Effusion") == "positive"  # cue too far away
    two_valued = {**TAXONOMY, "values": ["present", "absent"], "uncertain": []}
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(two_valued))
    binary = load_taxonomy(path)
    report = [Report("r", "Possible effusion.")]
    assert RulesBackend(binary).predict(report).loc[0, "Effusion"] == "present"  # U-Ones
    assert RulesBackend(binary, uncertain_as="absent").predict(report).loc[0, "Effusion"] == "absent"
    assert RulesBackend(binary).predict(report).loc[0, "Cardiomegaly"] == "absent"  # not mentioned
