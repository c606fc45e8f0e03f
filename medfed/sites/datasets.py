"""Datasets of a site's cases: MONAI datasets whose first transform loads a case inside the site.

Kept apart from :mod:`medfed.sites.base` so that reading a site's tables (indexing, summaries, the answer a
Flower node gives to "which site are you") does not import MONAI; :meth:`medfed.sites.base.Site.dataset` builds
them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd
from monai.data import Dataset as MonaiDataset
from monai.transforms import Compose, Transform

from medfed.errors import MedfedError
from medfed.sites.redact import CaseLoadError, error_text, scrub_message

if TYPE_CHECKING:
    from medfed.sites.base import Site


def site_dataset(site: Site, rows: list[dict[str, Any]], split: str,
                 transform: Callable[[dict[str, Any]], dict[str, Any]] | None) -> SiteDataset:
    """The dataset of ``rows`` (private case rows of ``site``): each case loaded, then ``transform``; with no
    ``transform``, the site's default transform for ``split``, its results cached in memory."""
    if transform is None:  # the default transform is deterministic: its results are cached in memory
        return SiteDataset(data=rows, transform=CachedDefault(site, split))
    return SiteDataset(data=rows, transform=Compose([LoadCase(site), transform]))


class SiteDataset(MonaiDataset):
    """MONAI ``Dataset`` that surfaces medfed's own error (MONAI wraps transform errors in ``RuntimeError``)."""

    def __getitem__(self, index: Any) -> Any:
        try:
            return super().__getitem__(index)
        except RuntimeError as err:
            cause: BaseException | None = err
            while cause is not None and not isinstance(cause, MedfedError):
                cause = cause.__cause__
            if cause is None:
                raise
            raise cause from None


#: memory for cached default-transformed cases, per site (``MEDFED_CACHE_MB``, default 1024; 0 disables)
CACHE_BYTES = int(float(os.environ.get("MEDFED_CACHE_MB", "1024")) * 2**20)


def _nbytes(item: dict[str, Any]) -> int:
    return sum(int(v.nbytes) for v in item.values() if hasattr(v, "nbytes"))


class CachedDefault(Transform):
    """Load a case and apply the site's default transform, keeping the result (per site, split and case) while
    the site's cache has room. Items are shallow copies: transforms after this one must not edit arrays in place."""

    def __init__(self, site: Site, split: str) -> None:
        self.site, self.split = site, split
        self.load = Compose([LoadCase(site), *([t] if (t := site.default_transform(split)) is not None else [])])

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        site, key = self.site, (self.split, row["case_id"])
        if key in site._item_cache:
            return dict(site._item_cache[key])
        item = self.load(row)
        size = _nbytes(item)
        if site._item_cache_bytes + size <= CACHE_BYTES:
            site._item_cache[key] = item
            site._item_cache_bytes += size
        return dict(item)


class LoadCase(Transform):
    """First transform of every site dataset: private row -> arrays. An error names the site, the hashed case id,
    the file's role where known and a reason scrubbed of the site's paths and the source id (it may reach the
    round log, checkpoints and the console)."""

    def __init__(self, site: Site) -> None:
        self.site = site

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        try:
            item = self.site._load_case(pd.Series(row))
        except Exception as err:  # noqa: BLE001 - any reader failure becomes the located load error
            raise MedfedError(self.message(err, row)) from None
        item["case_id"] = row["case_id"]
        return item

    def message(self, err: BaseException, row: Mapping[str, Any]) -> str:
        """The one-line load error for ``err``: the adapter's own located message, or site, case, role, reason."""
        site, secrets = self.site, self.site.private_texts(row)
        where = f"site {site.name}, case {row['case_id']}"
        if isinstance(err, MedfedError) and str(err).startswith(where):
            return scrub_message(str(err), secrets)  # the adapter already said where
        if isinstance(err, CaseLoadError):
            reason = f"{err.role} file: {scrub_message(err.reason, secrets)}"
        elif isinstance(err, MedfedError):  # a reader's own reason (RasterReadError, DicomReadError, ...)
            role = f"{site.file_roles[0]} file: " if len(site.file_roles) == 1 else ""
            reason = role + scrub_message(str(err), secrets)
        else:
            reason = error_text(err, secrets)
        return f"{where}: could not be loaded ({reason}); run `medfed validate` on this site"
