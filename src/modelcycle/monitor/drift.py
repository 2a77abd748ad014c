"""Drift of live values against a bundle's reference profile (``reference.json``), as pure functions.

Numeric features: PSI on the reference histogram's bins, Kolmogorov–Smirnov against the reference CDF
(linear between its 101 percentiles) and the Wasserstein-1 distance to those percentiles (trapezoid weights),
normed by the reference's standard deviation. Categorical features (and predicted classes): chi² against the
reference frequencies and the Jensen–Shannon distance. For those, which one decides follows the sample size,
as Evidently does: a statistical test while the sample is small (≤ ``TEST_MAX_ROWS``), a distance with a
threshold when it is large, because with thousands of rows a test flags shifts too small to matter. Text and
images: MMD between the model's embeddings of live rows and a sample of training rows, with a permutation
test (bounded rows, so its cost is too). The p-values of one report are
corrected together (Benjamini–Hochberg), so 30 features do not mean 30 chances of a false alarm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats
from scipy.spatial.distance import jensenshannon

from modelcycle.data.reference import CategoricalProfile, NumericProfile

TEST_MAX_ROWS = 1000  # up to here a test decides; above it, a distance (Evidently's rule of thumb)
ALPHA = 0.05
NORMED_WASSERSTEIN_THRESHOLD = 0.1
JENSEN_SHANNON_THRESHOLD = 0.1
PSI_EPSILON = 1e-4  # an empty bin's share, so ln(p / q) stays finite (the usual PSI convention)
MMD_PERMUTATIONS = 200
MMD_MAX_ROWS = 500  # the kernel matrix grows with the square of the rows


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's drift: every statistic computed, the one that decides (``method``) and the verdict."""

    feature: str
    kind: str  # numeric | categorical | embedding
    rows: int
    method: str  # ks | chi2 | wasserstein | jensen_shannon | mmd
    score: float  # the deciding statistic: a p-value for tests, a distance otherwise
    threshold: float
    drifted: bool
    statistics: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:  # numpy scalars in, plain JSON-ready values out
        object.__setattr__(self, "score", float(self.score))
        object.__setattr__(self, "drifted", bool(self.drifted))


@dataclass(frozen=True)
class DriftReport:
    """The drift of one sample: per feature, and whether the share of drifted features reaches ``share``."""

    features: list[FeatureDrift]
    share: float
    rows: int

    @property
    def drifted_features(self) -> list[str]:
        return [item.feature for item in self.features if item.drifted]

    @property
    def drifted(self) -> bool:
        return bool(self.features) and len(self.drifted_features) / len(self.features) >= self.share

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "drifted": self.drifted,
            "share": self.share,
            "drifted_features": self.drifted_features,
            "features": [asdict(item) for item in self.features],
        }


def psi(reference_shares: np.ndarray, current_shares: np.ndarray) -> float:
    """Population stability index Σ (c − r) · ln(c / r) over the same bins (shares sum to 1)."""
    reference = np.clip(np.asarray(reference_shares, dtype=np.float64), PSI_EPSILON, None)
    current = np.clip(np.asarray(current_shares, dtype=np.float64), PSI_EPSILON, None)
    return float(np.sum((current - reference) * np.log(current / reference)))


def reference_cdf(percentiles: Sequence[float]) -> Any:
    """The reference CDF: linear between the profile's percentiles (0, 1, …, 100), 0 below, 1 above."""
    points = np.asarray(percentiles, dtype=np.float64)
    levels = np.linspace(0.0, 1.0, points.size)

    def cdf(values: np.ndarray) -> np.ndarray:
        # Ties among the percentiles (a discrete feature) are a jump: the CDF takes its upper value there.
        upper = np.searchsorted(points, values, side="right")
        inside = np.interp(values, points, levels)
        return np.where(upper >= points.size, 1.0, np.where(upper == 0, 0.0, inside))

    return cdf


def ks_statistic(percentiles: Sequence[float], values: np.ndarray) -> float:
    """sup |F_current − F_reference|, checked on both sides of every jump of the empirical CDF."""
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    size = ordered.size
    expected = reference_cdf(percentiles)(ordered)
    above = np.arange(1, size + 1) / size - expected
    below = expected - np.arange(0, size) / size
    return float(max(above.max(), below.max()))


def ks_p_value(statistic: float, reference_rows: int, current_rows: int) -> float:
    """The two-sample KS p-value with the effective size n·m / (n + m): the reference is a sample too."""
    effective = max(1, round(reference_rows * current_rows / (reference_rows + current_rows)))
    return float(stats.kstwo.sf(statistic, effective))


def trapezoid_weights(size: int) -> np.ndarray:
    """Weights that make ``size`` evenly spaced percentiles a distribution (half weight at the ends)."""
    weights = np.ones(size)
    weights[[0, -1]] = 0.5
    return weights / weights.sum()


def wasserstein(percentiles: Sequence[float], values: np.ndarray) -> float:
    """W1 = ∫ |F_current − F_reference| dx with the reference as its percentiles under trapezoid weights."""
    points = np.asarray(percentiles, dtype=np.float64)
    current = np.sort(np.asarray(values, dtype=np.float64))
    grid = np.sort(np.concatenate([points, current]))
    order = np.argsort(points, kind="stable")
    reference_mass = np.cumsum(trapezoid_weights(points.size)[order])
    reference_at = np.searchsorted(points[order], grid[:-1], side="right")
    reference_cumulative = np.where(reference_at > 0, reference_mass[reference_at - 1], 0.0)
    current_cumulative = np.searchsorted(current, grid[:-1], side="right") / current.size
    return float(np.sum(np.abs(reference_cumulative - current_cumulative) * np.diff(grid)))


def histogram_shares(edges: Sequence[float], values: np.ndarray) -> np.ndarray:
    """The share of ``values`` in each reference bin (values past the outer edges count in the outer bins)."""
    inner = np.asarray(edges, dtype=np.float64)[1:-1]
    counts = np.bincount(np.searchsorted(inner, values, side="right"), minlength=inner.size + 1)
    return counts / max(values.size, 1)


def numeric_drift(
    name: str, profile: NumericProfile, values: np.ndarray, *, alpha: float = ALPHA
) -> FeatureDrift:
    """Drift of a numeric feature (NaN dropped) against its reference profile (one with values: percentiles
    and a histogram)."""
    present = np.asarray(values, dtype=np.float64)
    present = present[~np.isnan(present)]
    histogram, percentiles = profile.histogram, profile.percentiles
    if histogram is None or percentiles is None:
        raise ValueError(f"{name}: the reference profile holds no values to compare with")
    reference_counts = np.asarray(histogram.counts, dtype=np.float64)
    statistic = ks_statistic(percentiles, present)
    distance = wasserstein(percentiles, present)
    scale = profile.std or 1.0
    statistics = {
        "psi": psi(reference_counts / reference_counts.sum(), histogram_shares(histogram.edges, present)),
        "ks_statistic": statistic,
        "ks_p_value": ks_p_value(statistic, profile.count, present.size),
        "wasserstein": distance,
        "wasserstein_normed": distance / scale,
    }
    if present.size <= TEST_MAX_ROWS:
        p_value = statistics["ks_p_value"]
        return FeatureDrift(name, "numeric", present.size, "ks", p_value, alpha, p_value < alpha, statistics)
    normed = statistics["wasserstein_normed"]
    threshold = NORMED_WASSERSTEIN_THRESHOLD
    return FeatureDrift(
        name, "numeric", present.size, "wasserstein", normed, threshold, normed > threshold, statistics
    )


def category_shares(profile: CategoricalProfile, values: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Reference and current shares over the reference's categories plus one bucket for all others."""
    frequencies = profile.frequencies
    categories = list(frequencies)
    reference = np.asarray([*frequencies.values(), profile.other_count], dtype=np.float64)
    index = {category: position for position, category in enumerate(categories)}
    current = np.bincount(
        [index.get(str(value), len(categories)) for value in values], minlength=len(categories) + 1
    ).astype(np.float64)
    return reference / reference.sum(), current / max(current.sum(), 1.0)


def categorical_drift(
    name: str, profile: CategoricalProfile, values: Sequence[str], *, alpha: float = ALPHA
) -> FeatureDrift:
    """Drift of a categorical feature (or of predicted classes) against the reference frequencies."""
    reference, current = category_shares(profile, values)
    rows = len(values)
    observed = current * rows
    # chi² needs an expected count in every cell: an unseen category gets the PSI floor, not a division by 0.
    expected = np.clip(reference, PSI_EPSILON, None)
    expected = expected / expected.sum() * rows
    chi2 = stats.chisquare(observed, expected)
    statistics = {
        "psi": psi(reference, current),
        "chi2_statistic": float(chi2.statistic),
        "chi2_p_value": float(chi2.pvalue),
        "jensen_shannon": float(jensenshannon(reference, current, base=2)),
    }
    if rows <= TEST_MAX_ROWS:
        p_value = statistics["chi2_p_value"]
        return FeatureDrift(name, "categorical", rows, "chi2", p_value, alpha, p_value < alpha, statistics)
    distance = statistics["jensen_shannon"]
    threshold = JENSEN_SHANNON_THRESHOLD
    return FeatureDrift(
        name, "categorical", rows, "jensen_shannon", distance, threshold, distance > threshold, statistics
    )


def mmd_squared(kernel: np.ndarray, first: np.ndarray) -> np.ndarray | float:
    """The (biased) squared maximum mean discrepancy from a joint kernel; ``first`` marks one sample (a
    boolean vector), or one sample per column (a matrix: all those splits in one matrix product).
    With w = 1/n₁ on the first sample and −1/n₂ on the second, MMD² = wᵀ K w."""
    weights = np.where(first, 1.0 / first.sum(axis=0), -1.0 / (~first).sum(axis=0))
    values = np.sum(weights * (kernel @ weights), axis=0)
    return float(values) if first.ndim == 1 else values


def rbf_kernel(points: np.ndarray) -> np.ndarray:
    """Gaussian kernel with the median heuristic bandwidth (median pairwise squared distance)."""
    squared = np.sum(points**2, axis=1)
    distances = np.maximum(squared[:, None] + squared[None, :] - 2 * points @ points.T, 0.0)
    scale = np.median(distances[np.triu_indices(len(points), 1)]) or 1.0
    return np.exp(-distances / scale)


def embedding_drift(
    name: str,
    reference: np.ndarray,
    current: np.ndarray,
    *,
    alpha: float = ALPHA,
    permutations: int = MMD_PERMUTATIONS,
    max_rows: int = MMD_MAX_ROWS,
    seed: int = 0,
) -> FeatureDrift:
    """A two-sample test on embeddings: MMD² with a Gaussian kernel, p-value by permutation (seeded), so it
    holds for any distribution of the embeddings (Gretton et al., 2012)."""
    rng = np.random.default_rng(seed)
    if len(current) > max_rows:
        current = current[rng.choice(len(current), size=max_rows, replace=False)]
    points = np.concatenate([reference, current])
    kernel = rbf_kernel(points)
    first = np.zeros(len(points), dtype=bool)
    first[: len(reference)] = True
    observed = float(mmd_squared(kernel, first))
    shuffled = np.stack([rng.permutation(first) for _ in range(permutations)], axis=1)
    exceed = int(np.sum(mmd_squared(kernel, shuffled) >= observed))
    p_value = (exceed + 1) / (permutations + 1)
    statistics = {"mmd_squared": observed, "mmd_p_value": p_value}
    return FeatureDrift(name, "embedding", len(current), "mmd", p_value, alpha, p_value < alpha, statistics)


def corrected(features: list[FeatureDrift], *, alpha: float = ALPHA) -> list[FeatureDrift]:
    """The same results with the tests' p-values adjusted together (Benjamini–Hochberg) and verdicts redone;
    distance-based results are left as they are."""
    tested = [position for position, item in enumerate(features) if item.method in TESTS]
    if not tested:
        return features
    adjusted = stats.false_discovery_control([features[position].score for position in tested], method="bh")
    result = list(features)
    for position, p_value in zip(tested, adjusted, strict=True):
        item = features[position]
        statistics = {**item.statistics, "p_value_adjusted": float(p_value)}
        result[position] = FeatureDrift(
            item.feature,
            item.kind,
            item.rows,
            item.method,
            float(p_value),
            alpha,
            p_value < alpha,
            statistics,
        )
    return result


TESTS = ("ks", "chi2", "mmd")  # their score is a p-value: drifted below alpha
# the distances' scores: drifted above these (the monitoring report draws them as the line to cross)
DISTANCE_THRESHOLDS = {
    "wasserstein": NORMED_WASSERSTEIN_THRESHOLD,
    "jensen_shannon": JENSEN_SHANNON_THRESHOLD,
}
