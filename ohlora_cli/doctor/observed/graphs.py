"""Autograd graphs in the child: who built them, what they save, which survive a step.

- ``nn.Module.__call__`` is wrapped: a top-level call from a user line (with autograd on) tags
  its output's node with that line (``Node.metadata``), counts the call, and hooks the node to
  learn whether backward ever reaches it.
- A ``saved_tensors_hooks`` ledger keeps a weak record of every tensor saved for backward (the
  pack stores a detached tensor: returning the tensor itself makes an uncollectable cycle),
  with the user line being run and the step it was saved in.
- At each optimizer step boundary, ``census(k)`` finds every live tensor with a graph, walks
  the graphs, marks nodes first seen now (``metadata["ohlora_first"]``), and counts, per user
  line that built them, the nodes and saved bytes that survived an earlier boundary, and the
  names that hold them.
"""

from __future__ import annotations

import gc
import linecache
import sys
import weakref

import torch

_NODE_LIMIT = 200_000


class Saved:
    __slots__ = ("tensor", "step", "site", "used", "__weakref__")

    def __init__(self, tensor, step, site):
        self.tensor, self.step, self.site, self.used = tensor, step, site, False


class Graphs:
    def __init__(self, emit, user):
        self.emit = emit
        self.user = user
        self.depth = 0  # nested module calls
        self.site = None  # (filename, line) of the user call or op being run, autograd on
        self.step = 0
        self.calls: dict = {}  # site -> {"calls", "backward", "saved"}
        self.ledger: weakref.WeakSet = weakref.WeakSet()
        self.series: dict = {}  # site -> list of (step, nodes, bytes)
        self.pending = 0  # the batch of the top-level forward being run
        self.examples = 0  # examples through top-level forwards that backward reached, this step

    # -- instruments --------------------------------------------------------------------------

    def install(self) -> None:
        real_call = torch.nn.Module.__call__
        graphs = self

        def call(module, *args, **kwargs):
            if graphs.depth:
                graphs.depth += 1
                try:
                    return real_call(module, *args, **kwargs)
                finally:
                    graphs.depth -= 1
            caller = sys._getframe(1)
            if torch.is_grad_enabled() and next(module.parameters(), None) is not None:
                graphs.count_examples(args, kwargs)  # a model, not a parameter-free loss module
            site = None
            if caller.f_code.co_filename in graphs.user and torch.is_grad_enabled():
                site = (caller.f_code.co_filename, caller.f_lineno)
            previous, graphs.site = graphs.site, site or graphs.site
            graphs.depth += 1
            try:
                out = real_call(module, *args, **kwargs)
            finally:
                graphs.depth -= 1
                graphs.site = previous
            if site is not None:
                graphs.called(out, site)
            if graphs.pending:
                graphs.hook_examples(out)
            return out

        torch.nn.Module.__call__ = call
        hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)
        hooks.__enter__()  # for the whole run; never left
        self._hooks = hooks

    def pack(self, tensor):
        if isinstance(tensor, torch.nn.Parameter) or isinstance(tensor._base, torch.nn.Parameter):
            return tensor
        saved = Saved(tensor.detach(), self.step, self.site)
        self.ledger.add(saved)
        if self.site is not None:
            stats = self.calls.get(self.site)
            if stats is not None and self.depth:
                stats["saved"] += tensor.numel() * tensor.element_size()
        return saved

    @staticmethod
    def unpack(saved):
        if type(saved) is Saved:
            saved.used = True
            return saved.tensor
        return saved

    def count_examples(self, args, kwargs) -> None:
        """The batch of a top-level forward; added to the step's examples once backward reaches
        its output (a training forward, not an evaluation)."""
        first = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor) and a.dim()), None)
        if first is not None:
            self.pending = first.shape[0]

    def tag(self, node, site) -> None:
        metadata = node.metadata
        if "ohlora_site" not in metadata:
            metadata["ohlora_site"] = site

    def hook_examples(self, out) -> None:
        batch, self.pending = self.pending, 0
        tensor = _first_graph_tensor(out)
        if tensor is None:
            return

        def reached(_grad_outputs):
            self.examples += batch

        tensor.grad_fn.register_prehook(reached)

    def called(self, out, site) -> None:
        """A top-level module call from a user line has returned ``out``."""
        stats = self.calls.setdefault(site, {"calls": 0, "backward": 0, "saved": 0})
        tensor = _first_graph_tensor(out)
        if tensor is None:
            return
        stats["calls"] += 1
        node = tensor.grad_fn
        self.tag(node, site)

        def reached(_grad_outputs, stats=stats):
            stats["backward"] += 1

        node.register_prehook(reached)

    # -- the census at a step boundary --------------------------------------------------------

    def census(self, k: int) -> None:
        self.step = k
        gc.collect(1)
        tensor = torch.Tensor  # an exact type test: parameters are leaves, never roots
        roots = [o for o in gc.get_objects() if type(o) is tensor and o.grad_fn is not None]
        nodes: dict = {}  # site -> surviving nodes
        root_site: dict = {}  # id(root tensor) -> site whose survivors it holds
        seen: set = set()
        keep = []
        roots.sort(key=lambda t: "ohlora_site" not in t.grad_fn.metadata)
        for root in roots:
            site = root.grad_fn.metadata.get("ohlora_site")
            count, reached = self._walk(root.grad_fn, k, seen, keep)
            site = site or reached  # an untagged root (built by library code): the user line it reaches
            if count:
                nodes[site] = nodes.get(site, 0) + count
                root_site[id(root)] = site
        saved, held = self._saved_bytes(k)
        holders = self._holders(root_site) if root_site else {}
        report = {}
        for site in set(nodes) | set(saved) | set(held) | {s for s in self.series}:
            entry = (k, nodes.get(site, 0), saved.get(site, 0))
            self.series.setdefault(site, []).append(entry)
            report[self._place(site)] = {"nodes": entry[1], "bytes": entry[2], "held": held.get(site, 0),
                                         "holders": holders.get(site, [])}
        calls = {self._place(s): dict(v) for s, v in self.calls.items()}
        self.emit("census", step=k, sites=report, calls=calls, code=self._codes(), examples=self.examples)
        self.examples = 0

    def _walk(self, start, k, seen, keep) -> tuple[int, tuple | None]:
        """The nodes from ``start`` not walked before that survived an earlier boundary, and the
        site of the first tagged node met (walked before or not)."""
        survivors, site = 0, None
        stack = [start]
        while stack and len(seen) < _NODE_LIMIT:
            node = stack.pop()
            if site is None:
                site = node.metadata.get("ohlora_site")
            if id(node) in seen:
                continue
            seen.add(id(node))
            keep.append(node)  # ids stay unique while the census runs
            first = node.metadata.setdefault("ohlora_first", k)
            if first < k:
                survivors += 1
            for child, _ in node.next_functions:
                if child is not None and type(child).__name__ != "AccumulateGrad":
                    stack.append(child)
        return survivors, site

    def _saved_bytes(self, k: int) -> tuple[dict, dict]:
        """Per site, bytes saved for backward, never used, still alive: those saved before the
        previous boundary (they survived it), and all of them (``held``: a backward frees what it
        saved, so what is alive and unused at a boundary belongs to a graph no backward has run)."""
        seen_old: set = set()
        seen_held: set = set()
        out: dict = {}
        held: dict = {}
        for saved in list(self.ledger):
            if saved.used:
                continue
            storage = saved.tensor.untyped_storage()
            key = storage.data_ptr()
            if key not in seen_held:
                seen_held.add(key)
                held[saved.site] = held.get(saved.site, 0) + storage.nbytes()
            if saved.step >= k - 1 or key in seen_old:
                continue
            seen_old.add(key)
            out[saved.site] = out.get(saved.site, 0) + storage.nbytes()
        return out, held

    def _holders(self, root_site: dict) -> dict:
        """Names in the user's frames and the script's globals whose tensors are graph roots."""
        found: dict = {}
        frame = sys._getframe(2)
        spaces = []
        while frame is not None:
            if frame.f_code.co_filename in self.user:
                spaces.append(frame.f_locals)
                if frame.f_code.co_name == "<module>":
                    spaces.append(frame.f_globals)
            frame = frame.f_back
        done: set = set()
        for space in spaces:
            for name, value in list(space.items()):
                if name.startswith("__") or id(value) in done:
                    continue
                done.add(id(value))
                for site, count, total, buffer in _held(value, root_site, self.user, name):
                    if buffer:
                        label = f"buffer `{buffer}`"
                    else:
                        label = f"`{name}`" + (f" ({total} items, {count} with old graphs)" if total else "")
                    if label not in found.setdefault(site, []):
                        found[site].append(label)
        return found

    def _place(self, site) -> str:
        return self.user.place(*site) if site else "?"

    def _codes(self) -> dict:
        return {self._place(s): linecache.getline(s[0], s[1]).strip() for s in self.series if s}


def _first_graph_tensor(out):
    if isinstance(out, torch.Tensor):
        return out if out.grad_fn is not None else None
    values = out.values() if isinstance(out, dict) else out if isinstance(out, (list, tuple)) else ()
    for value in values:
        if isinstance(value, torch.Tensor) and value.grad_fn is not None:
            return value
    return None


def _held(value, root_site: dict, user, name: str, depth: int = 0):
    """(site, count, total, buffer) for the graph roots ``value`` (named ``name``) holds: itself,
    its items, the attributes of a user object, the buffers of a module. ``buffer``: the qualified
    name (``G.w_avg``) when the root is a registered buffer of a module, else None."""
    if isinstance(value, torch.Tensor):
        site = root_site.get(id(value), False)
        return [(site, 0, 0, None)] if site is not False else []
    if depth > 2:
        return []
    if isinstance(value, torch.nn.Module):
        return [(root_site[id(b)], 0, 0, f"{name}.{b_name}") for b_name, b in value.named_buffers()
                if id(b) in root_site]
    items = None
    if isinstance(value, (list, tuple)):
        items = [(f"{name}[{i}]", v) for i, v in enumerate(value)]
    elif isinstance(value, dict):
        items = [(f"{name}[{key!r}]", v) for key, v in value.items()]
    elif hasattr(value, "__dict__") and getattr(type(value), "__module__", "") in ("__main__",) or (
            hasattr(value, "__dict__") and _user_type(value, user)):
        items = [(f"{name}.{attr}", v) for attr, v in vars(value).items()]
    if not items or len(items) > 100_000:
        return []
    counts: dict = {}
    buffers = []
    for item_name, item in items:
        for site, _, _, buffer in _held(item, root_site, user, item_name, depth + 1):
            if buffer:
                buffers.append((site, 0, 0, buffer))
            else:
                counts[site] = counts.get(site, 0) + 1
    total = len(items) if isinstance(value, (list, tuple)) else 0
    return [(site, count, total, None) for site, count in counts.items()] + buffers


def _user_type(value, user) -> bool:
    module = sys.modules.get(type(value).__module__)
    return bool(module and getattr(module, "__file__", None) and module.__file__ in user)
