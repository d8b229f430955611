import optuna
import pytest
import torch

from lightning_modules import (
    LOSSES,
    AccumulatedMainTaskModule,
    MainTaskModule,
    PruningCallback,
    TensorBatches,
    quiet_trainer,
)


def net():
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))


def test_per_sample_loss_is_unreduced_and_matches_mean():
    module = MainTaskModule(net())
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 1, 0, 1, 0])
    per = module.per_sample_loss(x, y)
    assert per.shape == (6,)
    torch.testing.assert_close(per.mean(), torch.nn.functional.cross_entropy(module(x), y))
    l1 = LOSSES["l1"](torch.ones(2, 5), torch.zeros(2, 5))
    assert l1.tolist() == [1.0, 1.0]


def test_unknown_loss_or_metric_lists_known():
    with pytest.raises(ValueError, match="unknown loss 'hinge'; known: \\['cross_entropy'"):
        MainTaskModule(net(), loss="hinge")
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        MainTaskModule(net(), metric="f1")
    with pytest.raises(ValueError, match="lr must be > 0, got 0"):
        MainTaskModule(net(), lr=0)


def test_training_reduces_loss_and_chunked_equals_plain_steps():
    torch.manual_seed(0)
    x = torch.randn(200, 3)
    y = (x[:, 0] > 0).long()
    results = []
    for chunk in (False, True):
        torch.manual_seed(1)
        module = MainTaskModule(net(), lr=0.05)
        trainer = quiet_trainer(3, limit_val_batches=0)
        trainer.fit(module, TensorBatches(x, y, 50, shuffle=True, seed=2, chunk=chunk))
        results.append([p.detach().clone() for p in module.parameters()])
        assert module.evaluate(x, y) > 0.8
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b)


def test_accumulated_save_load_round_trip(tmp_path):
    a = AccumulatedMainTaskModule(net())
    a.trials_seen = 7
    a.save(tmp_path / "sub" / "amtm.pt")
    b = AccumulatedMainTaskModule(net()).load(tmp_path / "sub" / "amtm.pt")
    assert b.trials_seen == 7
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    assert not list((tmp_path / "sub").glob("*.tmp"))


def test_tensor_batches_reproducible_and_complete():
    x, y = torch.arange(10.0), torch.arange(10)
    a = [b[1].tolist() for b in TensorBatches(x, y, 4, shuffle=True, seed=3)]
    b = [b[1].tolist() for b in TensorBatches(x, y, 4, shuffle=True, seed=3)]
    assert a == b and sorted(sum(a, [])) == list(range(10)) and len(a) == 3
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        TensorBatches(x, y, 0)


def test_pruning_callback_reports_direct_evaluation_and_prunes():
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    trial = study.ask()
    x = torch.randn(40, 3)
    y = (x[:, 0] > 0).long()
    callback = PruningCallback(trial, val_data=(x, y))
    trainer = quiet_trainer(5, [callback], limit_val_batches=0)
    trainer.fit(MainTaskModule(net()), TensorBatches(x, y, 20, chunk=True))
    assert trainer.current_epoch == 1  # stopped after the first report
    with pytest.raises(optuna.TrialPruned, match="pruned at step 0"):
        callback.check_pruned()
    assert callback.seconds > 0


def test_quiet_trainer_reads_callback_entry_points_once_and_calls_factories_per_trainer(monkeypatch):
    import importlib.metadata

    import lightning_fabric.utilities.registry as registry
    import pytorch_lightning as pl

    import lightning_modules.trainer as trainer_module

    made, lookups = [], []

    class FakeEntryPoint:
        name = "fake"

        def load(self):
            def factory():
                made.append(pl.Callback())
                return [made[-1]]

            return factory

    def fake_entry_points(group):
        lookups.append(group)
        return [FakeEntryPoint()] if group == "pytorch_lightning.callbacks_factory" else []

    original = registry.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    trainer_module._entry_points_once.cache_clear()
    try:
        first, second = quiet_trainer(1), quiet_trainer(1)
    finally:
        trainer_module._entry_points_once.cache_clear()
    assert lookups == ["pytorch_lightning.callbacks_factory"]  # read once ...
    assert len(made) == 2 and made[0] is not made[1]  # ... but fresh callbacks per trainer
    assert made[0] in first.callbacks and made[1] in second.callbacks
    assert registry.entry_points is original  # Lightning's own lookup is left as it was
