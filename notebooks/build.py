"""Write and execute the notebooks: `python -m notebooks.build [--execute] [names...]`.

The notebooks are generated from the texts in notebooks/texts/ (Markdown, one file per notebook,
cells separated by lines `%% code` / `%% md`), so that every cause notebook has the same shape
and nothing in them is typed twice. `--execute` runs each one top to bottom with nbclient
(the kernel of this virtualenv) and saves it with its outputs: what `make notebooks` commits.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import nbformat
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent
TEXTS = NOTEBOOKS / "texts"
REPO_ROOT = NOTEBOOKS.parent
CELL_TIMEOUT_SECONDS = 600


def cells_of(text: str) -> list[nbformat.NotebookNode]:
    """Split a text into cells: Markdown by default, `%% code` starts a code cell, `%% md` a Markdown one."""
    cells: list[nbformat.NotebookNode] = []
    kind, lines = "md", []

    def flush() -> None:
        source = "\n".join(lines).strip("\n")
        if source:
            cells.append(nbformat.v4.new_code_cell(source) if kind == "code" else nbformat.v4.new_markdown_cell(source))

    for line in text.splitlines():
        if line.strip() in ("%% code", "%% md"):
            flush()
            kind, lines = line.strip()[3:], []
        else:
            lines.append(line)
    flush()
    return cells


def build(name: str) -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = cells_of((TEXTS / f"{name}.md").read_text())
    return notebook


def execute(notebook: nbformat.NotebookNode, cwd: Path = REPO_ROOT) -> nbformat.NotebookNode:
    """Run every cell in a fresh kernel, from the repository root (so `lab` imports)."""
    # IPC transport (unix sockets in a private folder): parallel test workers cannot race for
    # the same TCP port, which they did ("Address already in use") with the default.
    with tempfile.TemporaryDirectory(prefix="lab-kernel-") as runtime:
        manager = KernelManager(kernel_name="python3", transport="ipc", ip=str(Path(runtime) / "kernel"))
        NotebookClient(notebook, km=manager, timeout=CELL_TIMEOUT_SECONDS, kernel_name="python3",
                       resources={"metadata": {"path": str(cwd)}}).execute()
    return notebook


def keep_outputs(new: nbformat.NotebookNode, old: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """`new` with the outputs of `old`'s code cells, which must be the same code, in the same order."""
    new_code = [c for c in new.cells if c.cell_type == "code"]
    old_code = [c for c in old.cells if c.cell_type == "code"]
    if [c.source for c in new_code] != [c.source for c in old_code]:
        raise SystemExit("a code cell changed: the outputs must come from a run (use --execute)")
    for fresh, kept in zip(new_code, old_code):
        fresh.outputs, fresh.execution_count, fresh.metadata = kept.outputs, kept.execution_count, kept.metadata
    if len(new.cells) == len(old.cells):  # the same cells, new words: keep their ids (a small diff)
        for fresh, kept in zip(new.cells, old.cells):
            fresh.id = kept.id
    new.metadata = old.metadata
    return new


def names() -> list[str]:
    return sorted(path.stem for path in TEXTS.glob("*.md"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m notebooks.build", description=__doc__)
    parser.add_argument("--execute", action="store_true", help="run each notebook and save its outputs")
    parser.add_argument("--text-only", action="store_true",
                        help="rewrite only the Markdown cells from texts/, keeping the committed code cells and their "
                             "outputs (refused where a code cell changed: that needs --execute)")
    parser.add_argument("names", nargs="*", help=f"notebooks to build (default all: {', '.join(names())})")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(names()))
    if unknown:
        print(f"unknown notebook {', '.join(unknown)}; choose from: {', '.join(names())}", file=sys.stderr)
        return 2
    for name in args.names or names():
        notebook = build(name)
        if args.text_only:
            notebook = keep_outputs(notebook, nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4))
        elif args.execute:
            print(f"executing {name} ...", flush=True)
            execute(notebook)
        nbformat.write(notebook, NOTEBOOKS / f"{name}.ipynb")
        print(f"wrote notebooks/{name}.ipynb")
    return 0


if __name__ == "__main__":
    sys.exit(main())
