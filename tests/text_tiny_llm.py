"""A tiny random-weight causal LM and a locally trained tokenizer, saved to a directory (a test helper).

Nothing is downloaded: a byte-level BPE tokenizer (``tokenizers``) is trained on a small synthetic corpus of
English/Spanish report sentences, the prompt text of :mod:`medfed.text.prompts` and JSON answers, wrapped as a
``PreTrainedTokenizerFast`` with a minimal chat template; a 2-layer Llama with hidden size 32 gets random
weights from a fixed seed. :func:`build_tiny_llm` saves both with ``save_pretrained`` so ``LLMBackend`` loads
them by path. Builds in well under a second on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from medfed.text.base import Report
from medfed.text.prompts import answer_json, build_messages, correction_messages
from medfed.text.taxonomy import Taxonomy

SPECIAL = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
VOCAB_SIZE = 400


def tiny_taxonomy() -> Taxonomy:
    return Taxonomy(name="tiny_chest", labels=[
        {"name": "Cardiomegaly", "definition": "Enlarged cardiac silhouette.",
         "synonyms": {"en": ["cardiomegaly"], "es": ["cardiomegalia"]}},
        {"name": "Effusion", "definition": "Fluid in the pleural space.", "values": ["present", "absent"],
         "synonyms": {"en": ["pleural effusion"], "es": ["derrame pleural"]}},
    ])


def tiny_reports() -> tuple[list[Report], pd.DataFrame]:
    """Four labelled reports (two English, two Spanish) and their targets."""
    rows = [
        ("r1", "Cardiomegaly is present. No pleural effusion.", "en", "present", "absent"),
        ("r2", "Normal heart size. Small left pleural effusion.", "en", "absent", "present"),
        ("r3", "Se observa cardiomegalia. Sin derrame pleural.", "es", "present", "absent"),
        ("r4", "Corazon de tamano normal. Derrame pleural bilateral.", "es", "absent", "present"),
    ]
    reports = [Report(rid, text, lang) for rid, text, lang, _, _ in rows]
    targets = pd.DataFrame([{"report_id": rid, "Cardiomegaly": c, "Effusion": e} for rid, _, _, c, e in rows])
    return reports, targets


def _corpus(taxonomy: Taxonomy) -> list[str]:
    reports, targets = tiny_reports()
    lines = [r.text for r in reports]
    for report, (_, row) in zip(reports, targets.iterrows(), strict=True):
        values = {n: row[n] for n in taxonomy.names}
        messages = build_messages(taxonomy, report, [(reports[0], values)])
        lines.extend(m["content"] for m in correction_messages(messages, "{}", ["label missing"], taxonomy))
        lines.append(answer_json(taxonomy, values))
    lines += ["```json", '{"a": "b"}', "Hallazgos: sin alteraciones. Impresion: normal.",
              "Findings: lungs are clear. Impression: no acute disease."]
    return lines * 3


def build_tiny_llm(path: Path | str, seed: int = 0, taxonomy: Taxonomy | None = None) -> Path:
    """Save a tiny Llama + tokenizer under ``path`` and return it."""
    path = Path(path)
    taxonomy = taxonomy or tiny_taxonomy()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(taxonomy), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                        additional_special_tokens=SPECIAL[3:], chat_template=CHAT_TEMPLATE)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(path)
    model.save_pretrained(path)
    return path
