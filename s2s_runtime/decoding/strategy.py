"""Strategies: each decoding algorithm is one class over the same runner interface, registered by name.

A strategy says how many decoder rows an input takes (its beams, its samples), how many ranked candidates it wants
the graph to return per row, and runs its search as a generator: one `yield` per decoder step (a StepEvent, or None
where the graph kept the step's tokens to itself), its return value the n-best Candidates of each input, best first.
The search sees the decoder only through a DecoderRunner, so it is tested with fake runners.

Adding a strategy is one class in one file, decorated with @register: its `name` becomes a valid
GenerationOptions.strategy, the options it names in `own_options` are refused with any other strategy, and its
`check` adds its own rules.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import ClassVar, Protocol, TypeVar

import numpy as np

from ..config import GenerationOptions
from . import registry
from .hypotheses import Candidate, RowLimits, StepEvent
from .processors import Processors

# A search yields a StepEvent (or None, when it keeps no per-step record) per decoder step and returns its result:
# the ranked candidates of each input (Search); helpers that build part of one return other things (SearchOf[...]).
Returned = TypeVar("Returned")
SearchOf = Generator[StepEvent | None, None, Returned]
Search = SearchOf[list[list[Candidate]]]


class DecoderRunner(Protocol):
    """The decoder as a search drives it (implementation: s2s_runtime.engine.runner.StepRunner)."""

    selects: bool  # whether greedy_step is available (the graph chooses the next token itself)
    top_k: int  # how many candidates per row top_k_step returns (0: not available)

    def step(self, previous_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """previous_ids (rows,) → log-probs (rows, vocab) and attention (rows, source_length) or None."""

    def greedy_step(self, previous_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One step choosing the argmax in the graph → (next ids, their log-probs); None continues the chain."""

    def top_k_step(self, previous_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Like step, but only each row's top_k best log-probs and their ids, both (rows, top_k) and best first
        (equal values: lower id first), and the attention or None."""

    def select(self, rows: np.ndarray) -> None:
        """Keep only `rows` (indices into the current rows; may reorder or repeat) of every cached tensor."""


@dataclass(frozen=True)
class SearchTask:
    """Everything a search needs besides the runner, per input of the batch."""

    options: GenerationOptions
    start_id: int
    eos_id: int
    limits: list[RowLimits]
    processors: Processors
    collect_attention: bool
    sources: list[list[int]]  # each input's source ids (sampling seeds derive from them)
    entropy: int = 0  # sampling seed material
    events: bool = False  # the caller reads every step's tokens (streaming): no path that hides them


class Strategy:
    """The interface; see the module docstring."""

    name: ClassVar[str]
    own_options: ClassVar[tuple[str, ...]] = ()
    # Capabilities, declared (never inferred from option names): a streamable strategy yields one hypothesis token by
    # token; a random one draws from seed material (plan.entropy); a beam one keeps beam_size rows per input, which
    # RequestLimits.max_beam_size bounds.
    streamable: ClassVar[bool] = False
    random: ClassVar[bool] = False
    beams: ClassVar[bool] = False

    def __init__(self, options: GenerationOptions):
        self.options = options

    @classmethod
    def check(cls, options: GenerationOptions) -> None:
        """Rules of this strategy beyond GenerationOptions' own (ValueError naming the option)."""

    def rows_per_input(self) -> int:
        """Decoder rows one input occupies."""
        return 1

    def top_k(self, ranks: bool, vocab_size: int, processors: Processors) -> int:
        """How many ranked candidates per row to ask the graph for (1: its greedy choice)."""
        return 1

    def search(self, runner: DecoderRunner, task: SearchTask) -> Search:
        raise NotImplementedError


def register(cls: type[Strategy]) -> type[Strategy]:
    """Make a strategy class available as GenerationOptions(strategy=cls.name)."""
    registry.add(cls)
    return cls


def input_rows(inputs: int, copies: int) -> np.ndarray:
    """The input of each decoder row when every input takes `copies` rows (its beams or samples), input-major: the one
    layout the engine expands states into and the strategies read their rows by.

    Examples:
        >>> input_rows(2, 3).tolist()
        [0, 0, 0, 1, 1, 1]
    """
    return np.repeat(np.arange(inputs), copies)


def run(search: Search) -> list[list[Candidate]]:
    """Run a search generator to the end and return its value."""
    while True:
        try:
            next(search)
        except StopIteration as done:
            return done.value
