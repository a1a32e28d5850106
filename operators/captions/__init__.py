"""Step 2 of ShareGPT4Video: a one-sentence caption per video and its text embedding."""

from operators.captions.short_caption import (
    PANDA_PROMPT,
    PandaStudentConfig,
    ShortCaption,
    ShortCaptionConfig,
    one_sentence,
)
from operators.captions.text_embed import TextEmbed, TextEmbedConfig, TextEncoder

__all__ = [
    "PANDA_PROMPT",
    "PandaStudentConfig",
    "ShortCaption",
    "ShortCaptionConfig",
    "TextEmbed",
    "TextEmbedConfig",
    "TextEncoder",
    "one_sentence",
]
