"""Statistics over per-case records (no torch): small-count suppression for now."""

from medfed.stats.suppression import suppress_count

__all__ = ["suppress_count"]
