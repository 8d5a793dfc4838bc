"""Student t tail, Welch test and record comparison."""

from __future__ import annotations

import math

import pytest
from conftest import APRIL, MARCH, NAIVE, fixture

from pgolf.compare import compare_records, format_comparison
from pgolf.stats import betainc, mean, std, t_sf, welch_one_sided


def test_mean_std():
    assert mean([1.0, 2.0, 3.0, 4.0]) == 2.5
    assert std([1.0, 2.0, 3.0, 4.0]) == pytest.approx(math.sqrt(5 / 3))
    assert std([1.0]) is None
    with pytest.raises(ValueError):
        mean([])


@pytest.mark.parametrize(
    ("t", "df", "p"),
    [
        (2.0, 5, 0.05097),
        (1.0, 10, 0.17044),
        (0.0, 7, 0.5),
        (2.015048, 5, 0.05),  # t table: 95th percentile, df 5
        (2.763262, 28, 0.005),  # t table: 99.5th percentile, df 28
        (6.313752, 1, 0.05),
    ],
)
def test_t_sf_known_values(t, df, p):
    assert t_sf(t, df) == pytest.approx(p, abs=1e-5)


@pytest.mark.parametrize("t", [-3.0, -0.5, 0.3, 1.7, 12.0])
def test_t_sf_closed_forms(t):
    assert t_sf(t, 1) == pytest.approx(0.5 - math.atan(t) / math.pi, rel=1e-10)  # Cauchy
    assert t_sf(t, 2) == pytest.approx(0.5 - t / (2 * math.sqrt(t * t + 2)), rel=1e-10)
    assert t_sf(-t, 4.5) == pytest.approx(1 - t_sf(t, 4.5), rel=1e-12)


def test_t_sf_large_df_approaches_normal():
    assert t_sf(1.959964, 1e7) == pytest.approx(0.025, abs=1e-6)


def test_betainc_identities():
    assert betainc(1.0, 1.0, 0.3) == pytest.approx(0.3)
    assert betainc(2.5, 1.0, 0.4) == pytest.approx(0.4**2.5)
    assert betainc(3.0, 4.5, 0.2) == pytest.approx(1 - betainc(4.5, 3.0, 0.8), rel=1e-12)
    assert betainc(2.0, 3.0, 0.0) == 0.0 and betainc(2.0, 3.0, 1.0) == 1.0
    with pytest.raises(ValueError):
        betainc(0.0, 1.0, 0.5)


def test_welch_satterthwaite():
    a, b = [1.0, 2.0, 3.0], [2.0, 4.0, 6.0, 8.0]
    va, vb = 1.0 / 3, (20 / 3) / 4
    res = welch_one_sided(a, b)
    assert res["t"] == pytest.approx((5.0 - 2.0) / math.sqrt(va + vb))
    assert res["df"] == pytest.approx((va + vb) ** 2 / (va**2 / 2 + vb**2 / 3))
    assert res["p_value"] == pytest.approx(t_sf(res["t"], res["df"]))
    assert 0 < res["p_value"] < 0.1 and res["reason"] is None


def test_welch_cannot_compute():
    res = welch_one_sided([1.0, 1.1], [1.2])
    assert res["p_value"] is None and res["t"] is None and "at least 2 seeds" in res["reason"]
    res = welch_one_sided([1.0, 1.0], [2.0, 2.0])
    assert res["p_value"] is None and "zero variance" in res["reason"]


def test_compare_best_vs_march_record():
    res = compare_records(fixture(APRIL), fixture(MARCH))
    assert res["a"]["n"] == 3 and res["b"]["n"] == 3
    assert sorted(res["b"]["seeds"]) == [42, 1337, 2025]  # train.log duplicates seed 2025
    assert res["improvement_bpb"] > 0.06
    assert res["improvement_nats"] == pytest.approx(res["improvement_bpb"] * 2.32202732 / 1.06107587, rel=1e-6)
    assert res["p_value"] < 1e-3
    assert res["clears_readme_rule"] is True and res["clears_closing_rule"] is True
    assert "p = " in format_comparison(res)


def test_compare_with_one_seed_baseline_has_no_p_value():
    res = compare_records(fixture(MARCH), fixture(NAIVE))
    assert res["b"]["n"] == 1
    assert res["improvement_bpb"] > 0
    assert res["p_value"] is None and res["t"] is None
    assert "cannot be computed" in res["p_value_reason"]
    assert res["clears_readme_rule"] is None and res["clears_closing_rule"] is None
    assert "cannot be computed" in format_comparison(res)


def test_compare_worse_candidate_fails_readme_rule():
    res = compare_records(fixture(MARCH), fixture(APRIL))
    assert res["improvement_bpb"] < 0
    assert res["p_value"] > 0.99
    assert res["clears_readme_rule"] is False and res["clears_closing_rule"] is False
