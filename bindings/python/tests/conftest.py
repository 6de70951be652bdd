import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def child_env(**extra):
    """Environment for a child Python process that must import the same liblift package as these
    tests (an installed wheel, or a checkout's bindings/python with LIBLIFT_PATH) and the tests'
    helper modules."""
    import os
    from pathlib import Path

    import liblift

    package_root = str(Path(liblift.__file__).resolve().parent.parent)
    tests = str(Path(__file__).resolve().parent)
    path = os.pathsep.join(p for p in (package_root, tests, os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, **extra)
