"""A finished phase's evidence, packed into the repository so that its verdicts outlive the machine that ran it.

The artifact cache and the protocol's run folders live on one machine; RESULTS.md is computed from the graded
samples they hold. When a phase of the protocol finishes (`analysis.launch.run_phase`), its evidence is packed into
`experiments/evidence/<experiment>/<phase>.tar.gz`: every job's metrics.json and config.yaml, and the graded samples
(and forced-budget rows) of each evaluated model, without the responses' text (the intervals and verdicts read
correctness, lengths and counts only; the text is what makes a table's samples megabytes). On another machine, a
phase that has no ledger entry but has an archive is restored from it instead of being run again: its jobs are
unpacked into the phase's folder with their metrics pointing at the unpacked samples, and its ledger entry (the
original wall time) is appended with the archive it came from. So a protocol too long for one session runs in parts,
each part committed; what a restored phase cannot give is its cached models (a later phase that needs them, such as
the test of a selected setting, trains its own).

Parts run on different machines are pooled only if the pipeline reproduces across machines: an evaluation is
content-addressed by its inputs (its cache key), so two archives holding the same key must hold the same graded
samples. Every search phase evaluates the base model, for instance, so a fine-tuned base model that came out
differently on another machine is caught when the first phase run there is packed.

    python -m analysis.evidence list     # the archives and what each holds
    python -m analysis.evidence check    # the evaluations that two archives disagree on (exit 1 if any)
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import logging
import sys
import tarfile
from pathlib import Path

from tsq.cache import atomic_file, read_jsonl
from tsq.stages.forced_budget import FORCED_FILE
from tsq.stages.run_metrics import METRICS_FILE, RunMetrics
from tsq.stages.samples import SAMPLES_FILE

log = logging.getLogger(__name__)

EVIDENCE_DIR = Path(__file__).resolve().parents[1] / "experiments" / "evidence"
PHASE_FILE = "phase.json"  # the archive's own record: the phase, its ledger entry, what was left out
DROPPED_COLUMNS = ("text",)  # left out of the packed samples (the responses themselves)
EVIDENCE_FOLDER = "evidence"  # inside a job's folder: one folder per evaluated model (role)


def archive_path(phase_id: str, evidence_dir: Path) -> Path:
    return evidence_dir / f"{phase_id}.tar.gz"


def slim_jsonl(path: Path) -> bytes:
    """The JSON lines of `path` without the dropped columns, each record's other values untouched."""
    rows = read_jsonl(path)
    return "".join(json.dumps({k: v for k, v in r.items() if k not in DROPPED_COLUMNS}) + "\n" for r in rows).encode()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)  # mtime, owner 0: the same evidence packs to the same bytes
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def pack(phase_id: str, sweep_dir: Path, ledger_entry: dict, evidence_dir: Path = EVIDENCE_DIR) -> Path:
    """Pack the finished phase in `sweep_dir` (every job with a metrics.json) into its archive, written atomically;
    raises naming the file when a job's evaluation files are missing."""
    jobs = sorted(sweep_dir.rglob(METRICS_FILE))
    if not jobs:
        raise ValueError(f"{sweep_dir}: no finished job (metrics.json) to pack for phase {phase_id}")
    members: dict[str, bytes] = {}
    for metrics_path in jobs:
        job = metrics_path.parent.relative_to(sweep_dir).as_posix()
        members[f"{job}/{METRICS_FILE}"] = metrics_path.read_bytes()
        config = metrics_path.parent / "config.yaml"
        if config.exists():
            members[f"{job}/config.yaml"] = config.read_bytes()
        # RunMetrics.read resolves a restored job's paths, which are relative to its folder
        for role, where in RunMetrics.read(metrics_path).evaluations.items():
            samples = Path(where["path"]) / SAMPLES_FILE
            if not samples.exists():
                raise FileNotFoundError(f"{metrics_path}: the {role} evaluation's samples {samples} are missing")
            members[f"{job}/{EVIDENCE_FOLDER}/{role}/{SAMPLES_FILE}"] = slim_jsonl(samples)
            if where.get("forced_path"):
                members[f"{job}/{EVIDENCE_FOLDER}/{role}/{FORCED_FILE}"] = slim_jsonl(
                    Path(where["forced_path"]) / FORCED_FILE
                )
    record = {"phase": phase_id, "ledger": ledger_entry, "jobs": len(jobs), "dropped_columns": list(DROPPED_COLUMNS)}
    members[PHASE_FILE] = (json.dumps(record, indent=2) + "\n").encode()
    out = archive_path(phase_id, evidence_dir)
    conflicts = disagreements({**archive_digests(evidence_dir, but=out), str(out): evaluation_digests(members)})
    if conflicts:
        raise NotReproduced(
            f"phase {phase_id} (its run folder {sweep_dir} is kept) is not packed: evaluations with the same inputs "
            "gave different graded samples here and in archives made elsewhere, so the pipeline did not reproduce "
            "across machines and the parts cannot be pooled:\n" + "\n".join(conflicts)
        )
    with atomic_file(out, "wb") as fh:
        with gzip.GzipFile(fileobj=fh, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
            for name in sorted(members):
                _add(tar, name, members[name])
    log.info("evidence of %s: %s (%d jobs, %.0f kB)", phase_id, out, len(jobs), out.stat().st_size / 1e3)
    return out


class NotReproduced(RuntimeError):
    """Two archives hold different graded samples for one evaluation (one cache key)."""


def evaluation_digests(members: dict[str, bytes]) -> dict[str, str]:
    """{an evaluation file's cache address (`<stage>/<key>/<file>`, as it was where it ran): the SHA-256 of its packed
    bytes} for every evaluation file among an archive's `members`."""
    digests = {}
    for name, data in members.items():
        if not name.endswith(f"/{METRICS_FILE}"):
            continue
        job = name.rsplit("/", 1)[0]
        for role, where in json.loads(data).get("evaluations", {}).items():
            where = where.get("packed_from", where)
            for field, file in (("path", SAMPLES_FILE), ("forced_path", FORCED_FILE)):
                if where.get(field):
                    address = "/".join([*Path(where[field]).parts[-2:], file])
                    digests[address] = hashlib.sha256(members[f"{job}/{EVIDENCE_FOLDER}/{role}/{file}"]).hexdigest()
    return digests


def disagreements(digests: dict[str, dict[str, str]]) -> list[str]:
    """One line per evaluation address that the sources (archive -> its `evaluation_digests`) hold with different
    contents, naming the sources of each version."""
    versions: dict[str, dict[str, list[str]]] = {}
    for source, found in digests.items():
        for address, digest in found.items():
            versions.setdefault(address, {}).setdefault(digest, []).append(source)
    return [
        f"{address}: " + "; ".join(f"{digest[:12]} in {', '.join(sources)}" for digest, sources in by_digest.items())
        for address, by_digest in sorted(versions.items())
        if len(by_digest) > 1
    ]


def archive_digests(evidence_dir: Path, but: Path | None = None) -> dict[str, dict[str, str]]:
    """{archive path: its `evaluation_digests`} for every archive below `evidence_dir` other than `but`."""
    return {str(a): evaluation_digests(read_members(a)) for a in sorted(evidence_dir.rglob("*.tar.gz")) if a != but}


def read_members(archive: Path) -> dict[str, bytes]:
    """Every file of an archive, by name."""
    with tarfile.open(archive, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def read_record(archive: Path) -> dict:
    """The archive's phase.json."""
    with tarfile.open(archive, "r:gz") as tar:
        member = tar.extractfile(PHASE_FILE)
        if member is None:
            raise ValueError(f"{archive}: no {PHASE_FILE}; not a tsq evidence archive")
        return json.loads(member.read())


def restore(phase_id: str, sweep_dir: Path, evidence_dir: Path = EVIDENCE_DIR) -> dict | None:
    """Unpack the phase's archive (if there is one) into `sweep_dir`, each job's metrics.json pointing at its
    unpacked samples by a path relative to the job's folder; return the ledger entry to record (the original's, with
    `restored_from`), or None without an archive. Refuses to write over a job that finished here."""
    archive = archive_path(phase_id, evidence_dir)
    if not archive.exists():
        return None
    record = read_record(archive)
    with tarfile.open(archive, "r:gz") as tar:
        names = tar.getnames()
        jobs = sorted({n.rsplit("/", 1)[0] for n in names if n.endswith(f"/{METRICS_FILE}")})
        clashes = [sweep_dir / job / METRICS_FILE for job in jobs if (sweep_dir / job / METRICS_FILE).exists()]
        if clashes:
            raise FileExistsError(
                f"{archive}: phase {phase_id} has no ledger entry here, but {[str(c) for c in clashes]} finished "
                "here; remove them or the archive"
            )
        members = [m for m in tar.getmembers() if m.name != PHASE_FILE and not m.name.endswith(f"/{METRICS_FILE}")]
        tar.extractall(sweep_dir, members=members, filter="data")
        for job in jobs:
            metrics = json.loads(tar.extractfile(f"{job}/{METRICS_FILE}").read())
            for role, where in metrics.get("evaluations", {}).items():
                # relative to the job's folder (RunMetrics.read resolves it), so the folder can move
                unpacked = f"{EVIDENCE_FOLDER}/{role}"
                where["packed_from"] = {k: where[k] for k in ("path", "forced_path") if k in where}
                where["path"] = unpacked
                if "forced_path" in where:
                    where["forced_path"] = unpacked
            with atomic_file(sweep_dir / job / METRICS_FILE) as fh:  # last: a job is finished once this exists
                fh.write(json.dumps(metrics, indent=2) + "\n")
    log.info("%s: restored from %s (%d jobs)", phase_id, archive, len(jobs))
    return {**record["ledger"], "restored_from": archive.name}


def archives(evidence_dir: Path = EVIDENCE_DIR) -> list[dict]:
    """Every archive below `evidence_dir`: its phase, jobs, size and the wall time of the run that made it."""
    rows = []
    for archive in sorted(evidence_dir.rglob("*.tar.gz")):
        record = read_record(archive)
        rows.append(
            {
                "phase": record["phase"],
                "jobs": record["jobs"],
                "kB": round(archive.stat().st_size / 1e3, 1),
                "wall_s": record["ledger"].get("wall_s"),
                "finished_at": record["ledger"].get("finished_at"),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["list", "check"])
    parser.add_argument("--evidence", default=str(EVIDENCE_DIR))
    args = parser.parse_args()
    if args.action == "check":
        digests = archive_digests(Path(args.evidence))
        conflicts = disagreements(digests)
        print("\n".join(conflicts) or f"{len(digests)} archives agree on every evaluation they share")
        sys.exit(1 if conflicts else 0)
    rows = archives(Path(args.evidence))
    for row in rows:
        print(json.dumps(row))
    if not rows:
        print(f"no evidence archive below {args.evidence}")


if __name__ == "__main__":
    main()
