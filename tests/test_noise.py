"""Random draws that follow the samples: the same noise whichever batch, position or process holds a sample."""

import torch

from asgcn_lightning.models import noise


def _draws(seeds: list[int], rows_per_sample: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = torch.ones(len(seeds) * rows_per_sample, 3, 4)
    with noise.per_sample_noise(seeds, "cpu"):
        first = noise.rand_like(x)
        mask = noise.dropout_mask(x, 0.5)
        links = noise.gumbel_softmax_hard(torch.zeros(len(seeds) * rows_per_sample, 5, 5, 3), tau=0.5)
    return first, mask, links


def test_a_samples_noise_does_not_depend_on_its_batch_or_position():
    together = _draws([11, 22, 33])
    apart = [_draws([seed]) for seed in (33, 11, 22)]  # other batches, another order
    for drawn, by_sample in zip(together, zip(*apart, strict=True), strict=True):
        expected = torch.cat([by_sample[1], by_sample[2], by_sample[0]])  # back in the order 11, 22, 33
        assert torch.equal(drawn, expected)


def test_successive_draws_differ_and_other_seeds_draw_other_noise():
    first, mask, _ = _draws([5, 6])
    again, _, _ = _draws([5, 6])
    other, _, _ = _draws([7, 6])
    assert torch.equal(first, again)
    assert not torch.equal(first[:2], other[:2]) and torch.equal(first[2:], other[2:])
    assert 0.3 < mask.float().mean() < 0.7


def test_gumbel_samples_are_one_hot_with_a_soft_gradient():
    logits = torch.tensor([[0.0, 2.0, -1.0]] * 4000, requires_grad=True)
    with noise.per_sample_noise(range(4000), "cpu"):
        hard = noise.gumbel_softmax_hard(logits, tau=1.0)
    assert torch.equal(hard.sum(-1), torch.ones(4000)) and set(hard.unique().tolist()) == {0.0, 1.0}
    frequencies = hard.detach().mean(0)  # Gumbel-max samples the softmax: frequencies ≈ probabilities
    assert torch.allclose(frequencies, logits.softmax(-1)[0].detach(), atol=4 * (0.25 / 4000) ** 0.5)
    (hard[:, 1]).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_outside_a_training_step_draws_come_from_the_global_generator():
    torch.manual_seed(3)
    drawn = noise.rand_like(torch.empty(4, 2))
    torch.manual_seed(3)
    assert torch.equal(drawn, torch.rand(4, 2))
    x = torch.arange(6.0)
    assert torch.equal(noise.dropout(x, 0.5, training=False), x)
