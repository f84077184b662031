"""The recurrent encoder–decoder in PyTorch: Encoder, Attention, DecoderStep, Seq2Seq.

The interface between encoder and decoder is a dict of tensors keyed by *role* — the same roles the exported ONNX
graphs and the runtime use (s2s_runtime.roles):
  state.h (layers, batch, hidden), state.c (LSTM only), state.feed (input feeding only) — carried from step to step;
  context (batch, enc_out), memory (batch, src_len, enc_out), attention_keys (batch, src_len, key), memory_bias
  (batch, src_len) — fixed for a sequence.
Padding never leaks into states: the encoder runs on packed sequences, so each row's final states (both directions)
are those at its own length, and attention masks padded positions through memory_bias.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from s2s_runtime.roles import ATTENTION_KEYS, CONTEXT, MEMORY, MEMORY_BIAS, STATE_C, STATE_FEED, STATE_H

from .config import Seq2SeqConfig

# Added to attention scores at padded source positions: exp() of it is exactly 0 in float32, and unlike -inf it
# cannot turn a row into NaN.
MASK_VALUE = -1e9


def rnn_class(cell: str) -> type[nn.RNNBase]:
    return nn.GRU if cell == "gru" else nn.LSTM


class Encoder(nn.Module):
    """Embeds and encodes a padded batch of source ids, honouring each row's length."""

    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg.source_vocab_size, cfg.source_embedding_size)
        self.rnn = rnn_class(cfg.cell)(
            cfg.source_embedding_size,
            cfg.encoder_units,
            cfg.num_layers,
            batch_first=True,
            bidirectional=cfg.bidirectional,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, source_ids: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Returns memory (batch, src_len, enc_out) with zeros at padding, and the final states per layer
        (layers, batch, enc_out) — h, and c for an LSTM (else None) — both directions concatenated."""
        src_len = source_ids.shape[1]
        embedded = self.dropout(self.embedding(source_ids))  # (batch, src_len, src_emb)
        packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        outputs, final = self.rnn(packed)
        memory, _ = pad_packed_sequence(outputs, batch_first=True, total_length=src_len)  # (batch, src_len, enc_out)
        final_h, final_c = final if isinstance(final, tuple) else (final, None)  # (layers*dirs, batch, hidden)
        return memory, self._per_layer(final_h), None if final_c is None else self._per_layer(final_c)

    def _per_layer(self, state: Tensor) -> Tensor:
        layers, dirs, hidden = self.cfg.num_layers, self.cfg.num_directions, self.cfg.encoder_units
        batch = state.shape[1]
        state = state.view(layers, dirs, batch, hidden).permute(0, 2, 1, 3)  # (layers, batch, dirs, hidden)
        return state.reshape(layers, batch, dirs * hidden)  # (layers, batch, enc_out)


class Bridge(nn.Module):
    """Maps encoder final states (layers, batch, enc_out) to decoder initial states (layers, batch, hidden)."""

    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        self.kind = cfg.bridge
        self.hidden_size = cfg.hidden_size
        if self.kind in ("linear", "linear_relu"):
            self.hidden = nn.Linear(cfg.encoder_output_size, cfg.hidden_size)
            if cfg.cell == "lstm":
                self.cell = nn.Linear(cfg.encoder_output_size, cfg.hidden_size)

    def forward(self, state: Tensor, which: str) -> Tensor:
        if self.kind == "copy":
            return state
        if self.kind == "zeros":
            return state.new_zeros(state.shape[0], state.shape[1], self.hidden_size)
        projected = (self.hidden if which == "h" else self.cell)(state)  # (layers, batch, hidden)
        return torch.relu(projected) if self.kind == "linear_relu" else projected


class Attention(nn.Module):
    """Luong attention: score the decoder output against the source, then combine context and output."""

    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        self.kind = cfg.attention
        hidden, enc_out = cfg.hidden_size, cfg.encoder_output_size
        if self.kind in ("general", "additive"):
            self.key = nn.Linear(enc_out, hidden, bias=False)
        if self.kind == "additive":
            self.query = nn.Linear(hidden, hidden)
            self.score = nn.Linear(hidden, 1, bias=False)
        self.affine = cfg.attention_combine == "affine"
        if cfg.attention_placement == "after":  # before the step the context goes into the cell instead
            self.combine = nn.Linear(enc_out + hidden, hidden, bias=self.affine)

    def keys(self, memory: Tensor) -> Tensor:
        """Per-sequence keys, computed once by the encoder rather than at every step."""
        return memory if self.kind == "dot" else self.key(memory)  # (batch, src_len, key)

    def forward(self, query: Tensor, memory: Tensor, keys: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
        """query (batch, steps, hidden) → attentional vectors (batch, steps, hidden),
        weights (batch, steps, src_len)."""
        context, weights = self.attend(query, memory, keys, bias)  # (batch, steps, enc_out), (batch, steps, src_len)
        combined = self.combine(torch.cat([context, query], dim=2))  # (batch, steps, hidden)
        return (combined if self.affine else torch.tanh(combined)), weights

    def attend(self, query: Tensor, memory: Tensor, keys: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
        """query (batch, steps, hidden) → context (batch, steps, enc_out), weights (batch, steps, src_len)."""
        if self.kind == "additive":
            energy = torch.tanh(keys.unsqueeze(1) + self.query(query).unsqueeze(2))  # (batch, steps, src_len, hidden)
            scores = self.score(energy).squeeze(3)  # (batch, steps, src_len)
        else:
            scores = torch.bmm(query, keys.transpose(1, 2))  # (batch, steps, src_len)
        weights = torch.softmax(scores + bias.unsqueeze(1), dim=2)  # (batch, steps, src_len)
        return torch.bmm(weights, memory), weights  # (batch, steps, enc_out)


class DecoderStep(nn.Module):
    """One decoder step: (previous ids, states, encoder statics) → (log-probs, new states, attention weights).

    This module is exactly what the decoder_step graph computes.
    """

    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.feed_previous or cfg.tie_target_embedding:
            self.embedding = nn.Embedding(cfg.target_vocab_size, cfg.target_embedding_size)
        self.rnn = rnn_class(cfg.cell)(
            cfg.decoder_input_size,
            cfg.hidden_size,
            cfg.num_layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
        self.attention = Attention(cfg) if cfg.attention != "none" else None
        self.dropout = nn.Dropout(cfg.dropout)
        self.output = nn.Linear(cfg.hidden_size, cfg.target_vocab_size)
        if cfg.tie_target_embedding:
            self.output.weight = self.embedding.weight

    def forward(
        self, previous_ids: Tensor, states: dict[str, Tensor], statics: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
        """One step: previous_ids (batch,) → log-probs (batch, vocab), new states, weights (batch, src_len) or None."""
        log_probs, new_states, weights = self.run(previous_ids.unsqueeze(1), states, statics)
        return log_probs.squeeze(1), new_states, None if weights is None else weights.squeeze(1)

    def run(
        self, previous_ids: Tensor, states: dict[str, Tensor], statics: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
        """Several steps at once for teacher forcing: previous_ids (batch, steps) → log-probs (batch, steps, vocab).
        With input feeding each step needs the previous step's output, so steps must be 1."""
        cfg = self.cfg
        steps = previous_ids.shape[1]
        parts = []
        if cfg.feed_previous:
            parts.append(self.dropout(self.embedding(previous_ids)))  # (batch, steps, tgt_emb)
        if cfg.concat_context:
            context = statics[CONTEXT]  # (batch, enc_out)
            parts.append(context.unsqueeze(1).expand(-1, steps, -1))  # (batch, steps, enc_out)
        weights = None
        if cfg.attends_before_step:  # scored with the previous top state; its context enters this step's input
            assert steps == 1, "attention before the step decodes one step at a time"
            query = states[STATE_H][-1].unsqueeze(1)  # (batch, 1, hidden)
            context, weights = self.attention.attend(
                query, statics[MEMORY], statics[ATTENTION_KEYS], statics[MEMORY_BIAS]
            )
            parts.append(context)  # (batch, 1, enc_out)
        if cfg.input_feeding:
            assert steps == 1, "input feeding decodes one step at a time"
            parts.append(states[STATE_FEED].unsqueeze(1))  # (batch, 1, hidden)
        step_input = torch.cat(parts, dim=2)  # (batch, steps, dec_in)
        if cfg.cell == "lstm":
            output, (h, c) = self.rnn(step_input, (states[STATE_H], states[STATE_C]))
            new_states = {STATE_H: h, STATE_C: c}  # each (layers, batch, hidden)
        else:
            output, h = self.rnn(step_input, states[STATE_H])
            new_states = {STATE_H: h}
        # output: (batch, steps, hidden)
        if self.attention is not None and not cfg.attends_before_step:
            output, weights = self.attention(output, statics[MEMORY], statics[ATTENTION_KEYS], statics[MEMORY_BIAS])
            if cfg.input_feeding:
                new_states[STATE_FEED] = output.squeeze(1)
        logits = self.output(self.dropout(output))  # (batch, steps, vocab)
        return torch.log_softmax(logits, dim=2), new_states, weights


class Seq2Seq(nn.Module):
    """Encoder + bridge + decoder step, with teacher-forced training and a greedy reference decoder.

    Examples:
        >>> model = Seq2Seq(Seq2SeqConfig(source_vocab_size=10, target_vocab_size=12))
        >>> encoded = model.encode(torch.tensor([[4, 5, 6]]), torch.tensor([3]))
        >>> sorted(encoded)
        ['state.h']
    """

    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.bridge = Bridge(cfg)
        self.decoder = DecoderStep(cfg)

    def encode(self, source_ids: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        """Everything the decoder step needs besides the previous ids, by role (the encoder graph's outputs)."""
        cfg = self.cfg
        memory, final_h, final_c = self.encoder(source_ids, lengths)
        encoded = {STATE_H: self.bridge(final_h, "h")}  # (layers, batch, hidden)
        if final_c is not None:
            encoded[STATE_C] = self.bridge(final_c, "c")
        if cfg.input_feeding:
            encoded[STATE_FEED] = memory.new_zeros(memory.shape[0], cfg.hidden_size)  # (batch, hidden)
        if cfg.concat_context:
            encoded[CONTEXT] = final_h[-1]  # (batch, enc_out)
        if self.decoder.attention is not None:
            positions = torch.arange(source_ids.shape[1], device=source_ids.device)  # (src_len,)
            padded = positions.unsqueeze(0) >= lengths.to(source_ids.device).unsqueeze(1)  # (batch, src_len)
            encoded[MEMORY] = memory
            encoded[ATTENTION_KEYS] = self.decoder.attention.keys(memory)
            encoded[MEMORY_BIAS] = padded.to(memory.dtype) * MASK_VALUE  # (batch, src_len)
        return encoded

    @staticmethod
    def split(encoded: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Split the encoder's outputs into recurrent states and per-sequence statics."""
        states = {k: v for k, v in encoded.items() if k.startswith("state.")}
        return states, {k: v for k, v in encoded.items() if not k.startswith("state.")}

    def forward(self, source_ids: Tensor, lengths: Tensor, target_in: Tensor) -> Tensor:
        """Teacher forcing: log-probs (batch, tgt_len, vocab) for decoder inputs target_in (batch, tgt_len)."""
        states, statics = self.split(self.encode(source_ids, lengths))
        if not self.cfg.decodes_step_by_step:  # all steps in one RNN call: several times faster to train
            return self.decoder.run(target_in, states, statics)[0]
        steps = []
        for t in range(target_in.shape[1]):
            log_probs, states, _ = self.decoder(target_in[:, t], states, statics)  # (batch, vocab)
            steps.append(log_probs)
        return torch.stack(steps, dim=1)

    @torch.no_grad()
    def greedy(
        self, source_ids: Tensor, lengths: Tensor, *, start_id: int, eos_id: int, max_length: int
    ) -> list[list[int]]:
        """Reference greedy decoding (the runtime must reproduce it): ids per row, without eos."""
        states, statics = self.split(self.encode(source_ids, lengths))
        batch = source_ids.shape[0]
        previous = torch.full((batch,), start_id, dtype=torch.long, device=source_ids.device)
        outputs: list[list[int]] = [[] for _ in range(batch)]
        done = [False] * batch
        for _ in range(max_length):
            log_probs, states, _ = self.decoder(previous, states, statics)
            previous = log_probs.argmax(dim=1)  # (batch,)
            for row, token in enumerate(previous.tolist()):
                if not done[row]:
                    if token == eos_id:
                        done[row] = True
                    else:
                        outputs[row].append(token)
            if all(done):
                break
        return outputs
