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

    def evidence(self) -> list[Step]:
        steps = [Step(site, Role.PASSES) for site in self.stack]
        if self.loop:
            steps.append(Step(self.loop, Role.PASSES, "loop"))
        return [*steps, Step(self.site, Role.KEPT_BY, f"`{self.text}`")]


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
    req, _ = graph_of(value)
    if not (req and not state.no_grad and state.repeated and not state.in_forward):
        return None
    if isinstance(value, T) and value.param is not None and not value.grads:
        return None  # an nn.Parameter is a leaf: keeping one keeps the weight, not a graph
    facts.retentions.setdefault(site, Retention(site, text, state.stack, state.loop, grows))
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


def render_retention(kept: Retention, evidence: list[Step], assumptions: list[Assumption]) -> str:
    loop = next((s for s in evidence if s.what == "loop"), None)
    calls = [s for s in evidence if s.role is Role.PASSES and s.what != "loop"]
    message = (f"{evidence[-1].what} at {kept.site} keeps a tensor with its autograd history on every iteration"
               f"{' (loop at ' + loop.where + ')' if loop else ''}{reached(calls)}: the graphs pile up ")
    if kept.grows:
        message += "and memory grows."
    else:
        message += ("until the loop ends; it runs a handful of known iterations inside one call, so this is "
                    "bounded waste, not growth.")
    unseen = next((a for a in assumptions if a.kind is Kind.UNSEEN_CODE), None)
    if unseen is not None:
        message += (f" Assumed: the code at {unseen.where}, which the doctor cannot see, does not call .backward() "
                    f"on what is kept.")
    return message


class GradInference(Check):
    id = "grad-inference"
    title = "repeated inference with gradients enabled (memory growth)"
    scopes = ("script",)

    def __init__(self, analysis: Callable):
        self.analysis = analysis

    def run(self, ctx: Context) -> list[Finding]:
        analysed = self.analysis(ctx)
        result, notes = analysed.grad, analysed.notes
        trained = result.trained()
        findings = []
        for site, forward in result.forwards.items():
            if site not in trained:
                findings.append(self._forward(forward, result.escapes, notes))
        for site, kept in result.retentions.items():
            if f"{KEEP}{site}" not in trained:  # else the accumulated value reaches .backward(): a loss summed up
                findings.append(self._retention(kept, result.escapes, notes))
        return findings

    def _forward(self, forward: Forward, escapes: dict, notes: list) -> Finding:
        assumptions = [forward.guess] if forward.guess else []
        escape = escapes.get(forward.site) if not forward.buffers else None
        if escape:
            assumptions.append(Assumption(Kind.UNSEEN_CODE, escape))
        assumptions += notes
        evidence = forward.evidence()
        # A FAIL is for memory that grows, on a definite chain; a graph built and dropped is waste, a WARN.
        status = decide(Status.FAIL if forward.buffers else Status.WARN, assumptions)
        return self.finding(status, render_forward(forward, evidence, assumptions), where=forward.site,
                            hint=NO_GRAD_HINT, evidence=evidence, assumptions=assumptions)

    def _retention(self, kept: Retention, escapes: dict, notes: list) -> Finding:
        token = f"{KEEP}{kept.site}"
        assumptions = [Assumption(Kind.UNSEEN_CODE, escapes[token])] if token in escapes else []
        assumptions += notes
        evidence = kept.evidence()
        status = decide(Status.FAIL if kept.grows else Status.WARN, assumptions)
        return self.finding(status, render_retention(kept, evidence, assumptions), where=kept.site,
                            hint=KEEP_HINT, evidence=evidence, assumptions=assumptions)
