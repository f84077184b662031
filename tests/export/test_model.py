import pytest
import torch

from tests.conftest import random_checkpoint


@pytest.mark.parametrize(
    "options",
    [
        dict(cell="lstm", attention="additive", bidirectional=True, bridge="linear", num_layers=2, hidden_size=16),
        dict(cell="gru", attention="general", conditioning="both", hidden_size=16),
        dict(cell="lstm", conditioning="concat", bridge="zeros", feed_previous=False, hidden_size=16),
        dict(cell="gru", attention="dot", input_feeding=True, hidden_size=16),
    ],
)
def test_teacher_forcing_in_one_call_equals_the_exported_step_loop(options):
    """Training runs all decoder steps in one RNN call; the bundle runs one step at a time: same numbers."""
    model = random_checkpoint(3, **options).model
    source, lengths = torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0]]), torch.tensor([4, 2])
    target_in = torch.tensor([[2, 5, 6, 7, 8], [2, 9, 9, 0, 0]])
    with torch.no_grad():
        all_at_once = model(source, lengths, target_in)  # (batch, steps, vocab)
        states, statics = model.split(model.encode(source, lengths))
        stepwise = []
        for t in range(target_in.shape[1]):
            log_probs, states, _ = model.decoder(target_in[:, t], states, statics)
            stepwise.append(log_probs)
    torch.testing.assert_close(all_at_once, torch.stack(stepwise, dim=1), atol=1e-5, rtol=0)
