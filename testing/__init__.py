"""The test harness shipped with the tool: a local OpenAI-compatible server, a fake chat
model, tiny random-weight models and sample media. `sg4v samples` and the smoke config use it;
the product packages (`operators`, `ray_jobs`) never import it outside of a smoke run.
"""
