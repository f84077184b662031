"""What every converter returns, and the error it raises."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..checkpoint import Checkpoint


class ConversionError(ValueError):
    """The source model cannot be converted exactly; the message names the file and the option or tensor at fault."""


@dataclass(frozen=True)
class Conversion:
    """What a converter made: the checkpoint, the options `s2s export` should use to keep the source tool's
    behaviour (e.g. its length rule), sources for the parity check, and the report written as conversion.json."""

    checkpoint: Checkpoint
    report: dict
    export_options: dict = field(default_factory=dict)
    validation_sources: list[str] | None = None
