"""Number formatting shared by the HTML page and the Markdown summary."""

from __future__ import annotations

import math
from typing import Any


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def fmt(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals, or an en dash when undefined."""
    return f"{float(value):.{digits}f}" if _finite(value) else "–"


def fmt_ci(estimate: Any, low: Any, high: Any, digits: int = 3) -> str:
    """``0.912 (0.850–0.960)``; the interval is left out when there is none."""
    if not _finite(estimate):
        return "–"
    if not (_finite(low) and _finite(high)):
        return fmt(estimate, digits)
    return f"{fmt(estimate, digits)} ({fmt(low, digits)}–{fmt(high, digits)})"


def fmt_p(p: Any) -> str:
    if not _finite(p):
        return "–"
    return "<0.001" if float(p) < 0.001 else f"{float(p):.3f}"


def digits_for(unit: str) -> int:
    """Millimetres to one decimal, unitless scores to three."""
    return 1 if unit == "mm" else 3


def json_safe(value: Any) -> Any:
    """JSON-safe: NaN/inf become null, numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
