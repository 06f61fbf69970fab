import torch

from harness.superb.featurizer import Featurizer
from harness.superb.heads import BiLSTMCTC, LinearCTC, UtteranceHead, ctc_loss, greedy_ctc_decode


def test_featurizer_starts_as_mean_and_follows_softmax():
    states = torch.randn(2, 5, 3, 4)  # (B, T, L+1, D)
    f = Featurizer(3, 4)
    assert torch.allclose(f(states), states.mean(2), atol=1e-6)
    with torch.no_grad():
        f.weights.copy_(torch.tensor([0.0, 0.0, 50.0]))
    assert torch.allclose(f(states), states[:, :, 2], atol=1e-5)
    assert abs(sum(f.layer_weights()) - 1) < 1e-6


def test_featurizer_single_state_is_identity_without_weights():
    f = Featurizer(1, 4)
    x = torch.randn(3, 1, 4)
    assert f.weights is None and f.layer_weights() == [1.0]
    assert torch.equal(f(x), x[:, 0])
    assert not list(f.parameters())


def test_featurizer_normalisation():
    mean, std = torch.full((2, 3), 1.0), torch.full((2, 3), 2.0)
    f = Featurizer(2, 3, mean, std)
    x = torch.full((1, 2, 3), 5.0)
    assert torch.allclose(f(x), torch.full((1, 3), 2.0))


def test_pooling_commutes_with_weighted_sum_and_head():
    # the evaluation pools each hidden state first; that equals SUPERB's order
    states = torch.randn(7, 3, 4)  # (T, L+1, D)
    f, head = Featurizer(3, 4), UtteranceHead(4, 5, proj_dim=6)
    with torch.no_grad():
        f.weights.copy_(torch.tensor([0.3, -1.0, 2.0]))
    pooled_first = head(f(states.mean(0, keepdim=True)))
    superb_order = head.out(head.proj(f(states)).mean(0, keepdim=True))
    assert torch.allclose(pooled_first, superb_order, atol=1e-5)


def test_greedy_ctc_decode():
    # frames: a a blank a b b blank (padding after length 7)
    path = [1, 1, 0, 1, 2, 2, 0, 2, 2]
    logits = torch.nn.functional.one_hot(torch.tensor([path]), 3).float()
    assert greedy_ctc_decode(logits, torch.tensor([7])) == [[1, 1, 2]]
    assert greedy_ctc_decode(logits, torch.tensor([2])) == [[1]]


def test_ctc_heads_shapes_and_loss_decreases(monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny LSTM: more threads only contend on a busy machine
    try:
        _train_heads()
    finally:
        torch.set_num_threads(threads)


def _train_heads():
    torch.manual_seed(0)
    x, lens = torch.randn(3, 12, 8), torch.tensor([12, 9, 5])
    targets = [[1, 2, 3], [2, 2], [3]]
    for head in (LinearCTC(8, 3), BiLSTMCTC(8, 3, hidden=16)):
        assert head(x, lens).shape == (3, 12, 4)
        opt = torch.optim.Adam(head.parameters(), lr=1e-2)
        first = ctc_loss(head(x, lens), lens, targets).item()
        for _ in range(15):
            loss = ctc_loss(head(x, lens), lens, targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert loss.item() < first
