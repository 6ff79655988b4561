"""CEL (Common Expression Language) over Envoy's request attributes.

``compile_expression(text)`` gives a cached :class:`CelProgram`; ``program.evaluate(info)``
returns a plain Python value or ``None``; ``program.matches(info)`` is a filter's verdict.
Used by access log filters (Telemetry ``accessLogging.filter.expression``) and by the stats
filter's metric dimensions (Telemetry ``tagOverrides``).
"""

from pistio.proxy.cel.attributes import set_local_node
from pistio.proxy.cel.program import CelError, CelProgram, compile_expression, to_python

__all__ = ["CelError", "CelProgram", "compile_expression", "set_local_node", "to_python"]
