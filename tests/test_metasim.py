"""Meta-Sim: the distribution transformer G_θ, finite-difference rendering, Algorithm 1, the runner."""

import numpy as np
import pytest
import torch
from torch.distributions import Bernoulli, Categorical, Independent, Normal, Uniform

from lightning_modules.distribution_transformer import (
    TRANSFORMED,
    DistributionTransformer,
    MetaSimTrainer,
    TransformedSimulator,
    continuous_latents,
    finite_difference_render,
)
from simsearch import Parameter, Simulator
from simsearch.problems import get as get_problem


class Toy(Simulator):
    """Label y, a discrete type c, a 2-D continuous offset u and a continuous gain r.

    The renderer goes through NumPy, so autograd cannot differentiate it (as with a game engine).
    """

    def __init__(self):
        super().__init__([Parameter("mu", -5.0, 5.0, [0.0, 0.0], shape=(2,))])

    def distributions(self, psi, n):
        return {
            "y": Bernoulli(probs=torch.full((n,), 0.5)),
            "c": Categorical(logits=torch.zeros(n, 3)),
            "u": Independent(Normal(psi["mu"].expand(n, 2), 1.0), 1),
            "r": Uniform(torch.zeros(n), torch.ones(n)),
        }

    def render(self, latents):
        u, r = latents["u"].numpy(), latents["r"].numpy()
        y, c = latents["y"].numpy(), latents["c"].numpy()
        x = np.stack([u[:, 0] + 3 * y, u[:, 1] * (1 + 0.1 * r) + 0.2 * c], axis=1)
        return torch.as_tensor(x, dtype=torch.float32), latents["y"].long()


MU0 = {"mu": torch.zeros(2)}


def test_mutable_attributes_are_the_continuous_latents():
    sim = Toy()
    latents = sim.simulate(MU0, 50, seed=0).latents
    assert continuous_latents(sim, MU0, latents) == ["u", "r"]
    g = DistributionTransformer(sim, n_reference=200)
    assert g.mutable == ("u", "r")
    assert DistributionTransformer(sim, mutable=["u"], n_reference=200).mutable == ("u",)
    with pytest.raises(ValueError, match=r"continuous latents \['u', 'r'\], got \['c'\]"):
        DistributionTransformer(sim, mutable=["c"], n_reference=200)
    with pytest.raises(ValueError, match="scales: unknown mutable attributes"):
        DistributionTransformer(sim, scales={"y": 1.0}, n_reference=200)


def test_identity_pretraining_reproduces_the_input_attributes():
    sim = Toy()
    g = DistributionTransformer(sim, n_reference=500, seed=0)
    fresh = sim.simulate(MU0, 500, seed=123).latents
    before = float((g(fresh) - g.mutable_values(fresh)).abs().mean().detach())
    losses = g.pretrain_identity(steps=300, batch_size=128, seed=0)
    after = ((g(fresh) - g.mutable_values(fresh)).abs() / g.out_scale).mean(0).detach()
    assert before > 0.2
    assert losses[-1] < 0.05 * losses[0]
    assert float(after.max()) < 0.03, after  # < 3 % of each attribute's spread, on unseen scenes


def test_pretraining_with_an_offset_learns_the_shifted_identity():
    sim = Toy()
    g = DistributionTransformer(sim, n_reference=500, seed=0)
    offset = torch.tensor([1.0, -2.0, 0.5])  # u (2 components) and r, in units of their scales
    g.pretrain_identity(steps=300, batch_size=128, seed=0, offset=offset)
    fresh = sim.simulate(MU0, 500, seed=123).latents
    moved = ((g(fresh) - g.mutable_values(fresh)) / g.out_scale).mean(0).detach()
    assert torch.allclose(moved, offset, atol=0.05), moved
    with pytest.raises(ValueError, match=r"offset must have shape \(3,\)"):
        g.pretrain_identity(steps=1, offset=torch.zeros(2))


def test_components_locate_attributes_in_the_flattened_layout():
    g = DistributionTransformer(Toy(), n_reference=200)  # mutable u (2 components), then r
    assert g.components(["r"]).tolist() == [2]
    assert g.components(["u"]).tolist() == [0, 1]
    assert g.components(["r", "u"]).tolist() == [0, 1, 2]  # in layout order
    with pytest.raises(ValueError, match="expected mutable attributes"):
        g.components(["y"])


def test_one_hot_inputs_read_the_class_as_indicators_and_allow_a_per_class_transform():
    sim = Toy()
    g = DistributionTransformer(sim, mutable=["u"], inputs=["c", "u"], one_hot=["c"], n_reference=300, seed=4)
    assert g.categories == {"c": 3} and g.in_shift.shape == (3 + 2,)
    reference = sim.simulate(MU0, 300, seed=4).latents  # the batch the layout is read from
    frequencies = torch.bincount(reference["c"], minlength=3).float() / 300
    assert torch.allclose(g.in_shift[:3], frequencies)  # the one-hot columns' means
    assert torch.allclose(g.in_shift[3:], reference["u"].mean(0))
    # a per-class offset (+2 scale units for c = 1 only) is a linear function of the indicators
    optimiser = torch.optim.Adam(g.parameters(), lr=1e-2)
    for step in range(300):
        latents = sim.simulate(MU0, 256, seed=1000 + step).latents
        target = (g.mutable_values(latents) - g.out_shift) / g.out_scale
        target = target + 2.0 * (latents["c"] == 1).float().unsqueeze(1)
        loss = (g.scaled_mean(latents) - target).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    fresh = sim.simulate(MU0, 600, seed=9).latents
    moved = ((g(fresh) - g.mutable_values(fresh)) / g.out_scale).detach()
    for c, expected in enumerate((0.0, 2.0, 0.0)):
        assert torch.allclose(moved[fresh["c"] == c].mean(0), torch.full((2,), expected), atol=0.1)
    with pytest.raises(ValueError, match=r"one_hot: expected a subset of the inputs \['c', 'u'\]"):
        DistributionTransformer(sim, inputs=["c", "u"], one_hot=["y"], n_reference=100)
    with pytest.raises(ValueError, match="one_hot: 'u' must be drawn from a Categorical, got Independent"):
        DistributionTransformer(sim, one_hot=["u"], n_reference=100)


def test_digit_settings_read_the_class_one_hot():
    from simsearch.metasim import PROBLEM_SETTINGS, MetaSimConfig, _trainer

    problem = get_problem("digits-rot")
    config = MetaSimConfig(pretrain_steps=1).resolved("digits-rot")
    assert config.one_hot == PROBLEM_SETTINGS["digits-rot"]["one_hot"]
    g = _trainer(problem, "mmd", 0, 0, config).transformer
    widths = {"label": 10, "rotation": 1, "shift": 2}
    assert g.in_shift.shape == (sum(widths[k] if k in config.one_hot else
                                    (1 if k != "shift" else 2) for k in config.inputs),)
    assert MetaSimConfig().resolved("gmm2d").one_hot == ()


def test_digit_restarts_offset_the_pose_and_keep_the_appearance():
    from simsearch.metasim import MetaSimConfig, _trainer

    problem = get_problem("digits-rot")
    appearance = ("rotation", "shift", "width", "slant", "aspect", "scale")
    config = MetaSimConfig(pretrain_steps=150, mutable=appearance, inputs=appearance).resolved("digits-rot")
    assert config.restart_attributes == ("rotation", "shift")  # PROBLEM_SETTINGS
    g = _trainer(problem, "mmd", 0, 1, config).transformer
    fresh = problem.simulator.simulate(g.psi, 500, seed=5).latents
    moved = ((g(fresh) - g.mutable_values(fresh)) / g.out_scale).mean(0).detach()
    pose = g.components(config.restart_attributes)
    kept = g.components([k for k in g.mutable if k not in config.restart_attributes])
    assert torch.allclose(moved[pose].abs(), torch.full((3,), 2.0), atol=0.2), moved
    assert float(moved[kept].abs().max()) < 0.2, moved


def test_transformed_simulator_keeps_discrete_latents_and_renders_the_transformed_scene():
    sim = Toy()
    g = DistributionTransformer(sim, n_reference=200, sigma=0.2, seed=0)
    tsim = TransformedSimulator(sim, g)
    batch = tsim.simulate(MU0, 64, seed=3)
    base = sim.simulate(MU0, 64, seed=3)
    for name in ("y", "c", "u", "r"):  # the input scene s is the base simulator's, unchanged
        assert torch.equal(batch.latents[name], base.latents[name])
    scene = tsim.scene(batch.latents)
    assert torch.equal(scene["y"], base.latents["y"]) and torch.equal(scene["c"], base.latents["c"])
    assert torch.equal(scene["u"], batch.latents[TRANSFORMED][:, :2])
    assert torch.equal(batch.x, sim.render(scene)[0])
    assert torch.equal(batch.x, tsim.simulate(MU0, 64, seed=3).x)  # seeded


def test_log_prob_is_eq4_and_differentiable_in_theta():
    sim = Toy()
    g = DistributionTransformer(sim, n_reference=200, sigma=0.3, seed=0)
    tsim = TransformedSimulator(sim, g)
    latents = tsim.simulate(MU0, 16, seed=1).latents
    total = tsim.log_prob(latents, MU0)
    base = {k: latents[k] for k in g.names}
    mean, std = g(base), 0.3 * g.out_scale
    eq4 = Normal(mean, std).log_prob(latents[TRANSFORMED]).sum(1)  # Σ over mutable attributes
    assert torch.allclose(total, sim.log_prob(base, MU0) + eq4, atol=1e-5)
    total.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in g.skip.parameters())


def test_finite_difference_gradient_matches_autograd_on_a_differentiable_renderer():
    def render(a):
        return torch.stack([torch.sin(a[:, 0]) * a[:, 1], a[:, 0] ** 2, torch.exp(0.3 * a[:, 1])], dim=1)

    g = torch.Generator().manual_seed(0)
    a = torch.randn(20, 2, generator=g, dtype=torch.float64)
    w = torch.randn(20, 3, generator=g, dtype=torch.float64)
    exact = a.clone().requires_grad_(True)
    (render(exact) * w).sum().backward()
    approx = a.clone().requires_grad_(True)
    x = finite_difference_render(render, approx, torch.full((2,), 1e-4, dtype=torch.float64))
    assert torch.equal(x, render(a))
    (x * w).sum().backward()
    assert torch.allclose(approx.grad, exact.grad, rtol=1e-6, atol=1e-8)
    with pytest.raises(ValueError, match="steps must be 2 positive sizes"):
        finite_difference_render(render, a, torch.tensor([1e-3, 0.0]))


def _quadratic_render(a):
    """A renderer quadratic in the attributes: central differences are exact in every direction."""
    return torch.stack([a[:, 0] * a[:, 3] + 0.5 * a[:, 1], (a**2) @ torch.linspace(-1, 1, a.shape[1],
                        dtype=a.dtype), a[:, 2] * a[:, 4] - a[:, 5] + a[:, 1] ** 2], dim=1)


def _spsa_gradients(joint, directions, draws, steps):
    g = torch.Generator().manual_seed(1)
    a = torch.randn(5, 6, generator=g, dtype=torch.float64)
    w = torch.randn(5, 3, generator=g, dtype=torch.float64)
    exact = a.clone().requires_grad_(True)
    (_quadratic_render(exact) * w).sum().backward()
    grads = []
    for k in range(draws):
        approx = a.clone().requires_grad_(True)
        x = finite_difference_render(_quadratic_render, approx, steps, joint, directions,
                                     torch.Generator().manual_seed(k))
        (x * w).sum().backward()
        grads.append(approx.grad)
    return torch.stack(grads), exact.grad


def test_spsa_finite_differences_are_unbiased_with_the_predicted_variance():
    joint = [2, 3, 4, 5]
    steps = torch.tensor([1e-3, 1e-3, 0.1, 0.2, 0.1, 0.05], dtype=torch.float64)
    grads, exact = _spsa_gradients(joint, 1, 3000, steps)
    # the separate columns are the exact central differences, every draw
    assert torch.allclose(grads[:, :, :2], exact[:, :2].expand(len(grads), -1, -1), rtol=1e-6, atol=1e-8)
    # the joint columns: Var ĝ_j = Σ_{k≠j} (c_k g_k / c_j)² (Spall 1992), over the 4 joint columns
    c, g = steps[joint], exact[:, joint]
    predicted = ((c * g) ** 2).sum(1, keepdim=True) / c**2 - g**2
    assert torch.allclose(grads[:, :, joint].var(0), predicted, rtol=0.15)
    # unbiased: every mean within 4 standard errors of the exact gradient (some are far from 0)
    error = (grads[:, :, joint].mean(0) - g).abs()
    assert bool((error < 4 * (predicted / len(grads)).sqrt() + 1e-9).all())
    assert float(g.abs().max()) > 1.0
    # averaging K directions divides the variance by K
    four, _ = _spsa_gradients(joint, 4, 1000, steps)
    assert torch.allclose(four[:, :, joint].var(0), predicted / 4, rtol=0.2)


def test_spsa_of_a_single_column_is_its_central_difference():
    steps = torch.full((6,), 1e-3, dtype=torch.float64)
    single, exact = _spsa_gradients([4], 1, 3, steps)
    separate, _ = _spsa_gradients([], 1, 1, steps)
    assert torch.allclose(single, separate[0].expand(3, -1, -1), rtol=1e-9, atol=1e-12)  # Δ_j² = 1
    assert torch.allclose(separate[0], exact, rtol=1e-6, atol=1e-8)
    a = torch.zeros(2, 6)
    for joint in ([6], [-1], [1, 1]):
        with pytest.raises(ValueError, match=r"joint must be distinct columns in \[0, 6\)"):
            finite_difference_render(_quadratic_render, a, torch.ones(6), joint)
    with pytest.raises(ValueError, match="directions must be an int >= 1, got 0"):
        finite_difference_render(_quadratic_render, a, torch.ones(6), [1], directions=0)


def test_mmd_training_through_a_numpy_renderer_moves_the_scenes_onto_the_real_distribution():
    sim = Toy()
    target = {"mu": torch.tensor([2.0, 0.0])}
    real_x = sim.simulate(target, 400, seed=99).x  # unlabelled "real" inputs: u₀ shifted by +2
    g = DistributionTransformer(sim, n_reference=500, sigma=0.05, seed=0)
    g.pretrain_identity(steps=200, batch_size=128, seed=0)
    trainer = MetaSimTrainer(g, sim, real_x, task_weight=0.0, batch_size=128, lr=0.03, seed=0)
    history = trainer.fit(120)
    fresh = sim.simulate(MU0, 1000, seed=7).latents
    moved = g(fresh).detach()
    assert float(moved[:, 0].mean()) == pytest.approx(2.0, abs=0.3)  # the gap was learnt
    assert float(moved[:, 1].mean()) == pytest.approx(0.0, abs=0.3)  # the rest was kept
    assert np.mean([h["mmd2"] for h in history[-10:]]) < 0.2 * np.mean([h["mmd2"] for h in history[:5]])
    assert history[0]["renders"] == 128 * (1 + 2 * 3)  # one render + 2 per mutable attribute


def test_mmd_training_with_spsa_finite_differences_learns_the_gap():
    sim = Toy()
    real_x = sim.simulate({"mu": torch.tensor([2.0, 0.0])}, 400, seed=99).x
    g = DistributionTransformer(sim, n_reference=500, sigma=0.05, seed=0)
    g.pretrain_identity(steps=200, batch_size=128, seed=0)
    trainer = MetaSimTrainer(g, sim, real_x, task_weight=0.0, batch_size=128, lr=0.03, spsa=["u"], seed=0)
    history = trainer.fit(120)
    moved = g(sim.simulate(MU0, 1000, seed=7).latents).detach()
    assert float(moved[:, 0].mean()) == pytest.approx(2.0, abs=0.3)
    assert float(moved[:, 1].mean()) == pytest.approx(0.0, abs=0.3)
    assert history[0]["renders"] == 128 * (1 + 2 * 1 + 2 * 1)  # r separately, both u at once
    with pytest.raises(ValueError, match=r"expected mutable attributes among \['u', 'r'\], got \['c'\]"):
        MetaSimTrainer(g, sim, real_x, task_weight=0.0, spsa=["c"])
    with pytest.raises(ValueError, match="spsa_directions must be an int >= 1, got 0"):
        MetaSimTrainer(g, sim, real_x, task_weight=0.0, spsa=["u"], spsa_directions=0)
    from simsearch.metasim import MetaSimConfig, run_metasim

    with pytest.raises(ValueError, match=r"spsa: expected a subset of the mutable attributes \['u'\]"):
        run_metasim("gmm2d", config=MetaSimConfig(mutable=("u",), spsa=("r",)), out=None)


def test_reinforce_task_loss_alone_climbs_a_known_score():
    sim = Toy()
    g = DistributionTransformer(sim, mutable=["u"], n_reference=500, sigma=0.5, seed=0)
    g.pretrain_identity(steps=200, batch_size=128, seed=0)

    def score(x, y, seed):  # best when the rendered first coordinate, minus 3y, averages 1.5
        return -float(((x[:, 0] - 3 * y).mean() - 1.5) ** 2)

    trainer = MetaSimTrainer(g, sim, score=score, mmd_weight=0.0, batch_size=16, lr=0.02, seed=0)
    history = trainer.fit(300)
    fresh = sim.simulate(MU0, 1000, seed=7).latents
    assert float(g(fresh)[:, 0].mean().detach()) == pytest.approx(1.5, abs=0.4)
    assert np.mean([h["score"] for h in history[-30:]]) > 0.2 * np.mean([h["score"] for h in history[:30]])
    assert "mmd2" not in history[0]


def test_trainer_rejects_missing_inputs():
    sim = Toy()
    g = DistributionTransformer(sim, n_reference=100)
    with pytest.raises(ValueError, match="real_x"):
        MetaSimTrainer(g, sim, None, task_weight=0.0)
    with pytest.raises(ValueError, match="needs a score function"):
        MetaSimTrainer(g, sim, torch.zeros(4, 2))
    with pytest.raises(ValueError, match="not both 0"):
        MetaSimTrainer(g, sim, torch.zeros(4, 2), mmd_weight=0.0, task_weight=0.0)


@pytest.fixture(scope="module")
def small_gmm2d():
    import dataclasses

    from simsearch.problems import get

    return dataclasses.replace(get("gmm2d"), eval_n_samples=300, eval_epochs=2)


def test_transformed_simulator_plugs_into_the_objective(small_gmm2d):
    import optuna

    from simsearch import SimulatorObjective

    sim = small_gmm2d.simulator
    g = DistributionTransformer(sim, n_reference=200, seed=0)
    objective = SimulatorObjective(TransformedSimulator(sim, g), small_gmm2d.make_model, small_gmm2d.val,
                                   n_samples=100, epochs=1)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=1)
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE
    assert study.trials[0].user_attrs["images"] == 100


def test_runner_writes_a_report_for_every_mode(small_gmm2d, tmp_path):
    import json

    from simsearch.metasim import MetaSimConfig, run_metasim

    config = MetaSimConfig(iterations=3, batch_size=64, pretrain_steps=20, restarts=1)
    result = run_metasim(small_gmm2d, modes=("mmd", "both"), seeds=(0,), config=config, out=tmp_path,
                         log=None)
    assert [r["mode"] for r in result["runs"]] == ["default", "mmd", "both"]
    assert [e["method"] for e in result["table"]] == ["default ψ", "Meta-Sim (mmd)", "Meta-Sim (both)"]
    both = result["runs"][2]
    assert len(both["history"]) == 3 and {"mmd2", "score", "advantage"} <= set(both["history"][0])
    assert both["images"] == 3 * 64 and both["renders"] == 3 * 64 * (1 + 2 * 2)  # 2-D point
    assert all(0.0 <= r["test"] <= 1.0 for r in result["runs"])
    # the mean transformed attributes are those of the transformed simulator's scenes
    from lightning_modules.distribution_transformer import TRANSFORMED
    from simsearch.metasim import transformed_means

    sim = TransformedSimulator(Toy(), DistributionTransformer(Toy(), n_reference=100, seed=0))
    means = transformed_means(sim, MU0, seed=5, n=50)
    assert list(means) == ["u[0]", "u[1]", "r"]
    expected = sim.simulate(MU0, 50, seed=5).latents[TRANSFORMED].mean(0)
    assert list(means.values()) == pytest.approx(expected.tolist(), abs=1e-6)
    assert both["attributes"] and all(isinstance(v, float) for v in both["attributes"].values())
    # the spreads: RMS over components of the std over scenes, of s and of s'
    from simsearch.metasim import transformed_spreads

    spreads = transformed_spreads(sim, MU0, seed=5, n=50)
    latents = sim.simulate(MU0, 50, seed=5).latents
    s_u, t_u = latents["u"], latents[TRANSFORMED][:, :2]
    assert list(spreads) == ["u", "r"]
    assert spreads["u"][0] == pytest.approx(float((s_u.var(0).mean()).sqrt()), rel=1e-5)
    assert spreads["u"][1] == pytest.approx(float((t_u.var(0).mean()).sqrt()), rel=1e-5)
    assert spreads["r"][1] == pytest.approx(float(latents[TRANSFORMED][:, 2].std()), rel=1e-5)
    assert list(both["spreads"]) == ["point"] and len(both["spreads"]["point"]) == 2  # gmm2d
    for name in ("report.md", "results.json", "curves.png", "samples_mmd.png", "samples_both.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "| Meta-Sim (both) |" in (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "results.json").read_text())["problem"] == "gmm2d"
    with pytest.raises(ValueError, match="modes: expected some of"):
        run_metasim(small_gmm2d, modes=("gan",), out=None, log=None)


def test_runner_restarts_continue_the_restart_with_the_lowest_loss(small_gmm2d):
    from simsearch.metasim import MetaSimConfig, run_metasim

    config = MetaSimConfig(iterations=4, batch_size=32, pretrain_steps=10, restarts=3, restart_iterations=2)
    result = run_metasim(small_gmm2d, modes=("both",), seeds=(0,), config=config, out=None, log=None)
    run = result["runs"][1]
    assert len(run["restart_losses"]) == 3 and len(set(run["restart_losses"])) == 3  # distinct restarts
    assert run["restart"] == int(np.argmin(run["restart_losses"]))
    assert len(run["history"]) == 4  # the chosen restart's 2 iterations, then 2 more
    assert run["images"] == (3 * 2 + 2) * 32  # every restart's scenes are counted


def test_runner_jobs_give_the_same_runs_as_one_process():
    from simsearch.metasim import MetaSimConfig, run_metasim

    config = MetaSimConfig(iterations=2, batch_size=32, pretrain_steps=5, restarts=1)
    kwargs = dict(modes=("mmd",), seeds=(0, 1), config=config, out=None, log=None)
    serial, parallel = run_metasim("gmm2d", **kwargs), run_metasim("gmm2d", jobs=2, **kwargs)
    for a, b in zip(serial["runs"], parallel["runs"], strict=True):
        assert (a["mode"], a["seed"], a["test"], a["mmd2"]) == (b["mode"], b["seed"], b["test"], b["mmd2"])
    with pytest.raises(ValueError, match="registered name"):
        run_metasim(get_problem("gmm2d"), jobs=2, **kwargs)


def _toy_task_module(seed=0):
    from lightning_modules import AccumulatedMainTaskModule, MainTaskModule

    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    return AccumulatedMainTaskModule.from_module(MainTaskModule(net, lr=0.01))


def test_task_features_are_the_task_networks_penultimate_layer_and_get_no_mmd_gradient():
    sim = Toy()
    real = sim.simulate({"mu": torch.tensor([2.0, 0.0])}, 200, seed=99)
    g = DistributionTransformer(sim, n_reference=200, seed=0)
    module = _toy_task_module()
    trainer = MetaSimTrainer(g, sim, real.x, task_module=module, val=(real.x, real.y), task_weight=0.0,
                             batch_size=64, task_batch_size=32, task_features=True, seed=0)
    phi, real_features = trainer._feature_map()
    with torch.no_grad():
        expected = module.net[:-1](real.x)
    assert real_features.shape == (200, 8)
    assert torch.allclose(real_features, expected)
    x = sim.simulate(MU0, 50, seed=1).x.requires_grad_(True)
    assert torch.allclose(phi(x), module.net[:-1](x))
    from simsearch.mmd import mmd2

    mmd2(phi(x), real_features).backward()
    assert float(x.grad.abs().sum()) > 0  # the MMD reaches the inputs (and through them θ) ...
    assert all(p.grad is None for p in module.net.parameters())  # ... but not the network
    before = [p.detach().clone() for p in module.net.parameters()]
    record = trainer.step()
    assert {"mmd2", "score"} <= set(record) and "advantage" not in record  # trained, not REINFORCE
    assert any(not torch.equal(a, b) for a, b in zip(before, module.net.parameters(), strict=True))
    assert not torch.allclose(trainer._feature_map()[1], real_features)  # φ follows the network


def test_task_features_need_a_sequential_task_network_and_validation_data():
    sim = Toy()
    g = DistributionTransformer(sim, n_reference=100)
    real = sim.simulate(MU0, 20, seed=0)
    with pytest.raises(ValueError, match="task_features=True needs a task_module whose net"):
        MetaSimTrainer(g, sim, real.x, task_weight=0.0, task_features=True)
    with pytest.raises(ValueError, match="task_features=True needs real_x, val and no score"):
        MetaSimTrainer(g, sim, real.x, task_module=_toy_task_module(), task_weight=0.0,
                       task_features=True)


def test_runner_trains_the_task_network_for_task_features_in_mode_mmd(small_gmm2d):
    from simsearch.metasim import MetaSimConfig, run_metasim

    config = MetaSimConfig(iterations=2, batch_size=64, pretrain_steps=10, restarts=1, features="task")
    result = run_metasim(small_gmm2d, modes=("mmd",), seeds=(0,), config=config, out=None, log=None)
    history = result["runs"][1]["history"]
    assert len(history) == 2 and {"mmd2", "score"} <= set(history[0]) and "advantage" not in history[0]
    expected = r"features: expected one of \['random-conv', 'task', 'val'\], got 'pix'"
    with pytest.raises(ValueError, match=expected):
        run_metasim(small_gmm2d, modes=("mmd",), seeds=(0,), config=MetaSimConfig(features="pix"),
                    out=None, log=None)


def test_class_conditional_mmd_training_learns_a_transform_per_class():
    sim = Toy()
    real = sim.simulate(MU0, 400, seed=99)
    real_x = real.x.clone()
    real_x[:, 0] += 1.0 - 2.0 * real.y.float()  # class 0 moved by +1, class 1 by -1 along u₀
    g = DistributionTransformer(sim, mutable=["u"], n_reference=500, sigma=0.05, seed=0)
    g.pretrain_identity(steps=200, batch_size=128, seed=0)
    trainer = MetaSimTrainer(g, sim, real_x, real_y=real.y, task_weight=0.0, batch_size=128, lr=0.03,
                             seed=0)
    trainer.fit(150)
    fresh = sim.simulate(MU0, 1000, seed=7).latents
    moved = (g(fresh) - g.mutable_values(fresh)).detach()
    for label, shift in ((0, 1.0), (1, -1.0)):
        assert float(moved[fresh["y"] == label, 0].mean()) == pytest.approx(shift, abs=0.3)
    with pytest.raises(ValueError, match=r"real_y must be a tensor of one label per real input \(400\)"):
        MetaSimTrainer(g, sim, real_x, real_y=real.y[:5], task_weight=0.0)


def test_val_features_are_a_fixed_network_trained_on_the_validation_set(small_gmm2d):
    from simsearch.metasim import MetaSimConfig, run_metasim, val_features

    phi = val_features(small_gmm2d, seed=0)
    x = small_gmm2d.val[0][:50].clone().requires_grad_(True)
    f = phi(x)
    assert f.shape[0] == 50 and f.dim() == 2
    assert torch.allclose(f, val_features(small_gmm2d, seed=0)(x))  # seeded
    assert not torch.allclose(f, val_features(small_gmm2d, seed=1)(x))
    f.sum().backward()
    assert float(x.grad.abs().sum()) > 0  # differentiable in the inputs, the weights stay fixed
    config = MetaSimConfig(iterations=2, batch_size=64, pretrain_steps=10, restarts=1, features="val",
                           class_mmd=True)
    history = run_metasim(small_gmm2d, modes=("mmd",), seeds=(0,), config=config, out=None,
                          log=None)["runs"][1]["history"]
    assert len(history) == 2 and history[0]["mmd2"] >= 0.0 and "score" not in history[0]


def _task_gradients(task_noise, draws=800, batch=16, sigma=0.5):
    """Per-iteration θ-gradients (output bias of u₀, the direction every scene moves alike) of the
    task loss alone, at a fixed θ (lr 0) and a fixed baseline, for a score of the batch mean."""
    sim = Toy()
    g = DistributionTransformer(sim, mutable=["u"], n_reference=500, sigma=sigma, seed=0)
    g.pretrain_identity(steps=200, batch_size=128, seed=0)
    seen = []

    def score(x, y, seed):  # best when the rendered first coordinate, minus 3y, averages 1.5
        seen.append(x[:, 0] - 3 * y)  # plus noise of sd 1, as a task network's training adds
        noise = float(torch.randn((), generator=torch.Generator().manual_seed(seed)))
        return -float(((x[:, 0] - 3 * y).mean() - 1.5) ** 2) + noise

    trainer = MetaSimTrainer(g, sim, score=score, mmd_weight=0.0, batch_size=batch, lr=0.0,
                             task_noise=task_noise, seed=0)
    grads = []
    for _ in range(draws):
        trainer.baseline = -2.25  # any constant keeps the estimate unbiased
        trainer.step()
        grads.append(float(g.skip.bias.grad[0]))
    fresh = sim.simulate(MU0, 20000, seed=7).latents
    mean_u = float(g(fresh)[:, 0].mean().detach())
    # the loss is −score: its gradient in the bias (standardised units) is 2 (E m − 1.5) · scale
    analytic = 2 * (mean_u - 1.5) * float(g.out_scale[0])
    return np.asarray(grads), analytic, g, trainer, seen


def test_batch_task_noise_estimates_the_gradient_with_less_variance_than_per_scene_noise():
    batch, batch_analytic, g, trainer, seen = _task_gradients("batch")
    scene, scene_analytic, *_ = _task_gradients("scene")
    assert batch_analytic == pytest.approx(scene_analytic)
    # ES (shared offset): unbiased for the full gradient (−2.86); per-scene Eq. 4 averaged over
    # the batch: for 1/B_m of it. Standard errors of the means here: about 0.17 and 0.4
    assert batch.mean() == pytest.approx(batch_analytic, abs=0.6)
    assert 16 * scene.mean() == pytest.approx(scene_analytic, abs=1.3)
    # the same expected step, less noise: the score's noise enters B_m times less (here 24
    # against 105; the variance of the signal term itself, about 18, is the same for both)
    assert (16 * scene).var() > 3 * batch.var()
    # every scene of a batch was moved from its Eq. 4 draw by the same offset, and re-rendered
    from simsearch.objective import trial_seed

    latents = trainer.transformed.simulate(g.psi, 16, seed=trial_seed(trainer.seed, 0)).latents  # iteration 0
    offset = seen[0] - latents[TRANSFORMED][:, 0]
    assert torch.allclose(offset, offset[0].expand(16), atol=1e-5) and abs(float(offset[0])) > 1e-3
    assert trainer.history[0]["renders"] == 2 * 16


def test_trainer_and_config_reject_an_unknown_task_noise():
    sim = Toy()
    g = DistributionTransformer(sim, n_reference=100)
    with pytest.raises(ValueError, match=r"task_noise: expected one of \['scene', 'batch'\], got 'global'"):
        MetaSimTrainer(g, sim, torch.zeros(4, 2), task_weight=0.0, task_noise="global")
    with pytest.raises(ValueError, match="task_sigma must be a finite number > 0 or None, got -1"):
        MetaSimTrainer(g, sim, torch.zeros(4, 2), task_weight=0.0, task_sigma=-1.0)
    from simsearch.metasim import MetaSimConfig, run_metasim

    with pytest.raises(ValueError, match="task_noise: expected one of"):
        run_metasim("gmm2d", config=MetaSimConfig(task_noise="global"), out=None)
    with pytest.raises(ValueError, match="task_sigma must be a finite number > 0 or None, got 0"):
        run_metasim("gmm2d", config=MetaSimConfig(task_sigma=0), out=None)


def test_holdout_split_is_a_seeded_partition_of_the_validation_set():
    from simsearch.metasim import holdout_split

    val = (torch.arange(30.0).reshape(30, 1), torch.arange(30) % 3)
    (fx, fy), (hx, hy) = holdout_split(val, 1 / 3, seed=0)
    assert len(hx) == 10 and len(fx) == 20
    assert sorted(torch.cat([fx, hx]).flatten().tolist()) == list(range(30))  # disjoint, covers V
    assert torch.equal(fy, fx.flatten().long() % 3) and torch.equal(hy, hx.flatten().long() % 3)
    assert torch.equal(holdout_split(val, 1 / 3, seed=0)[1][0], hx)  # seeded
    assert not torch.equal(holdout_split(val, 1 / 3, seed=1)[1][0], hx)
    with pytest.raises(ValueError, match=r"holdout: a fraction 0.01 of 30 validation examples leaves 0"):
        holdout_split(val, 0.01, seed=0)


def test_problem_score_scores_extra_splits_with_the_same_model(small_gmm2d):
    psi = small_gmm2d.simulator.init_psi()
    plain = small_gmm2d.score(psi, seed=0)
    extra = small_gmm2d.score(psi, seed=0, splits={"again": small_gmm2d.val, "half": (
        small_gmm2d.val[0][:50], small_gmm2d.val[1][:50])})
    assert (extra["val"], extra["test"]) == (plain["val"], plain["test"])
    assert extra["again"] == plain["val"] and 0.0 <= extra["half"] <= 1.0
    with pytest.raises(ValueError, match="splits: names other than 'val' and 'test'"):
        small_gmm2d.score(psi, seed=0, splits={"test": small_gmm2d.val})


def test_holdout_selection_keeps_h_from_the_losses_and_keeps_the_best_scoring_g(small_gmm2d, monkeypatch):
    import simsearch.metasim as metasim
    from simsearch.objective import trial_seed

    config = metasim.MetaSimConfig(iterations=8, batch_size=32, pretrain_steps=10, restarts=2,
                                   restart_iterations=2, holdout=0.25, select_every=3)
    fit, held = metasim.holdout_split(small_gmm2d.val, 0.25, seed=0)
    accuracies, seen, real = iter([0.2, 0.4, 0.7, 0.5]), [], []

    def fake_accuracy(problem, h, transformer, seed):  # records each candidate's transformed means
        assert torch.equal(h[0], held[0])
        sim = TransformedSimulator(problem.simulator, transformer)
        seen.append(metasim.transformed_means(sim, transformer.psi, trial_seed(seed, 9)))
        return next(accuracies)

    make_trainer = metasim._trainer

    def spy_trainer(problem, *args):
        trainer = make_trainer(problem, *args)
        real.append((trainer.real_x, trainer.val[0]))
        return trainer

    monkeypatch.setattr(metasim, "_holdout_accuracy", fake_accuracy)
    monkeypatch.setattr(metasim, "_trainer", spy_trainer)
    result = metasim.run_metasim(small_gmm2d, modes=("both",), seeds=(0,), config=config, out=None,
                                 log=None)
    run = result["runs"][1]
    # the training losses see F only: the MMD's real side and the task score's V
    assert len(real) == 2 and all(torch.equal(x, fit[0]) and torch.equal(v, fit[0]) for x, v in real)
    assert run["restart"] == 1  # restart accuracies 0.2, 0.4
    assert (run["kept_iteration"], run["selection_holdout"]) == (5, 0.7)  # iterations 5 and 8: 0.7, 0.5
    assert len(run["history"]) == 8  # trained to the end, then G_θ of iteration 5 restored
    assert run["attributes"] == pytest.approx(seen[2])
    assert run["attributes"] != pytest.approx(seen[3])
    assert "holdout" in run and "holdout" in result["table"][1]
    with pytest.raises(ValueError, match=r"select_every > 0 needs a held-out part .* got holdout 0.0"):
        metasim.run_metasim(small_gmm2d, config=metasim.MetaSimConfig(select_every=2), out=None, log=None)
    with pytest.raises(ValueError, match=r"holdout: expected a fraction in \[0, 1\), got 1.5"):
        metasim.run_metasim(small_gmm2d, config=metasim.MetaSimConfig(holdout=1.5), out=None, log=None)
    with pytest.raises(ValueError, match=r"select_every: expected an int >= 0, got -1"):
        metasim.run_metasim(small_gmm2d, config=metasim.MetaSimConfig(holdout=0.2, select_every=-1),
                            out=None, log=None)


def test_within_class_spreads_pool_the_variance_within_each_class():
    from simsearch.metasim import transformed_spreads

    sim = TransformedSimulator(Toy(), DistributionTransformer(Toy(), n_reference=100, seed=0))
    batch = sim.simulate(MU0, 60, seed=5)
    s = sim.transformer.mutable_values(sim.scene(batch.latents))[:, :2].numpy()  # transformed u
    y = batch.y.numpy()
    squares = sum(((s[y == c] - s[y == c].mean(0)) ** 2).sum(0) for c in np.unique(y))
    expected = float(np.sqrt((squares / (60 - len(np.unique(y)))).mean()))
    spreads = transformed_spreads(sim, MU0, seed=5, n=60, within_class=True)
    assert spreads["u"][1] == pytest.approx(expected, rel=1e-5)
    pooled = transformed_spreads(sim, MU0, seed=5, n=60)
    assert pooled["u"][1] == pytest.approx(float(np.sqrt(s.var(0, ddof=1).mean())), rel=1e-5)


def test_score_samples_and_epochs_set_every_scoring_model_of_a_run(small_gmm2d):
    from simsearch.metasim import MetaSimConfig, run_metasim

    config = MetaSimConfig(iterations=2, batch_size=32, pretrain_steps=5, restarts=1, score_samples=120,
                           score_epochs=1)
    result = run_metasim(small_gmm2d, modes=("mmd",), seeds=(0,), config=config, out=None, log=None)
    default = result["runs"][0]
    psi = small_gmm2d.simulator.init_psi()
    resized = small_gmm2d.score(psi, 0, n_samples=120, epochs=1)
    assert (default["val"], default["test"]) == (resized["val"], resized["test"])
    assert (default["val"], default["test"]) != tuple(small_gmm2d.score(psi, 0)[k] for k in ("val", "test"))
    for name, bad in (("score_samples", 0), ("score_epochs", 1.5), ("score_samples", True)):
        with pytest.raises(ValueError, match=rf"{name}: expected an int >= 1 or None .*, got {bad!r}"):
            run_metasim(small_gmm2d, config=MetaSimConfig(**{name: bad}), out=None, log=None)


def test_score_epochs_leave_the_search_unchanged(small_gmm2d):
    # features="val" trains φ for the problem's eval_epochs: the scoring options must not reach it,
    # so G_θ (its MMD² to the real inputs) is the same while the mode's scores are the resized model's
    from simsearch.metasim import MetaSimConfig, run_metasim

    def run(**score):
        config = MetaSimConfig(iterations=2, batch_size=32, pretrain_steps=5, restarts=1, features="val",
                               **score)
        return run_metasim(small_gmm2d, modes=("mmd",), seeds=(0,), config=config, out=None,
                           log=None)["runs"][1]

    plain, resized = run(), run(score_samples=120, score_epochs=1)
    assert resized["mmd2"] == plain["mmd2"]
    assert (resized["val"], resized["test"]) != (plain["val"], plain["test"])
