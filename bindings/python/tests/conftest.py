import numpy as np
import pytest


@pytest.fixture(autouse=True, scope="session")
def private_state_home(tmp_path_factory):
    """The `lift` commands the tests run keep their list of known files (files lift wrote or
    checked) under XDG_STATE_HOME: a folder of the test session's own, not the user's."""
    import os
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state"))


@pytest.fixture(scope="session")
def hostile_hdf5(tmp_path_factory):
    """Minimal HDF5 files on which libhdf5 itself crashes or hangs, and their clean originals,
    written by Tests/fixtures/make_hostile_hdf5.py (h5py): {crash,hang,clean}-{store,dataset}.h5."""
    import subprocess
    import sys
    from pathlib import Path
    out = tmp_path_factory.mktemp("hostile")
    script = Path(__file__).resolve().parents[3] / "Tests" / "fixtures" / "make_hostile_hdf5.py"
    subprocess.run([sys.executable, str(script), str(out)], check=True)
    return out


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
