"""The built-in prompt templates of the captioning calls (``*.txt``, ``str.format`` fields).

Override any of them with ``llm.prompts.<name>: path/to/template.txt``; the fields each one
may use are listed in :mod:`operators.captions.diffsw_prompts`.
"""
