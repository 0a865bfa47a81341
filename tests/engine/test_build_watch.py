"""Build watchers: told of the engine cache's lines and a build's steps while they watch, and only then."""

from __future__ import annotations

import threading

import pytest

from unetrt.build_watch import (
    BuildStep,
    build_watchers,
    check_before_build,
    checking_before_builds,
    tell_note,
    tell_step,
    watching_builds,
)


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


def test_a_check_before_builds_is_the_thread_s_own() -> None:
    """Two streams open their models on their own threads: one's camera that can never open must not stop the other's
    build; and the check goes with its block."""

    def refuse() -> None:
        raise ConnectionError("camera 1 is not connected")

    outcome: list[BaseException | None] = []

    def other_thread() -> None:
        try:
            check_before_build()
            outcome.append(None)
        except BaseException as exc:  # handed to the test's thread
            outcome.append(exc)

    with checking_before_builds(refuse):
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join(30)
        with pytest.raises(ConnectionError, match="camera 1"):
            check_before_build()
    check_before_build()
    assert outcome == [None]



def test_a_watcher_hears_its_own_thread_s_builds_and_their_steps_from_the_builder_s_threads() -> None:
    """Two streams open their models on their own threads: each page hears its own build, not the other's; the steps
    come from TensorRT's threads, which tell the watchers the build took as it began."""
    mine, other = Recorder(), Recorder()
    step = BuildStep("Tactic selection", 1, 5, 0.5)

    def other_stream() -> None:
        with watching_builds(other):
            tell_note("building a TensorRT engine for isbi FP16")

    with watching_builds(mine):
        thread = threading.Thread(target=other_stream)
        thread.start()
        thread.join(30)
        tell_note("building a TensorRT engine for camvid FP16")
        taken = build_watchers()
        builder = threading.Thread(target=tell_step, args=(step, taken))
        builder.start()
        builder.join(30)
    assert mine.news == ["building a TensorRT engine for camvid FP16", step]
    assert other.news == ["building a TensorRT engine for isbi FP16"]
