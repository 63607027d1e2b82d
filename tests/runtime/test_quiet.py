"""Library output during a command goes to the log, ohlora's own output to the terminal (runtime/quiet.py).

Each case runs in a fresh interpreter, as a command does: pytest's own capture of warnings and
log records would otherwise stand between the libraries and the streams under test."""

import subprocess
import sys
import textwrap

from bounds import HANG_S

CHATTER = """
import logging, sys, warnings
from pathlib import Path
from tqdm import tqdm
from ohlora_cli.console import info, say
from ohlora_cli.runtime import quiet

def chatter():  # what libraries do: a tqdm bar, a Python warning, a log record, a print
    for _ in tqdm(range(3), desc="Tokenizing train dataset"):
        pass
    warnings.warn("a library's deprecation warning", UserWarning, stacklevel=1)
    logging.getLogger("some.library").warning("a library's log record")
    print("a library's banner")
"""
LIBRARY_TEXT = ("Tokenizing train dataset", "deprecation warning", "a library's log record", "a library's banner")


def command(tmp_path, body: str) -> subprocess.CompletedProcess:
    script = CHATTER + textwrap.dedent(body).replace("LOG", repr(str(tmp_path / "train.log")))
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=HANG_S)


def test_library_output_goes_to_the_log_and_ours_to_the_terminal(tmp_path):
    done = command(tmp_path, """
        with quiet.library_output(verbose=False):
            chatter()                # before the run has its output_dir: held ...
            info("ohlora: a line of ours")
            quiet.log_to(Path(LOG))  # ... then written to the log
            chatter()
            say("ohlora: a result")
        """)
    assert done.returncode == 0, done.stderr
    assert "ohlora: a line of ours" in done.stderr and "ohlora: a result" in done.stdout
    assert f"library messages: {tmp_path / 'train.log'}" in done.stderr
    log = (tmp_path / "train.log").read_text(encoding="utf-8")
    for text in LIBRARY_TEXT:
        assert text not in done.stdout + done.stderr
        assert text in log, (text, log)
    assert log.count("a library's banner") == 2  # the held output and the later one
    assert "3/3" in log  # the bar's final state


def test_verbose_shows_it_live_and_still_logs(tmp_path):
    done = command(tmp_path, """
        with quiet.library_output(verbose=True):
            quiet.log_to(Path(LOG))
            chatter()
        """)
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "train.log").read_text(encoding="utf-8")
    for text in LIBRARY_TEXT:
        assert text in done.stderr and text in log


def test_output_that_never_reaches_a_log_is_dropped_with_a_note(tmp_path):
    done = command(tmp_path, """
        with quiet.library_output(verbose=False):  # a dry run, ohlora doctor: nothing is written
            chatter()
        """)
    assert done.returncode == 0, done.stderr
    assert not any(text in done.stdout + done.stderr for text in LIBRARY_TEXT)
    assert "library output not shown; --verbose shows it" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_handler_made_inside_the_window_writes_to_the_terminal_after_it(tmp_path):
    done = command(tmp_path, """
        with quiet.library_output(verbose=False):
            quiet.log_to(Path(LOG))
            handler = logging.StreamHandler()  # as transformers makes its own when first imported
            logging.getLogger("late").addHandler(handler)
            logging.getLogger("late").warning("inside the window")
        logging.getLogger("late").warning("after the window")
        """)
    assert done.returncode == 0, done.stderr
    assert "after the window" in done.stderr and "inside the window" not in done.stderr
    assert "inside the window" in (tmp_path / "train.log").read_text(encoding="utf-8")
