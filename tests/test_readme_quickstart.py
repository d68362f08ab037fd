"""The README's quick start is true for a newcomer: it names every image its example job needs."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.helpers import EXAMPLES

README = Path(__file__).resolve().parent.parent / "README.md"
EXAMPLE = "schemas/examples/valid/multi-step.json"


def test_the_quick_start_names_every_image_of_its_example_job() -> None:
    text = README.read_text()
    start = text.index(f"hades submit {EXAMPLE} --follow")
    note = text[start : text.index("\n\n", text.index("```", start) + 4)]  # the paragraph after the command
    named = set(re.findall(r"`([^`\s]+:[^`\s]+)`", note))
    needed = {step["image"] for step in json.loads((EXAMPLES / "valid" / "multi-step.json").read_text())["steps"]}
    assert named == needed
