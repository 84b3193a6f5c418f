from __future__ import annotations

from pathlib import Path

import kecpm
import kecpm.extractor


def test_the_readme_lists_the_public_api():
    readme = (Path(kecpm.__file__).parent / "README.md").read_text(encoding="utf-8")
    start = readme.index("## The extractor (`kecpm.extractor`")
    section = readme[start : readme.index("\n## ", start + 1)]
    missing = [name for name in kecpm.extractor.__all__ if f"`{name}`" not in section]
    assert missing == []


def test_every_public_name_is_importable():
    for name in kecpm.extractor.__all__:
        assert getattr(kecpm.extractor, name) is not None
