"""Fetch a public dataset into its own layout: ``fsd download fsdkaggle2018 DEST``.

FSDKaggle2018 comes from Zenodo record 2552860 (about 4.6 GiB of zips: audio_train,
audio_test, meta). Each archive is MD5-checked against the record's files API, resumed with
HTTP Range after an interruption, unzipped (zip-slip safe) and recorded as done, so a second
run does nothing. Then point a config at it: ``data.source=fsdkaggle2018 data.root=DEST``.
"""

from __future__ import annotations

import argparse
import logging

from fsd.config import Config

HELP = "download a dataset (fsdkaggle2018: Zenodo record 2552860), MD5-checked and resumable"
NEEDS_CONFIG = False  # the dataset's files are all it needs
log = logging.getLogger(__name__)

DATASETS = {"fsdkaggle2018": ("2552860", ("FSDKaggle2018.meta.zip", "FSDKaggle2018.audio_train.zip",
                                          "FSDKaggle2018.audio_test.zip"))}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", choices=sorted(DATASETS), help="which dataset")
    p.add_argument("dest", metavar="DEST", help="folder to unpack it into (data.root)")
    p.add_argument("--base-url", default="https://zenodo.org",
                   help="the Zenodo server (default: %(default)s; a mirror or a test server)")
    p.add_argument("--no-test", action="store_true",
                   help="skip the test audio (FSDKaggle2018.audio_test.zip, ~1.2 GiB)")
    p.add_argument("--allow-http", action="store_true",
                   help="also fetch plain http URLs (a local test server); only https otherwise")
    p.add_argument("--keep-archives", action="store_true", help="keep the zips after unpacking")
    p.add_argument("--retries", type=int, default=3,
                   help="attempts per archive after a dropped transfer or an MD5 mismatch")


def run(cfg: Config | None, args: argparse.Namespace) -> int:
    from fsd.data.download import DownloadError, download_zenodo

    record, files = DATASETS[args.dataset]
    if args.no_test:
        files = tuple(f for f in files if "audio_test" not in f)
    try:
        done = download_zenodo(args.dest, record, files, args.base_url, retries=args.retries,
                               keep_archives=args.keep_archives, allow_http=args.allow_http)
    except DownloadError as exc:
        log.error("%s", exc)
        return 1
    what = "fetched " + ", ".join(done) if done else "already complete"
    print(f"{args.dataset} is in {args.dest} ({what}); "
          f"use it with: data.source=fsdkaggle2018 data.root={args.dest}")
    return 0
