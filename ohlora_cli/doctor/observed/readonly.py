"""The third layer around the observed run: a read-only view of the filesystem (Linux).

Where the kernel lets an unprivileged user create user and mount namespaces (util-linux's
``unshare``), the child starts inside new ones, and before the script runs this module makes every
mount read-only except the sandbox, the temp folder and the caches; the project's folders are
read-only even when they lie in the temp folder. What the audit hook cannot see (a subprocess, a
C extension writing a file) then fails with EROFS instead of changing the user's files.

The view is set up in a first user namespace (root there, so it may remount), then the process
enters a second, nested one that maps the user back to their own id: the script runs without the
capability to remount anything, under the user's uid.

``python -m ohlora_cli.doctor.observed.readonly SPEC.json`` (started under ``unshare``): sets up
the view, writes ``SPEC["report"]`` (what was made read-only, what failed), then execs
``SPEC["command"]``.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND = 32, 1024, 2048, 4096
MS_REC, MS_RELATIME, MS_STRICTATIME = 16384, 1 << 21, 1 << 24
CLONE_NEWUSER = 0x10000000
_KEPT = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
         "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME, "strictatime": MS_STRICTATIME}
_KERNEL = ("/proc", "/sys", "/dev")  # pseudo filesystems: left as they are

UNSHARE = ["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private"]


def available() -> bool:
    """Whether this machine lets this user enter new user and mount namespaces (a real probe)."""
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run([*UNSHARE, "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def wrap(spec_path: str) -> list[str]:
    """The command that starts ``spec_path``'s command inside the read-only view it describes."""
    return [*UNSHARE, sys.executable, "-m", "ohlora_cli.doctor.observed.readonly", spec_path]


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(os.path.join(folder, ""))


def _mounts() -> list[tuple[str, int]]:
    """(mount point, flags a remount must keep) for every mount, outermost first."""
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")  # \040 for a space
            flags = sum(bit for name, bit in _KEPT.items() if name in fields[5].split(","))
            found.append((point, flags))
    return found


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
    return libc


def _mount(libc, source: str | None, target: str, flags: int) -> str | None:
    """One mount(2) call; the error's text, or None."""
    if libc.mount(source.encode() if source else None, target.encode(), None, flags, None) == 0:
        return None
    return os.strerror(ctypes.get_errno())


def _bind(libc, folder: str, read_only: bool) -> str | None:
    error = _mount(libc, folder, folder, MS_BIND | MS_REC)
    if error or not read_only:
        return error
    flags = dict(_mounts()).get(folder, 0)
    return _mount(libc, None, folder, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)


def make_view(writable: list[str], protected: list[str], sandbox: str) -> dict:
    """Every mount read-only but ``writable`` (and the kernel's pseudo filesystems); ``protected``
    folders read-only even inside a writable one; ``sandbox`` writable even inside a protected one."""
    libc = _libc()
    failed: dict[str, str] = {}
    writable = [w for w in dict.fromkeys(os.path.realpath(p) for p in writable) if os.path.isdir(w)]
    for folder in writable:
        if error := _bind(libc, folder, read_only=False):
            failed[folder] = error
    read_only = []
    for point, flags in _mounts():
        if any(_inside(point, k) for k in _KERNEL) or any(_inside(point, w) for w in writable):
            continue
        if error := _mount(libc, None, point, MS_REMOUNT | MS_BIND | MS_RDONLY | flags):
            failed[point] = error
        else:
            read_only.append(point)
    for folder in dict.fromkeys(os.path.realpath(p) for p in protected):
        if os.path.isdir(folder) and any(_inside(folder, w) for w in writable):
            if error := _bind(libc, folder, read_only=True):
                failed[folder] = error
            else:
                read_only.append(folder)
    sandbox = os.path.realpath(sandbox)
    if any(_inside(sandbox, p) for p in read_only if p != "/") and (error := _bind(libc, sandbox, False)):
        failed[sandbox] = error
    return {"read_only": sorted(set(read_only)), "writable": writable, "failed": failed}


def _back_to_user(uid: int, gid: int) -> None:
    """Enter a nested user namespace that maps the user back to their own ids: no capability over
    the mounts above (they belong to the first namespace), the user's uid for the files made."""
    libc = _libc()
    if libc.unshare(CLONE_NEWUSER) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUSER)")
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} 0 1"), ("gid_map", f"{gid} 0 1")):
        with open(f"/proc/self/{name}", "w", encoding="ascii") as f:
            f.write(text)


def main(spec_path: str) -> None:
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    try:
        view = make_view(spec["writable"], spec["protected"], spec["sandbox"])
        # The working folder is still the one on the old mount, read-only now: enter it again by
        # its path so that relative paths ("../results") reach the mounts of the view.
        os.chdir(os.getcwd())
        _back_to_user(spec["uid"], spec["gid"])
    except OSError as exc:  # the view is an extra layer: the audit hook still guards the run
        view = {"read_only": [], "writable": [], "failed": {"setup": str(exc)}}
    with open(spec["report"], "w", encoding="utf-8") as f:
        json.dump(view, f)
    command = spec["command"]
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1])
