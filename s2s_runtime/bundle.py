"""Bundles: the directory `s2s export` writes and the runtime loads — manifest, two ONNX graphs, two vocabularies.

The manifest's schema is s2s_runtime.schema; this module checks the directory against it: every file a plain name
inside the bundle and a regular file (never followed through a symbolic link), every checksum, the vocabularies
against the manifest and the config, and the contract between the two graphs.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

from . import roles
from .files import parse_json, read_json, regular_file
from .lexicon import FILE as LEXICON_FILE
from .lexicon import Lexicon
from .schema import MANIFEST_FILE, BundleError, GraphSchema, Manifest, TensorSpec
from .vocab import Vocab, VocabError

__all__ = [
    "BUILTIN_DIR",
    "MANIFEST_FILE",
    "Bundle",
    "BundleError",
    "GraphSpec",
    "SideSpec",
    "TensorSpec",
    "builtin_names",
    "read_verified",
    "resolve",
    "sha256_of",
]

BUILTIN_DIR = Path(__file__).resolve().parent / "bundles"  # bundles shipped inside the package, by name
WEIGHTS_FILE = "weights.bin"  # the graphs' large tensors, stored once (s2s_export.weights_file)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_verified(path: Path, digest: str) -> bytes:
    """The bytes of a bundle file, checked against its manifest sha256 in the same read: what is verified is what
    is used (nothing can swap the file between the check and the use)."""
    regular_file(path, BundleError)
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != digest.lower():
        raise BundleError(f"{path}: sha256 does not match {MANIFEST_FILE} (file corrupt or modified)")
    return data


@dataclass(frozen=True)
class GraphSpec:
    """A graph of the manifest (its GraphSchema: file and IO by role) found in the bundle: kind, path, checksum."""

    kind: str
    path: Path
    schema: GraphSchema
    sha256: str

    @property
    def inputs(self) -> dict[str, TensorSpec]:
        return self.schema.inputs

    @property
    def outputs(self) -> dict[str, TensorSpec]:
        return self.schema.outputs

    def read(self) -> bytes:
        """The graph's bytes, verified against the manifest (sessions are made from these bytes, never from the
        path: onnxruntime then cannot read any file the manifest does not list, such as external data)."""
        return read_verified(self.path, self.sha256)


@dataclass(frozen=True)
class SideSpec:
    vocab: Vocab
    special_ids: dict[str, int]


@dataclass(frozen=True)
class Bundle:
    """A validated bundle directory (checksums verified). Load with `Bundle.open(path)`.

    Examples:
        >>> bundle = Bundle.open("g2p-en")
        >>> bundle.graphs["encoder"].inputs["source_ids"].name
        'source_ids'
    """

    root: Path
    manifest: Manifest
    source: SideSpec
    target: SideSpec
    graphs: dict[str, GraphSpec]
    lexicon: Lexicon | None = None  # known inputs answered without decoding (s2s_runtime.lexicon)
    weights: Path | None = None  # weights.bin, the graphs' shared external data, when the bundle has one

    def read_weights(self) -> bytes | None:
        """weights.bin's bytes, verified against the manifest (None when the graphs hold their own tensors)."""
        if self.weights is None:
            return None
        return read_verified(self.weights, self.manifest.files[WEIGHTS_FILE])

    start_id = property(lambda self: self.manifest.start_id)
    eos_id = property(lambda self: self.manifest.eos_id)
    max_source_length = property(lambda self: self.manifest.max_source_length)
    source_eos = property(lambda self: self.manifest.source_eos)

    def default_max_length(self, source_length: int) -> int:
        """The bundle's own length rule: ceil(ratio × source_length + offset) target tokens."""
        return math.ceil(self.manifest.limits_ratio * source_length + self.manifest.limits_offset)

    @classmethod
    def open(cls, path: str | Path) -> Bundle:
        """Open a bundle directory, or a built-in bundle by name (e.g. "g2p-en")."""
        root = resolve(path)
        if not root.is_dir():
            names = ", ".join(builtin_names()) or "none installed"
            raise BundleError(f"{root}: not a bundle directory (nor a built-in bundle name: {names})")
        return _check(root, Manifest.parse(read_json(root / MANIFEST_FILE, BundleError)))


def builtin_names() -> list[str]:
    return sorted(p.parent.name for p in BUILTIN_DIR.glob(f"*/{MANIFEST_FILE}"))


def resolve(path: str | Path) -> Path:
    """A directory path as given, or the built-in bundle of that name when no such directory exists."""
    root = Path(path)
    if not root.exists() and isinstance(path, str) and path in builtin_names():
        return BUILTIN_DIR / path
    return root


def _fail(message: str) -> BundleError:
    return BundleError(f"{MANIFEST_FILE}: {message}")


def bundle_file(root: Path, name: object, where: str) -> Path:
    """A file named in the manifest: a plain file name inside the bundle, nothing that could leave it, and a
    regular file (checked without following a link or opening it)."""
    if (
        not isinstance(name, str)
        or not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or Path(name).is_absolute()
        or Path(name).name != name
    ):
        raise _fail(f"{where} {name!r} is not a plain file name inside the bundle")
    try:
        return regular_file(root / name, BundleError)
    except BundleError as error:
        raise BundleError(f"{error} (named by {MANIFEST_FILE} {where})") from None


def _check(root: Path, manifest: Manifest) -> Bundle:
    files = manifest.files
    for name, digest in files.items():
        if sha256_of(bundle_file(root, name, "files")) != digest.lower():
            raise BundleError(f"{root / name}: sha256 does not match {MANIFEST_FILE} (file corrupt or modified)")

    def checked(name: str, where: str) -> Path:
        path = bundle_file(root, name, where)
        if path.name not in files:
            raise _fail(f"{where} {path.name!r} has no checksum in 'files'")
        return path

    sides = {}
    for side, schema in (("source", manifest.source), ("target", manifest.target)):
        vocab_path = checked(schema.vocab, f"{side}.vocab")
        try:
            data = parse_json(read_verified(vocab_path, files[vocab_path.name]), VocabError, str(vocab_path))
            vocab = Vocab.from_dict(data, origin=str(vocab_path))
        except VocabError as error:
            raise BundleError(str(error)) from None
        if schema.special_ids != vocab.special_ids:
            raise _fail(
                f"{side}.special_ids {schema.special_ids} disagree with {vocab_path.name} ({vocab.special_ids})"
            )
        size = manifest.config.get(f"{side}_vocab_size")
        if size is not None and size != len(vocab):
            raise _fail(f"config.{side}_vocab_size {size!r} disagrees with {vocab_path.name} ({len(vocab)} tokens)")
        sides[side] = SideSpec(vocab, vocab.special_ids)
    source_vocab_file = root / manifest.source.vocab
    if "pad" not in sides["source"].special_ids:  # the runtime pads batches of sources of different lengths
        raise BundleError(
            f"{source_vocab_file}: the source vocabulary has no 'pad' special token (batches of "
            "different lengths are padded with it)"
        )
    if manifest.source_eos and "eos" not in sides["source"].special_ids:
        raise BundleError(
            f"{source_vocab_file}: config.source_eos is true but the source vocabulary has no 'eos' special token"
        )
    target_size = len(sides["target"].vocab)
    for key, value in (("start_id", manifest.start_id), ("eos_id", manifest.eos_id)):
        if not 0 <= value < target_size:
            raise _fail(f"decoding.{key} {value} is outside the target vocabulary (size {target_size})")
    if sides["target"].special_ids.get("eos") != manifest.eos_id:
        raise _fail(
            f"decoding.eos_id {manifest.eos_id} is not the target vocabulary's eos token "
            f"({sides['target'].special_ids.get('eos')})"
        )
    for name, view in (manifest.target_views or {}).items():
        unknown = next((token for token in view if token not in sides["target"].vocab), None)
        if unknown is not None:
            raise _fail(f"target_views.{name}: {unknown!r} is not in the target vocabulary")
    graphs = {}
    for kind, graph in manifest.graphs.items():
        path = checked(graph.file, f"graphs.{kind}.file")
        graphs[kind] = GraphSpec(kind, path, graph, files[path.name])
    _check_contract(graphs, target_size, manifest)
    lexicon = None
    if LEXICON_FILE in files:
        path = bundle_file(root, LEXICON_FILE, "files")
        lexicon = Lexicon.parse(read_verified(path, files[LEXICON_FILE]), sides["target"].vocab, str(path))
    weights = bundle_file(root, WEIGHTS_FILE, "files") if WEIGHTS_FILE in files else None
    return Bundle(root, manifest, sides["source"], sides["target"], graphs, lexicon, weights)


def _check_contract(graphs: dict[str, GraphSpec], target_size: int, manifest: Manifest) -> None:
    """The encoder must provide every decoder-step input but the control inputs, each state output must feed
    back with the input's shape, the step must score exactly the target vocabulary, and an attention model must
    say what its memory bias is at padding."""
    encoder, step = graphs["encoder"], graphs["decoder_step"]
    vocab_dim = step.outputs[roles.LOG_PROBS].shape[-1:]
    if vocab_dim != (target_size,):
        raise _fail(
            f"graphs.decoder_step.outputs.log_probs scores {vocab_dim[0] if vocab_dim else 'no'} tokens, "
            f"the target vocabulary has {target_size}"
        )
    for role, spec in encoder.outputs.items():
        if spec.batch_axis is None:
            raise _fail(f"graphs.encoder.outputs.{role} has no 'batch' dimension")
    for role, spec in step.inputs.items():
        if role in roles.CONTROL_INPUTS:
            continue
        if role not in encoder.outputs:
            raise _fail(f"graphs.decoder_step.inputs.{role} is not produced by the encoder")
        if encoder.outputs[role].dtype != spec.dtype:
            raise _fail(
                f"graphs.decoder_step.inputs.{role} dtype {spec.dtype} != encoder output {encoder.outputs[role].dtype}"
            )
        if spec.batch_axis is None:
            raise _fail(f"graphs.decoder_step.inputs.{role} has no 'batch' dimension")
    for role, spec in step.outputs.items():
        if roles.is_state(role):
            if role not in step.inputs:
                raise _fail(f"graphs.decoder_step.outputs.{role} is a state with no matching input")
            if spec.shape != step.inputs[role].shape:
                raise _fail(
                    f"graphs.decoder_step.outputs.{role} has shape {list(spec.shape)}, its input "
                    f"{list(step.inputs[role].shape)} (states keep their shape from step to step)"
                )
    for role in step.inputs:
        if roles.is_state(role) and role not in step.outputs:
            raise _fail(f"graphs.decoder_step.inputs.{role} is a state the step never updates")
    if roles.MEMORY_BIAS in step.inputs and manifest.memory_bias_padding is None:
        raise _fail("decoding.memory_bias_padding is missing: an attention model needs it (the bias at padding)")
    if "greedy" in graphs:
        _check_greedy(graphs["greedy"])


GREEDY_IO = {
    "inputs": {roles.SOURCE_IDS: "int64", roles.SOURCE_LENGTHS: "int64", roles.MAX_LENGTHS: "int64"},
    "outputs": {roles.CHOSEN_IDS: "int64", roles.CHOSEN_LOG_PROBS: "float32"},
}


def _check_greedy(greedy: GraphSpec) -> None:
    """The greedy graph has exactly its roles, with their dtypes (whether it decodes as the step does is the
    engine's probe's to find out)."""
    for direction, expected in GREEDY_IO.items():
        declared = getattr(greedy, direction)
        if set(declared) != set(expected):
            raise _fail(f"graphs.greedy.{direction} must have the roles {sorted(expected)}, not {sorted(declared)}")
        for role, dtype in expected.items():
            if declared[role].dtype != dtype:
                raise _fail(f"graphs.greedy.{direction}.{role} must be {dtype}, not {declared[role].dtype}")
