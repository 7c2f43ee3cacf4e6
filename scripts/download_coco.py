"""Download and extract COCO 2017: train and val images and the instances annotations.

    python scripts/download_coco.py --root data/coco        # -> data/coco/{annotations,train2017,val2017}
    python scripts/download_coco.py --root data/coco --parts annotations val2017
    python scripts/download_coco.py --root data/coco --base-url file:///mnt/archives/

About 19 GB (train2017.zip 18 GB). Resumable (run again after an interruption), MD5-checked,
with a progress bar. Archives stay in {root}/downloads unless --delete-archives. Errors
(offline, checksum mismatch) end in one line "error: ..." on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys

from detector.data.download import COCO_ARCHIVES, download_coco
from detector.data.errors import DatasetError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="data/coco", help="destination folder")
    parser.add_argument(
        "--parts", nargs="+", choices=sorted(COCO_ARCHIVES), default=["annotations", "val2017", "train2017"]
    )
    parser.add_argument("--base-url", help="a mirror or file:// folder holding the zips under their names")
    parser.add_argument("--delete-archives", action="store_true", help="remove each zip once extracted")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        root = download_coco(
            args.root, parts=args.parts, base_url=args.base_url,
            progress=not args.no_progress, keep_archives=not args.delete_archives,
        )  # fmt: skip
    except (DatasetError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"COCO 2017 ready in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
