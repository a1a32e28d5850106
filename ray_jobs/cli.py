"""The ``sg4v`` command line.

    sg4v run CONFIG.yaml [--set key.path=value ...] [--export F]   run the pipeline
    sg4v export OUTPUT --format F --dest DIR           a self-contained folder a trainer loads
    sg4v validate CONFIG.yaml [--set ...]             check a config and print it resolved
    sg4v samples DIR                                  write sample videos for a smoke run
    sg4v summarize-clip OUTPUT --video-id ID --start S --end E | --spans FILE.csv
                                                      a caption of any sub-span of a video
    sg4v recaption IN.jsonl --to detailed|prompt --dest OUT.jsonl --config CONFIG.yaml
                                                      prompts into detailed captions, or back
"""

from __future__ import annotations

import argparse
import logging
import sys

from operators.dataset.exports import FORMATS
from ray_jobs.config import ConfigError, load_config, resolved_yaml


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set frames.every_s=1.0 (repeatable)")


def _llm_args(parser: argparse.ArgumentParser, config_help: str) -> None:
    parser.add_argument("--config", help=config_help)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set llm.summary_model=gpt-4o-mini")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sg4v", description="Build ShareGPT4Video-style datasets.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the pipeline on a config")
    _config_args(run)
    run.add_argument("--export", dest="exports", action="append", default=[], choices=tuple(FORMATS),
                     metavar="FORMAT", help="after the run, export to OUTPUT/exports/FORMAT "
                     f"(repeatable; one of {', '.join(FORMATS)}); same as export.formats")
    _config_args(sub.add_parser("validate", help="validate a config and print it resolved"))
    calibrate = sub.add_parser(
        "calibrate-keyframes",
        help="print how many keyframes each CLIP similarity threshold gives on a sample of inputs, "
        "for both CLIP features (cls, embed), and the embed threshold matching cls")
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
    export = sub.add_parser("export", help="export a finished output as a self-contained folder "
                            "that the format's own loader reads (see docs/exports.md)")
    export.add_argument("output", help="the run's output directory or URI")
    export.add_argument("--format", required=True, choices=tuple(FORMATS))
    export.add_argument("--dest", help="folder to write (default: OUTPUT/exports/FORMAT)")
    export.add_argument("--overwrite", action="store_true",
                        help="replace an export already in DEST (never anything else)")
    export.add_argument("--keyframes", action="store_true",
                        help="include the keyframe images (webdataset: in the samples)")
    export.add_argument("--video-token", choices=("image", "video"), default="image",
                        help="llava: media token of the first turn: image (LLaVA-NeXT/OneVision/"
                        "Video, default) or video (Video-LLaVA, Video-ChatGPT)")
    export.add_argument("--keyframe-turns", action="store_true",
                        help="llava: one extra conversation turn per keyframe caption")
    export.add_argument("--shard-size", type=int, default=1000,
                        help="webdataset: samples per shard (at most 10000)")
    export.add_argument("--archive-size", default="2G",
                        help="sharegpt4video: largest zip archive, e.g. 500M or 2G (default 2G)")
    report = sub.add_parser("report", help="write a static HTML report of an output")
    report.add_argument("output", help="the run's output directory or URI")
    report.add_argument("--dest", help="where to write (default: OUTPUT/report)")
    clip = sub.add_parser(
        "summarize-clip", help="caption any sub-span of captioned videos from their stored "
        "keyframe captions (one text-only call each; printed and written to OUTPUT/clip_summaries/)")
    clip.add_argument("output", help="the run's output directory or URI")
    clip.add_argument("--video-id", help="the video (with --start and --end)")
    clip.add_argument("--start", type=float, help="span start, seconds from the clip start")
    clip.add_argument("--end", type=float, help="span end, seconds from the clip start")
    clip.add_argument("--spans", help="CSV with columns video_id,start,end: many spans at once")
    clip.add_argument("--dest", help="folder of the Parquet file (default OUTPUT/clip_summaries)")
    _llm_args(clip, "the llm settings (default: the run's OUTPUT/config.yaml)")
    recaption = sub.add_parser(
        "recaption", help="turn short text-to-video prompts into detailed captions in the "
        "dataset's style (--to detailed), or detailed captions into prompts (--to prompt)")
    recaption.add_argument("input", help="JSON Lines: objects with the text (see docs/captioning.md) or strings")
    recaption.add_argument("--to", dest="direction", required=True, choices=("detailed", "prompt"))
    recaption.add_argument("--dest", required=True, help="JSON Lines file to write")
    _llm_args(recaption, "the llm settings: a pipeline config (its llm and test_server sections)")
    sub.add_parser("config-reference",
                   help="print docs/configuration.md (every config key and stage, from the code)")
    samples = sub.add_parser(
        "samples", help="write sample videos, bad inputs, a manifest and tiny models for a smoke run")
    samples.add_argument("directory")
    samples.add_argument("--no-models", action="store_true",
                         help="skip the tiny random-weight models under DIRECTORY/models")
    return parser


def export_or_report(args: argparse.Namespace) -> int:
    if args.command == "report":
        from operators.dataset.report import write_report

        print(write_report(args.output, args.dest))
        return 0
    from operators.dataset.exports import ExportError, ExportOptions, export
    from operators.dataset.exports.options import parse_size

    try:
        options = ExportOptions(overwrite=args.overwrite, video_token=args.video_token,
                                keyframe_turns=args.keyframe_turns, keyframes=args.keyframes,
                                shard_size=args.shard_size, archive_size=parse_size(args.archive_size))
        result = export(args.output, args.format, args.dest, options)
    except (ExportError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    t = result.tally
    print(f"{t.exported} videos exported to {result.dest}"
          + (f" ({t.uncaptioned} without captions left out)" if t.uncaptioned else "")
          + (f" ({t.no_clip_file} spans without a clip file left out)" if t.no_clip_file else ""))
    return 0


def estimate_cost(config, sample: int | None) -> int:
    """What a full run would spend on the API, from keyframe counts on a sample of inputs.

    Keyframe JPEGs of the dry run go to a temporary folder; the output is not touched."""
    import tempfile

    from operators.captions.estimate import (
        compare_methods,
        estimate_from_keyframe_counts,
        render_comparison,
        render_estimate,
    )
    from operators.keyframes.reread import fit_longest
    from ray_jobs.dry_run import run_until

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
    """Keyframes per video for each threshold and both CLIP features (one pass each over the
    same sample), on the CLIP model the config names, and the matching ``embed`` threshold."""
    from operators.keyframes.threshold_match import format_feature_comparison
    from ray_jobs.dry_run import run_until

    try:
        values = [float(t) for t in thresholds.split(",") if t.strip()]
    except ValueError:
        print(f"error: --thresholds {thresholds!r}: expected numbers like 0.9,0.93", file=sys.stderr)
        return 2
    by_feature = {}
    try:
        for feature in ("cls", "embed"):
            clip = config.clip.model_copy(update={"feature": feature})
            rows, rejected, _ = run_until(config.model_copy(update={"clip": clip}), "clip_encode", sample,
                                       ["video_id", "duration", "frame_embeddings", "frame_timestamps"],
                                       skip=("short_caption", "text_embed", "semantic_dedup"))
            by_feature[feature] = rows
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(rows)} videos ({rejected} rejected on the way), model {config.clip.model}, "
          f"channel order {config.clip.channel_order}:")
    print(format_feature_comparison(by_feature, values, config.keyframes))
    return 0


def text_command(args: argparse.Namespace) -> int:
    """``summarize-clip`` and ``recaption``: text-only calls with the run's llm settings."""
    from operators.captions.clip_summary import Span, check_span, read_spans
    from ray_jobs import text_jobs

    try:
        if args.command == "recaption":
            config = text_jobs.run_config(args.config, None, args.overrides)
            usage = text_jobs.recaption_file(args.input, args.dest, args.direction, config)
            print(f"{args.dest}: {usage.calls} call(s), {usage.cached_calls} from the cache, "
                  f"${usage.cost_usd:.4f}")
            return 0
        if args.spans and args.video_id:
            raise ValueError("give either --spans or --video-id/--start/--end, not both")
        if args.spans:
            spans = read_spans(args.spans)
        elif args.video_id and args.start is not None and args.end is not None:
            spans = [check_span(Span(args.video_id, args.start, args.end))]
        else:
            raise ValueError("need --video-id, --start and --end, or --spans FILE.csv")
        config = text_jobs.run_config(args.config, args.output, args.overrides)
        rows, path = text_jobs.summarize_clips(args.output, spans, config, args.dest)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(text_jobs.render_clip_summaries(rows))
    print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command in ("export", "report"):
        return export_or_report(args)
    if args.command in ("summarize-clip", "recaption"):
        return text_command(args)
    if args.command == "config-reference":
        from operators.config_reference import render_reference
        from ray_jobs.config import PipelineConfig
        from ray_jobs.pipeline import stage_docs

        sys.stdout.write(render_reference(PipelineConfig, stage_docs()))
        return 0
    if args.command == "samples":
        from pathlib import Path

        from testing.samples import write_samples

        for path in write_samples(args.directory):
            print(path)
        if not args.no_models:
            from testing.tiny_models import write_smoke_models

            for name, path in write_smoke_models(Path(args.directory) / "models").items():
                print(f"{name}: {path}")
        return 0
    overrides = list(args.overrides)
    if getattr(args, "exports", None):
        overrides.append(f"export.formats=[{', '.join(args.exports)}]")
    try:
        config = load_config(args.config, overrides)
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
    for problem in summary.export_errors:
        print(f"error: {problem}", file=sys.stderr)
    return 2 if summary.export_errors else 0


if __name__ == "__main__":
    sys.exit(main())
