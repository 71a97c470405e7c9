"""What a training method cost in tokens, so rows can be compared at equal compute as well as at equal steps.

Generated tokens are what the method sampled from a model to build its training signal (training samples,
refinement candidates, RL rollouts; the evaluations, the same for every row, are not counted). Trained tokens are
completion tokens that entered a training loss, summed over optimizer steps. Where tsq does not record a count
exactly, the function says how it estimates it.
"""

from __future__ import annotations

from collections.abc import Sequence


def preference_trained_tokens(steps: int, rows_per_step: int, chosen_mean: float, rejected_mean: float) -> float:
    """A preference training's trained tokens: every optimizer step scores `rows_per_step` pairs, chosen and rejected
    (the SFT term reads the chosen ones of the same forward); estimated with the pair file's mean lengths (the rows a
    training reads are a uniform draw from it)."""
    return steps * rows_per_step * (chosen_mean + rejected_mean)


def mixture_trained_tokens(
    history: Sequence[dict], init: Sequence[float], last_step: int, batch_size: int, means: Sequence[float]
) -> float:
    """A TL;DR mixture training's trained tokens up to `last_step` (the kept checkpoint): each stretch of steps
    between dev evaluations draws from the two sources with the weights in force (`init`, then each evaluation's
    `alpha_short`, `alpha_long`), estimated with each source's mean response length `means` (System-1, System-2)."""
    total, start, weights = 0.0, 0, list(init)
    for entry in sorted(history, key=lambda h: h["step"]):
        end = min(entry["step"], last_step)
        if end > start:
            total += (end - start) * batch_size * (weights[0] * means[0] + weights[1] * means[1])
            start = end
        weights = [entry["alpha_short"], entry["alpha_long"]]
    if last_step > start:
        total += (last_step - start) * batch_size * (weights[0] * means[0] + weights[1] * means[1])
    return total


def refinement_tokens_estimate(candidates: int, mean_step_tokens: float | None) -> float:
    """Refinement's generated tokens: the candidate steps it sampled, estimated as candidates x the mean length of the
    steps it rewrote (tsq records the number of candidates, not their lengths; a candidate is cut at
    `refine_budget.max_step_tokens`)."""
    if not candidates:  # no step refined: its mean length is undefined (NaN, or None once read back from JSON)
        return 0.0
    return candidates * mean_step_tokens
