"""Command line: check a config before queueing jobs; size its GPU jobs; verify a run
against its manifest; tabulate repeats of a run.

    python -m icet check-config config.yaml toy/toy.yaml
    python -m icet memory config.yaml
    python -m icet verify results/toy
    python -m icet repeats results/toy-* --out results/toy-repeats.md
"""

from __future__ import annotations

import argparse
import sys

from icet.errors import IcetError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="icet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check-config", help="validate config files (merged in order)")
    check.add_argument("files", nargs="+")
    verify = sub.add_parser("verify", help="re-hash a run's files against its manifest.json")
    verify.add_argument("run_dir")
    memory = sub.add_parser("memory", help="predicted peak GPU memory of every GPU rule's jobs")
    memory.add_argument("files", nargs="+", help="config files (merged in order)")
    repeats = sub.add_parser("repeats", help="the checks of several runs of one config side by side")
    repeats.add_argument("run_dirs", nargs="+")
    repeats.add_argument("--out", required=True, help="the Markdown table to write")
    args = parser.parse_args(argv)
    try:
        if args.command == "memory":
            return memory_table(args.files)
        if args.command == "check-config":
            from icet.config import load_config

            config = load_config(*args.files)
            print(f"ok: run '{config['run']}', {len(config['models'])} model(s)")
            return 0
        if args.command == "repeats":
            from icet.report.repeats import write_repeats

            runs = write_repeats(args.run_dirs, args.out)
            failed = sum(len(r["failed"]) for r in runs)
            print(f"{args.out}: {len(runs)} run(s), {failed} failed check(s) in all")
            return 1 if failed else 0
        from icet.provenance import unlisted
        from icet.provenance import verify as verify_run

        problems = verify_run(args.run_dir)
        for line in problems:
            print(line)
        for relative in unlisted(args.run_dir):  # listed for the auditor; not a mismatch
            print(f"not in manifest: {relative}")
        if problems:
            print(f"{len(problems)} file(s) differ from the manifest", file=sys.stderr)
            return 1
        print("ok: every file matches the manifest")
        return 0
    except IcetError as err:
        from icet.redact import redact

        print(redact(f"icet: {err}"), file=sys.stderr)
        return 2


def memory_table(files: list[str]) -> int:
    """Print every GPU job kind's predicted peak beside the card it is planned for (icet.memory);
    1 if one does not fit."""
    from icet.config import load_config
    from icet.memory.jobs import folders_of, run_jobs, table

    config = load_config(*files)
    jobs = run_jobs(config, *folders_of(config))
    print(table(jobs))
    print("peak: predicted peak on the card, CUDA context (~1 GB) included; floor: the least it "
          "runs in (a sweep shrinks its batch down to one row); needs: the smallest common card "
          "holding the floor; config.json from each folder, else the real values in "
          "icet.memory.paper")
    short = [job for job in jobs if not job.fits]
    for job in short:
        print(f"does not fit: {job.estimate.describe()}", file=sys.stderr)
    return 1 if short else 0


if __name__ == "__main__":
    sys.exit(main())
