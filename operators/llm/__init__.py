"""The API client layer shared by every operator that calls an OpenAI-compatible endpoint.

- :mod:`.config`: ``LLMConfig`` (endpoint, rate limits, retries, prices, budget, cache).
- :mod:`.tokens`: token estimates for text and images, made before a call.
- :mod:`.limiter`: ``RateLimiter``, the requests/min and tokens/min budgets (one per cluster).
- :mod:`.cache`: ``ResponseCache``, content-addressed answers on the output storage.
- :mod:`.budget`: ``Budget`` (the spending cap) and ``Usage`` (per-video tallies).
- :mod:`.transport`: how a call reaches the endpoint (``OpenAITransport``; tests inject fakes).
- :mod:`.client`: ``LLMClient``, one call = cache, limiter, transport, retries, reconcile.
- :mod:`.errors`: what a call can fail with, and which rejections a rerun may overturn.
- :mod:`.messages`: chat message and image parts.

The stages that use it (DiffSW captions, summaries) live in :mod:`operators.captions`; the local
test server in :mod:`testing.fake_server`. Nothing here imports Ray; ``openai`` is imported
where it is used.
"""
