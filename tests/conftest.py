import optuna
import pytest
import torch

# One intra-op thread: the suite runs on 2 cores, where torch's default of one thread per core makes
# the small models of these tests slower, not faster, whenever anything else is running.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield


@pytest.fixture(scope="session")
def gmm2d():
    from simsearch.problems import get

    return get("gmm2d")
