"""`python -m sweep.report`: turn a results directory into figures and a Markdown report.

    python -m sweep.report --results results                 # writes results/report/report.md
    python -m sweep.report --results /tmp/r1 --metric test_ssim
    python -m sweep.report --results /tmp/r1 --group "cifar10 reconstruct"   # one comparable group
    python -m sweep.report --results /tmp/colour --chroma-gain 1.5   # colorization figures at chroma gain 1.5
    python -m sweep.report --results runs/opt --storage sqlite:///opt.db --study opt
    python -m sweep.report --results postgresql://user@host/db --artifacts /shared/artifacts   # a cluster's sweep, in ./report-host-db

A folder holding several comparable groups (trials that differ in more than the factors a
space varied: other data, another task, other --epochs) gets one report per group, listed
in REPORT/report.md; `--group NAME` writes one group's alone.

The report itself is `sweep.analysis.report.write_report`. It never trains and never
imports Keras.
"""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path

from sweep.errors import SpecError, StoreError, SweepError, must_be
from sweep.results.schema import METRICS, goal

RANKED = [name for name in METRICS if goal(name) is not None]  # metrics with a better direction
TOP = 10  # rows in the table of top models: enough to see the pattern, short enough to read

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sweep.report",
        description="Write DIR/report/: figures (PNG and SVG) and report.md with the latent-size correlation, "
        "power law, linear reference, factor effects, top models and galleries of a sweep.",
        epilog="Example: python -m sweep.report --results /tmp/r1",
    )
    parser.add_argument(
        "--results", default="results",
        help="results directory of a sweep, or the --storage URL of a sweep run on many machines (its results "
        "table holds every machine's rows) (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--out", help="where to write the report (default: RESULTS/report; for a URL, ./report-HOST-DATABASE)")
    parser.add_argument(
        "--group", metavar="NAME",
        help="analyse only this comparable group (default: each group of the folder apart; the report names them)",
    )  # fmt: skip
    parser.add_argument(
        "--artifacts", metavar="DIR_OR_URL",
        help="the sweep's --artifacts store, where the galleries' pictures are (default: the results directory's trials/)",
    )  # fmt: skip
    parser.add_argument("--metric", default="test_mse", choices=RANKED, help="the error to analyse (default: %(default)s)")
    parser.add_argument(
        "--data-dir",
        action="append",
        help="folder holding cifar-10-batches-py/ for the PCA reference (default: the --data-dir the sweep recorded); "
        "repeat to try several",
    )
    parser.add_argument(
        "--chroma-gain", type=float, metavar="S",
        help="colorization: give the PSNR gain and colourfulness of the calibrated configurations at chroma gain S "
        "(0 to 4: the predicted chroma scaled about gray, as python -m sweep.apply --chroma-gain S), read off each "
        "trial's stored gain curve (default: gain 1, the models' own colours; the report gives s* apart)",
    )  # fmt: skip
    parser.add_argument("--no-reference", action="store_true", help="skip the PCA reference (it reads the training images)")
    parser.add_argument("--top", type=int, default=TOP, help="rows in the table of top models (default: %(default)s)")
    parser.add_argument("--storage", help="Optuna storage URL (e.g. sqlite:///study.db) for the study's own figures")
    parser.add_argument("--study", help="Optuna study name (default: the study named in the rows)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.top < 1:
        raise SweepError(must_be("--top", None, ">= 1", args.top))
    if args.chroma_gain is not None:
        from sweep.analysis.colour import GAIN_RANGE  # (pandas: only with the flag, not for --help)

        if not GAIN_RANGE[0] <= args.chroma_gain <= GAIN_RANGE[1]:
            raise SpecError(f"--chroma-gain {args.chroma_gain:g}: a gain in [{GAIN_RANGE[0]:g}, {GAIN_RANGE[1]:g}] "
                            "(the range of the gain curve each calibrated trial stores)")  # fmt: skip
    from sweep.results import is_url, mask_url

    if is_url(args.results):
        from sweep.results.shared import READ_TIMEOUT, shared_rows

        if not shared_rows(args.results, READ_TIMEOUT, writer=False).statuses():
            raise StoreError(f"--results {mask_url(args.results)}: no rows in its results table yet; run python -m sweep.grid --storage URL first")
        results: str | Path = args.results
    else:
        results = Path(args.results)
        if not results.is_dir():
            raise StoreError(f"--results {mask_url(args.results)}: no such directory; give the --results folder of a sweep, or its --storage URL")
        if not any((results / "rows").glob("*.json")):
            raise StoreError(f"--results {args.results}: no trial rows (rows/*.json) yet; run python -m sweep.grid --results {args.results} first")
    from sweep.analysis.report import NotWritable, write_report  # pandas, scipy, matplotlib: not for --help

    out = Path(args.out) if args.out else (url_folder(results) if isinstance(results, str) else results / "report")
    from sweep.results.shared import mask_args

    command = " ".join(["python -m sweep.report", *mask_args(sys.argv[1:] if argv is None else argv, paste=True)])  # (the report shows it, to copy)
    try:
        pictures = fetch_pictures(args.artifacts, results, out) if args.artifacts else None
        path = write_report(
            results, out, metric=args.metric, data_dirs=args.data_dir, reference=not args.no_reference,
            top=args.top, storage=args.storage, study=args.study, command=command, pictures=pictures, group=args.group,
            chroma_gain=args.chroma_gain,
        )  # fmt: skip
    except (NotWritable, OSError) as err:  # a read-only results folder (or --out)
        if not isinstance(err, NotWritable) and err.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise  # (not about writing: a missing data file says so itself)
        why = getattr(err, "strerror", None) or "not writable"
        if args.out:
            raise StoreError(f"--out {out}: the report cannot be written there ({why}); give --out DIR, a folder you can write") from None
        raise StoreError(f"--results {mask_url(str(args.results))}: the report cannot be written to {out} ({why}); give --out DIR to write it elsewhere") from None
    for line in groups_said(path, chosen=args.group is not None):
        print(line)
    where = f" (the report of {mask_url(args.results)}; --out DIR writes it elsewhere)" if isinstance(results, str) and not args.out else ""
    print(f"report: {path} (figures beside it){where}")
    return 0


def url_folder(url: str) -> Path:
    """Where a storage URL's report goes by default: ./report-HOST-DATABASE (named, so two
    clusters' reports never overwrite each other)."""
    import re
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    name = "-".join(p for p in (parts.hostname, parts.path.strip("/").rsplit("/", 1)[-1]) if p)
    return Path("report-" + (re.sub(r"[^A-Za-z0-9._]+", "-", name).strip("-") or parts.scheme.split("+")[0]))


def groups_said(path: Path, chosen: bool = False) -> list[str]:
    """The report's groups, as the command says them: one line each."""
    import json

    try:
        summary = json.loads((path.parent / "summary.json").read_text())
    except (OSError, ValueError):
        return []
    if "groups" in summary:
        return [f"{len(summary['groups'])} comparable groups, analysed apart:"] + [
            f"  {name}: {g['trials']} trials -> {path.parent / g['folder'] / 'report.md'}" for name, g in summary["groups"].items()
        ]
    return [f"group: {summary['group']}" + ("" if chosen else " (the only one)")] if summary.get("group") else []


def fetch_pictures(where: str, results: str | Path, out: Path) -> Path:
    """Copy the complete trials' reconstruction pictures from the artefact store `where` to
    OUT/.pictures/trials/<key>/ (where the galleries look); return OUT/.pictures."""
    from sweep.artifacts import Artifacts
    from sweep.results import load_results

    store, pictures = Artifacts(where), out / ".pictures"
    store.check()
    frame = load_results(results)
    for key in frame.loc[frame["status"] == "complete", "trial_key"]:
        target = pictures / "trials" / key / "reconstructions.png"
        if not target.exists():
            store.get(key, "reconstructions.png", target)
    return pictures
