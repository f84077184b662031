"""The bundle manifest: one typed schema, read and written by this code alone (the exporter builds a Manifest and
calls `to_json`; the runtime calls `Manifest.parse`).

manifest.json, format_version 3:
  format_version    3; revisions 1 and 2 are upgraded on read (see `upgrade`)
  config            the model's Seq2SeqConfig as a dict; the runtime reads source_eos and the vocabulary sizes
  parameters        the model's parameter count (shown by `s2s info`)
  source / target   {"vocab": file, "special_ids": {role: id}} (the tokenizer is the vocabulary file's)
  decoding          {"start_id": id fed at the first step, "eos_id": id that ends a hypothesis,
                     "memory_bias_padding": the memory bias at padded source positions (attention models, else null)}
  limits            {"max_source_length": n, "max_target_length": {"ratio": r, "offset": k}}: by default a hypothesis
                    may have ceil(r * source_length + k) tokens
  graphs            {"encoder": G, "decoder_step": G, "greedy": G (optional)}, G = {"file": name, "inputs": {role: IO},
                    "outputs": {role: IO}}, IO = {"name": graph name, "dtype": "float32"|"int64"|..., "shape": [dims;
                    strings are dynamic]}. "greedy" is the whole greedy decode in one graph (encoder + a Loop over the
                    step, s2s_export.greedy_graph); without it greedy decoding runs step by step
  opset, graph_variant ("optimized"|"plain"), precision ("float32"|"int8"|"float16")
  producer          the tools and versions that made the bundle
  parity            the export's parity report against PyTorch
  quality           reduced precisions: the change against the fp32 graphs (optional)
  evaluation        measured accuracy (optional; the built-in bundles)
  target_views      optional {view name: {target token: what to show instead}}: alternative spellings of the output
                    a caller may ask for (GenerationOptions.view), e.g. g2p-en's "no-stress" (AH0 → AH)
  files             {file name: sha256} for every other file of the bundle; among them, optionally, weights.bin: the
                    graphs' large tensors stored once as ONNX external data (each graph names its tensors' offsets in
                    it; the runtime hands its verified bytes to onnxruntime, which reads no other external file) and
                    lexicon.tsv.gz (s2s_runtime.lexicon)

Step state buffers follow one rule: a `state.*` output has exactly the shape of the input of the same role, so a
runner allocates each state once per batch, from the shape the encoder gave it (a decoder whose cache grew per step
would change this rule and the buffer backends, nothing else).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import roles
from .numbers import is_finite_number

FORMAT_VERSION = 3
GRAPH_KINDS = ("encoder", "decoder_step")  # required
OPTIONAL_GRAPH_KINDS = ("greedy",)
GRAPH_VARIANTS = ("optimized", "plain")
PRECISIONS = ("float32", "int8", "float16")
DTYPES = ("float32", "float16", "int64", "int32")
# Default decoding limit written by s2s export: ceil(ratio * source_length + offset) target tokens.
DEFAULT_TARGET_LENGTH_RATIO = 2.0
DEFAULT_TARGET_LENGTH_OFFSET = 10
# Sanity bounds of a manifest's limits: past them a bundle is corrupt or hostile, not a model (a ratio of 1e308 would
# overflow the length computation, an offset of 1e9 allocate gigabytes per hypothesis).
MAX_SOURCE_LENGTH = 1_000_000
MAX_TARGET_LENGTH_RATIO = 1000.0
MAX_TARGET_LENGTH_OFFSET = 100_000
REQUIRED_INPUTS = {
    "encoder": (roles.SOURCE_IDS, roles.SOURCE_LENGTHS),
    "decoder_step": (roles.PREVIOUS_IDS,),
    "greedy": (roles.SOURCE_IDS, roles.SOURCE_LENGTHS, roles.MAX_LENGTHS),
}
REQUIRED_OUTPUTS = {
    "encoder": (roles.STATE_H,),
    "decoder_step": (roles.LOG_PROBS, roles.STATE_H),
    "greedy": (roles.CHOSEN_IDS, roles.CHOSEN_LOG_PROBS),
}
MANIFEST_FILE = "manifest.json"


class BundleError(ValueError):
    """A bundle is missing, corrupt or inconsistent; the message names the file and the problem."""


def _fail(message: str) -> BundleError:
    return BundleError(f"{MANIFEST_FILE}: {message}")


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: its role in the bundle contract, its name in the graph, dtype and shape (ints are
    fixed sizes, strings named dynamic dimensions). The exporter writes these; the runtime binds by them.

    Examples:
        >>> TensorSpec("state.h", "state_h", "float32", (1, "batch", 16)).batch_axis
        1
    """

    role: str
    name: str
    dtype: str
    shape: tuple

    @property
    def batch_axis(self) -> int | None:
        return self.shape.index(roles.BATCH_DIM) if roles.BATCH_DIM in self.shape else None

    def to_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class GraphSchema:
    file: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]

    def to_json(self) -> dict:
        return {
            "file": self.file,
            "inputs": {r: t.to_json() for r, t in self.inputs.items()},
            "outputs": {r: t.to_json() for r, t in self.outputs.items()},
        }


@dataclass(frozen=True)
class SideSchema:
    vocab: str
    special_ids: dict[str, int]


@dataclass(frozen=True)
class Manifest:
    """A parsed, structurally valid manifest (files and graphs are checked by s2s_runtime.bundle).

    Examples:
        >>> Manifest.parse(manifest_dict).limits_ratio  # doctest: +SKIP
        2.0
    """

    config: dict
    source: SideSchema
    target: SideSchema
    start_id: int
    eos_id: int
    memory_bias_padding: float | None
    max_source_length: int
    limits_ratio: float
    limits_offset: int
    graphs: dict[str, GraphSchema]
    opset: int
    graph_variant: str
    precision: str
    files: dict[str, str]
    parameters: int | None = None
    producer: dict = field(default_factory=dict)
    parity: dict = field(default_factory=dict)
    quality: dict | None = None
    evaluation: dict | None = None
    target_views: dict[str, dict[str, str]] | None = None

    @property
    def source_eos(self) -> bool:
        return bool(self.config.get("source_eos", False))

    def to_json(self) -> dict:
        data: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "config": self.config,
            "parameters": self.parameters,
            "source": {"vocab": self.source.vocab, "special_ids": self.source.special_ids},
            "target": {"vocab": self.target.vocab, "special_ids": self.target.special_ids},
            "decoding": {
                "start_id": self.start_id,
                "eos_id": self.eos_id,
                "memory_bias_padding": self.memory_bias_padding,
            },
            "limits": {
                "max_source_length": self.max_source_length,
                "max_target_length": {"ratio": self.limits_ratio, "offset": self.limits_offset},
            },
            "graphs": {kind: graph.to_json() for kind, graph in self.graphs.items()},
            "opset": self.opset,
            "graph_variant": self.graph_variant,
            "precision": self.precision,
            "producer": self.producer,
            "parity": self.parity,
        }
        if self.quality is not None:
            data["quality"] = self.quality
        if self.evaluation is not None:
            data["evaluation"] = self.evaluation
        if self.target_views is not None:
            data["target_views"] = self.target_views
        data["files"] = self.files
        return data

    @classmethod
    def parse(cls, data: object) -> Manifest:
        """Validate a manifest's structure, upgrading older revisions; BundleError naming the key at fault."""
        data = upgrade(_object(data, "the manifest"))
        known = {
            "format_version",
            "config",
            "parameters",
            "source",
            "target",
            "decoding",
            "limits",
            "graphs",
            "opset",
            "graph_variant",
            "precision",
            "producer",
            "parity",
            "quality",
            "evaluation",
            "target_views",
            "files",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise _fail(f"unknown key {unknown[0]!r}")
        config = _get(data, "config", "", dict)
        source_eos = config.get("source_eos", False)
        if not isinstance(source_eos, bool):
            raise _fail(f"config.source_eos must be true or false, got {source_eos!r}")
        decoding = _get(data, "decoding", "", dict)
        padding = _get(decoding, "memory_bias_padding", "decoding.", (int, float, type(None)))
        if padding is not None and (not is_finite_number(padding) or padding >= 0):
            raise _fail(f"decoding.memory_bias_padding must be a finite negative number, got {padding!r}")
        limits = _get(data, "limits", "", dict)
        rule = _get(limits, "max_target_length", "limits.", dict)
        ratio = _get(rule, "ratio", "limits.max_target_length.", (int, float))
        offset = _get(rule, "offset", "limits.max_target_length.", int)
        max_source_length = _get(limits, "max_source_length", "limits.", int)
        if not is_finite_number(ratio) or not 0 <= ratio <= MAX_TARGET_LENGTH_RATIO:
            raise _fail(f"limits.max_target_length.ratio must be in [0, {MAX_TARGET_LENGTH_RATIO:g}], got {ratio!r}")
        if not 1 <= offset <= MAX_TARGET_LENGTH_OFFSET:
            raise _fail(f"limits.max_target_length.offset must be in [1, {MAX_TARGET_LENGTH_OFFSET}], got {offset}")
        if not 1 <= max_source_length <= MAX_SOURCE_LENGTH:
            raise _fail(f"limits.max_source_length must be in [1, {MAX_SOURCE_LENGTH}], got {max_source_length}")
        files = _get(data, "files", "", dict)
        for name, digest in files.items():
            if not isinstance(digest, str) or len(digest) != 64:
                raise _fail(f"files.{name} must be a sha256 hex digest")
        graph_specs = _get(data, "graphs", "", dict)
        unknown = sorted(set(graph_specs) - set(GRAPH_KINDS) - set(OPTIONAL_GRAPH_KINDS))
        if unknown:
            raise _fail(f"graphs: unknown graph {unknown[0]!r}")
        graphs = {
            kind: _graph(_get(graph_specs, kind, "graphs.", dict), kind)
            for kind in GRAPH_KINDS + tuple(k for k in OPTIONAL_GRAPH_KINDS if k in graph_specs)
        }
        for key, allowed in (("graph_variant", GRAPH_VARIANTS), ("precision", PRECISIONS)):
            if _get(data, key, "", str) not in allowed:
                raise _fail(f"{key} {data[key]!r} is not one of {', '.join(allowed)}")
        optional = {
            key: _get(data, key, "", (dict, type(None))) if key in data else None for key in ("quality", "evaluation")
        }
        parameters = _get(data, "parameters", "", (int, type(None))) if "parameters" in data else None
        views = _target_views(data["target_views"]) if "target_views" in data else None
        return cls(
            config,
            _side(data, "source"),
            _side(data, "target"),
            _get(decoding, "start_id", "decoding.", int),
            _get(decoding, "eos_id", "decoding.", int),
            None if padding is None else float(padding),
            max_source_length,
            float(ratio),
            offset,
            graphs,
            _get(data, "opset", "", int),
            data["graph_variant"],
            data["precision"],
            files,
            parameters,
            _get(data, "producer", "", dict) if "producer" in data else {},
            _get(data, "parity", "", dict) if "parity" in data else {},
            **optional,
            target_views=views,
        )


def upgrade(data: dict) -> dict:
    """A manifest of an older revision in the current form (a new dict); the current revision as it is.

    Revision 2 → 3: nothing changes (revision 3 adds the optional greedy graph and weights.bin).
    Revision 1 → 3: the per-side "tokenizer" (a copy of the vocabulary file's) is dropped; the memory bias at padding
    becomes explicit (-1e9, the only value revision-1 exporters wrote); graphs_variant and precision, optional then,
    default to "optimized" and "float32"; and the separate greedy choice of early optimized step graphs (next_ids,
    next_log_probs; the choice is now the top-1 of top_ids/top_log_probs) is renamed to roles the runtime ignores, so
    such a step runs with the choice made from its log-probs. Re-export a revision-1 bundle for the full speed.
    """
    version = data.get("format_version")
    if version == FORMAT_VERSION:
        return data
    if version == 2:  # revision 3 only added what revision 2 lacks: the optional greedy graph and weights.bin
        return {**data, "format_version": FORMAT_VERSION}
    if version != 1:
        raise _fail(
            f"unsupported format_version {version!r} (this runtime reads {FORMAT_VERSION} and upgrades 1 and 2); "
            "re-export the bundle or upgrade s2s-runtime"
        )
    upgraded = {key: value for key, value in data.items() if key != "format_version"}
    upgraded["format_version"] = FORMAT_VERSION
    for side in ("source", "target"):
        if isinstance(upgraded.get(side), dict):
            upgraded[side] = {k: v for k, v in upgraded[side].items() if k != "tokenizer"}
    graphs = upgraded.get("graphs")
    has_attention = (
        isinstance(graphs, dict)
        and isinstance(graphs.get("decoder_step"), dict)
        and roles.ATTENTION in (graphs["decoder_step"].get("outputs") or {})
    )
    if isinstance(upgraded.get("decoding"), dict):
        upgraded["decoding"] = {**upgraded["decoding"], "memory_bias_padding": -1e9 if has_attention else None}
    upgraded.setdefault("graph_variant", "optimized")
    upgraded.setdefault("precision", "float32")
    if isinstance(graphs, dict) and isinstance(graphs.get("decoder_step"), dict):
        step = dict(graphs["decoder_step"])
        outputs = step.get("outputs")
        if isinstance(outputs, dict):
            step["outputs"] = {
                (roles.IGNORED_PREFIX + role if role in roles.REVISION_1_CHOICE else role): spec
                for role, spec in outputs.items()
            }
        upgraded["graphs"] = {**graphs, "decoder_step": step}
    return upgraded


def _object(value: object, what: str) -> dict:
    if not isinstance(value, dict):
        raise _fail(f"{what}: expected a JSON object")
    return value


def _get(mapping: dict, key: str, where: str, kind: type | tuple) -> Any:
    if key not in mapping:
        raise _fail(f"missing {where if where else 'required key '}{key!r}")
    value = mapping[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _fail(f"{where}{key!r} has the wrong type ({type(value).__name__})")
    return value


def _target_views(views: object) -> dict[str, dict[str, str]]:
    """The target views, structurally checked (their tokens are checked against the vocabulary by the bundle)."""
    views = _object(views, "target_views")
    for name, view in views.items():
        for token, shown in _object(view, f"target_views.{name}").items():
            if not isinstance(shown, str) or not shown or any(c.isspace() for c in shown):
                raise _fail(f"target_views.{name}.{token} must be a non-empty token without spaces, got {shown!r}")
    return views


def _side(data: dict, side: str) -> SideSchema:
    spec = _get(data, side, "", dict)
    special_ids = _get(spec, "special_ids", f"{side}.", dict)
    for role, token_id in special_ids.items():
        if not isinstance(token_id, int) or isinstance(token_id, bool):
            raise _fail(f"{side}.special_ids.{role} must be an int")
    return SideSchema(_get(spec, "vocab", f"{side}.", str), special_ids)


def _graph(spec: dict, kind: str) -> GraphSchema:
    io = {}
    for direction in ("inputs", "outputs"):
        entries = _get(spec, direction, f"graphs.{kind}.", dict)
        io[direction] = {
            role: _tensor(
                role, _object(entry, f"graphs.{kind}.{direction}.{role}"), f"graphs.{kind}.{direction}.{role}"
            )
            for role, entry in entries.items()
        }
        names = [tensor.name for tensor in io[direction].values()]
        if len(set(names)) != len(names):
            raise _fail(f"graphs.{kind}.{direction} names one graph tensor under two roles")
    for role in REQUIRED_INPUTS[kind]:
        if role not in io["inputs"]:
            raise _fail(f"graphs.{kind}.inputs lacks the required role {role!r}")
    for role in REQUIRED_OUTPUTS[kind]:
        if role not in io["outputs"]:
            raise _fail(f"graphs.{kind}.outputs lacks the required role {role!r}")
    return GraphSchema(_get(spec, "file", f"graphs.{kind}.", str), io["inputs"], io["outputs"])


def _tensor(role: str, entry: dict, where: str) -> TensorSpec:
    name = _get(entry, "name", f"{where}.", str)
    dtype = _get(entry, "dtype", f"{where}.", str)
    if dtype not in DTYPES:
        raise _fail(f"{where}.dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    shape = _get(entry, "shape", f"{where}.", list)
    if not all(isinstance(d, str) or (isinstance(d, int) and not isinstance(d, bool) and d > 0) for d in shape):
        raise _fail(f"{where}.shape {shape} must hold positive sizes or dimension names")
    return TensorSpec(role, name, dtype, tuple(shape))
