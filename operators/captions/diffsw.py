"""``DiffCaptioner``: differential sliding-window captions (DiffSW) and the summary, by API.

Per video (steps 4-5 of the method): one vision call writes a detailed caption of keyframe 0;
for each later keyframe i, one call gets keyframe i-1, keyframe i, the caption written for
i-1, and both frames' index and timestamp, and describes what changed; then one text-only call
summarizes all timestamped captions. A video's calls run in order; the videos of a batch run at
once on one event loop, owned by the operator and running in its own thread, so the actor's
calling thread only waits for the batch.

``__call__`` is thread-safe (``max_concurrent_batches = 2``): each call only hands its batch to
that one loop (``run_coroutine_threadsafe``) and waits, and every video, of whichever batch,
takes one of the same ``concurrency_per_actor`` slots (an ``asyncio.Semaphore`` made in the
loop). So while the slowest videos of one batch finish, the next batch's videos start in the
slots they free, and the actor keeps ``concurrency_per_actor`` videos in flight: with one batch
at a time it waited for its slowest video before starting any of the next batch.

Every keyframe caption records the call's ``finish_reason``; an answer cut at max_tokens is
asked again once with ``llm.max_tokens_retry``, then the video is rejected with
``truncated_caption``. With ``llm.on_frame_error: skip_frame`` a keyframe refused or answered
unusably is dropped (listed in ``skipped_keyframes``) and the next keyframe is compared with
the last captioned one, its index, timestamp and caption. ``llm.prompts: sharecaptioner`` sends
the released ShareCaptioner-Video strings and layout (``operators.captions.chain_layouts``);
``llm.method: fast`` makes one call per video instead (``operators.captions.fast_caption``).
The summary uses ``llm.summary_model`` when set.

Every call goes through ``LLMClient`` (cache, rate limiter, retries, budget). A video whose
call fails for good is rejected at stage ``caption`` with the client's reason; its finished
calls stay cached, so a rerun pays only for what failed. A video the budget does not let start
is rejected with reason ``budget`` (a rerun tries it again). Errors that would fail every call
alike (bad key, unknown model or endpoint, no quota) stop the run.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, ClassVar

from operators.base import Batch, Operator, Resources, RowRejected, as_list, object_column, reject
from operators.captions.chain_layouts import layout_for
from operators.captions.diffsw_prompts import PromptSet, parse_caption
from operators.captions.fast_caption import fast_message, pick_keyframes
from operators.dataset.schema import LLM_CACHE_DIR
from operators.io import join, open_binary
from operators.llm.budget import Usage
from operators.llm.config import LLMConfig
from operators.llm.errors import BudgetExceededError, LLMCallError, PermanentCallError, RetriesExhaustedError
from operators.llm.messages import resize_for_api

logger = logging.getLogger(__name__)

#: Per-keyframe failures ``llm.on_frame_error: skip_frame`` drops the keyframe for.
SKIPPABLE = frozenset({"refusal", "unusable_answer", "content_policy", "bad_image"})


@dataclass
class VideoCaptions:
    """What one video produced: captions and summary, or the reason it has none."""

    captions: list[dict[str, Any]] | None = None
    summary: str | None = None
    usage: Usage = field(default_factory=Usage)
    skipped: list[dict[str, Any]] | None = None  # keyframes dropped by on_frame_error: skip_frame
    reason: str | None = None
    detail: str = ""


def _caption(k: int, t: float, kind: str, result: Any) -> dict[str, Any]:
    return {"idx": k, "timestamp": t, "kind": kind, "text": result.text, "finish_reason": result.finish_reason}


def _keyframe_uri(output: str, path: str) -> str:
    return path if "://" in path or path.startswith("/") else join(output, path)


class DiffCaptioner(Operator):
    """DiffSW captions and summary of each video's keyframes (see the module docstring).

    Reads ``keyframe_paths`` (JPEGs relative to ``output``) and ``keyframe_timestamps``; adds
    ``captions`` (one ``{idx, timestamp, kind, text}`` per keyframe, ``kind`` "detailed" for
    keyframe 0 and "differential" after it), ``summary`` and ``usage`` (``Usage.as_dict()``:
    calls, cached_calls, input_tokens, output_tokens, cost_usd; set on rejected rows too, so
    the money spent on a failed video is counted).

    ``limiter`` and ``budget`` are objects with the async methods of ``RateLimiter`` and
    ``Budget`` (the job passes proxies of the cluster-wide Ray actors); None makes local ones
    in ``setup()``, for direct calls.
    """

    name: ClassVar[str] = "diff_caption"
    #: The run's cluster-wide limiter and budget (``ray_jobs.services``), bound by the runner.
    run_handles: ClassVar[tuple[str, ...]] = ("limiter", "budget")
    input_columns: ClassVar[tuple[str, ...]] = ("video_id", "keyframe_paths", "keyframe_timestamps")
    output_columns: ClassVar[tuple[str, ...]] = ("captions", "summary", "usage", "skipped_keyframes")
    stateful: ClassVar[bool] = True
    # Batches one actor may run at once (ray_jobs.adapter): the second one fills the slots
    # that the first one's finished videos free (see the module docstring).
    max_concurrent_batches: ClassVar[int] = 2

    def __init__(
        self,
        config: LLMConfig,
        resources: Resources | None = None,
        *,
        output: str,
        limiter: Any = None,
        budget: Any = None,
    ) -> None:
        super().__init__(config, resources)
        self.output = output
        self.limiter = limiter
        self.budget = budget
        # Read and checked here, on the driver: a bad template fails before Ray starts.
        self.prompts = PromptSet.load(config.prompts)
        self._layout = layout_for(config, self.prompts)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._slots: asyncio.Semaphore | None = None

    def default_resources(self) -> Resources:
        # I/O-bound: a quarter CPU each; one batch = the videos one actor keeps in flight.
        return Resources(num_cpus=0.25, concurrency=(1, 4), batch_size=self.config.concurrency_per_actor)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_loop=None, _thread=None, _client=None, _slots=None)
        return state

    def setup(self) -> None:
        from operators.llm.cache import ResponseCache
        from operators.llm.client import LLMClient

        c = self.config
        cache = ResponseCache(c.cache_dir or join(self.output, LLM_CACHE_DIR)) if c.cache else None
        client = LLMClient(c, limiter=self.limiter, budget=self.budget, cache=cache)
        client.setup()  # reads the key: a missing one is a config error, raised here
        self._client = client
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="diff-caption-loop", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Close the HTTP client and stop the event loop (tests and benchmarks)."""
        if self._loop is None or self._thread is None:
            return
        if self._client is not None:
            asyncio.run_coroutine_threadsafe(self._client.close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = self._thread = self._client = None

    def __call__(self, batch: Batch) -> Batch:
        if self._loop is None:
            raise RuntimeError("DiffCaptioner.setup() was not called")
        results = asyncio.run_coroutine_threadsafe(self._caption_batch(batch), self._loop).result()
        columns: dict[str, list[Any]] = {c: [] for c in self.output_columns}
        for i, result in enumerate(results):
            columns["captions"].append(result.captions)
            columns["summary"].append(result.summary)
            columns["usage"].append(result.usage.as_dict())
            columns["skipped_keyframes"].append(result.skipped)
            if result.reason is not None:
                reject(batch, i, self.name, result.reason, result.detail)
        for column, values in columns.items():
            batch[column] = object_column(values)
        return batch

    async def _caption_batch(self, batch: Batch) -> list[VideoCaptions]:
        if self._slots is None:  # bound to this loop, made in it
            self._slots = asyncio.Semaphore(self.config.concurrency_per_actor)
        tasks = [asyncio.ensure_future(self._guarded(batch, i)) for i in range(len(batch["video_id"]))]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            # A fatal error (bad key, unknown model) or a bug: stop the other videos too.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _guarded(self, batch: Batch, i: int) -> VideoCaptions:
        assert self._slots is not None
        out = VideoCaptions()
        video_id = str(batch["video_id"][i])
        async with self._slots:
            try:
                if not await self._client.start_video():
                    spent = await _maybe_await(self._client.budget.spent())
                    limit = self.config.budget_usd
                    return VideoCaptions(
                        reason=BudgetExceededError.REJECT_REASON, detail=f"llm.budget_usd={limit} reached (${spent:.4f} spent)"
                    )
                paths = as_list(batch["keyframe_paths"][i])
                times = [float(t) for t in as_list(batch["keyframe_timestamps"][i])]
                await self._caption_video(video_id, paths, times, out)
            except PermanentCallError as exc:
                if exc.fatal:
                    raise
                self._fail(out, video_id, exc.reason, exc.detail)
            except RetriesExhaustedError as exc:
                # The reason a rerun may overturn (operators.dataset.resume.RETRYABLE_REASONS).
                self._fail(out, video_id, exc.REJECT_REASON, f"{exc.reason}: {exc.detail}")
            except LLMCallError as exc:
                self._fail(out, video_id, exc.reason, exc.detail)
            except RowRejected as exc:
                self._fail(out, video_id, exc.reason, exc.detail)
        return out

    def _fail(self, out: VideoCaptions, video_id: str, reason: str, detail: str) -> None:
        u = out.usage
        spent = f" (paid {u.calls} call(s), ${u.cost_usd:.4f}; {u.cached_calls} from the cache)"
        out.captions = out.summary = out.skipped = None
        out.reason, out.detail = reason, detail[:1800] + spent
        logger.warning("video %s not captioned: %s: %s", video_id, reason, detail[:200])

    async def _caption_video(
        self, video_id: str, paths: list[str], times: list[float], out: VideoCaptions
    ) -> None:
        if not paths:
            raise RowRejected("no_keyframes", "the video has no keyframes")
        if len(times) != len(paths):
            raise RowRejected("bad_keyframes", f"{len(paths)} keyframe paths, {len(times)} timestamps")
        c = self.config
        if c.method == "fast":
            await self._caption_fast(video_id, paths, times, out)
            return
        layout, captions, usage = self._layout, [], out.usage
        out.skipped = []
        previous: bytes | None = None
        for k, (path, t) in enumerate(zip(paths, times, strict=True)):
            image = await self._read_image(path)
            if previous is None:  # keyframe 0, or the first one kept after skipped ones
                message = layout.first(image, k, t)
            else:
                prev = captions[-1]
                message = layout.step(previous, image, prev["text"], prev["idx"], prev["timestamp"], k, t)
            try:
                result = await self._caption_call(message, video_id, usage)
            except PermanentCallError as exc:
                if c.on_frame_error != "skip_frame" or exc.reason not in SKIPPABLE or exc.fatal:
                    raise
                # The chain goes on from the last good caption and its frame (module docstring).
                logger.info("video %s: keyframe %d skipped (%s)", video_id, k, exc.reason)
                out.skipped.append({"idx": k, "timestamp": t, "reason": exc.reason})
                continue
            kind = "detailed" if previous is None else "differential"
            captions.append(_caption(k, t, kind, result))
            previous = image
        if not captions:
            raise RowRejected("no_usable_keyframe", f"all {len(paths)} keyframes were skipped")
        out.captions = captions
        if len(captions) == 1 and not c.summarize_single_keyframe:
            out.summary = captions[0]["text"]
            return
        result = await self._client.complete(
            [layout.summary(captions)],
            max_tokens=c.summary_max_tokens,
            usage=usage,
            parse=parse_caption,
            model=c.text_model,
            caller=video_id,
            max_tokens_retry=c.max_tokens_retry,
        )
        out.summary = result.text

    async def _caption_call(self, message: dict[str, Any], video_id: str, usage: Usage) -> Any:
        c = self.config
        return await self._client.complete(
            [message],
            max_tokens=c.caption_max_tokens,
            usage=usage,
            parse=parse_caption,
            caller=video_id,
            max_tokens_retry=c.max_tokens_retry,
        )

    async def _caption_fast(
        self, video_id: str, paths: list[str], times: list[float], out: VideoCaptions
    ) -> None:
        chosen = pick_keyframes(len(paths), self.config.fast_max_keyframes)
        frames = [await self._read_image(paths[k]) for k in chosen]
        message = fast_message(frames, [times[k] for k in chosen], self.config)
        result = await self._caption_call(message, video_id, out.usage)
        out.captions = [_caption(0, times[0], "fast", result)]
        out.summary = result.text

    async def _read_image(self, path: str) -> bytes:
        uri = _keyframe_uri(self.output, path)

        def read() -> bytes:
            with open_binary(uri) as f:
                data = f.read()
            return resize_for_api(data, self.config.image_longest_side, self.config.image_jpeg_quality)

        try:
            return await asyncio.to_thread(read)
        except FileNotFoundError:
            raise RowRejected("missing_keyframe", f"{uri} does not exist") from None
        except OSError as exc:  # unreadable or not an image (PIL raises OSError subclasses)
            raise RowRejected("bad_keyframe", f"{uri}: {type(exc).__name__}: {exc}") from None




async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value
