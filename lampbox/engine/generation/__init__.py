"""Text generation: one batch-first Generator protocol, lazily loaded backends by name.

from lampbox.engine.generation import load_generator, GenerationParams
generator = load_generator("llamacpp", "smollm2-135m-instruct")
outputs = generator.generate(["Name a colour."], GenerationParams(max_new_tokens=8))
"""

from lampbox.engine.generation.base import (
    GenerationParams,
    GenerationRequest,
    Generator,
    Tokenizer,
)
from lampbox.engine.generation.common import GenerationCancelled
from lampbox.engine.generation.pool import GeneratorPool
from lampbox.engine.generation.registry import (
    known_backends,
    known_models,
    load_generator,
    load_tokenizer,
    register_backend,
)

__all__ = [
    "GenerationCancelled",
    "GenerationParams",
    "GenerationRequest",
    "Generator",
    "GeneratorPool",
    "Tokenizer",
    "known_backends",
    "known_models",
    "load_generator",
    "load_tokenizer",
    "register_backend",
]
