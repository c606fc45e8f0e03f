"""The ``llm`` report backend: prompts, strict answer parsing, generation with retry and fallback, LoRA
fine-tuning and federated LoRA where only adapter tensors travel. Runs on a tiny random-weight Llama and a
locally trained tokenizer (tests/text_tiny_llm.py); nothing is downloaded."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

import torch
from text_tiny_llm import build_tiny_llm, tiny_reports, tiny_taxonomy

from medfed.errors import MedfedError
from medfed.fl.strategies import FedAvg, build_strategy
from medfed.text.base import CONFIDENCE_SUFFIX, STATUSES, Report, fallback_value
from medfed.text.llm import LLMBackend, attention_projections
from medfed.text.llm_federated import (
    federated_lora,
    flatten_adapters,
    unflatten_adapters,
)
from medfed.text.parsing import parse_answer
from medfed.text.prompts import (
    answer_json,
    build_messages,
    build_prompt,
    correction_messages,
    render,
    select_examples,
)

TAXONOMY = tiny_taxonomy()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's matrices are 32 wide: one thread avoids intra-op thread hand-offs that, on a busy
    2-core machine, cost milliseconds per matmul; the previous setting is restored."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llm(tmp_path_factory.mktemp("tiny_llm"))


def make_backend(model_dir: Path, **options) -> LLMBackend:
    defaults = {"device": "cpu", "max_new_tokens": 12, "lora_dropout": 0.0, "lora_r": 4}
    return LLMBackend(TAXONOMY, model_dir, **{**defaults, **options})


def base_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Non-adapter parameters under their original (pre-PEFT) names."""
    out = {}
    for name, param in model.named_parameters():
        if "lora_" in name:
            continue
        name = name.removeprefix("base_model.model.").replace(".base_layer", "")
        out[name] = param.detach().clone()
    return out


def assert_same_weights(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> None:
    assert before.keys() == after.keys()
    for name, tensor in before.items():
        assert torch.equal(tensor, after[name]), name


# ---------------------------------------------------------------------- prompts
def test_prompt_holds_definitions_values_report_and_demand(model_dir):
    reports, _ = tiny_reports()
    backend = make_backend(model_dir)
    for tokenizer in (None, backend.tokenizer):
        prompt = build_prompt(TAXONOMY, reports[2], tokenizer)
        for label in TAXONOMY.labels:
            assert label.definition in prompt
            assert f"Allowed values: {', '.join(TAXONOMY.allowed(label.name))}." in prompt
            assert ", ".join(label.synonyms["es"]) in prompt  # the report's language's synonyms
        assert reports[2].text in prompt
        assert "exactly one key per label" in prompt and '{"Cardiomegaly": "<value>", "Effusion": "<value>"}' in prompt
    assert build_prompt(TAXONOMY, reports[0]).endswith("### Assistant\n")  # plain layout without a tokenizer
    chat = build_prompt(TAXONOMY, reports[0], backend.tokenizer)
    assert chat.startswith("<|user|>\n") and chat.endswith("<|assistant|>\n")  # the tokenizer's chat template


def test_few_shot_examples_same_language_first_seeded_never_the_report():
    reports, targets = tiny_reports()
    pool = [(r, {n: targets.loc[i, n] for n in TAXONOMY.names}) for i, r in enumerate(reports)]
    chosen = select_examples(reports[2], pool, 3, seed=1)  # r3 (es): r4 (es) first, then the English ones
    assert chosen[0][0].report_id == "r4"
    assert {ex[0].report_id for ex in chosen} == {"r1", "r2", "r4"}
    assert select_examples(reports[2], pool, 3, seed=1) == chosen
    orders = {tuple(e[0].report_id for e in select_examples(reports[2], pool, 3, seed=s)) for s in range(20)}
    assert len(orders) == 2  # the seed orders the English ones; r4 always first
    assert select_examples(reports[2], pool, 0) == []
    content = build_messages(TAXONOMY, reports[2], chosen[:1])[0]["content"]
    assert "Example 1." in content and answer_json(TAXONOMY, pool[3][1]) in content


def test_correction_turn_is_appended():
    reports, _ = tiny_reports()
    messages = build_messages(TAXONOMY, reports[0])
    again = correction_messages(messages, "nonsense", ["no JSON object found in the answer"], TAXONOMY)
    assert again[:1] == messages and [m["role"] for m in again] == ["user", "assistant", "user"]
    assert again[1]["content"] == "nonsense" and "no JSON object found" in again[2]["content"]
    assert render(again).count("### User") == 2


# ---------------------------------------------------------------------- parsing
def test_parse_valid_and_fenced_json_case_insensitively():
    text = '{"Cardiomegaly": "Present", "Effusion": "absent"}'
    parsed = parse_answer(text, TAXONOMY)
    assert parsed.ok and parsed.values == {"Cardiomegaly": "present", "Effusion": "absent"}
    assert [text[a:b] for a, b in parsed.spans.values()] == ["Present", "absent"]
    fenced = 'Here you go:\n```json\n{"Effusion": "PRESENT", "Cardiomegaly": "not_mentioned"}\n```\nDone.'
    parsed = parse_answer(fenced, TAXONOMY)
    assert parsed.ok and parsed.values == {"Cardiomegaly": "not_mentioned", "Effusion": "present"}
    # the first JSON object counts; a later one is ignored
    assert parse_answer('{"Cardiomegaly": "absent", "Effusion": "absent"} {"x": 1}', TAXONOMY).ok


@pytest.mark.parametrize(("text", "reason"), [
    ('{"Cardiomegaly": "yes", "Effusion": "absent"}', "'yes' is not one of present, absent, uncertain"),
    ('{"Cardiomegaly": "present", "Effusion": "uncertain"}', "'uncertain' is not one of present, absent"),
    ('{"Cardiomegaly": "present"}', "label 'Effusion' is missing"),
    ("The heart is enlarged.", "no JSON object found"),
    ('{"Cardiomegaly": "present", "Effusion": ', "no JSON object found"),
    ("", "no JSON object found"),
    ('{"Cardiomegaly": "present", "Effusion": "absent", "Edema": "absent"}', "unexpected key 'Edema'"),
    ('{"Cardiomegaly": "present", "Cardiomegaly": "absent", "Effusion": "absent"}', "appears more than once"),
    ('{"Cardiomegaly": true, "Effusion": "absent"}', "value must be a string, got true"),
    ('{"Cardiomegaly": " present", "Effusion": "absent"}', "' present' is not one of"),  # no trimming
    ('{"cardiomegaly": "present", "Effusion": "absent"}', "label 'Cardiomegaly' is missing"),  # keys exact
    ('["present", "absent"]', "no JSON object found"),
])
def test_parse_rejects_with_reasons(text, reason):
    parsed = parse_answer(text, TAXONOMY)
    assert not parsed.ok and parsed.values == {}
    assert any(reason in problem for problem in parsed.problems), parsed.problems


def test_parse_lists_every_problem():
    parsed = parse_answer('{"Cardiomegaly": "maybe", "Other": "x"}', TAXONOMY)
    assert len(parsed.problems) == 3  # unknown value, missing Effusion, unexpected key


# ---------------------------------------------------------------------- loading
def test_missing_packages_and_model_are_clear_errors(model_dir, tmp_path, monkeypatch):
    with pytest.raises(MedfedError, match="is not a directory"):
        LLMBackend(TAXONOMY, tmp_path / "nowhere")
    with pytest.raises(MedfedError, match="config.json is missing"):
        LLMBackend(TAXONOMY, tmp_path)
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft now raises ImportError
    with pytest.raises(MedfedError, match=r"needs peft.*pip install medfed\[llm\]"):
        LLMBackend(TAXONOMY, model_dir)


def test_attention_projections_are_the_default_lora_targets(model_dir):
    backend = make_backend(model_dir)
    assert attention_projections(backend.model) == ["k_proj", "o_proj", "q_proj", "v_proj"]


# ---------------------------------------------------------------------- prediction
def test_tiny_model_end_to_end_garbage_is_unparsable_after_one_retry(model_dir):
    reports, _ = tiny_reports()
    backend = make_backend(model_dir, batch_size=3)
    calls = []
    generate = backend.model.generate
    backend.model.generate = lambda **kw: calls.append(kw["input_ids"].shape[0]) or generate(**kw)
    frame = backend.predict(reports)
    assert list(frame["report_id"]) == [r.report_id for r in reports]
    assert list(frame.columns) == ["report_id", "status", *(c for n in TAXONOMY.names
                                                           for c in (n, n + CONFIDENCE_SUFFIX))]
    assert set(frame["status"]) <= set(STATUSES)
    bad = frame[frame["status"] == "unparsable"]
    assert len(bad) > 0  # random weights answer garbage
    for _, row in bad.iterrows():
        for name in TAXONOMY.names:
            assert row[name] == fallback_value(TAXONOMY, name) and row[name + CONFIDENCE_SUFFIX] == 0.0
    runs = {run["report_id"]: run for run in backend.last_run}
    for report_id in bad["report_id"]:
        assert runs[report_id]["attempts"] == 2 and len(runs[report_id]["problems"]) == 2
    # batches of 3: 2 calls for the first attempt, then the retries of the unparsable ones
    assert calls[:2] == [3, 1] and sum(calls[2:]) == len(bad)
    again = make_backend(model_dir, retries=0).predict(reports)
    assert len(again) == 4  # no retry: one attempt each, still no crash


def fake_generate(backend: LLMBackend, answers: list[list[str]], calls: list):
    """A ``generate`` returning ``answers[call][row]`` with logits giving each chosen token probability 0.5."""
    vocab = backend.model.config.vocab_size
    eos = backend._eos_ids[0]

    def generate(input_ids, attention_mask, generation_config):
        texts = answers[len(calls)]
        calls.append(input_ids)
        assert len(texts) == input_ids.shape[0]
        ids = [backend.tokenizer(t, add_special_tokens=False)["input_ids"] + [eos] for t in texts]
        width = max(len(i) for i in ids)
        new = torch.tensor([i + [eos] * (width - len(i)) for i in ids])
        logits = []
        for step in range(width):
            scores = torch.zeros(len(texts), vocab)
            scores[torch.arange(len(texts)), new[:, step]] = math.log(vocab - 1)  # softmax: 0.5 on the token
            logits.append(scores)
        return SimpleNamespace(sequences=torch.cat([input_ids, new], 1), logits=tuple(logits))

    return generate


def test_invalid_answer_then_valid_retry_is_ok_with_token_confidence(model_dir):
    reports, _ = tiny_reports()
    backend = make_backend(model_dir)
    good = json.dumps({"Cardiomegaly": "present", "Effusion": "Absent"})
    calls: list = []
    backend.model.generate = fake_generate(backend, [
        ["{not json", good, "Sure: {\"Cardiomegaly\": \"big\"}"],  # first attempt: 2 invalid, 1 valid
        ["```json\n" + good + "\n```", "still nothing"],  # the retry of reports 1 and 3
    ], calls)
    frame = backend.predict(reports[:3])
    assert list(frame["status"]) == ["ok", "ok", "unparsable"]
    assert frame.loc[0, "Cardiomegaly"] == "present" and frame.loc[0, "Effusion"] == "absent"
    assert frame.loc[0, "Cardiomegaly__confidence"] == pytest.approx(0.5)
    assert frame.loc[1, "Effusion__confidence"] == pytest.approx(0.5)
    assert frame.loc[2, "Cardiomegaly"] == "not_mentioned" and frame.loc[2, "Effusion"] == "absent"
    assert [run["attempts"] for run in backend.last_run] == [2, 1, 2]
    assert len(calls) == 2 and calls[1].shape[0] == 2
    retry_prompt = backend.tokenizer.decode(calls[1][0])
    assert "{not json" in retry_prompt and "That answer is not valid: no JSON object found" in retry_prompt


# ---------------------------------------------------------------------- LoRA
def test_lora_fit_trains_only_adapters_lowers_loss_and_is_seeded(model_dir):
    reports, targets = tiny_reports()
    backend = make_backend(model_dir, learning_rate=1e-2, max_steps=8, train_batch_size=4, few_shot=1)
    before = base_weights(backend.model)
    loss_before = backend.answer_loss(reports, targets)
    rng_before = torch.random.get_rng_state()
    backend.fit(reports, targets)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # global RNG left alone
    trainable = [n for n, p in backend.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert_same_weights(before, base_weights(backend.model))  # bitwise unchanged
    loss_after = backend.answer_loss(reports, targets)
    assert loss_after < loss_before - 0.1, (loss_before, loss_after)
    assert backend.train_history[-1]["steps"] == 8 and len(backend.examples) == 4
    twin = make_backend(model_dir, learning_rate=1e-2, max_steps=8, train_batch_size=4).fit(reports, targets)
    for (name, a), b in zip(backend.adapter_state_dict().items(), twin.adapter_state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert len(backend.predict(reports[:2])) == 2  # the adapted model still predicts (few-shot from fit)


def test_adapter_vector_round_trip(model_dir):
    backend = make_backend(model_dir)
    state = backend.adapter_state_dict()
    vector, layout = flatten_adapters(state)
    assert vector.size == sum(t.numel() for t in state.values())
    back = unflatten_adapters(vector, layout)
    assert all(torch.equal(back[n], state[n].float()) for n in state)
    with pytest.raises(ValueError):
        unflatten_adapters(vector[:-1], layout)


class RecordingFedAvg(FedAvg):
    """FedAvg that keeps a copy of every update it averages."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, str, np.ndarray, int]] = []
        self.round = 0

    def aggregate(self, global_weights, updates, state):
        self.round += 1

        def tap():
            for update in updates:
                self.seen.append((self.round, update.site, update.weights.copy(), update.num_examples))
                yield update

        return super().aggregate(global_weights, tap(), state)


def test_federated_lora_sends_only_adapters_and_fedavg_is_the_weighted_mean(model_dir):
    reports, targets = tiny_reports()
    sites = {"hospital_a": (reports[:3], targets.iloc[:3]), "hospital_b": ([reports[3]], targets.iloc[3:])}
    backend = make_backend(model_dir, learning_rate=1e-2, train_batch_size=2)
    before = base_weights(backend.model)
    strategy = RecordingFedAvg()
    log = federated_lora(sites, backend, strategy, rounds=2, local_steps=2, seed=3)
    assert_same_weights(before, base_weights(backend.model))
    lora = {n: p for n, p in backend.model.named_parameters() if "lora_" in n}
    size = sum(p.numel() for p in lora.values())
    assert len(log) == 2
    for record in log:
        assert record["floats_per_model"] == size
        assert record["floats_up"] == {"hospital_a": size, "hospital_b": size} == record["floats_down"]
        assert record["bytes_total"] == 4 * 4 * size  # 2 sites, both directions, float32
        assert len(record["adapter_tensors"]) == len(lora) and all("lora_" in n for n in record["adapter_tensors"])
        assert record["num_examples"] == {"hospital_a": 3, "hospital_b": 1}
        assert record["aggregation"]["clients"] == 2
    last = [(site, w, n) for rnd, site, w, n in strategy.seen if rnd == 2]
    assert [(s, n) for s, _, n in last] == [("hospital_a", 3), ("hospital_b", 1)]
    expected = (3 * last[0][1].astype(np.float64) + 1 * last[1][1]) / 4  # by hand
    final, _ = flatten_adapters(backend.adapter_state_dict())
    np.testing.assert_allclose(final, expected, rtol=1e-6, atol=1e-7)
    assert not np.allclose(last[0][1], last[1][1])  # the sites did train differently


def test_federated_lora_other_strategies(model_dir):
    reports, targets = tiny_reports()
    sites = {"a": (reports[:2], targets.iloc[:2]), "b": (reports[2:], targets.iloc[2:])}
    backend = make_backend(model_dir, learning_rate=1e-2)
    log = federated_lora(sites, backend, build_strategy("fedprox", {"proximal_mu": 0.1}), rounds=1, local_steps=1)
    assert log[0]["aggregation"]["clients"] == 2
    with pytest.raises(MedfedError, match="needs the full model"):
        federated_lora(sites, backend, build_strategy("fedbn"), rounds=1, local_steps=1)
    with pytest.raises(MedfedError, match="pools"):
        federated_lora(sites, backend, build_strategy("centralised"), rounds=1, local_steps=1)


def test_reports_in_other_languages_are_accepted(model_dir):
    backend = make_backend(model_dir, retries=0, max_new_tokens=4)
    frame = backend.predict([Report("x1", "Derrame pleural derecho.", "es"), Report("x2", "Épanchement.", "fr")])
    assert list(frame["report_id"]) == ["x1", "x2"]
