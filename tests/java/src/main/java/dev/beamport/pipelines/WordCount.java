package dev.beamport.pipelines;

import java.util.Arrays;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.PipelineResult;
import org.apache.beam.sdk.io.TextIO;
import org.apache.beam.sdk.options.Description;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.beam.sdk.options.Validation;
import org.apache.beam.sdk.transforms.Count;
import org.apache.beam.sdk.transforms.Filter;
import org.apache.beam.sdk.transforms.FlatMapElements;
import org.apache.beam.sdk.transforms.MapElements;
import org.apache.beam.sdk.transforms.PTransform;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.TypeDescriptors;

/** Beam's WordCount, as Beam's Java examples write it: lines -> words -> counts -> "word: count" lines. */
public class WordCount {
  /** Where the text comes from and where the counts go. */
  public interface Options extends PipelineOptions {
    @Description("The text to count the words of")
    @Validation.Required
    String getInputFile();

    void setInputFile(String value);

    @Description("The prefix of the output files")
    @Validation.Required
    String getOutput();

    void setOutput(String value);
  }

  /** Lines -> "word: count" lines (TemplatedWordCount counts the same way). */
  public static class CountWords extends PTransform<PCollection<String>, PCollection<String>> {
    @Override
    public PCollection<String> expand(PCollection<String> lines) {
      return lines
          .apply(
              "ExtractWords",
              FlatMapElements.into(TypeDescriptors.strings())
                  .via((String line) -> Arrays.asList(line.split("[^\\p{L}]+"))))
          .apply("DropEmpty", Filter.by((String word) -> !word.isEmpty()))
          .apply("CountWords", Count.perElement())
          .apply(
              "Format",
              MapElements.into(TypeDescriptors.strings())
                  .via(count -> count.getKey() + ": " + count.getValue()));
    }
  }

  public static void main(String[] args) {
    Options options = PipelineOptionsFactory.fromArgs(args).withValidation().as(Options.class);
    Pipeline pipeline = Pipeline.create(options);
    pipeline
        .apply("ReadLines", TextIO.read().from(options.getInputFile()))
        .apply(new CountWords())
        .apply("WriteCounts", TextIO.write().to(options.getOutput()));
    PipelineResult result = pipeline.run();
    System.out.println("FINAL_STATE " + result.waitUntilFinish());
  }
}
