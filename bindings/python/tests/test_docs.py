"""The documents: the README stays short and its links and the docs' links resolve; the
README's C program is examples/c/hello_lift.c (CI compiles and runs it, and runs the README's
Python example)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_readme_fits_on_a_few_screens():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, len(lines)


def test_relative_links_resolve():
    broken = []
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            if not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_readme_c_program_is_the_example():
    text = (ROOT / "README.md").read_text()
    block = text.split("### Use it from C", 1)[1].split("```c\n", 1)[1].split("```\n", 1)[0]
    assert block == (ROOT / "examples" / "c" / "hello_lift.c").read_text()


def test_documents_speak_of_the_project_only():
    """Figures name their machine, date and command; no document tells how the work was done."""
    pattern = re.compile(r"\b(this session|an earlier session|earlier session|the issue|work item)\b", re.I)
    found = [f"{d.relative_to(ROOT)}: {m.group(0)}" for d in DOCS for m in pattern.finditer(d.read_text())]
    assert not found, found
