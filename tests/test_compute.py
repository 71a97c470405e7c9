"""The token-cost estimates of tsq.training.compute against values computed by hand."""

from tsq.training.compute import mixture_trained_tokens, preference_trained_tokens, refinement_tokens_estimate


def test_compute_estimates_by_hand():
    # 100 steps of 16 pairs, chosen 20 and rejected 30 tokens on average
    assert preference_trained_tokens(100, 16, 20.0, 30.0) == 80_000
    assert refinement_tokens_estimate(48, 5.5) == 264
    # nothing refined (a model that wrote no step): the step length is NaN fresh and None read back from JSON
    assert refinement_tokens_estimate(0, None) == refinement_tokens_estimate(0, float("nan")) == 0
    # 10 steps at 0.5 / 0.5 (means 10 and 30: 20 a row), then 6 steps at 0.75 / 0.25 (15 a row), batch 2, kept at 16
    history = [{"step": 10, "alpha_short": 0.75, "alpha_long": 0.25}, {"step": 20, "alpha_short": 1.0, "alpha_long": 0}]
    assert mixture_trained_tokens(history, [0.5, 0.5], 16, 2, [10.0, 30.0]) == 10 * 2 * 20 + 6 * 2 * 15
    # kept at the last evaluation: the stretch after it is not counted
    assert mixture_trained_tokens(history, [0.5, 0.5], 20, 2, [10.0, 30.0]) == 10 * 2 * 20 + 10 * 2 * 15
