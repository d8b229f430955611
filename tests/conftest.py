import optuna
import pytest


@pytest.fixture(autouse=True)
def _quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield


@pytest.fixture(scope="session")
def gmm2d():
    from simsearch.problems import get

    return get("gmm2d")
