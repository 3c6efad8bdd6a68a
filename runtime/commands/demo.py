"""``frameqc demo``: synthetic IO:O frames classified by a demo model (no torch, no network)."""

from __future__ import annotations

import argparse

HELP = "classify synthetic IO:O frames with a demo model (no torch, no network)"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo", help=HELP,
        description="Make synthetic IO:O frames (good, shutter failure, mirror wobble) and a "
                    "demo model of the real architecture, then classify them.",
        epilog="example:\n  frameqc demo            # first run builds the model (~20 s)")
    p.add_argument("--dir", help="where the model and frames go (default: ~/.cache/frameqc/demo)")
    p.add_argument("--rebuild", action="store_true", help="build the demo model again")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from frameqc.runtime.demo.builder import run as run_demo

    return run_demo(directory=Path(args.dir) if args.dir else None, rebuild=args.rebuild)
