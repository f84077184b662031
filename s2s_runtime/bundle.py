"""Bundles: the directory `s2s export` writes and the runtime loads — manifest, two ONNX graphs, two vocabularies.

manifest.json (format_version 1):
  config            the model's Seq2SeqConfig as a dict (informational for the runtime)
  source / target   {"vocab": file, "tokenizer": "char"|"space", "special_ids": {role: id}}
  decoding          {"start_id": id fed at the first step, "eos_id": id that ends a hypothesis}
  limits            {"max_source_length": n, "max_target_length": {"ratio": r, "offset": k}}: by default a hypothesis
                    may have ceil(r * source_length + k) tokens
  graphs            {"encoder": G, "decoder_step": G}, G = {"file": name, "inputs": {role: IO}, "outputs": {role: IO}},
                    IO = {"name": graph name, "dtype": "float32"|"int64"|..., "shape": [dims; strings are dynamic]}
  opset, producer   opset and the versions of the tools that made the bundle
  parity            the export's parity report against PyTorch
  files             {file name: sha256} for every other file of the bundle
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

from . import roles
from .files import parse_json, read_json, regular_file
from .vocab import Vocab, VocabError

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
BUILTIN_DIR = Path(__file__).resolve().parent / "bundles"  # bundles shipped inside the package, by name
# Default decoding limit written by s2s export: ceil(ratio * source_length + offset) target tokens.
DEFAULT_TARGET_LENGTH_RATIO = 2.0
DEFAULT_TARGET_LENGTH_OFFSET = 10
GRAPH_KINDS = ("encoder", "decoder_step")
REQUIRED_KEYS = ("format_version", "config", "source", "target", "decoding", "limits", "graphs", "opset", "files")
REQUIRED_INPUTS = {"encoder": (roles.SOURCE_IDS, roles.SOURCE_LENGTHS), "decoder_step": (roles.PREVIOUS_IDS,)}
REQUIRED_OUTPUTS = {"encoder": (roles.STATE_H,), "decoder_step": (roles.LOG_PROBS, roles.STATE_H)}
# Sanity bounds of a manifest's limits: past them a bundle is corrupt or hostile, not a model (a ratio of 1e308 would
# overflow the length computation, an offset of 1e9 allocate gigabytes per hypothesis).
MAX_SOURCE_LENGTH = 1_000_000
MAX_TARGET_LENGTH_RATIO = 1000.0
MAX_TARGET_LENGTH_OFFSET = 100_000


class BundleError(ValueError):
    """A bundle is missing, corrupt or inconsistent; the message names the file and the problem."""


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
class TensorSpec:
    role: str
    name: str
    dtype: str
    shape: tuple  # ints are fixed sizes, strings named dynamic dims

    @property
    def batch_axis(self) -> int | None:
        return self.shape.index(roles.BATCH_DIM) if roles.BATCH_DIM in self.shape else None


@dataclass(frozen=True)
class GraphSpec:
    kind: str
    path: Path
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    sha256: str

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

    Example:
        >>> bundle = Bundle.open("bundle/")  # doctest: +SKIP
        >>> bundle.graphs["encoder"].inputs["source_ids"].name  # doctest: +SKIP
        'source_ids'
    """

    root: Path
    manifest: dict
    source: SideSpec
    target: SideSpec
    start_id: int
    eos_id: int
    max_source_length: int
    target_length_ratio: float
    target_length_offset: int
    graphs: dict[str, GraphSpec]
    source_eos: bool  # the model appends the source eos to every input

    def default_max_length(self, source_length: int) -> int:
        return math.ceil(self.target_length_ratio * source_length + self.target_length_offset)

    @classmethod
    def open(cls, path: str | Path) -> "Bundle":
        """Open a bundle directory, or a built-in bundle by name (e.g. "g2p-en")."""
        root = resolve(path)
        manifest_path = root / MANIFEST_FILE
        if not root.is_dir():
            names = ", ".join(builtin_names()) or "none installed"
            raise BundleError(f"{root}: not a bundle directory (nor a built-in bundle name: {names})")
        return _parse(root, read_json(manifest_path, BundleError))


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


def _get(mapping: object, key: str, where: str, kind: type | tuple = dict):
    if not isinstance(mapping, dict) or key not in mapping:
        raise _fail(f"missing {where}{key!r}")
    value = mapping[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _fail(f"{where}{key!r} has the wrong type ({type(value).__name__})")
    return value


def bundle_file(root: Path, name: object, where: str) -> Path:
    """A file named in the manifest: a plain file name inside the bundle, nothing that could leave it."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name \
            or Path(name).is_absolute() or Path(name).name != name:
        raise _fail(f"{where} {name!r} is not a plain file name inside the bundle")
    path = root / name
    try:
        return regular_file(path, BundleError)
    except BundleError as error:
        raise BundleError(f"{error} (named by {MANIFEST_FILE} {where})") from None


def _parse(root: Path, manifest: object) -> Bundle:
    if not isinstance(manifest, dict):
        raise _fail("expected a JSON object")
    for key in REQUIRED_KEYS:
        if key not in manifest:
            raise _fail(f"missing required key {key!r}")
    version = manifest["format_version"]
    if version != FORMAT_VERSION:
        raise _fail(f"unsupported format_version {version!r} (this runtime reads {FORMAT_VERSION}); "
                    "re-export the bundle or upgrade s2s-runtime")
    files = _get(manifest, "files", "")
    for name, digest in files.items():
        path = bundle_file(root, name, "files")
        if not isinstance(digest, str) or len(digest) != 64:
            raise _fail(f"files.{name} must be a sha256 hex digest")
        if sha256_of(path) != digest.lower():
            raise BundleError(f"{path}: sha256 does not match {MANIFEST_FILE} (file corrupt or modified)")
    config = _get(manifest, "config", "")
    source_eos = config.get("source_eos", False)
    if not isinstance(source_eos, bool):
        raise _fail(f"config.source_eos must be true or false, got {source_eos!r}")

    def checked(name: object, where: str) -> Path:
        path = bundle_file(root, name, where)
        if path.name not in files:
            raise _fail(f"{where} {path.name!r} has no checksum in 'files'")
        return path

    sides = {}
    for side in ("source", "target"):
        spec = _get(manifest, side, "")
        vocab_path = checked(_get(spec, "vocab", f"{side}.", str), f"{side}.vocab")
        try:
            data = parse_json(read_verified(vocab_path, files[vocab_path.name]), VocabError, str(vocab_path))
            vocab = Vocab.from_dict(data, origin=str(vocab_path))
        except VocabError as error:
            raise BundleError(str(error)) from None
        special_ids = _get(spec, "special_ids", f"{side}.")
        if special_ids != vocab.special_ids:
            raise _fail(f"{side}.special_ids {special_ids} disagree with {vocab_path.name} ({vocab.special_ids})")
        size = config.get(f"{side}_vocab_size")
        if size is not None and size != len(vocab):
            raise _fail(f"config.{side}_vocab_size {size!r} disagrees with {vocab_path.name} ({len(vocab)} tokens)")
        sides[side] = SideSpec(vocab, vocab.special_ids)
    source_vocab_file = root / _get(manifest["source"], "vocab", "source.", str)
    if "pad" not in sides["source"].special_ids:  # the runtime pads batches of sources of different lengths
        raise BundleError(f"{source_vocab_file}: the source vocabulary has no 'pad' special token (batches of "
                          "different lengths are padded with it)")
    if source_eos and "eos" not in sides["source"].special_ids:
        raise BundleError(f"{source_vocab_file}: config.source_eos is true but the source vocabulary has no 'eos' "
                          "special token")
    decoding = _get(manifest, "decoding", "")
    start_id = _get(decoding, "start_id", "decoding.", int)
    eos_id = _get(decoding, "eos_id", "decoding.", int)
    target_size = len(sides["target"].vocab)
    for key, value in (("start_id", start_id), ("eos_id", eos_id)):
        if not 0 <= value < target_size:
            raise _fail(f"decoding.{key} {value} is outside the target vocabulary (size {target_size})")
    if sides["target"].special_ids.get("eos") != eos_id:
        raise _fail(f"decoding.eos_id {eos_id} is not the target vocabulary's eos token "
                    f"({sides['target'].special_ids.get('eos')})")
    limits = _get(manifest, "limits", "")
    max_source_length = _get(limits, "max_source_length", "limits.", int)
    target_rule = _get(limits, "max_target_length", "limits.")
    ratio = _get(target_rule, "ratio", "limits.max_target_length.", (int, float))
    offset = _get(target_rule, "offset", "limits.max_target_length.", int)
    if isinstance(ratio, bool) or not math.isfinite(ratio) or not 0 <= ratio <= MAX_TARGET_LENGTH_RATIO:
        raise _fail(f"limits.max_target_length.ratio must be in [0, {MAX_TARGET_LENGTH_RATIO:g}], got {ratio!r}")
    if not 1 <= offset <= MAX_TARGET_LENGTH_OFFSET:
        raise _fail(f"limits.max_target_length.offset must be in [1, {MAX_TARGET_LENGTH_OFFSET}], got {offset}")
    if not 1 <= max_source_length <= MAX_SOURCE_LENGTH:
        raise _fail(f"limits.max_source_length must be in [1, {MAX_SOURCE_LENGTH}], got {max_source_length}")
    graphs = {}
    for kind in GRAPH_KINDS:
        spec = _get(_get(manifest, "graphs", ""), kind, "graphs.")
        path = checked(_get(spec, "file", f"graphs.{kind}.", str), f"graphs.{kind}.file")
        io = {}
        for direction in ("inputs", "outputs"):
            entries = _get(spec, direction, f"graphs.{kind}.")
            io[direction] = {role: _tensor_spec(role, entry, f"graphs.{kind}.{direction}.{role}")
                             for role, entry in entries.items()}
            names = [tensor.name for tensor in io[direction].values()]
            if len(set(names)) != len(names):
                raise _fail(f"graphs.{kind}.{direction} names one graph tensor under two roles")
        for role in REQUIRED_INPUTS[kind]:
            if role not in io["inputs"]:
                raise _fail(f"graphs.{kind}.inputs lacks the required role {role!r}")
        for role in REQUIRED_OUTPUTS[kind]:
            if role not in io["outputs"]:
                raise _fail(f"graphs.{kind}.outputs lacks the required role {role!r}")
        graphs[kind] = GraphSpec(kind, path, io["inputs"], io["outputs"], files[path.name])
    _check_contract(graphs, target_size)
    return Bundle(root, manifest, sides["source"], sides["target"], start_id, eos_id, max_source_length,
                  float(ratio), offset, graphs, source_eos)


def _tensor_spec(role: str, entry: object, where: str) -> TensorSpec:
    name = _get(entry, "name", f"{where}.", str)
    dtype = _get(entry, "dtype", f"{where}.", str)
    shape = _get(entry, "shape", f"{where}.", list)
    if not all(isinstance(d, str) or (isinstance(d, int) and not isinstance(d, bool) and d > 0) for d in shape):
        raise _fail(f"{where}.shape {shape} must hold positive sizes or dimension names")
    return TensorSpec(role, name, dtype, tuple(shape))


def _check_contract(graphs: dict[str, GraphSpec], target_size: int) -> None:
    """The encoder must provide every decoder-step input but the control inputs, each state output must feed
    back, and the step must score exactly the target vocabulary."""
    encoder, step = graphs["encoder"], graphs["decoder_step"]
    vocab_dim = step.outputs[roles.LOG_PROBS].shape[-1:]
    if vocab_dim != (target_size,):
        raise _fail(f"graphs.decoder_step.outputs.log_probs scores {vocab_dim[0] if vocab_dim else 'no'} tokens, "
                    f"the target vocabulary has {target_size}")
    for role, spec in step.inputs.items():
        if role in roles.CONTROL_INPUTS:
            continue
        if role not in encoder.outputs:
            raise _fail(f"graphs.decoder_step.inputs.{role} is not produced by the encoder")
        if encoder.outputs[role].dtype != spec.dtype:
            raise _fail(f"graphs.decoder_step.inputs.{role} dtype {spec.dtype} != encoder output "
                        f"{encoder.outputs[role].dtype}")
        if spec.batch_axis is None:
            raise _fail(f"graphs.decoder_step.inputs.{role} has no 'batch' dimension")
    for role in step.outputs:
        if roles.is_state(role) and role not in step.inputs:
            raise _fail(f"graphs.decoder_step.outputs.{role} is a state with no matching input")
    for role in step.inputs:
        if roles.is_state(role) and role not in step.outputs:
            raise _fail(f"graphs.decoder_step.inputs.{role} is a state the step never updates")
