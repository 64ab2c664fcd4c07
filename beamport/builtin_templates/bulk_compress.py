"""Bulk_Compress_Files: write a compressed copy of each file a pattern matches.

Parameters: inputFilePattern, outputDirectory, compression (GZIP, BZIP2 or DEFLATE), outputFailureFile
(optional). Each file becomes `<outputDirectory>/<basename><ext>` (.gz, .bz2, .deflate). Files that fail
are written to outputFailureFile as `path,error` CSV lines (an empty file when none failed); without
outputFailureFile, a failure fails the job rather than going unnoticed.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beamport.builtin_templates import add_parameters, run_as_template
from beamport.builtin_templates.files import FAILED, check_output, copy_or_fail, spread_matches, write_failures

EXTENSIONS = {"GZIP": ".gz", "BZIP2": ".bz2", "DEFLATE": ".deflate"}


class BulkCompressOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        add_parameters(
            parser,
            {
                "inputFilePattern": {"help": "The files to compress (a file pattern)."},
                "outputDirectory": {"help": "The directory to write the compressed files to."},
                "compression": {"help": "The compression: GZIP, BZIP2 or DEFLATE."},
                "outputFailureFile": {"help": "The file to list the files that failed in, as path,error lines."},
            },
        )


class CompressFile(beam.DoFn):
    def __init__(self, output_directory, compression):
        self.output_directory = output_directory  # ValueProviders: read in setup, at run time
        self.compression = compression

    def setup(self):
        name = (self.compression.get() or "").upper()
        if name not in EXTENSIONS:
            raise ValueError(f"compression must be one of {', '.join(EXTENSIONS)}, not {self.compression.get()!r}.")
        self.compression_type = getattr(CompressionTypes, name)
        self.extension = EXTENSIONS[name]
        self.directory = check_output(self.output_directory.get(), folder=True)

    def process(self, source):
        target = FileSystems.join(self.directory, FileSystems.split(source)[1] + self.extension)
        yield from copy_or_fail(source, CompressionTypes.UNCOMPRESSED, target, self.compression_type)


def build(pipeline, options):
    params = options.view_as(BulkCompressOptions)
    files = spread_matches(pipeline, params.inputFilePattern)
    results = files | "Compress" >> beam.ParDo(CompressFile(params.outputDirectory, params.compression)).with_outputs(
        FAILED, main="written"
    )
    write_failures(results[FAILED], params.outputFailureFile)
    return results.written  # the paths of the compressed files


if __name__ == "__main__":
    run_as_template(build)
