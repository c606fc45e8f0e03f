"""FedLD (Zeng et al., MICCAI 2024): margin control and principal-gradient aggregation on hand-computed
cases, the Gram path against a dense SVD written from the authors' description, the rank-one special case,
and what the method refuses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medfed.errors import ConfigError
from medfed.fl.client import MarginControl
from medfed.fl.strategies import FedLD, build_strategy
from medfed.fl.strategies.fedld import principal_coefficients
from medfed.fl.update import ClientUpdate
from medfed.tasks import ClassificationConfig, SegmentationConfig, build_task


def _round(strategy: FedLD, global_weights, rows, counts=None, history=None):
    counts = counts or [1] * len(rows)
    batch = [ClientUpdate(f"s{i}", global_weights + np.asarray(r, np.float32), n)
             for i, (r, n) in enumerate(zip(rows, counts, strict=True))]
    state = {"history": np.ones_like(global_weights) if history is None else history}
    return strategy.aggregate(global_weights, iter(batch), state)


def dense_reference(updates: np.ndarray, weights: np.ndarray, k_proportion: float, variant: str) -> np.ndarray:
    """FedLD's aggregated update by the description, with explicit loops and a dense SVD of G (K x d)."""
    num_clients = updates.shape[0]
    _, singular, directions = np.linalg.svd(updates, full_matrices=False)
    s = singular**2 / num_clients  # eigenvalues of G G^T / K
    kept = max(1, int(num_clients * k_proportion))
    out = np.zeros(updates.shape[1])
    for i in range(num_clients):
        revised = np.zeros(updates.shape[1])
        for j in range(kept):
            w = directions[j].copy()
            votes = (updates @ w >= 0).sum() - (updates @ w < 0).sum()  # calibrate: most clients agree with w_j
            if votes < 0 or (votes == 0 and (updates @ w).sum() < 0):  # a tie: the sign of the summed projections
                w = -w
            projection = (updates[i] @ w) / (w @ w) * w
            if variant == "projection":
                direction = projection / np.linalg.norm(projection)
            else:
                direction = np.sign(updates[i] @ w) ** 2 * w / np.linalg.norm(w)
            revised += direction * np.linalg.norm(updates[i]) * s[j] / s.sum()
        out += weights[i] * revised
    return out


# ----------------------------------------------------------------- margin control
def test_margin_control_by_hand():
    task = build_task(ClassificationConfig(labels=["a", "b"]))
    # logits 0 and ln 3: p = 0.5 and 0.75 -> rows (0.5, 0.5), (0.25, 0.75); the -1 target is masked
    outputs = torch.tensor([[0.0, np.log(3.0)], [5.0, 1.0]], requires_grad=True)
    batch = {"label": torch.tensor([[1.0, 0.0], [-1.0, -1.0]])}
    penalty = MarginControl(0.1).output_penalty(task, outputs, batch)
    assert penalty.item() == pytest.approx(0.1 * np.log(1 + 0.25 + 0.25 + 0.0625 + 0.5625), rel=1e-6)
    penalty.backward()
    assert outputs.grad[1].abs().sum() == 0  # masked predictions are not regularised
    # the penalty falls as predictions become less confident: log(1 + ||P||^2) is smallest at p = 1/2
    confident = MarginControl(1.0).output_penalty(task, torch.tensor([[6.0, -6.0]]), {"label": torch.ones(1, 2)})
    unsure = MarginControl(1.0).output_penalty(task, torch.tensor([[0.0, 0.0]]), {"label": torch.ones(1, 2)})
    assert unsure.item() == pytest.approx(np.log(2.0)) and confident > unsure


def test_margin_control_enters_local_training():
    # the same local training with and without the hook ends in different weights
    task = build_task(ClassificationConfig(labels=["a"], batch_size=4))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 1))
    data = [{"image": torch.randn(1, 2, 2), "label": torch.tensor([float(i % 2)]), "case_id": str(i)} for i in range(8)]
    start = {k: v.clone() for k, v in model.state_dict().items()}
    task.local_train(model, data, epochs=2, seed=0)
    plain = model[1].weight.detach().clone()
    model.load_state_dict(start)
    task.local_train(model, data, epochs=2, seed=0, hooks=FedLD(margin_lambda=1.0).client_hooks(model))
    assert not torch.allclose(plain, model[1].weight)


# ----------------------------------------------------------------- aggregation
def test_principal_aggregation_by_hand():
    # g1 = 2x, g2 = x, g3 = y (x, y unit vectors). G G^T / 3 has eigenvalues 5/3 (along (2, 1, 0)/sqrt 5,
    # direction x), 1/3 (direction y) and 0; sum 2; k = int(3 * 0.8) = 2 directions are kept.
    # revised: g1 -> 2 (5/3)/2 x = 5/3 x, g2 -> 5/6 x, g3 -> 1 (1/3)/2 y = 1/6 y
    rows = [[2, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0]]
    strategy = FedLD()
    new, state, diagnostics = _round(strategy, np.zeros(4, np.float32), rows)
    np.testing.assert_allclose(new, [5 / 6, 1 / 18, 0, 0], rtol=1e-6, atol=1e-7)  # FedAvg: [1, 1/3, 0, 0]
    assert diagnostics["principal_tensors"] == 1 and diagnostics["directions"] == 2
    # the history is the EMA of the aggregated update: 0.99 * 1 + 0.01 * u
    np.testing.assert_allclose(state["history"], 0.99 + 0.01 * new, rtol=1e-6)
    # weighting by examples (1, 1, 2): 5/3 / 4 + 5/6 / 4 = 5/8 along x, 1/6 / 2 along y
    weighted, _, _ = _round(FedLD(weighting="examples"), np.zeros(4, np.float32), rows, counts=[1, 1, 2])
    np.testing.assert_allclose(weighted, [5 / 8, 1 / 12, 0, 0], rtol=1e-6, atol=1e-7)


def test_first_round_and_one_element_tensors_take_the_plain_mean():
    strategy = FedLD()
    strategy.use_layout([3, 1])
    rows = [[2, 0, 0, 1], [1, 0, 0, 2], [0, 1, 0, 6]]
    new, state, diagnostics = _round(strategy, np.zeros(4, np.float32), rows, history=np.zeros(4, np.float32))
    np.testing.assert_allclose(new, [1, 1 / 3, 0, 3], rtol=1e-6)
    np.testing.assert_array_equal(state["history"], new)  # the first round sets h = u
    assert diagnostics["principal_tensors"] == 0
    # next round: the 3-vector takes the principal path, the one-element tensor still the mean
    again, _, diagnostics = _round(strategy, np.zeros(4, np.float32), rows, history=state["history"])
    np.testing.assert_allclose(again, [5 / 6, 1 / 18, 0, 3], rtol=1e-6, atol=1e-7)
    assert diagnostics["principal_tensors"] == 1


def test_rank_one_updates_reduce_to_fedavg():
    # all clients move the same way by different amounts: every revised update is the update itself
    rng = np.random.default_rng(0)
    direction = rng.normal(size=20)
    rows = [a * direction for a in (0.5, 1.0, 3.0, 0.2)]
    counts = [5, 1, 2, 8]
    new, _, _ = _round(FedLD(weighting="examples"), np.zeros(20, np.float32), rows, counts=counts)
    fedavg = np.average(np.asarray(rows), axis=0, weights=counts)
    np.testing.assert_allclose(new, fedavg, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("variant", ["projection", "calibrated"])
@pytest.mark.parametrize(("num_clients", "k_proportion"), [(3, 0.8), (6, 0.8), (7, 0.5), (5, 1.0)])
def test_gram_path_equals_dense_svd(num_clients, k_proportion, variant):
    rng = np.random.default_rng(num_clients)
    sizes = [30, 12, 1, 40]
    updates = rng.normal(size=(num_clients, sum(sizes))) * rng.uniform(0.1, 2.0, size=(num_clients, 1))
    counts = rng.integers(1, 50, size=num_clients)
    strategy = FedLD(k_proportion=k_proportion, variant=variant, weighting="examples")
    strategy.use_layout(sizes)
    start = rng.normal(size=sum(sizes)).astype(np.float32)
    batch = [ClientUpdate(f"s{i}", (start + u).astype(np.float32), int(n)) for i, (u, n) in enumerate(zip(updates, counts))]
    new, _, _ = strategy.aggregate(start, iter(batch), {"history": np.ones_like(start)})
    deltas = np.stack([u.weights for u in batch]).astype(np.float64) - start
    counts = counts.astype(float)
    expected, offset = [], 0
    for size in sizes:
        part = deltas[:, offset:offset + size]
        if size == 1:
            expected.append(counts @ part / counts.sum())
        else:
            expected.append(dense_reference(part, counts / counts.sum(), k_proportion, variant))
        offset += size
    np.testing.assert_allclose(new - start, np.concatenate(expected), rtol=1e-3, atol=1e-5)


def test_coefficients_are_batched_over_tensors():
    rng = np.random.default_rng(1)
    blocks = [rng.normal(size=(4, n)) for n in (5, 9)]
    grams = np.stack([b @ b.T for b in blocks])
    weights = np.full(4, 0.25)
    together = principal_coefficients(grams, weights)
    for t, block in enumerate(blocks):
        np.testing.assert_allclose(together[t], principal_coefficients((block @ block.T)[None], weights)[0])


# ----------------------------------------------------------------- configuration
def test_bad_parameters_and_tasks_without_class_probabilities_are_refused():
    for params in ({"k_proportion": 0}, {"gamma": 1.0}, {"weighting": "sizes"}, {"variant": "x"},
                   {"margin_lambda": -1}):
        with pytest.raises(ConfigError, match="fedld"):
            build_strategy("fedld", params)
    segmentation = build_task(SegmentationConfig())
    assert "margin_lambda: 0" in FedLD().check_task(segmentation)
    assert FedLD(margin_lambda=0).check_task(segmentation) is None
    assert FedLD().check_task(build_task(ClassificationConfig())) is None
    assert FedLD(margin_lambda=0).client_hooks(torch.nn.Linear(1, 1)) == []


# ----------------------------------------------------------------- what the paper claims
def test_margin_control_reduces_the_distribution_shift_loss():
    # Zeng et al. 2024: margin control targets the distribution-shift loss, the gap between a local model's
    # loss on the global distribution and on its own. A site with 95% positives trains a linear classifier;
    # the global distribution is balanced. Larger lambda: smaller gap, and a better global loss.
    from torch.nn import functional as F

    task = build_task(ClassificationConfig(labels=["a"], batch_size=16,
                                           optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.5}))

    def cases(n: int, prevalence: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        y = (torch.rand(n, generator=generator) < prevalence).float()[:, None]
        x = torch.randn(n, 1, 2, 2, generator=generator) + (2 * y - 1)[:, :, None, None] * 0.5
        return x, y

    x_local, y_local = cases(200, 0.95, 0)
    x_global, y_global = cases(2000, 0.5, 1)
    local = [{"image": x, "label": y, "case_id": str(i)} for i, (x, y) in enumerate(zip(x_local, y_local))]
    gaps, global_losses = [], []
    for margin_lambda in (0.0, 0.1, 0.3):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 1))
        task.local_train(model, local, epochs=5, seed=0, hooks=FedLD(margin_lambda=margin_lambda).client_hooks(model))
        with torch.no_grad():
            own = F.binary_cross_entropy_with_logits(model(x_local), y_local).item()
            shifted = F.binary_cross_entropy_with_logits(model(x_global), y_global).item()
        gaps.append(shifted - own)
        global_losses.append(shifted)
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < gaps[0] - 0.03
    assert global_losses[2] < global_losses[0]


def test_aggregation_mean_keeps_only_the_margin_control():
    """The "margin control only" ablation: FedAvg's sample-weighted average on every tensor, margin hook kept."""
    from medfed.fl.update import ClientUpdate

    g = np.zeros(4, np.float32)
    rows, counts = np.array([[2, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0]], np.float32), [1, 2, 1]
    strategy = FedLD(aggregation="mean", weighting="examples")
    state = {"history": np.ones(4, np.float32)}  # past the first round: the principal path would apply
    new, _, _ = strategy.aggregate(g, iter([ClientUpdate(f"s{i}", g + r, n) for i, (r, n) in
                                            enumerate(zip(rows, counts, strict=True))]), state)
    np.testing.assert_allclose(new, [(2 + 2) / 4, 1 / 4, 0, 0], rtol=1e-6)  # (1*[2,0] + 2*[1,0] + 1*[0,1]) / 4
    assert len(strategy.client_hooks(torch.nn.Linear(2, 2))) == 1
    with pytest.raises(ValueError, match="aggregation must be"):
        FedLD(aggregation="median")
