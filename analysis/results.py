"""Every table and figure of the papers under the tables' protocol, with intervals and computed verdicts, in
one generated file.

    python -m analysis.results                      # run what is missing, then write RESULTS.md
    python -m analysis.results --write-only         # write RESULTS.md from the runs that exist
    python -m analysis.results --experiments ts_table2,ts_table4

For each experiment (conf/experiment/<name>.yaml) it runs the protocol of conf/protocol.yaml as Hydra multiruns of
`run.py` (analysis/launch.py): the search (every row x every setting of its grid at the search seed, dev split; one
multirun per setting), the selection (one rule, analysis/protocol.py), the test (the selected setting of each row x
every test seed, test split; one multirun per setting and seed). Every stage is cached, so a second call only
re-reads; a phase whose command already finished is not started again (`--rerun` starts it anyway). Runs go below
`logs/protocol/<experiment>/`; the wall time of every phase is kept in `logs/protocol/ledger.jsonl`, and each
finished phase's evidence (metrics and graded samples, not the responses' text) is packed into
`experiments/evidence/`, from which a machine without the runs restores the phase instead of running it
(analysis/evidence.py). It then writes `RESULTS.md` (analysis/page.py) and its figures in `experiments/figures/`.
Parts whose runs do not exist yet are marked as such.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from analysis.evidence import EVIDENCE_DIR
from analysis.launch import ROOT, run_phases, search_phases, test_phases
from analysis.layouts import LAYOUTS
from analysis.page import write_results
from analysis.protocol import PROTOCOL_FILE, load_protocol
from analysis.runs import selection

EXPERIMENTS = ("ts_table1", "ts_table2", "ts_table3", "ts_table4", "ts_fig4", "tldr_table2", "ts_smollm2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--experiments",
        default=",".join(EXPERIMENTS),
        help="whose phases to run; RESULTS.md always covers the default list as well, so a partial call keeps the "
        "other experiments' sections and verdicts",
    )
    parser.add_argument("--root", default="logs/protocol", help="where the runs go (relative: to the repository)")
    parser.add_argument("--out", default=str(ROOT / "RESULTS.md"))
    parser.add_argument("--write-only", action="store_true", help="write RESULTS.md from existing runs only")
    parser.add_argument("--rerun", action="store_true", help="start every phase even if it finished before")
    parser.add_argument("--protocol", default=str(PROTOCOL_FILE))
    parser.add_argument(
        "--evidence",
        default=str(EVIDENCE_DIR.relative_to(ROOT)),
        help="where each finished phase's evidence is packed, and restored from on a machine without its runs "
        "(relative: to the repository)",
    )
    parser.add_argument("--no-evidence", action="store_true", help="neither pack nor restore evidence")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="phases run at once, each its own multirun (on 2 cores: 2, with OMP_NUM_THREADS=1); two phases that "
        "need one uncached artifact wait for each other on its lock",
    )
    parser.add_argument("overrides", nargs="*", help="added to every run, e.g. paths.cache_dir=/scratch/tsq")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    experiments = [e for e in args.experiments.split(",") if e]
    unknown = [e for e in experiments if e not in LAYOUTS]
    if unknown:
        raise SystemExit(f"unknown experiment(s) {unknown}; known: {sorted(LAYOUTS)}")
    protocol, root, extra = load_protocol(args.protocol), ROOT / args.root, tuple(args.overrides)
    evidence = None if args.no_evidence else ROOT / args.evidence
    if not args.write_only:
        for experiment in experiments:
            table = protocol.with_seeds(LAYOUTS[experiment].seeds)
            run_phases(search_phases(experiment, table, root, extra), root, args.rerun, evidence, args.jobs)
            selected, _ = selection(experiment, table, root)
            missing = [r for r in LAYOUTS[experiment].labels if r not in selected]
            if missing:
                raise RuntimeError(f"{experiment}: the search finished without every setting of rows {missing}")
            tests = test_phases(experiment, selected, table, root, extra)
            run_phases(tests, root, args.rerun, evidence, args.jobs)
    written = [*EXPERIMENTS, *(e for e in experiments if e not in EXPERIMENTS)]
    print(write_results(written, protocol, root, Path(args.out), extra))


if __name__ == "__main__":
    main()
