import pytest
import torch
from torch.distributions import Bernoulli, Normal

from simsearch import BlackBoxSimulator, Parameter, Simulator
from simsearch.problems.gmm2d import GaussianMixtureSimulator


class Shifted(Simulator):
    """x ~ N(mu, 1), label = x > 0; optional faults to exercise the checks."""

    def __init__(self, bad_batch=False, bad_render=False):
        super().__init__([Parameter("mu", -3.0, 3.0, 0.5)])
        self.bad_batch, self.bad_render = bad_batch, bad_render

    def distributions(self, psi, n):
        m = n + 1 if self.bad_batch else n
        return {"u": Normal(psi["mu"].expand(m), torch.ones(m))}

    def render(self, latents):
        x = latents["u"].unsqueeze(1)
        y = (x[:, 0] > 0).long()
        return (x, y[:-1]) if self.bad_render else (x, y)


def test_same_seed_same_batch_and_different_seed_differs():
    sim = GaussianMixtureSimulator()
    psi = sim.init_psi()
    a, b, c = sim.simulate(psi, 64, seed=3), sim.simulate(psi, 64, seed=3), sim.simulate(psi, 64, 4)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)
    assert set(a.latents) == {"y", "c", "point"}


def test_simulate_does_not_disturb_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    GaussianMixtureSimulator().simulate(GaussianMixtureSimulator().init_psi(), 10, seed=1)
    assert torch.equal(torch.rand(3), expected)


def test_log_prob_matches_closed_form_and_gradient_matches_finite_differences():
    sim = GaussianMixtureSimulator(n_components=2)
    psi = sim.init_psi()
    batch = sim.simulate(psi, 50, seed=0)
    psi_var = {k: v.clone().double().requires_grad_(True) for k, v in psi.items()}
    lp = sim.log_prob(batch.latents, psi_var)
    # closed form: log 1/2 (class) + log 1/2 (component) + diagonal Gaussian density
    y, c, x = batch.latents["y"].long(), batch.latents["c"], batch.latents["point"]
    mu, log_std = psi["means"][y, c], psi["log_std"][y, c]
    gauss = (-0.5 * ((x - mu) / log_std.exp()) ** 2 - log_std - 0.5 * torch.log(
        torch.tensor(2 * torch.pi))).sum(1)
    torch.testing.assert_close(lp.float(), gauss + 2 * torch.log(torch.tensor(0.5)), atol=1e-5, rtol=0)
    lp.sum().backward()
    grad = psi_var["means"].grad
    eps = 1e-4
    for idx in [(0, 0, 0), (1, 1, 1), (0, 1, 0)]:
        plus = {k: v.detach().clone().double() for k, v in psi.items()}
        minus = {k: v.clone() for k, v in plus.items()}
        plus["means"][idx] += eps
        minus["means"][idx] -= eps
        fd = (sim.log_prob(batch.latents, plus).sum() - sim.log_prob(batch.latents, minus).sum()) / (
            2 * eps)
        assert float(grad[idx]) == pytest.approx(float(fd), rel=1e-3, abs=1e-4)
    assert torch.isfinite(psi_var["log_std"].grad).all()


def test_bad_batch_size_and_render_lengths():
    with pytest.raises(ValueError, match=r"latent 'u' must have batch size n=4.*got shape \(5,\)"):
        Shifted(bad_batch=True).simulate({"mu": torch.tensor(0.0)}, 4, 0)
    with pytest.raises(ValueError, match="x and y of different lengths: len\\(x\\)=4, len\\(y\\)=3"):
        Shifted(bad_render=True).simulate({"mu": torch.tensor(0.0)}, 4, 0)


@pytest.mark.parametrize("n", [0, -1, 2.5, True])
def test_bad_n(n):
    with pytest.raises(ValueError, match="n \\(number of samples\\) must be an int >= 1"):
        Shifted().simulate({"mu": torch.tensor(0.0)}, n, 0)


def test_out_of_bounds_psi_is_refused():
    with pytest.raises(ValueError, match=r"parameter 'mu': expected values in \[-3, 3\], got 4"):
        Shifted().simulate({"mu": torch.tensor(4.0)}, 4, 0)


class Coin(BlackBoxSimulator):
    def __init__(self):
        super().__init__([Parameter("p", 0.05, 0.95, 0.5)])

    def sample(self, psi, n, generator):
        y = torch.bernoulli(psi["p"].expand(n), generator=generator).long()
        return y.float().unsqueeze(1) + 0.1 * torch.randn(n, 1, generator=generator), y


def test_black_box_simulator_runs_and_refuses_log_prob():
    sim = Coin()
    assert not sim.has_log_prob
    a, b = sim.simulate(sim.init_psi(), 20, 7), sim.simulate(sim.init_psi(), 20, 7)
    assert torch.equal(a.x, b.x) and a.latents == {}
    with pytest.raises(NotImplementedError, match="black-box simulator"):
        sim.log_prob({}, sim.init_psi())


def test_bernoulli_latent_log_prob_gradient_sign():
    class Flip(Simulator):
        def __init__(self):
            super().__init__([Parameter("logit", -4.0, 4.0, 0.0)])

        def distributions(self, psi, n):
            return {"b": Bernoulli(logits=psi["logit"].expand(n))}

        def render(self, latents):
            return latents["b"].unsqueeze(1), latents["b"].long()

    sim = Flip()
    logit = torch.tensor(0.0, requires_grad=True)
    ones = {"b": torch.ones(8)}
    sim.log_prob(ones, {"logit": logit}).sum().backward()
    assert logit.grad.item() == pytest.approx(8 * 0.5)  # d/dl log σ(l) = 1 - σ(l)
