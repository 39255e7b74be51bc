"""Comments point to README sections for their measurements: each such section must exist."""

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_readme_sections_named_in_the_code_exist():
    headings = re.findall(r"^## (.+)$", (ROOT / "README.md").read_text(), re.MULTILINE)
    for path in (ROOT / "src").rglob("*.py"):
        for section in re.findall(r'README, "([^"]+)"', path.read_text()):
            assert any(h.startswith(section) for h in headings), (path, section)
