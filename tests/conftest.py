import os

import pytest
import torch

# Tests never reach a model hub or dataset server.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")
    parser.addoption("--rungpu", action="store_true", help="also run tests marked gpu")


def pytest_collection_modifyitems(config, items):
    for marker, flag in (("slow", "--runslow"), ("gpu", "--rungpu")):
        if config.getoption(flag):
            continue
        skip = pytest.mark.skip(reason=f"needs {flag}")
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="module")
def one_thread():
    """Tests of thousands of tiny ops: intra-op threads only add sync cost, and on a busy
    machine spinning OpenMP workers made single tests 100x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def in_process(tmp_path, monkeypatch):
    """`genexp train` in this process (a refusal takes well under a second), in an empty dir."""
    from helpers import in_process_train

    return in_process_train(monkeypatch, tmp_path)
