"""Command line of the rehearsal mirror.

    python -m icet.mirror build <out> [config.yaml overlay.yaml ...]
    python -m icet.mirror rehearse [--workdir .] [--keep-going] [--profile slurm] [--configfile rehearsal/rehearsal.yaml ...] [target ...]
    python -m icet.mirror check <mirror>      # the mirror against README.md's layout table
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m icet.mirror")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build the mirror of a config")
    build.add_argument("out")
    build.add_argument("configs", nargs="*")
    run = sub.add_parser("rehearse", help="build + serve the mirror, run the DAG on it, verify")
    run.add_argument("--workdir", default=".")
    run.add_argument("--configfile", nargs="+", default=None)
    run.add_argument("--cores", type=int, default=2)
    run.add_argument("--keep-going", action="store_true",
                     help="run every job that does not depend on a failed one (finds every break)")
    run.add_argument("--profile", default=None,
                     help="Snakemake profile (default: rehearsal/); e.g. slurm, on a cluster")
    run.add_argument("targets", nargs="*")
    check = sub.add_parser("check", help="check a built mirror against README.md's layout")
    check.add_argument("mirror")
    args = parser.parse_args(argv)

    if args.command == "build":
        from pathlib import Path

        from icet.config import load_yaml, merge
        from icet.mirror.build import build_mirror
        from icet.mirror.rehearse import OVERLAY, ROOT

        config = load_yaml(ROOT / "config.yaml")
        for path in args.configs or [OVERLAY]:
            config = merge(config, load_yaml(Path(path)))
        record = build_mirror(args.out, config)
        print(f"{args.out}: {len(record['repos'])} repo refs, {len(record['urls'])} URLs")
        return 0
    if args.command == "rehearse":
        from icet.mirror.rehearse import rehearse

        return rehearse(args.workdir, args.configfile, args.targets, args.cores,
                        snakemake_args=["--keep-going"] if args.keep_going else [],
                        profile=args.profile)
    from icet.mirror.layout import check_mirror

    problems = check_mirror(args.mirror)
    for line in problems:
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
