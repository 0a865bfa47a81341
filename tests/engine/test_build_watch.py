"""Build watchers: told of the engine cache's lines and a build's steps while they watch, and only then."""

from __future__ import annotations

import pytest

from unetrt.build_watch import BuildStep, tell_note, tell_step, watching_builds


class Recorder:
    def __init__(self) -> None:
        self.news: list[str | BuildStep] = []

    def build_note(self, text: str) -> None:
        self.news.append(text)

    def build_step(self, step: BuildStep) -> None:
        self.news.append(step)


def test_a_watcher_hears_only_while_it_watches_and_is_let_go_on_an_error() -> None:
    """A stream watches while its model opens; a model that fails to open (or Ctrl-C) must not leave its page
    subscribed to every later build of the process."""
    recorder = Recorder()
    tell_note("before")
    step = BuildStep("Tactic selection", 3, 9, 1.5)
    with watching_builds(recorder):
        tell_note("building a TensorRT engine for camvid FP16")
        tell_step(step)
    with pytest.raises(KeyboardInterrupt), watching_builds(recorder):
        raise KeyboardInterrupt
    tell_note("after")
    assert recorder.news == ["building a TensorRT engine for camvid FP16", step]


def test_the_engine_cache_lines_reach_the_watchers(capsys: pytest.CaptureFixture[str]) -> None:
    from unetrt import plan_cache

    recorder = Recorder()
    with watching_builds(recorder):
        plan_cache._announce("cached /engines/camvid.plan")
    assert recorder.news == ["cached /engines/camvid.plan"]
    assert capsys.readouterr().err == "unetrt: cached /engines/camvid.plan\n"
