"""What every converter returns, the error it raises, and the two steps they share: loading a PyTorch file
safely and assembling the checkpoint. Torch is imported only when those run (`s2s --help` must not need it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from s2s_runtime.vocab import Vocab

    from ..checkpoint import Checkpoint
    from ..config import Seq2SeqConfig


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


def load_weights_only(path: Path, what: str, allowed: tuple[type, ...] = ()) -> Any:
    """`torch.load(weights_only=True)`: tensors and plain containers only, plus the classes in `allowed`; anything
    else (code in the pickle, a damaged file) is a ConversionError saying the file is not `what`."""
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as error:
        raise ConversionError(f"{path}: not {what} torch can load safely ({str(error).splitlines()[0]})") from None


def build_checkpoint(
    origin: object, cfg: Seq2SeqConfig, state: dict[str, Any], source_vocab: Vocab, target_vocab: Vocab, hint: str = ""
) -> Checkpoint:
    """The family's model for `cfg` with `state` (numpy arrays or tensors, by the family's tensor names) loaded as
    float32: the vocabularies must fit the config and every tensor the config needs must be there with its shape,
    else a ConversionError naming `origin` and the tensor (`hint`: what to check)."""
    import torch

    from ..checkpoint import Checkpoint, check_vocabularies, expected_tensors
    from ..model import Seq2Seq

    check_vocabularies(cfg, source_vocab, target_vocab)
    for name, shape in expected_tensors(cfg).items():
        value = state.get(name)
        if value is None or tuple(value.shape) != shape:
            found = "missing" if value is None else f"{tuple(value.shape)}"
            raise ConversionError(f"{origin}: {name} is {found}, the model needs {shape}{hint}")
    model = Seq2Seq(cfg)
    model.load_state_dict({name: torch.as_tensor(value).float().contiguous() for name, value in state.items()})
    return Checkpoint(model.eval(), source_vocab, target_vocab)
