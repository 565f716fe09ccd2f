"""``fsd`` commands: parse the command line, build the Config, hand over to an entry point.

Overrides come three ways, all ending up as dotted ``key=value`` pairs:
positional ``train.fold=3``, ``--set train.fold=3``, and ``--train.fold 3`` (what
``mlflow run -P train.fold=3`` appends for a parameter the MLproject does not declare).

Starting is cheap: building the parser imports each entry point's module, and those import
mlflow, TensorFlow and the stages only inside the functions that run a command, so ``fsd
--help`` and ``fsd COMMAND --help`` load neither (tests/unit/test_cli.py holds them under a CPU
bound). A command that needs TensorFlow imports it here first, with its C++ start-up logs
(oneDNN notices, absl's pre-init warning, which TF 2.21 prints whatever TF_CPP_MIN_LOG_LEVEL
says) kept off the terminal unless ``-v``; they are shown if the import fails.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from fsd.cluster.runtime import RayUnavailable
from fsd.config import ConfigError, load_config

log = logging.getLogger("fsd")

# Entry points, in pipeline order; each module has add_arguments(parser) and run(cfg, args).
COMMANDS = {
    "featurize": "fsd.entrypoints.featurize",
    "train-fold": "fsd.entrypoints.train_fold",
    "baseline": "fsd.entrypoints.baseline",
    "ensemble": "fsd.entrypoints.ensemble",
    "distill": "fsd.entrypoints.distill",
    "sweep": "fsd.entrypoints.sweep",
    "main": "fsd.entrypoints.pipeline",
    "report": "fsd.entrypoints.report",
    "predict": "fsd.entrypoints.predict",
    "export": "fsd.entrypoints.export",
    "serve": "fsd.entrypoints.serve",
    "download": "fsd.entrypoints.download",
    "ui": "fsd.entrypoints.ui",
}


# The commands whose run imports TensorFlow (training, the ensemble, serving the model).
TENSORFLOW_COMMANDS = {"train-fold", "ensemble", "distill", "sweep", "main", "predict", "serve"}


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up logs on file descriptor 2 sent to a temporary
    file (shown only when the import fails); Python-level TF warnings are set to ERROR."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _load(module: str):
    import importlib

    return importlib.import_module(module)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fsd",
        description="Train, compare and serve sound classifiers (FSDKaggle2018 8th-place recipe), "
        "every step tracked in MLflow.",
        epilog="Each command takes --config and key=value overrides; `fsd COMMAND --help` for more.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in COMMANDS.items():
        if only is not None and name != only:
            continue  # one command's modules only (`fsd predict --exported` without TensorFlow)
        mod = _load(module)
        p = sub.add_parser(name, help=mod.HELP, description=mod.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--config", default="experiments/demo.yaml",
                       help="experiment YAML, or a name under experiments/ (default: %(default)s)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field by dotted key, e.g. train.fold=3 (repeatable)")
        mod.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def split_overrides(extra: Sequence[str]) -> list[str]:
    """Turn leftover ``key=value`` and ``--key value`` / ``--key=value`` tokens into overrides."""
    out: list[str] = []
    items = list(extra)
    i = 0
    while i < len(items):
        tok = items[i]
        if tok.startswith("--"):
            key = tok[2:]
            if "=" in key:
                out.append(key)
            elif i + 1 < len(items):
                out.append(f"{key}={items[i + 1]}")
                i += 1
            else:
                raise ConfigError(f"option {tok} has no value")
        else:
            # MLflow passes the declared `overrides` parameter as one space-separated string.
            out.extend(tok.split())
        i += 1
    bad = [o for o in out if "=" not in o]
    if bad:
        raise ConfigError(f"cannot read {bad[0]!r} as an override; write key=value")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(words[0] if words and words[0] in COMMANDS else None)
    args, extra = parser.parse_known_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    mod = _load(args._module)
    try:
        overrides = list(args.overrides) + split_overrides(extra)
        # a command that reads no config (download) runs anywhere, without experiments/
        needs = getattr(mod, "NEEDS_CONFIG", True)
        needs = needs(args) if callable(needs) else needs
        cfg = load_config(args.config, overrides) if needs else None
    except ConfigError as exc:
        parser.exit(2, f"fsd: config error: {exc}\n")
    os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
    # Our own bars show progress; MLflow's per-download bars for a few small files are noise.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    needs_tf = getattr(mod, "NEEDS_TENSORFLOW", args.command in TENSORFLOW_COMMANDS)
    if not args.verbose and (needs_tf(args) if callable(needs_tf) else needs_tf):
        # Retracing at each TTA length is expected and bounded; TF warns about it at length.
        import_tensorflow_quietly()
    try:
        return int(mod.run(cfg, args) or 0)
    except ConfigError as exc:
        log.error("config error: %s", exc)
        return 2
    except RayUnavailable as exc:  # --executor ray without Ray, or no cluster at the address
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted; finished work is kept and a rerun resumes")
        return 130
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        # a folder the user cannot write (a read-only cache, output or export folder): the
        # path and what to do, not a traceback
        where = Path(exc.filename) if exc.filename else None
        while where is not None and not where.exists() and where.parent != where:
            where = where.parent  # a file it could not create: the folder that refused it
        log.error("cannot write %s (%s): make it writable, or point the command elsewhere "
                  "(store.cache_dir=..., output_dir=..., --output ...)", where or "a file",
                  exc.strerror or "permission denied")
        return 2


if __name__ == "__main__":
    sys.exit(main())
