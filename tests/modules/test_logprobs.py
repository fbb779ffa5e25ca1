import pytest
import torch

from corl.modules.logprobs import chunked_token_logps, token_logps


def test_token_logps_is_the_log_softmax_at_the_token():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    tokens = torch.tensor([2, 1])
    # log softmax at T = 2: logits / 2, minus logsumexp of (0.5, 1, 1.5) and of (0, 0, 0).
    expected = torch.tensor([1.5 - torch.tensor([0.5, 1.0, 1.5]).logsumexp(0), -torch.tensor(3.0).log()])
    torch.testing.assert_close(token_logps(logits, tokens, 2.0), expected)
    torch.testing.assert_close(token_logps(logits, tokens, 1.0),
                               torch.log_softmax(logits, -1).gather(-1, tokens[:, None]).squeeze(-1))


@pytest.mark.parametrize("chunk_tokens", [1, 7, 12, 10_000])
def test_chunks_give_the_same_values_and_gradients(chunk_tokens):
    torch.manual_seed(0)
    rows, length, width, vocab = 3, 5, 4, 11
    hidden = torch.randn(2 * rows, length, width, requires_grad=True)  # conditional and unconditional rows
    head = torch.nn.Linear(width, vocab)
    tokens = torch.randint(vocab, (rows, length))
    seen = []

    def guided(states):  # the CFG mix of the two halves, as images are sampled
        cond, uncond = head(states).chunk(2)
        seen.append(states.shape[0] * states.shape[1])
        return uncond + 3.0 * (cond - uncond)

    full_logits = guided(hidden)
    whole = token_logps(full_logits, tokens, 0.7)
    (grad_whole,) = torch.autograd.grad(whole.sum(), hidden)
    seen.clear()
    chunked, spread = chunked_token_logps(hidden, tokens, guided, 0.7, chunk_tokens, with_entropy=True)
    torch.testing.assert_close(spread, torch.distributions.Categorical(logits=full_logits.detach() / 0.7).entropy())
    (grad_chunked,) = torch.autograd.grad(chunked.sum(), hidden)
    torch.testing.assert_close(chunked, whole)
    torch.testing.assert_close(grad_chunked, grad_whole)
    per_chunk = max(1, chunk_tokens // rows)
    assert max(seen) <= 2 * rows * per_chunk, "one chunk of positions at a time"


def test_without_autograd_chunks_are_not_recomputed():
    hidden, calls = torch.randn(2, 6, 4), []
    head = torch.nn.Linear(4, 9)

    def logits(states):
        calls.append(1)
        return head(states)

    with torch.no_grad():
        chunked_token_logps(hidden, torch.zeros(2, 6, dtype=torch.long), logits, 1.0, chunk_tokens=4)
    assert len(calls) == 3  # 2 positions x 2 rows per chunk


def test_the_entropy_is_computed_only_when_asked(monkeypatch):
    # The reference's and the replay's passes throw it away: no softmax over the vocabulary for them.
    hidden, tokens = torch.randn(2, 6, 4, requires_grad=True), torch.zeros(2, 6, dtype=torch.long)
    head = torch.nn.Linear(4, 9)
    asked = chunked_token_logps(hidden, tokens, head, 1.0, chunk_tokens=4, with_entropy=True)
    monkeypatch.setattr("corl.modules.logprobs.entropy", lambda *a: pytest.fail("entropy computed unasked"))
    logps, spread = chunked_token_logps(hidden, tokens, head, 1.0, chunk_tokens=4)
    assert spread is None
    torch.testing.assert_close(logps, asked[0])
    logps.sum().backward()  # the recomputed chunks in backward do not ask for it either


def test_sampling_draws_the_softmax_distribution_and_greedy_at_zero():
    from corl.modules.logprobs import sample_from_logits

    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -30.0]]).repeat(200_000, 1)
    torch.manual_seed(0)
    tokens = sample_from_logits(logits, temperature=0.7)
    freq = torch.bincount(tokens, minlength=5).float() / len(tokens)
    expected = torch.softmax(logits[0] / 0.7, -1)  # (0.749, 0.179, 0.043, 0.010, 0.000)
    # 200k draws: the standard error of each share is at most sqrt(0.25 / 2e5) = 0.0011
    torch.testing.assert_close(freq, expected, atol=0.005, rtol=0)
    assert freq[4] == 0  # a probability of e^-43 is never drawn
    assert torch.equal(sample_from_logits(logits[:3], 0.0), torch.zeros(3, dtype=torch.long))


def test_sampling_needs_no_host_sync():
    # torch.multinomial copies to the host (a sync per token on a GPU); the exponential race is pure tensor ops.
    from corl.modules.logprobs import sample_from_logits

    with torch.autograd.profiler.profile() as prof:
        sample_from_logits(torch.randn(4, 100), 1.0)
    assert not any("multinomial" in event.name for event in prof.function_events)
