"""Google's JavaScript UDFs (javascriptTextTransformGcsPath, javascriptTextTransformFunctionName), run by V8
through mini-racer: a function of one string (a line, or a message's data) that returns a string (a JSON
object, for the BigQuery templates), or null/undefined to drop the element, as Google's templates call it."""

from __future__ import annotations

import json

from beamport.builtin_templates.files import open_read


class JavascriptUdf:
    """The UDF the two parameters name, loaded where the pipeline runs (through the worker's file policy)."""

    def __init__(self, path, function_name):
        self.path, self.function_name = path, function_name  # ValueProviders

    def load(self):
        """A callable str -> str | None, or None when no UDF is given."""
        path = self.path.get() if self.path else None
        name = self.function_name.get() if self.function_name else None
        if not path and not name:
            return None
        if not (path and name):
            raise ValueError(
                "javascriptTextTransformGcsPath and javascriptTextTransformFunctionName go together: give both."
            )
        from py_mini_racer import MiniRacer

        with open_read(path) as handle:
            source = handle.read().decode("utf-8")
        context = MiniRacer()
        context.eval(source)
        if context.eval(f"typeof {name}") != "function":
            raise ValueError(f"{path} defines no function {name!r} (javascriptTextTransformFunctionName).")

        def call(text: str) -> str | None:
            result = context.call(name, text)
            return None if result is None else str(result)

        return call


def json_row(text: str, transform) -> dict | None:
    """A line or a message's data -> the table row it is: through the UDF (`transform`, or None), whose None
    drops it (None), then a JSON object of the table's columns. Raises ValueError for anything else."""
    if transform is not None:
        text = transform(text)
        if text is None:
            return None
    try:
        row = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"Not a JSON object (the table's columns): {text[:200]!r} ({exc}).") from None
    if not isinstance(row, dict):
        raise ValueError(f"Not a JSON object (the table's columns): {text[:200]!r}.")
    return row


UDF_PARAMETERS = {
    "javascriptTextTransformGcsPath": {"help": "The JavaScript file of the UDF."},
    "javascriptTextTransformFunctionName": {"help": "The name of the JavaScript function to call."},
    "javascriptTextTransformReloadIntervalMinutes": {
        "default": "0",
        "help": "Accepted for Google's parameters: the UDF is loaded once per worker.",
    },
}
