"""``python -m permafrost``: tools around images.

    python -m permafrost memory [--children] [--json] PID [PID ...]

reports what the OS charges each process and the permafrost images they map
(resident, shared and private bytes; see ``permafrost.memory_report``).
"""

from __future__ import annotations

import argparse
import json
import sys

from ._memory import memory_report


def _memory(args):
    report = memory_report(args.pids, children=args.children)
    if args.json:
        json.dump(report.as_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(report)
    return 0 if report.processes else 1


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m permafrost",
                                     description="Tools around permafrost images.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    mem = sub.add_parser(
        "memory", help="memory of processes and of the images they map",
        description="Report each process's RSS, PSS and USS and, for the "
                    "permafrost images it maps, the bytes resident, shared and "
                    "private. Exits 1 if none of the processes could be measured.")
    mem.add_argument("pids", metavar="PID", type=int, nargs="+")
    mem.add_argument("--children", action="store_true",
                     help="also report every descendant of the PIDs (pool workers)")
    mem.add_argument("--json", action="store_true", help="print the report as JSON")
    mem.set_defaults(run=_memory)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
