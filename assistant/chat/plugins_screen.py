"""The plugin browser: every plugin, installed or offered by an added index, a search over them, one plugin's
manifest, install (from a folder, an archive or an index), enable and disable."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import yaml
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.coordinate import Coordinate
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, Static

from assistant.chat.modals import ConfirmModal
from assistant.cli.common import printable
from assistant.error_report import explained
from assistant.plugin_status import state_word

if TYPE_CHECKING:
    from plugins.progress import ProgressEvent
    from registry.community.hub import CommunityIndexes
    from registry.community.resolve import Usable
    from registry.store import InstallResult, PluginStatus, Registry

    #: A row of the list: an installed plugin or one an index offers, and its search score.
    Row = tuple[PluginStatus | Usable, float | None]
from registry.community.ids import looks_like_id
from registry.kinds import kind_for

#: Row keys of plugins an index offers (not installed): this prefix and the plugin id.
INDEXED = "index:"


class PluginsScreen(Screen[bool]):
    """Dismissed with True when plugins changed (the planner then reloads its candidates)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Back to the chat", id="plugins.close"),
        Binding("f3", "toggle_enabled", "Enable/disable", id="plugins.toggle"),
        Binding("f4", "install_selected", "Install from index", id="plugins.install-indexed"),
    ]

    def __init__(self, registry: Registry) -> None:
        super().__init__()
        self.registry = registry
        self.changed = False
        self.offered: dict[str, Usable] = {}  # plugin id -> the index entry an install by id takes
        self._indexes: CommunityIndexes | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            with Vertical(id="plugin-list"):
                yield Input(placeholder="search plugins, e.g. remove the rain (enter)", id="search")
                yield DataTable(id="plugins", cursor_type="row")
                with Horizontal(id="install-row"):
                    yield Input(placeholder="plugin folder, .zip, .tar.gz or an indexed id (empty: the "
                                            "selected indexed plugin)", id="install-path")
                    yield Button("Install", id="install", variant="primary")
                yield Label("", id="plugin-status", markup=False)  # it quotes manifests and errors
            with VerticalScroll(id="manifest-pane"):
                yield Static("", id="manifest", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#plugins", DataTable).add_columns("id", "version", "kind", "state", "tasks", "score")
        self.show_all()

    def indexes(self) -> CommunityIndexes:
        if self._indexes is None:
            from assistant.cli.index import open_indexes

            self._indexes = open_indexes()
        return self._indexes

    def show_all(self) -> None:
        self._fill([(s, None) for s in self.registry.plugins()])
        self._list_offered()

    @work(thread=True, exclusive=True, group="offered")
    def _list_offered(self) -> None:
        """Add the plugins the indexes offer and that are not installed (reading an index may take a moment)."""
        try:
            offered, problems = self.indexes().offered()
        except Exception as err:  # a damaged index list: say so, keep the installed plugins listed
            self.app.call_from_thread(self.status, f"indexes: {explained(err)}")
            return
        installed = {s.id for s in self.registry.plugins()}
        rows: list[Row] = [(usable, None) for pid, usable in sorted(offered.items()) if pid not in installed]
        self.app.call_from_thread(self._add_offered, offered, rows, problems)

    def _add_offered(self, offered: dict[str, Usable], rows: list[Row], problems: list[str]) -> None:
        self.offered = offered
        self._fill(rows, clear=False)
        if problems:
            self.status("; ".join(problems))

    def _fill(self, rows: list[Row], clear: bool = True) -> None:
        from registry.community.resolve import Usable

        table = self.query_one("#plugins", DataTable)
        if clear:
            table.clear()
        for item, score in rows:
            if isinstance(item, Usable):  # offered by an index, not installed
                m = item.entry.manifest
                key, version, state = f"{INDEXED}{m.id}", m.version, f"index:{item.source.name}"
            else:
                m, key, version = item.manifest, item.id, item.active.version
                state = state_word(item)  # the words of `diffplugin plugins list`
            cells = (m.id, version, m.kind, state, ", ".join(m.tasks), "" if score is None else f"{score:.2f}")
            # Text cells: a table reads markup in plain strings, and a manifest's "[/bold]" would stop the screen.
            table.add_row(*(Text(printable(cell)) for cell in cells), key=key)
        if clear and table.row_count:
            table.move_cursor(row=0)
            self._show_manifest(str(table.coordinate_to_cell_key(Coordinate(0, 0)).row_key.value))

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
            found, _ = self.indexes().search(self.registry, text, limit=10)
            rows: list[Row] = [(self.registry.get(f.id) if f.usable is None else f.usable, f.hit.score)
                               for f in found]
        except Exception as err:  # the index or the model failed: say so in the screen, do not crash
            self.app.call_from_thread(self.status, f"search failed: {explained(err)}")
            return
        self.app.call_from_thread(self._fill, rows)
        self.app.call_from_thread(self.status, f"{len(rows)} match(es) for {text!r}")

    @on(DataTable.RowHighlighted, "#plugins")
    def highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value:
            self._show_manifest(str(event.row_key.value))

    def _show_manifest(self, plugin_id: str) -> None:
        if plugin_id.startswith(INDEXED):
            self._show_offered(plugin_id.removeprefix(INDEXED))
            return
        status = self.registry.get(plugin_id)
        text = yaml.safe_dump(status.manifest.model_dump(mode="json", exclude_none=True), sort_keys=False,
                              allow_unicode=True)
        if status.problems:
            text = "problems: " + "; ".join(status.problems) + "\n\n" + text
        self.query_one("#manifest", Static).update(printable(text))

    def _show_offered(self, plugin_id: str) -> None:
        from registry.community.resolve import describe

        usable = self.offered.get(plugin_id)
        if usable is None:
            return
        details = describe(usable)
        head = {key: details[key] for key in ("index", "publisher", "key_fingerprint", "signed", "published",
                                                "archive")}
        text = (f"not installed: offered by index '{usable.source.name}' (install: F4, or the Install button)\n\n"
                + yaml.safe_dump(head, sort_keys=False, allow_unicode=True) + "\n"
                + yaml.safe_dump(usable.entry.manifest.model_dump(mode="json", exclude_none=True), sort_keys=False,
                                 allow_unicode=True))
        self.query_one("#manifest", Static).update(printable(text))

    def selected(self) -> str | None:
        table = self.query_one("#plugins", DataTable)
        if not table.row_count:
            return None
        return str(table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key.value)

    def action_toggle_enabled(self) -> None:
        plugin_id = self.selected()
        if plugin_id is None:
            return
        if plugin_id.startswith(INDEXED):
            self.status("not installed yet: install it first (F4)")
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
            self.status(f"error: {explained(err)}")
            return
        self.changed = True
        self.show_all()

    @on(Button.Pressed, "#install")
    @on(Input.Submitted, "#install-path")
    def install(self) -> None:
        typed = self.query_one("#install-path", Input).value.strip()
        selected = self.selected() or ""
        if not typed and selected.startswith(INDEXED):
            self._ask_indexed(selected.removeprefix(INDEXED))
            return
        source = Path(typed).expanduser()
        if looks_like_id(typed) and not source.exists():
            self._ask_indexed(typed)
            return
        if not str(source) or str(source) == ".":
            self.status("type the plugin folder or archive to install first")
            return
        try:
            manifest, _ = self.registry.validate(source)
        except Exception as err:
            self.status(f"cannot install {source}: {explained(err)}")
            return
        # A plugin that would serve a task another plugin serves now is asked about, as code is.
        takes_over = [f"{task}: it may be used instead of {', '.join(others)}."
                      for task, others in self.registry.served_by_others(manifest).items()]
        trust = kind_for(manifest).runs_code
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
            self.status(f"cannot install {source}: {explained(err)}")
            return
        self._installed(result, [])

    def action_install_selected(self) -> None:
        selected = self.selected() or ""
        if not selected.startswith(INDEXED):
            self.status("select a plugin an index offers (state index:NAME) to install it")
            return
        self._ask_indexed(selected.removeprefix(INDEXED))

    def _ask_indexed(self, ref: str) -> None:
        """Ask before installing from an index, as for a folder: who published it, trust for code, takeovers."""
        try:
            usable, warnings = self.indexes().resolve(ref)
        except Exception as err:
            self.status(f"cannot install {ref}: {explained(err)}")
            return
        entry, manifest = usable.entry, usable.entry.manifest
        publisher = (f"published by {entry.publisher.name}, signed" if entry.signature else "unsigned") \
            if entry.publisher else "unsigned"
        lines = [f"{manifest.id} {manifest.version} from index '{usable.source.name}' ({publisher}; "
                 f"licence {manifest.license}).", *warnings]
        trust = kind_for(manifest).runs_code
        if trust:
            lines.append(f"It runs its own Python code on your computer (author: "
                         f"{', '.join(a.name for a in manifest.authors)}).")
        lines += [f"{task}: it may be used instead of {', '.join(others)}."
                  for task, others in self.registry.served_by_others(manifest).items()]
        lines.append("Download, trust and install it?" if trust else "Download and install it?")
        exact = f"{manifest.id}@{manifest.version}"
        def answered(yes: bool | None) -> None:
            if yes:
                self._install_indexed(exact, trust)
            else:
                self.status("not installed")

        self.app.push_screen(ConfirmModal("\n".join(lines), yes="Trust and install" if trust else "Install",
                                          no="Cancel"), answered)

    @work(thread=True, exclusive=True, group="install")
    def _install_indexed(self, ref: str, trust: bool) -> None:
        def progress(event: ProgressEvent) -> None:
            percent = event.done * 100 // max(event.total or 0, 1)
            self.app.call_from_thread(self.status, f"downloading {ref}: {percent}%")

        try:
            installed = self.indexes().install(self.registry, ref, trust=trust, progress=progress)
        except Exception as err:
            self.app.call_from_thread(self.status, f"cannot install {ref}: {explained(err)}")
            return
        self.app.call_from_thread(self._installed, installed.result, installed.warnings)

    def _installed(self, result: InstallResult, warnings: list[str]) -> None:
        self.changed = True
        notes = "".join(f"; warning: {w}" for w in [*warnings, *result.warnings])
        self.status(f"installed {result.record.manifest.id} {result.record.manifest.version}{notes}")
        self.query_one("#install-path", Input).value = ""
        self.show_all()

    def action_close(self) -> None:
        self.dismiss(self.changed)
