"""Walking a traced program: every equation of a (closed) jaxpr, sub-jaxprs included (jit, scan, cond)."""


def equations(jaxpr):
    """Every equation, depth first in program order: a scan's equation comes before its body's."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    for eqn in jaxpr.eqns:
        yield eqn
        for param in eqn.params.values():
            for sub in param if isinstance(param, tuple | list) else (param,):
                if hasattr(sub, "eqns") or hasattr(getattr(sub, "jaxpr", None), "eqns"):
                    yield from equations(sub)
