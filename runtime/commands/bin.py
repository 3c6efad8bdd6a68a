"""``frameqc bin``: write median-binned copies of FITS frames (the upstream imbin.py)."""

from __future__ import annotations

import argparse
import sys

from frameqc.runtime.commands.common import EXIT_FRAME_FAILED, EXIT_OK
from frameqc.runtime.commands.options import positive_int

HELP = "write median-binned copies of FITS frames (imbin.py)"


def add_parser(sub) -> None:
    p = sub.add_parser("bin", help=HELP,
                       description="Median-bin FITS frames in NxN boxes into FILE_binN.fits.",
                       epilog="example:\n  frameqc bin -b 9 h_e_20250708_1_1_1_1.fits\n"
                              "  -> h_e_20250708_1_1_1_1_bin9.fits")
    p.add_argument("-b", type=positive_int, required=True, metavar="N", help="box size")
    p.add_argument("-o", metavar="DIR", help="output directory (default: beside the input)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("files", nargs="+", metavar="FILE")


def run(args: argparse.Namespace) -> int:
    from frameqc.runtime.data.binfile import bin_file
    from frameqc.runtime.errors import FrameError

    failed = 0
    for f in args.files:
        try:
            print(bin_file(f, args.b, args.o, args.overwrite))
        except FrameError as exc:
            print(f"frameqc: {f}: {exc}", file=sys.stderr)
            failed += 1
    return EXIT_FRAME_FAILED if failed else EXIT_OK
