"""The ``sg4v`` command line.

    sg4v run CONFIG.yaml [--set key.path=value ...]   run the pipeline
    sg4v validate CONFIG.yaml [--set ...]             check a config and print it resolved
    sg4v samples DIR                                  write sample videos for a smoke run
"""

from __future__ import annotations

import argparse
import logging
import sys

from ray_jobs.config import ConfigError, load_config, resolved_yaml


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set frames.every_s=1.0 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sg4v", description="Build ShareGPT4Video-style datasets.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _config_args(sub.add_parser("run", help="run the pipeline on a config"))
    _config_args(sub.add_parser("validate", help="validate a config and print it resolved"))
    samples = sub.add_parser(
        "samples", help="write sample videos, bad inputs, a manifest and tiny models for a smoke run")
    samples.add_argument("directory")
    samples.add_argument("--no-models", action="store_true",
                         help="skip the tiny random-weight models under DIRECTORY/models")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "samples":
        from pathlib import Path

        from ray_jobs.samples import write_samples

        for path in write_samples(args.directory):
            print(path)
        if not args.no_models:
            from ray_jobs.tiny_models import write_smoke_models

            for name, path in write_smoke_models(Path(args.directory) / "models").items():
                print(f"{name}: {path}")
        return 0
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "validate":
        print(resolved_yaml(config), end="")
        return 0
    from ray_jobs.runner import run_pipeline

    try:
        summary = run_pipeline(config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
