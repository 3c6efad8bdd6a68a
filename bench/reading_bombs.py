"""What refusing hostile FITS layouts costs: time and peak memory of ``read_frame`` on each.

Each file is small on disk and claims far more than the pixel limit once inflated or
walked; each is read in a fresh process so its peak RSS is its own. Prints one row per file
and the machine's load, which the figures depend on.

    python bench/reading_bombs.py
"""

from __future__ import annotations

import bz2
import gzip
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from astropy.io import fits

READ = """
import resource, sys, time
t = time.perf_counter()
from frameqc.runtime.data.reader import read_frame
from frameqc.runtime.errors import FrameError
try:
    read_frame(sys.argv[1]); said = "READ"
except FrameError as exc:
    said = str(exc)
print(f"{time.perf_counter() - t:.2f}", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
      said, sep="\\t")
"""


def header(*cards) -> bytes:
    return fits.Header(list(cards)).tostring().encode()


def empty(kind: str = "IMAGE") -> bytes:
    if kind == "PRIMARY":
        return header(("SIMPLE", True), ("BITPIX", 8), ("NAXIS", 0), ("EXTEND", True))
    return header(("XTENSION", kind), ("BITPIX", 8), ("NAXIS", 0), ("PCOUNT", 0), ("GCOUNT", 1))


def image(side: int, primary: bool = False, *extra) -> bytes:
    first = ("SIMPLE", True) if primary else ("XTENSION", "IMAGE")
    tail = () if primary else (("PCOUNT", 0), ("GCOUNT", 1))
    return header(first, ("BITPIX", -64), ("NAXIS", 2), ("NAXIS1", side), ("NAXIS2", side),
                  *tail, *extra)


def files(d: Path) -> dict[str, Path]:
    side, chunk = 16384, 1 << 24
    gz_zeros, bz_zeros = gzip.compress(b"\0" * chunk, 9), bz2.compress(b"\0" * chunk, 9)
    n = side * side * 8 // chunk  # 2 GiB of float64 zeros, as concatenated members
    made = {
        "gzip, 64 empty HDUs, then 16384^2 float64":
            gzip.compress(empty("PRIMARY") + empty() * 64 + image(side)) + gz_zeros * n,
        "gzip, 16384^2 float64 in the primary":
            gzip.compress(image(side, True)) + gz_zeros * n,
        "bzip2, 16384^2 float64 in the primary":
            bz2.compress(image(side, True)) + bz_zeros * n,
        "gzip, primary ZIMAGE=T ZNAXIS 10x10, NAXIS 16384^2":
            gzip.compress(image(side, True, ("ZIMAGE", True), ("ZNAXIS", 2), ("ZNAXIS1", 10),
                                ("ZNAXIS2", 10))) + gz_zeros * n,
        "gzip, 60 tables of 192 MiB, then a 100^2 image":
            gzip.compress(empty("PRIMARY")) + (gzip.compress(header(
                ("XTENSION", "BINTABLE"), ("BITPIX", 8), ("NAXIS", 2), ("NAXIS1", 1 << 20),
                ("NAXIS2", 192), ("PCOUNT", 0), ("GCOUNT", 1), ("TFIELDS", 1),
                ("TFORM1", f"{1 << 20}B"))) + gz_zeros * (192 * (1 << 20) // chunk)
                + gzip.compress(b"\0" * (-192 * (1 << 20) % 2880))) * 60
            + gzip.compress(image(100) + b"\0" * (100 * 100 * 8 + 2880 - 100 * 100 * 8 % 2880)),
    }
    out = {}
    for i, (name, data) in enumerate(made.items()):
        path = d / f"f{i}.fits{'.bz2' if name.startswith('bzip2') else '.gz'}"
        path.write_bytes(data)
        out[name] = path
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'file':<52} {'on disk':>9} {'seconds':>8} {'peak MB':>8}  outcome")
        for name, path in files(Path(tmp)).items():
            proc = subprocess.run([sys.executable, "-c", READ, str(path)],
                                  capture_output=True, text=True, timeout=600)
            seconds, peak, said = proc.stdout.strip().split("\t")
            print(f"{name:<52} {path.stat().st_size / 1e6:>7.1f}MB {seconds:>8} {peak:>8}  {said}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
