"""``frameqc archive``: reclassify an archive on a Dask cluster into a Parquet dataset."""

from __future__ import annotations

import argparse
import sys

from frameqc.runtime.commands.common import EXIT_FRAME_FAILED, EXIT_OK, sources_arg
from frameqc.runtime.commands.options import positive_int

HELP = "reclassify an archive on a Dask cluster, Parquet out (resumable)"


def add_parser(sub) -> None:
    from frameqc.runtime.archive.cluster import BATCH

    p = sub.add_parser(
        "archive", help=HELP,
        description="Classify every frame of SOURCES on a Dask cluster: a LocalCluster "
                    "here, or an existing scheduler. One Parquet row per frame in OUT, "
                    "with the columns of every other output (path, label, index, "
                    "probability, p_<label>..., doubtful, date_obs, night, model, "
                    "precision, seconds, error). Exit 1 when a frame failed or a task "
                    "could not be done (its frames are then not in OUT; --resume retries "
                    "them). Files in OUT not named part-*.parquet are left alone. Needs the "
                    "dask extra: pip install 'frameqc[dask]'.",
        epilog="examples:\n"
               "  frameqc archive --model touse3.onnx -o results/ /archive/ioo/2024/\n"
               "  frameqc archive --model touse3.onnx -o results/ --resume @frames.txt\n"
               "  frameqc archive --model /shared/touse3.onnx -o /shared/results "
               "--scheduler tcp://head:8786 @frames.txt")
    sources_arg(p)
    p.add_argument("--model", "-m", help="model .onnx (default: $FRAMEQC_MODEL); the "
                   "workers must see it at the same path")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="folder of the Parquet dataset")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="an existing Dask scheduler, e.g. tcp://host:8786")
    where.add_argument("--workers", type=positive_int, metavar="N",
                       help="worker processes of the local cluster (default: usable CPUs)")
    p.add_argument("--resume", action="store_true",
                   help="go on in an OUT that holds rows of this model (same id and "
                        "precision): frames it decided are skipped, frames that failed are "
                        "tried again (their old error rows are then removed); without it "
                        "such an OUT is refused")
    p.add_argument("--batch", type=positive_int, default=BATCH, metavar="N",
                   help=f"frames per task (default {BATCH})")


def run(args: argparse.Namespace) -> int:
    from frameqc.runtime.archive.cluster import archive
    from frameqc.runtime.model import resolve_model_path

    summary = archive(resolve_model_path(args.model), args.output, args.sources,
                      scheduler=args.scheduler, workers=args.workers, resume=args.resume,
                      batch=args.batch)
    print(f"frameqc archive: {summary.line()}; results in {args.output}", file=sys.stderr)
    return EXIT_FRAME_FAILED if summary.errors or summary.lost else EXIT_OK
