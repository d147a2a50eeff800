"""Text generation: one batch-first Generator protocol, three lazily loaded backends.

from lampbox.engine.generation import load_generator, GenerationParams
generator = load_generator("llamacpp", "smollm2-135m-instruct")
outputs = generator.generate(["Name a colour."], GenerationParams(max_new_tokens=8))
"""

from lampbox.engine.generation.base import GenerationParams, Generator, Tokenizer
from lampbox.engine.generation.common import GenerationCancelled
from lampbox.engine.generation.registry import (
    DEFAULT_BACKEND,
    known_backends,
    known_models,
    load_generator,
    load_tokenizer,
)

__all__ = [
    "DEFAULT_BACKEND",
    "GenerationCancelled",
    "GenerationParams",
    "Generator",
    "Tokenizer",
    "known_backends",
    "known_models",
    "load_generator",
    "load_tokenizer",
]
