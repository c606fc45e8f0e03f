"""The ``llm`` backend: a local Hugging Face causal LM prompted MOSAIC-style, with optional LoRA fine-tuning.

MOSAIC's recipe with a compact open model (e.g. MedGemma-4B-it): the taxonomy, optional few-shot examples
and the report go into one prompt (:mod:`medfed.text.prompts`); the model answers a JSON object, read
strictly (:mod:`medfed.text.parsing`); light LoRA fine-tuning on labelled reports (:meth:`LLMBackend.fit`,
``peft``) adapts it to a site's taxonomy and language. Everything runs inside the site: the model is read
from a local directory only (``local_files_only=True``, nothing is downloaded).

Prediction
    greedy decoding (``do_sample=False``, one beam: deterministic); prompts are batched ``batch_size`` at a
    time, left-padded. An answer that is not valid (no JSON object, a missing label, a value the label does
    not allow, ...) is retried ``retries`` times (default once) with the invalid answer and a short
    correction appended to the conversation; if still invalid the report gets status ``unparsable``, every
    label its :func:`~medfed.text.base.fallback_value` and confidence 0. Parse failures never raise.
    :attr:`LLMBackend.last_run` keeps, per report, the number of attempts, each failed attempt's problems and
    the last raw answer.

Confidence
    the mean probability, under the model, of the generated tokens that spell a label's value (softmax of
    the raw logits at each decoding step, taken at the chosen token; tokens located by decoding the answer
    prefix by prefix). It is 1.0 when this cannot be computed: the model returned no logits, or the value's
    tokens could not be located in the decoded text.

Fine-tuning (:meth:`LLMBackend.fit`)
    LoRA adapters (``peft``) on ``target_modules`` (default: the attention projections found in the model,
    see :func:`attention_projections`), trained with AdamW on ``zero-shot prompt + gold JSON + end-of-sequence``
    with the loss on the answer tokens only (prompt and padding labels are -100). Base weights are frozen and
    stay bitwise unchanged. Seeded: adapter initialisation, batch order and dropout draw from
    ``(seed, ...)`` streams, the global torch RNG is left as it was. The labelled reports also become the
    few-shot pool when ``few_shot > 0``. :mod:`medfed.text.llm_federated` trains the adapters federatedly.
"""

from __future__ import annotations

import copy
import importlib
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import torch
from torch import nn

from medfed.errors import ConfigError, MedfedError
from medfed.seeding import derive_seed, rng_for
from medfed.text.base import Report, ReportBackend, fallback_value, prediction_frame
from medfed.text.parsing import ParsedAnswer, match_value, parse_answer
from medfed.text.prompts import (
    Example,
    Message,
    answer_json,
    build_messages,
    correction_messages,
    has_chat_template,
    render,
    select_examples,
)
from medfed.text.taxonomy import Taxonomy

INSTALL_HINT = "pip install medfed[llm]"
IGNORE_INDEX = -100
_ATTENTION = re.compile(r"attn|attention", re.IGNORECASE)
_VISION = re.compile(r"vision|visual", re.IGNORECASE)


def require_llm_packages() -> tuple[Any, Any]:
    """``(transformers, peft)``; a :class:`MedfedError` naming the missing ones and the install command."""
    modules, missing = [], []
    for name in ("transformers", "peft"):
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            missing.append(name)
    if missing:
        raise MedfedError(f"the llm backend needs {' and '.join(missing)}, not installed: {INSTALL_HINT}")
    return modules[0], modules[1]


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"  # GPT-2's linear layer


def attention_projections(model: nn.Module) -> list[str]:
    """LoRA targets: the linear layers inside attention blocks (a path part containing ``attn``/``attention``),
    e.g. ``q_proj, k_proj, v_proj, o_proj`` for Llama/Gemma. Vision-tower layers (``vision``/``visual`` in the
    path) are left out: leaf names are returned when that is unambiguous, full module names otherwise."""
    text: dict[str, list[str]] = {}
    vision: set[str] = set()
    for name, module in model.named_modules():
        if "." not in name or not _is_linear(module):
            continue
        parent, leaf = name.rsplit(".", 1)
        if not any(_ATTENTION.search(part) for part in parent.split(".")):
            continue
        if _VISION.search(name):
            vision.add(leaf)
        else:
            text.setdefault(leaf, []).append(name)
    if not text:
        raise MedfedError("llm backend: no attention projection (linear layer in an attention block) found in "
                          "the model; set target_modules")
    if vision & text.keys():
        return sorted(n for names in text.values() for n in names)
    return sorted(text)


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run with torch's RNG seeded by ``seed``, restoring the previous RNG state afterwards."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed % 2**63)
        yield


@dataclass
class Generation:
    """One decoded answer: ``text``, its generated ``token_ids`` (up to the end-of-sequence) and the model's
    probability of each (``None`` when the model returned no logits)."""

    text: str
    token_ids: list[int]
    token_probs: list[float] | None


def token_char_spans(tokenizer: Any, ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """The decoded text of ``ids`` and each token's character span in it, found by decoding prefixes; a token
    whose prefix does not decode to a prefix of the text (a partial UTF-8 character) shares the span of the
    next token that does."""
    kwargs = {"skip_special_tokens": True, "clean_up_tokenization_spaces": False}
    text = tokenizer.decode(list(ids), **kwargs)
    spans: list[tuple[int, int]] = []
    start, pending = 0, 0
    for i in range(len(ids)):
        prefix = tokenizer.decode(list(ids[: i + 1]), **kwargs)
        pending += 1
        if text.startswith(prefix) and len(prefix) >= start:
            spans.extend([(start, len(prefix))] * pending)
            start, pending = len(prefix), 0
    spans.extend([(start, len(text))] * pending)
    return text, spans


def value_confidences(tokenizer: Any, generation: Generation, parsed: ParsedAnswer) -> dict[str, float]:
    """Per label, the mean probability of the tokens overlapping its value's characters (module docstring);
    1.0 where not computable."""
    if generation.token_probs is None:
        return {name: 1.0 for name in parsed.values}
    text, spans = token_char_spans(tokenizer, generation.token_ids)
    confidences = {}
    for name in parsed.values:
        span = parsed.spans.get(name) if text == generation.text else None
        probs = [] if span is None else [
            p for (a, b), p in zip(spans, generation.token_probs, strict=True) if a < span[1] and b > span[0]]
        confidences[name] = float(sum(probs) / len(probs)) if probs else 1.0
    return confidences


class LLMBackend(ReportBackend):
    """A local causal LM as a report classifier (module docstring).

    ``model_path``: a directory with a Hugging Face model and tokenizer. ``batch_size`` /
    ``max_new_tokens``: generation; ``few_shot``: examples per prompt, drawn from the reports given to
    :meth:`fit` (or :meth:`set_examples`); ``retries``: corrective retries of an invalid answer. ``finetune``,
    ``epochs`` (or ``max_steps``), ``learning_rate``, ``train_batch_size``, ``max_grad_norm``, ``lora_r``,
    ``lora_alpha``, ``lora_dropout``, ``target_modules``: LoRA fine-tuning in :meth:`fit`. ``device``
    defaults to CUDA when available; ``dtype`` (``"auto"``: the checkpoint's) as in ``from_pretrained``.
    """

    name: ClassVar[str] = "llm"

    def __init__(
        self, taxonomy: Taxonomy, model_path: str | Path, *, batch_size: int = 4, max_new_tokens: int = 256,
        few_shot: int = 0, retries: int = 1, seed: int = 0, device: str | None = None, dtype: str | None = "auto",
        finetune: bool = True, epochs: int = 1, max_steps: int | None = None, learning_rate: float = 2e-4,
        train_batch_size: int = 4, max_grad_norm: float | None = 1.0, lora_r: int = 8, lora_alpha: int = 16,
        lora_dropout: float = 0.05, target_modules: Sequence[str] | None = None,
    ) -> None:
        super().__init__(taxonomy)
        for option, value, least in (("batch_size", batch_size, 1), ("max_new_tokens", max_new_tokens, 1),
                                     ("few_shot", few_shot, 0), ("retries", retries, 0), ("epochs", epochs, 0),
                                     ("train_batch_size", train_batch_size, 1), ("lora_r", lora_r, 1)):
            if int(value) < least:
                raise ConfigError(f"llm backend: {option} must be >= {least}, got {value}")
        if max_steps is not None and max_steps < 0:
            raise ConfigError(f"llm backend: max_steps must be >= 0, got {max_steps}")
        self.batch_size, self.max_new_tokens, self.few_shot, self.retries = batch_size, max_new_tokens, few_shot, retries
        self.seed, self.finetune, self.epochs, self.max_steps = seed, finetune, epochs, max_steps
        self.learning_rate, self.train_batch_size, self.max_grad_norm = learning_rate, train_batch_size, max_grad_norm
        self.lora_r, self.lora_alpha, self.lora_dropout = lora_r, lora_alpha, lora_dropout
        self.target_modules = list(target_modules) if target_modules else None
        self.examples: list[Example] = []
        self.last_run: list[dict[str, Any]] = []
        self.train_history: list[dict[str, Any]] = []
        self.model_path = Path(model_path).expanduser()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model, self.tokenizer = self._load(dtype)
        self._chat = has_chat_template(self.tokenizer)
        self._eos_ids = self._end_ids()
        pad = self.tokenizer.pad_token_id
        self._pad_id = int(pad if pad is not None else (self._eos_ids[0] if self._eos_ids else 0))
        self._generation_config = self._greedy_config()

    # ------------------------------------------------------------------ loading
    def _load(self, dtype: str | None) -> tuple[Any, Any]:
        transformers, _ = require_llm_packages()
        path = self.model_path
        if not path.is_dir():
            raise MedfedError(f"llm backend: model path {path} is not a directory (a local Hugging Face model "
                              "directory is required; nothing is downloaded)")
        if not (path / "config.json").is_file():
            raise MedfedError(f"llm backend: {path} holds no Hugging Face model (config.json is missing)")
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
        except (OSError, ValueError, KeyError, ImportError) as err:
            raise MedfedError(f"llm backend: cannot load the model in {path}: {err}") from None
        model.to(self.device)
        model.eval()
        return model, tokenizer

    def _end_ids(self) -> list[int]:
        """End-of-sequence ids: the tokenizer's, then the generation config's (e.g. Gemma's ``<end_of_turn>``)."""
        ids: list[int] = []
        candidates = [self.tokenizer.eos_token_id, getattr(self.model.generation_config, "eos_token_id", None)]
        for value in candidates:
            for i in (value if isinstance(value, list | tuple) else [value]):
                if i is not None and int(i) not in ids:
                    ids.append(int(i))
        return ids

    def _greedy_config(self) -> Any:
        config = copy.deepcopy(self.model.generation_config)
        config.do_sample, config.num_beams = False, 1
        for sampling in ("temperature", "top_p", "top_k", "min_p", "typical_p"):
            if hasattr(config, sampling):
                setattr(config, sampling, None)
        config.pad_token_id = self._pad_id
        config.eos_token_id = self._eos_ids or None
        config.output_logits, config.return_dict_in_generate = True, True
        return config

    # ------------------------------------------------------------------ prompts and generation
    def _encode_prompt(self, prompt: str) -> list[int]:
        # a chat template already writes the special tokens (BOS) it needs
        return list(self.tokenizer(prompt, add_special_tokens=not self._chat)["input_ids"])

    def set_examples(self, reports: Sequence[Report], targets: pd.DataFrame) -> LLMBackend:
        """Use these labelled reports as the few-shot pool (``few_shot`` per prompt) without training."""
        self.examples = list(zip(reports, self._gold(reports, targets), strict=True))
        return self

    def messages_for(self, report: Report) -> list[Message]:
        """The prompt conversation for ``report``, with its seeded few-shot examples."""
        examples = select_examples(report, self.examples, self.few_shot, self.seed) if self.few_shot else []
        return build_messages(self.taxonomy, report, examples)

    @torch.no_grad()
    def generate(self, conversations: Sequence[Sequence[Message]]) -> list[Generation]:
        """Greedy answers to ``conversations``, ``batch_size`` at a time (left-padded)."""
        self.model.eval()
        config = copy.deepcopy(self._generation_config)
        config.max_new_tokens = self.max_new_tokens
        results: list[Generation] = []
        for first in range(0, len(conversations), self.batch_size):
            encoded = [self._encode_prompt(render(c, self.tokenizer))
                       for c in conversations[first:first + self.batch_size]]
            width = max(len(ids) for ids in encoded)
            input_ids = torch.full((len(encoded), width), self._pad_id, dtype=torch.long)
            attention = torch.zeros((len(encoded), width), dtype=torch.long)
            for row, ids in enumerate(encoded):
                input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
                attention[row, width - len(ids):] = 1
            out = self.model.generate(input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
                                      generation_config=config)
            sequences = out.sequences[:, width:].cpu()
            logits = getattr(out, "logits", None)
            for row in range(len(encoded)):
                ids = sequences[row].tolist()
                end = next((k for k, token in enumerate(ids) if token in self._eos_ids), len(ids))
                ids = ids[:end]
                probs = None
                if logits is not None and len(logits) >= len(ids):
                    probs = [float(torch.softmax(logits[k][row].float(), -1)[token]) for k, token in enumerate(ids)]
                text = self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
                results.append(Generation(text, ids, probs))
        return results

    # ------------------------------------------------------------------ prediction
    def predict(self, reports: Sequence[Report]) -> pd.DataFrame:
        reports = list(reports)
        conversations = [self.messages_for(r) for r in reports]
        generations = self.generate(conversations)
        parsed = [parse_answer(g.text, self.taxonomy) for g in generations]
        attempts = [1] * len(reports)
        failures: list[list[list[str]]] = [[] for _ in reports]
        for _ in range(self.retries):
            retry = [i for i, p in enumerate(parsed) if not p.ok]
            if not retry:
                break
            for i in retry:
                failures[i].append(parsed[i].problems)
            again = [correction_messages(conversations[i], generations[i].text, parsed[i].problems, self.taxonomy)
                     for i in retry]
            for i, conversation, generation in zip(retry, again, self.generate(again), strict=True):
                conversations[i], generations[i] = conversation, generation
                parsed[i] = parse_answer(generation.text, self.taxonomy)
                attempts[i] += 1
        values, confidences, statuses = [], [], []
        self.last_run = []
        for report, generation, answer, tries, failed in zip(reports, generations, parsed, attempts, failures,
                                                             strict=True):
            if answer.ok:
                values.append(answer.values)
                confidences.append(value_confidences(self.tokenizer, generation, answer))
                statuses.append("ok")
            else:
                failed.append(answer.problems)
                values.append({n: fallback_value(self.taxonomy, n) for n in self.taxonomy.names})
                confidences.append({n: 0.0 for n in self.taxonomy.names})
                statuses.append("unparsable")
            self.last_run.append({"report_id": report.report_id, "status": statuses[-1], "attempts": tries,
                                  "problems": failed, "answer": generation.text})
        return prediction_frame(self.taxonomy, [r.report_id for r in reports], values, confidences, statuses)

    # ------------------------------------------------------------------ fine-tuning
    def _gold(self, reports: Sequence[Report], targets: pd.DataFrame) -> list[dict[str, str]]:
        """Each report's gold value per label from ``targets`` (canonical spelling; errors name report/label)."""
        missing = [c for c in ("report_id", *self.taxonomy.names) if c not in targets.columns]
        if missing:
            raise MedfedError(f"llm backend: targets lack column(s) {', '.join(missing)}")
        by_id = targets.drop_duplicates("report_id", keep="first").set_index("report_id")
        gold = []
        for report in reports:
            if report.report_id not in by_id.index:
                raise MedfedError(f"llm backend: no target for report {report.report_id}")
            row: dict[str, str] = {}
            for name in self.taxonomy.names:
                raw = by_id.at[report.report_id, name]
                value = match_value(str(raw), self.taxonomy.allowed(name))
                if value is None:
                    raise MedfedError(f"llm backend: report {report.report_id}, label {name!r}: target {raw!r} "
                                      f"is not one of {', '.join(self.taxonomy.allowed(name))}")
                row[name] = value
            gold.append(row)
        return gold

    @property
    def has_adapter(self) -> bool:
        return hasattr(self.model, "peft_config")

    def ensure_lora(self) -> nn.Module:
        """Wrap the model with fresh LoRA adapters (seeded) unless it has them; returns the PEFT model."""
        if self.has_adapter:
            return self.model
        _, peft = require_llm_packages()
        config = peft.LoraConfig(
            r=self.lora_r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout, bias="none",
            target_modules=self.target_modules or attention_projections(self.model), task_type="CAUSAL_LM")
        with seeded(derive_seed(self.seed, "lora", "init"), self.device):
            self.model = peft.get_peft_model(self.model, config)
        self.model.eval()
        return self.model

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """The LoRA adapter tensors only (``peft.get_peft_model_state_dict``), in a fixed order."""
        _, peft = require_llm_packages()
        self.ensure_lora()
        return dict(peft.get_peft_model_state_dict(self.model, save_embedding_layers=False))

    def load_adapter_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Set the LoRA adapter tensors (``peft.set_peft_model_state_dict``); unknown names are an error."""
        _, peft = require_llm_packages()
        self.ensure_lora()
        result = peft.set_peft_model_state_dict(self.model, dict(state))
        unexpected = list(getattr(result, "unexpected_keys", []) or [])
        if unexpected:
            raise MedfedError(f"llm backend: adapter tensors not in the model: {', '.join(unexpected[:5])}")

    def _training_example(self, report: Report, values: Mapping[str, str]) -> tuple[list[int], list[int]]:
        prompt = self._encode_prompt(render(build_messages(self.taxonomy, report), self.tokenizer))
        answer = list(self.tokenizer(answer_json(self.taxonomy, values), add_special_tokens=False)["input_ids"])
        answer += self._eos_ids[:1]
        return prompt + answer, [IGNORE_INDEX] * len(prompt) + answer

    def _collate(self, examples: Sequence[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(ids) for ids, _ in examples)
        input_ids = torch.full((len(examples), width), self._pad_id, dtype=torch.long)
        labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(examples), width), dtype=torch.long)
        for row, (ids, lab) in enumerate(examples):  # right padding
            input_ids[row, :len(ids)] = torch.tensor(ids)
            labels[row, :len(lab)] = torch.tensor(lab)
            attention[row, :len(ids)] = 1
        return {"input_ids": input_ids.to(self.device), "attention_mask": attention.to(self.device),
                "labels": labels.to(self.device)}

    def train_lora(
        self, reports: Sequence[Report], targets: pd.DataFrame, *, steps: int | None = None, epochs: int = 1,
        seed: int | None = None, hooks: Sequence[Any] = (),
    ) -> dict[str, Any]:
        """Train the LoRA adapters for ``steps`` optimiser steps (else ``epochs`` passes) on the reports; loss
        on the answer tokens only. ``hooks`` (medfed ``LocalHook``, e.g. FedProx's proximal term) add their
        ``penalty`` to the loss and may edit gradients in ``after_backward``. Returns ``steps``,
        ``num_examples``, ``loss`` (mean step loss, without penalties) and ``losses``."""
        self.ensure_lora()
        reports = list(reports)
        if not reports:
            raise MedfedError("llm backend: no labelled report to fine-tune on")
        examples = [self._training_example(r, v) for r, v in zip(reports, self._gold(reports, targets), strict=True)]
        seed = self.seed if seed is None else seed
        per_epoch = math.ceil(len(examples) / self.train_batch_size)
        total = steps if steps is not None else epochs * per_epoch
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimiser = torch.optim.AdamW(params, lr=self.learning_rate, weight_decay=0.0)
        losses: list[float] = []
        self.model.train()
        try:
            with seeded(derive_seed(seed, "lora", "train"), self.device):
                epoch = 0
                while len(losses) < total:
                    order = rng_for(seed, "lora", "batches", epoch).permutation(len(examples))
                    epoch += 1
                    for first in range(0, len(order), self.train_batch_size):
                        if len(losses) >= total:
                            break
                        batch = self._collate([examples[i] for i in order[first:first + self.train_batch_size]])
                        loss = self.model(**batch).loss
                        objective = loss
                        for hook in hooks:
                            penalty = hook.penalty(self.model)
                            if penalty is not None:
                                objective = objective + penalty
                        optimiser.zero_grad(set_to_none=True)
                        objective.backward()
                        for hook in hooks:
                            hook.after_backward(self.model)
                        if self.max_grad_norm:
                            torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
                        optimiser.step()
                        losses.append(float(loss.detach()))
        finally:
            self.model.eval()
        result = {"steps": len(losses), "num_examples": len(examples),
                  "loss": float(sum(losses) / len(losses)) if losses else None, "losses": losses}
        self.train_history.append({k: v for k, v in result.items() if k != "losses"})
        return result

    @torch.no_grad()
    def answer_loss(self, reports: Sequence[Report], targets: pd.DataFrame) -> float:
        """Mean cross-entropy per answer token of the gold JSON answers (the training objective), in eval mode."""
        reports = list(reports)
        examples = [self._training_example(r, v) for r, v in zip(reports, self._gold(reports, targets), strict=True)]
        self.model.eval()
        total, count = 0.0, 0
        for first in range(0, len(examples), self.train_batch_size):
            batch = self._collate(examples[first:first + self.train_batch_size])
            tokens = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            total += float(self.model(**batch).loss) * tokens
            count += tokens
        return total / max(count, 1)

    def fit(self, reports: Sequence[Report], targets: pd.DataFrame) -> LLMBackend:
        """Keep the labelled reports as the few-shot pool and, with ``finetune``, train LoRA adapters on them
        (``max_steps`` steps, else ``epochs`` passes)."""
        reports = list(reports)
        self.set_examples(reports, targets)
        if self.finetune and (self.max_steps or (self.max_steps is None and self.epochs > 0)):
            self.train_lora(reports, targets, steps=self.max_steps, epochs=self.epochs, seed=self.seed)
        return self
