"""A local OpenAI-compatible server for tests and smoke runs (``FakeOpenAIServer``).

Serves ``POST /v1/chat/completions`` on 127.0.0.1: validates each request (schema, decodable
images, allowed image counts; see :mod:`.fake_chat`), answers deterministically with usage,
enforces requests/min and tokens/min over a sliding window with real 429s, ``Retry-After`` and
``x-ratelimit-*`` headers on every response, injects faults at configured rates (500, 503, queue_full,
timeout, disconnect, malformed body, refusal, 429) and scripted outages (``outage``: every request
fails for a while), and counts everything it served (``stats``
attribute, ``GET /stats``). Fault and latency draws hash the seed, the request body and how many
times that body was seen, so a run is reproducible whatever the arrival order.

Run alone: ``python -m testing.fake_server --port 8000 --rpm 60 --tpm 100000``;
in-process: ``url, stop = FakeOpenAIServer(config).start_in_thread()``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import copy
import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from testing.fake_chat import InvalidRequest, answer, parse_request
from testing.fake_server_config import FakeServerConfig

logger = logging.getLogger(__name__)

REFUSAL_TEXT = "I'm sorry, I can't help with that."


def format_duration(seconds: float) -> str:
    """OpenAI's reset format: "20ms", "1.5s", "6m0s"."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.0f}s"


class _Window:
    """Sliding-window log of (time, tokens) for the limits."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.entries: collections.deque[tuple[float, int]] = collections.deque()
        self.tokens = 0

    def prune(self, now: float) -> None:
        while self.entries and self.entries[0][0] <= now - self.window_s:
            self.tokens -= self.entries.popleft()[1]

    def wait_for_tokens(self, needed: int, limit: int, now: float) -> float:
        free, wait = limit - self.tokens, 0.0
        for t, tokens in self.entries:
            if free >= needed:
                break
            free += tokens
            wait = t + self.window_s - now
        return wait if free >= needed else self.window_s


class FakeOpenAIServer:
    def __init__(
        self,
        config: FakeServerConfig | None = None,
        required_api_key: str | None = None,
        record: bool = False,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.config = config or FakeServerConfig()
        # The time of the limits and the outages: a test's virtual clock can stand in.
        self._now = clock or time.monotonic
        self.required_api_key = required_api_key
        self.url: str | None = None
        #: With ``record``: one dict per valid request, in arrival order (see ``_record``).
        self.record = record
        self._requests: list[dict[str, Any]] = []
        self._window = _Window(self.config.window_s)
        self._seen: collections.Counter[str] = collections.Counter()
        self._scripted: collections.deque[str] = collections.deque()
        self._outage: tuple[float, float, str] = (0.0, 0.0, "503")  # (start, end, fault)
        self._lock = threading.Lock()
        self._stats: dict[str, Any] = {
            "requests": 0,
            "served": 0,
            "rate_limited": 0,
            "bad_requests": 0,
            "unauthorized": 0,
            "faults": collections.Counter(),
            "paths": collections.Counter(),
            "images": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
        }
        self._runner: Any = None

    # --- counters -------------------------------------------------------------------------
    @property
    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters (safe to read from any thread)."""
        with self._lock:
            snap = copy.deepcopy(self._stats)
        snap["faults"], snap["paths"] = dict(snap["faults"]), dict(snap["paths"])
        return snap

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The recorded requests (``record=True``): ``t`` (monotonic arrival time), ``outcome``
        ("ok", "429" or the injected fault), ``model``, ``prompt_tokens``, ``completion_tokens``,
        ``max_tokens``, ``texts`` (every text part, in order), ``images`` (``SeenImage``: size,
        short hash, detail, in order) and ``answer`` (the text answered when ``outcome`` is ok)."""
        with self._lock:
            return list(self._requests)

    def _record(self, t: float, outcome: str, parsed: Any, result: Any) -> None:
        if not self.record:
            return
        entry = {
            "t": t,
            "outcome": outcome,
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "model": parsed.model,
            "max_tokens": parsed.max_tokens,
            "texts": list(parsed.texts),
            "images": list(parsed.images),
            "answer": result.text if outcome == "ok" else None,
        }
        with self._lock:
            self._requests.append(entry)

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._stats[key] += n

    def queue_faults(self, kinds: Iterable[str]) -> None:
        """Inject these faults, in order, into the next requests (before the random ones)."""
        with self._lock:
            self._scripted.extend(kinds)

    def outage(self, seconds: float, kind: str = "503", start_in: float = 0.0) -> None:
        """Fail every request with fault ``kind`` for ``seconds``, from ``start_in`` seconds from
        now (a total outage of the endpoint; ``disconnect`` drops every connection instead)."""
        start = self._now() + start_in
        with self._lock:
            self._outage = (start, start + seconds, kind)

    def outage_left(self) -> float:
        """Seconds until the current outage ends (0 when there is none)."""
        with self._lock:
            return max(0.0, self._outage[1] - max(self._now(), self._outage[0]))

    # --- limits and faults ----------------------------------------------------------------
    def _limit_headers(self, now: float) -> dict[str, str]:
        c, w = self.config, self._window
        reset = format_duration(w.entries[-1][0] + w.window_s - now) if w.entries else "0ms"
        headers = {}
        for name, limit, used in (
            ("requests", c.requests_per_minute, len(w.entries)),
            ("tokens", c.tokens_per_minute, w.tokens),
        ):
            if limit is not None:
                headers[f"x-ratelimit-limit-{name}"] = str(limit)
                headers[f"x-ratelimit-remaining-{name}"] = str(max(0, limit - used))
                headers[f"x-ratelimit-reset-{name}"] = reset
        return headers

    def _over_limit(self, tokens: int, now: float) -> tuple[str, float] | None:
        c, w = self.config, self._window
        if c.requests_per_minute is not None and len(w.entries) >= c.requests_per_minute:
            return "requests", w.entries[0][0] + w.window_s - now
        if c.tokens_per_minute is not None and w.tokens + tokens > c.tokens_per_minute:
            return "tokens", w.wait_for_tokens(tokens, c.tokens_per_minute, now)
        return None

    def _draw(self, body: bytes) -> tuple[str | None, float]:
        """The fault (or None) and the latency of this request, from the seed and the body."""
        digest = hashlib.sha256(body).hexdigest()
        with self._lock:
            n = self._seen[digest]
            self._seen[digest] += 1
            scripted = self._scripted.popleft() if self._scripted else None
            if self._outage[0] <= self._now() < self._outage[1]:
                scripted = self._outage[2]
        h = hashlib.sha256(f"{self.config.seed}:{digest}:{n}".encode()).digest()
        u_fault = int.from_bytes(h[:8], "big") / 2**64
        u_latency = int.from_bytes(h[8:16], "big") / 2**64
        lo, hi = self.config.latency_s
        latency = lo + (hi - lo) * u_latency
        if scripted is not None:
            return scripted, latency
        acc = 0.0
        for kind, rate in sorted(self.config.fault_rates.items()):
            acc += rate
            if u_fault < acc:
                return kind, latency
        return None, latency

    # --- HTTP -----------------------------------------------------------------------------
    async def _chat(self, request: Any) -> Any:
        from aiohttp import web

        def error(status: int, message: str, kind: str, code: str | None = None, **extra: Any) -> Any:
            body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
            return web.json_response(body, status=status, **extra)

        self._count("requests")
        with self._lock:
            self._stats["paths"][request.path] += 1
        if self.required_api_key is not None:
            given = request.headers.get("Authorization", "").removeprefix("Bearer ")
            if given != self.required_api_key:
                self._count("unauthorized")
                return error(
                    401, f"Incorrect API key provided: {given}.", "invalid_request_error", "invalid_api_key"
                )
        raw = await request.read()
        try:
            parsed = parse_request(json.loads(raw))
            allowed = self.config.allowed_image_counts
            if allowed is not None and len(parsed.images) not in allowed:
                raise InvalidRequest(
                    f"expected {allowed} image(s), got {len(parsed.images)}",
                    "messages",
                    "unexpected_image_count",
                )
        except (ValueError, InvalidRequest) as exc:
            self._count("bad_requests")
            if isinstance(exc, InvalidRequest):
                return web.json_response(exc.body(), status=400)
            return error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
        result = answer(parsed)
        tokens = result.prompt_tokens + result.completion_tokens
        now = self._now()
        self._window.prune(now)
        over = self._over_limit(tokens, now)
        if over is not None:
            self._count("rate_limited")
            self._record(now, "429", parsed, result)
            which, wait = over
            headers = self._limit_headers(now)
            headers["retry-after"] = str(max(1, math.ceil(wait)))
            headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
            return error(
                429,
                f"Rate limit reached for {which} per window. Please try again in {format_duration(wait)}.",
                which,
                "rate_limit_exceeded",
                headers=headers,
            )
        self._window.entries.append((now, tokens))
        self._window.tokens += tokens
        headers = self._limit_headers(now)
        fault, latency = self._draw(raw)
        self._record(now, fault or "ok", parsed, result)
        if latency > 0:
            await asyncio.sleep(latency)
        if fault is not None:
            with self._lock:
                self._stats["faults"][fault] += 1
            return await self._fault(fault, request, error, headers, result, parsed.model)
        with self._lock:
            self._stats["served"] += 1
            self._stats["images"] += len(parsed.images)
            self._stats["prompt_tokens"] += result.prompt_tokens
            self._stats["completion_tokens"] += result.completion_tokens
        message = {"role": "assistant", "content": result.text, "refusal": None}
        return web.json_response(
            self._completion(parsed.model, message, result, result.finish_reason), headers=headers
        )

    def _completion(self, model: str, message: dict[str, Any], result: Any, finish: str) -> dict[str, Any]:
        usage = {
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens,
        }
        return {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage,
        }

    async def _fault(
        self,
        fault: str,
        request: Any,
        error: Callable[..., Any],
        headers: dict[str, str],
        result: Any,
        model: str,
    ) -> Any:
        from aiohttp import web

        if fault == "429":
            extra = {**headers, "retry-after": "1", "retry-after-ms": "500"}
            return error(
                429, "Rate limit reached (injected).", "requests", "rate_limit_exceeded", headers=extra
            )
        if fault == "queue_full":  # a server up but at its queue limit (vLLM --max-num-queued-reqs)
            return error(
                503, "The request queue is full; try again later.", "server_error", headers=headers
            )
        if fault in ("500", "503"):
            return error(
                int(fault),
                "The server had an error while processing your request.",
                "server_error",
                headers=headers,
            )
        if fault == "timeout":
            await asyncio.sleep(self.config.hang_s)
            return error(504, "Gateway timeout.", "server_error", headers=headers)
        if fault == "disconnect":
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # the client sees the connection drop
        if fault == "malformed":
            return web.Response(
                text='{"id": "chatcmpl-test", "choices": [{"index": 0, "mess',
                content_type="application/json",
                headers=headers,
            )
        if fault == "refusal":
            message = {"role": "assistant", "content": None, "refusal": REFUSAL_TEXT}
            return web.json_response(self._completion(model, message, result, "stop"), headers=headers)
        raise ValueError(f"unknown fault kind {fault!r}")

    async def _stats_handler(self, request: Any) -> Any:
        from aiohttp import web

        return web.json_response(self.stats)

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self) -> str:
        """Listen (in the running loop) and return the base URL, ending in ``/v1``."""
        from aiohttp import web

        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/stats", self._stats_handler)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/v1"
        logger.info("test server listening on %s", self.url)
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start_in_thread(self) -> tuple[str, Callable[[], None]]:
        """Serve from a daemon thread with its own loop; returns (base URL, stop function)."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # surfaced to the caller below
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            # Handlers still hanging (timeout faults) are cancelled, not left to die with the loop.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

        thread = threading.Thread(target=serve, name="fake-openai-server", daemon=True)
        thread.start()
        ready.wait(30)
        if failure or self.url is None:
            raise RuntimeError(f"test server did not start: {failure[0] if failure else 'timeout'}")

        def stop() -> None:
            if thread.is_alive():
                asyncio.run_coroutine_threadsafe(self.stop(), loop).result(10)
                loop.call_soon_threadsafe(loop.stop)
                thread.join(10)

        return self.url, stop


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local OpenAI-compatible test server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--rpm", type=int, default=None, help="requests per window")
    parser.add_argument("--tpm", type=int, default=None, help="tokens per window")
    parser.add_argument("--window-s", type=float, default=60.0)
    parser.add_argument("--latency", default="0,0", help="min,max seconds")
    parser.add_argument("--fault", action="append", default=[], help="KIND=RATE, e.g. 500=0.02")
    parser.add_argument("--images", default=None, help="allowed image counts, e.g. 0,1,2")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    config = FakeServerConfig(
        enabled=True,
        host=args.host,
        port=args.port,
        requests_per_minute=args.rpm,
        tokens_per_minute=args.tpm,
        window_s=args.window_s,
        latency_s=tuple(float(x) for x in args.latency.split(",")),
        fault_rates={k: float(v) for k, v in (f.split("=", 1) for f in args.fault)},
        allowed_image_counts=[int(x) for x in args.images.split(",")] if args.images else None,
        seed=args.seed,
    )

    async def serve() -> None:
        server = FakeOpenAIServer(config)
        print(f"serving {await server.start()} (GET /stats for counters)", flush=True)
        await asyncio.Event().wait()

    logging.basicConfig(level=logging.INFO)
    asyncio.run(serve())


if __name__ == "__main__":
    main()
