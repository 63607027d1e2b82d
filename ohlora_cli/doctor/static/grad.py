"""grad-inference: forward passes that repeat with gradients enabled and never train, and graphs
kept across iterations (``losses.append(loss)``).

Facts: ``Forward`` (a repeated forward pass with autograd on; the buffers it updates with a graph)
and ``Retention`` (a graph-carrying value kept by an accumulator that outlives the iteration). The
check turns each into a finding whose chain is data: born -> passes ... -> kept-by.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..registry import (
    Assumption,
    Check,
    Context,
    Finding,
    Kind,
    Role,
    Status,
    Step,
    assumed,
    decide,
    reached,
)
from .values import T, graph_of, sources_of

KEEP = "keep:"  # the graph-source token of what an accumulator keeps (keep:<site>)

NO_GRAD_HINT = ("Wrap the call in `with torch.no_grad():` (or decorate its function with `@torch.no_grad()`) and "
                "keep only `.detach().cpu()` of what it returns.")
KEEP_HINT = ("Keep a number or a detached tensor: `.item()` or `.detach()` (e.g. `losses.append(loss.item())`, "
             "`total += loss.item()`).")


@dataclass
class Forward:
    site: str
    label: str
    stack: tuple
    loop: str | None
    buffers: list = field(default_factory=list)  # (site, buffer name) updated with a graph in train mode
    eval_mode: bool = False
    guess: Assumption | None = None  # the module is taken for a model from its name

    def evidence(self) -> list[Step]:
        steps = [Step(site, Role.PASSES) for site in self.stack]
        if self.loop:
            steps.append(Step(self.loop, Role.PASSES, "loop"))
        steps.append(Step(self.site, Role.BORN, f"`{self.label}(...)`"))
        steps += [Step(site, Role.KEPT_BY, f"buffer '{name}'") for site, name in dict.fromkeys(self.buffers)]
        return steps


@dataclass
class Retention:
    site: str
    text: str
    stack: tuple
    loop: str | None
    grows: bool = True  # False: it spans a handful of known iterations inside one call
    sources: frozenset = frozenset()  # the forward sites (and kept values, keep:<site>) whose graphs it keeps

    def evidence(self) -> list[Step]:
        steps = [Step(site, Role.PASSES) for site in self.stack]
        if self.loop:
            steps.append(Step(self.loop, Role.PASSES, "loop"))
        return [*steps, Step(self.site, Role.KEPT_BY, f"`{self.text}`")]

    def shares(self, other: Retention) -> bool:
        """Both keep the same graphs: the same forward passes, or one keeps what the other kept
        (``running_loss += loss`` then ``history.append(running_loss / n)``)."""
        return bool(self.sources & other.sources) or f"{KEEP}{other.site}" in self.sources \
            or f"{KEEP}{self.site}" in other.sources


def _groups(kept: list[Retention]) -> list[list[Retention]]:
    """Retentions of the same graphs, together: one leak, one finding (in recording order)."""
    groups: list[list[Retention]] = []
    for item in kept:
        joined = [g for g in groups if any(item.shares(other) for other in g)]
        merged = [x for g in joined for x in g] + [item]
        groups = [g for g in groups if g not in joined] + [merged]
    return sorted(groups, key=lambda g: kept.index(g[0]))


@dataclass
class Facts:
    forwards: dict = field(default_factory=dict)  # site -> Forward
    training_sites: set = field(default_factory=set)  # graph sources that may reach .backward()
    escapes: dict = field(default_factory=dict)  # graph source -> where it went into code not seen
    feeds: dict = field(default_factory=dict)  # forward site -> sources whose (detached) outputs it consumed
    retentions: dict = field(default_factory=dict)  # site -> Retention

    def trained(self) -> set[str]:
        """Forward sites that are part of training: their graph may reach .backward(), or their output
        (even detached, like a GAN's ``D(fake.detach())``) feeds a forward pass that does."""
        trained = set(self.training_sites)
        todo = list(trained)
        while todo:
            for source in self.feeds.get(todo.pop(), ()):
                if source not in trained:
                    trained.add(source)
                    todo.append(source)
        return trained


def forward(facts: Facts, site: str, label: str, state, *, eval_mode: bool, guess: Assumption | None) -> None:
    """An outermost forward pass that repeats (a loop, a callback) with gradients enabled."""
    facts.forwards.setdefault(site, Forward(site, label, state.stack, state.loop, eval_mode=eval_mode, guess=guess))


def feeds(facts: Facts, site: str, values) -> None:
    for value in values:
        facts.feeds.setdefault(site, set()).update(sources_of(value))


def trains(facts: Facts, value) -> None:
    """``value`` reaches .backward(): the forwards whose graph it may carry are training, and so are
    those whose detached outputs went into it (a target ``D(fake.detach())``, ``vgg(real).detach()``)."""
    facts.training_sites |= graph_of(value)[1] | sources_of(value)


def escape(facts: Facts, value, site: str) -> None:
    """``value`` goes into code the analysis cannot see at ``site``: its graphs may train there."""
    for source in graph_of(value)[1]:
        facts.escapes.setdefault(source, site)


def buffer_update(facts: Facts, outer: str | None, site: str, name: str) -> None:
    """A module's forward (called at ``outer``) updates its buffer ``name`` with a graph-carrying value."""
    if outer in facts.forwards:
        facts.forwards[outer].buffers.append((site, name))


def retention(facts: Facts, value, site: str, text: str, state, grows: bool) -> str | None:
    """A graph-carrying value kept by an accumulator that outlives the iteration: recorded; returns the
    token to tag it with, so that an accumulator that later reaches .backward() (a loss summed over
    layers or tasks) is known to be part of training, not a leak. None: nothing kept."""
    req, grads = graph_of(value)
    if not (req and not state.no_grad and state.repeated and not state.in_forward):
        return None
    if isinstance(value, T) and value.param is not None and not value.grads:
        return None  # an nn.Parameter is a leaf: keeping one keeps the weight, not a graph
    facts.retentions.setdefault(site, Retention(site, text, state.stack, state.loop, grows, frozenset(grads)))
    return f"{KEEP}{site}"


def render_forward(forward: Forward, evidence: list[Step], assumptions: list[Assumption]) -> str:
    born = next(s for s in evidence if s.role is Role.BORN)
    loop = next((s for s in evidence if s.what == "loop"), None)
    repeat = f"in the loop at {loop.where}" if loop else "repeatedly"
    calls = [s for s in evidence if s.role is Role.PASSES and s.what != "loop"]
    message = f"{born.what} at {born.where} runs {repeat}{reached(calls)} with gradients enabled"
    unseen = next((a for a in assumptions if a.kind is Kind.UNSEEN_CODE), None)
    if unseen is not None:
        message += f", and its output goes into code the doctor cannot see at {unseen.where}."
    else:
        message += ", and its output never reaches .backward()."
    if forward.eval_mode:
        message += " model.eval() alone does not turn gradients off."
    kept = [s for s in evidence if s.role is Role.KEPT_BY]
    for step in kept:
        message += (f" The module is in train mode and its forward updates the {step.what} from a grad-requiring "
                    f"tensor at {step.where}, so the buffer carries autograd history from call to call and memory "
                    f"grows with every call.")
    if not kept:
        message += (" Each call builds an autograd graph that is thrown away: memory does not grow from call to "
                    "call, but every call holds its activations for a backward that never comes (on a large "
                    "model, as much as a training step).")
    return message + assumed(assumptions)


def render_retention(grows: bool, evidence: list[Step], assumptions: list[Assumption]) -> str:
    loop = next((s for s in evidence if s.what == "loop"), None)
    calls = [s for s in evidence if s.role is Role.PASSES and s.what != "loop"]
    first, *more = [s for s in evidence if s.role is Role.KEPT_BY]
    message = (f"{first.what} at {first.where} keeps a tensor with its autograd history on every iteration"
               f"{' (loop at ' + loop.where + ')' if loop else ''}{reached(calls)}: the graphs pile up ")
    if grows:
        message += "and memory grows."
    else:
        message += ("until the loop ends; it runs a handful of known iterations inside one call, so this is "
                    "bounded waste, not growth.")
    if more:
        message += f" The same graphs are also kept by {', '.join(f'{s.what} at {s.where}' for s in more)}."
    return message + assumed(assumptions)


class GradInference(Check):
    id = "grad-inference"
    title = "repeated inference with gradients enabled (memory growth)"
    scopes = ("script",)

    def __init__(self, analysis: Callable):
        self.analysis = analysis

    def run(self, ctx: Context) -> list[Finding]:
        analysed = self.analysis(ctx)
        result, notes = analysed.grad, analysed.notes_for
        trained = result.trained()
        findings = []
        for site, forward in result.forwards.items():
            if site not in trained:
                findings.append(self._forward(forward, result.escapes, notes))
        # An accumulated value that reaches .backward() is a loss summed up, not a leak.
        kept = [k for site, k in result.retentions.items() if f"{KEEP}{site}" not in trained]
        for group in _groups(kept):
            findings.append(self._retention(group, result.escapes, notes))
        return findings

    def _forward(self, forward: Forward, escapes: dict, notes: Callable) -> Finding:
        assumptions = [forward.guess] if forward.guess else []
        escape = escapes.get(forward.site) if not forward.buffers else None
        if escape:
            assumptions.append(Assumption(Kind.UNSEEN_CODE, escape))
        assumptions += notes(forward.stack)
        evidence = forward.evidence()
        # A FAIL is for memory that grows, on a definite chain; a graph built and dropped is waste, a WARN.
        status = decide(Status.FAIL if forward.buffers else Status.WARN, assumptions)
        return self.finding(status, render_forward(forward, evidence, assumptions), where=forward.site,
                            hint=NO_GRAD_HINT, evidence=evidence, assumptions=assumptions)

    def _retention(self, group: list[Retention], escapes: dict, notes: Callable) -> Finding:
        tokens = [f"{KEEP}{kept.site}" for kept in group]
        assumptions = [Assumption(Kind.UNSEEN_CODE, escapes[t]) for t in tokens if t in escapes] + notes(group[0].stack)
        evidence = group[0].evidence() + [Step(k.site, Role.KEPT_BY, f"`{k.text}`") for k in group[1:]]
        grows = any(kept.grows for kept in group)
        status = decide(Status.FAIL if grows else Status.WARN, assumptions)
        return self.finding(status, render_retention(grows, evidence, assumptions), where=group[0].site,
                            hint=KEEP_HINT, evidence=evidence, assumptions=assumptions)
