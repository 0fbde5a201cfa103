"""MkDocs hooks: an API page for every public module of jnn, even one added later.

A module ``jnn/<name>.py`` (or package) without a leading underscore is
public. If ``docs/api/<name>.md`` does not exist, ``on_files`` generates it
(``::: jnn.<name>``, which documents the names in its ``__all__``), and
``on_nav`` lists it under "API reference". So a new public module is in the
reference, and ``mkdocs build --strict`` checks its docstrings, without
anyone editing ``mkdocs.yml``; write ``docs/api/<name>.md`` by hand to add
prose around it.
"""

from __future__ import annotations

import pkgutil
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files
from mkdocs.structure.nav import Navigation, Section

ROOT = Path(__file__).resolve().parent.parent
SECTION = "API reference"
_generated: list[str] = []
PAGE = """# `jnn.{name}`

::: jnn.{name}
    options:
      show_root_heading: false
"""


def public_modules() -> list[str]:
    """Names of jnn's public submodules, from the source tree (nothing is imported)."""
    return sorted(
        m.name for m in pkgutil.iter_modules([str(ROOT / "jnn")]) if not m.name.startswith("_")
    )


def on_files(files: Files, config: Any) -> Files:
    _generated.clear()
    for name in public_modules():
        uri = f"api/{name}.md"
        if files.get_file_from_path(uri) is None:
            content = PAGE.format(name=name)
            files.append(File.generated(config, uri, content=content))
            _generated.append(uri)
    return files


def on_nav(nav: Navigation, config: Any, files: Files) -> Navigation:
    section = next(
        (item for item in nav.items if isinstance(item, Section) and item.title == SECTION), None
    )
    if section is None:
        raise ValueError(f"mkdocs.yml: the nav needs a section titled {SECTION!r}.")
    for uri in _generated:
        page = files.get_file_from_path(uri).page
        if page in nav.pages:
            continue  # mkdocs.yml lists it already (and sets its place)
        page.title = f"jnn.{Path(uri).stem}"
        page.parent = section
        section.children.append(page)
        nav.pages.append(page)
    return nav
