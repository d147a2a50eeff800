"""Batched greedy decoding on llama.cpp: several prompts in one context, one sequence id each.

Each prompt is evaluated alone (in the chunks llama-cpp-python uses) and its first token taken
at once, then every live sequence advances one token per `llama_decode` call; a finished
sequence's slot takes the next prompt. The KV cache keeps one stream per sequence
(`kv_unified = false`), so each sequence's logits are bit for bit those of one-at-a-time
decoding (docs/backends.md says why, the tests check it). Each sequence's new text can be
streamed as it grows (`on_piece`): whole UTF-8 characters only, never text a stop string may
still cut, so the pieces join to the output.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lampbox.engine.generation.common import GenerationCancelled, settled_length

# The KV cells of a sequence are rounded up to this (llama.cpp pads attention to 256 cells):
# attention then sums over the same padded lengths as in a single-sequence context.
CELL_PADDING = 256
# Extra cells past prompt + max tokens: llama-cpp-python keeps decoding while a UTF-8
# character is incomplete, even past max_tokens.
SLACK_CELLS = 16

Detokenize = Callable[[list[int], list[int]], bytes]  # (tokens, the prompt's tokens) -> bytes


@dataclass
class Completion:
    """One prompt's greedy completion, stopped exactly as llama-cpp-python's
    `Llama._create_completion` stops it: at an end-of-generation token, at the first stop string
    (in list order) found in the text, or after `max_tokens` tokens, never inside an incomplete
    UTF-8 character."""

    index: int
    prompt_tokens: list[int]
    max_tokens: int
    stops: tuple[bytes, ...]
    tokens: list[int] = field(default_factory=list)
    text: bytes | None = None  # set when finished
    _multibyte_fix: int = 0
    _so_far: bytes = b""  # the text of the tokens taken so far
    _streamed: int = 0  # bytes of it already handed out as pieces
    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="ignore")
    )

    def push(self, token: int, is_eog: bool, detokenize: Detokenize) -> bool:
        """Take the next greedy token; True when the completion is finished."""
        if is_eog:
            self.text = detokenize(self.tokens, self.prompt_tokens)
            return True
        self.tokens.append(token)
        text = self._so_far = detokenize(self.tokens, self.prompt_tokens)
        for position, char in enumerate(text[-3:]):
            left = 3 - position
            for size, pattern in ((2, 192), (3, 224), (4, 240)):
                if size > left and pattern & char == pattern:
                    self._multibyte_fix = size - left
        if self._multibyte_fix > 0:
            self._multibyte_fix -= 1
            return False
        found = [stop for stop in self.stops if stop in text]
        if found:
            self.text = text[: text.index(found[0])]
            return True
        if len(self.tokens) >= self.max_tokens:
            self.text = text
            return True
        return False

    def finish_early(self, detokenize: Detokenize) -> None:
        """Stop here (the sequence's cells are full): the text so far is the output."""
        self.text = detokenize(self.tokens, self.prompt_tokens)

    def piece(self) -> str:
        """The text that became final since the last piece ('' if none). Before the end, text
        a stop string could still cut (a stop found, or the tail that starts one) is held back,
        and an incomplete UTF-8 character waits in the incremental decoder; the pieces join to
        `output()`."""
        if self.text is not None:
            new, self._streamed = self.text[self._streamed :], len(self.text)
            return self._decoder.decode(new, final=True)
        safe = settled_length(self._so_far, self.stops)
        if safe <= self._streamed:
            return ""
        new, self._streamed = self._so_far[self._streamed : safe], safe
        return self._decoder.decode(new)

    @property
    def length(self) -> int:
        return len(self.prompt_tokens) + len(self.tokens)

    def output(self) -> str:
        return (self.text or b"").decode("utf-8", errors="ignore")


class BatchDecoder:
    """Greedy decoding of up to `batch_size` sequences at once on a llama-cpp-python model.

    The decoder owns a second llama.cpp context on the same weights (the Llama's own context
    stays for streaming and label scoring); it is sized for the batch at hand (sequences x
    padded cells per sequence) and kept while later batches fit in it. With `adapters`
    (llamacpp_adapters.GgufAdapters), each call's sequences all compute with one adapter.
    """

    def __init__(self, llama: Any, batch_size: int, adapters: Any = None) -> None:
        import llama_cpp

        self._llama = llama
        self._adapters = adapters
        self.batch_size = max(1, min(batch_size, int(llama_cpp.llama_max_parallel_sequences())))
        self._context: Any = None
        self._shape = (0, 0)  # (sequences, cells per sequence) of the context
        self._batch: Any = None
        self.threads: int | None = None  # set per call by the generator (None: the Llama's own)

    def _ensure_context(self, sequences: int, cells: int) -> Any:
        from llama_cpp import _internals

        if self._context is not None and self._shape[0] >= sequences and self._shape[1] >= cells:
            return self._context
        self.close()
        llama = self._llama
        params = type(llama.context_params).from_buffer_copy(llama.context_params)
        params.n_seq_max = sequences
        params.n_ctx = sequences * cells
        params.kv_unified = False
        self._context = _internals.LlamaContext(model=llama._model, params=params, verbose=False)
        self._shape = (sequences, cells)
        self._batch = _internals.LlamaBatch(
            n_tokens=max(llama.n_batch, sequences), embd=0, n_seq_max=1, verbose=False
        )
        return self._context

    def generate(
        self,
        completions: Sequence[Completion],
        on_output: Callable[[int, str], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        on_piece: Callable[[int, str], None] | None = None,
        adapter: str | None = None,
    ) -> None:
        """Run every completion to its end (their `text` is set), `batch_size` at a time, with
        `adapter` (None: the model as loaded; needs the decoder's `adapters`);
        on_piece(index, text) as each completion's text grows, on_output(index, output) as
        each finishes (not in prompt order). Raises GenerationCancelled when should_cancel()
        says so (checked before every `llama_decode`)."""
        import llama_cpp
        import numpy as np

        if not completions:
            return
        llama = self._llama
        vocab = llama._model.vocab
        n_vocab = llama.n_vocab()
        longest = max(len(c.prompt_tokens) + c.max_tokens for c in completions) + SLACK_CELLS
        cells = -(-longest // CELL_PADDING) * CELL_PADDING
        sequences = min(self.batch_size, len(completions))
        context = self._ensure_context(sequences, cells)
        ctx, memory, batch = context.ctx, context.memory, self._batch.batch
        if self._adapters is not None:
            self._adapters.apply(ctx, adapter)
        elif adapter is not None:
            raise ValueError("a BatchDecoder without adapters cannot decode with one")
        if self.threads:
            llama_cpp.llama_set_n_threads(ctx, self.threads, self.threads)
        # Shortest prompt first (popped from the end): the prompts are evaluated one by one, so
        # this shows the most first pieces soonest; outputs do not depend on the order.
        waiting = sorted(completions, key=lambda c: len(c.prompt_tokens), reverse=True)
        live: dict[int, Completion] = {}  # sequence id -> its completion
        taken: dict[int, int] = {}  # sequence id -> the token it took, decoded at the next step
        finished = 0

        def cancel_check() -> None:
            if should_cancel and should_cancel():
                raise GenerationCancelled(finished, len(completions))

        def fill(entries: Sequence[tuple[int, int, int, bool]]) -> None:
            batch.n_tokens = len(entries)
            for row, (token, position, sequence, logits) in enumerate(entries):
                batch.token[row] = token
                batch.pos[row] = position
                batch.n_seq_id[row] = 1
                batch.seq_id[row][0] = sequence
                batch.logits[row] = logits
            if llama_cpp.llama_decode(ctx, batch) != 0:
                raise RuntimeError("llama_decode failed")

        def greedy(row: int) -> int:
            logits = np.ctypeslib.as_array(
                llama_cpp.llama_get_logits_ith(ctx, row), shape=(n_vocab,)
            )
            return int(np.argmax(logits))  # the first maximum, as llama.cpp's greedy sampler

        def detokenize(tokens: list[int], prompt_tokens: list[int]) -> bytes:
            return bytes(llama.detokenize(tokens, prev_tokens=prompt_tokens))

        def take(sequence: int, token: int) -> None:
            """The sequence takes its next greedy token: streamed, and finished or queued."""
            nonlocal finished
            completion = live[sequence]
            done = completion.push(token, llama_cpp.llama_vocab_is_eog(vocab, token), detokenize)
            if not done and completion.length >= cells:
                completion.finish_early(detokenize)
                done = True
            if on_piece:
                piece = completion.piece()
                if piece:
                    on_piece(completion.index, piece)
            if done:
                del live[sequence]
                finished += 1
                if on_output:
                    on_output(completion.index, completion.output())
            else:
                taken[sequence] = token

        try:
            llama_cpp.llama_memory_clear(memory, True)
            while waiting or live:
                # Free slots take the next prompts, each evaluated alone in the Llama's chunks
                # (one prompt per llama_decode keeps the logits exact) and its first token
                # taken at once, so every prompt shows its first piece right after its prefill.
                for sequence in range(sequences):
                    if sequence in live or not waiting:
                        continue
                    completion = waiting.pop()
                    llama_cpp.llama_memory_seq_rm(memory, sequence, -1, -1)
                    tokens = completion.prompt_tokens
                    for start in range(0, len(tokens), llama.n_batch):
                        cancel_check()
                        chunk = tokens[start : start + llama.n_batch]
                        last = start + len(chunk) == len(tokens)
                        fill([
                            (token, start + offset, sequence, last and offset == len(chunk) - 1)
                            for offset, token in enumerate(chunk)
                        ])  # fmt: skip
                    live[sequence] = completion
                    take(sequence, greedy(len(chunk) - 1))
                # The unfinished sequences decode the tokens they took, together.
                step = [
                    (token, live[sequence].length - 1, sequence, True)
                    for sequence, token in sorted(taken.items())
                ]
                taken.clear()
                if step:
                    cancel_check()
                    fill(step)
                    for row, (_, _, sequence, _) in enumerate(step):
                        take(sequence, greedy(row))
        finally:
            llama_cpp.llama_memory_clear(memory, True)

    def close(self) -> None:
        context, self._context = self._context, None
        batch, self._batch = self._batch, None
        if batch is not None:
            batch.close()
        if context is not None:
            if self._adapters is not None:
                self._adapters.forget(context.ctx)
            context.close()
        self._shape = (0, 0)
