"""Which frames are the user's, and how a place is written (``path:line``).

Shared by the child's instruments (they name the user's line that did something, and the
library frame that did it on the user's behalf) and by nothing that imports torch.
"""

from __future__ import annotations

import linecache
import os
import sys
import sysconfig

_LIBRARY_MARKERS = ("site-packages", "dist-packages", f"{os.sep}ohlora_cli{os.sep}doctor{os.sep}observed{os.sep}")
# torch's dispatch to torch-function modes (``handle_torch_function``): plumbing between a call and
# the mode, never what did something on the user's behalf.
DISPATCH = os.path.join("torch", "overrides.py")


def past_dispatch(frame):
    """The frame that called a torch function dispatched through ``torch/overrides.py``: past
    ``handle_torch_function`` and the overridable function that called it (``F.mse_loss``, the
    wrapper of ``Tensor.__rsub__``). ``frame`` itself when it is not the dispatch's."""
    if not frame.f_code.co_filename.endswith(DISPATCH):
        return frame
    while frame.f_back is not None and frame.f_code.co_filename.endswith(DISPATCH):
        frame = frame.f_back
    return frame.f_back or frame


class UserFiles:
    """Files under the project roots (the script's folder, the working folder) that are not an
    installed library, nor the doctor's own code. Answers are cached per file name."""

    def __init__(self, roots: list[str], cwd: str):
        self.roots = [os.path.join(os.path.realpath(r), "") for r in roots]
        self.cwd = os.path.realpath(cwd)
        stdlib = {sysconfig.get_paths().get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
        self.libraries = [os.path.join(os.path.realpath(p), "") for p in stdlib if p]
        self._cache: dict[str, bool] = {}

    def __contains__(self, filename: str) -> bool:
        known = self._cache.get(filename)
        if known is None:
            known = self._cache[filename] = self._is_user(filename)
        return known

    def _is_user(self, filename: str) -> bool:
        if not filename or filename.startswith("<"):
            return False
        path = os.path.realpath(filename)
        if any(marker in path for marker in _LIBRARY_MARKERS):
            return False
        if any(path.startswith(lib) for lib in self.libraries):
            return False
        return any(path.startswith(root) for root in self.roots)

    def place(self, filename: str, line: int) -> str:
        """``path:line``, the path relative to the working folder when it is inside it."""
        path = os.path.realpath(filename)
        if path.startswith(os.path.join(self.cwd, "")):
            path = os.path.relpath(path, self.cwd)
        return f"{path}:{line}"

    def owns(self, frame) -> bool:
        """Whether ``frame`` runs the user's code. Its globals' ``__file__`` is read first: on
        Python 3.11 reading ``frame.f_code`` raises an audit event (every audit hook runs), so a
        library frame is told apart without it; ``f_code`` is read only when ``__file__`` is a
        user file or missing (code run with globals of its own, ``exec``)."""
        module = frame.f_globals.get("__file__")
        if module.__class__ is str and module not in self:
            return False
        return frame.f_code.co_filename in self

    def caller_line(self, depth: int = 1):
        """``(filename, line)`` of the frame ``depth`` levels above the caller when it runs the
        user's code, else None: what the instruments tag the user's ops and calls with."""
        frame = sys._getframe(depth + 1)
        module = frame.f_globals.get("__file__")
        if module.__class__ is str and module.endswith(DISPATCH):  # F.mse_loss, Tensor.__rsub__
            frame = past_dispatch(frame)
        if not self.owns(frame):
            return None
        return frame.f_code.co_filename, frame.f_lineno

    def _walk(self, frame):
        """(the innermost user frame at or above ``frame``, the innermost library frame below it)."""
        via = None
        while frame is not None and not self.owns(frame):
            if via is None:
                name = frame.f_code.co_filename
                if "ohlora_cli" not in name and not name.startswith("<") and not name.endswith(DISPATCH):
                    via = frame
            frame = frame.f_back
        return frame, via

    def key(self, frame) -> tuple:
        """What ``site(frame)`` depends on, unformatted (code objects and lines): a record made
        once per place tests it before building the site (paths, the source line)."""
        user, via = self._walk(frame)
        return (user and user.f_code, user and user.f_lineno, via and via.f_code, via and via.f_lineno)

    def site(self, frame=None, skip: int = 1) -> dict:
        """Where the user is now: ``{"where", "code", "function", "via"}``. ``via`` names the
        innermost library frame between here and the user's line (what did it on their behalf)."""
        frame, via = self._walk(frame or sys._getframe(skip + 1))
        out: dict = {"where": None, "code": None, "function": None, "via": None}
        if frame is not None:
            out["where"] = self.place(frame.f_code.co_filename, frame.f_lineno)
            out["code"] = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip() or None
            out["function"] = frame.f_code.co_name
        if via is not None:
            out["via"] = f"{_short(via.f_code.co_filename)}:{via.f_lineno} ({via.f_code.co_name})"
        return out


def _short(filename: str) -> str:
    """A library file as ``package/module.py`` (the part after site-packages)."""
    for marker in ("site-packages" + os.sep, "dist-packages" + os.sep):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return os.path.basename(filename)
