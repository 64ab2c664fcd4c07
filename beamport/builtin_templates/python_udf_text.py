"""Text_Transform_Python_UDF: apply a Python function to each line of text files.

Parameters: inputFilePattern, outputPrefix, pythonUdfFilePath (a .py file), pythonUdfFunctionName
(default "transform"). The file is loaded when the workers start (never when the template is made), and
its function is called on each line (str -> str); a line for which it returns None is dropped.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from beamport.builtin_templates import add_parameters, run_as_template
from beamport.builtin_templates.files import ReadText, WriteToText, open_read


class PythonUdfTextOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        add_parameters(
            parser,
            {
                "inputFilePattern": {"help": "The files to read (a file pattern)."},
                "outputPrefix": {"help": "The prefix of the output files."},
                "pythonUdfFilePath": {"help": "The Python file (.py) that defines the function."},
                "pythonUdfFunctionName": {"default": "transform", "help": "The function's name in that file."},
            },
        )


class ApplyUdf(beam.DoFn):
    def __init__(self, file_path, function_name):
        self.file_path = file_path  # ValueProviders: read in setup, at run time
        self.function_name = function_name
        self.udf = None

    def setup(self):
        path = self.file_path.get()
        name = self.function_name.get() or "transform"
        with open_read(path) as f:
            source = f.read().decode("utf-8")
        namespace = {"__name__": "udf", "__file__": path}  # a fresh namespace, as if the file were a module
        exec(compile(source, path, "exec"), namespace)
        self.udf = namespace.get(name)
        if not callable(self.udf):
            raise ValueError(f"The UDF file {path} defines no function named {name!r}.")

    def process(self, line):
        result = self.udf(line)
        if result is None:  # the UDF filters this line out
            return
        if not isinstance(result, str):
            raise TypeError(f"The UDF must return a str or None, not {type(result).__name__}, for the line {line!r}.")
        yield result


def build(pipeline, options):
    params = options.view_as(PythonUdfTextOptions)
    return (
        pipeline
        | "Read" >> ReadText(params.inputFilePattern)
        | "ApplyUdf" >> beam.ParDo(ApplyUdf(params.pythonUdfFilePath, params.pythonUdfFunctionName))
        | "Write" >> WriteToText(params.outputPrefix)
    )


if __name__ == "__main__":
    run_as_template(build)
