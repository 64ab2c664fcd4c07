"""Bulk_Decompress_Files: write a decompressed copy of each file a pattern matches.

Parameters: inputFilePattern, outputDirectory, outputFailureFile (optional). The compression comes from
the extension (.gz, .bz2, .deflate; any other is a failure, "unknown compression"), and the file is
written as `<outputDirectory>/<basename without the extension>`. Files that fail are written to
outputFailureFile as `path,error` CSV lines (an empty file when none failed); without outputFailureFile,
a failure fails the job rather than going unnoticed.
"""

from __future__ import annotations

import os

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beamport.builtin_templates import add_parameters, run_as_template
from beamport.builtin_templates.files import FAILED, check_output, copy_or_fail, spread_matches, write_failures

COMPRESSIONS = {".gz": CompressionTypes.GZIP, ".bz2": CompressionTypes.BZIP2, ".deflate": CompressionTypes.DEFLATE}


class BulkDecompressOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        add_parameters(
            parser,
            {
                "inputFilePattern": {"help": "The files to decompress (a file pattern)."},
                "outputDirectory": {"help": "The directory to write the decompressed files to."},
                "outputFailureFile": {"help": "The file to list the files that failed in, as path,error lines."},
            },
        )


class DecompressFile(beam.DoFn):
    def __init__(self, output_directory):
        self.output_directory = output_directory  # a ValueProvider: read at run time

    def setup(self):
        self.directory = check_output(self.output_directory.get(), folder=True)

    def process(self, source):
        name, extension = os.path.splitext(FileSystems.split(source)[1])
        compression = COMPRESSIONS.get(extension.lower())
        if compression is None or not name:
            yield beam.pvalue.TaggedOutput(FAILED, (source, "unknown compression"))
            return
        target = FileSystems.join(self.directory, name)
        # Written UNCOMPRESSED explicitly: AUTO would compress again a name like x.tar.gz.
        yield from copy_or_fail(source, compression, target, CompressionTypes.UNCOMPRESSED)


def build(pipeline, options):
    params = options.view_as(BulkDecompressOptions)
    files = spread_matches(pipeline, params.inputFilePattern)
    results = files | "Decompress" >> beam.ParDo(DecompressFile(params.outputDirectory)).with_outputs(
        FAILED, main="written"
    )
    write_failures(results[FAILED], params.outputFailureFile)
    return results.written  # the paths of the decompressed files


if __name__ == "__main__":
    run_as_template(build)
