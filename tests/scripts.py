"""Writing the small scripts that the doctor's tests run or read."""

import textwrap


def write(folder, name, text):
    """``text`` dedented into ``folder/name``; the path."""
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path
