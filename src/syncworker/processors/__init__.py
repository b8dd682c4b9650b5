"""Built-in processors: pure steps between a source and its sinks."""

CONNECTORS = {
    "processor:map": "syncworker.processors.builtin:MapProcessor",
    "processor:filter": "syncworker.processors.builtin:FilterProcessor",
    "processor:python": "syncworker.processors.builtin:PythonProcessor",
    "processor:set": "syncworker.processors.builtin:SetProcessor",
    "processor:compute": "syncworker.processors.builtin:ComputeProcessor",
}
