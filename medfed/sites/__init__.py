"""Site adapters: one per real on-disk format. See :class:`medfed.sites.base.Site`."""

from medfed.sites.base import Site
from medfed.sites.federation import (
    ADAPTERS,
    Federation,
    build_federation,
    load_federation,
)

__all__ = ["ADAPTERS", "Federation", "Site", "build_federation", "load_federation"]
