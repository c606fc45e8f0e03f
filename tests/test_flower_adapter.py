"""medfed over Flower (medfed.integrations.flower) driven through a fake Grid: no Ray, no network, no SuperLink.

The fake Grid delivers each Message to the real ClientApp in this process, after a round trip of its content
through Flower's wire format (protobuf), and delivers the reply the same way. Three nodes each own one site of
a small synthetic chest X-ray federation through their own site config (one YAML per hospital). The in-process
reference is ``medfed.fl.experiment.run_experiment`` on the same three sites with the same seed: Flower runs
must give *bit-identical* weights, losses, round records and report files (no tolerance: every random draw
depends only on (seed, round, site), weights travel as exact float32, numbers as float64).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

flwr_app = pytest.importorskip("flwr.app")

from fake_grid import (
    NODES,
    SITES,
    FakeGrid,
    Interrupted,
    flower_server_identity,
    node_configs,
    settings,
    wire_round_trip,
)
from flower_support import rounds_log, without_timing, write_hospitals
from flwr.app import ArrayRecord, ConfigRecord, Context, RecordDict

from medfed.fl.checkpoint import load_checkpoint
from medfed.fl.config import load_experiment
from medfed.fl.experiment import run_experiment
from medfed.fl.sampling import sample_sites
from medfed.fl.strategies import build_strategy
from medfed.fl.weights import get_weights, layout_of
from medfed.integrations.flower import client as flower_client
from medfed.integrations.flower import messages as wire
from medfed.integrations.flower.server import MedfedStrategy
from medfed.integrations.flower.server_run import run_flower_method
from medfed.integrations.flower.settings import ServerSettings
from medfed.seeding import derive_seed, rng_for
from medfed.sites import load_federation
from medfed.tasks import build_task
from medfed.tasks.classification import ClassificationTask


@functools.cache
def train_sizes() -> dict[str, int]:
    """Training cases per hospital of the small chest X-ray federation (seed 0), as its adapter splits them."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        federation = load_federation(write_hospitals(Path(folder))["federation"])
        return {site.name: len(site.split("train")) for site in federation}


METHODS = ["fedavg", {"strategy": "fedprox", "proximal_mu": 0.1}, {"strategy": "fedagain", "reliability": "client"},
           "scaffold", "local_only", {"strategy": "fedld", "margin_lambda": 0.05}]
LABELS = ["fedavg", "fedprox", "fedagain", "scaffold", "local_only", "fedld"]
APP_DIR = Path(__file__).resolve().parents[1] / "medfed" / "integrations" / "flower"


@pytest.fixture(autouse=True, scope="module")
def server_identity():
    with flower_server_identity():
        yield


@pytest.fixture(scope="module")
def federation(tmp_path_factory) -> dict[str, Path]:
    """The 3-site federation file (in-process reference) and one site config per hospital (Flower nodes)."""
    yield write_hospitals(tmp_path_factory.mktemp("fed"))  # min_count 2: some metrics visible, some suppressed
    flower_client.clear_caches()


def write_experiment(path: Path, federation: Path, methods: list, **training) -> Path:
    config = {
        "name": "exp", "federation": str(federation), "seed": 7,
        "task": {"kind": "classification", "labels": ["Pneumonia"], "batch_size": 4,
                 "model": {"name": "resnet", "block_inplanes": [4, 8, 8, 8]}},
        "training": {"rounds": 2, "local_epochs": 1, "eval_every": 1, **training},
        "methods": methods,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def assert_identical(a: Any, b: Any) -> None:
    """Equal values, arrays bit for bit (dtype included)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b)
        for key in a:
            assert_identical(a[key], b[key])
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.tobytes() == b.tobytes()
    else:
        assert a == b


@pytest.fixture(scope="module")
def reference(federation, tmp_path_factory) -> Path:
    """In-process: fedavg, fedprox, fedagain (client reliability), SCAFFOLD (server state in client hooks),
    local-only (personalised start weights, one final model per site) and FedLD (margin control on the sites,
    principal-gradient aggregation on the server); 2 rounds, evaluated every round."""
    tmp = tmp_path_factory.mktemp("reference")
    config = write_experiment(tmp / "exp.yaml", federation["federation"], METHODS)
    result = run_experiment(config, tmp / "out", progress=False)
    assert not result.stopped and not result.failures
    return result.out


@pytest.fixture(scope="module")
def flower_runs(federation, reference, tmp_path_factory):
    """The same experiment over Flower, one run (one ``flwr run``) per method, into one run directory."""
    out = tmp_path_factory.mktemp("flower")
    experiment = write_experiment(out / "exp.yaml", federation["federation"], METHODS)
    runs, grids = {}, {}
    for method in LABELS:
        grids[method] = FakeGrid(node_configs(federation))
        runs[method] = run_flower_method(grids[method], settings(experiment, out / "out", method))
    return runs, grids


# ----------------------------------------------------------------------------- messages
def test_weights_diagnostics_configs_and_tables_round_trip_exactly():
    model = build_task(load_experiment_task()).build_model(3)
    layout = layout_of(model)
    weights = get_weights(model)
    weights[:4] = [np.float32(1e-45), -0.0, np.float32(3.4028235e38), np.float32(np.pi)]  # denormal, -0, max
    for record in (wire.weights_to_arrays(weights, layout), wire.weights_to_arrays(weights)):
        back = wire.arrays_to_weights(wire_round_trip(RecordDict({"a": record}))["a"], layout)
        assert back.dtype == np.float32 and back.tobytes() == weights.tobytes()
    per_tensor = wire.weights_to_arrays(weights, layout)
    assert list(per_tensor) == list(model.state_dict())  # Flower-style: one array per state_dict entry
    with pytest.raises(ValueError, match="do not match"):
        wire.arrays_to_weights(ArrayRecord({"x": per_tensor[layout.names[0]]}), layout)

    diagnostics = {"loss": 0.6931471805599453, "steps": 3, "lr": 1e-3, "start_loss": float("nan"),
                   "error": "ValueError: bad case", "stale": True, "norms": [1.5, 2.0], "counts": [1, 2],
                   "sites": ["a", "b"], "skipped": None}
    numbers, text = wire.diagnostics_to_records(diagnostics)
    assert set(numbers) == {"loss", "steps", "lr", "start_loss", "norms", "counts"}  # numbers only
    assert set(text) == {"error", "stale", "sites"}  # strings and flags
    content = wire_round_trip(RecordDict({"m": numbers, "c": text}))
    back = wire.diagnostics_from_records(content.metric_records["m"], content.config_records["c"])
    assert math.isnan(back.pop("start_loss"))
    assert back == {k: v for k, v in diagnostics.items() if k not in ("start_loss", "skipped")}
    assert isinstance(back["steps"], int) and isinstance(back["loss"], float)
    with pytest.raises(TypeError):
        wire.diagnostics_to_records({"nested": {"a": 1}})

    train = wire.TrainConfig(round=4, seed=2**40 + 3, site="adult-b", method="fedprox", strategy="fedprox",
                             task={"kind": "classification", "labels": ["Pneumonia"]}, epochs=3, max_steps=5,
                             start_loss=True, strategy_params={"proximal_mu": 0.1})
    assert wire.TrainConfig.from_record(wire_round_trip(RecordDict({"c": train.to_record()}))["c"]) == train
    assert train.train_seed == derive_seed(2**40 + 3, "train", 4, "adult-b")
    evaluation = wire.EvalConfig(round=2, site="adult-a", method="local_only", task={"kind": "classification"},
                                 models=("local:adult-a", "local:adult-b"), final=True)
    assert wire.EvalConfig.from_record(wire_round_trip(RecordDict({"c": evaluation.to_record()}))["c"]) == evaluation

    state = {"c": np.random.default_rng(0).normal(size=7), "c_sites": {"adult-a": np.ones(7, np.float32)}}
    arrays = wire_round_trip(RecordDict({"s": wire.client_state_to_arrays("scaffold", state, "adult-a")}))["s"]
    rebuilt = wire.client_state_from_arrays("scaffold", arrays, "adult-a")
    assert rebuilt["c"].dtype == np.float64 and rebuilt["c"].tobytes() == state["c"].tobytes()
    assert rebuilt["c_sites"]["adult-a"].tobytes() == state["c_sites"]["adult-a"].tobytes()
    assert wire.client_state_to_arrays("fedavg", state, "adult-a") is None

    records = pd.DataFrame({"case_id": ["c1", "c2", "c3"], "score": np.array([0.1, 1 / 3, np.nan], np.float32),
                            "target": [0.0, 1.0, 1.0], "prediction": np.array([0, 1, 1], np.int64),
                            "suppressed": [True, False, True], "threshold": [None, None, None],
                            "n_cases": pd.Series([3, "<5", 7], dtype=object)})
    records["case_id"] = records["case_id"].astype("str")
    reply = wire_round_trip(wire.evaluate_reply_content("adult-a", wire.EVAL_RECORDS, [records, records.iloc[:0]]))
    parsed = wire.parse_evaluate_reply(reply)
    pd.testing.assert_frame_equal(parsed.tables[0], records)
    assert parsed.tables[0].to_csv(index=False) == records.to_csv(index=False)
    assert len(parsed.tables[1]) == 0 and list(parsed.tables[1].columns) == list(records.columns)


def load_experiment_task():
    from pydantic import TypeAdapter

    from medfed.tasks import TaskConfig

    return TypeAdapter(TaskConfig).validate_python(
        {"kind": "classification", "labels": ["Pneumonia"], "model": {"name": "resnet", "block_inplanes": [4, 8, 8, 8]}})


# ----------------------------------------------------------------------------- equivalence with in-process
@pytest.mark.parametrize("method", LABELS)
def test_flower_run_equals_the_in_process_run(flower_runs, reference, method):
    runs, grids = flower_runs
    run = runs[method]
    assert run.stopped is None and run.result is not None
    mine = load_checkpoint(run.out / "runs" / method / "checkpoints" / "last.pt")
    theirs = load_checkpoint(reference / "runs" / method / "checkpoints" / "last.pt")
    assert mine["round"] == theirs["round"] == 2 and mine["clients"] == theirs["clients"] == SITES
    assert mine["global"].dtype == np.float32 and mine["global"].tobytes() == theirs["global"].tobytes()
    assert_identical(mine["state"], theirs["state"])  # strategy state too (SCAFFOLD's c and c_i, local models)
    expected = build_strategy(method).final_models(theirs["global"], theirs["state"])
    assert list(run.result.models) == list(expected)  # local-only: one model per site
    for name, weights in run.result.models.items():
        assert weights.tobytes() == expected[name].tobytes()
    # round records: same sampling, losses, example counts, work, aggregation and per-round evaluation
    flower_log = [without_timing(r) for r in rounds_log(run.out / "runs" / method)]
    assert flower_log == [without_timing(r) for r in rounds_log(reference / "runs" / method)]
    assert [without_timing(r) for r in mine["log"]] == flower_log
    # final report: per-case predictions of every site, as `medfed run` writes them
    assert (run.out / "predictions" / f"{method}.csv").read_bytes() == \
        (reference / "predictions" / f"{method}.csv").read_bytes()
    # every wait was bounded (round timeout for train/evaluate, query timeout for "which site are you")
    assert set(grids[method].timeouts) <= {30.0, 5.0} and 30.0 in grids[method].timeouts
    train = [m for m in grids[method].sent if m.metadata.message_type == "train"]
    assert {m.metadata.ttl for m in train} == {30.0}


def test_report_files_equal_the_in_process_ones(flower_runs, reference):
    runs, _ = flower_runs
    out = runs["fedavg"].out
    for name in ("metrics.csv", "summary.csv", "sites.csv", "sites.json"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert yaml.safe_load((out / "config.yaml").read_text()) == yaml.safe_load((reference / "config.yaml").read_text())


def test_every_site_metric_is_kept(flower_runs):
    runs, _ = flower_runs
    run = runs["fedavg"]
    for record in rounds_log(run.out / "runs" / "fedavg"):
        assert set(record["train_loss"]) == set(record["num_examples"]) == set(record["work"]) == set(SITES)
        assert set(record["eval"]) - {"pooled_left_out"} == {*SITES, "pooled"}
        small = {s for s, n in record["num_examples"].items() if isinstance(n, str)}  # suppressed in the log
        assert all(f"num-examples.{s}" not in run.flower.train_metrics_clientapp[record["round"]] for s in small)
    flower_metrics = run.flower.train_metrics_clientapp
    for rnd in (1, 2):
        assert {f"train-loss.{s}" for s in SITES} | {f"num-examples.{s}" for s in SITES} <= set(flower_metrics[rnd])
    assert flower_metrics[1]["num-examples.adult-b"] == train_sizes()["adult-b"]


def test_fedagain_gets_the_client_diagnostics_through_metric_records(flower_runs):
    runs, grids = flower_runs
    train_replies = [r for r in grids["fedagain"].replies if r.metadata.message_type == "train"]
    assert len(train_replies) == 2 * len(SITES)
    start_losses = {}
    for reply in train_replies:
        diagnostics = reply.content.metric_records[wire.DIAGNOSTICS]
        assert {"loss", "steps", "lr", "start_loss"} <= set(diagnostics)
        start_losses[(reply.metadata.group_id, wire.reply_site(reply.content))] = diagnostics["start_loss"]
    log = rounds_log(runs["fedagain"].out / "runs" / "fedagain")
    for record in log:
        errors = record["aggregation"]["reliability_error"]
        assert errors == {s: round(start_losses[(str(record["round"]), s)], 6) for s in SITES}
    # fedavg asks for no start loss (the site skips that extra pass over its data)
    fedavg_replies = [r for r in grids["fedavg"].replies if r.metadata.message_type == "train"]
    assert all("start_loss" not in r.content.metric_records[wire.DIAGNOSTICS] for r in fedavg_replies)


# ----------------------------------------------------------------------------- sampling
def test_node_sampling_is_seeded_per_round(federation, tmp_path):
    config = load_experiment(write_experiment(tmp_path / "exp.yaml", federation["federation"], ["fedavg"],
                                              fraction_fit=0.5, rounds=8))

    def sampled_sites(run_dir: Path) -> list[list[str]]:
        task = build_task(config.task)
        strategy = MedfedStrategy("fedavg", build_strategy("fedavg"), task, config.training, config.seed, run_dir,
                                  task_spec=config.task.model_dump(mode="json"), clients=SITES)
        grid = FakeGrid(node_configs(federation))
        strategy.connect(grid, timeout=5.0)
        strategy.begin()
        rounds = []
        for rnd in range(1, 9):
            messages = list(strategy.configure_train(rnd, ArrayRecord(), ConfigRecord(), grid))
            strategy._round = None  # no training needed: only who is asked
            rounds.append([NODES[m.metadata.dst_node_id] for m in messages])
            assert all(m.content.config_records["config"]["site"] == NODES[m.metadata.dst_node_id] for m in messages)
        return rounds

    first = sampled_sites(tmp_path / "a")
    assert first == sampled_sites(tmp_path / "b")  # reproducible
    assert first == [sample_sites(SITES, 0.5, 1, rng_for(7, "sample", r)) for r in range(1, 9)]  # medfed's rule
    assert all(len(s) == 1 for s in first) and len({tuple(s) for s in first}) > 1  # differs across rounds


# ----------------------------------------------------------------------------- faults
@pytest.fixture()
def fast_experiment(federation, tmp_path) -> Path:
    return write_experiment(tmp_path / "fast.yaml", federation["federation"], ["fedavg"], rounds=1, eval_every=0,
                            local_steps=1)


def test_a_node_that_raises_is_recorded_in_failed_and_the_round_completes(federation, fast_experiment, tmp_path,
                                                                          monkeypatch):
    real = ClassificationTask.local_train

    def failing_disk(self, model, dataset, **kwargs):
        if len(dataset) == train_sizes()["adult-b"] != train_sizes()["adult-a"]:  # adult-b's training set
            raise RuntimeError("disk failed")
        return real(self, model, dataset, **kwargs)

    monkeypatch.setattr(ClassificationTask, "local_train", failing_disk)
    grid = FakeGrid(node_configs(federation), crash={303: {"train"}})  # adult-c's ClientApp dies outright
    run = run_flower_method(grid, settings(fast_experiment, tmp_path / "out", "fedavg", **{"final-eval": False}))
    assert run.stopped is None
    [record] = rounds_log(run.out / "runs" / "fedavg")
    assert record["completed"] == ["adult-a"] and record["aggregation"]["clients"] == 1
    assert record["failed"][0] == {"site": "adult-b", "error": "RuntimeError: disk failed"}
    assert record["failed"][1]["site"] == "adult-c"
    assert record["failed"][1]["error"].startswith("Flower error 2: RuntimeError: the ClientApp process was killed")
    assert load_checkpoint(run.out / "runs" / "fedavg" / "checkpoints" / "last.pt")["round"] == 1


def test_a_node_that_does_not_reply_is_dropped_and_too_few_updates_stop_the_run(federation, fast_experiment,
                                                                                  tmp_path):
    grid = FakeGrid(node_configs(federation), ignore={202: {"train"}})  # adult-b answers queries, never trains
    run = run_flower_method(grid, settings(fast_experiment, tmp_path / "out", "fedavg",
                                           **{"final-eval": False, "per-tensor": False}))
    train = [m for m in grid.sent if m.metadata.message_type == "train"]
    assert [list(m.content.array_records[wire.ARRAYS]) for m in train] == [[wire.WHOLE]] * 3  # one flat array
    [record] = rounds_log(run.out / "runs" / "fedavg")
    assert record["completed"] == ["adult-a", "adult-c"] and record["dropped"] == ["adult-b"]
    assert record["failed"] == [{"site": "adult-b", "error": "no reply within 30 s (dropped)"}]
    sizes = train_sizes()
    assert record["aggregation"]["num_examples"] == {"adult-a": sizes["adult-a"], "adult-c": sizes["adult-c"]}

    strict = write_experiment(tmp_path / "strict.yaml", federation["federation"], ["fedavg"], rounds=1,
                              eval_every=0, local_steps=1, min_fit_clients=3)
    grid = FakeGrid(node_configs(federation), ignore={202: {"train"}})
    run = run_flower_method(grid, settings(strict, tmp_path / "strict", "fedavg"))
    assert run.result is None and "only 2 of the 3 sampled site(s) returned an update (3 needed)" in run.stopped
    assert rounds_log(run.out / "runs" / "fedavg")[-1]["status"] == "stopped"


def test_the_superlinks_node_unavailable_reply_counts_for_the_site_whose_node_went_silent(federation, tmp_path):
    """A SuperNode that crashed stops its heartbeats; the SuperLink then answers the messages sent to it itself,
    from its own node id (1), with a NODE_UNAVAILABLE error. The error is that site's (query, train, evaluation),
    not an unexpected reply, and its reason is recorded."""
    experiment = write_experiment(tmp_path / "exp.yaml", federation["federation"], ["fedavg"], rounds=1,
                                  local_steps=1)
    grid = FakeGrid(node_configs(federation), unavailable={303: {"train", "evaluate"}})
    run = run_flower_method(grid, settings(experiment, tmp_path / "out", "fedavg"))
    assert {int(r.metadata.src_node_id) for r in grid.replies if r.has_error()} == {1}  # from the SuperLink
    [record] = rounds_log(run.out / "runs" / "fedavg")
    assert record["completed"] == ["adult-a", "adult-b"] and "dropped" not in record
    [failure] = record["failed"]
    assert failure["site"] == "adult-c" and failure["error"].startswith("Flower error 5: Error: Node Unavailable")
    [eval_failure] = record["eval_failed"]
    assert eval_failure["site"] == "adult-c" and eval_failure["error"].startswith("Flower error 5:")
    assert set(record["eval"]) == {"adult-a", "adult-b"}

    queried = FakeGrid(node_configs(federation), unavailable={303: {"query"}})
    run = run_flower_method(queried, settings(experiment, tmp_path / "q", "fedavg",
                                              **{"final-eval": False, "connect-timeout": 0.1}))
    [record] = rounds_log(run.out / "runs" / "fedavg")
    assert record["unreachable"] == ["adult-c"] and record["completed"] == ["adult-a", "adult-b"]


def test_a_site_without_a_node_is_unavailable_not_a_failure(federation, fast_experiment, tmp_path):
    configs = node_configs(federation)
    del configs[303]  # adult-c's SuperNode never connects
    grid = FakeGrid(configs)
    run = run_flower_method(grid, settings(fast_experiment, tmp_path / "out", "fedavg",
                                           **{"final-eval": False, "connect-timeout": 0.1}))
    [record] = rounds_log(run.out / "runs" / "fedavg")
    assert record["available"] == ["adult-a", "adult-b"] and record["unreachable"] == ["adult-c"]
    assert record["failed"] == [] and record["completed"] == ["adult-a", "adult-b"]


# ----------------------------------------------------------------------------- resume
def test_resume_from_the_round_1_checkpoint_gives_the_same_round_2(federation, flower_runs, reference, tmp_path):
    experiment = write_experiment(tmp_path / "exp.yaml", federation["federation"], METHODS)
    out = tmp_path / "out"
    with pytest.raises(Interrupted):
        run_flower_method(FakeGrid(node_configs(federation), interrupt_round=2), settings(experiment, out, "fedavg"))
    assert [r["round"] for r in rounds_log(out / "exp" / "runs" / "fedavg")] == [1]
    grid = FakeGrid(node_configs(federation))
    run = run_flower_method(grid, settings(experiment, out, "fedavg", resume=True))
    assert run.result.resumed_from == 1
    assert [m.metadata.group_id for m in grid.sent if m.metadata.message_type == "train"] == ["2"] * 3  # round 2 only
    final = load_checkpoint(out / "exp" / "runs" / "fedavg" / "checkpoints" / "last.pt")["global"]
    uninterrupted = load_checkpoint(reference / "runs" / "fedavg" / "checkpoints" / "last.pt")["global"]
    assert final.tobytes() == uninterrupted.tobytes()
    assert [without_timing(r) for r in rounds_log(out / "exp" / "runs" / "fedavg")] == \
        [without_timing(r) for r in rounds_log(reference / "runs" / "fedavg")]
    assert (out / "exp" / "predictions" / "fedavg.csv").read_bytes() == \
        (reference / "predictions" / "fedavg.csv").read_bytes()


# ----------------------------------------------------------------------------- the Flower App
def test_the_app_project_runs_through_flowers_own_config_parsing_and_server_app(federation, fast_experiment, tmp_path):
    """pyproject.toml is a valid Flower App whose run config is the ServerApp's; `flwr run --run-config` and
    `flower-supernode --node-config` strings (parsed by Flower's own parser) drive the ServerApp object."""
    from flwr.common.config import (
        get_fused_config_from_dir,
        get_project_config,
        parse_config_args,
        validate_config,
    )

    from medfed.integrations.flower.app import server_app
    from medfed.integrations.flower.settings import RUN_CONFIG

    project = get_project_config(APP_DIR)
    assert validate_config(project, check_module=True, project_dir=APP_DIR)[0]
    assert set(project["tool"]["flwr"]["app"]["config"]) == set(RUN_CONFIG)
    command_line = (f'experiment="{fast_experiment}" method="fedavg" out="{tmp_path / "out"}" '
                    f'sites="{",".join(SITES)}" round-timeout=30.0 final-eval=false')
    overrides = parse_config_args([command_line])
    run_config = get_fused_config_from_dir(APP_DIR, overrides)
    nodes = {node: parse_config_args([f"site-config='{federation[site]}' site-name='{site}'"])
             for node, site in NODES.items()}
    grid = FakeGrid(nodes)
    server_app(grid, Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config=run_config))
    [record] = rounds_log(tmp_path / "out" / "exp" / "runs" / "fedavg")
    assert record["completed"] == SITES and set(grid.timeouts) == {30.0, 60.0}  # round and (default) query waits


# ----------------------------------------------------------------------------- refusals and metrics-only sites
def test_what_cannot_run_over_flower_is_refused_before_any_round(federation, tmp_path):
    from medfed.errors import ConfigError

    pooled = write_experiment(tmp_path / "c.yaml", federation["federation"], ["centralised"])
    with pytest.raises(ConfigError, match="pools"):
        run_flower_method(FakeGrid(node_configs(federation)), settings(pooled, tmp_path / "o", "centralised"))
    server = write_experiment(tmp_path / "s.yaml", federation["federation"], ["fedagain"])
    with pytest.raises(ConfigError, match="reliability: client"):
        run_flower_method(FakeGrid(node_configs(federation)), settings(server, tmp_path / "o", "fedagain"))
    with pytest.raises(ConfigError, match="experiment"):
        ServerSettings.from_run_config({"method": "fedavg"})
    with pytest.raises(ConfigError, match="round-timeout"):
        ServerSettings.from_run_config({"experiment": "x.yaml", "round-timeout": 0})


def test_sites_that_keep_their_case_records_send_only_suppressed_metrics(federation, fast_experiment, tmp_path):
    shared = run_flower_method(FakeGrid(node_configs(federation)), settings(fast_experiment, tmp_path / "a", "fedavg"))
    grid = FakeGrid(node_configs(federation, **{"share-case-records": False}))
    run = run_flower_method(grid, settings(fast_experiment, tmp_path / "b", "fedavg"))
    evaluate = [r for r in grid.replies if r.metadata.message_type == "evaluate"]
    assert evaluate and all(r.content.config_records[wire.STATUS]["kind"] == wire.EVAL_METRICS for r in evaluate)
    assert all("case_id" not in r.content.config_records["eval.0.text"] for r in evaluate)
    metrics = run.metrics
    assert set(metrics["site"]) == set(SITES)  # no pooled row: it would need every case
    suppressed = metrics["suppressed"].astype(bool)
    assert suppressed.any() and (~suppressed).any() and metrics.loc[suppressed, "value"].isna().all()
    assert set(metrics.loc[suppressed, "n_cases"]) == {"<2"}  # counts under the site's min_count never leave it
    # the site computed exactly the rows the server computes from shared records
    per_site = shared.metrics[shared.metrics["site"] != "pooled"].reset_index(drop=True)
    pd.testing.assert_frame_equal(metrics.reset_index(drop=True), per_site, check_dtype=False)
    assert not (run.out / "predictions" / "fedavg.csv").exists()
    assert (run.out / "summary.csv").read_text().splitlines()[:4] == (shared.out / "summary.csv").read_text().splitlines()[:4]
