"""Preference losses against hand-derived values.

Notation: d = r(chosen) - r(rejected), s = sigmoid, theta = 5 (so ln theta = ln 5).
"""

import math

import pytest
import torch

from mmreward.errors import ConfigError
from mmreward.losses import (
    bradley_terry_loss,
    bt_with_ties_loss,
    margin_loss,
    preference_loss,
    rao_kupper_probabilities,
    uncertainty_loss,
)


def test_bradley_terry_values_and_gradient():
    """-log s(0) = ln 2; -log s(ln 3) = -log(3/4) = ln(4/3); d/dd -log s(d) = -(1 - s(d)) = -1/2 at 0."""
    d = torch.tensor([0.0, math.log(3.0), -40.0, 40.0], requires_grad=True)
    loss = bradley_terry_loss(d)
    values = loss.detach()
    torch.testing.assert_close(values[:2], torch.tensor([math.log(2.0), math.log(4.0 / 3.0)]))
    assert math.isclose(float(values[2]), 40.0, rel_tol=1e-6) and float(values[3]) < 1e-15  # stable at the extremes
    loss[0].backward()
    assert math.isclose(float(d.grad[0]), -0.5)


def test_bt_with_ties_values():
    """Non-tie at d = 0: -log s(-ln 5) = ln(1 + 5) = ln 6; at d = ln 5: -log s(0) = ln 2.

    Tie at d = 0: -2 log s(-ln 5) - ln(25 - 1) = 2 ln 6 - ln 24 = ln(36 / 24) = ln 1.5, i.e. P(tie) = 24 / 36 = 2/3.
    """
    d = torch.tensor([0.0, math.log(5.0), 0.0])
    tie = torch.tensor([False, False, True])
    torch.testing.assert_close(bt_with_ties_loss(d, tie), torch.tensor([math.log(6.0), math.log(2.0), math.log(1.5)]))
    # A tie's loss is symmetric in d and smallest at d = 0.
    grid = torch.linspace(-3, 3, 13)
    tied = bt_with_ties_loss(grid, torch.ones(13, dtype=torch.bool))
    torch.testing.assert_close(tied, tied.flip(0))
    assert int(tied.argmin()) == 6
    with pytest.raises(ConfigError, match="theta"):
        bt_with_ties_loss(d, tie, theta=1.0)


def test_rao_kupper_probabilities_sum_to_one():
    """P(A)+P(B)+P(tie) = [(1 + 5e^d) + (1 + 5e^-d) + 24] / [(1 + 5e^-d)(1 + 5e^d)] = 1 for every d; the loss is
    the negative log of the observed outcome's probability."""
    d = torch.linspace(-6, 6, 25, dtype=torch.float64)
    probs = rao_kupper_probabilities(d)
    torch.testing.assert_close(probs.sum(-1), torch.ones(25, dtype=torch.float64))
    torch.testing.assert_close(bt_with_ties_loss(d, torch.zeros(25, dtype=torch.bool)), -probs[:, 0].log())
    torch.testing.assert_close(bt_with_ties_loss(d, torch.ones(25, dtype=torch.bool)), -probs[:, 2].log())


def test_margin_loss():
    """-log s(d - m) is ln 2 where the chosen side wins by exactly the margin."""
    torch.testing.assert_close(margin_loss(torch.tensor([0.57, 1.0]), 0.57)[0], torch.tensor(math.log(2.0)))
    torch.testing.assert_close(margin_loss(torch.tensor([2.0]), torch.tensor([2.0])), torch.tensor([math.log(2.0)]))


def test_preference_loss_on_labelled_dimensions():
    """Rewards A = [1, 0, 2, 5], B = [0, 0, 2, 0], labels [A, tie, B, invalid]:

    bt: entries 0 (d = 1) and 2 (d = -(2 - 2) = 0): mean(ln(1 + e^-1), ln 2).
    btt: entry 0 -log s(1 - ln 5) = ln(1 + 5 e^-1), tie 1 ln 1.5, entry 2 ln 6: their mean; entry 3 ignored.
    """
    a = torch.tensor([[1.0, 0.0, 2.0, 5.0]])
    b = torch.tensor([[0.0, 0.0, 2.0, 0.0]])
    labels = torch.tensor([[1, 0, -1, 22]])
    loss, count = preference_loss(a, b, labels, "bt")
    assert count == 2
    assert math.isclose(float(loss), (math.log(1 + math.exp(-1)) + math.log(2)) / 2, rel_tol=1e-6)
    loss, count = preference_loss(a, b, labels, "btt")
    assert count == 3
    expected = (math.log(1 + 5 * math.exp(-1)) + math.log(1.5) + math.log(6)) / 3
    assert math.isclose(float(loss), expected, rel_tol=1e-6)
    loss, count = preference_loss(a, b, labels, "margin", margin=torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    assert count == 2 and math.isclose(float(loss), math.log(2), rel_tol=1e-6)  # both at d == m
    empty, zero = preference_loss(a, b, torch.full((1, 4), 22), "btt")
    assert zero == 0 and float(empty) == 0.0 and empty.requires_grad is False
    with pytest.raises(ConfigError, match="'bt', 'btt', 'margin' or 'uncertainty'"):
        preference_loss(a, b, labels, "hinge")


def test_gradients_push_the_chosen_side_up():
    a = torch.zeros(1, 2, requires_grad=True)
    b = torch.zeros(1, 2, requires_grad=True)
    loss, _ = preference_loss(a, b, torch.tensor([[1, -1]]), "btt")
    loss.backward()
    assert a.grad[0, 0] < 0 < b.grad[0, 0]  # descending raises A on dim 0
    assert a.grad[0, 1] > 0 > b.grad[0, 1]  # and B on dim 1


def test_preference_loss_without_usable_labels_still_backpropagates_to_every_reward():
    """Every process of a distributed step must run the same backward: with no usable label the loss is a zero that
    depends on the rewards, so their gradients exist (and are zero)."""
    a = torch.tensor([[0.3, -1.0]], requires_grad=True)
    b = torch.tensor([[2.0, 0.5]], requires_grad=True)
    for kind in ("bt", "btt", "margin"):
        loss, count = preference_loss(a, b, torch.tensor([[0, 7]]) if kind != "btt" else torch.tensor([[7, 9]]), kind)
        assert count == 0 and loss.item() == 0.0 and loss.requires_grad
        ga, gb = torch.autograd.grad(loss, (a, b))
        assert torch.equal(ga, torch.zeros_like(a)) and torch.equal(gb, torch.zeros_like(b))


def test_videoalign_reduction_averages_over_all_entries():
    """VideoAlign's (loss * mask).mean(): the bt entries above, ln(1 + e^-1) and ln 2, summed over all 4 entries."""
    a = torch.tensor([[1.0, 0.0, 2.0, 5.0]])
    b = torch.tensor([[0.0, 0.0, 2.0, 0.0]])
    loss, count = preference_loss(a, b, torch.tensor([[1, 0, -1, 22]]), "bt", reduction="all")
    assert count == 4
    assert math.isclose(float(loss), (math.log(1 + math.exp(-1)) + math.log(2)) / 4, rel_tol=1e-6)


def _expected_bt_loss(mean: float, sigma: float) -> float:
    """E[softplus(-d)], d ~ N(mean, sigma^2), by the trapezoid rule on a fine grid (+-12 sigma)."""
    d = torch.linspace(mean - 12 * sigma, mean + 12 * sigma, 400_001, dtype=torch.float64)
    density = torch.exp(-0.5 * ((d - mean) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    return float(torch.trapezoid(torch.nn.functional.softplus(-d) * density, d))


@pytest.mark.parametrize(("mean", "sigma_c", "sigma_r"), [(0.5, 0.3, 0.4), (-2.0, 2.0, 1.0), (3.0, 6.0, 8.0)])
def test_uncertainty_loss_is_the_expected_bradley_terry_loss(mean, sigma_c, sigma_r):
    """d ~ N(mu_c - mu_r, sigma_c^2 + sigma_r^2): the loss is E[-log s(d)] (HPSv3's objective), to 1e-4."""
    value = uncertainty_loss(
        torch.tensor(mean, dtype=torch.float64),
        torch.tensor(math.log(sigma_c), dtype=torch.float64),
        torch.tensor(math.log(sigma_r), dtype=torch.float64),
    )
    assert abs(float(value) - _expected_bt_loss(mean, math.hypot(sigma_c, sigma_r))) < 1e-4


def test_uncertainty_preference_loss_orders_the_sides_by_label():
    """(mu, log sigma) per side: label +1 uses d = mu_A - mu_B, -1 d = mu_B - mu_A; a vanishing sigma gives the
    Bradley-Terry loss, a larger one flattens it towards ln 2 (here mu_A - mu_B = 1; ties are ignored)."""
    tiny = math.log(1e-6)
    a = torch.tensor([[[1.0, tiny]], [[1.0, tiny]], [[1.0, 0.0]], [[1.0, tiny]]], dtype=torch.float64)
    b = torch.tensor([[[0.0, tiny]], [[0.0, tiny]], [[0.0, 0.0]], [[0.0, tiny]]], dtype=torch.float64)
    labels = torch.tensor([[1], [-1], [1], [0]])
    loss, count = preference_loss(a, b, labels, "uncertainty")
    expected = [math.log(1 + math.exp(-1)), math.log(1 + math.e), _expected_bt_loss(1.0, math.sqrt(2))]
    assert count == 3 and math.isclose(float(loss), sum(expected) / 3, rel_tol=1e-6)
    assert math.log(1 + math.exp(-1)) < expected[2] < math.log(2)
    with pytest.raises(ValueError, match=r"uncertainty wants rewards \(B, D, 2\)"):
        preference_loss(a[..., 0], b[..., 0], labels, "uncertainty")


def test_uncertainty_preference_loss_for_either_winner_and_nonzero_means():
    """A = (mu 1.5, sigma 0.5), B = (mu -0.5, sigma 2): A wins -> d ~ N(2, 0.25 + 4), B wins -> d ~ N(-2, 4.25);
    both to 1e-4 of the numerical integral. Ties are ignored, and a batch with no decided entry is a zero with a
    gradient path."""
    a = torch.tensor([[[1.5, math.log(0.5)]] * 3], dtype=torch.float64)  # (1, 3, 2): three dimensions
    b = torch.tensor([[[-0.5, math.log(2.0)]] * 3], dtype=torch.float64)
    loss, count = preference_loss(a, b, torch.tensor([[1, -1, 0]]), "uncertainty")
    sigma = math.sqrt(0.25 + 4.0)
    assert count == 2
    assert abs(float(loss) - (_expected_bt_loss(2.0, sigma) + _expected_bt_loss(-2.0, sigma)) / 2) < 1e-4
    every, count_all = preference_loss(a, b, torch.tensor([[1, -1, 0]]), "uncertainty", reduction="all")
    assert count_all == 3 and abs(float(every) - float(loss) * 2 / 3) < 1e-12
    grad_a = a.clone().requires_grad_(True)
    empty, zero = preference_loss(grad_a, b, torch.tensor([[0, 0, 5]]), "uncertainty")
    assert (
        zero == 0 and empty.item() == 0.0 and torch.equal(torch.autograd.grad(empty, grad_a)[0], torch.zeros_like(a))
    )


def test_uncertainty_loss_is_the_64_node_gauss_hermite_sum_in_the_inputs_precision():
    """In float64 the quadrature equals an independent numpy evaluation to 1e-12 (nodes and weights kept in the
    input's precision)."""
    import numpy as np

    nodes, weights = np.polynomial.hermite.hermgauss(64)
    mean, log_a, log_b = 0.7, math.log(1.3), math.log(0.4)
    sigma = math.sqrt(math.exp(2 * log_a) + math.exp(2 * log_b))
    d = mean + math.sqrt(2) * sigma * nodes
    expected = float(np.sum(np.logaddexp(0.0, -d) * weights) / math.sqrt(math.pi))
    value = uncertainty_loss(*(torch.tensor(v, dtype=torch.float64) for v in (mean, log_a, log_b)))
    assert value.dtype == torch.float64 and abs(float(value) - expected) < 1e-12


def test_loss_defaults_messages_and_shapes():
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]])
    labels = torch.tensor([[1, 0]])
    btt, _ = preference_loss(a, b, labels)  # default kind: Bradley-Terry with ties, theta 5
    assert float(btt) == pytest.approx(
        float(bt_with_ties_loss(torch.tensor([1.0, 0.0]), torch.tensor([False, True])).mean())
    )
    theta2, _ = preference_loss(a, b, labels, "btt", theta=2.0)
    expected2 = bt_with_ties_loss(torch.tensor([1.0, 0.0]), torch.tensor([False, True]), theta=2.0).mean()
    assert float(theta2) == pytest.approx(float(expected2)) and float(theta2) != pytest.approx(float(btt))
    plain, _ = preference_loss(a, b, labels, "margin")  # default margin 0: the Bradley-Terry loss
    assert float(plain) == pytest.approx(math.log(1 + math.exp(-1.0)))
    assert float(margin_loss(torch.tensor(1.0), 0.25)) == pytest.approx(math.log(1 + math.exp(-0.75)))
    # theta just above 1 is allowed: a small tie probability.
    assert float(bt_with_ties_loss(torch.tensor([0.0]), torch.tensor([False]), theta=1.5)) == pytest.approx(
        math.log(1 + 1.5)
    )
    probs = rao_kupper_probabilities(torch.zeros(4, 2))
    assert probs.shape == (4, 2, 3)
    with pytest.raises(ValueError) as shape:
        preference_loss(a, b, labels, "uncertainty")
    assert str(shape.value) == (
        "shapes differ: rewards (1, 2), (1, 2), labels (1, 2) (uncertainty wants rewards (B, D, 2): mu and log sigma)"
    )
    with pytest.raises(ValueError) as plain_shape:
        preference_loss(a, b[:, :1], labels, "bt")
    assert str(plain_shape.value) == "shapes differ: rewards (1, 2), (1, 1), labels (1, 2)"
    with pytest.raises(ConfigError) as reduction:
        preference_loss(a, b, labels, "bt", reduction="sum")
    assert str(reduction.value) == "reduction must be 'valid' or 'all', got 'sum'"


def test_uncertainty_loss_keeps_float32_inputs_in_float32():
    values = [torch.tensor(v, dtype=torch.float32) for v in (0.3, -0.2, 0.1)]
    assert uncertainty_loss(*values).dtype == torch.float32
