"""Partitioners: formulas on small cases, the heterogeneity each knob promises, CSV files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from medfed.errors import MedfedError
from medfed.partition import (
    dirichlet_label_skew,
    iid,
    natural,
    quantity_skew,
    read_partition,
    write_partition,
)
from medfed.partition.embedding import (
    cluster,
    embedding_skew,
    encode,
    fixed_random_encoder,
)
from medfed.sites.brats import PARTITION_COLUMNS

IDS = [f"case-{i:03d}" for i in range(240)]


def test_iid_sizes_differ_by_at_most_one_and_the_seed_decides():
    a = iid(IDS, 7, seed=3)
    assert list(a.index) == IDS and a.value_counts().max() - a.value_counts().min() <= 1
    assert a.equals(iid(IDS, 7, seed=3)) and not a.equals(iid(IDS, 7, seed=4))


def test_natural_uses_the_column_and_names_missing_values():
    cases = pd.DataFrame({"case_id": ["a", "b", "c"], "institution": ["H1", "H2", "H1"]})
    assert natural(cases, "institution").to_dict() == {"a": "H1", "b": "H2", "c": "H1"}
    with pytest.raises(ValueError, match="column 'scanner' not found"):
        natural(cases, "scanner")
    cases.loc[1, "institution"] = None
    with pytest.raises(ValueError, match="1 case\\(s\\) have no 'institution': b"):
        natural(cases, "institution")


def _label_distance(assignment: pd.Series, labels: np.ndarray) -> float:
    """Mean total-variation distance between each site's label distribution and the pooled one."""
    frame = pd.DataFrame({"site": assignment.to_numpy(), "label": labels})
    pooled = frame["label"].value_counts(normalize=True)
    per_site = frame.groupby("site")["label"].value_counts(normalize=True).unstack(fill_value=0)
    return float((per_site - pooled).abs().sum(axis=1).mean() / 2)


def test_dirichlet_alpha_controls_label_skew_as_documented():
    labels = np.arange(240) % 4
    skewed = np.mean([_label_distance(dirichlet_label_skew(IDS, labels, 5, 0.1, 10, s), labels) for s in range(5)])
    near_iid = np.mean([_label_distance(dirichlet_label_skew(IDS, labels, 5, 100.0, 10, s), labels) for s in range(5)])
    assert skewed > 0.3 and near_iid < 0.1
    part = dirichlet_label_skew(IDS, labels, 5, 0.1, 10, 0)
    assert part.value_counts().min() >= 10 and sorted(part.index) == IDS


def test_quantity_skew_alpha_controls_size_spread_and_min_size_holds():
    def spread(alpha: float) -> float:
        sizes = [quantity_skew(IDS, 6, alpha, 5, s).value_counts() for s in range(8)]
        return float(np.mean([s.std() / s.mean() for s in sizes]))

    assert spread(0.3) > 2 * spread(50.0)
    assert quantity_skew(IDS, 6, 0.3, 5, 1).value_counts().min() >= 5


def test_impossible_requests_are_clear_errors():
    with pytest.raises(ValueError, match="cannot give 30 sites of at least 10"):
        dirichlet_label_skew(IDS, np.zeros(240), 30, 0.5, 10)
    with pytest.raises(ValueError, match="raise alpha or lower min_size"):
        dirichlet_label_skew(IDS, np.arange(240) % 2, 20, 0.01, 12)
    with pytest.raises(ValueError, match="unique"):
        iid(["a", "a"], 1)


def _appearance_groups(n_per_group: int = 20) -> tuple[list[torch.Tensor], np.ndarray]:
    """Images of three 'scanners': smooth dark, bright noisy, striped."""
    rng = np.random.default_rng(0)
    images, groups = [], []
    _, xx = np.mgrid[:32, :32]
    for group in range(3):
        for _ in range(n_per_group):
            if group == 0:
                image = 0.2 + 0.05 * rng.normal(size=(32, 32))
            elif group == 1:
                image = 0.8 + 0.4 * rng.normal(size=(32, 32))
            else:
                image = 0.5 + 0.5 * np.sin(xx / 1.5 + rng.random() * 6) + 0.05 * rng.normal(size=(32, 32))
            images.append(torch.tensor(image, dtype=torch.float32)[None])
            groups.append(group)
    return [torch.stack(images[i:i + 15]) for i in range(0, len(images), 15)], np.array(groups)


def test_embedding_skew_clusters_appearance_and_skews_it_over_sites():
    from sklearn.metrics import adjusted_rand_score

    batches, groups = _appearance_groups()
    features = encode(batches, fixed_random_encoder(spatial_dims=2, in_channels=1, seed=0))
    assert adjusted_rand_score(groups, cluster(features, 3, seed=0)) > 0.9
    ids = [f"img-{i:02d}" for i in range(len(groups))]
    skewed = np.mean([_label_distance(embedding_skew(ids, features, 3, 3, 0.1, 5, s), groups) for s in range(5)])
    mixed = np.mean([_label_distance(embedding_skew(ids, features, 3, 3, 100.0, 5, s), groups) for s in range(5)])
    assert skewed > 2 * mixed
    a = embedding_skew(ids, features, 3, 3, 0.5, 5, seed=1)
    assert a.equals(embedding_skew(ids, features, 3, 3, 0.5, 5, seed=1))


def test_partition_files_round_trip_and_fets_format(tmp_path):
    part = iid(IDS[:20], 3, seed=0)
    path = write_partition(tmp_path / "partition.csv", part)
    assert read_partition(path).equals(part.rename_axis("case_id"))
    fets = pd.read_csv(write_partition(tmp_path / "partitioning_3.csv", part, fets=True))
    assert tuple(fets.columns) == PARTITION_COLUMNS and set(fets["Partition_ID"]) == {1, 2, 3}
    (tmp_path / "bad.csv").write_text("case_id,hospital\na,H1\n")
    with pytest.raises(MedfedError, match="bad.csv: missing column\\(s\\) site"):
        read_partition(tmp_path / "bad.csv")
