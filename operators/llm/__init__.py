"""The API client layer shared by every operator that calls an OpenAI-compatible endpoint.

- :mod:`.config`: ``LLMConfig`` (endpoint, rate limits, retries, prices, budget, cache) and
  ``FakeServerConfig`` (the local test server for smoke runs).
- :mod:`.tokens`: token estimates for text and images, made before a call.
- :mod:`.limiter`: ``RateLimiter``, the requests/min and tokens/min budgets (one per cluster).
- :mod:`.cache`: ``ResponseCache``, content-addressed answers on the output storage.
- :mod:`.budget`: ``Budget`` (the spending cap) and ``Usage`` (per-video tallies).
- :mod:`.client`: ``LLMClient``, one call = cache, limiter, call, retries, reconcile.
- :mod:`.test_server`: ``FakeOpenAIServer``, a local OpenAI-compatible server for tests.

Nothing here imports Ray; ``openai`` and ``aiohttp`` are imported where they are used.
"""
