"""The plugin browser: every plugin, a search over them, one plugin's manifest, install, enable and disable."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import yaml
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, Static

from assistant.chat.modals import ConfirmModal
from assistant.cli_common import printable


class PluginsScreen(Screen[bool]):
    """Dismissed with True when plugins changed (the planner then reloads its candidates)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Back to the chat", id="plugins.close"),
        Binding("f3", "toggle_enabled", "Enable/disable", id="plugins.toggle"),
    ]

    def __init__(self, registry: Any) -> None:
        super().__init__()
        self.registry = registry
        self.changed = False

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            with Vertical(id="plugin-list"):
                yield Input(placeholder="search plugins, e.g. remove the rain (enter)", id="search")
                yield DataTable(id="plugins", cursor_type="row")
                with Horizontal(id="install-row"):
                    yield Input(placeholder="plugin folder, .zip or .tar.gz to install", id="install-path")
                    yield Button("Install", id="install", variant="primary")
                yield Label("", id="plugin-status", markup=False)  # it quotes manifests and errors
            with VerticalScroll(id="manifest-pane"):
                yield Static("", id="manifest", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#plugins", DataTable).add_columns("id", "version", "kind", "state", "tasks", "score")
        self.show_all()

    def show_all(self) -> None:
        self._fill([(s, None) for s in self.registry.plugins()])

    def _fill(self, rows: list[tuple[Any, float | None]]) -> None:
        table = self.query_one("#plugins", DataTable)
        table.clear()
        for status, score in rows:
            state = "ready" if status.runnable else ("disabled" if not status.enabled else
                                                     "needs trust" if not status.trusted else "problem")
            cells = (status.id, status.active.version, status.manifest.kind, state, ", ".join(status.manifest.tasks),
                     "" if score is None else f"{score:.2f}")
            # Text cells: a table reads markup in plain strings, and a manifest's "[/bold]" would stop the screen.
            table.add_row(*(Text(printable(cell)) for cell in cells), key=status.id)
        if table.row_count:
            table.move_cursor(row=0)
            self._show_manifest(str(table.coordinate_to_cell_key((0, 0)).row_key.value))

    def status(self, text: str) -> None:
        self.query_one("#plugin-status", Label).update(text)

    @on(Input.Submitted, "#search")
    def search(self, event: Input.Submitted) -> None:
        if not event.value.strip():
            self.show_all()
            return
        self.status("searching… (the first search loads the embedding model)")
        self._search(event.value)

    @work(thread=True, exclusive=True, group="search")
    def _search(self, text: str) -> None:
        try:
            hits = self.registry.search(text, limit=10)
            rows = [(self.registry.get(hit.id), hit.score) for hit in hits]
        except Exception as err:  # the index or the model failed: say so in the screen, do not crash
            self.app.call_from_thread(self.status, f"search failed: {err}")
            return
        self.app.call_from_thread(self._fill, rows)
        self.app.call_from_thread(self.status, f"{len(rows)} match(es) for {text!r}")

    @on(DataTable.RowHighlighted, "#plugins")
    def highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value:
            self._show_manifest(str(event.row_key.value))

    def _show_manifest(self, plugin_id: str) -> None:
        status = self.registry.get(plugin_id)
        text = yaml.safe_dump(status.manifest.model_dump(mode="json", exclude_none=True), sort_keys=False,
                              allow_unicode=True)
        if status.problems:
            text = "problems: " + "; ".join(status.problems) + "\n\n" + text
        self.query_one("#manifest", Static).update(printable(text))

    def selected(self) -> str | None:
        table = self.query_one("#plugins", DataTable)
        if not table.row_count:
            return None
        return str(table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value)

    def action_toggle_enabled(self) -> None:
        plugin_id = self.selected()
        if plugin_id is None:
            return
        status = self.registry.get(plugin_id)
        try:
            if status.enabled:
                self.registry.disable(plugin_id)
                self.status(f"disabled {plugin_id}")
            else:
                self.registry.enable(plugin_id)
                self.status(f"enabled {plugin_id}")
        except Exception as err:
            self.status(f"error: {err}")
            return
        self.changed = True
        self.show_all()

    @on(Button.Pressed, "#install")
    @on(Input.Submitted, "#install-path")
    def install(self) -> None:
        source = Path(self.query_one("#install-path", Input).value.strip()).expanduser()
        if not str(source) or str(source) == ".":
            self.status("type the plugin folder or archive to install first")
            return
        try:
            manifest, _ = self.registry.validate(source)
        except Exception as err:
            self.status(f"cannot install {source}: {err}")
            return
        # A plugin that would serve a task another plugin serves now is asked about, as code is.
        takes_over = [f"{task}: it may be used instead of {', '.join(others)}."
                      for task, others in self.registry.served_by_others(manifest).items()]
        trust = manifest.kind == "python"
        if not trust and not takes_over:
            self._install(source, False)
            return
        lines = [f"{manifest.id} {manifest.version}"]
        if trust:
            lines.append(f"runs its own Python code on your computer (author: "
                         f"{', '.join(a.name for a in manifest.authors)}).")
        lines += takes_over
        lines.append("Install and trust it?" if trust else "Install it?")
        self.app.push_screen(ConfirmModal("\n".join(lines), yes="Trust and install" if trust else "Install",
                                          no="Cancel"),
                             lambda yes: self._install(source, trust) if yes else self.status("not installed"))

    def _install(self, source: Path, trust: bool) -> None:
        try:
            result = self.registry.install(source, trust=trust)
        except Exception as err:
            self.status(f"cannot install {source}: {err}")
            return
        self.changed = True
        warnings = "".join(f"; warning: {w}" for w in result.warnings)
        self.status(f"installed {result.record.manifest.id} {result.record.manifest.version}{warnings}")
        self.query_one("#install-path", Input).value = ""
        self.show_all()

    def action_close(self) -> None:
        self.dismiss(self.changed)
