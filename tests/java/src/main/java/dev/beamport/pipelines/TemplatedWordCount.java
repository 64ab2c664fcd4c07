package dev.beamport.pipelines;

import org.apache.beam.runners.dataflow.util.DataflowTemplateJob;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.PipelineResult;
import org.apache.beam.sdk.io.TextIO;
import org.apache.beam.sdk.options.Description;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.beam.sdk.options.ValueProvider;

/**
 * WordCount as a classic template, as Google's Java templates write one: its input and output are
 * ValueProvider options, given when the template is launched (templates.launch's parameters) rather than when
 * it is written (DataflowRunner with --templateLocation).
 */
public class TemplatedWordCount {
  /** The runtime parameters. */
  public interface Options extends PipelineOptions {
    @Description("The text to count the words of")
    ValueProvider<String> getInputFile();

    void setInputFile(ValueProvider<String> value);

    @Description("The prefix of the output files")
    ValueProvider<String> getOutput();

    void setOutput(ValueProvider<String> value);
  }

  public static void main(String[] args) {
    Options options = PipelineOptionsFactory.fromArgs(args).withValidation().as(Options.class);
    Pipeline pipeline = Pipeline.create(options);
    pipeline
        .apply("ReadLines", TextIO.read().from(options.getInputFile()))
        .apply(new WordCount.CountWords())
        .apply("WriteCounts", TextIO.write().to(options.getOutput()));
    PipelineResult result = pipeline.run();
    if (result instanceof DataflowTemplateJob) {
      // Writing a template runs nothing: its job has no state to wait for (waitUntilFinish would throw).
      System.out.println("TEMPLATE_WRITTEN");
    } else {
      System.out.println("FINAL_STATE " + result.waitUntilFinish());
    }
  }
}
