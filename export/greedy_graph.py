"""The greedy graph: a bundle's whole greedy decode as one onnxruntime call — its encoder, then an ONNX `Loop` whose
body is its own decoder step choosing the top token — so a batch is decoded without a `session.run` and Python per
step (s2s_runtime.engine.fused runs it).

It is composed from the encoder and step graphs exactly as written to the bundle (fp32, int8 or fp16), never from an
onnxruntime-optimized model (onnxruntime#25510): names are prefixed ("encoder/", "step/") so the two graphs cannot
collide, the step's per-sequence inputs read the encoder's outputs from the outer scope, and its states ride the
Loop's carried values. Every body input has its shape declared: onnxruntime only fuses and prepacks a Loop body whose
input shapes it knows. Finished rows stay in the loop until every row has chosen eos or the longest limit is
reached; outputs per step are the chosen ids and their log-probs, from which the runtime cuts each row.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from s2s_runtime import roles
from s2s_runtime.schema import GraphSchema, TensorSpec

from .graph_builder import IR_VERSION, ONNX_DTYPES

GREEDY_FILE = "greedy.onnx"
MAX_LENGTHS, CHOSEN_IDS, CHOSEN_LOG_PROBS = roles.MAX_LENGTHS, roles.CHOSEN_IDS, roles.CHOSEN_LOG_PROBS
# The most a hypothesis's score may differ between the greedy graph and the step loop: the same kernels on the same
# values give the same float32 log-probs, summed in float64 by the same code (decoding.greedy.cut_choices).
SCORE_TOLERANCE = 1e-6


def _rename(graph: onnx.GraphProto, prefix: str, bound: dict[str, str]) -> dict[str, str]:
    """Prefix every name `graph` defines (inputs, initializers, node outputs), except those in `bound` (old → new,
    names that become references to values of an outer graph); subgraphs' references follow. Returns old → new."""
    names = dict(bound)
    for value in [*graph.input, *graph.initializer]:
        names.setdefault(value.name, prefix + value.name)
    for node in graph.node:
        for output in node.output:
            if output:
                names.setdefault(output, prefix + output)

    def apply(g: onnx.GraphProto, mapping: dict[str, str]) -> None:
        for node in g.node:
            node.input[:] = [mapping.get(name, name) if name else name for name in node.input]
            node.output[:] = [mapping.get(name, name) if name else name for name in node.output]
            if node.name:
                node.name = prefix + node.name
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:  # a subgraph sees the outer names it does not shadow
                    inner = {v.name for v in [*attribute.g.input, *attribute.g.initializer]}
                    inner |= {o for n in attribute.g.node for o in n.output}
                    apply(attribute.g, {k: v for k, v in mapping.items() if k not in inner})

    apply(graph, names)
    for value in [*graph.input, *graph.initializer, *graph.output, *graph.value_info]:
        value.name = names.get(value.name, value.name)
    return names


def _value(name: str, spec: TensorSpec) -> onnx.ValueInfoProto:
    """A value named `name` with the dtype and shape (named dimensions kept) of a manifest tensor."""
    return helper.make_tensor_value_info(name, ONNX_DTYPES[spec.dtype], list(spec.shape))


def build_greedy(
    encoder: onnx.ModelProto,
    step: onnx.ModelProto,
    encoder_schema: GraphSchema,
    step_schema: GraphSchema,
    *,
    start_id: int,
    eos_id: int,
) -> onnx.ModelProto:
    """The greedy graph of a bundle's encoder and step (its manifest entry: greedy_schema).

    Inputs: source_ids (batch, source_length), source_lengths (batch,), max_lengths (batch,): a row stops at eos or
    after its max_lengths tokens. Outputs: chosen_ids and chosen_log_probs, (steps, batch): the token each row chose
    at each step and its log-prob (rows that have finished keep choosing; the runtime cuts them).

    Examples:
        >>> model = build_greedy(encoder, step, enc_schema, step_schema, start_id=1, eos_id=2)  # doctest: +SKIP
    """
    encoder, step = _copy(encoder), _copy(step)
    enc_names = _rename(encoder.graph, "encoder/", {})
    step_in, step_out = step_schema.inputs, step_schema.outputs
    enc_out = {role: enc_names[spec.name] for role, spec in encoder_schema.outputs.items()}
    state_roles = [role for role in step_in if roles.is_state(role)]
    static_roles = [role for role in step_in if role not in roles.CONTROL_INPUTS and not roles.is_state(role)]
    # The step's statics are the encoder's outputs, read from the outer scope; its previous ids and states are the
    # Loop body's inputs (bound by name: no copy per iteration); everything else gets its own name.
    bound = {step_in[r].name: enc_out[r] for r in static_roles}
    bound |= {step_in[r].name: "loop/" + r for r in [roles.PREVIOUS_IDS, *state_roles]}
    step_names = _rename(step.graph, "step/", bound)
    s_in = {role: step_names[spec.name] for role, spec in step_in.items()}
    s_out = {role: step_names[spec.name] for role, spec in step_out.items()}

    body_inputs = [
        helper.make_tensor_value_info("loop/iteration", TensorProto.INT64, []),
        helper.make_tensor_value_info("loop/condition", TensorProto.BOOL, []),
        helper.make_tensor_value_info("loop/" + roles.PREVIOUS_IDS, TensorProto.INT64, [roles.BATCH_DIM]),
        *[_value("loop/" + role, step_in[role]) for role in state_roles],
        helper.make_tensor_value_info("loop/finished", TensorProto.BOOL, [roles.BATCH_DIM]),
    ]
    constants = [
        helper.make_tensor("loop/flat", TensorProto.INT64, [1], [-1]),
        helper.make_tensor("loop/eos", TensorProto.INT64, [], [eos_id]),
        helper.make_tensor("loop/one", TensorProto.INT64, [], [1]),
    ]
    nodes = list(step.graph.node)
    if roles.TOP_IDS in step_out:  # the optimized step ranks in the graph: its top-1
        constants.append(helper.make_tensor(s_in[roles.TOP_K], TensorProto.INT64, [1], [1]))
        top_ids, top_log_probs = s_out[roles.TOP_IDS], s_out[roles.TOP_LOG_PROBS]
    else:  # the plain step: argmax of the log-probs (the first of equal maxima, as numpy's)
        top_ids, top_log_probs = "loop/top_ids", "loop/top_log_probs"
        nodes += [
            helper.make_node("ArgMax", [s_out[roles.LOG_PROBS]], [top_ids], axis=1, keepdims=1),
            helper.make_node("GatherElements", [s_out[roles.LOG_PROBS], top_ids], [top_log_probs], axis=1),
        ]
    # Every kernel here runs once per step (≈ 0.3 µs each on a CPU, a sizeable share of a small model's step), so
    # the bookkeeping is the least that decides when to stop: a row is finished once it chose eos; the Loop runs
    # until every row is, or for the longest max length. Rows past their own max length run on; the runtime cuts
    # them (decoding.greedy.cut_choices), as it cuts what finished rows choose after eos.
    if step_out[roles.LOG_PROBS].dtype == "float32":
        chosen_log_prob = "loop/chosen_log_prob"
        nodes.append(helper.make_node("Reshape", [top_log_probs, "loop/flat"], [chosen_log_prob]))  # (batch,)
    else:
        chosen_log_prob = "loop/chosen_log_prob_float"
        nodes += [
            helper.make_node("Reshape", [top_log_probs, "loop/flat"], ["loop/chosen_log_prob"]),  # (batch,)
            helper.make_node("Cast", ["loop/chosen_log_prob"], [chosen_log_prob], to=TensorProto.FLOAT),
        ]
    nodes += [
        helper.make_node("Reshape", [top_ids, "loop/flat"], ["loop/chosen"]),  # (batch,)
        helper.make_node("Identity", ["loop/chosen"], ["loop/chosen_out"]),
        helper.make_node("Equal", ["loop/chosen", "loop/eos"], ["loop/chose_eos"]),
        helper.make_node("Or", ["loop/finished", "loop/chose_eos"], ["loop/finished_out"]),
        helper.make_node("Cast", ["loop/finished_out"], ["loop/finished_count"], to=TensorProto.INT64),
        helper.make_node("ReduceMin", ["loop/finished_count"], ["loop/all_finished"], keepdims=0),
        helper.make_node("Less", ["loop/all_finished", "loop/one"], ["loop/condition_out"]),
    ]
    body_outputs = [
        helper.make_tensor_value_info("loop/condition_out", TensorProto.BOOL, []),
        helper.make_tensor_value_info("loop/chosen_out", TensorProto.INT64, [roles.BATCH_DIM]),
        *[_value(s_out[role], step_out[role]) for role in state_roles],
        helper.make_tensor_value_info("loop/finished_out", TensorProto.BOOL, [roles.BATCH_DIM]),
        helper.make_tensor_value_info("loop/chosen", TensorProto.INT64, [roles.BATCH_DIM]),
        helper.make_tensor_value_info(chosen_log_prob, TensorProto.FLOAT, [roles.BATCH_DIM]),
    ]
    body = helper.make_graph(nodes, "greedy_step", body_inputs, body_outputs, initializer=constants)

    enc_in = encoder_schema.inputs
    main = [
        helper.make_node("Identity", [roles.SOURCE_IDS], [enc_names[enc_in[roles.SOURCE_IDS].name]]),
        helper.make_node("Identity", [roles.SOURCE_LENGTHS], [enc_names[enc_in[roles.SOURCE_LENGTHS].name]]),
        *encoder.graph.node,
        helper.make_node("Shape", [roles.SOURCE_LENGTHS], ["greedy/batch"]),
        helper.make_node(
            "ConstantOfShape",
            ["greedy/batch"],
            ["greedy/start"],
            value=helper.make_tensor("start", TensorProto.INT64, [1], [start_id]),
        ),
        helper.make_node(
            "ConstantOfShape",
            ["greedy/batch"],
            ["greedy/finished"],
            value=helper.make_tensor("finished", TensorProto.BOOL, [1], [False]),
        ),
        helper.make_node("ReduceMax", [MAX_LENGTHS], ["greedy/steps"], keepdims=0),
        helper.make_node(
            "Loop",
            ["greedy/steps", "", "greedy/start", *[enc_out[role] for role in state_roles], "greedy/finished"],
            [
                "greedy/last_ids",
                *["greedy/last_" + role for role in state_roles],
                "greedy/last_finished",
                CHOSEN_IDS,
                CHOSEN_LOG_PROBS,
            ],
            body=body,
        ),
    ]
    schema = greedy_schema(encoder_schema)
    graph = helper.make_graph(
        main,
        "greedy",
        [_value(spec.name, spec) for spec in schema.inputs.values()],
        [_value(spec.name, spec) for spec in schema.outputs.values()],
        initializer=[*encoder.graph.initializer, *step.graph.initializer],
    )
    opsets = {o.domain: o.version for o in [*encoder.opset_import, *step.opset_import]}
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(domain, version) for domain, version in sorted(opsets.items())],
        producer_name="s2s_export",
        ir_version=IR_VERSION,
    )
    return model


def greedy_schema(encoder_schema: GraphSchema) -> GraphSchema:
    """The manifest entry of the greedy graph of a bundle whose encoder is `encoder_schema`."""
    source_ids = encoder_schema.inputs[roles.SOURCE_IDS]
    return GraphSchema(
        GREEDY_FILE,
        {
            roles.SOURCE_IDS: TensorSpec(roles.SOURCE_IDS, roles.SOURCE_IDS, "int64", source_ids.shape),
            roles.SOURCE_LENGTHS: TensorSpec(roles.SOURCE_LENGTHS, roles.SOURCE_LENGTHS, "int64", (roles.BATCH_DIM,)),
            MAX_LENGTHS: TensorSpec(MAX_LENGTHS, MAX_LENGTHS, "int64", (roles.BATCH_DIM,)),
        },
        {
            CHOSEN_IDS: TensorSpec(CHOSEN_IDS, CHOSEN_IDS, "int64", ("steps", roles.BATCH_DIM)),
            CHOSEN_LOG_PROBS: TensorSpec(CHOSEN_LOG_PROBS, CHOSEN_LOG_PROBS, "float32", ("steps", roles.BATCH_DIM)),
        },
    )


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def greedy_parity(bundle_dir: Path, sources: Sequence[str], *, device: str = "cpu") -> dict:
    """The export's check of a written bundle's greedy graph against its own step loop (the runtime, both ways) on the
    validation sources, each alone and all in one batch: identical ids, scores within SCORE_TOLERANCE.

    Examples:
        >>> greedy_parity(Path("bundles/g2p"), ["hello", "world"])["passed"]  # doctest: +SKIP
        True
    """
    import s2s_runtime

    batch = max(len(sources), 1)
    graph = s2s_runtime.load(bundle_dir, device=device, greedy_graph_max_batch=batch)
    step_loop = s2s_runtime.load(bundle_dir, device=device, greedy_graph_max_batch=0)
    expected = step_loop.generate(list(sources), max_batch_size=batch)
    got = [graph.generate([source])[0] for source in sources] + graph.generate(list(sources), max_batch_size=batch)
    pairs = list(zip(got, expected + expected, strict=True))
    score_diff = max((abs(g.score - e.score) for g, e in pairs), default=0.0)
    identical = all(g.ids == e.ids and g.finished == e.finished for g, e in pairs)
    return {
        "sources": len(sources),
        "ids_identical": identical,
        "max_score_diff": score_diff,
        "passed": identical and score_diff <= SCORE_TOLERANCE,
    }
