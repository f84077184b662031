"""The GNMT coverage penalty (Wu et al., 2016, eq. 14), a ranking term of beam search.

    cp = β · Σ_i log(min(Σ_t a_t,i, 1))

a_t,i is the attention the decoder paid to source position i at output step t (eos step included), so a position
that received a total of 1 or more costs nothing and a neglected one costs log of what it received: among
hypotheses of similar probability, the one that covers the whole source ranks first. Coverage is floored at
COVERAGE_FLOOR, so a position with no attention at all costs β · log(1e-20) ≈ -46 β instead of -inf.
"""

from __future__ import annotations

import numpy as np

from .hypotheses import Candidate
from .ranking import RankingTerm, register_term

COVERAGE_FLOOR = 1e-20


@register_term
class CoveragePenalty(RankingTerm):
    option = "coverage_penalty"
    needs_attention = True

    def __call__(self, candidate: Candidate, source_length: int | None) -> float:
        attention = np.stack(candidate.attention)[:, :source_length]  # (steps, source_length)
        coverage = np.maximum(np.minimum(attention.sum(axis=0, dtype=np.float64), 1.0), COVERAGE_FLOOR)
        return self.options.coverage_penalty * float(np.log(coverage).sum())
