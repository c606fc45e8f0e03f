"""nnU-Net's dataset fingerprint, computed at each site and merged on the server from statistics alone.

nnU-Net v2 (Isensee et al., Nature Methods 2021; ``DatasetFingerprintExtractor``) fingerprints a pooled
dataset by, for every training case: cropping to the nonzero region (``crop_to_nonzero``: any channel != 0,
holes filled), recording the spacing and the cropped shape (both in nnU-Net's array axis order, the reverse
of nibabel's x, y, z) and the cropped share of the volume, and sampling a fixed number of foreground
(label > 0) intensities per channel *per case*. Its intensity statistics are those of that sample: every
case weighs the same, however large its tumour.

Here no voxel leaves a site, and no per-case intensity either. Round 1 (:func:`site_fingerprint`) sends
per case only the spacing, cropped shape and cropped share (nnU-Net's medians need them; nnU-Net's own
``crop_to_nonzero`` runs at the site), and per channel the site's aggregate over its K_s cases with
foreground: K_s, the mean of their case means m_s, M_s = sum_c [var_c + (mean_c - m_s)^2], the minimum
and the maximum (no case's tumour size or intensity). The server fixes common histogram edges from the
minima and maxima; round 2 (:func:`site_histograms`) sends, per channel, the sum over the site's cases of
each case's foreground histogram normalised to mass 1. :func:`merge_fingerprints` then gives nnU-Net's
fingerprint of the pooled federation:

* exactly: ``spacings``, ``shapes_after_crop``, ``median_relative_size_after_cropping`` (per-case values),
  and per channel ``min``, ``max``, ``mean`` = sum_s K_s m_s / K and ``std`` with
  var = (1/K) sum_s [M_s + K_s (m_s - mean)^2] = (1/K) sum_c [var_c + (mean_c - mean)^2] over the K cases
  with foreground (Chan et al.'s parallel merge): the moments of the equal-weight mixture of the cases'
  foreground intensities, which nnU-Net's sample estimates;
* approximately: ``median``, ``percentile_00_5``, ``percentile_99_5`` from the mixture histogram (CDF
  interpolated linearly within a bin): within one bin width, (max - min) / ``bins``, of the exact mixture
  percentile. nnU-Net's own values carry the sampling error of its sample on top.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medfed.errors import ConfigError, MedfedError
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
class CaseGeometry:
    """One training case: nnU-Net-order spacing and cropped shape, and the cropped share of the volume."""

    spacing: list[float]
    shape_after_crop: list[int]
    relative_size_after_cropping: float


@dataclass
class ChannelMoments:
    """One channel's foreground intensities at one site, aggregated over its cases (each case weighing 1)."""

    cases: int = 0  # cases with foreground
    mean: float = 0.0  # mean of the case means
    m2: float = 0.0  # sum over cases of [var_c + (mean_c - mean)^2]
    min: float | None = None
    max: float | None = None

    def add_case(self, values: np.ndarray) -> None:
        """Welford-style update with one case's foreground values (float64)."""
        case_mean, case_var = float(values.mean()), float(values.var())
        self.cases += 1
        delta = case_mean - self.mean
        self.mean += delta / self.cases
        self.m2 += case_var + delta * (case_mean - self.mean)
        low, high = float(values.min()), float(values.max())
        self.min = low if self.min is None else min(self.min, low)
        self.max = high if self.max is None else max(self.max, high)


@dataclass
class SiteFingerprint:
    """Round 1 of one site: per-case geometry and per-channel aggregates (no voxel, no case id)."""

    site: str
    channels: list[ChannelMoments]
    cases: list[CaseGeometry] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"site": self.site, "channels": [vars(c) for c in self.channels],
                "cases": [vars(c) for c in self.cases]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SiteFingerprint:
        return cls(data["site"], [ChannelMoments(**c) for c in data["channels"]],
                   [CaseGeometry(**c) for c in data["cases"]])


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
    """Round 1 at one site over its training cases (train + val, what nnU-Net trains on)."""
    out: SiteFingerprint | None = None
    for item in _training_cases(site):
        cropped, foreground, share = _cropped(item)
        if out is None:
            out = SiteFingerprint(site.name, [ChannelMoments() for _ in range(cropped.shape[0])])
        out.cases.append(CaseGeometry(
            # the header's float32 voxel size, as nnU-Net's readers return it (medfed rounds it to 6 decimals)
            spacing=[float(np.float32(s)) for s in item["spacing"][::-1]],
            shape_after_crop=[int(s) for s in cropped.shape[1:]],
            relative_size_after_cropping=share,
        ))
        if foreground.any():
            for c, moments in enumerate(out.channels):
                moments.add_case(cropped[c][foreground].astype(np.float64))
    if out is None:
        raise MedfedError(f"site {site.name}: no training case to fingerprint")
    return out


def histogram_edges(fingerprints: Sequence[SiteFingerprint], bins: int = DEFAULT_BINS) -> np.ndarray:
    """Common edges per channel, (channels, bins + 1), spanning the federation's foreground minimum to maximum."""
    if bins < 1:
        raise ConfigError(f"histogram bins must be at least 1, got {bins}")
    channels = len(fingerprints[0].channels)
    edges = np.empty((channels, bins + 1))
    for c in range(channels):
        present = [f.channels[c] for f in fingerprints if f.channels[c].cases]
        if not present:
            raise MedfedError("no training case of any site has foreground (label > 0); nnU-Net's intensity "
                              "statistics need some: check the sites' labels (e.g. enhancing_label)")
        low, high = min(m.min for m in present), max(m.max for m in present)
        if high <= low:
            high = low + 1.0
        edges[c] = np.linspace(low, high, bins + 1)
    return edges


def site_histograms(site: Site, edges: np.ndarray) -> SiteHistograms:
    """Round 2 at one site: each case's foreground histogram on ``edges``, normalised to 1, summed over cases."""
    mass = np.zeros((edges.shape[0], edges.shape[1] - 1))  # (channels, bins)
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
    properties: dict[str, dict[str, float]] = {}
    total = np.sum([h.mass for h in histograms], axis=0)
    for c in range(len(fingerprints[0].channels)):
        present = [f.channels[c] for f in fingerprints if f.channels[c].cases]
        if not present:
            raise MedfedError("no training case of any site has foreground (label > 0)")
        k = sum(m.cases for m in present)
        mean = sum(m.cases * m.mean for m in present) / k
        var = sum(m.m2 + m.cases * (m.mean - mean) ** 2 for m in present) / k
        low, median, high = mixture_percentiles(total[c], edges[c])
        properties[str(c)] = {
            "mean": float(mean), "median": median, "std": float(np.sqrt(max(var, 0.0))),
            "min": float(min(m.min for m in present)), "max": float(max(m.max for m in present)),
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
