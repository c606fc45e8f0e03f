"""nnU-Net's dataset fingerprint, computed at each site and merged on the server from statistics alone.

nnU-Net v2 (Isensee et al., Nature Methods 2021; ``DatasetFingerprintExtractor``) fingerprints a pooled
dataset by, for every training case: cropping to the nonzero region (``crop_to_nonzero``: any channel != 0,
holes filled), recording the spacing and the cropped shape (both in nnU-Net's array axis order, the reverse
of nibabel's x, y, z) and the cropped share of the volume, and sampling a fixed number of foreground
(label > 0) intensities per channel *per case*. Its intensity statistics are those of that sample: every
case weighs the same, however large its tumour.

Here no voxel leaves a site. Round 1 (:func:`site_fingerprint`) sends per case the spacing, cropped shape
and cropped share, and per case and channel the foreground count, mean, variance, minimum and maximum
(nnU-Net's own ``crop_to_nonzero`` runs at the site). The server fixes common histogram edges from the
minima and maxima; round 2 (:func:`site_histograms`) sends, per channel, the sum over the site's cases of
each case's foreground histogram normalised to mass 1. :func:`merge_fingerprints` then gives nnU-Net's
fingerprint of the pooled federation:

* exactly: ``spacings``, ``shapes_after_crop``, ``median_relative_size_after_cropping`` (per-case values),
  and per channel ``min``, ``max``, ``mean`` = (1/K) sum_c mean_c and ``std`` with
  var = (1/K) sum_c [var_c + (mean_c - mean)^2] over the K cases with foreground: the moments of the
  equal-weight mixture of the cases' foreground intensities, which nnU-Net's sample estimates;
* approximately: ``median``, ``percentile_00_5``, ``percentile_99_5`` from the mixture histogram (CDF
  interpolated linearly within a bin): within one bin width, (max - min) / ``bins``, of the exact mixture
  percentile. nnU-Net's own values carry the sampling error of its sample on top.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medfed.integrations.nnunet.export import raw_cases
from medfed.sites.base import Site

PERCENTILES = (0.5, 50.0, 99.5)
DEFAULT_BINS = 10_000


def _crop_to_nonzero():
    """nnU-Net's own crop (imported late: nnunetv2 is an optional extra)."""
    from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero

    return crop_to_nonzero


def to_nnunet_axes(volume: np.ndarray) -> np.ndarray:
    """(C, X, Y, Z) as nibabel reads it -> (C, Z, Y, X) as nnU-Net's NIfTI readers give it."""
    return np.ascontiguousarray(np.asarray(volume).transpose(0, 3, 2, 1))


@dataclass
class CaseStatistics:
    """One training case: nnU-Net-order spacing and cropped shape, cropped share, per-channel foreground moments."""

    spacing: list[float]
    shape_after_crop: list[int]
    relative_size_after_cropping: float
    count: list[int]  # foreground voxels (the same for every channel)
    mean: list[float]
    var: list[float]  # population variance (ddof 0)
    min: list[float]
    max: list[float]


@dataclass
class SiteFingerprint:
    """Round 1 of one site: statistics only (no voxel, no case id)."""

    site: str
    channels: int
    cases: list[CaseStatistics] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"site": self.site, "channels": self.channels, "cases": [vars(c) for c in self.cases]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SiteFingerprint:
        return cls(data["site"], int(data["channels"]), [CaseStatistics(**c) for c in data["cases"]])


@dataclass
class SiteHistograms:
    """Round 2 of one site: per channel, the sum over its cases of each case's normalised foreground histogram."""

    site: str
    mass: np.ndarray  # (channels, bins), each case contributing total mass 1 per channel (if it has foreground)
    cases_with_foreground: int


def _cropped(item: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, float]:
    image = to_nnunet_axes(item["image"]).astype(np.float32, copy=False)
    label = to_nnunet_axes(item["label"]).astype(np.int16, copy=False)
    cropped, seg, _ = _crop_to_nonzero()(image, label.copy())
    share = float(np.prod(cropped.shape[1:]) / np.prod(image.shape[1:]))
    return cropped, seg[0] > 0, share


def _training_cases(site: Site):
    return raw_cases(site, ["train", "val"])


def site_fingerprint(site: Site) -> SiteFingerprint:
    """Round 1 at one site: per training case (train + val, what nnU-Net trains on) its statistics."""
    out: SiteFingerprint | None = None
    for item in _training_cases(site):
        cropped, foreground, share = _cropped(item)
        values = cropped[:, foreground].astype(np.float64)  # (channels, foreground voxels)
        n = values.shape[1]
        stats = CaseStatistics(
            # the header's float32 voxel size, as nnU-Net's readers return it (medfed rounds it to 6 decimals)
            spacing=[float(np.float32(s)) for s in item["spacing"][::-1]],
            shape_after_crop=[int(s) for s in cropped.shape[1:]],
            relative_size_after_cropping=share,
            count=[n] * values.shape[0],
            mean=values.mean(axis=1).tolist() if n else [float("nan")] * values.shape[0],
            var=values.var(axis=1).tolist() if n else [float("nan")] * values.shape[0],
            min=values.min(axis=1).tolist() if n else [float("nan")] * values.shape[0],
            max=values.max(axis=1).tolist() if n else [float("nan")] * values.shape[0],
        )
        if out is None:
            out = SiteFingerprint(site.name, values.shape[0])
        out.cases.append(stats)
    if out is None:
        raise ValueError(f"site {site.name}: no training case to fingerprint")
    return out


def histogram_edges(fingerprints: Sequence[SiteFingerprint], bins: int = DEFAULT_BINS) -> np.ndarray:
    """Common edges per channel, (channels, bins + 1), spanning the federation's foreground minimum to maximum."""
    channels = fingerprints[0].channels
    edges = np.empty((channels, bins + 1))
    for c in range(channels):
        low = min((case.min[c] for f in fingerprints for case in f.cases if case.count[c]), default=0.0)
        high = max((case.max[c] for f in fingerprints for case in f.cases if case.count[c]), default=1.0)
        if high <= low:
            high = low + 1.0
        edges[c] = np.linspace(low, high, bins + 1)
    return edges


def site_histograms(site: Site, edges: np.ndarray) -> SiteHistograms:
    """Round 2 at one site: each case's foreground histogram on ``edges``, normalised to 1, summed over cases."""
    mass = np.zeros((edges.shape[0], edges.shape[1] - 1))
    cases = 0
    for item in _training_cases(site):
        cropped, foreground, _ = _cropped(item)
        if not foreground.any():
            continue
        cases += 1
        for c in range(edges.shape[0]):
            counts, _ = np.histogram(cropped[c][foreground], bins=edges[c])
            mass[c] += counts / counts.sum()
    return SiteHistograms(site.name, mass, cases)


def mixture_percentiles(mass: np.ndarray, edges: np.ndarray, percentiles: Sequence[float] = PERCENTILES
                        ) -> list[float]:
    """Percentiles of the distribution whose histogram is ``mass`` on ``edges``, uniform within each bin."""
    cdf = np.concatenate([[0.0], np.cumsum(mass)])
    cdf /= cdf[-1]
    return [float(np.interp(p / 100.0, cdf, edges)) for p in percentiles]


def merge_fingerprints(fingerprints: Sequence[SiteFingerprint], histograms: Sequence[SiteHistograms],
                       edges: np.ndarray) -> dict[str, Any]:
    """nnU-Net's ``dataset_fingerprint.json`` content for the pooled federation (see the module docstring)."""
    cases = [case for f in fingerprints for case in f.cases]
    channels = fingerprints[0].channels
    properties: dict[str, dict[str, float]] = {}
    total = np.sum([h.mass for h in histograms], axis=0)
    for c in range(channels):
        with_fg = [case for case in cases if case.count[c] > 0]
        means = np.array([case.mean[c] for case in with_fg])
        variances = np.array([case.var[c] for case in with_fg])
        mean = float(means.mean())
        var = float(np.mean(variances + (means - mean) ** 2))
        low, median, high = mixture_percentiles(total[c], edges[c])
        properties[str(c)] = {
            "mean": mean, "median": median, "std": float(np.sqrt(var)),
            "min": float(min(case.min[c] for case in with_fg)), "max": float(max(case.max[c] for case in with_fg)),
            "percentile_99_5": high, "percentile_00_5": low,
        }
    return {
        "spacings": [case.spacing for case in cases],
        "shapes_after_crop": [case.shape_after_crop for case in cases],
        "foreground_intensity_properties_per_channel": properties,
        "median_relative_size_after_cropping": float(np.median([case.relative_size_after_cropping
                                                               for case in cases])),
    }


def federated_fingerprint(sites: Sequence[Site], bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """Both rounds over ``sites`` in this process (each call stands for the work at one site)."""
    fingerprints = [site_fingerprint(site) for site in sites]
    edges = histogram_edges(fingerprints, bins)
    histograms = [site_histograms(site, edges) for site in sites]
    return merge_fingerprints(fingerprints, histograms, edges)
