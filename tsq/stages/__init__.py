"""The stages: one module per cached artifact (`base_model`, `samples`, `eval`, `forced_budget`, `refined`, `pairs`,
`pairs_export`, `ref_logps`, `policy`, `tldr_policy`), the run context they receive (`context`), the recipe that
calls them in order (`recipe`), and what a run records and prints (`run_metrics`, `reporting`, `model_card`).

Library folders (`tsq.data`, `tsq.models`, `tsq.sampling`, `tsq.evaluation`, `tsq.refinement`, `tsq.training`)
never import this package (tests/test_layout.py).
"""
