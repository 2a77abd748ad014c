"""Drift statistics against scipy and the textbook PSI on the same bins, and the alert's false-alarm rate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from modelcycle.data import Dataset, profile_dataset
from modelcycle.data.profile import categorical_profile, numeric_profile
from modelcycle.monitor.drift import (
    categorical_drift,
    embedding_drift,
    ks_statistic,
    mmd_squared,
    numeric_drift,
    psi,
    rbf_kernel,
    reference_cdf,
    trapezoid_weights,
    wasserstein,
)
from modelcycle.monitor.reference import drift, feature_columns

RNG = np.random.default_rng(0)
REFERENCE = RNG.gamma(2.0, 1.5, size=4000)
PROFILE = numeric_profile(REFERENCE)


@pytest.mark.parametrize("shift", [0.0, 0.4, 2.0])
def test_numeric_statistics_equal_scipy_and_the_textbook_psi_on_the_same_bins(shift: float) -> None:
    current = np.random.default_rng(1).gamma(2.0, 1.5, size=700) + shift
    result = numeric_drift("x", PROFILE, current)
    percentiles = PROFILE.percentiles
    assert result.statistics["ks_statistic"] == pytest.approx(
        stats.kstest(current, reference_cdf(percentiles)).statistic, abs=1e-6
    )
    assert ks_statistic(percentiles, current) == result.statistics["ks_statistic"]
    expected_w = stats.wasserstein_distance(
        current, percentiles, v_weights=trapezoid_weights(len(percentiles))
    )
    assert wasserstein(percentiles, current) == pytest.approx(expected_w, abs=1e-6)
    edges = np.array(PROFILE.histogram.edges, dtype=np.float64)
    edges[0], edges[-1] = -np.inf, np.inf
    reference_share = np.array(PROFILE.histogram.counts) / len(REFERENCE)
    current_share = np.histogram(current, bins=edges)[0] / len(current)
    reference_share, current_share = (np.maximum(share, 1e-4) for share in (reference_share, current_share))
    textbook = np.sum((current_share - reference_share) * np.log(current_share / reference_share))
    assert result.statistics["psi"] == pytest.approx(textbook, abs=1e-6)
    assert result.method == "ks"
    assert result.rows == 700


def test_categorical_statistics_equal_scipy() -> None:
    reference = pd.Series(RNG.choice(["a", "b", "c"], p=[0.5, 0.3, 0.2], size=3000))
    profile = categorical_profile(reference)
    current = ["a"] * 200 + ["b"] * 250 + ["c"] * 40 + ["unseen"] * 10
    result = categorical_drift("colour", profile, current)
    counts = profile.frequencies
    reference_share = np.array([counts["a"], counts["b"], counts["c"], 0]) / 3000
    current_share = np.array([200, 250, 40, 10]) / 500
    expected = np.maximum(reference_share, 1e-4)
    expected = expected / expected.sum() * 500
    chi2 = stats.chisquare(current_share * 500, expected)
    assert result.statistics["chi2_statistic"] == pytest.approx(chi2.statistic, abs=1e-6)
    assert result.statistics["chi2_p_value"] == pytest.approx(chi2.pvalue, abs=1e-6)
    assert result.statistics["jensen_shannon"] == pytest.approx(
        jensenshannon(reference_share, current_share, base=2), abs=1e-6
    )
    assert result.statistics["psi"] == pytest.approx(psi(reference_share, current_share), abs=1e-12)
    assert result.drifted  # b went from 30 % to 50 %


def test_large_samples_are_judged_by_distance_not_by_test() -> None:
    same = numeric_drift("x", PROFILE, np.random.default_rng(2).gamma(2.0, 1.5, size=20_000))
    assert same.method == "wasserstein"
    assert not same.drifted
    moved = numeric_drift("x", PROFILE, np.random.default_rng(2).gamma(2.0, 1.5, size=20_000) + 1.0)
    assert moved.method == "wasserstein"
    assert moved.drifted
    assert moved.score > 0.1


def _table(rows: int, seed: int, shift: float = 0.0) -> Dataset:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"x{index}": rng.normal(shift, 1.0, rows) for index in range(6)})
    frame["kind"] = rng.choice(["red", "green", "blue"], p=[0.6, 0.3, 0.1], size=rows)
    frame["y"] = rng.integers(0, 2, rows)
    types = {**{f"x{index}": "numeric" for index in range(6)}, "kind": "categorical"}
    return Dataset("synthetic", "tabular", "classification", frame, "y", types)  # type: ignore[arg-type]


@pytest.mark.parametrize("rows", [200, 2000])
def test_the_alert_fires_in_at_most_5_percent_of_same_distribution_trials_and_on_a_shift(rows: int) -> None:
    reference = profile_dataset(_table(5000, seed=0))
    alarms = sum(
        drift(reference, feature_columns(_table(rows, seed=trial))).drifted for trial in range(1, 101)
    )
    assert alarms <= 5
    shifted = drift(reference, feature_columns(_table(rows, seed=999, shift=0.5)))
    assert shifted.drifted
    assert {f"x{index}" for index in range(6)} <= set(shifted.drifted_features)


def test_predictions_drift_against_class_priors_and_p_values_are_corrected_together() -> None:
    reference = profile_dataset(_table(5000, seed=0))
    reference.target = categorical_profile(pd.Series(["0"] * 2500 + ["1"] * 2500))
    report = drift(reference, feature_columns(_table(300, seed=3)), predictions=["1"] * 280 + ["0"] * 20)
    by_name = {item.feature: item for item in report.features}
    assert by_name["prediction"].drifted
    assert "p_value_adjusted" in by_name["x0"].statistics
    assert by_name["x0"].score >= by_name["x0"].statistics["ks_p_value"]  # BH never lowers a p-value


def test_mmd_matches_its_definition_and_separates_shifted_embeddings() -> None:
    rng = np.random.default_rng(5)
    first, second = rng.normal(size=(4, 2)), rng.normal(size=(3, 2))
    points = np.concatenate([first, second])
    kernel = rbf_kernel(points)
    scale = np.median([np.sum((a - b) ** 2) for i, a in enumerate(points) for b in points[i + 1 :]])

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.exp(-np.sum((a - b) ** 2) / scale))

    by_hand = (
        np.mean([k(a, b) for a in first for b in first])
        + np.mean([k(a, b) for a in second for b in second])
        - 2 * np.mean([k(a, b) for a in first for b in second])
    )
    assert mmd_squared(kernel, np.arange(7) < 4) == pytest.approx(by_hand, abs=1e-9)
    reference = rng.normal(size=(256, 8))
    same = embedding_drift("embedding", reference, rng.normal(size=(200, 8)))
    moved = embedding_drift("embedding", reference, rng.normal(0.4, 1.0, size=(200, 8)))
    assert not same.drifted
    assert same.score > 0.05
    assert moved.drifted
    assert moved.score < 0.01
    assert moved.method == "mmd"
