"""Optimizer steps run without the child's torch-function mode.

An optimizer's step is not the user's computation, and it is many small ops (Adam's foreach
updates, a hundred per step): passing each through the mode's Python ``__torch_function__``
costs more than the ops. Every optimizer class's ``step`` (the one ``torch.optim`` wraps with
its pre and post hooks) is wrapped once more: the mode is taken off the torch-function stack
for the whole call (the hooks, the census in the step post-hook included) and put back in a
``finally``, so that a step that raises, or the ``StopRun`` raised from the step hook, leaves the
stack as it found it. A step inside another step (an optimizer that steps an inner one) finds
the mode already off and leaves it so; a step run while another mode sits above ours (or while
ours is running its own ``__torch_function__``, which takes it off the stack) does not pop it:
above another mode the observer is paused instead.

Classes are wrapped where ``torch.optim`` hooks them (``Optimizer._patch_step_function``, run
by each optimizer's ``__init__``) and, at install, every class already hooked.
"""

from __future__ import annotations

import functools

import torch

_MARK = "_ohlora_mode_off"


class ModeOff:
    def __init__(self, mode):
        self.mode = mode

    # -- the stack ---------------------------------------------------------------------------

    def off(self):
        """Take the mode off for a step: "popped", "paused" (another mode above it), or None
        (it is not on this thread's stack)."""
        size = torch._C._len_torch_function_stack()
        if not size:
            return None
        if torch._C._get_function_stack_at(size - 1) is self.mode:
            torch._C._pop_torch_function_stack()
            return "popped"
        if any(torch._C._get_function_stack_at(i) is self.mode for i in range(size - 1)) and not self.mode.paused:
            self.mode.paused = True
            return "paused"
        return None

    def on(self, how) -> None:
        """Undo what ``off`` returned."""
        if how == "popped":
            torch._C._push_on_torch_function_stack(self.mode)
        elif how == "paused":
            self.mode.paused = False

    # -- the optimizers ----------------------------------------------------------------------

    def wrap(self, cls) -> None:
        """Wrap ``cls.step`` (hooked by torch.optim) once; a subclass inherits its base's."""
        hooked = cls.step
        if getattr(hooked, _MARK, False) or not getattr(hooked, "hooked", False):
            return
        guard = self

        @functools.wraps(hooked)  # keeps ``hooked``: torch.optim does not wrap it again
        def step(*args, **kwargs):
            how = guard.off()
            try:
                return hooked(*args, **kwargs)
            finally:
                guard.on(how)

        setattr(step, _MARK, True)
        cls.step = step

    def install(self) -> None:
        from torch.optim import Optimizer

        real_patch = Optimizer._patch_step_function
        guard = self

        def patch_step_function(optimizer) -> None:
            real_patch(optimizer)
            guard.wrap(type(optimizer))

        Optimizer._patch_step_function = patch_step_function
        pending = list(Optimizer.__subclasses__())
        while pending:
            cls = pending.pop()
            pending += cls.__subclasses__()
            if "step" in vars(cls):
                self.wrap(cls)
