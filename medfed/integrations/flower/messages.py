"""What travels in the Flower Messages between medfed's ServerApp and its ClientApps: pure conversions.

Every conversion here is exact: float32 weights go through ``Array`` (``np.save`` bytes) unchanged, numbers
through ``MetricRecord`` (int64 / float64 on the wire) unchanged, and a round trip gives back bit-identical
values (tests/test_flower_adapter.py).

Contents of a ``RecordDict`` by message type (keys are the module constants):

``query`` (server -> node, once per unknown node)
    ``"query"`` ConfigRecord ``{"medfed": "site"}``.
    Reply: ``"site"`` ConfigRecord ``{"site-name", "min-count", "summary"}`` (``summary``: the site's
    suppressed case counts, :meth:`medfed.sites.base.Site.summary`, as JSON), or ``"status"`` with ``error``.

``train`` (server -> node, one per sampled site and round)
    ``"arrays"`` ArrayRecord: the start weights of this site (``strategy.client_weights``, so personalised
    strategies send each site its own model), one entry per ``state_dict`` tensor (or one flat ``"weights"``
    entry); ``"config"`` ConfigRecord: :class:`TrainConfig`; ``"client-state"`` ArrayRecord, only for
    strategies whose client-side hooks read server state (SCAFFOLD's control variates ``c`` and ``c_i``).
    Reply: ``"arrays"`` (the trained weights), ``"metrics"`` MetricRecord (``num-examples``, ``train-loss``,
    ``steps``, ``examples``, ``seconds``, ``val-examples``), ``"diagnostics"`` MetricRecord and
    ``"diagnostics-text"`` ConfigRecord (the ``ClientUpdate.diagnostics`` the strategy reads: ``loss``,
    ``steps``, ``lr``, ``start_loss``), ``"status"`` ConfigRecord (``site-name``; ``error`` when the site
    failed, and then nothing else).

``evaluate`` (server -> node)
    ``"config"`` ConfigRecord: :class:`EvalConfig`; ``"model.<i>"`` ArrayRecord for the i-th model name of
    the config. Reply: per model ``i`` a table (``eval.<i>.meta`` / ``.num`` / ``.text``, see
    :func:`frame_to_records`): the per-case records (case id, score, target, prediction, threshold: no
    image) when the node shares them, else the site's metric rows (values under its ``min_count``
    already suppressed), plus ``"status"``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from medfed.seeding import derive_seed

if TYPE_CHECKING:  # torch: not needed to read or write a message
    from medfed.fl.weights import WeightLayout

ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
DIAGNOSTICS = "diagnostics"
DIAGNOSTICS_TEXT = "diagnostics-text"
STATUS = "status"
QUERY = "query"
SITE = "site"
CLIENT_STATE = "client-state"
#: the ArrayRecord key of a whole flat weight vector (instead of one entry per tensor)
WHOLE = "weights"
#: Flower's conventional key of the example count (its FedAvg weights by it)
NUM_EXAMPLES = "num-examples"
#: the ``status`` value of a reply whose node failed
ERROR = "error"

EVAL_RECORDS = "records"
EVAL_METRICS = "metrics"


# ----------------------------------------------------------------------------- weights
def weights_to_arrays(weights: np.ndarray, layout: WeightLayout | None = None) -> ArrayRecord:
    """A flat float32 vector as an ArrayRecord: one array per ``state_dict`` entry of ``layout`` (names
    and shapes, carried as float32 like the flat vector), or one flat ``"weights"`` array without layout."""
    flat = np.ascontiguousarray(np.asarray(weights, dtype=np.float32))
    if flat.ndim != 1:
        raise ValueError(f"weights must be a flat vector, got shape {flat.shape}")
    if layout is None:
        return ArrayRecord({WHOLE: Array(flat)})
    if flat.size != layout.size:
        raise ValueError(f"weight vector has {flat.size} values; the layout needs {layout.size}")
    arrays: dict[str, Array] = {}
    offset = 0
    for name, shape, size in zip(layout.names, layout.shapes, layout.sizes, strict=True):
        arrays[name] = Array(flat[offset:offset + size].reshape(shape))
        offset += size
    return ArrayRecord(arrays)


def arrays_to_weights(record: ArrayRecord, layout: WeightLayout | None = None) -> np.ndarray:
    """The flat float32 vector of an ArrayRecord made by :func:`weights_to_arrays` (either form).

    With ``layout``, per-tensor records must name exactly its tensors with its shapes (in its order, so a
    reordered record still loads right); without, tensors are concatenated in the record's order.
    """
    if list(record.keys()) == [WHOLE]:
        flat = np.asarray(record[WHOLE].numpy(), dtype=np.float32).reshape(-1)
        if layout is not None and flat.size != layout.size:
            raise ValueError(f"received {flat.size} weights; the model needs {layout.size}")
        return flat
    if layout is None:
        parts = [np.asarray(a.numpy(), dtype=np.float32).reshape(-1) for a in record.values()]
    else:
        missing = [n for n in layout.names if n not in record]
        extra = [n for n in record if n not in set(layout.names)]
        if missing or extra:
            raise ValueError(f"received tensors do not match the model (missing {missing[:3]}, unexpected {extra[:3]})")
        parts = []
        for name, shape in zip(layout.names, layout.shapes, strict=True):
            array = record[name].numpy()
            if tuple(array.shape) != tuple(shape):
                raise ValueError(f"tensor {name} has shape {tuple(array.shape)}; the model needs {tuple(shape)}")
            parts.append(np.asarray(array, dtype=np.float32).reshape(-1))
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


# ----------------------------------------------------------------------------- diagnostics
def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def diagnostics_to_records(diagnostics: Mapping[str, Any]) -> tuple[MetricRecord, ConfigRecord]:
    """Split a diagnostics dict: numbers (and lists of one number type) into a MetricRecord, strings,
    booleans, bytes and their lists (e.g. an error text) into a ConfigRecord. ``None`` values are left out;
    anything else (nested dicts) is refused, so nothing is silently dropped."""
    metrics, text = MetricRecord(), ConfigRecord()
    for key, raw in diagnostics.items():
        value = _plain(raw)
        if value is None:
            continue
        if isinstance(value, (bool, str, bytes)):
            text[str(key)] = value
        elif isinstance(value, (int, float)):
            metrics[str(key)] = value
        elif isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            floats = any(isinstance(v, float) for v in value)
            metrics[str(key)] = [float(v) for v in value] if floats else [int(v) for v in value]
        elif isinstance(value, list):
            text[str(key)] = value
        else:
            raise TypeError(f"diagnostic {key!r} of type {type(raw).__name__} cannot travel in a Flower record")
    return metrics, text


def diagnostics_from_records(metrics: MetricRecord | None, text: ConfigRecord | None = None) -> dict[str, Any]:
    """The dict :func:`diagnostics_to_records` split (same values and types)."""
    out: dict[str, Any] = {}
    for record in (metrics, text):
        if record is not None:
            out.update({k: (list(v) if isinstance(v, list) else v) for k, v in record.items()})
    return out


# ----------------------------------------------------------------------------- configs
def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, allow_nan=True)


@dataclass(frozen=True)
class TrainConfig:
    """One site's instructions for one round: what the in-process runner would do for it.

    ``seed`` is the experiment seed; the site trains with ``derive_seed(seed, "train", round, site)``
    (:attr:`train_seed`), as :class:`medfed.fl.runner.MethodRunner` does, so results match it exactly.
    ``max_steps`` None: ``epochs`` whole passes. ``start_loss``: also report the loss of the received
    model on the site's training data before training (FedAgain's client reliability).
    """

    round: int
    seed: int
    site: str
    method: str
    strategy: str
    task: dict[str, Any]
    epochs: int = 1
    max_steps: int | None = None
    start_loss: bool = False
    strategy_params: dict[str, Any] = field(default_factory=dict)

    @property
    def train_seed(self) -> int:
        return derive_seed(self.seed, "train", self.round, self.site)

    def to_record(self) -> ConfigRecord:
        return ConfigRecord({
            "server-round": int(self.round), "medfed-round": int(self.round), "seed": int(self.seed),
            "site": self.site, "method": self.method, "strategy": self.strategy,
            "strategy-params": _json(self.strategy_params), "task": _json(self.task),
            "local-epochs": int(self.epochs), "local-max-steps": int(self.max_steps or 0),
            "start-loss": bool(self.start_loss),
        })

    @classmethod
    def from_record(cls, record: ConfigRecord) -> TrainConfig:
        return cls(
            round=int(record["medfed-round"]), seed=int(record["seed"]), site=str(record["site"]),
            method=str(record["method"]), strategy=str(record["strategy"]), task=json.loads(str(record["task"])),
            epochs=int(record["local-epochs"]), max_steps=int(record["local-max-steps"]) or None,
            start_loss=bool(record["start-loss"]), strategy_params=json.loads(str(record["strategy-params"])),
        )


@dataclass(frozen=True)
class EvalConfig:
    """Evaluate ``models`` (names; their weights travel as ``model.<i>``) on every val/test case of ``site``."""

    round: int
    site: str
    method: str
    task: dict[str, Any]
    models: tuple[str, ...]
    final: bool = False

    def to_record(self) -> ConfigRecord:
        return ConfigRecord({
            "server-round": int(self.round), "medfed-round": int(self.round), "site": self.site,
            "method": self.method, "task": _json(self.task), "models": list(self.models), "final": bool(self.final),
        })

    @classmethod
    def from_record(cls, record: ConfigRecord) -> EvalConfig:
        return cls(round=int(record["medfed-round"]), site=str(record["site"]), method=str(record["method"]),
                   task=json.loads(str(record["task"])), models=tuple(str(m) for m in record["models"]),
                   final=bool(record["final"]))


# ----------------------------------------------------------------------------- strategy state for client hooks
def client_state_to_arrays(strategy: str, state: Mapping[str, Any], site: str) -> ArrayRecord | None:
    """The part of the server's strategy state that ``strategy.client_hooks`` reads for ``site`` (None: none).

    Only SCAFFOLD's hooks read state: the server control variate ``c`` (float64) and the site's ``c_i``
    (float32, absent before the site's first round). Both travel in their own dtype, so the site computes
    the same correction ``c - c_i`` as the in-process runner.
    """
    if strategy != "scaffold":
        return None
    arrays = {"c": Array(np.ascontiguousarray(state["c"]))}
    own = state.get("c_sites", {}).get(site)
    if own is not None:
        arrays["c_site"] = Array(np.ascontiguousarray(own))
    return ArrayRecord(arrays)


def client_state_from_arrays(strategy: str, record: ArrayRecord | None, site: str) -> dict[str, Any] | None:
    """The state dict ``strategy.client_hooks(model, site, state)`` needs, rebuilt on the site."""
    if strategy != "scaffold" or record is None:
        return None
    c_sites = {site: record["c_site"].numpy()} if "c_site" in record else {}
    return {"c": record["c"].numpy(), "c_sites": c_sites}


# ----------------------------------------------------------------------------- message contents
def query_content() -> RecordDict:
    return RecordDict({QUERY: ConfigRecord({"medfed": "site"})})


def site_reply_content(name: str, min_count: int, summary: Mapping[str, Any]) -> RecordDict:
    summary_json = json.dumps(summary)  # key order kept: sites.json lists them as the site wrote them
    return RecordDict({SITE: ConfigRecord({"site-name": name, "min-count": int(min_count), "summary": summary_json})})


@dataclass
class SiteReply:
    name: str
    min_count: int = 1
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def parse_site_reply(content: RecordDict) -> SiteReply:
    if STATUS in content.config_records and ERROR in content.config_records[STATUS]:
        status = content.config_records[STATUS]
        return SiteReply(str(status.get("site-name", "")), error=str(status[ERROR]))
    site = content.config_records[SITE]
    return SiteReply(str(site["site-name"]), int(site["min-count"]), json.loads(str(site["summary"])))


def error_content(site: str, error: str) -> RecordDict:
    """A reply saying that ``site`` failed (``"TypeName: message"``, as the in-process runner records it)."""
    return RecordDict({STATUS: ConfigRecord({"site-name": site, ERROR: error})})


def reply_error(content: RecordDict) -> str | None:
    status = content.config_records.get(STATUS)
    return None if status is None or ERROR not in status else str(status[ERROR])


def reply_site(content: RecordDict) -> str | None:
    status = content.config_records.get(STATUS)
    return None if status is None or "site-name" not in status else str(status["site-name"])


def train_content(config: TrainConfig, start: ArrayRecord, client_state: ArrayRecord | None = None) -> RecordDict:
    """``start``: the site's start weights (:func:`weights_to_arrays`; one record may serve many messages)."""
    content = RecordDict({ARRAYS: start, CONFIG: config.to_record()})
    if client_state is not None:
        content[CLIENT_STATE] = client_state
    return content


def parse_train_content(content: RecordDict) -> tuple[TrainConfig, ArrayRecord, ArrayRecord | None]:
    return (TrainConfig.from_record(content.config_records[CONFIG]), content.array_records[ARRAYS],
            content.array_records.get(CLIENT_STATE))


@dataclass
class TrainReply:
    """A site's answer to ``train``: ``weights`` (flat float32) or the ``error`` it failed with."""

    site: str
    weights: np.ndarray | None = None
    num_examples: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def train_reply_content(
    site: str, weights: np.ndarray, num_examples: int, metrics: Mapping[str, Any], diagnostics: Mapping[str, Any],
    layout: WeightLayout | None = None,
) -> RecordDict:
    numbers, text = diagnostics_to_records(diagnostics)
    work, _ = diagnostics_to_records({**metrics, NUM_EXAMPLES: int(num_examples)})
    return RecordDict({ARRAYS: weights_to_arrays(weights, layout), METRICS: work, DIAGNOSTICS: numbers,
                       DIAGNOSTICS_TEXT: text, STATUS: ConfigRecord({"site-name": site})})


def parse_train_reply(content: RecordDict, layout: WeightLayout | None = None) -> TrainReply:
    site = reply_site(content) or ""
    error = reply_error(content)
    if error is not None:
        return TrainReply(site, error=error)
    metrics = dict(content.metric_records[METRICS])
    diagnostics = diagnostics_from_records(content.metric_records.get(DIAGNOSTICS),
                                           content.config_records.get(DIAGNOSTICS_TEXT))
    return TrainReply(site, arrays_to_weights(content.array_records[ARRAYS], layout),
                      int(metrics.pop(NUM_EXAMPLES)), metrics, diagnostics)


def evaluate_content(config: EvalConfig, models: Sequence[ArrayRecord]) -> RecordDict:
    if len(models) != len(config.models):
        raise ValueError(f"{len(config.models)} model names but {len(models)} models")
    content = RecordDict({CONFIG: config.to_record()})
    for i, arrays in enumerate(models):
        content[f"model.{i}"] = arrays
    return content


def parse_evaluate_content(content: RecordDict) -> tuple[EvalConfig, list[ArrayRecord]]:
    config = EvalConfig.from_record(content.config_records[CONFIG])
    return config, [content.array_records[f"model.{i}"] for i in range(len(config.models))]


def evaluate_reply_content(site: str, kind: str, tables: Sequence[pd.DataFrame]) -> RecordDict:
    """``kind`` :data:`EVAL_RECORDS` (per-case records) or :data:`EVAL_METRICS` (metric rows), one table per model."""
    content = RecordDict({STATUS: ConfigRecord({"site-name": site, "kind": kind})})
    for i, table in enumerate(tables):
        meta, numbers, text = frame_to_records(table)
        content[f"eval.{i}.meta"], content[f"eval.{i}.num"], content[f"eval.{i}.text"] = meta, numbers, text
    return content


@dataclass
class EvalReply:
    site: str
    kind: str = EVAL_RECORDS
    tables: list[pd.DataFrame] = field(default_factory=list)
    error: str | None = None


def parse_evaluate_reply(content: RecordDict) -> EvalReply:
    site = reply_site(content) or ""
    error = reply_error(content)
    if error is not None:
        return EvalReply(site, error=error)
    kind = str(content.config_records[STATUS]["kind"])
    tables, i = [], 0
    while f"eval.{i}.meta" in content.config_records:
        tables.append(frame_from_records(content.config_records[f"eval.{i}.meta"], content.metric_records[f"eval.{i}.num"],
                                         content.config_records[f"eval.{i}.text"]))
        i += 1
    return EvalReply(site, kind, tables)


# ----------------------------------------------------------------------------- tables
def frame_to_records(frame: pd.DataFrame) -> tuple[ConfigRecord, MetricRecord, ConfigRecord]:
    """A table as (meta, numeric columns, text columns): integer, float and boolean columns as MetricRecord
    lists (exact), any other column as the JSON of its values in a ConfigRecord; ``meta`` keeps the column
    order and dtypes, so :func:`frame_from_records` rebuilds an equal frame."""
    meta = ConfigRecord({"columns": [str(c) for c in frame.columns], "dtypes": [str(d) for d in frame.dtypes],
                         "rows": len(frame)})
    numbers, text = MetricRecord(), ConfigRecord()
    for column in frame.columns:
        series = frame[column]
        kind = getattr(series.dtype, "kind", "O")
        if kind in "iub" and not isinstance(series.dtype, pd.api.extensions.ExtensionDtype):
            numbers[str(column)] = [int(v) for v in series.to_numpy()]
        elif kind == "f" and not isinstance(series.dtype, pd.api.extensions.ExtensionDtype):
            numbers[str(column)] = [float(v) for v in series.to_numpy()]
        else:
            text[str(column)] = json.dumps([_json_value(v) for v in series.tolist()], allow_nan=True)
    return meta, numbers, text


def _json_value(value: Any) -> Any:
    value = _plain(value)
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def frame_from_records(meta: ConfigRecord, numbers: MetricRecord, text: ConfigRecord) -> pd.DataFrame:
    columns: dict[str, Any] = {}
    rows = int(meta["rows"])
    for name, dtype in zip(meta["columns"], meta["dtypes"], strict=True):
        if name in numbers:
            values = np.asarray(numbers[name] if rows else [], dtype=np.float64 if dtype.startswith("float") else np.int64)
            columns[name] = values.astype(dtype)
        else:
            values = json.loads(str(text[name]))
            columns[name] = pd.Series(values, dtype=object if dtype == "object" else dtype)
    frame = pd.DataFrame(columns) if columns else pd.DataFrame(index=range(rows))
    return frame.reset_index(drop=True)
