"""Keeping the user's files safe while their script runs (child side).

Two layers, in the child process:

1. Known writers are redirected into ``SANDBOX/files/<absolute path>``, keeping the path so the
   script can read back what it wrote: ``open``/``io.open`` in a write mode, ``os.mkdir`` (and so
   ``os.makedirs``), ``torch.save`` and ``safetensors.torch.save_file`` (what ``save_pretrained``
   uses) — the last two write from native code, which the audit hook cannot see.
2. Fail closed: an audit hook raises PermissionError for any other write, delete, rename,
   chmod or rmtree outside the sandbox, the temp folder and the caches, and for a connection to
   a non-loopback address. The project's folders are protected even when they are in the temp
   folder.

Both are recorded as events with the user's line. Native writers other than the two patched
ones are not seen (see docs/doctor-run.md).
"""

from __future__ import annotations

import builtins
import io
import os
import tempfile

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_PATH_EVENTS = {  # audit event -> indexes of the path arguments it changes
    "os.remove": (0,), "os.rmdir": (0,), "os.rename": (0, 1), "os.mkdir": (0,), "os.chmod": (0,),
    "os.chown": (0,), "os.truncate": (0,), "os.link": (1,), "os.symlink": (1,), "os.utime": (0,),
    "shutil.rmtree": (0,), "shutil.copyfile": (1,), "shutil.copytree": (1,), "shutil.chown": (0,),
    "os.removexattr": (0,), "os.setxattr": (0,),
}
# Every event the audit hook looks at: it sees every audit event of the process (a frame's
# ``f_code`` read, each ``sys._getframe``), and returns on the others after this one test.
_WATCHED = frozenset({"open", "socket.connect", *_PATH_EVENTS})


def free_folders() -> list[str]:
    """Where the run may write for real: the temp folder and the caches."""
    folders = [tempfile.gettempdir(), os.path.join(os.path.expanduser("~"), ".cache")]
    for var in ("XDG_CACHE_HOME", "HF_HOME", "TORCH_HOME", "TRITON_CACHE_DIR", "MPLCONFIGDIR"):
        if os.environ.get(var):
            folders.append(os.environ[var])
    return folders


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(os.path.join(folder, ""))


class Guard:
    def __init__(self, sandbox: str, protected: list[str], emit, user):
        self.sandbox = os.path.realpath(sandbox)
        self.files = os.path.join(self.sandbox, "files")
        self.protected = [os.path.realpath(p) for p in protected]
        self.allowed = [os.path.realpath(p) for p in [*free_folders(), "/dev", "/proc/self"]]
        self.emit = emit
        self.user = user
        self.active = False
        self.redirected: set = set()

    # -- what may be touched ------------------------------------------------------------------

    def free(self, path) -> bool:
        """True when writing ``path`` cannot harm the user's files."""
        try:
            real = os.path.realpath(os.fsdecode(path))
        except (TypeError, ValueError):
            return True  # a file descriptor: opened earlier, checked then
        if _inside(real, self.sandbox):
            return True
        if any(_inside(real, p) for p in self.protected):
            return False
        return any(_inside(real, p) for p in self.allowed)

    def mirror(self, path) -> str:
        real = os.path.abspath(os.fsdecode(path))
        return os.path.join(self.files, real.lstrip(os.sep))

    # -- layer 1: redirect known writers ----------------------------------------------------------

    def redirect(self, path, what: str) -> str:
        """The sandbox path to write instead of ``path`` (its folder created), recorded."""
        target = self.mirror(path)
        was = self.active
        self.active = False
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
        finally:
            self.active = was
        site = self.user.site()
        key = (target, what, site["where"])
        if key not in self.redirected:
            self.redirected.add(key)
            self.emit("write-redirected", path=os.path.abspath(os.fsdecode(path)), what=what, **site)
        return target

    def install(self) -> None:
        real_open, real_mkdir = builtins.open, os.mkdir
        guard = self

        def open_(file, mode="r", *args, **kwargs):
            if isinstance(file, (str, bytes, os.PathLike)) and guard.active:
                writing = any(c in mode for c in "wax+")
                if writing and not guard.free(file):
                    file = guard.redirect(file, f"open(mode={mode!r})")
                elif not writing and not guard.free(file) and os.path.exists(guard.mirror(file)):
                    file = guard.mirror(file)  # read back what the run wrote
            return real_open(file, mode, *args, **kwargs)

        def mkdir(path, mode=0o777, *, dir_fd=None):
            if dir_fd is None and guard.active and not guard.free(path):
                if os.path.isdir(path):
                    raise FileExistsError(17, "File exists", os.fsdecode(path))
                target = guard.redirect(path, "mkdir")
                was, guard.active = guard.active, False
                try:
                    os.makedirs(target, exist_ok=True)
                finally:
                    guard.active = was
                return None
            return real_mkdir(path, mode, dir_fd=dir_fd)

        builtins.open = io.open = open_
        os.mkdir = mkdir
        self._patch_moves()
        import sys

        sys.addaudithook(self.audit)
        self.active = True

    def _patch_moves(self) -> None:
        """Removing, renaming and rmtree-ing what the run itself wrote act on the sandbox copy
        (an atomic save writes a temporary file, then renames it); anything else reaches the
        audit hook, which blocks it outside the free folders."""
        import shutil

        guard = self

        def on_mirror(real, count: int):
            def call(*args, **kwargs):
                paths = args[:count]
                if guard.active and paths and all(isinstance(p, (str, os.PathLike)) for p in paths) \
                        and not guard.free(paths[0]) and os.path.lexists(guard.mirror(paths[0])):
                    mirrored = [guard.mirror(p) if not guard.free(p) else p for p in paths]
                    guard.emit("write-redirected", path=os.path.abspath(os.fsdecode(paths[0])),
                               what=real.__name__, **guard.user.site())
                    guard.active = False  # every path is in the sandbox now (rmtree works relative to fds)
                    try:
                        return real(*mirrored, *args[count:], **kwargs)
                    finally:
                        guard.active = True
                return real(*args, **kwargs)

            call.__wrapped__ = real
            return call

        os.remove = on_mirror(os.remove, 1)
        os.unlink = on_mirror(os.unlink, 1)
        os.rename = on_mirror(os.rename, 2)
        os.replace = on_mirror(os.replace, 2)
        shutil.rmtree = on_mirror(shutil.rmtree, 1)

    def patch_native_writers(self) -> None:
        """torch.save and safetensors' save_file write from C++/Rust: redirect their paths."""
        import torch

        torch.save = self._wrap_saver(torch.save, "torch.save", 1)
        try:
            import safetensors.torch as st
        except ImportError:
            return
        st.save_file = self._wrap_saver(st.save_file, "safetensors save_file", 1)

    def _wrap_saver(self, saver, what: str, index: int):
        guard = self

        def save(*args, **kwargs):
            args = list(args)
            key = "f" if what == "torch.save" else "filename"
            target = args[index] if len(args) > index else kwargs.get(key)
            if isinstance(target, (str, os.PathLike)) and guard.active and not guard.free(target):
                target = guard.redirect(target, what)
                if len(args) > index:
                    args[index] = target
                else:
                    kwargs[key] = target
            return saver(*args, **kwargs)

        save.__wrapped__ = saver
        return save

    # -- layer 2: block the rest -------------------------------------------------------------------

    def audit(self, event: str, args) -> None:
        if event not in _WATCHED or not self.active:
            return
        if event == "open":
            path, mode, flags = args
            if isinstance(path, int) or path is None:
                return
            writing = (mode is not None and any(c in mode for c in "wax+")) or (
                mode is None and isinstance(flags, int) and flags & _WRITE_FLAGS)
            if writing and not self.free(path):
                self._block(event, path)
        elif event in _PATH_EVENTS:
            for i in _PATH_EVENTS[event]:
                if i < len(args) and isinstance(args[i], (str, bytes, os.PathLike)) and not self.free(args[i]):
                    self._block(event, args[i])
        elif event == "socket.connect":
            address = args[1]
            host = address[0] if isinstance(address, tuple) and address else None
            if isinstance(host, str) and host not in ("127.0.0.1", "::1", "localhost", "0.0.0.0"):
                self._block(event, f"{host}:{address[1]}")

    def _block(self, event: str, target) -> None:
        self.active = False  # the recording itself must not be guarded
        try:
            self.emit("write-blocked", op=event, path=os.fsdecode(target) if not isinstance(target, str) else target,
                      **self.user.site())
        finally:
            self.active = True
        raise PermissionError(13, f"ohlora doctor --run blocked {event} outside its sandbox", str(target))
