"""Download and extract Pascal VOC 2007 trainval + test and 2012 trainval.

    python scripts/download_voc.py --root data/voc          # -> data/voc/VOCdevkit/VOC2007, VOC2012
    python scripts/download_voc.py --root data/voc --archives 2007-test
    python scripts/download_voc.py --root data/voc --base-url file:///mnt/archives/

Resumable (run again after an interruption), MD5-checked, with a progress bar. Archives stay in
{root}/downloads unless --delete-archives. Errors (offline, checksum mismatch) end in one line
"error: ..." on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys

from detector.data.download import VOC_ARCHIVES, download_voc
from detector.data.errors import DatasetError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="data/voc", help="destination folder (VOCdevkit/ goes inside)")
    parser.add_argument("--archives", nargs="+", choices=sorted(VOC_ARCHIVES), default=list(VOC_ARCHIVES))
    parser.add_argument("--base-url", help="a mirror or file:// folder holding the archives under their names")
    parser.add_argument("--delete-archives", action="store_true", help="remove each archive once extracted")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        devkit = download_voc(
            args.root, archives=args.archives, base_url=args.base_url,
            progress=not args.no_progress, keep_archives=not args.delete_archives,
        )  # fmt: skip
    except (DatasetError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"VOC ready in {devkit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
