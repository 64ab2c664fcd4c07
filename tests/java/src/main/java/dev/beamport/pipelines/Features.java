package dev.beamport.pipelines;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.PipelineResult;
import org.apache.beam.sdk.io.TextIO;
import org.apache.beam.sdk.metrics.MetricNameFilter;
import org.apache.beam.sdk.metrics.MetricQueryResults;
import org.apache.beam.sdk.metrics.MetricResult;
import org.apache.beam.sdk.metrics.Metrics;
import org.apache.beam.sdk.metrics.MetricsFilter;
import org.apache.beam.sdk.options.Default;
import org.apache.beam.sdk.options.Description;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.beam.sdk.options.Validation;
import org.apache.beam.sdk.transforms.Count;
import org.apache.beam.sdk.transforms.DoFn;
import org.apache.beam.sdk.transforms.GroupByKey;
import org.apache.beam.sdk.transforms.ParDo;
import org.apache.beam.sdk.transforms.View;
import org.apache.beam.sdk.values.KV;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.PCollectionView;

/**
 * What a Java job uses beyond WordCount: a user counter (Metrics.counter), a side input, a GroupByKey, and a
 * DoFn that fails on a chosen word (--failOn) or is slow (--slowMillis per word, for cancelling).
 */
public class Features {
  /** The input, the output and the behaviour asked for. */
  public interface Options extends PipelineOptions {
    @Description("The text to read")
    @Validation.Required
    String getInputFile();

    void setInputFile(String value);

    @Description("The prefix of the output files")
    @Validation.Required
    String getOutput();

    void setOutput(String value);

    @Description("A word the splitting DoFn fails on (none: it never fails)")
    @Default.String("")
    String getFailOn();

    void setFailOn(String value);

    @Description("Milliseconds the splitting DoFn sleeps per word")
    @Default.Long(0)
    long getSlowMillis();

    void setSlowMillis(long value);

    @Description("Wait for the job to end and print its state and counter")
    @Default.Boolean(true)
    boolean getWait();

    void setWait(boolean value);
  }

  /** Splits lines into words, counting them; fails on the chosen word. */
  static class SplitWords extends DoFn<String, String> {
    private final String failOn;
    private final long slowMillis;
    private final org.apache.beam.sdk.metrics.Counter words = Metrics.counter(Features.class, "words");

    SplitWords(String failOn, long slowMillis) {
      this.failOn = failOn;
      this.slowMillis = slowMillis;
    }

    @ProcessElement
    public void processElement(@Element String line, OutputReceiver<String> out) throws InterruptedException {
      for (String word : line.split("[^\\p{L}]+")) {
        if (word.isEmpty()) {
          continue;
        }
        if (word.equals(failOn)) {
          throw new IllegalStateException("Features refuses the word " + word);
        }
        if (slowMillis > 0) {
          Thread.sleep(slowMillis);
        }
        words.inc();
        out.output(word);
      }
    }
  }

  /** Each first letter with its words, sorted, and their share of all words (the side input). */
  static class Describe extends DoFn<KV<String, Iterable<String>>, String> {
    private final PCollectionView<Long> total;

    Describe(PCollectionView<Long> total) {
      this.total = total;
    }

    @ProcessElement
    public void processElement(ProcessContext context) {
      List<String> words = new ArrayList<>();
      context.element().getValue().forEach(words::add);
      Collections.sort(words);
      long all = context.sideInput(total);
      context.output(context.element().getKey() + " " + words.size() + "/" + all + " " + String.join(",", words));
    }
  }

  public static void main(String[] args) {
    Options options = PipelineOptionsFactory.fromArgs(args).withValidation().as(Options.class);
    Pipeline pipeline = Pipeline.create(options);
    PCollection<String> words =
        pipeline
            .apply("ReadLines", TextIO.read().from(options.getInputFile()))
            .apply("SplitWords", ParDo.of(new SplitWords(options.getFailOn(), options.getSlowMillis())));
    PCollectionView<Long> total = words.apply("CountAll", Count.globally()).apply("Total", View.asSingleton());
    words
        .apply(
            "KeyByLetter",
            ParDo.of(
                new DoFn<String, KV<String, String>>() {
                  @ProcessElement
                  public void processElement(@Element String word, OutputReceiver<KV<String, String>> out) {
                    out.output(KV.of(word.substring(0, 1).toLowerCase(), word));
                  }
                }))
        .apply("GroupByLetter", GroupByKey.create())
        .apply("Describe", ParDo.of(new Describe(total)).withSideInputs(total))
        .apply("Write", TextIO.write().to(options.getOutput()));
    PipelineResult result = pipeline.run();
    if (!options.getWait()) {
      System.out.println("SUBMITTED");
      return;
    }
    System.out.println("FINAL_STATE " + result.waitUntilFinish());
    MetricQueryResults metrics =
        result
            .metrics()
            .queryMetrics(
                MetricsFilter.builder().addNameFilter(MetricNameFilter.named(Features.class, "words")).build());
    for (MetricResult<Long> counter : metrics.getCounters()) {
      Long committed = null;
      try {
        committed = counter.getCommitted();
      } catch (UnsupportedOperationException e) {
        // a runner without committed metrics: attempted only
      }
      System.out.println(
          "COUNTER " + counter.getName().getName() + " attempted=" + counter.getAttempted() + " committed=" + committed);
    }
  }
}
