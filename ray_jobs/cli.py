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
    calibrate = sub.add_parser(
        "calibrate-keyframes",
        help="print how many keyframes each CLIP similarity threshold gives on a sample of inputs")
    _config_args(calibrate)
    calibrate.add_argument("--sample", type=int, default=20, help="videos to try (default 20)")
    calibrate.add_argument("--thresholds", default="0.80,0.85,0.88,0.90,0.92,0.93,0.94,0.96,0.98",
                           help="comma-separated thresholds to compare")
    estimate = sub.add_parser(
        "estimate", help="dry run up to keyframe selection; print expected API calls, tokens, "
        "cost and wall time")
    _config_args(estimate)
    estimate.add_argument("--sample", type=int, default=50,
                          help="inputs to run up to keyframes (default 50; 0 = all)")
    export = sub.add_parser("export", help="export a finished output to a training format")
    export.add_argument("output", help="the run's output directory or URI")
    export.add_argument("--format", required=True, choices=("sharegpt4video", "llava", "webdataset"))
    export.add_argument("--dest", help="where to write (default: inside OUTPUT)")
    export.add_argument("--keyframe-turns", action="store_true",
                        help="llava: one extra conversation turn per keyframe caption")
    export.add_argument("--video-root", help="llava: strip this prefix from video paths")
    export.add_argument("--shard-size", type=int, default=1000, help="webdataset: samples per shard")
    report = sub.add_parser("report", help="write a static HTML report of an output")
    report.add_argument("output", help="the run's output directory or URI")
    report.add_argument("--dest", help="where to write (default: OUTPUT/report)")
    samples = sub.add_parser(
        "samples", help="write sample videos, bad inputs, a manifest and tiny models for a smoke run")
    samples.add_argument("directory")
    samples.add_argument("--no-models", action="store_true",
                         help="skip the tiny random-weight models under DIRECTORY/models")
    return parser


def export_or_report(args: argparse.Namespace) -> int:
    if args.command == "report":
        from ray_jobs.report import write_report

        print(write_report(args.output, args.dest))
        return 0
    from ray_jobs.exports import export

    options = {"llava": {"keyframe_turns": args.keyframe_turns, "video_root": args.video_root},
               "webdataset": {"shard_size": args.shard_size}}.get(args.format, {})
    for path in export(args.output, args.format, args.dest, **options):
        print(path)
    return 0


def estimate_cost(config, sample: int | None) -> int:
    """What a full run would spend on the API, from keyframe counts on a sample of inputs.

    Keyframe JPEGs of the dry run go to a temporary folder; the output is not touched."""
    import tempfile

    from operators.keyframes.reread import fit_longest
    from ray_jobs.dry_run import run_until
    from ray_jobs.estimate import (
        compare_methods,
        estimate_from_keyframe_counts,
        render_comparison,
        render_estimate,
    )

    with tempfile.TemporaryDirectory(prefix="sg4v-estimate-") as scratch:
        dry = config.model_copy(update={"output": scratch})
        try:
            rows, rejected, listed = run_until(dry, "select_keyframes", sample,
                                               ["keyframe_timestamps", "width", "height"])
        except (ConfigError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    tried = len(rows) + rejected
    if not rows:
        print(f"no usable video among {tried} tried ({rejected} rejected before captioning)")
        return 0
    total = round(listed * len(rows) / tried)
    sizes = [fit_longest(int(r["width"]), int(r["height"]), config.keyframes.image_longest_side)
             for r in rows]
    counts = [len(r["keyframe_timestamps"]) for r in rows]
    estimate = estimate_from_keyframe_counts(counts, sizes, config.llm, total_videos=total)
    print(f"{listed} inputs listed; dry run on {tried}: {len(rows)} reach captioning, {rejected} "
          f"rejected before it (probe, duration, dedup); scaled to about {total} videos.")
    print(render_estimate(estimate))
    diffsw, fast = compare_methods(counts, sizes, config.llm, total_videos=total)
    print(render_comparison(diffsw, fast))
    return 0


def calibrate_keyframes(config, sample: int, thresholds: str) -> int:
    """Keyframes per video for each threshold, on the CLIP model the config names."""
    from operators.keyframes.calibrate import calibrate, format_calibration_table
    from ray_jobs.dry_run import run_until

    try:
        values = [float(t) for t in thresholds.split(",") if t.strip()]
    except ValueError:
        print(f"error: --thresholds {thresholds!r}: expected numbers like 0.9,0.93", file=sys.stderr)
        return 2
    try:
        rows, rejected, _ = run_until(config, "clip_encode", sample,
                                   ["frame_embeddings", "frame_timestamps"],
                                   skip=("short_caption", "text_embed", "semantic_dedup"))
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import numpy as np

    table = calibrate([np.asarray(r["frame_embeddings"], dtype=np.float32) for r in rows],
                      [list(r["frame_timestamps"]) for r in rows], values, config.keyframes)
    print(f"{len(rows)} videos ({rejected} rejected on the way), model {config.clip.model}:")
    print(format_calibration_table(table, default=config.keyframes.threshold))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command in ("export", "report"):
        return export_or_report(args)
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
    if args.command == "estimate":
        return estimate_cost(config, args.sample or None)
    if args.command == "calibrate-keyframes":
        return calibrate_keyframes(config, args.sample, args.thresholds)
    from ray_jobs.runner import run_pipeline

    try:
        summary = run_pipeline(config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from ray_jobs.adapter import StageSetupError

        message = StageSetupError.find(exc)
        if message is None:
            raise
        print(f"error: a stage could not start: {message}", file=sys.stderr)
        return 1
    print(summary.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
