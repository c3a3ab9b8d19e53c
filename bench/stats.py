"""Small statistics helpers: percentiles of samples, in the units the tables use."""

from collections.abc import Iterable, Sequence


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """Linear-interpolated percentile of already sorted values (fraction in 0..1)."""
    if not sorted_values:
        return None
    position = (len(sorted_values) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    weight = position - low
    return sorted_values[low] * (1 - weight) + sorted_values[high] * weight


def distribution_ms(values: Iterable[float]) -> dict[str, float | int | None]:
    """p50, p90, p99 and max of values given in seconds, in milliseconds."""
    ordered = sorted(values)
    summary: dict[str, float | int | None] = {"n": len(ordered)}
    for name, fraction in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)):
        value = percentile(ordered, fraction)
        summary[name] = None if value is None else round(value * 1000, 3)
    return summary


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return percentile(ordered, 0.5) or 0.0


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or not b:
        return None
    return round(a / b, 2)
