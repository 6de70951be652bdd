"""The Python examples run as a user would run them."""
import subprocess
import sys

from cli_helpers import ROOT

STORE_SEARCH = ROOT / "examples" / "python" / "store_search.py"


def test_store_search_creates_its_output_folder(tmp_path):
    out = tmp_path / "new" / "nested"
    r = subprocess.run([sys.executable, STORE_SEARCH, out], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.endswith("ok\n"), r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["captions-0.h5", "captions-1.h5"]


def test_store_search_output_folder_that_cannot_be_made_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    r = subprocess.run([sys.executable, STORE_SEARCH, tmp_path / "file" / "out"], capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr == f"store_search.py: cannot create the output folder {tmp_path / 'file' / 'out'}: Not a directory\n"
