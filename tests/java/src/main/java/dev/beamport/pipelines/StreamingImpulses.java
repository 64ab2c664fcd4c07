package dev.beamport.pipelines;

import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.io.TextIO;
import org.apache.beam.sdk.metrics.Counter;
import org.apache.beam.sdk.metrics.Metrics;
import org.apache.beam.sdk.options.Default;
import org.apache.beam.sdk.options.Description;
import org.apache.beam.sdk.options.StreamingOptions;
import org.apache.beam.sdk.options.Validation;
import org.apache.beam.sdk.transforms.DoFn;
import org.apache.beam.sdk.transforms.ParDo;
import org.apache.beam.sdk.transforms.PeriodicImpulse;
import org.apache.beam.sdk.transforms.windowing.FixedWindows;
import org.apache.beam.sdk.transforms.windowing.Window;
import org.joda.time.Duration;
import org.joda.time.Instant;

/**
 * A streaming Java pipeline: an unbounded PeriodicImpulse (an impulse every --intervalMillis, from the next
 * window's start), fixed windows of --windowSeconds, each window's impulses (their times in milliseconds) written to
 * a file of its own by TextIO's windowed writes, and a counter of the impulses. Every window but the one still open
 * holds exactly windowSeconds * 1000 / intervalMillis impulses, each once. It runs until cancelled.
 */
public class StreamingImpulses {
  /** The output and the impulses' pace. */
  public interface Options extends StreamingOptions {
    @Description("The prefix of the output files (one per window)")
    @Validation.Required
    String getOutput();

    void setOutput(String value);

    @Description("Milliseconds between impulses")
    @Default.Long(100)
    long getIntervalMillis();

    void setIntervalMillis(long value);

    @Description("Seconds per window")
    @Default.Long(2)
    long getWindowSeconds();

    void setWindowSeconds(long value);
  }

  /** An impulse's time in milliseconds, counted. */
  static class Format extends DoFn<Instant, String> {
    private final Counter impulses = Metrics.counter(StreamingImpulses.class, "impulses");

    @ProcessElement
    public void processElement(@Element Instant impulse, OutputReceiver<String> out) {
      impulses.inc();
      out.output(Long.toString(impulse.getMillis()));
    }
  }

  public static void main(String[] args) {
    Options options =
        org.apache.beam.sdk.options.PipelineOptionsFactory.fromArgs(args).withValidation().as(Options.class);
    options.setStreaming(true);
    long windowMillis = options.getWindowSeconds() * 1000;
    Instant start = new Instant((System.currentTimeMillis() / windowMillis + 1) * windowMillis);
    Pipeline pipeline = Pipeline.create(options);
    pipeline
        .apply(
            "Impulses",
            PeriodicImpulse.create()
                .startAt(start)
                .stopAt(start.plus(Duration.standardDays(1)))
                .withInterval(Duration.millis(options.getIntervalMillis())))
        .apply("Window", Window.into(FixedWindows.of(Duration.millis(windowMillis))))
        .apply("Format", ParDo.of(new Format()))
        .apply("Write", TextIO.write().to(options.getOutput()).withWindowedWrites().withNumShards(1));
    pipeline.run();
    System.out.println("SUBMITTED");
  }
}
