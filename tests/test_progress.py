import io
import re
import sys

from curation_assets.cli.terminal import TerminalProgress
from curation_assets.core.progress import Progress, Stopwatch, show_progress
from curation_assets.runtime.allocator import keep_frame_buffers
from tests.helpers import modules_loaded_by


class _Tty(io.StringIO):
    def isatty(self):
        return True


def _run(stream, total=40):
    display = TerminalProgress(stream, every_s=0.0 if stream.isatty() else 3600)
    show_progress(display)
    try:
        progress = Progress("cam/a.mp4 frames", total, log=lambda _: None)
        for _ in range(total):
            progress.advance()
        progress.finish()
    finally:
        show_progress(None)
    return stream.getvalue()


def test_a_terminal_gets_a_bar_redrawn_in_place_with_rate_and_time_left():
    out = _run(_Tty())
    frames = out.split("\r\x1b[2K")[1:]
    assert len(frames) == 41  # every update redrawn (no throttle here), then the final line
    assert re.fullmatch(r"cam/a\.mp4 frames \[#{12}\.{12}\] 20/40  [0-9.]+/s  ~[0-9]+ s left", frames[19])
    assert re.fullmatch(r"cam/a\.mp4 frames: 40 in [0-9.]+ s \([0-9.]+/s\)\n", frames[-1])


def test_a_pipe_or_file_gets_plain_lines_not_a_bar():
    out = _run(io.StringIO())
    assert "\r" not in out and "[" not in out
    assert re.fullmatch(r"cam/a\.mp4 frames: 40 in [0-9.]+ s \([0-9.]+/s\)\n", out)  # throttled to the end line


def test_without_a_display_progress_only_logs():
    lines = []
    progress = Progress("x", 3, log=lines.append, every_s=0.0)
    for _ in range(3):
        progress.advance()
    progress.finish()
    assert lines[-1].startswith("x: 3/3 (")


def test_the_stopwatch_adds_up_stages_in_the_order_they_first_ran():
    watch = Stopwatch()
    with watch.stage("decode"):
        pass
    watch.add("metrics", 0.5)
    watch.add("metrics", 0.25)
    assert list(watch.rounded()) == ["decode", "metrics"] and watch.rounded()["metrics"] == 0.75


def test_frame_buffers_are_kept_on_glibc():
    assert keep_frame_buffers() is (sys.platform == "linux")


def test_the_packaged_model_loads_without_importing_timm_or_torchvision():
    code = "from curation_assets.core.embedder import Embedder; Embedder().load()"
    assert modules_loaded_by(code, ("timm", "torchvision", "great_expectations")) == []
