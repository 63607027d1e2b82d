"""Which of the static findings' lines the run executed (silence is never a pass).

The parent passes the sites of the static analysis' warnings and failures (``path:line``). A
global ``sys.settrace`` function sees every Python call; for each code object it decides once
(cached by the code object's id) whether that code holds one of the sites' lines, and returns a
local tracer only then, so that line events reach Python in those few frames only (the
training loop, a sampling function) and not in the libraries. The local tracer counts the site
lines. The first execution of each line is emitted at once (``line-reached``), the counts at
every optimizer step boundary and at the end (``lines``): a run killed at its time limit still
says what it reached. In a forked DataLoader worker, a line's first execution there is emitted
(counts stay the parent's).

Imports no torch; costs one dictionary look-up per Python call outside the sites' files.
"""

from __future__ import annotations

import os
import sys
import threading


def parse_site(site: str) -> tuple[str, int] | None:
    """``path:line`` as (real path, line); None when it is not one."""
    path, _, line = site.rpartition(":")
    if not path or not line.isdigit():
        return None
    return os.path.realpath(path), int(line)


class Lines:
    def __init__(self, sites: list[str], emit):
        self.emit = emit
        self.wanted: dict[str, dict[int, tuple[str, ...]]] = {}  # real path -> line -> the sites as given
        for site in dict.fromkeys(sites):
            parsed = parse_site(site)
            if parsed is not None:
                by_line = self.wanted.setdefault(parsed[0], {})
                by_line[parsed[1]] = (*by_line.get(parsed[1], ()), site)
        self.counts: dict[str, int] = {}  # site -> times its line started
        self._files: dict[str, dict | None] = {}  # co_filename -> its wanted lines, None when none
        self._decided: dict[int, object] = {}  # id(code) -> local tracer or None
        self._codes: list = []  # the code objects decided on, kept alive so that their ids stay unique
        self._modules: dict[int, bool] = {}  # id(frame.f_globals) -> may hold a site
        self._kept: list = []  # those globals, kept alive so that their ids stay unique
        self._flushed: dict[str, int] = {}
        self.worker = False

    # -- installing ----------------------------------------------------------------------------

    def install(self) -> None:
        """From here on, in this thread and in threads started later (no-op without sites)."""
        if not self.wanted:
            return
        os.register_at_fork(after_in_child=self._forked)
        threading.settrace(self.on_call)
        sys.settrace(self.on_call)

    def _forked(self) -> None:
        self.worker = True
        self.counts = {}

    # -- tracing -------------------------------------------------------------------------------

    def on_call(self, frame, event, arg):
        """The global trace function: called on every Python call (and generator resume). It
        reads ``frame.f_globals`` first: reading ``frame.f_code`` raises an audit event, which
        would call the sandbox's and the CUDA instrument's audit hooks on every call."""
        module = frame.f_globals
        try:
            wanted = self._modules[id(module)]
        except KeyError:
            wanted = self._module(module)
        if not wanted:
            return None
        code = frame.f_code
        try:
            return self._decided[id(code)]
        except KeyError:
            return self._decide(code)

    def _module(self, module: dict) -> bool:
        """Whether code run with these globals may be in a site's file (its ``__file__``; code
        without one is looked at frame by frame)."""
        name = module.get("__file__")
        wanted = not isinstance(name, str) or os.path.realpath(name) in self.wanted
        self._modules[id(module)] = wanted
        self._kept.append(module)  # alive, so that its id is not reused
        return wanted

    def _decide(self, code):
        tracer = None
        name = code.co_filename
        try:
            wanted = self._files[name]
        except KeyError:
            wanted = self._files[name] = self.wanted.get(os.path.realpath(name)) if name[:1] != "<" else None
        if wanted:
            hits = {line: wanted[line] for _, _, line in code.co_lines() if line in wanted}
            if hits:
                tracer = self._local(hits)
        self._decided[id(code)] = tracer
        self._codes.append(code)
        return tracer

    def _local(self, hits: dict[int, tuple[str, ...]]):
        count = self._count

        def local(frame, event, arg):  # a line of the frame's code that is no site: two tests
            if event == "line" and frame.f_lineno in hits:
                for site in hits[frame.f_lineno]:
                    count(site)
            return local

        return local

    def _count(self, site: str) -> None:
        seen = self.counts.get(site, 0)
        self.counts[site] = seen + 1
        if not seen:
            self.emit("line-reached", site=site)

    # -- reporting -----------------------------------------------------------------------------

    def flush(self, step: int | None = None) -> None:
        """The counts so far (cumulative), when they changed since the last flush."""
        if self.wanted and not self.worker and self.counts != self._flushed:
            self._flushed = dict(self.counts)
            self.emit("lines", step=step, counts=self._flushed)
