import math

import pytest
import torch

from tsq.training.losses import PreferenceLoss, dpo_length, sft_nll, sigmoid_dpo, simpo


def t(*xs):
    return torch.tensor(xs, dtype=torch.float64)


# One pair by hand: policy logps (w, l) = (-10, -30), reference (-12, -25), lengths 5 and 20.
PW, PL, RW, RL, LW, LR = t(-10.0), t(-30.0), t(-12.0), t(-25.0), t(5), t(20)
MARGIN = (-10 + 12) - (-30 + 25)  # 2 - (-5) = 7


def logsig(x):
    return -math.log(1 + math.exp(-x))


def test_dpo_by_hand():
    assert sigmoid_dpo(PW, PL, RW, RL, beta=0.1).item() == pytest.approx(-logsig(0.7))


def test_dpol_by_hand_and_sign_knob():
    plus = dpo_length(PW, PL, RW, RL, LW, LR, beta=0.1, lam=1.0, sign=1).item()
    minus = dpo_length(PW, PL, RW, RL, LW, LR, beta=0.1, lam=1.0, sign=-1).item()
    assert plus == pytest.approx(-logsig(0.7 + math.log(4)))
    assert minus == pytest.approx(-logsig(0.7 - math.log(4)))


def test_dpol_with_lambda_zero_is_dpo():
    pw, pl = torch.randn(8, dtype=torch.float64) * 10, torch.randn(8, dtype=torch.float64) * 10
    rw, rl = torch.randn(8, dtype=torch.float64) * 10, torch.randn(8, dtype=torch.float64) * 10
    lw, lr = torch.randint(1, 50, (8,)), torch.randint(1, 50, (8,))
    torch.testing.assert_close(dpo_length(pw, pl, rw, rl, lw, lr, 0.1, 0.0, 1), sigmoid_dpo(pw, pl, rw, rl, 0.1))
    a = PreferenceLoss(kind="dpol", eta=0.5, lam=0.0)(pw, pl, rw, rl, lw, lr)
    b = PreferenceLoss(kind="dpo", eta=0.5)(pw, pl, rw, rl, lw, lr)
    torch.testing.assert_close(a, b)


def test_sft_norms_by_hand():
    logps, lens = t(-10.0, -30.0), t(5, 20)
    assert sft_nll(logps, lens, "mean").tolist() == pytest.approx([2.0, 1.5])
    assert sft_nll(logps, lens, "token").mean().item() == pytest.approx(40 / 25)  # pooled over 25 tokens
    assert sft_nll(logps, lens, "sum").tolist() == pytest.approx([10.0, 30.0])


def test_simpo_by_hand():
    # avg logps: -10/5 = -2 and -30/20 = -1.5 -> margin -0.5
    assert simpo(PW, PL, LW, LR, beta=2.0, gamma=0.3).item() == pytest.approx(-logsig(2.0 * -0.5 - 0.3))


def test_tokensqueeze_is_an_eta_mix():
    loss = PreferenceLoss(kind="dpol", eta=0.5, beta=0.1, lam=1.0, length_sign=1)(PW, PL, RW, RL, LW, LR).item()
    assert loss == pytest.approx(0.5 * -logsig(0.7 + math.log(4)) + 0.5 * 2.0)
    sft = PreferenceLoss(kind="none", eta=0.0)
    assert not sft.needs_reference and not sft.needs_rejected
    assert sft(PW, PL, RW, RL, LW, LR).item() == pytest.approx(2.0)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"kind": "ipo"}, "loss.kind"),
        ({"eta": 1.5}, "loss.eta"),
        ({"length_sign": 0}, "loss.length_sign"),
        ({"kind": "none", "eta": 0.5}, "loss.eta"),
        ({"beta": 0}, "loss.beta"),
    ],
)
def test_bad_loss_settings(kwargs, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        PreferenceLoss(**kwargs)


def test_dpol_length_term_moves_the_loss_the_way_its_sign_says():
    base = dpo_length(PW, PL, RW, RL, LW, LR, 0.1, 0.0, 1).item()
    assert dpo_length(PW, PL, RW, RL, LW, LR, 0.1, 1.0, 1).item() < base  # +: longer rejected, smaller loss
    assert dpo_length(PW, PL, RW, RL, LW, LR, 0.1, 1.0, -1).item() > base  # -: SimPO-style margin, larger loss
    same_length = dpo_length(PW, PL, RW, RL, LW, LW, 0.1, 1.0, 1).item()
    assert same_length == pytest.approx(base)  # equal lengths: plain DPO
