"""The rules watcher on a real folder: reloads once per change, ignores noise, polls where inotify is blind."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.rules import LoadProblem, RuleSet, RulesWatcher, read_rule_files

DEBOUNCE = 0.25


def rule(name: str) -> str:
    return f"name: {name}\nwhen: {{from: '@{name.lower()}.example'}}\n"


class Recorder:
    """Collects on_change calls and lets a test wait for them."""

    def __init__(self) -> None:
        self.calls: list[tuple[RuleSet | None, list[LoadProblem]]] = []
        self.cond = threading.Condition()

    def __call__(self, ruleset: RuleSet | None, problems: list[LoadProblem]) -> None:
        with self.cond:
            self.calls.append((ruleset, problems))
            self.cond.notify_all()

    def wait(self, count: int, timeout: float = 3.0) -> list[tuple[RuleSet | None, list[LoadProblem]]]:
        """Wait until ``count`` calls have come (or fail after ``timeout`` seconds)."""
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.calls) >= count, timeout), f"{len(self.calls)} calls"
            return list(self.calls)

    def names(self, index: int = -1) -> list[str]:
        ruleset = self.calls[index][0]
        assert ruleset is not None, [str(p) for p in self.calls[index][1]]
        return sorted(r.name for r in ruleset.rules)


class CountingWatcher(RulesWatcher):
    """A watcher that counts the nudges its file events give it."""

    nudges = 0

    def nudge(self, now: float) -> None:
        self.nudges += 1
        super().nudge(now)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A rules folder kept in git, with one rule."""
    # .git/ exists before watching starts, as in a real rules repository (and
    # because watchdog's inotify thread warns about nested folders created
    # while it adds watches, which -W error turns into a failure).
    (tmp_path / ".git" / "objects").mkdir(parents=True)
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.yaml").write_text(rule("Alpha"), encoding="utf-8")
    return tmp_path


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def _running(folder: Path, recorder: Recorder, mode: str) -> Iterator[CountingWatcher]:
    w = CountingWatcher(folder, recorder, mode=mode, debounce=DEBOUNCE, poll_interval=0.4)
    w.start()
    yield w
    w.stop()


@pytest.fixture
def watcher(folder: Path, recorder: Recorder) -> Iterator[CountingWatcher]:
    """A watcher in the default mode (native events plus a content poll)."""
    yield from _running(folder, recorder, "auto")


@pytest.fixture(params=["auto", "poll"])
def any_watcher(request: pytest.FixtureRequest, folder: Path, recorder: Recorder) -> Iterator[CountingWatcher]:
    """A watcher in each mode that the events come through."""
    yield from _running(folder, recorder, request.param)


def test_atomic_rename_of_a_new_file_reloads_once(any_watcher: RulesWatcher, folder: Path, recorder: Recorder) -> None:
    tmp = folder / ".b.yaml.tmp"
    tmp.write_text(rule("Beta"), encoding="utf-8")
    start = time.monotonic()
    os.replace(tmp, folder / "b.yaml")
    recorder.wait(1)
    assert time.monotonic() - start < 3.0
    assert recorder.names() == ["Alpha", "Beta"]
    time.sleep(DEBOUNCE * 2)
    assert len(recorder.calls) == 1


@pytest.mark.parametrize("mode", ["auto", "poll"])
def test_a_burst_of_writes_is_one_reload(mode: str, folder: Path, recorder: Recorder) -> None:
    # A longer quiet period than elsewhere, so that a busy test machine pausing
    # the writer cannot split the burst.
    w = RulesWatcher(folder, recorder, mode=mode, debounce=0.6, poll_interval=0.4)
    w.start()
    try:
        for i in range(20):  # like a git checkout: many files, a few milliseconds apart
            (folder / ("sub" if i % 2 else ".") / f"r{i:02d}.yaml").write_text(rule(f"R{i:02d}"), encoding="utf-8")
            time.sleep(0.005)
        recorder.wait(1)
        time.sleep(0.8)
        assert len(recorder.calls) == 1
        assert len(recorder.names()) == 21
    finally:
        w.stop()


def test_a_broken_file_reports_problems(watcher: RulesWatcher, folder: Path, recorder: Recorder) -> None:
    (folder / "bad.yaml").write_text("name: Bad\nwhen: {form: x}\n", encoding="utf-8")
    ruleset, problems = recorder.wait(1)[0]
    assert ruleset is None
    assert [(Path(p.file).name, p.line, p.key) for p in problems] == [("bad.yaml", 2, "when.form")]
    (folder / "bad.yaml").write_text(rule("Fixed"), encoding="utf-8")
    recorder.wait(2)
    assert recorder.names() == ["Alpha", "Fixed"]


def test_deleting_a_file_takes_effect(any_watcher: RulesWatcher, folder: Path, recorder: Recorder) -> None:
    (folder / "b.yaml").write_text(rule("Beta"), encoding="utf-8")
    recorder.wait(1)
    (folder / "a.yaml").unlink()
    recorder.wait(2)
    assert recorder.names() == ["Beta"]


def test_git_and_editor_files_are_ignored(any_watcher: CountingWatcher, folder: Path, recorder: Recorder) -> None:
    for rel in [".git/index", ".git/objects/ab.yaml", ".a.yaml.swp", ".a.yaml.swx", "a.yaml~", ".#a.yaml",
                "4913", "a.yaml.tmp", "notes.txt", "README.md"]:
        (folder / rel).write_text("name: [broken", encoding="utf-8")
    (folder / ".a.yaml.swp").unlink()
    time.sleep(DEBOUNCE * 2 + 0.6)  # the poll observer looks every 0.4 s
    assert recorder.calls == []
    assert any_watcher.nudges == 0


def test_saving_the_same_content_reports_nothing(watcher: RulesWatcher, folder: Path, recorder: Recorder) -> None:
    (folder / "a.yaml").write_text(rule("Alpha"), encoding="utf-8")
    time.sleep(DEBOUNCE * 3)
    assert recorder.calls == []


def test_poll_mode_sees_changes_without_file_events(folder: Path, recorder: Recorder) -> None:
    w = RulesWatcher(folder, recorder, mode="poll", debounce=DEBOUNCE, poll_interval=0.3)
    w.start()
    try:
        assert w._observer is not None and type(w._observer).__name__ == "PollingObserver"
        (folder / "b.yaml").write_text(rule("Beta"), encoding="utf-8")
        recorder.wait(1)
        assert recorder.names() == ["Alpha", "Beta"]
    finally:
        w.stop()


def test_content_poll_catches_what_events_miss(folder: Path, recorder: Recorder) -> None:
    w = CountingWatcher(folder, recorder, mode="auto", debounce=DEBOUNCE, poll_interval=0.3)
    # As on a bind mount whose changes raise no events: the file events never arrive.
    w.concerns = lambda path, is_directory: False  # type: ignore[method-assign]
    w.start()
    try:
        (folder / "b.yaml").write_text(rule("Beta"), encoding="utf-8")
        recorder.wait(1)
        assert recorder.names() == ["Alpha", "Beta"]
    finally:
        w.stop()


def test_start_reports_a_change_since_the_given_digest(folder: Path, recorder: Recorder) -> None:
    digest = read_rule_files(folder).digest
    (folder / "b.yaml").write_text(rule("Beta"), encoding="utf-8")
    w = RulesWatcher(folder, recorder, mode="inotify", debounce=DEBOUNCE, initial_digest=digest)
    w.start()
    try:
        recorder.wait(1)
        assert recorder.names() == ["Alpha", "Beta"]
        assert w.digest == read_rule_files(folder).digest
    finally:
        w.stop()


def test_a_failing_callback_does_not_stop_the_watching(folder: Path) -> None:
    seen: list[RuleSet | None] = []

    def on_change(ruleset: RuleSet | None, problems: list[LoadProblem]) -> None:
        seen.append(ruleset)
        if len(seen) == 1:
            raise RuntimeError("callback failed")

    w = RulesWatcher(folder, on_change, mode="inotify", debounce=DEBOUNCE)
    w.start()
    try:
        (folder / "b.yaml").write_text(rule("Beta"), encoding="utf-8")
        deadline = time.monotonic() + 3
        while len(seen) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        (folder / "c.yaml").write_text(rule("Gamma"), encoding="utf-8")
        while len(seen) < 2 and time.monotonic() < deadline + 3:
            time.sleep(0.05)
        assert len(seen) == 2
    finally:
        start = time.monotonic()
        w.stop()
        assert time.monotonic() - start < 2


def test_step_debounces_by_the_clock_it_is_given(folder: Path, recorder: Recorder) -> None:
    w = RulesWatcher(folder, recorder, mode="inotify", debounce=1.0)
    (folder / "b.yaml").write_text(rule("Beta"), encoding="utf-8")
    w.nudge(100.0)
    assert w.step(100.5) == pytest.approx(0.5)
    assert recorder.calls == []
    w.nudge(100.9)  # a later event restarts the quiet period
    assert w.step(101.5) == pytest.approx(0.4)
    assert recorder.calls == []
    w.step(101.9)
    assert len(recorder.calls) == 1 and recorder.names() == ["Alpha", "Beta"]
    assert w.step(102.0) == 3600.0  # nothing pending, nothing to poll


def test_mode_is_checked(folder: Path, recorder: Recorder) -> None:
    with pytest.raises(ValueError, match="mode must be one of auto, inotify, poll"):
        RulesWatcher(folder, recorder, mode="fast")


def test_polling_finds_a_change_and_does_not_postpone_the_reload(folder: Path, recorder: Recorder) -> None:
    w = RulesWatcher(folder, recorder, mode="poll", debounce=1.0, poll_interval=0.3)
    assert w.step(10.0) == pytest.approx(0.3)  # the first poll finds content not yet reported
    for now in (10.3, 10.6, 10.9):
        w.step(now)
        assert recorder.calls == []
    w.step(11.0)
    assert len(recorder.calls) == 1
