"""Logical roles of the graphs' inputs and outputs — the bundle contract between exporter and runtime.

The manifest maps each role to a graph's real input/output name, so the runtime binds by role and never guesses
from names. Roles starting with `state.` are recurrent: the decoder step's output of that role becomes its input at
the next step. The encoder outputs every decoder-step input except the control inputs (`previous_ids`, `top_k`): the
initial states and the per-sequence statics.
"""

SOURCE_IDS = "source_ids"  # encoder input  (batch, source_length) int64
SOURCE_LENGTHS = "source_lengths"  # encoder input  (batch,) int64
PREVIOUS_IDS = "previous_ids"  # decoder input  (batch,) int64
LOG_PROBS = "log_probs"  # decoder output (batch, target_vocab) float
ATTENTION = "attention"  # decoder output (batch, source_length) float, attention models only
TOP_K = "top_k"  # decoder input  (1,) int64: how many best tokens per row to return (optimized)
TOP_LOG_PROBS = "top_log_probs"  # decoder output (batch, top_k) float: the best log-probs, best first (optimized)
TOP_IDS = "top_ids"  # decoder output (batch, top_k) int64: their token ids (optimized)
CONTROL_INPUTS = (PREVIOUS_IDS, TOP_K)  # decoder inputs the runtime feeds; the encoder provides all the others

# The greedy graph (the whole greedy decode in one call): source_ids and source_lengths as the encoder's, and
MAX_LENGTHS = "max_lengths"  # greedy input  (batch,) int64: a row stops at eos or after this many tokens
CHOSEN_IDS = "chosen_ids"  # greedy output (steps, batch) int64: each row's chosen token at each step
CHOSEN_LOG_PROBS = "chosen_log_probs"  # greedy output (steps, batch) float32: their log-probs

STATE_H = "state.h"  # (layers, batch, hidden)
STATE_C = "state.c"  # (layers, batch, hidden), LSTM only
STATE_FEED = "state.feed"  # (batch, hidden), input feeding only
CONTEXT = "context"  # (batch, encoder_output) — concat conditioning
MEMORY = "memory"  # (batch, source_length, encoder_output) — attention
ATTENTION_KEYS = "attention_keys"  # (batch, source_length, key) — attention
MEMORY_BIAS = "memory_bias"  # (batch, source_length): 0 at real positions, a large negative at padding

STATE_PREFIX = "state."
# Revision-1 bundles of the first optimized exports output their greedy choice apart; the schema's upgrade renames
# those outputs with IGNORED_PREFIX, which the runtime never reads (the choice is made from the log-probs instead).
REVISION_1_CHOICE = ("next_ids", "next_log_probs")
IGNORED_PREFIX = "ignored."
BATCH_DIM = "batch"
SOURCE_DIM = "source_length"


def is_state(role: str) -> bool:
    return role.startswith(STATE_PREFIX)
