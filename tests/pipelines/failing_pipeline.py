"""A pipeline whose DoFn raises: the job must end FAILED with this traceback."""

import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions


def explode(x):
    if x == 3:
        raise ValueError(f"boom on element {x}")
    return x


if __name__ == "__main__":
    with beam.Pipeline(options=PipelineOptions(sys.argv[1:])) as p:
        p | beam.Create([1, 2, 3]) | beam.Map(explode)
